"""Persona / consumer insight: who is in a target audience, and how it differs (TGI).

Why: the first thing a brand buys from a data provider is a portrait of a
crowd — its members, buyers, exposed users or a lookalike group — against
the whole device universe ("大盘"): per tag value, how many hold it, what
share that is, and the **TGI** (target group index) = share in the crowd /
share in the base × 100, with its significance, so that the brand can pick
the distinctive features, the apps to reach the crowd in, and the product
lines that fit its consumption level (``../shared/seed/README.md`` §3).

How it is computed (ARCHITECTURE idea 2): the universe is read part by part
(buckets of a :class:`~atoll.data.datasets.BucketedDataset`, row groups of a
Parquet file, batches of a CSV); each part is a task that marks the rows
whose identifier is in the audience and counts, per dimension and value,
holders in the target and in the base (:class:`PersonaCounts`, additive).
Tasks take paths, not tables, so they run inline, on a process pool or on
Ray through :mod:`atoll.execution`; partials are summed, then the counts go
through the output guard (:mod:`atoll.privacy`) and the statistics are
computed from the *guarded* counts (:func:`persona_statistics`).

Definitions (``docs/methods.md`` §1 has the sources and the test vectors):

* unknowns (null, or the labels ``unknown``/empty) are excluded from the
  shares of their dimension in both T and U; coverage = known / all;
* multi-valued tags (``list<string>`` columns) count holders: a device that
  lists a value twice holds it once; shares of a multi-valued dimension do
  not add to 1;
* ``TGI = (x_T/n_T) / (X/N) × 100``; ``z`` is the two-proportion z of the
  target against the *rest* of the base; the 95 % interval is the Wilson
  interval of ``x_T/n_T`` divided by the base share;
* cells with fewer than ``small_base`` (100) target holders are flagged
  ``small_base``; the guard withholds cells below k (default 50), with the
  reason in the ``flag`` column.

Counts are of universe rows (devices): an audience ID matching two devices
counts twice, exactly as the base counts devices.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.crypto import sha256_digest
from atoll.data.datasets import MANIFEST_NAME, BucketedDataset
from atoll.data.io import iter_batches
from atoll.errors import ConfigError, InputError, IntegrityError, SchemaError
from atoll.execution import Executor
from atoll.ids.normalize import IdKind, InvalidReport, normalize_array
from atoll.privacy import Guard, GuardedTable

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_PRODUCT_LINES",
    "DEFAULT_UNKNOWN_LABELS",
    "IDENTIFIER_COLUMNS",
    "DimensionCounts",
    "PersonaConfig",
    "PersonaCounts",
    "PersonaReport",
    "count_table",
    "persona",
    "persona_counts_table",
    "persona_from_counts",
    "persona_statistics",
    "select_dimensions",
    "tgi",
    "two_proportion_z",
    "wilson_interval",
]

#: Column order of ``persona.csv``.
CSV_COLUMNS = (
    "dimension",
    "value",
    "target_count",
    "target_share",
    "base_count",
    "base_share",
    "tgi",
    "z",
    "ci_low",
    "ci_high",
    "flag",
)
#: Text values that mean "unknown" (compared trimmed and lower-cased); nulls always do.
DEFAULT_UNKNOWN_LABELS = frozenset({"unknown", ""})
#: Columns never profiled by default: they are identifiers, not tags.
IDENTIFIER_COLUMNS = frozenset(
    {"device_id", "phone", "oaid", "idfa", "imei", "email", "member_id", "one_id", "person_id"}
)
#: Default consumption level → product line table (a brand overrides it with its own lines).
DEFAULT_PRODUCT_LINES: tuple[tuple[str, str], ...] = (
    ("low", "entry line"),
    ("mid", "core line"),
    ("high", "upgrade line"),
    ("premium", "premium line"),
)
#: Flag of a cell with fewer target holders than ``small_base``.
SMALL_BASE = "small_base"
_ALL = "(all)"
_KNOWN = "(known)"
_MAX_BITS = 64


# --------------------------------------------------------------------------- formulas


def tgi(x_t: float, n_t: float, x_u: float, n_u: float) -> float | None:
    """``TGI = (x_t/n_t) / (x_u/n_u) × 100``; ``None`` if a share is undefined or 0 in the base."""
    if n_t <= 0 or n_u <= 0 or x_u <= 0:
        return None
    return (x_t / n_t) / (x_u / n_u) * 100.0


def two_proportion_z(x_t: float, n_t: float, x_u: float, n_u: float) -> float | None:
    """Two-proportion z of the target against the rest of the base (T ⊆ U).

    ``p_T = x_t/n_t``, ``p_R = (x_u − x_t)/(n_u − n_t)``, pooled ``p̄ = x_u/n_u``,
    ``z = (p_T − p_R) / sqrt(p̄(1 − p̄)(1/n_t + 1/(n_u − n_t)))``. ``None`` when
    the rest is empty or ``p̄`` is 0 or 1 (nothing to compare).
    """
    n_r = n_u - n_t
    if n_t <= 0 or n_r <= 0:
        return None
    pooled = x_u / n_u
    var = pooled * (1 - pooled) * (1 / n_t + 1 / n_r)
    if var <= 0:
        return None
    p_t = x_t / n_t
    p_r = (x_u - x_t) / n_r
    return (p_t - p_r) / math.sqrt(var)


def _z_critical(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(x: float, n: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of the proportion ``x/n`` (``None`` when ``n`` is 0)."""
    if n <= 0:
        return None
    z = _z_critical(confidence)
    p = x / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, center - half), min(1.0, center + half)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class PersonaConfig:
    """What to profile and how to judge it.

    ``dimensions`` ``None`` profiles every tag column (text, integer, boolean
    or list of text; identifiers and ``exclude`` left out). ``product_lines``
    maps consumption levels to the brand's product lines, in order.
    """

    dimensions: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    unknown_labels: frozenset[str] = DEFAULT_UNKNOWN_LABELS
    small_base: int = 100
    confidence: float = 0.95
    fdr: float = 0.05
    top_n: int = 20
    channel_dimension: str = "app_categories"
    consumption_dimension: str = "consumption_level"
    product_lines: tuple[tuple[str, str], ...] = DEFAULT_PRODUCT_LINES

    def __post_init__(self) -> None:
        if self.dimensions is not None:
            if isinstance(self.dimensions, str) or not all(
                isinstance(d, str) and d for d in self.dimensions
            ):
                raise ConfigError("dimensions must be a sequence of column names")
            if len(set(self.dimensions)) != len(self.dimensions):
                raise ConfigError("a dimension is listed twice")
        if not isinstance(self.small_base, int) or self.small_base < 1:
            raise ConfigError(f"small_base must be a positive integer, got {self.small_base!r}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if not 0 < self.fdr < 1:
            raise ConfigError(f"fdr must be in (0, 1), got {self.fdr!r}")
        if not isinstance(self.top_n, int) or self.top_n < 1:
            raise ConfigError(f"top_n must be a positive integer, got {self.top_n!r}")
        object.__setattr__(
            self, "unknown_labels", frozenset(v.strip().lower() for v in self.unknown_labels)
        )


def _kind_of(type_: pa.DataType) -> str | None:
    """``"single"``, ``"multi"`` or ``None`` (not a profilable column type)."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        value = type_.value_type
        return "multi" if pa.types.is_string(value) or pa.types.is_large_string(value) else None
    if (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_integer(type_)
        or pa.types.is_boolean(type_)
    ):
        return "single"
    return None


def select_dimensions(
    schema: pa.Schema, id_column: str, config: PersonaConfig
) -> tuple[list[tuple[str, bool]], list[str]]:
    """The ``(column, multi_valued)`` dimensions to profile, and the columns skipped.

    An explicitly requested dimension that is missing or not profilable is a
    :class:`~atoll.errors.SchemaError`; by default identifiers, ``exclude``
    and columns of other types (floats, timestamps) are skipped and listed.
    """
    names = schema.names
    if config.dimensions is not None:
        chosen = []
        for dim in config.dimensions:
            if dim not in names:
                raise SchemaError(
                    f"no dimension column {dim!r} in the base (columns: {', '.join(names)})",
                    column=dim,
                )
            kind = _kind_of(schema.field(dim).type)
            if kind is None:
                raise SchemaError(
                    f"dimension {dim!r} has type {schema.field(dim).type}; profile text, "
                    "integer, boolean or list-of-text columns (bin continuous values first)",
                    column=dim,
                )
            chosen.append((dim, kind == "multi"))
        return chosen, []
    chosen, skipped = [], []
    for f in schema:
        if f.name == id_column or f.name in IDENTIFIER_COLUMNS or f.name in config.exclude:
            continue
        kind = _kind_of(f.type)
        if kind is None:
            skipped.append(f.name)
        else:
            chosen.append((f.name, kind == "multi"))
    if not chosen:
        raise SchemaError(f"the base has no tag columns to profile (columns: {', '.join(names)})")
    return chosen, skipped


# --------------------------------------------------------------------------- counting


@dataclass(slots=True)
class DimensionCounts:
    """Additive counts of one dimension: known holders and holders per value, in T and U."""

    multi: bool
    target_known: int = 0
    base_known: int = 0
    values: dict[str, list[int]] = field(default_factory=dict)  # value → [target, base]

    def add(self, other: DimensionCounts) -> None:
        """Add another part's counts into this one."""
        self.target_known += other.target_known
        self.base_known += other.base_known
        for value, (t, u) in other.values.items():
            slot = self.values.setdefault(value, [0, 0])
            slot[0] += t
            slot[1] += u


@dataclass(slots=True)
class PersonaCounts:
    """The additive partial of one part of the base (or of all of it, once merged)."""

    target_rows: int
    base_rows: int
    dimensions: dict[str, DimensionCounts]
    matched_ids: pa.Array
    base_missing_ids: int = 0

    @classmethod
    def empty(cls, dims: Sequence[tuple[str, bool]]) -> PersonaCounts:
        """Zero counts for ``dims``."""
        return cls(0, 0, {d: DimensionCounts(m) for d, m in dims}, pa.array([], pa.string()))

    def merge(self, other: PersonaCounts) -> PersonaCounts:
        """The sum of two partials (in place; returns ``self``)."""
        self.target_rows += other.target_rows
        self.base_rows += other.base_rows
        self.base_missing_ids += other.base_missing_ids
        for dim, counts in other.dimensions.items():
            if dim in self.dimensions:
                self.dimensions[dim].add(counts)
            else:
                self.dimensions[dim] = counts
        if len(other.matched_ids):
            self.matched_ids = pc.unique(
                pa.concat_arrays([self.matched_ids, other.matched_ids.cast(pa.string())])
            )
        return self


def _as_dictionary(chunk: pa.Array) -> pa.DictionaryArray:
    if pa.types.is_dictionary(chunk.type):
        if not pa.types.is_string(chunk.type.value_type):
            chunk = chunk.cast(pa.dictionary(chunk.type.index_type, pa.string()))
        return chunk
    if not pa.types.is_string(chunk.type):
        chunk = pc.cast(chunk, pa.string())
    encoded: pa.DictionaryArray = pc.dictionary_encode(chunk)
    return encoded


def _indices(arr: pa.DictionaryArray) -> npt.NDArray[np.int64]:
    idx = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False)
    return np.asarray(idx, dtype=np.int64)


