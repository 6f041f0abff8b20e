"""Turn one ID column into de-duplicated, bucketed protocol inputs.

Why: every engine needs the same preparation -- normalize the column with
:mod:`atoll.ids.normalize` (invalid values counted and reported, never
silently dropped), de-duplicate (a PSI set has no duplicates; each duplicate
row is counted), assign buckets with the agreed
:class:`~atoll.ids.buckets.BucketFunction`, and remember which rows carry
which unique ID so that per-bucket results map back to rows. Unique IDs are
kept in one Arrow array sorted by bucket (no Python object per ID until a
bucket is actually run); :meth:`PreparedIds.bucket_packed` hands a bucket to
a protocol machine as one buffer plus offsets cut straight from the Arrow
buffers, which is also what travels to a worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError
from atoll.ids.buckets import BucketFunction
from atoll.ids.normalize import IdKind, InvalidReport, normalize_table_column
from atoll.protocols.psi import PackedItems

__all__ = ["PreparedIds", "prepare_ids"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class PreparedIds:
    """One party's unique IDs of one kind, grouped by bucket.

    ``values[offsets[b]:offsets[b+1]]`` are bucket ``b``'s unique normalized
    IDs; ``first_row[u]`` is the first table row carrying unique ID ``u``;
    ``row_unique[r]`` is row ``r``'s unique-ID index or ``-1`` (invalid,
    null, or not eligible). ``duplicates`` counts eligible valid rows whose
    ID repeats an earlier row's.
    """

    column: str
    kind: IdKind
    values: pa.Array
    offsets: IntArray
    first_row: IntArray
    row_unique: IntArray
    report: InvalidReport
    eligible_rows: int
    duplicates: int

    @property
    def unique(self) -> int:
        """Number of unique valid IDs."""
        return len(self.values)

    @property
    def buckets(self) -> int:
        """Bucket count."""
        return len(self.offsets) - 1

    def bucket_range(self, bucket: int) -> tuple[int, int]:
        """``(start, end)`` of ``bucket`` in :attr:`values`."""
        return int(self.offsets[bucket]), int(self.offsets[bucket + 1])

    def bucket_items(self, bucket: int) -> list[bytes]:
        """Bucket ``bucket``'s unique IDs as UTF-8 bytes (protocol input)."""
        start, end = self.bucket_range(bucket)
        return [s.encode("utf-8") for s in self.values.slice(start, end - start).to_pylist()]

    def bucket_packed(self, bucket: int) -> PackedItems:
        """Bucket ``bucket``'s unique IDs as UTF-8 :class:`PackedItems` (no per-ID objects)."""
        start, end = self.bucket_range(bucket)
        arr = self.values.slice(start, end - start)
        if len(arr) == 0:
            return PackedItems(b"", np.zeros(0, dtype=np.int64))
        if arr.null_count or not (
            pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type)
        ):
            return PackedItems.from_items(self.bucket_items(bucket))
        _, offsets_buf, data_buf = arr.buffers()
        width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
        ends: IntArray = offsets.astype(np.int64)
        lo, hi = int(ends[0]), int(ends[-1])
        data = bytes(memoryview(data_buf)[lo:hi]) if data_buf is not None else b""
        return PackedItems(data, ends[1:] - lo)

    def rows_of(self, unique_ids: IntArray) -> IntArray:
        """All table rows whose unique-ID index is in ``unique_ids`` (ascending)."""
        if len(unique_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        hit = np.zeros(self.unique, dtype=np.bool_)
        hit[unique_ids] = True
        rows = self.row_unique
        return np.flatnonzero((rows >= 0) & hit[np.maximum(rows, 0)]).astype(np.int64)


def prepare_ids(
    table: pa.Table,
    column: str,
    kind: IdKind | str,
    bucket_fn: BucketFunction,
    *,
    eligible: BoolArray | None = None,
    source: str | None = None,
) -> PreparedIds:
    """Normalize, de-duplicate and bucket ``table[column]`` as IDs of ``kind``.

    ``eligible`` (one bool per row) restricts which rows take part (the
    multi-ID waterfall passes the rows not matched at a higher priority).
    Raises SchemaError for a missing or non-text column; invalid values are
    counted in the returned report.
    """
    parsed = IdKind.parse(kind)
    n = table.num_rows
    if eligible is not None and len(eligible) != n:
        raise ConfigError(f"eligible mask has {len(eligible)} entries for {n} rows")
    _, norm = normalize_table_column(table, column, parsed, source=source)
    valid = norm.valid.to_numpy(zero_copy_only=False).astype(np.bool_)
    take = valid if eligible is None else valid & eligible
    rows = np.flatnonzero(take).astype(np.int64)
    chosen = norm.values.take(pa.array(rows, type=pa.int64()))
    if isinstance(chosen, pa.ChunkedArray):
        chosen = chosen.combine_chunks()
    chosen = chosen.cast(pa.large_string())
    unique = pc.unique(chosen)
    position = pc.index_in(chosen, value_set=unique).to_numpy(zero_copy_only=False)
    position = position.astype(np.int64)
    # Position (within ``rows``) of each unique value's first occurrence.
    first_pos = np.unique(position, return_index=True)[1].astype(np.int64)
    bucket_of = bucket_fn.assign(unique.to_pylist()) if len(unique) else np.zeros(0, np.uint32)
    by_bucket = np.argsort(bucket_of, kind="stable").astype(np.int64)
    rank = np.empty(len(by_bucket), dtype=np.int64)
    rank[by_bucket] = np.arange(len(by_bucket), dtype=np.int64)
    counts = np.bincount(bucket_of.astype(np.int64), minlength=bucket_fn.buckets)
    offsets = np.zeros(bucket_fn.buckets + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = unique.take(pa.array(by_bucket, type=pa.int64()))
    row_unique = np.full(n, -1, dtype=np.int64)
    if len(rows):
        row_unique[rows] = rank[position]
    first_row = rows[first_pos[by_bucket]] if len(by_bucket) else np.zeros(0, dtype=np.int64)
    return PreparedIds(
        column=column,
        kind=parsed,
        values=values,
        offsets=offsets,
        first_row=first_row,
        row_unique=row_unique,
        report=norm.report,
        eligible_rows=len(rows),
        duplicates=len(rows) - len(unique),
    )
