"""Touches and conversion paths: exposures and orders resolved to one person, as arrays.

Why: every measurement and attribution number is a function of *per-person*
sequences — a person's impressions and clicks, and the orders that person
placed. The inputs speak different identifiers (the exposure log knows
devices, the brand's orders know phones and member ids), so the first step
resolves both to one person through the ID-mapping graph
(:class:`atoll.ids.mapping.IdGraph`), applies the campaign calendar
(campaign period and conversion window in a configurable timezone) and
encodes everything as compact integer arrays: person code, time in
milliseconds, channel code, click flag, cost. The models in
:mod:`atoll.analytics.attribution`, :mod:`atoll.analytics.markov` and
:mod:`atoll.analytics.shapley` work on those arrays, bucket by bucket, with no
Python loop over rows.

How:

* the exposure log is scanned batch by batch with Arrow (a Parquet file or
  folder lazily, only the columns needed); each batch's device ids and
  channels are dictionary-encoded, so only the *distinct* device ids are
  normalized and looked up in the graph (measured ~3x faster than the same
  join in DuckDB on 2M events);
* a device the graph does not know is a person of its own (key
  ``device_id:<id>``); an order whose phone / member id / device id the graph
  does not know cannot be linked to any exposure and is reported as
  ``unresolved_id`` (never dropped silently);
* events that cannot be used are counted per reason (invalid device id,
  unknown event type, unknown time, excluded as invalid traffic, after the
  conversion window).

Time resolution is the millisecond: a touch counts as "before" an order when
``touch_ms <= order_ms``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds

from atoll.data.io import read_table
from atoll.data.schema import EXPOSURES, ORDERS, TIMESTAMP, ExtraColumns, TableSpec, validate
from atoll.errors import ConfigError, InputError, SchemaError
from atoll.ids.mapping import IdGraph
from atoll.ids.normalize import IdKind, normalize_array

__all__ = [
    "ORDER_INPUT",
    "CampaignWindow",
    "Prepared",
    "TargetAudience",
    "member_edges",
    "prepare",
]

#: A table, or a CSV/Parquet file or Parquet folder.
TableSource: TypeAlias = pa.Table | str | os.PathLike[str]
#: Milliseconds in a day.
DAY_MS = 86_400_000
#: What attribution needs of an order table: the canonical order columns minus
#: product and sales channel, plus an optional ``device_id`` (orders placed in
#: an app); every row needs a phone, a member id or a device id.
ORDER_INPUT = TableSpec(
    "orders",
    (
        *(c for c in ORDERS.columns if c.name not in ("product", "channel")),
        replace(
            next(c for c in EXPOSURES.columns if c.name == "device_id"),
            required=False,
            nullable=True,
        ),
    ),
    ExtraColumns.KEEP,
    at_least_one_of=("phone", "member_id", "device_id"),
    description="orders to attribute; every row needs a phone, a member id or a device id",
)


@dataclass(frozen=True)
class CampaignWindow:
    """The campaign calendar: campaign period and conversion window, in local days.

    Campaign period: ``campaign_start`` 00:00 to ``campaign_end`` 24:00 local
    time. Conversion window (eligible orders): ``campaign_start`` 00:00 to
    ``campaign_end + window_days`` 24:00 local time (end of day inclusive).
    ``timezone`` is an IANA name (default ``Asia/Shanghai``).
    """

    campaign_start: date
    campaign_end: date
    window_days: int = 15
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        for name in ("campaign_start", "campaign_end"):
            value = getattr(self, name)
            if isinstance(value, datetime) or not isinstance(value, date):
                raise ConfigError(f"{name} must be a date, got {value!r}")
        if self.campaign_end < self.campaign_start:
            raise ConfigError(
                f"campaign_end {self.campaign_end} is before campaign_start {self.campaign_start}"
            )
        days = self.window_days
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 366:
            raise ConfigError(f"window_days must be an integer in 0..366, got {days!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"unknown timezone {self.timezone!r}") from exc

    def _local_midnight_ms(self, day: date) -> int:
        moment = datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(self.timezone))
        return int(moment.timestamp() * 1000)

    @property
    def start_ms(self) -> int:
        """Campaign start (inclusive), UTC epoch milliseconds."""
        return self._local_midnight_ms(self.campaign_start)

    @property
    def campaign_end_ms(self) -> int:
        """End of the campaign period (exclusive: the next local midnight), epoch ms."""
        return self._local_midnight_ms(self.campaign_end + timedelta(days=1))

    @property
    def window_end_ms(self) -> int:
        """End of the conversion window (exclusive), epoch ms."""
        return self._local_midnight_ms(self.campaign_end + timedelta(days=self.window_days + 1))

    def describe(self) -> dict[str, str]:
        """The calendar as text, for reports."""
        last = self.campaign_end + timedelta(days=self.window_days)
        return {
            "campaign_period": f"{self.campaign_start} 00:00 .. {self.campaign_end} 24:00",
            "conversion_window": f"{self.campaign_start} 00:00 .. {last} 24:00",
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class TargetAudience:
    """A target audience (TA): identifiers of one kind, resolved to persons like exposures.

    ``table[id_column]`` holds identifiers of kind ``id_type`` (``device_id``,
    ``phone``, ``oaid``...). A row whose identifier is invalid, or (for a
    non-device kind) unknown to the ID graph, is counted in
    ``Prepared.ta_counts`` and not part of the TA.
    """

    table: pa.Table
    id_column: str
    id_type: str = "device_id"

    def __post_init__(self) -> None:
        if not isinstance(self.table, pa.Table):
            raise ConfigError("TargetAudience.table must be a pyarrow Table")
        if self.id_column not in self.table.column_names:
            raise SchemaError("target audience lacks its id column", column=self.id_column)
        IdKind.parse(self.id_type)


@dataclass
class Prepared:
    """Exposures and orders resolved to person codes and encoded as arrays.

    Touches (one per usable event, any order): ``t_person`` (int64),
    ``t_ms`` (epoch ms), ``t_channel`` (int32 index into ``channels``),
    ``t_click`` (bool). Orders (one per input row):
    ``o_person`` (-1 unresolved), ``o_ms``, ``o_amount`` (float64 CNY),
    ``o_in_window``; ``order_ids`` in input order. ``billed_cost`` is the cost
    per channel of *every* event in the campaign period, invalid traffic
    included (what was paid); ``valid_cost`` the same over the usable
    (valid) events. ``ta_person`` marks the
    persons of the target audience (``None`` without a TA). Counts of what
    could not be used are in ``event_counts``, ``order_counts`` and
    ``ta_counts``.
    """

    channels: list[str]
    window: CampaignWindow
    n_persons: int
    t_person: npt.NDArray[np.int64]
    t_ms: npt.NDArray[np.int64]
    t_channel: npt.NDArray[np.int32]
    t_click: npt.NDArray[np.bool_]
    order_ids: pa.Array
    o_person: npt.NDArray[np.int64]
    o_ms: npt.NDArray[np.int64]
    o_amount: npt.NDArray[np.float64]
    o_in_window: npt.NDArray[np.bool_]
    ta_person: npt.NDArray[np.bool_] | None
    billed_cost: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    valid_cost: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    event_counts: dict[str, int] = field(default_factory=dict)
    order_counts: dict[str, int] = field(default_factory=dict)
    ta_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ta_size(self) -> int | None:
        """Distinct persons in the target audience (``None`` without a TA)."""
        return None if self.ta_person is None else int(self.ta_person.sum())


def member_edges(members: pa.Table, *, source: str = "members") -> pa.Table:
    """ID-mapping edges ``member_id ↔ phone`` from a brand member table.

    Lets orders that carry only a member id (offline stores) resolve through
    the member's phone. Rows without a phone give no edge.
    """
    for name in ("member_id", "phone"):
        if name not in members.column_names:
            raise SchemaError("member table lacks a column", source=source, column=name)
    keep = members.filter(pc.and_(pc.is_valid(members["member_id"]), pc.is_valid(members["phone"])))
    n = keep.num_rows
    return pa.table(
        {
            "id_type_a": pa.array(["member_id"] * n, pa.string()),
            "id_a": keep["member_id"].cast(pa.string()),
            "id_type_b": pa.array(["phone"] * n, pa.string()),
            "id_b": keep["phone"].cast(pa.string()),
            "source": pa.array([source] * n, pa.string()),
        }
    )


# ------------------------------------------------------------------ helpers


def _exposure_source(source: TableSource, timezone: str) -> pa.Table | Path:
    """A table, or the path of a Parquet file/folder to scan lazily; CSV is read and validated."""
    if isinstance(source, pa.Table):
        return source
    if not isinstance(source, str | os.PathLike):
        raise ConfigError(f"exposures: expected a table or a path, got {type(source).__name__}")
    path = Path(source)
    suffixes = [s.lower() for s in path.suffixes]
    if path.is_dir() or (suffixes and suffixes[-1] in (".parquet", ".pq")):
        return path
    return read_table(path, EXPOSURES, timezone=timezone)


def _order_table(source: TableSource, name: str, timezone: str) -> pa.Table:
    """The order table, read (CSV/Parquet) or given, validated against :data:`ORDER_INPUT`."""
    if isinstance(source, pa.Table):
        return validate(source, ORDER_INPUT, source=name, timezone=timezone)
    if not isinstance(source, str | os.PathLike):
        raise ConfigError(f"orders: expected a table or a path, got {type(source).__name__}")
    return read_table(source, ORDER_INPUT, timezone=timezone)


def _raw(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[Any]:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return np.asarray(values.to_numpy(zero_copy_only=False))


def _i64(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    return np.asarray(_raw(values), dtype=np.int64)


def _i32(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int32]:
    return np.asarray(_raw(values), dtype=np.int32)


def _f64(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.float64]:
    return np.asarray(_raw(values), dtype=np.float64)


def _bool(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    return np.asarray(_raw(values), dtype=np.bool_)


def _ms(values: pa.Array | pa.ChunkedArray, *, source: str, column: str) -> npt.NDArray[np.int64]:
    """Epoch milliseconds of a timestamp column (nulls become ``INT64_MIN``)."""
    dtype = values.type
    if not pa.types.is_timestamp(dtype):
        raise SchemaError(f"expected a timestamp, got {dtype}", source=source, column=column)
    if dtype.tz is None:
        raise SchemaError(
            "timestamps must carry a timezone (read the file with atoll.data.io.read_table)",
            source=source,
            column=column,
        )
    micros = pc.cast(values, TIMESTAMP).cast(pa.int64())
    filled = pc.fill_null(micros, np.iinfo(np.int64).min)
    raw = _i64(filled)
    out: npt.NDArray[np.int64] = np.where(
        raw == np.iinfo(np.int64).min, raw, np.floor_divide(raw, 1000)
    )
    return out


class _PersonKeys:
    """Collects person keys from several sources and numbers them densely."""

    def __init__(self) -> None:
        self._parts: list[pa.Array] = []

    def add(self, keys: pa.Array) -> int:
        """Add keys (nulls allowed); return the offset of this part."""
        offset = sum(len(p) for p in self._parts)
        self._parts.append(keys.cast(pa.large_string()))
        return offset

    def codes(self) -> tuple[npt.NDArray[np.int64], int]:
        """Dense codes of every added key (-1 for null), and the number of persons."""
        if not self._parts:
            return np.empty(0, np.int64), 0
        encoded = pc.dictionary_encode(pa.concat_arrays(self._parts))
        indices = _i64(pc.fill_null(encoded.indices, -1))
        return indices, len(encoded.dictionary)


def _device_person_keys(devices: pa.Array, graph: IdGraph | None, *, source: str) -> pa.Array:
    """Person key of each distinct device: its one_id, else ``device_id:<normalized id>``.

    Invalid device ids get a null key.
    """
    normalized = normalize_array(devices, "device_id", source=source, column="device_id")
    values = normalized.values.cast(pa.string())
    own = pc.binary_join_element_wise(pa.scalar("device_id:"), values, pa.scalar(""))
    if graph is None:
        return own
    return pc.coalesce(graph.lookup("device_id", values), own)


def _order_person_keys(orders: pa.Table, graph: IdGraph | None, *, source: str) -> pa.Array:
    """Person key of each order: the one_id of its phone, else member id, else device id."""
    n = orders.num_rows
    found: pa.Array = pa.nulls(n, pa.string())
    for column in ("phone", "member_id", "device_id"):
        if column not in orders.column_names:
            continue
        values = orders[column].combine_chunks()
        if pa.types.is_integer(values.type) and column == "phone":
            values = values.cast(pa.string())
        normalized = normalize_array(values, column, source=source, column=column)
        keys = normalized.values.cast(pa.string())
        if graph is not None:
            resolved = graph.lookup(column, keys)
        elif column == "device_id":
            resolved = pc.binary_join_element_wise(pa.scalar("device_id:"), keys, pa.scalar(""))
        else:
            continue
        found = pc.coalesce(found, resolved)
    return found


# ------------------------------------------------------------------ prepare


def prepare(
    exposures: TableSource,
    orders: TableSource,
    window: CampaignWindow,
    *,
    graph: IdGraph | None = None,
    target_audience: TargetAudience | None = None,
    exclude_event_ids: pa.Array | pa.ChunkedArray | None = None,
    event_filter: Callable[[pa.Table], pa.Table] | None = None,
) -> Prepared:
    """Resolve exposures and orders to persons and encode them (see the module docstring).

    ``exclude_event_ids``: event ids to leave out (e.g. flagged invalid
    traffic), counted as ``excluded_invalid_traffic``. ``event_filter``: a
    callable applied to the exposure table before anything else (e.g. an IVT
    filter returning the valid events); the events it removes are counted as
    ``removed_by_filter``.
    """
    if not isinstance(window, CampaignWindow):
        raise ConfigError("window must be a CampaignWindow")
    ex_source = _exposure_source(exposures, window.timezone)
    ex_name = str(exposures) if not isinstance(exposures, pa.Table) else "exposures"
    or_name = str(orders) if not isinstance(orders, pa.Table) else "orders"
    order_table = _order_table(orders, or_name, window.timezone)
    event_counts: dict[str, int] = {}
    if event_filter is not None:
        if isinstance(ex_source, Path):
            ex_source = read_table(ex_source, EXPOSURES, timezone=window.timezone)
        before = ex_source.num_rows
        ex_source = event_filter(ex_source)
        if not isinstance(ex_source, pa.Table):
            raise ConfigError("event_filter must return a pyarrow Table")
        event_counts["removed_by_filter"] = before - ex_source.num_rows
    if isinstance(ex_source, pa.Table):
        _check_columns(ex_source.schema, ex_name)

    scan = _EventScan(exclude_event_ids, source=ex_name)
    scan.add_all(_event_batches(ex_source, ex_name, with_event_id=exclude_event_ids is not None))
    devices, event_device = scan.devices()
    keys = _PersonKeys()
    device_keys = _device_person_keys(devices, graph, source=ex_name)
    dev_offset = keys.add(device_keys)
    order_keys = _order_person_keys(order_table, graph, source=or_name)
    order_offset = keys.add(order_keys)
    ta_offset = -1
    ta_counts: dict[str, int] = {}
    if target_audience is not None:
        ta_keys, ta_counts = _ta_person_keys(target_audience, graph)
        ta_offset = keys.add(ta_keys)
    codes, n_persons = keys.codes()
    device_codes = np.append(codes[dev_offset : dev_offset + len(devices)], -1)
    o_person = codes[order_offset : order_offset + order_table.num_rows]
    person = device_codes[event_device]  # -1 (null device) picks the appended -1
    del event_device
    channels, channel = scan.channels()
    t_ms, kind, cost, excluded = scan.columns()
    event_counts["events_in"] = int(person.size) + event_counts.get("removed_by_filter", 0)
    bad_time = t_ms == np.iinfo(np.int64).min
    reasons = [
        ("excluded_invalid_traffic", excluded),
        ("invalid_device_id", person < 0),
        ("unknown_event_type", kind == 2),
        ("missing_channel", channel < 0),
        ("missing_event_time", bad_time),
    ]
    in_period = (t_ms >= window.start_ms) & (t_ms < window.campaign_end_ms) & (channel >= 0)
    billed_cost = np.bincount(
        channel[in_period], weights=cost[in_period], minlength=len(channels)
    ).astype(np.float64)
    usable = np.ones(person.size, dtype=np.bool_)
    for name, mask in reasons:
        hit = usable & mask
        event_counts[name] = int(hit.sum())
        usable &= ~mask
    late = usable & (t_ms >= window.window_end_ms)
    event_counts["after_conversion_window"] = int(late.sum())
    usable &= ~late
    event_counts["events_used"] = int(usable.sum())
    everything = event_counts["events_used"] == usable.size  # no copies needed

    o_ms = _ms(order_table["order_time"], source=or_name, column="order_time")
    amount = order_table["amount"]
    o_amount = _f64(pc.fill_null(amount.cast(pa.float64()), 0.0))
    in_window = (o_ms >= window.start_ms) & (o_ms < window.window_end_ms)
    ta_person: npt.NDArray[np.bool_] | None = None
    if target_audience is not None:
        ta_codes = codes[ta_offset:]
        ta_person = np.zeros(n_persons, dtype=np.bool_)
        ta_person[ta_codes[ta_codes >= 0]] = True
    order_counts = {
        "orders_in": int(order_table.num_rows),
        "outside_window": int((~in_window).sum()),
        "unresolved_id": int((in_window & (o_person < 0)).sum()),
    }
    prepared = Prepared(
        channels=channels,
        window=window,
        n_persons=n_persons,
        t_person=person if everything else person[usable],
        t_ms=t_ms if everything else t_ms[usable],
        t_channel=channel if everything else channel[usable],
        t_click=(kind if everything else kind[usable]) == 1,
        valid_cost=np.bincount(
            channel[usable & in_period], weights=cost[usable & in_period], minlength=len(channels)
        ).astype(np.float64),
        order_ids=order_table["order_id"].combine_chunks(),
        o_person=o_person,
        o_ms=o_ms,
        o_amount=o_amount,
        o_in_window=in_window,
        ta_person=ta_person,
        billed_cost=billed_cost,
        event_counts=event_counts,
        order_counts=order_counts,
        ta_counts=ta_counts,
    )
    return prepared


_BATCH_ROWS = 1 << 20
_THREADS = max(1, min(4, os.cpu_count() or 1))
_EVENT_COLUMNS = ("event_id", "event_time", "event_type", "channel", "device_id")


def _event_batches(
    source: pa.Table | Path, name: str, *, with_event_id: bool
) -> Iterator[pa.RecordBatch]:
    """The exposure columns attribution reads, batch by batch (Parquet: lazily).

    ``event_id`` is read only when events are to be excluded by id.
    """
    wanted = [c for c in _EVENT_COLUMNS if with_event_id or c != "event_id"]
    if isinstance(source, pa.Table):
        _check_columns(source.schema, name)
        columns = [*wanted, *(["cost"] if "cost" in source.column_names else [])]
        yield from source.select(columns).to_batches(max_chunksize=_BATCH_ROWS)
        return
    # Read the label columns as Parquet stores them (dictionary pages), which
    # spares hashing every row again (not device ids: too many distinct values).
    fmt = pa_ds.ParquetFileFormat(
        read_options=pa_ds.ParquetReadOptions(dictionary_columns=["channel", "event_type"])
    )
    try:
        dataset = pa_ds.dataset(
            str(source),
            format=fmt,
            partitioning="hive" if source.is_dir() else None,
            ignore_prefixes=[".", "_", "manifest"],
        )
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot open as Parquet ({exc})", source=name) from exc
    _check_columns(dataset.schema, name)
    columns = [*wanted, *(["cost"] if "cost" in dataset.schema.names else [])]
    try:
        yield from dataset.to_batches(columns=columns, batch_size=_BATCH_ROWS)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet ({exc})", source=name) from exc


@dataclass
class _Encoded:
    """One exposure batch as arrays: device and channel indices into the batch's own
    dictionaries (-1 for null), event kind, time, cost and the excluded flag."""

    device: npt.NDArray[np.int64]
    device_values: pa.Array
    channel: npt.NDArray[np.int64]
    channel_values: list[str]
    kind: npt.NDArray[np.int8]
    ms: npt.NDArray[np.int64]
    cost: npt.NDArray[np.float64]
    excluded: npt.NDArray[np.bool_]


def _encode_batch(batch: pa.RecordBatch, exclude: pa.Array | None, source: str) -> _Encoded:
    n = batch.num_rows
    device = _encoded(batch.column("device_id"))
    channel = _encoded(batch.column("channel"))
    kinds = _encoded(batch.column("event_type"))
    kind_codes = np.array(
        [_KINDS.get(str(v).strip().lower(), 2) for v in kinds.dictionary.to_pylist()] + [2],
        dtype=np.int8,
    )
    if "cost" in batch.schema.names:
        cost = _f64(pc.fill_null(batch.column("cost").cast(pa.float64()), 0.0))
    else:
        cost = np.zeros(n, dtype=np.float64)
    if exclude is not None and len(exclude):
        hit = pc.is_in(_text(batch.column("event_id")), value_set=exclude)
        excluded = _bool(pc.fill_null(hit, False))
    else:
        excluded = np.zeros(n, dtype=np.bool_)
    return _Encoded(
        device=_i64(pc.fill_null(device.indices, -1)),
        device_values=device.dictionary,
        channel=_i64(pc.fill_null(channel.indices, -1)),
        channel_values=[str(v) for v in channel.dictionary.to_pylist()],
        kind=kind_codes[_i64(pc.fill_null(kinds.indices, -1))],
        ms=_ms(batch.column("event_time"), source=source, column="event_time"),
        cost=cost,
        excluded=excluded,
    )


class _EventScan:
    """Encodes exposure batches into arrays; devices and channels are numbered at the end.

    Per batch, device ids and channels are dictionary-encoded (one hash pass);
    the batch dictionaries are merged once at the end, so only distinct
    values — never the event rows' strings — are kept.
    """

    def __init__(self, exclude: pa.Array | pa.ChunkedArray | None, *, source: str) -> None:
        self._source = source
        self._exclude: pa.Array | None = None
        if exclude is not None:
            ids = exclude.combine_chunks() if isinstance(exclude, pa.ChunkedArray) else exclude
            self._exclude = pc.unique(ids.cast(pa.string()))
        self._dicts: list[pa.Array] = []
        self._dict_rows = 0
        self._device: list[npt.NDArray[np.signedinteger[Any]]] = []
        self._channel: list[npt.NDArray[np.int32]] = []
        self._channel_names: dict[str, int] = {}
        self._ms: list[npt.NDArray[np.int64]] = []
        self._kind: list[npt.NDArray[np.int8]] = []
        self._cost: list[npt.NDArray[np.float64]] = []
        self._excluded: list[npt.NDArray[np.bool_]] = []

    def add_all(self, batches: Iterator[pa.RecordBatch]) -> None:
        """Encode every batch; up to ``_THREADS`` batches at once (Arrow releases the GIL).

        At most ``2 × _THREADS`` batches are in flight, so memory stays bounded.
        """
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            pending: deque[Future[_Encoded]] = deque()
            for batch in batches:
                pending.append(pool.submit(_encode_batch, batch, self._exclude, self._source))
                if len(pending) >= 2 * _THREADS:
                    self._collect(pending.popleft().result())
            while pending:
                self._collect(pending.popleft().result())

    def _collect(self, enc: _Encoded) -> None:
        """Append one encoded batch, renumbering its device and channel dictionaries."""
        renumbered = np.where(enc.device >= 0, enc.device + self._dict_rows, -1)
        self._device.append(renumbered.astype(np.int32 if self._dict_rows < 1 << 30 else np.int64))
        self._dicts.append(enc.device_values)
        self._dict_rows += len(enc.device_values)
        codes = np.array(
            [
                self._channel_names.setdefault(v, len(self._channel_names))
                for v in enc.channel_values
            ]
            + [-1],
            dtype=np.int32,
        )
        self._channel.append(codes[enc.channel])
        self._kind.append(enc.kind)
        self._ms.append(enc.ms)
        self._cost.append(enc.cost)
        self._excluded.append(enc.excluded)

    def devices(self) -> tuple[pa.Array, npt.NDArray[np.int64]]:
        """Distinct device ids, and each event's index into them (-1 for a null device)."""
        merged = pc.dictionary_encode(
            pa.concat_arrays(self._dicts) if self._dicts else pa.array([], pa.string())
        )
        to_unique = np.append(_i64(merged.indices), -1)
        event_device = (
            to_unique[np.concatenate(self._device)] if self._device else np.empty(0, np.int64)
        )
        self._device = []
        self._dicts = []
        return merged.dictionary, event_device

    def channels(self) -> tuple[list[str], npt.NDArray[np.int32]]:
        """Channel names (sorted) and each event's channel index (-1 for missing)."""
        names = sorted(self._channel_names)
        remap = np.full(len(self._channel_names) + 1, -1, dtype=np.int32)
        for name, code in self._channel_names.items():
            remap[code] = names.index(name)
        channel = np.concatenate(self._channel) if self._channel else np.empty(0, np.int32)
        self._channel = []
        return names, remap[channel]

    def columns(
        self,
    ) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int8], npt.NDArray[np.float64], npt.NDArray[np.bool_]
    ]:
        """Event times (ms), kinds (0 impression, 1 click, 2 unknown), costs, excluded flags."""

        def cat(parts: list[Any], dtype: npt.DTypeLike) -> Any:
            return np.concatenate(parts) if parts else np.empty(0, dtype)

        return (
            cat(self._ms, np.int64),
            cat(self._kind, np.int8),
            cat(self._cost, np.float64),
            cat(self._excluded, np.bool_),
        )