def _known_mask(dictionary: list[str | None], unknown: frozenset[str]) -> npt.NDArray[np.bool_]:
    return np.array(
        [v is not None and v.strip().lower() not in unknown for v in dictionary], dtype=bool
    )


def _add_values(
    counts: DimensionCounts,
    dictionary: list[str | None],
    known: npt.NDArray[np.bool_],
    base: npt.NDArray[np.int64],
    target: npt.NDArray[np.int64],
) -> None:
    for j in np.flatnonzero(known & (base > 0)).tolist():
        slot = counts.values.setdefault(str(dictionary[j]), [0, 0])
        slot[0] += int(target[j])
        slot[1] += int(base[j])


def _count_single(
    chunk: pa.Array, in_t: npt.NDArray[np.bool_], counts: DimensionCounts, unknown: frozenset[str]
) -> None:
    enc = _as_dictionary(chunk)
    dictionary = enc.dictionary.to_pylist()
    k = len(dictionary)
    idx = _indices(enc)
    known = _known_mask(dictionary, unknown)
    base = np.bincount(idx + 1, minlength=k + 1)[1:]
    target = np.bincount(idx[in_t] + 1, minlength=k + 1)[1:]
    counts.base_known += int(base[known].sum())
    counts.target_known += int(target[known].sum())
    _add_values(counts, dictionary, known, base, target)


