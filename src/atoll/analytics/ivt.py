"""Invalid-traffic (IVT) filtering of exposure and click logs: named rules, counts, evaluation.

Why: every measurement number (reach, frequency, CTR, attributed orders, CPO)
is wrong if bots, data-centre traffic, injected clicks and bursts are counted
as people. The MRC's Invalid Traffic guidelines (``docs/methods.md``,
"Invalid traffic") ask that invalid events be removed *before* any metric,
with general (GIVT, list-based) and sophisticated (SIVT, analytics-based)
filtration reported separately. This module is that first step of the
precision ladder:

* eight **named rules**, each switched on or off and parameterised by
  :class:`IvtConfig` (JSON-loadable), each with its own count in the report:

  ========================  =====  ==============================================
  rule                      class  flags an event when
  ========================  =====  ==============================================
  ``bot_user_agent``        GIVT   its user agent matches the bot/crawler list
  ``datacenter_ip``         GIVT   its IP lies in a data-centre CIDR block
  ``invalid_device_id``     GIVT   its device id is malformed or blacklisted
  ``duplicate_event``       GIVT   its event id, or its exact content, was seen
  ``abnormal_frequency``    SIVT   its device (sliding) or IP (tumbling) window
                                   holds more events than the threshold
  ``click_injection``       SIVT   a click comes too soon after its impression,
                                   or just *before* an impression with none
                                   before it; or too soon before an install
  ``click_spamming``        SIVT   its device's events are spread flat over the
                                   day (likelihood ratio uniform vs population)
  ``device_farm``           SIVT   its IP (or IP + user agent) carries too many
                                   distinct devices in a window
  ========================  =====  ==============================================

* **vectorised** (Arrow compute + NumPy over sorted integer keys; the
  bot-pattern regexes run once per *distinct* user agent through RE2), and
  **bucketed by device**: every device-keyed rule needs only one device's
  events, so :func:`run_ivt` spills the log into device buckets and maps
  the buckets over an :class:`~atoll.execution.Executor`; the IP-keyed
  aggregates (many devices per IP) are computed once over the whole log
  with DuckDB (:class:`~atoll.data.store.Store`) and broadcast as small key
  sets. Per-bucket report partials are additive (device counts too, since a
  device lives in one bucket) and merged by summation;
* outputs: the kept events, a per-event flag table (``event_id, row, rule,
  ivt_class``; ``row`` is the 0-based input row, so duplicated event ids stay
  distinguishable), an :class:`IvtReport` (per-rule events, impressions,
  clicks, cost, devices, exclusive counts, pairwise overlap, GIVT/SIVT/any),
  and :func:`evaluate_ivt`: precision and recall against planted labels
  (``truth/ivt_labels`` of the synthetic world), per ``ivt_type`` and per rule.

The shipped lists (``atoll/analytics/data/README.md``): the MIT-licensed
crawler-user-agents patterns plus a few of Atoll's own automation patterns,
and a 2021 snapshot of AWS / Google Cloud / DigitalOcean IPv4 ranges. Both
are configuration: pass current or licensed lists instead (the IAB/ABC
Spiders & Bots list is paid and not redistributable, so it is not shipped).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.data.io import iter_batches, read_table
from atoll.data.schema import DEFAULT_TIMEZONE, EXPOSURES, TIMESTAMP, validate
from atoll.data.store import Store
from atoll.errors import ConfigError, DataError, InputError, SchemaError
from atoll.execution import Executor, make_executor
from atoll.ids.buckets import BucketFunction
from atoll.ids.normalize import IdKind, normalize_array

__all__ = [
    "GIVT_RULES",
    "RULES",
    "SIVT_RULES",
    "IpRanges",
    "IvtConfig",
    "IvtEvaluation",
    "IvtLists",
    "IvtReport",
    "IvtResult",
    "IvtRunResult",
    "UserAgentPatterns",
    "default_lists",
    "detect_ivt",
    "evaluate_ivt",
    "run_ivt",
    "spill_by_key",
]

Bool = npt.NDArray[np.bool_]
Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]

#: Every rule, in report order, with its MRC class.
RULES: Final[Mapping[str, str]] = {
    "bot_user_agent": "GIVT",
    "datacenter_ip": "GIVT",
    "invalid_device_id": "GIVT",
    "duplicate_event": "GIVT",
    "abnormal_frequency": "SIVT",
    "click_injection": "SIVT",
    "click_spamming": "SIVT",
    "device_farm": "SIVT",
}
#: The general invalid-traffic rules (lists and standard parameter checks).
GIVT_RULES: Final = tuple(r for r, c in RULES.items() if c == "GIVT")
#: The sophisticated invalid-traffic rules (analytics over many events).
SIVT_RULES: Final = tuple(r for r, c in RULES.items() if c == "SIVT")

_DATA: Final = Path(__file__).resolve().parent / "data"
_RE2_CHUNK: Final = 300  # patterns per combined RE2 regex (a larger DFA blows RE2's budget)
_MS: Final = 1000
_FLAG_SCHEMA: Final = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("rule", pa.string()),
        pa.field("ivt_class", pa.string()),
    ]
)
_ROW: Final = "_atoll_row"
_BUCKET_PREFIX: Final = "bucket="

# ---------------------------------------------------------------------------------------------
# Lists: bot user-agent patterns and data-centre IP ranges
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserAgentPatterns:
    """Regular expressions of bot / crawler user agents (RE2 syntax, searched anywhere).

    ``source`` says where they came from (shown in reports). Matching runs on
    the *distinct* values of a column, ``_RE2_CHUNK`` patterns per combined
    regex, through Arrow's RE2 (linear time, no catastrophic backtracking).
    """

    patterns: tuple[str, ...]
    source: str
    case_sensitive: bool = True

    def __post_init__(self) -> None:
        bad: list[str] = []
        probe = pa.array(["x"], pa.string())
        for i in range(0, len(self.patterns), _RE2_CHUNK):
            chunk = self.patterns[i : i + _RE2_CHUNK]
            try:
                pc.match_substring_regex(probe, self._combine(chunk))
            except pa.ArrowInvalid:
                for pattern in chunk:
                    try:
                        pc.match_substring_regex(probe, pattern)
                    except pa.ArrowInvalid:
                        bad.append(pattern)
        if bad:
            raise ConfigError(
                f"{self.source}: {len(bad)} user-agent pattern(s) are not valid RE2 "
                f"regular expressions, first {bad[0]!r}"
            )

    @staticmethod
    def _combine(chunk: Sequence[str]) -> str:
        return "|".join(f"(?:{p})" for p in chunk)

    def __add__(self, other: UserAgentPatterns) -> UserAgentPatterns:
        if self.case_sensitive != other.case_sensitive:
            raise ConfigError("cannot combine case-sensitive and case-insensitive pattern lists")
        return UserAgentPatterns(
            self.patterns + other.patterns, f"{self.source} + {other.source}", self.case_sensitive
        )

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, case_sensitive: bool = True
    ) -> UserAgentPatterns:
        """Load patterns from a ``.json`` file (crawler-user-agents layout) or a text file.

        JSON: a list of ``{"pattern": ...}`` objects, or an object whose
        ``patterns`` key holds that list. Text: one pattern per line, ``#``
        comments and blank lines ignored.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read the pattern list ({exc})", source=str(p)) from exc
        if p.suffix.lower() == ".json":
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"not valid JSON ({exc.msg})", source=str(p), row=exc.lineno
                ) from exc
            items = doc.get("patterns") if isinstance(doc, dict) else doc
            if not isinstance(items, list):
                raise InputError("expected a list of {'pattern': ...} objects", source=str(p))
            patterns: list[str] = []
            for i, item in enumerate(items):
                pattern = item.get("pattern") if isinstance(item, dict) else None
                if not isinstance(pattern, str) or not pattern:
                    raise InputError(
                        f"entry {i + 1} has no non-empty 'pattern' string", source=str(p)
                    )
                patterns.append(pattern)
        else:
            patterns = [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        if not patterns:
            raise InputError("the pattern list is empty", source=str(p))
        return cls(tuple(patterns), p.name, case_sensitive)

    def match(self, values: pa.Array | pa.ChunkedArray) -> Bool:
        """Whether each value matches any pattern (null never matches)."""
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        n = len(arr)
        if n == 0 or not self.patterns:
            return np.zeros(n, dtype=bool)
        encoded = pc.dictionary_encode(arr)
        distinct = encoded.dictionary
        hit = np.zeros(len(distinct), dtype=bool)
        if len(distinct):
            for i in range(0, len(self.patterns), _RE2_CHUNK):
                combined = self._combine(self.patterns[i : i + _RE2_CHUNK])
                found = pc.match_substring_regex(
                    distinct, combined, ignore_case=not self.case_sensitive
                )
                hit |= found.to_numpy(zero_copy_only=False)
        indices = encoded.indices
        out = np.zeros(n, dtype=bool)
        valid = ~_null_mask(indices)
        out[valid] = hit[indices.to_numpy(zero_copy_only=False)[valid].astype(np.int64)]
        return out


@dataclass(frozen=True)
class IpRanges:
    """A set of IP blocks (IPv4 and IPv6), merged into sorted disjoint intervals.

    IPv4 lookups are vectorised (text → 32-bit integer with Arrow, then one
    ``searchsorted``); IPv6 addresses, rare in mobile ad logs, are parsed per
    *distinct* value with :mod:`ipaddress`. Unparseable addresses never
    match and are counted by :meth:`contains`'s caller.
    """

    v4_start: npt.NDArray[np.int64]
    v4_end: npt.NDArray[np.int64]  # inclusive
    v6: tuple[tuple[int, int], ...]
    source: str
    blocks: int

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str], *, source: str) -> IpRanges:
        """Build from CIDR strings (``47.92.0.0/14``, a plain address, or IPv6)."""
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        count = 0
        for i, text in enumerate(cidrs):
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError as exc:
                raise InputError(
                    f"not an IP block: {exc}", source=source, row=i + 1, column="cidr"
                ) from exc
            lo, hi = int(net.network_address), int(net.broadcast_address)
            (v4 if net.version == 4 else v6).append((lo, hi))
            count += 1
        m4 = _merge_intervals(v4)
        return cls(
            np.array([a for a, _ in m4], dtype=np.int64),
            np.array([b for _, b in m4], dtype=np.int64),
            tuple(_merge_intervals(v6)),
            source,
            count,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> IpRanges:
        """Load a CSV/Parquet table with a ``cidr`` column, or a text file of one block a line."""
        p = Path(path)
        suffixes = [s.lower() for s in p.suffixes]
        if ".csv" in suffixes or (suffixes and suffixes[-1] in (".parquet", ".pq", ".tsv")):
            table = read_table(p)
            if "cidr" not in table.column_names:
                raise SchemaError(
                    "a data-centre range table needs a 'cidr' column", source=str(p), column="cidr"
                )
            values = [v for v in table["cidr"].to_pylist() if v]
            return cls.from_cidrs(values, source=p.name)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read the range list ({exc})", source=str(p)) from exc
        lines = [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("#")]
        return cls.from_cidrs(lines, source=p.name)

    def contains(self, values: pa.Array | pa.ChunkedArray) -> tuple[Bool, Bool]:
        """``(inside, unparsed)`` masks: address inside a block; non-empty text that is no IP."""
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        encoded = pc.dictionary_encode(arr)
        distinct = encoded.dictionary
        ints, ok = _parse_ipv4(distinct)
        inside = np.zeros(len(distinct), dtype=bool)
        if self.v4_start.size:
            pos = np.searchsorted(self.v4_start, ints, side="right") - 1
            safe = np.clip(pos, 0, None)
            inside = ok & (pos >= 0) & (ints <= self.v4_end[safe])
        unparsed = ~ok
        others = np.flatnonzero(~ok)
        if others.size:
            texts = distinct.take(pa.array(others)).to_pylist()
            for j, text in zip(others, texts, strict=True):
                if text is None or not text.strip():
                    unparsed[j] = False
                    continue
                try:
                    addr = ipaddress.ip_address(text.strip())
                except ValueError:
                    continue
                unparsed[j] = False
                value = int(addr)
                blocks = self.v6 if addr.version == 6 else ()
                inside[j] = any(lo <= value <= hi for lo, hi in blocks)
        idx = encoded.indices
        valid = ~_null_mask(idx)
        rows = idx.to_numpy(zero_copy_only=False)[valid].astype(np.int64)
        out_in = np.zeros(len(arr), dtype=bool)
        out_bad = np.zeros(len(arr), dtype=bool)
        out_in[valid] = inside[rows]
        out_bad[valid] = unparsed[rows]
        return out_in, out_bad


def _merge_intervals(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(items):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


_IPV4: Final = r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$"  # noqa: E501


def _parse_ipv4(values: pa.Array) -> tuple[Int, Bool]:
    """Dotted-quad text → 32-bit integer (vectorised); ``ok`` marks well-formed addresses."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    trimmed = pc.utf8_trim_whitespace(values)
    ok = pc.fill_null(pc.match_substring_regex(trimmed, _IPV4), False).to_numpy(
        zero_copy_only=False
    )
    ints = np.zeros(n, dtype=np.int64)
    if ok.any():
        good = trimmed.filter(pa.array(ok))
        parts = pc.split_pattern(good, ".")
        flat = pc.cast(pc.list_flatten(parts), pa.int64()).to_numpy().reshape(-1, 4)
        ints[ok] = (flat[:, 0] << 24) | (flat[:, 1] << 16) | (flat[:, 2] << 8) | flat[:, 3]
    return ints, ok


def _null_mask(arr: pa.Array) -> Bool:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class IvtLists:
    """The lists the GIVT rules read: bot patterns, data-centre ranges, blacklisted device ids."""

    bot_patterns: UserAgentPatterns
    datacenter: IpRanges
    device_blacklist: frozenset[str] = frozenset()

    def describe(self) -> dict[str, Any]:
        """Sources and sizes, for the report."""
        return {
            "bot_patterns": {
                "source": self.bot_patterns.source,
                "patterns": len(self.bot_patterns.patterns),
                "case_sensitive": self.bot_patterns.case_sensitive,
            },
            "datacenter_ranges": {
                "source": self.datacenter.source,
                "blocks": self.datacenter.blocks,
            },
            "device_blacklist": len(self.device_blacklist),
        }


def default_lists(
    *,
    bot_patterns: str | os.PathLike[str] | None = None,
    extra_bot_patterns: bool = True,
    datacenter_ranges: str | os.PathLike[str] | None = None,
    device_blacklist: str | os.PathLike[str] | None = None,
    case_insensitive: bool = False,
) -> IvtLists:
    """The shipped lists, each replaceable by a file.

    ``bot_patterns`` replaces crawler-user-agents (Atoll's own automation
    patterns are added unless ``extra_bot_patterns`` is false);
    ``datacenter_ranges`` replaces the shipped cloud ranges (e.g. the
    synthetic world's ``truth/datacenter_ranges``); ``device_blacklist`` is a
    text file of device ids, one a line.
    """
    source = Path(bot_patterns) if bot_patterns else _DATA / "crawler-user-agents.json"
    patterns = UserAgentPatterns.from_file(source, case_sensitive=not case_insensitive)
    if extra_bot_patterns:
        patterns = patterns + UserAgentPatterns.from_file(
            _DATA / "atoll-bot-patterns.txt", case_sensitive=not case_insensitive
        )
    ranges = IpRanges.from_file(datacenter_ranges or _DATA / "datacenter-ranges.csv")
    blacklist: frozenset[str] = frozenset()
    if device_blacklist is not None:
        p = Path(device_blacklist)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the device blacklist ({exc})", source=str(p)) from exc
        blacklist = frozenset(
            x.strip().lower() for x in lines if x.strip() and not x.startswith("#")
        )
    return IvtLists(patterns, ranges, blacklist)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IvtConfig:
    """Which rules run and their parameters (defaults documented in docs/methods.md).

    No public standard fixes the SIVT thresholds (methods.md §6.3): these
    defaults are conventions to be tuned per campaign, which is why every
    one is a parameter and the report prints them.
    """

    #: Rules to apply (names from :data:`RULES`).
    rules: tuple[str, ...] = tuple(RULES)
    #: Zone of local hours (flat-time rule) and of days (device-farm windows).
    timezone: str = DEFAULT_TIMEZONE
    #: bot_user_agent: also flag events with no user agent at all.
    flag_missing_user_agent: bool = False
    #: abnormal_frequency: sliding window per device, tumbling window per IP.
    frequency_window_s: float = 3600.0
    #: abnormal_frequency: more events than this in one device window are invalid.
    max_events_per_device: int = 30
    #: abnormal_frequency: more events than this in one IP window (carrier NAT is shared).
    max_events_per_ip: int = 1000
    #: click_injection: a click sooner than this after its impression is injected.
    min_click_delay_s: float = 2.0
    #: click_injection: an impression up to this long before a click is "its" impression.
    max_click_delay_s: float = 600.0
    #: click_injection: a click this close *before* an impression (none before it) is injected.
    click_lead_s: float = 60.0
    #: click_injection (with installs): click-to-install time below this is injected.
    min_click_to_install_s: float = 10.0
    #: click_spamming: event types whose time of day is tested.
    flat_event_types: tuple[str, ...] = ("impression", "click")
    #: click_spamming: devices with fewer events are not tested.
    flat_min_events: int = 50
    #: click_spamming: log-likelihood ratio (nats) of "uniform" vs "population" to flag.
    flat_min_llr: float = 10.0
    #: click_spamming: weight of the uniform distribution mixed into the population's.
    flat_smoothing: float = 0.1
    #: device_farm: window of distinct-device counts (a local calendar day by default).
    farm_window_s: float = 86400.0
    #: device_farm: more distinct devices than this on one IP in a window.
    max_devices_per_ip: int = 200
    #: device_farm: more distinct devices than this on one IP with one user agent.
    max_devices_per_ip_ua: int = 20

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        unknown = [r for r in rules if r not in RULES]
        if unknown:
            raise ConfigError(f"unknown IVT rule(s) {unknown}; known: {', '.join(RULES)}")
        if len(set(rules)) != len(rules):
            raise ConfigError("an IVT rule is listed twice")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "flat_event_types", tuple(self.flat_event_types))
        for name in (
            "frequency_window_s",
            "min_click_delay_s",
            "max_click_delay_s",
            "click_lead_s",
            "min_click_to_install_s",
            "flat_min_llr",
            "farm_window_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"IvtConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in (
            "max_events_per_device",
            "max_events_per_ip",
            "flat_min_events",
            "max_devices_per_ip",
            "max_devices_per_ip_ua",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"IvtConfig.{name} must be an integer >= 1, got {value!r}")
        if self.frequency_window_s <= 0 or self.farm_window_s <= 0:
            raise ConfigError("IvtConfig windows must be positive")
        if not 0.0 < self.flat_smoothing < 1.0:
            raise ConfigError("IvtConfig.flat_smoothing must be in (0, 1)")
        bad_types = [t for t in self.flat_event_types if t not in ("impression", "click")]
        if bad_types or not self.flat_event_types:
            raise ConfigError("IvtConfig.flat_event_types must name impression and/or click")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "IVT config") -> IvtConfig:
        """Build from a JSON-like mapping; unknown keys are an error (typos never pass)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("rules", "flat_event_types"):
            if key in values:
                if not isinstance(values[key], list | tuple):
                    raise ConfigError(f"{source}: {key!r} must be a list")
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> IvtConfig:
        """Load from a JSON file (an object of :class:`IvtConfig` fields)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read the IVT config ({exc})", source=str(p)) from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", source=str(p), row=exc.lineno) from exc
        if not isinstance(data, dict):
            raise InputError("the IVT config must be a JSON object", source=str(p))
        return cls.from_mapping(data, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (printed in the report next to the counts)."""
        out = asdict(self)
        out["rules"] = list(self.rules)
        out["flat_event_types"] = list(self.flat_event_types)
        return out

    def enabled(self, rule: str) -> bool:
        """Whether ``rule`` runs."""
        return rule in self.rules


# ---------------------------------------------------------------------------------------------
# Global (cross-bucket) facts: IP-keyed aggregates and the population's hour-of-day profile
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Globals:
    """What every bucket needs to know about the whole log (small; broadcast to tasks)."""

    hour_reference: Float  # 24 probabilities, smoothed
    ip_windows: pa.Array  # "ip|window" keys over the per-IP event threshold
    farm_ip: pa.Array  # "ip|window" keys with too many devices
    farm_ip_ua: pa.Array  # "ip|ua|window" keys with too many devices
    window_origin_us: int  # local-midnight offset for farm windows


def _hour_counts(table: pa.Table, config: IvtConfig) -> Int:
    """Events per local hour of day (of the flat-test event types)."""
    if table.num_rows == 0:
        return np.zeros(24, dtype=np.int64)
    keep = pc.is_in(table["event_type"], pa.array(list(config.flat_event_types)))
    times = table["event_time"].filter(keep)
    hours = _local_hours(times, config.timezone)
    return np.bincount(hours, minlength=24).astype(np.int64)


def _local_hours(times: pa.ChunkedArray | pa.Array, timezone: str) -> Int:
    zoned = pc.cast(times, pa.timestamp("us", tz=timezone))
    hours = pc.hour(zoned)
    return np.asarray(pc.fill_null(hours, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _tz_offset_us(timezone: str, moment_us: int) -> int:
    """UTC offset (us) of ``timezone`` at a moment: farm windows start at local midnight."""
    probe = pa.array([moment_us], pa.timestamp("us", tz="UTC"))
    local = pc.local_timestamp(pc.cast(probe, pa.timestamp("us", tz=timezone)))
    return int(local.cast(pa.int64())[0].as_py()) - moment_us


def _ip_aggregates(store: Store, name: str, config: IvtConfig, origin_us: int) -> dict[str, Any]:
    """Key sets of IP windows over the thresholds, one DuckDB GROUP BY each."""
    empty = pa.array([], pa.string())
    out: dict[str, pa.Array] = {"ip_windows": empty, "farm_ip": empty, "farm_ip_ua": empty}
    win_us = int(config.frequency_window_s * 1_000_000)
    farm_us = int(config.farm_window_s * 1_000_000)
    if config.enabled("abnormal_frequency"):
        t = store.query(
            f"SELECT ip || '|' || CAST(epoch_us(event_time) // $w AS BIGINT) AS k "  # noqa: S608
            f"FROM {name} WHERE ip IS NOT NULL AND ip <> '' "
            "GROUP BY ip, epoch_us(event_time) // $w HAVING count(*) > $n",
            {"w": win_us, "n": config.max_events_per_ip},
        )
        out["ip_windows"] = t["k"].combine_chunks() if t.num_rows else empty
    if config.enabled("device_farm"):
        t = store.query(
            "SELECT ip || '|' || CAST((epoch_us(event_time) + $o) // $w AS BIGINT) AS k "  # noqa: S608
            f"FROM {name} WHERE ip IS NOT NULL AND ip <> '' "
            "GROUP BY ip, (epoch_us(event_time) + $o) // $w "
            "HAVING count(DISTINCT device_id) > $n",
            {"w": farm_us, "o": origin_us, "n": config.max_devices_per_ip},
        )
        out["farm_ip"] = t["k"].combine_chunks() if t.num_rows else empty
        if "user_agent" in store.query(f"SELECT * FROM {name} LIMIT 0").column_names:  # noqa: S608
            t = store.query(
                "SELECT ip || '|' || user_agent || '|' || "  # noqa: S608
                "CAST((epoch_us(event_time) + $o) // $w AS BIGINT) AS k "
                f"FROM {name} WHERE ip IS NOT NULL AND ip <> '' AND user_agent IS NOT NULL "
                "GROUP BY ip, user_agent, (epoch_us(event_time) + $o) // $w "
                "HAVING count(DISTINCT device_id) > $n",
                {"w": farm_us, "o": origin_us, "n": config.max_devices_per_ip_ua},
            )
            out["farm_ip_ua"] = t["k"].combine_chunks() if t.num_rows else empty
    return out


def _globals(store: Store, name: str, config: IvtConfig, hours: Int, first_us: int) -> _Globals:
    total = float(hours.sum())
    population = hours / total if total > 0 else np.full(24, 1 / 24)
    alpha = config.flat_smoothing
    reference = (1 - alpha) * population + alpha / 24.0
    origin = _tz_offset_us(config.timezone, first_us)
    agg = _ip_aggregates(store, name, config, origin)
    return _Globals(reference, agg["ip_windows"], agg["farm_ip"], agg["farm_ip_ua"], origin)


# ---------------------------------------------------------------------------------------------
# The rules, on one device bucket
# ---------------------------------------------------------------------------------------------


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[Int, int]:
    """Dense integer codes of a column (nulls get their own code), and the number of codes."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(arr, null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, len(encoded.dictionary)


def _composite(key: Int, t: Int, n_keys: int) -> tuple[Int, int]:
    """``key * span + (t - t0)`` as one sortable int64 (raises if it would overflow)."""
    if t.size == 0:
        return t.copy(), 1
    t0 = int(t.min())
    span = int(t.max()) - t0 + 1
    if n_keys * span >= 2**62:
        raise DataError(
            f"a bucket holds {n_keys:,} keys over a {span:,} ms span, too many to index in int64; "
            "use more buckets"
        )
    return key * span + (t - t0), span


def _times_ms(table: pa.Table) -> Int:
    us = pc.cast(table["event_time"], pa.int64()).to_numpy()
    return np.asarray(us // _MS, dtype=np.int64)


def _is_click(table: pa.Table) -> Bool:
    return np.asarray(
        pc.fill_null(pc.equal(table["event_type"], "click"), False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )


def _rule_invalid_device(table: pa.Table, lists: IvtLists) -> Bool:
    """Malformed (normalization fails), placeholder-like or blacklisted device ids."""
    encoded = pc.dictionary_encode(table["device_id"].combine_chunks())
    distinct = encoded.dictionary
    normalized = normalize_array(distinct, IdKind.parse("device_id"), max_samples=0)
    bad = ~np.asarray(normalized.valid.to_numpy(zero_copy_only=False), dtype=bool)
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(distinct))
    compact = pc.replace_substring(lowered, "-", "")
    # one character repeated 8+ times ("0000…", "ffff…"): RE2 has no backreferences, so
    # compare each value with its first character repeated to its length
    length = pc.utf8_length(compact)
    first = pc.utf8_slice_codeunits(compact, 0, 1)
    repeated = pc.binary_repeat(first, length)
    same = pc.and_kleene(pc.greater_equal(length, 8), pc.equal(repeated, compact))
    bad |= np.asarray(pc.fill_null(same, False).to_numpy(zero_copy_only=False), dtype=bool)
    if lists.device_blacklist:
        listed = pc.is_in(lowered, pa.array(sorted(lists.device_blacklist)))
        bad |= np.asarray(pc.fill_null(listed, False).to_numpy(zero_copy_only=False), dtype=bool)
    out = np.ones(len(encoded), dtype=bool)  # a null device id is malformed
    idx = encoded.indices
    valid = ~_null_mask(idx)
    out[valid] = bad[idx.to_numpy(zero_copy_only=False)[valid].astype(np.int64)]
    return out


def _rule_duplicates(table: pa.Table, t_ms: Int) -> Bool:
    """Later copies of an event id, or of the same (device, type, campaign, channel, time).

    Runs per device bucket: an event id reused on two different devices is not seen.
    """
    n = table.num_rows
    dup = np.zeros(n, dtype=bool)
    rows = table[_ROW].to_numpy()
    ev, _ = _codes(table["event_id"])
    order = np.lexsort((rows, ev))
    same = np.zeros(n, dtype=bool)
    same[1:] = ev[order][1:] == ev[order][:-1]
    dup[order[same]] = True
    keys = [_codes(table[c])[0] for c in ("device_id", "event_type", "campaign_id", "channel")]
    us = pc.cast(table["event_time"], pa.int64()).to_numpy()
    order = np.lexsort((rows, us, *keys[::-1]))
    same = np.ones(n - 1, dtype=bool) if n > 1 else np.zeros(0, dtype=bool)
    for k in (*keys, us):
        s = k[order]
        same &= s[1:] == s[:-1]
    content = np.zeros(n, dtype=bool)
    content[1:] = same
    dup[order[content]] = True
    return dup


def _rule_device_frequency(dev: Int, n_dev: int, t_ms: Int, config: IvtConfig) -> Bool:
    """Events inside some sliding window of one device holding more than the threshold."""
    n = dev.size
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    key, _ = _composite(dev, t_ms, n_dev)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    w = int(config.frequency_window_s * _MS)
    # first index of the same device with time >= t - w (composite keys keep devices apart)
    start = np.searchsorted(sk, sk - w, side="left")
    dev_sorted = dev[order]
    dev_start = np.searchsorted(dev_sorted, dev_sorted, side="left")
    start = np.maximum(start, dev_start)
    count = np.arange(n) - start + 1
    over = np.flatnonzero(count > config.max_events_per_device)
    if over.size:
        marks = np.zeros(n + 1, dtype=np.int64)
        np.add.at(marks, start[over], 1)
        np.add.at(marks, over + 1, -1)
        covered = np.cumsum(marks[:-1]) > 0
        out[order[covered]] = True
    return out


def _keys_in(parts: Sequence[pa.Array], keys: pa.Array) -> Bool:
    if len(keys) == 0:
        return np.zeros(len(parts[0]), dtype=bool)
    joined = pc.binary_join_element_wise(*parts, "|")
    hit = pc.fill_null(pc.is_in(joined, keys), False)
    return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)


def _window_ids(t_us: Int, width_s: float, origin_us: int) -> pa.Array:
    w = int(width_s * 1_000_000)
    return pa.array(np.floor_divide(t_us + origin_us, w)).cast(pa.string())


def _rule_click_injection(
    table: pa.Table, t_ms: Int, installs: pa.Table | None, config: IvtConfig
) -> Bool:
    """Clicks too soon after / just before their impression, or too soon before an install."""
    n = table.num_rows
    out = np.zeros(n, dtype=bool)
    click = _is_click(table)
    imp = np.asarray(
        pc.fill_null(pc.equal(table["event_type"], "impression"), False).to_numpy(
            zero_copy_only=False
        ),
        dtype=bool,
    )
    if click.any() and imp.any():
        parts = [_codes(table[c])[0] for c in ("device_id", "campaign_id", "channel")]
        _, stream = np.unique(_mix(parts), return_inverse=True)
        stream = stream.astype(np.int64)
        key, _ = _composite(stream, t_ms, int(stream.max()) + 1)
        order_i = np.argsort(key[imp], kind="stable")
        imp_keys = key[imp][order_i]
        imp_stream = stream[imp][order_i]
        ck = key[click]
        cs = stream[click]
        # previous impression (same stream, at or before the click)
        prev = np.searchsorted(imp_keys, ck, side="right") - 1
        has_prev = prev >= 0
        has_prev[has_prev] = imp_stream[prev[has_prev]] == cs[has_prev]
        delay = np.where(has_prev, ck - imp_keys[np.clip(prev, 0, None)], np.iinfo(np.int64).max)
        nxt = np.searchsorted(imp_keys, ck, side="right")
        has_next = nxt < imp_keys.size
        has_next[has_next] = imp_stream[nxt[has_next]] == cs[has_next]
        lead = np.where(has_next, imp_keys[np.clip(nxt, 0, imp_keys.size - 1)] - ck, -1)
        too_fast = delay < config.min_click_delay_s * _MS
        orphan = delay > config.max_click_delay_s * _MS
        before = orphan & has_next & (lead <= config.click_lead_s * _MS)
        out[np.flatnonzero(click)[too_fast | before]] = True
    if installs is not None and installs.num_rows and click.any():
        out |= _click_to_install(table, t_ms, click, installs, config)
    return out


def _mix(parts: Sequence[Int]) -> Int:
    """One int64 per row identifying the tuple of code columns (mixed radix)."""
    value = np.zeros(parts[0].size, dtype=np.int64)
    for p in parts:
        radix = int(p.max()) + 1 if p.size else 1
        value = value * radix + p
    return value


def _click_to_install(
    table: pa.Table, t_ms: Int, click: Bool, installs: pa.Table, config: IvtConfig
) -> Bool:
    """The last click before each install, when the install follows too soon (CTIT)."""
    n = table.num_rows
    out = np.zeros(n, dtype=bool)
    devices = pa.concat_arrays(
        [table["device_id"].combine_chunks(), installs["device_id"].combine_chunks()]
    )
    codes, n_codes = _codes(devices)
    ev_dev, in_dev = codes[:n], codes[n:]
    in_t = np.asarray(pc.cast(installs["install_time"], pa.int64()).to_numpy() // _MS)
    all_t = np.concatenate([t_ms, in_t])
    key_all, _ = _composite(np.concatenate([ev_dev, in_dev]), all_t, n_codes)
    ck_rows = np.flatnonzero(click)
    ck = key_all[:n][ck_rows]
    order = np.argsort(ck, kind="stable")
    ck_sorted = ck[order]
    ik = key_all[n:]
    pos = np.searchsorted(ck_sorted, ik, side="right") - 1
    ok = pos >= 0
    same_dev = np.zeros(ik.size, dtype=bool)
    same_dev[ok] = ev_dev[ck_rows[order[pos[ok]]]] == in_dev[ok]
    ctit = np.where(same_dev, ik - ck_sorted[np.clip(pos, 0, None)], np.iinfo(np.int64).max)
    hit = same_dev & (ctit < config.min_click_to_install_s * _MS)
    out[ck_rows[order[pos[hit]]]] = True
    return out


def _rule_flat_time(
    dev: Int, n_dev: int, table: pa.Table, config: IvtConfig, reference: Float
) -> Bool:
    """Devices whose events are spread over the day like a machine's (LLR uniform vs population)."""
    n = dev.size
    out = np.zeros(n, dtype=bool)
    chosen = np.asarray(
        pc.fill_null(
            pc.is_in(table["event_type"], pa.array(list(config.flat_event_types))), False
        ).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    if not chosen.any():
        return out
    hours = _local_hours(table["event_time"], config.timezone)
    per_event = np.log((1.0 / 24.0) / reference)[hours]
    llr = np.bincount(dev[chosen], weights=per_event[chosen], minlength=n_dev)
    events = np.bincount(dev[chosen], minlength=n_dev)
    flagged = (events >= config.flat_min_events) & (llr >= config.flat_min_llr)
    out[chosen] = flagged[dev[chosen]]
    return out


@dataclass(frozen=True)
class _BucketInput:
    """One unit of work: a bucket's file(s) or an in-memory table, plus everything it needs."""

    paths: tuple[str, ...]
    config: IvtConfig
    lists: IvtLists
    glob: _Globals
    out_dir: str | None
    bucket: int
    installs: pa.Table | None = None
    table: pa.Table | None = None


def _flag_table(
    table: pa.Table, config: IvtConfig, lists: IvtLists, glob: _Globals, installs: pa.Table | None
) -> tuple[dict[str, Bool], int]:
    """Every enabled rule's mask over one bucket's events; also the unparseable-IP count."""
    n = table.num_rows
    masks: dict[str, Bool] = {}
    t_ms = _times_ms(table)
    t_us = pc.cast(table["event_time"], pa.int64()).to_numpy()
    dev, n_dev = _codes(table["device_id"])
    has_ip = "ip" in table.column_names
    has_ua = "user_agent" in table.column_names
    unparsed = 0
    if config.enabled("bot_user_agent"):
        if has_ua:
            m = lists.bot_patterns.match(table["user_agent"])
            if config.flag_missing_user_agent:
                ua = table["user_agent"].combine_chunks()
                missing = pc.or_kleene(pc.is_null(ua), pc.equal(pc.utf8_trim_whitespace(ua), ""))
                m |= np.asarray(pc.fill_null(missing, True).to_numpy(zero_copy_only=False))
            masks["bot_user_agent"] = m
        else:
            masks["bot_user_agent"] = np.full(n, config.flag_missing_user_agent)
    if has_ip:
        inside, bad = lists.datacenter.contains(table["ip"])
        unparsed = int(bad.sum())
        if config.enabled("datacenter_ip"):
            masks["datacenter_ip"] = inside
    elif config.enabled("datacenter_ip"):
        masks["datacenter_ip"] = np.zeros(n, dtype=bool)
    if config.enabled("invalid_device_id"):
        masks["invalid_device_id"] = _rule_invalid_device(table, lists)
    if config.enabled("duplicate_event"):
        masks["duplicate_event"] = _rule_duplicates(table, t_ms)
    if config.enabled("abnormal_frequency"):
        m = _rule_device_frequency(dev, n_dev, t_ms, config)
        if has_ip and len(glob.ip_windows):
            ip = pc.fill_null(table["ip"].combine_chunks(), "")
            win = _window_ids(t_us, config.frequency_window_s, 0)
            m |= _keys_in([ip, win], glob.ip_windows)
        masks["abnormal_frequency"] = m
    if config.enabled("click_injection"):
        masks["click_injection"] = _rule_click_injection(table, t_ms, installs, config)
    if config.enabled("click_spamming"):
        masks["click_spamming"] = _rule_flat_time(dev, n_dev, table, config, glob.hour_reference)
    if config.enabled("device_farm"):
        m = np.zeros(n, dtype=bool)
        if has_ip and (len(glob.farm_ip) or len(glob.farm_ip_ua)):
            ip = pc.fill_null(table["ip"].combine_chunks(), "")
            win = _window_ids(t_us, config.farm_window_s, glob.window_origin_us)
            m |= _keys_in([ip, win], glob.farm_ip)
            if has_ua and len(glob.farm_ip_ua):
                ua = pc.fill_null(table["user_agent"].combine_chunks(), "\x00")
                m |= _keys_in([ip, ua, win], glob.farm_ip_ua)
        masks["device_farm"] = m
    return {r: masks[r] for r in config.rules if r in masks}, unparsed


# ---------------------------------------------------------------------------------------------
# Report partials (additive) and the report
# ---------------------------------------------------------------------------------------------


def _stats(mask: Bool, click: Bool, cost: Float, dev: Int, n_dev: int) -> dict[str, float | int]:
    seen = np.zeros(n_dev, dtype=bool)
    seen[dev[mask]] = True
    return {
        "events": int(mask.sum()),
        "impressions": int((mask & ~click).sum()),
        "clicks": int((mask & click).sum()),
        "cost": float(cost[mask].sum()),
        "devices": int(seen.sum()),
    }


def _partial(
    table: pa.Table, masks: dict[str, Bool], rules: Sequence[str], unparsed: int
) -> dict[str, Any]:
    n = table.num_rows
    click = _is_click(table)
    cost = (
        np.nan_to_num(
            np.asarray(pc.fill_null(table["cost"], 0.0).to_numpy(zero_copy_only=False), float)
        )
        if "cost" in table.column_names
        else np.zeros(n)
    )
    dev, n_dev = _codes(table["device_id"])
    matrix = np.zeros((len(rules), n), dtype=bool)
    for i, r in enumerate(rules):
        matrix[i] = masks.get(r, np.zeros(n, dtype=bool))
    any_mask: Bool = np.asarray(matrix.any(axis=0), dtype=bool)
    hits = matrix.sum(axis=0)
    givt: Bool = np.asarray(
        matrix[[i for i, r in enumerate(rules) if RULES[r] == "GIVT"]].any(axis=0), dtype=bool
    )
    sivt: Bool = np.asarray(
        matrix[[i for i, r in enumerate(rules) if RULES[r] == "SIVT"]].any(axis=0), dtype=bool
    )
    m = matrix.astype(np.int64)
    return {
        "total": _stats(np.ones(n, dtype=bool), click, cost, dev, n_dev),
        "rules": {
            r: {
                **_stats(matrix[i], click, cost, dev, n_dev),
                "exclusive": int((matrix[i] & (hits == 1)).sum()),
            }
            for i, r in enumerate(rules)
        },
        "givt": _stats(givt, click, cost, dev, n_dev),
        "sivt": _stats(sivt, click, cost, dev, n_dev),
        "any": _stats(any_mask, click, cost, dev, n_dev),
        "overlap": (m @ m.T).tolist(),
        "unparsed_ip": unparsed,
    }


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: _add(a[k], b[k]) for k in a}
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b, strict=True)]
    return a + b


@dataclass(frozen=True)
class IvtReport:
    """Per-rule counts (events, impressions, clicks, cost, devices, exclusive) and overlaps.

    ``overlap[a][b]`` is the number of events flagged by both rules ``a`` and
    ``b`` (the diagonal is each rule's own count). ``givt`` / ``sivt`` /
    ``any`` count events flagged by at least one rule of that class. Shares
    are of ``total``.
    """

    rules: tuple[str, ...]
    total: dict[str, float | int]
    per_rule: dict[str, dict[str, float | int]]
    givt: dict[str, float | int]
    sivt: dict[str, float | int]
    any: dict[str, float | int]
    overlap: dict[str, dict[str, int]]
    unparsed_ip: int
    config: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_partial(cls, partial: dict[str, Any], config: IvtConfig, lists: IvtLists) -> IvtReport:
        """Build from merged bucket partials."""
        rules = config.rules
        overlap = {
            a: {b: int(partial["overlap"][i][j]) for j, b in enumerate(rules)}
            for i, a in enumerate(rules)
        }
        return cls(
            rules=rules,
            total=partial["total"],
            per_rule=partial["rules"],
            givt=partial["givt"],
            sivt=partial["sivt"],
            any=partial["any"],
            overlap=overlap,
            unparsed_ip=int(partial["unparsed_ip"]),
            config=config.to_dict(),
            lists=lists.describe(),
        )

    def share(self, events: int) -> float:
        """``events / total events`` (0 when there are none)."""
        total = int(self.total["events"])
        return events / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (``ivt_report.json``), with each share's formula."""

        def with_share(stats: Mapping[str, float | int]) -> dict[str, Any]:
            return {**stats, "share_of_events": self.share(int(stats["events"]))}

        return {
            "ivt_report_version": 1,
            "formula": {
                "share_of_events": "flagged events / all events",
                "kept": "all events - events flagged by any rule",
            },
            "total": dict(self.total),
            "kept_events": int(self.total["events"]) - int(self.any["events"]),
            "rules": {r: {"class": RULES[r], **with_share(self.per_rule[r])} for r in self.rules},
            "givt": with_share(self.givt),
            "sivt": with_share(self.sivt),
            "any": with_share(self.any),
            "overlap": self.overlap,
            "unparsed_ip": self.unparsed_ip,
            "config": self.config,
            "lists": self.lists,
        }


# ---------------------------------------------------------------------------------------------
# Running: in memory, and bucketed over an executor
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IvtResult:
    """In-memory result: kept events, the flag table and the report."""

    filtered: pa.Table
    flags: pa.Table
    report: IvtReport


def _flags_from_masks(table: pa.Table, masks: dict[str, Bool]) -> pa.Table:
    parts: list[pa.Table] = []
    for rule, mask in masks.items():
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        take = pa.array(idx)
        parts.append(
            pa.table(
                {
                    "event_id": table["event_id"].take(take),
                    "row": table[_ROW].take(take),
                    "rule": pa.array([rule] * idx.size, pa.string()),
                    "ivt_class": pa.array([RULES[rule]] * idx.size, pa.string()),
                },
                schema=_FLAG_SCHEMA,
            )
        )
    if not parts:
        return _FLAG_SCHEMA.empty_table()
    return pa.concat_tables(parts).combine_chunks()


def _process(item: _BucketInput) -> dict[str, Any]:
    """Executor task: flag one bucket, write its flags and kept rows, return its partial."""
    if item.table is not None:
        table = item.table
    else:
        table = pa.concat_tables([pq.read_table(p) for p in item.paths]).combine_chunks()
    masks, unparsed = _flag_table(table, item.config, item.lists, item.glob, item.installs)
    partial = _partial(table, masks, item.config.rules, unparsed)
    any_mask = np.zeros(table.num_rows, dtype=bool)
    for m in masks.values():
        any_mask |= m
    flags = _flags_from_masks(table, masks)
    kept = table.filter(pa.array(~any_mask))
    if item.out_dir is not None:
        out = Path(item.out_dir)
        pq.write_table(flags, out / f"flags-{item.bucket:05d}.parquet", compression="lz4")
        pq.write_table(kept, out / f"kept-{item.bucket:05d}.parquet", compression="lz4")
        return {"partial": partial}
    return {"partial": partial, "flags": flags, "kept": kept}


def _prepare(table: pa.Table, source: str | None, timezone: str) -> pa.Table:
    checked = validate(table, EXPOSURES, source=source, timezone=timezone)
    if _ROW in checked.column_names:
        raise SchemaError(f"column name {_ROW!r} is reserved", source=source, column=_ROW)
    return checked.append_column(_ROW, pa.array(np.arange(checked.num_rows, dtype=np.int64)))


def _check_installs(installs: pa.Table | None, source: str | None) -> pa.Table | None:
    if installs is None:
        return None
    for col in ("device_id", "install_time"):
        if col not in installs.column_names:
            raise SchemaError("the installs table needs device_id and install_time", column=col)
    t = installs.select(["device_id", "install_time"])
    if not pa.types.is_timestamp(t.schema.field("install_time").type):
        raise SchemaError("install_time must be a timestamp", source=source, column="install_time")
    return t.set_column(1, "install_time", pc.cast(t["install_time"], TIMESTAMP))


def detect_ivt(
    events: pa.Table,
    config: IvtConfig | None = None,
    lists: IvtLists | None = None,
    *,
    installs: pa.Table | None = None,
    source: str | None = None,
) -> IvtResult:
    """Apply the IVT rules to an in-memory exposure log (validated against ``EXPOSURES``).

    ``installs`` (``device_id, install_time``) enables the click-to-install
    check of ``click_injection``. The result's ``filtered`` keeps the input's
    row order and columns.
    """
    cfg = config or IvtConfig()
    lst = lists or default_lists()
    table = _prepare(events, source, cfg.timezone)
    inst = _check_installs(installs, source)
    with Store() as store:
        store.register("events", table)
        first = int(pc.min(pc.cast(table["event_time"], pa.int64())).as_py() or 0)
        glob = _globals(store, "events", cfg, _hour_counts(table, cfg), first)
    result = _process(_BucketInput((), cfg, lst, glob, None, 0, inst, table))
    report = IvtReport.from_partial(result["partial"], cfg, lst)
    kept: pa.Table = result["kept"]
    return IvtResult(kept.drop_columns([_ROW]), result["flags"], report)


def spill_by_key(
    batches: Iterable[pa.RecordBatch | pa.Table],
    out_dir: Path,
    key: str,
    buckets: int,
    *,
    on_batch: Callable[[pa.Table], None] | None = None,
    compression: str = "lz4",
) -> dict[int, list[Path]]:
    """Partition a stream of batches by the bucket of ``key`` into Parquet files per bucket.

    The bucket is Atoll's :class:`~atoll.ids.buckets.BucketFunction` of the
    key's text, hashed once per *distinct* value of each batch. One Parquet
    file per (batch, bucket) is written under ``out_dir/bucket=NNNNN/``;
    returns ``{bucket: [files]}``. ``on_batch`` sees every batch first (to
    accumulate global statistics in the same pass). Null keys are an error.
    Scratch files use fast ``lz4`` compression unless ``compression`` says otherwise.
    """
    fn = BucketFunction(buckets)
    files: dict[int, list[Path]] = {}
    for index, batch in enumerate(batches):
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.num_rows == 0:
            continue
        if on_batch is not None:
            on_batch(table)
        column = table[key].combine_chunks()
        if column.null_count:
            raise InputError("null key cannot be bucketed", column=key)
        encoded = pc.dictionary_encode(column)
        distinct = encoded.dictionary.to_pylist()
        per_value = fn.assign(distinct).astype(np.int64)
        assigned = per_value[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
        order = np.argsort(assigned, kind="stable")
        ordered = assigned[order]
        cuts = np.flatnonzero(np.diff(ordered)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [ordered.size]))
        taken = table.take(pa.array(order))
        for s, e in zip(starts, ends, strict=True):
            b = int(ordered[s])
            folder = out_dir / f"{_BUCKET_PREFIX}{b:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{index:06d}.parquet"
            pq.write_table(taken.slice(int(s), int(e - s)), path, compression=compression)
            files.setdefault(b, []).append(path)
    return files


@dataclass(frozen=True)
class IvtRunResult:
    """Files written by :func:`run_ivt`, and the report."""

    report: IvtReport
    flags_path: Path
    filtered_path: Path
    report_path: Path
    events: int


@dataclass
class _SpillState:
    """Statistics gathered while the input streams into buckets (one pass)."""

    rows: int = 0
    hours: Int = field(default_factory=lambda: np.zeros(24, dtype=np.int64))
    first_us: int | None = None


def run_ivt(
    events_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: IvtConfig | None = None,
    lists: IvtLists | None = None,
    *,
    installs_path: str | os.PathLike[str] | None = None,
    executor: Executor | None = None,
    buckets: int = 16,
    batch_rows: int = 1_000_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> IvtRunResult:
    """Filter an exposure log file (CSV or Parquet) bucket by bucket; write the outputs.

    Writes ``filtered.parquet`` (kept events, input order), ``flags.parquet``
    (``event_id, row, rule, ivt_class``, by row) and ``ivt_report.json`` into
    ``out_dir``. The input is validated while it is spilled into ``buckets``
    device buckets (a scratch folder, removed at the end); the IP aggregates
    run in DuckDB over the spill; buckets are mapped over ``executor``
    (inline when ``None``).
    """
    cfg = config or IvtConfig()
    lst = lists or default_lists()
    if not isinstance(buckets, int) or buckets < 1:
        raise ConfigError(f"buckets must be a positive integer, got {buckets!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "_ivt_work"
    if work.exists():
        shutil.rmtree(work)
    spill_dir = work / "spill"
    parts_dir = work / "parts"
    parts_dir.mkdir(parents=True)
    source = str(events_path)
    state = _SpillState()

    def batches() -> Iterator[pa.Table]:
        for batch in iter_batches(
            events_path, EXPOSURES, batch_rows=batch_rows, timezone=cfg.timezone
        ):
            table = pa.Table.from_batches([batch])
            if _ROW in table.column_names:
                raise SchemaError(f"column name {_ROW!r} is reserved", source=source, column=_ROW)
            rows = np.arange(state.rows, state.rows + table.num_rows, dtype=np.int64)
            state.rows += table.num_rows
            if progress is not None:
                progress("validating and bucketing", state.rows, 0)
            yield table.append_column(_ROW, pa.array(rows))

    def observe(table: pa.Table) -> None:
        state.hours = state.hours + _hour_counts(table, cfg)
        low = pc.min(pc.cast(table["event_time"], pa.int64())).as_py()
        if low is not None and (state.first_us is None or low < state.first_us):
            state.first_us = int(low)

    try:
        files = spill_by_key(batches(), spill_dir, "device_id", buckets, on_batch=observe)
        installs = None
        if installs_path is not None:
            installs = _check_installs(read_table(installs_path), str(installs_path))
        if files:
            pattern = str(spill_dir / f"{_BUCKET_PREFIX}*" / "*.parquet").replace("'", "''")
            scan = f"read_parquet('{pattern}', hive_partitioning = false)"
            with Store() as store:
                glob = _globals(store, scan, cfg, state.hours, state.first_us or 0)
        else:
            empty = pa.array([], pa.string())
            glob = _Globals(np.full(24, 1 / 24), empty, empty, empty, 0)
        items = [
            _BucketInput(
                tuple(str(p) for p in paths),
                cfg,
                lst,
                glob,
                str(parts_dir),
                b,
                _installs_for(installs, b, buckets),
            )
            for b, paths in sorted(files.items())
        ]
        partial: dict[str, Any] | None = None
        ex = executor if executor is not None else make_executor("inline")
        own = executor is None
        if own:
            ex.__enter__()
        try:
            for done, res in enumerate(ex.map(_process, items), start=1):
                partial = res["partial"] if partial is None else _add(partial, res["partial"])
                if progress is not None:
                    progress("flagging buckets", done, len(items))
        finally:
            if own:
                ex.__exit__(None, None, None)
        if partial is None:
            partial = _partial(_empty_events(), {}, cfg.rules, 0)
        report = IvtReport.from_partial(partial, cfg, lst)
        flags_path = out / "flags.parquet"
        filtered_path = out / "filtered.parquet"
        with Store() as store:
            _write_sorted(store, parts_dir, "flags", flags_path, "row, rule", _FLAG_SCHEMA)
            _write_sorted(store, parts_dir, "kept", filtered_path, _ROW, EXPOSURES.schema)
        report_path = out / "ivt_report.json"
        report_path.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return IvtRunResult(report, flags_path, filtered_path, report_path, state.rows)


def _empty_events() -> pa.Table:
    empty = EXPOSURES.schema.empty_table()
    return empty.append_column(_ROW, pa.array([], pa.int64()))


def _installs_for(installs: pa.Table | None, bucket: int, buckets: int) -> pa.Table | None:
    """The installs of the devices of ``bucket`` (same bucket function as the spill)."""
    if installs is None or installs.num_rows == 0:
        return installs
    fn = BucketFunction(buckets)
    column = installs["device_id"].combine_chunks()
    encoded = pc.dictionary_encode(column)
    per_value = fn.assign([v or "" for v in encoded.dictionary.to_pylist()]).astype(np.int64)
    idx = encoded.indices
    assigned = np.full(len(column), -1, dtype=np.int64)
    valid = ~_null_mask(idx)
    assigned[valid] = per_value[idx.to_numpy(zero_copy_only=False)[valid].astype(np.int64)]
    return installs.filter(pa.array(assigned == bucket))


def _write_sorted(
    store: Store, parts: Path, prefix: str, target: Path, order_by: str, empty: pa.Schema
) -> None:
    """Concatenate the per-bucket part files into ``target``, ordered (DuckDB streams it)."""
    files = sorted(parts.glob(f"{prefix}-*.parquet"))
    if not files:
        pq.write_table(empty.empty_table(), target)
        return
    listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    drop = f" EXCLUDE ({_ROW})" if prefix == "kept" else ""
    store.execute("SET TimeZone = 'UTC'")  # timestamps come back as tz=UTC, as they went in
    store.write_parquet(
        f"SELECT *{drop} FROM read_parquet([{listing}]) ORDER BY {order_by}",  # noqa: S608
        target,
    )


# ---------------------------------------------------------------------------------------------
# Evaluation against planted labels
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IvtEvaluation:
    """Precision and recall of the flags against labelled invalid events.

    ``by_type[t]`` = planted events of type ``t``, how many any rule caught
    (``recall``) and how many each rule caught. ``by_rule[r]`` = events the
    rule flagged, how many are labelled invalid (``precision``). Overall:
    precision = flagged ∧ labelled / flagged; recall = flagged ∧ labelled /
    labelled, over distinct event ids.
    """

    by_type: dict[str, dict[str, Any]]
    by_rule: dict[str, dict[str, Any]]
    precision: float
    recall: float
    flagged: int
    labelled: int
    true_positives: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def lines(self) -> list[str]:
        """A readable table for logs."""
        out = [
            f"overall: precision {self.precision:.4f}  recall {self.recall:.4f}  "
            f"(flagged {self.flagged:,}, labelled {self.labelled:,}, "
            f"both {self.true_positives:,})"
        ]
        for t, s in self.by_type.items():
            caught = ", ".join(f"{r}={c}" for r, c in s["caught_by"].items() if c)
            out.append(
                f"  ivt_type {t:<20} planted {s['planted']:>7,}  caught {s['caught']:>7,}  "
                f"recall {s['recall']:.4f}  [{caught}]"
            )
        for r, s in self.by_rule.items():
            out.append(
                f"  rule {r:<20} flagged {s['flagged']:>7,}  true {s['true']:>7,}  "
                f"precision {s['precision']:.4f}"
            )
        return out


def evaluate_ivt(flags: pa.Table, labels: pa.Table) -> IvtEvaluation:
    """Compare a flag table (``event_id, rule``) with labels (``event_id, ivt_type``)."""
    for col in ("event_id", "rule"):
        if col not in flags.column_names:
            raise SchemaError("the flag table needs event_id and rule", column=col)
    for col in ("event_id", "ivt_type"):
        if col not in labels.column_names:
            raise SchemaError("the label table needs event_id and ivt_type", column=col)
    flagged_ids = pc.unique(flags["event_id"].combine_chunks())
    label_ids = labels["event_id"].combine_chunks()
    is_flagged = np.asarray(pc.is_in(label_ids, flagged_ids).to_numpy(zero_copy_only=False))
    types = labels["ivt_type"].combine_chunks()
    rules = sorted(set(flags["rule"].to_pylist()), key=lambda r: list(RULES).index(r)
                   if r in RULES else len(RULES))  # fmt: skip
    by_type: dict[str, dict[str, Any]] = {}
    for t in sorted(set(types.to_pylist())):
        sel = np.asarray(pc.equal(types, t).to_numpy(zero_copy_only=False))
        ids = label_ids.filter(pa.array(sel))
        caught_by = {}
        for r in rules:
            rule_ids = flags["event_id"].filter(pc.equal(flags["rule"], r))
            caught_by[r] = int(pc.sum(pc.is_in(ids, rule_ids)).as_py() or 0)
        planted = int(sel.sum())
        caught = int((is_flagged & sel).sum())
        by_type[t] = {
            "planted": planted,
            "caught": caught,
            "recall": caught / planted if planted else 0.0,
            "caught_by": caught_by,
        }
    by_rule: dict[str, dict[str, Any]] = {}
    for r in rules:
        rule_ids = pc.unique(flags["event_id"].filter(pc.equal(flags["rule"], r)))
        true = int(pc.sum(pc.is_in(rule_ids, label_ids)).as_py() or 0)
        by_rule[r] = {
            "flagged": len(rule_ids),
            "true": true,
            "precision": true / len(rule_ids) if len(rule_ids) else 0.0,
        }
    tp = int(pc.sum(pc.is_in(flagged_ids, label_ids)).as_py() or 0)
    n_labels = len(pc.unique(label_ids))
    return IvtEvaluation(
        by_type=by_type,
        by_rule=by_rule,
        precision=tp / len(flagged_ids) if len(flagged_ids) else 0.0,
        recall=tp / n_labels if n_labels else 0.0,
        flagged=len(flagged_ids),
        labelled=n_labels,
        true_positives=tp,
    )