_KINDS = {"impression": 0, "click": 1}


def _encoded(values: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """A text column as a dictionary array with ``string`` values (encoded if plain)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        if not pa.types.is_string(values.type.value_type):
            return pa.DictionaryArray.from_arrays(
                values.indices, values.dictionary.cast(pa.string())
            )
        return values
    encoded: pa.DictionaryArray = pc.dictionary_encode(_text(values))
    return encoded


def _text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as a plain ``string`` array (dictionary and view types decoded)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return values


def _check_columns(schema: pa.Schema, source: str) -> None:
    for name in ("event_id", "event_time", "event_type", "channel", "device_id"):
        if name not in schema.names:
            raise SchemaError("exposure table lacks a required column", source=source, column=name)
    if not pa.types.is_timestamp(schema.field("event_time").type):
        raise SchemaError(
            f"expected a timestamp, got {schema.field('event_time').type}",
            source=source,
            column="event_time",
        )


def _ta_person_keys(ta: TargetAudience, graph: IdGraph | None) -> tuple[pa.Array, dict[str, int]]:
    kind = IdKind.parse(ta.id_type)
    values = ta.table[ta.id_column].combine_chunks()
    if pa.types.is_integer(values.type):
        values = values.cast(pa.string())
    normalized = normalize_array(values, kind, source="target audience", column=ta.id_column)
    ids = normalized.values.cast(pa.string())
    if graph is not None:
        resolved = graph.lookup(kind.label, ids)
    else:
        resolved = pa.nulls(len(ids), pa.string())
    if kind.label == "device_id":
        own = pc.binary_join_element_wise(pa.scalar("device_id:"), ids, pa.scalar(""))
        resolved = pc.coalesce(resolved, own)
    invalid = int(normalized.report.invalid)
    unresolved = int(resolved.null_count) - invalid
    return resolved, {
        "ta_rows": len(values),
        "ta_invalid_id": invalid,
        "ta_unresolved_id": unresolved,
    }