def _count_multi(
    chunk: pa.Array, in_t: npt.NDArray[np.bool_], counts: DimensionCounts, unknown: frozenset[str]
) -> None:
    if pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_decode()
    listed = np.asarray(chunk.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    counts.base_known += int(listed.sum())
    counts.target_known += int((listed & in_t).sum())
    # Items from the offsets (a null list may still span child values: they are dropped).
    offsets = np.asarray(chunk.offsets.to_numpy(), dtype=np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    if end == start:
        return
    flat = chunk.values.slice(start, end - start)
    parents = np.repeat(np.arange(len(chunk), dtype=np.int64), np.diff(offsets))
    enc = _as_dictionary(flat)
    dictionary = enc.dictionary.to_pylist()
    k = len(dictionary)
    idx = _indices(enc)
    known = _known_mask(dictionary, unknown)
    keep = idx >= 0
    keep[keep] = known[idx[keep]]
    keep &= listed[parents]
    idx, parents = idx[keep], parents[keep]
    if idx.size == 0:
        return
    if k <= _MAX_BITS:
        # One bit per value and row: OR-reduce each row's items (rows are contiguous).
        bits = np.left_shift(np.uint64(1), idx.astype(np.uint64))
        starts = np.flatnonzero(np.diff(parents, prepend=-1))
        row_bits = np.bitwise_or.reduceat(bits, starts)
        rows = parents[starts]
        if int(np.bitwise_count(row_bits).sum()) == idx.size:  # no repeated value in a list
            base = np.bincount(idx, minlength=k)
            target = np.bincount(idx[in_t[parents]], minlength=k)
        else:
            row_t = in_t[rows]
            base = np.zeros(k, dtype=np.int64)
            target = np.zeros(k, dtype=np.int64)
            for j in range(k):
                has = (row_bits >> np.uint64(j)) & np.uint64(1)
                base[j] = int(has.sum())
                target[j] = int(has[row_t].sum())
    else:
        pairs = np.unique(parents * k + idx)
        idx, parents = pairs % k, pairs // k
        base = np.bincount(idx, minlength=k)
        target = np.bincount(idx[in_t[parents]], minlength=k)
    _add_values(counts, dictionary, known, base, target)


def count_table(
    table: pa.Table,
    in_target: npt.NDArray[np.bool_] | pa.Array | Sequence[bool],
    dimensions: Sequence[tuple[str, bool]],
    *,
    unknown_labels: frozenset[str] = DEFAULT_UNKNOWN_LABELS,
) -> PersonaCounts:
    """Count one part of the base: ``in_target[i]`` says whether row ``i`` is in T.

    Returns the additive partial (matched identifiers are not tracked here;
    :func:`persona` adds them).
    """
    mask = np.asarray(
        in_target.to_numpy(zero_copy_only=False) if isinstance(in_target, pa.Array) else in_target,
        dtype=bool,
    )
    if mask.shape != (table.num_rows,):
        raise ConfigError(f"in_target has {mask.size} entries for {table.num_rows} rows")
    unknown = frozenset(v.strip().lower() for v in unknown_labels)
    result = PersonaCounts.empty(dimensions)
    result.target_rows = int(mask.sum())
    result.base_rows = table.num_rows
    for name, multi in dimensions:
        if name not in table.column_names:
            raise SchemaError(f"no dimension column {name!r} in the base", column=name)
        counts = result.dimensions[name]
        offset = 0
        for chunk in table[name].chunks:
            part = mask[offset : offset + len(chunk)]
            offset += len(chunk)
            if multi:
                _count_multi(chunk, part, counts, unknown)
            else:
                _count_single(chunk, part, counts, unknown)
    return result


# --------------------------------------------------------------------------- the map


@dataclass(frozen=True, slots=True)
class _Task:
    """One part of the base, by reference (tasks travel to workers: paths, not data)."""

    source: str
    kind: str  # "bucket" | "row_group"
    part: int
    target_path: str
    id_column: str
    id_kind: str | None
    dimensions: tuple[tuple[str, bool], ...]
    unknown: tuple[str, ...]
    verify: bool


@functools.lru_cache(maxsize=2)
def _target_set(path: str, mtime_ns: int) -> pa.Array:
    del mtime_ns  # part of the cache key only
    return pq.read_table(path).column(0).combine_chunks()


def _mark(
    table: pa.Table, id_column: str, id_kind: str | None, target: pa.Array
) -> tuple[npt.NDArray[np.bool_], pa.Array, int]:
    ids = table[id_column]
    if id_kind is not None:
        ids = normalize_array(ids, id_kind).values
    elif not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        ids = pc.cast(ids, pa.string())
    hit = pc.fill_null(pc.is_in(ids, value_set=target), False)
    mask = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
    matched = pc.unique(pc.filter(ids, hit))
    if isinstance(matched, pa.ChunkedArray):
        matched = matched.combine_chunks()
    return mask, matched.cast(pa.string()), int(ids.null_count)


def _dictionary_columns(schema: pa.Schema, dims: Sequence[tuple[str, bool]]) -> list[str]:
    """Parquet column paths to read as Arrow dictionaries (text tags, list items)."""
    paths = []
    for name, multi in dims:
        if name not in schema.names:
            continue
        typ = schema.field(name).type
        if multi and (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
            if pa.types.is_string(typ.value_type):
                paths.append(f"{name}.list.{typ.value_field.name}")
        elif pa.types.is_string(typ):
            paths.append(name)
    return paths


def _read_bucket(
    source: str, bucket: int, columns: list[str], dims: Sequence[tuple[str, bool]], verify: bool
) -> pa.Table:
    """One bucket's rows, text tags decoded straight into dictionaries.

    Parquet stores text dictionary-encoded; reading it as Arrow dictionaries
    skips materialising and re-hashing every string (about half the cost of
    a persona). Integrity is checked as :meth:`BucketedDataset.read_bucket`
    does: each part's row count, and its SHA-256 when ``verify``.
    """
    dataset = BucketedDataset.open(source)
    parts = []
    for part in dataset.files(bucket):
        path = Path(source) / part.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IntegrityError(f"{path}: listed in the manifest but unreadable ({exc})") from exc
        if verify and sha256_digest(data).hex() != part.sha256:
            raise IntegrityError(f"{path}: content hash differs from the manifest")
        try:
            schema = pq.read_schema(pa.BufferReader(data))
            reader = pq.ParquetFile(
                pa.BufferReader(data), read_dictionary=_dictionary_columns(schema, dims)
            )
            table = reader.read(columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise IntegrityError(f"{path}: unreadable Parquet ({exc})") from exc
        if table.num_rows != part.rows:
            raise IntegrityError(f"{path}: {table.num_rows} rows, the manifest says {part.rows}")
        parts.append(table)
    if not parts:
        return dataset.read_bucket(bucket, columns, verify=False)
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")


def _count_part(task: _Task) -> PersonaCounts:
    """Executor task: read one part of the base and count it."""
    columns = [task.id_column, *(d for d, _ in task.dimensions if d != task.id_column)]
    if task.kind == "bucket":
        table = _read_bucket(task.source, task.part, columns, task.dimensions, task.verify)
    else:
        source = pq.ParquetFile(task.source)
        reader = pq.ParquetFile(
            task.source, read_dictionary=_dictionary_columns(source.schema_arrow, task.dimensions)
        )
        table = reader.read_row_group(task.part, columns=columns)
    target = _target_set(task.target_path, os.stat(task.target_path).st_mtime_ns)
    mask, matched, missing = _mark(table, task.id_column, task.id_kind, target)
    counts = count_table(table, mask, task.dimensions, unknown_labels=frozenset(task.unknown))
    counts.matched_ids = matched
    counts.base_missing_ids = missing
    return counts


def _schema_of(universe: pa.Table | Path) -> tuple[pa.Schema, str]:
    if isinstance(universe, pa.Table):
        return universe.schema, "table"
    if universe.is_dir():
        if not (universe / MANIFEST_NAME).exists():
            raise InputError(f"{universe}: a folder base must be a bucketed dataset (no manifest)")
        return BucketedDataset.open(universe).schema, "dataset"
    if not universe.exists():
        raise InputError("file not found", source=str(universe))
    if universe.suffix.lower() in (".parquet", ".pq"):
        try:
            return pq.read_schema(universe), "parquet"
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"unreadable Parquet ({exc})", source=str(universe)) from exc
    return pa.schema([]), "csv"


def _normalize_audience(
    audience: pa.Array | pa.ChunkedArray | Sequence[str | None],
    id_kind: str | None,
    source: str | None,
    column: str | None,
) -> tuple[pa.Array, int, InvalidReport | None]:
    """Valid, distinct audience IDs; the number of input rows; the invalid-ID report."""
    if isinstance(audience, pa.ChunkedArray):
        values: pa.Array = audience.combine_chunks()
    elif isinstance(audience, pa.Array):
        values = audience
    else:
        values = pa.array(list(audience), type=pa.string())
    rows = len(values)
    report = None
    if id_kind is not None:
        result = normalize_array(values, id_kind, source=source, column=column)
        values, report = result.values, result.report
    elif not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    distinct = pc.unique(pc.drop_null(values))
    if isinstance(distinct, pa.ChunkedArray):
        distinct = distinct.combine_chunks()
    return distinct.cast(pa.string()), rows, report


def persona(
    audience: pa.Array | pa.ChunkedArray | Sequence[str | None],
    universe: pa.Table | str | os.PathLike[str],
    *,
    id_column: str,
    id_kind: IdKind | str | None = None,
    config: PersonaConfig | None = None,
    guard: Guard | None = None,
    executor: Executor | None = None,
    audience_source: str | None = None,
    audience_column: str | None = None,
    list_columns: Sequence[str] = ("app_categories", "interests"),
    verify: bool = True,
    progress: Callable[[int, int], None] | None = None,
    name: str = "persona",
) -> PersonaReport:
    """Profile ``audience`` (identifiers) against ``universe`` (the base), guarded.

    ``universe`` is an Arrow table, a bucketed dataset folder, a Parquet file
    or a CSV file (its ``list_columns`` split on ``|``). ``id_column`` holds the
    base's identifier; with ``id_kind`` both sides are normalized first
    (invalid audience IDs are counted in the report, never silently dropped).
    Parts run on ``executor`` when given (datasets and Parquet files), else
    inline. ``guard`` defaults to k = 50 without DP.
    """
    config = config or PersonaConfig()
    guard = guard or Guard()
    kind_label = None if id_kind is None else IdKind.parse(id_kind).label
    base: pa.Table | Path = (
        universe if isinstance(universe, pa.Table) else Path(os.fspath(universe))
    )
    schema, mode = _schema_of(base)
    target, audience_rows, invalid = _normalize_audience(
        audience, kind_label, audience_source, audience_column
    )
    source_name = "table" if isinstance(base, pa.Table) else str(base)

    if mode == "csv":
        assert isinstance(base, Path)
        first = next(iter_batches(base, batch_rows=1, column_types=None), None)
        if first is None:
            raise InputError("the base file has no rows", source=str(base))
        types = {c: pa.list_(pa.string()) for c in list_columns if c in first.schema.names}
        schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in first.schema])
    if id_column not in schema.names:
        raise SchemaError(
            f"no identifier column {id_column!r} in the base (columns: {', '.join(schema.names)})",
            source=source_name,
            column=id_column,
        )
    dims, skipped = select_dimensions(schema, id_column, config)
    total = PersonaCounts.empty(dims)
    unknown = config.unknown_labels

    def inline(tables: Iterator[pa.Table], parts: int) -> None:
        for i, table in enumerate(tables):
            mask, matched, missing = _mark(table, id_column, kind_label, target)
            part = count_table(table, mask, dims, unknown_labels=unknown)
            part.matched_ids = matched
            part.base_missing_ids = missing
            total.merge(part)
            if progress is not None:
                progress(i + 1, parts)

    if mode == "table":
        assert isinstance(base, pa.Table)
        step = 1 << 20
        slices = max(1, math.ceil(base.num_rows / step))
        inline((base.slice(i * step, step) for i in range(slices)), slices)
    elif mode == "csv":
        assert isinstance(base, Path)
        inline(
            (
                pa.Table.from_batches([b])
                for b in iter_batches(base, column_types=types)  # streams in bounded memory
            ),
            -1,
        )
    else:
        assert isinstance(base, Path)
        if mode == "dataset":
            dataset = BucketedDataset.open(base)
            parts = [("bucket", b) for b in dataset.buckets()]
        else:
            parts = [("row_group", i) for i in range(pq.ParquetFile(base).num_row_groups)]
        with tempfile.TemporaryDirectory(prefix="atoll-persona-") as tmp:
            target_path = str(Path(tmp) / "target.parquet")
            pq.write_table(pa.table({"id": target}), target_path)
            tasks = [
                _Task(
                    str(base),
                    kind,
                    part,
                    target_path,
                    id_column,
                    kind_label,
                    tuple(dims),
                    tuple(sorted(unknown)),
                    verify,
                )
                for kind, part in parts
            ]
            if executor is None:
                results: Iterator[PersonaCounts] = map(_count_part, tasks)
            else:
                results = executor.imap(_count_part, tasks)
            for i, part_counts in enumerate(results):
                total.merge(part_counts)
                if progress is not None:
                    progress(i + 1, len(tasks))
    return persona_from_counts(
        total,
        guard=guard,
        config=config,
        audience_rows=audience_rows,
        audience_ids=len(target),
        invalid=invalid,
        skipped=skipped,
        name=name,
    )


# --------------------------------------------------------------------------- statistics


@dataclass(slots=True)
class PersonaReport:
    """A guarded persona: the cells, coverage, highlights and metrics.

    ``cells`` has the ``persona.csv`` columns (:data:`CSV_COLUMNS`) plus
    ``multi``, ``target_known``, ``base_known``, ``p_value``, ``significant``
    (Benjamini–Hochberg at ``config.fdr``) and ``suppression_reason``.
    """

    cells: pa.Table
    coverage: list[dict[str, Any]]
    top_tags: list[dict[str, Any]]
    channels: list[dict[str, Any]]
    product_lines: list[dict[str, Any]]
    metrics: dict[str, Any]
    guarded: GuardedTable
    config: PersonaConfig

    def csv_table(self) -> pa.Table:
        """The ``persona.csv`` table (exact column order)."""
        return self.cells.select(list(CSV_COLUMNS))

    def dimension(self, name: str) -> list[dict[str, Any]]:
        """The cells of one dimension as dicts, in report order."""
        mask = pc.equal(self.cells["dimension"], name)
        rows: list[dict[str, Any]] = self.cells.filter(mask).to_pylist()
        return rows


def persona_counts_table(counts: PersonaCounts) -> pa.Table:
    """Merged counts as the table the output guard takes (and releases).

    Columns ``dimension, value, kind, group, multi, target_count,
    base_count``: a ``total`` row, then per dimension its ``known`` row and
    one ``cell`` row per value. Guard it with ``counts=["target_count"]``,
    ``key=["dimension", "value"]``, ``group="group"`` and pass the released
    table to :func:`persona_statistics` -- what :func:`persona` does, and
    what the island's ``persona`` job does on the other side of the guard.
    """
    dims, values, kinds, groups, t, u, multi = [], [], [], [], [], [], []

    def row(d: str, v: str, kind: str, group: str | None, tc: int, uc: int, m: bool) -> None:
        dims.append(d)
        values.append(v)
        kinds.append(kind)
        groups.append(group)
        t.append(tc)
        u.append(uc)
        multi.append(m)

    row(_ALL, _ALL, "total", None, counts.target_rows, counts.base_rows, False)
    for dim, dc in counts.dimensions.items():
        row(dim, _KNOWN, "known", None, dc.target_known, dc.base_known, dc.multi)
        ordered = sorted(dc.values.items(), key=lambda kv: (-kv[1][1], kv[0]))
        for value, (tc, uc) in ordered:
            row(dim, value, "cell", None if dc.multi else dim, tc, uc, dc.multi)
    return pa.table(
        {
            "dimension": pa.array(dims, pa.string()),
            "value": pa.array(values, pa.string()),
            "kind": pa.array(kinds, pa.string()),
            "group": pa.array(groups, pa.string()),
            "multi": pa.array(multi, pa.bool_()),
            "target_count": pa.array(t, pa.int64()),
            "base_count": pa.array(u, pa.int64()),
        }
    )


def _sensitivity(counts: PersonaCounts) -> int:
    """L1 bound of one device on all released target counts.

    A device is counted once in the total; per single-valued dimension in
    its known total and one value (2); per multi-valued dimension in its
    known total and at most every value of the dimension (1 + K).
    """
    total = 1
    for dc in counts.dimensions.values():
        total += 1 + (len(dc.values) if dc.multi else 1)
    return total


def _bh(p_values: list[float | None], alpha: float) -> list[bool]:
    """Benjamini–Hochberg: which of the defined p-values are discoveries at FDR ``alpha``."""
    defined = [(p, i) for i, p in enumerate(p_values) if p is not None]
    significant = [False] * len(p_values)
    m = len(defined)
    if not m:
        return significant
    defined.sort()
    cutoff = -1
    for rank, (p, _) in enumerate(defined, start=1):
        if p <= alpha * rank / m:
            cutoff = rank
    for rank, (_, i) in enumerate(defined, start=1):
        if rank <= cutoff:
            significant[i] = True
    return significant


def persona_statistics(
    guarded: pa.Table, config: PersonaConfig
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Shares, TGI, z, interval and flags from a *guarded* counts table.

    Returns the cells table (``kind == "cell"`` rows with statistics) and the
    coverage rows. Statistics of a cell are null when its target count, or
    its dimension's known total, was withheld.
    """
    rows = guarded.to_pylist()
    totals = {r["dimension"]: r for r in rows if r["kind"] == "known"}
    all_row = next(r for r in rows if r["kind"] == "total")
    coverage = []
    for dim, r in totals.items():
        coverage.append(
            {
                "dimension": dim,
                "multi_valued": bool(r["multi"]),
                "target_known": r["target_count"],
                "target_total": all_row["target_count"],
                "target_coverage": None
                if r["target_count"] is None or not all_row["target_count"]
                else r["target_count"] / all_row["target_count"],
                "base_known": r["base_count"],
                "base_total": all_row["base_count"],
                "base_coverage": r["base_count"] / all_row["base_count"]
                if all_row["base_count"]
                else None,
                "flag": r["suppression_reason"] or "",
            }
        )
    out: dict[str, list[Any]] = {c: [] for c in CSV_COLUMNS}
    extra: dict[str, list[Any]] = {
        "multi": [],
        "target_known": [],
        "base_known": [],
        "p_value": [],
        "suppression_reason": [],
    }
    for r in rows:
        if r["kind"] != "cell":
            continue
        known = totals[r["dimension"]]
        x_t, n_t = r["target_count"], known["target_count"]
        x_u, n_u = r["base_count"], known["base_count"]
        reason = r["suppression_reason"]
        if reason is None and x_t is not None and n_t is None:
            reason = f"suppressed: the known total of {r['dimension']} is withheld"
        share_t = tgi_v = z = lo = hi = p = None
        share_u = x_u / n_u if n_u else None
        if reason is None and x_t is not None and n_t:
            x_t_c = min(x_t, n_t)  # noise can push a count above its total
            share_t = x_t_c / n_t
            tgi_v = tgi(x_t_c, n_t, x_u, n_u)
            z = two_proportion_z(x_t_c, n_t, x_u, n_u)
            interval = wilson_interval(x_t_c, n_t, config.confidence)
            if interval is not None and share_u:
                lo, hi = interval[0] / share_u * 100, interval[1] / share_u * 100
            p = None if z is None else math.erfc(abs(z) / math.sqrt(2))
        if reason is not None:
            flag = reason
        elif x_t is not None and x_t < config.small_base:
            flag = SMALL_BASE
        else:
            flag = ""
        for col, val in (
            ("dimension", r["dimension"]),
            ("value", r["value"]),
            ("target_count", None if reason else x_t),
            ("target_share", share_t),
            ("base_count", x_u),
            ("base_share", share_u),
            ("tgi", tgi_v),
            ("z", z),
            ("ci_low", lo),
            ("ci_high", hi),
            ("flag", flag),
        ):
            out[col].append(val)
        extra["multi"].append(bool(r["multi"]))
        extra["target_known"].append(n_t)
        extra["base_known"].append(n_u)
        extra["p_value"].append(p)
        extra["suppression_reason"].append(reason)
    significant = _bh(extra["p_value"], config.fdr)
    float_cols = {"target_share", "base_share", "tgi", "z", "ci_low", "ci_high"}
    columns: dict[str, pa.Array] = {}
    for col in CSV_COLUMNS:
        if col in float_cols:
            typ = pa.float64()
        elif col in ("target_count", "base_count"):
            typ = pa.int64()
        else:
            typ = pa.string()
        columns[col] = pa.array(out[col], type=typ)
    columns["multi"] = pa.array(extra["multi"], pa.bool_())
    columns["target_known"] = pa.array(extra["target_known"], pa.int64())
    columns["base_known"] = pa.array(extra["base_known"], pa.int64())
    columns["p_value"] = pa.array(extra["p_value"], pa.float64())
    columns["significant"] = pa.array(significant, pa.bool_())
    columns["suppression_reason"] = pa.array(extra["suppression_reason"], pa.string())
    return pa.table(columns), coverage


def _highlights(
    cells: pa.Table, dims: Sequence[str], config: PersonaConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [r for r in cells.to_pylist() if r["suppression_reason"] is None]
    top = sorted(
        (r for r in rows if r["significant"] and r["tgi"] is not None and r["tgi"] > 100),
        key=lambda r: (-r["tgi"], r["dimension"], r["value"]),
    )[: config.top_n]
    top_tags = [
        {
            k: r[k]
            for k in (
                "dimension",
                "value",
                "target_count",
                "target_share",
                "base_share",
                "tgi",
                "z",
                "ci_low",
                "ci_high",
                "p_value",
                "flag",
            )
        }
        for r in top
    ]
    channels: list[dict[str, Any]] = []
    if config.channel_dimension in dims:
        cand = [
            r
            for r in rows
            if r["dimension"] == config.channel_dimension
            and r["tgi"] is not None
            and r["target_share"] is not None
        ]
        for r in cand:
            channels.append(
                {
                    "app": r["value"],
                    "reach": r["target_share"],
                    "tgi": r["tgi"],
                    "score": r["tgi"] * r["target_share"],
                    "target_count": r["target_count"],
                    "significant": r["significant"],
                    "flag": r["flag"],
                }
            )
        channels.sort(key=lambda c: (-c["score"], c["app"]))
        channels = channels[: config.top_n]
    lines: list[dict[str, Any]] = []
    if config.consumption_dimension in dims:
        by_value = {
            r["value"]: r
            for r in cells.to_pylist()
            if r["dimension"] == config.consumption_dimension
        }
        for level, line in config.product_lines:
            r = by_value.get(level)
            if r is None:
                continue
            t_ = r["tgi"]
            if t_ is None:
                advice = "no recommendation (cell withheld)"
            elif r["significant"] and t_ >= 110:
                advice = "lead with this line"
            elif r["significant"] and t_ <= 90:
                advice = "de-emphasise"
            else:
                advice = "keep in the mix"
            lines.append(
                {
                    "consumption_level": level,
                    "product_line": line,
                    "target_share": r["target_share"],
                    "base_share": r["base_share"],
                    "tgi": t_,
                    "significant": r["significant"],
                    "recommendation": advice,
                    "flag": r["flag"],
                }
            )
    return top_tags, channels, lines


def persona_from_counts(
    counts: PersonaCounts,
    *,
    guard: Guard | None = None,
    config: PersonaConfig | None = None,
    audience_rows: int | None = None,
    audience_ids: int | None = None,
    invalid: InvalidReport | None = None,
    skipped: Sequence[str] = (),
    name: str = "persona",
) -> PersonaReport:
    """Guard merged counts and compute the report (the merge step of the map)."""
    config = config or PersonaConfig()
    guard = guard or Guard()
    raw = persona_counts_table(counts)
    guarded = guard.apply(
        raw,
        counts=["target_count"],
        threshold="target_count",
        group="group",
        key=["dimension", "value"],
        sensitivity=_sensitivity(counts),
        what=name,
    )
    cells, coverage = persona_statistics(guarded.table, config)
    dims = list(counts.dimensions)
    top_tags, channels, lines = _highlights(cells, dims, config)
    all_row = guarded.table.slice(0, 1).to_pylist()[0]
    matched_ids = len(counts.matched_ids)
    matched_shown = matched_ids if matched_ids >= guard.k else None
    metrics: dict[str, Any] = {
        "audience": {
            "rows": audience_rows,
            "valid_distinct_ids": audience_ids,
            "invalid_ids": None if invalid is None else invalid.to_dict(),
            "matched_ids": matched_shown,
            "match_rate": None
            if matched_shown is None or not audience_ids
            else matched_shown / audience_ids,
            "match_rate_formula": "matched distinct IDs / valid distinct audience IDs",
            "matched_devices": all_row["target_count"],
        },
        "base": {
            "rows": counts.base_rows,
            "rows_without_identifier": counts.base_missing_ids,
        },
        "dimensions": [{"name": d, "multi_valued": counts.dimensions[d].multi} for d in dims],
        "skipped_columns": list(skipped),
        "coverage": coverage,
        "cells": cells.num_rows,
        "small_base_threshold": config.small_base,
        "confidence": config.confidence,
        "fdr": config.fdr,
        "guard": guarded.summary(),
        "top_tags": top_tags,
        "channels": channels,
        "product_lines": lines,
        "formulas": {
            "target_share": "x_T / n_T (holders in target / target devices with a known value)",
            "base_share": "X / N (holders in base / base devices with a known value)",
            "tgi": "(x_T/n_T) / (X/N) × 100",
            "z": "(p_T − p_R) / sqrt(p̄(1−p̄)(1/n_T + 1/(N−n_T))), p_R = (X−x_T)/(N−n_T), p̄ = X/N",
            "ci": f"Wilson {config.confidence:.0%} interval of x_T/n_T, divided by X/N, × 100",
            "significant": f"Benjamini–Hochberg at FDR {config.fdr} over two-sided p of z",
            "channel_score": "TGI × reach (reach = target share of the app category)",
            "coverage": "devices with a known value / all devices",
        },
    }
    return PersonaReport(
        cells=cells,
        coverage=coverage,
        top_tags=top_tags,
        channels=channels,
        product_lines=lines,
        metrics=metrics,
        guarded=guarded,
        config=config,
    )
