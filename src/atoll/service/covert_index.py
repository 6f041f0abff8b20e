"""The covert-query provider's index: built once from the label DB, memory-mapped to serve.

Why a module of its own: building the index is the provider's one heavy
job (one OPRF evaluation per database row for bucket mode: about 25 minutes
of one core for 10M rows), so it runs as maps over chunks and partitions on
an :mod:`atoll.execution` executor. Executor workers import the module that
defines their task functions; keeping those here -- away from FastAPI, the
data store and the service -- makes a worker start in a fraction of the
time. :mod:`atoll.service.covert` re-exports :func:`build_index` and
:func:`load_index`.

Index files (``out/``): ``tags.npy`` (sorted public ID tags, ``S16``) and
``records.npy`` (fixed-length label records aligned with them) for the
``rsa``/``ec`` modes; ``bucket_otags.npy``, ``bucket_cts.npy`` and
``bucket_offsets.npy`` (entries ordered by bucket, then entry tag) and
``oprf.key`` (0600) for bucket mode; ``meta.json`` (version, labels, record
size, bucket bits, the published prefix statistics).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

from atoll.crypto.group import scalar_random
from atoll.errors import ConfigError, DataError, InputError, SchemaError
from atoll.protocols.covert_source import (
    AEAD_OVERHEAD,
    MAX_BUCKET_BITS,
    MAX_ID_BYTES,
    RECORD_VERSION,
    TAG_SIZE,
    ArrayLabelSource,
    BucketArrays,
    PrefixStat,
    RecordCodec,
    id_tag_matrix,
    oprf_entry_matrices,
    prefix_stats,
    seal_entries,
)

if TYPE_CHECKING:
    from atoll.execution import Executor
    from atoll.ids.normalize import IdKind, InvalidReport

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "INDEX_VERSION",
    "MAX_PAYLOAD",
    "IndexReport",
    "LoadedIndex",
    "build_index",
    "load_index",
]

#: Version written into the index's meta.json.
INDEX_VERSION = 1


# --- index building ------------------------------------------------------------------
#
# Three phases; memory holds a few chunks or partitions at a time, never the DB:
#
# 1. scan (calling process): stream the DB in chunks of ``chunk_rows`` rows,
#    normalize and check the IDs (vectorized), write each chunk's valid rows
#    (source row number, ID, label columns) to an Arrow IPC file;
# 2. encode (executor map over chunk files): per row the public ID tag, the
#    JSON label payload and, for bucket mode, the OPRF value F = k * H2G(y)
#    (batch calls of atoll.crypto.group) with its entry tag and entry key.
#    Workers return compact arrays (one structured array + one payload
#    buffer) already ordered by partition (leading tag bits); the caller
#    appends them to the partition spill files;
# 3. sort (executor map over partitions, in partition order): fixed-length
#    records (vectorized), tag order and the duplicate check, bucket entries
#    in (prefix, otag) order sealed under their keys. Workers return the
#    arrays; the caller writes them at their place in the memory-mapped
#    ``.npy`` files. A bucket wider than a partition (few bits) is re-sorted
#    by otag at the end, so an entry's position says nothing about its tag.


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` did.

    ``bucket_seconds`` is the time of the encode and sort phases (tags,
    payloads, records and, with buckets, the OPRF and sealing: the bulk of
    the setup); ``seconds`` the whole build.
    """

    rows: int
    invalid: InvalidReport | None
    record_size: int
    bucket_bits: int
    seconds: float
    bucket_seconds: float
    path: Path


#: Rows per scan chunk (one encode task): big enough to amortize a task, small
#: enough that every core stays busy to the end and a chunk's arrays stay small.
DEFAULT_CHUNK_ROWS = 16_384
#: Longest JSON label payload of one record (its length is a u16 in the record).
MAX_PAYLOAD = 0xFFFF
#: At most 2**8 partitions, of about this many rows each.
_PARTITION_ROWS = 8192
_MAX_PARTITION_BITS = 8
_SPILL_VERSION = 1
#: Phase 2 makes at least this many tasks (of at least _MIN_TASK_ROWS rows).
_MIN_TASKS = 16
_MIN_TASK_ROWS = 256


def _split_labels(
    labels: Sequence[str] | None, columns: Sequence[str], id_column: str
) -> list[str]:
    chosen = list(labels) if labels else [c for c in columns if c != id_column]
    missing = [c for c in chosen if c not in columns]
    if missing:
        raise SchemaError(f"label column(s) {', '.join(missing)} not in the table")
    if id_column in chosen:
        raise ConfigError("the ID column cannot also be a label column")
    if not chosen:
        raise ConfigError("no label columns to serve")
    return chosen


def _first_true(mask: pa.Array | pa.ChunkedArray) -> int | None:
    if not pc.any(mask).as_py():
        return None
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def _chunk_table(
    batch: pa.RecordBatch,
    id_column: str,
    labels: Sequence[str],
    kind: IdKind | None,
    source: str,
    offset: int,
) -> tuple[pa.Table, InvalidReport | None]:
    """Valid rows of one batch as ``(row, id, label0, label1, ...)``; vectorized checks."""
    from atoll.ids.normalize import normalize_array

    if id_column not in batch.schema.names:
        raise SchemaError(f"no column {id_column!r}", source=source)
    column = batch.column(id_column)
    rows = pa.array(np.arange(offset + 1, offset + 1 + batch.num_rows, dtype=np.int64))
    report = None
    keep: pa.Array | None = None
    if kind is not None:
        result = normalize_array(column, kind, source=source, column=id_column, row_offset=offset)
        keep = result.valid
        ids = result.values.cast(pa.string())
        report = result.report
    else:
        ids = pc.utf8_trim_whitespace(column.cast(pa.string()))
        bad = _first_true(pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True))
        if bad is not None:
            raise InputError("empty identifier", source=source, row=offset + bad + 1,
                             column=id_column)  # fmt: skip
    too_long = pc.fill_null(pc.greater(pc.binary_length(ids), MAX_ID_BYTES), False)
    bad = _first_true(too_long if keep is None else pc.and_(too_long, keep))
    if bad is not None:
        raise InputError(f"identifier longer than {MAX_ID_BYTES} bytes", source=source,
                         row=offset + bad + 1, column=id_column)  # fmt: skip
    arrays = [rows, ids, *(batch.column(name) for name in labels)]
    names = ["row", "id", *(f"label{i}" for i in range(len(labels)))]
    table = pa.Table.from_arrays(arrays, names=names)
    if keep is not None:
        table = table.filter(keep)
    return table, report


def _spill_dtype(bucket: bool) -> np.dtype[Any]:
    fields: list[tuple[str, str]] = [("tag", "S16")]
    if bucket:
        fields += [("otag", "V16"), ("ekey", "V32")]
    fields += [("plen", "<u4"), ("row", "<i8")]
    return np.dtype(fields)


def _u8(column: npt.NDArray[Any], width: int) -> npt.NDArray[np.uint8]:
    """A fixed-size bytes field of a structured array as a contiguous ``(n, width)`` matrix."""
    return np.ascontiguousarray(column).view(np.uint8).reshape(-1, width)


def _starts(lengths: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Offsets of variable-length items laid end to end: ``len(lengths) + 1`` values."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _gather(
    blob: npt.NDArray[np.uint8], lengths: npt.NDArray[Any], order: npt.NDArray[np.intp]
) -> npt.NDArray[np.uint8]:
    """The variable-length items of ``blob`` (lengths in item order) rearranged by ``order``."""
    lens = lengths.astype(np.int64)
    old = _starts(lens)[:-1]
    new_lens = lens[order]
    new = _starts(new_lens)
    index = np.repeat(old[order] - new[:-1], new_lens) + np.arange(int(new[-1]))
    return blob[index]


def _partition_of(tags: npt.NDArray[np.uint8], part_bits: int) -> npt.NDArray[np.int64]:
    """The partition of each ``(n, 16)`` tag: its leading ``part_bits`` bits."""
    return (tags[:, 0] >> (8 - part_bits)).astype(np.int64)


@dataclass(frozen=True)
class _ChunkTask:
    path: str
    start: int  # the task's rows of the chunk file: [start, stop)
    stop: int
    source: str
    part_bits: int
    oprf_key: bytes = field(repr=False)  # never in an error message


def _encode_chunk(
    task: _ChunkTask,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Phase 2 on rows of a chunk file: ``(rows ordered by partition, payloads, counts)``."""
    with pa.memory_map(task.path) as handle:
        table = pa.ipc.open_file(handle).read_all().slice(task.start, task.stop - task.start)
    count = table.num_rows
    raw: list[bytes] = table.column(1).cast(pa.binary()).to_pylist()
    label_cols = [table.column(i).to_pylist() for i in range(2, table.num_columns)]
    payload = RecordCodec.payload
    bodies = [payload(values) for values in zip(*label_cols, strict=True)]
    del label_cols
    lengths = np.fromiter(map(len, bodies), dtype=np.int64, count=count)
    rows_in = table.column(0).to_numpy()
    if count and int(lengths.max()) > MAX_PAYLOAD:
        bad = int(np.flatnonzero(lengths > MAX_PAYLOAD)[0])
        raise InputError(f"label record of {int(lengths[bad]):,} bytes exceeds the "
                         f"{MAX_PAYLOAD:,}-byte limit", source=task.source,
                         row=int(rows_in[bad]))  # fmt: skip
    blob = np.frombuffer(b"".join(bodies), dtype=np.uint8)
    del bodies
    tags = id_tag_matrix(raw)
    bucket = bool(task.oprf_key)
    out = np.zeros(count, dtype=_spill_dtype(bucket))
    out["tag"] = tags.view("S16").ravel()
    if bucket:
        otags, keys = oprf_entry_matrices(task.oprf_key, raw)
        out["otag"] = otags.view("V16").ravel()
        out["ekey"] = keys.view("V32").ravel()
    out["plen"] = lengths
    out["row"] = rows_in
    parts = _partition_of(tags, task.part_bits)
    order = np.argsort(parts, kind="stable")
    counts = np.bincount(parts, minlength=1 << task.part_bits).astype(np.int64)
    return out[order], _gather(blob, lengths, order), counts


def _write_frame(handle: Any, rows: npt.NDArray[Any], blob: npt.NDArray[np.uint8]) -> None:
    np.array([_SPILL_VERSION, len(rows), len(blob)], dtype="<u8").tofile(handle)
    rows.tofile(handle)
    blob.tofile(handle)


def _read_frames(
    path: Path, dtype: np.dtype[Any]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
    if not path.exists():
        return np.zeros(0, dtype=dtype), np.zeros(0, dtype=np.uint8)
    raw = np.fromfile(path, dtype=np.uint8)
    rows: list[npt.NDArray[Any]] = []
    blobs: list[npt.NDArray[np.uint8]] = []
    pos = 0
    while pos < len(raw):
        version, count, size = (int(v) for v in raw[pos : pos + 24].view("<u8"))
        if version != _SPILL_VERSION:
            raise DataError(f"{path}: unknown spill frame version {version}")
        pos += 24
        end = pos + count * dtype.itemsize
        rows.append(raw[pos:end].view(dtype))
        blobs.append(raw[end : end + size])
        pos = end + size
    return np.concatenate(rows), np.concatenate(blobs)


@dataclass(frozen=True)
class _PartTask:
    spill: Path
    record_size: int
    bucket_bits: int
    source: str
    id_column: str


@dataclass(frozen=True)
class _PartResult:
    tags: npt.NDArray[Any]  # S16, sorted
    records: npt.NDArray[np.uint8]  # aligned with tags
    otags: npt.NDArray[np.uint8]  # bucket entries in (prefix, otag) order
    cts: npt.NDArray[np.uint8]
    buckets: npt.NDArray[np.int64]  # (k, 2): bucket number, entries


def _fixed_records(
    lengths: npt.NDArray[Any], blob: npt.NDArray[np.uint8], size: int
) -> npt.NDArray[np.uint8]:
    """:meth:`RecordCodec.encode_payload` of every payload at once: ``(n, size)``."""
    count = len(lengths)
    lens = lengths.astype(np.int64)
    out = np.zeros((count, size), dtype=np.uint8)
    out[:, 0] = RECORD_VERSION
    out[:, 1] = lens >> 8
    out[:, 2] = lens & 0xFF
    starts = _starts(lens)[:-1]
    out[np.repeat(np.arange(count), lens), 3 + np.arange(len(blob)) - np.repeat(starts, lens)] = (
        blob
    )
    return out


def _otag_order(
    otags: npt.NDArray[np.uint8], prefixes: npt.NDArray[np.int64] | None = None
) -> npt.NDArray[np.intp]:
    """Indices ordering ``(n, 16)`` otags bytewise, after ``prefixes`` when given."""
    hi = otags[:, :8].copy().view(">u8").ravel()
    lo = otags[:, 8:].copy().view(">u8").ravel()
    keys = (lo, hi) if prefixes is None else (lo, hi, prefixes)
    return np.lexsort(keys)


def _sort_partition(task: _PartTask) -> _PartResult:
    """Phase 3 on one partition: records, tag order, duplicates, sealed bucket entries."""
    bits = task.bucket_bits
    rows, blob = _read_frames(task.spill, _spill_dtype(bool(bits)))
    records = _fixed_records(rows["plen"], blob, task.record_size)
    del blob
    order = np.argsort(rows["tag"], kind="stable")
    tags = rows["tag"][order]
    same = np.flatnonzero(tags[1:] == tags[:-1]) if len(tags) > 1 else np.zeros(0, np.intp)
    if len(same):
        first, again = sorted(int(rows["row"][order[i]]) for i in (same[0], same[0] + 1))
        raise InputError(f"identifier appears more than once in the database (also in row "
                         f"{first})", source=task.source, row=again,
                         column=task.id_column)  # fmt: skip
    empty = np.zeros((0, TAG_SIZE), dtype=np.uint8)
    result = _PartResult(tags, records[order], empty, empty, np.zeros((0, 2), dtype=np.int64))
    if bits:
        head = _u8(rows["tag"], TAG_SIZE)[:, :8].copy().view(">u8").ravel()
        prefixes = (head >> np.uint64(64 - bits)).astype(np.int64)
        otags = _u8(rows["otag"], TAG_SIZE)
        border = _otag_order(otags, prefixes)
        cts = seal_entries(_u8(rows["ekey"], 32)[border], records[border])
        values, counts = np.unique(prefixes, return_counts=True)
        buckets = np.stack([values, counts], axis=1).astype(np.int64)
        result = _PartResult(result.tags, result.records, otags[border], cts, buckets)
    task.spill.unlink(missing_ok=True)
    return result


def build_index(
    db: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    id_column: str,
    labels: Sequence[str] | None = None,
    id_type: str | None = None,
    bucket_bits: int | None = None,
    bucket_target: int = 1000,
    with_bucket: bool = True,
    executor: str = "inline",
    executor_options: dict[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> IndexReport:
    """Build the provider's covert-query index from a CSV/Parquet label table.

    ``labels`` defaults to every column but the ID. With ``id_type`` the IDs
    are normalized first and invalid rows are left out *and counted* in the
    report. ``bucket_bits`` (default: about ``bucket_target`` IDs per bucket)
    fixes the bucket-mode granularity; ``with_bucket=False`` skips the OPRF
    setup (rsa/ec only). One streaming pass over ``db``; the per-row work
    (tags, payloads, one OPRF evaluation per row) is a map over chunks of
    ``chunk_rows`` rows on ``executor`` (``"local"`` uses every core;
    ``executor_options`` go to :func:`~atoll.execution.make_executor`), then a
    map over up to 256 tag partitions. Memory holds a few chunks or partitions.
    """
    # The caller's side only: executor workers never import these.
    from atoll.data.io import iter_batches
    from atoll.execution import make_executor
    from atoll.ids.normalize import IdKind

    started = time.perf_counter()
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
    src = str(db)
    kind = IdKind.parse(id_type) if id_type else None
    out_dir = Path(out)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work = out_dir / "work"
    work.mkdir(parents=True, mode=0o700)  # chunk copies of the DB, entry keys: provider-only

    def tick(step: str, done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    # phase 1: scan, check, write chunk files
    report: InvalidReport | None = None
    chosen: list[str] = []
    chunks: list[tuple[str, int]] = []
    rows = offset = 0
    for batch in iter_batches(db, batch_rows=chunk_rows):
        if not chosen:
            chosen = _split_labels(labels, batch.schema.names, id_column)
        table, rep = _chunk_table(batch, id_column, chosen, kind, src, offset)
        if rep is not None:
            report = rep if report is None else report.merge(rep)
        offset += batch.num_rows
        if table.num_rows:
            path = work / f"c{len(chunks):06d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            chunks.append((str(path), table.num_rows))
            rows += table.num_rows
        tick("index: scanning", offset, 0)
    if not chosen:
        raise InputError("the database has no rows", source=src)
    if bucket_bits is None:
        bucket_bits = max(1, round(math.log2(max(rows, 2) / max(bucket_target, 1))))
    bucket_bits = min(max(bucket_bits, 1), MAX_BUCKET_BITS) if with_bucket else 0
    part_bits = min(
        _MAX_PARTITION_BITS, max(0, math.ceil(math.log2(max(rows, 1) / _PARTITION_ROWS)))
    )
    oprf_key = scalar_random() if bucket_bits else b""
    options = dict(executor_options or {})
    if executor.strip().lower() != "inline":
        options.setdefault("chunksize", 1)
    bucket_started = time.perf_counter()
    with make_executor(executor, **options) as ex:
        spills, max_payload = _encode_all(ex, chunks, src, part_bits, oprf_key, work, rows, tick)
        codec = RecordCodec(tuple(chosen), RecordCodec.size_for(max_payload))
        tasks = [_PartTask(p, codec.record_size, bucket_bits, src, id_column) for p in spills]
        _sort_all(ex, tasks, out_dir, rows, codec, bucket_bits, tick)
    bucket_seconds = time.perf_counter() - bucket_started
    stats = prefix_stats(
        np.load(out_dir / "tags.npy", mmap_mode="r"), max_bits=min(24, rows.bit_length() + 2)
    )
    meta = {
        "v": INDEX_VERSION,
        "labels": list(codec.labels),
        "record_size": codec.record_size,
        "rows": rows,
        "id_column": id_column,
        "id_type": kind.label if kind else None,
        "bucket_bits": bucket_bits,
        "prefix_stats": [s.to_dict() for s in stats],
    }
    if bucket_bits:
        key_path = out_dir / "oprf.key"
        key_path.write_bytes(bytes([INDEX_VERSION]) + oprf_key)
        key_path.chmod(0o600)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    shutil.rmtree(work)
    return IndexReport(
        rows, report, codec.record_size, bucket_bits, time.perf_counter() - started,
        bucket_seconds, out_dir,
    )  # fmt: skip


def _encode_all(
    ex: Executor,
    chunks: list[tuple[str, int]],
    src: str,
    part_bits: int,
    oprf_key: bytes,
    work: Path,
    rows: int,
    tick: Callable[[str, int, int], None],
) -> tuple[list[Path], int]:
    """Phase 2: encode chunks on the executor, append them to the partition spills."""
    spills = [work / f"p{p:03d}.spill" for p in range(1 << part_bits)]
    handles: dict[int, Any] = {}
    step = "index: tags + payloads" + (" + OPRF" if oprf_key else "")
    max_payload = done = 0
    # At least _MIN_TASKS tasks, so that every worker has work even for a small DB.
    step_rows = max(_MIN_TASK_ROWS, math.ceil(rows / _MIN_TASKS))
    tasks = [
        _ChunkTask(path, lo, min(lo + step_rows, size), src, part_bits, oprf_key)
        for path, size in chunks
        for lo in range(0, size, step_rows)
    ]
    try:
        for i, (spilled, blob, counts) in enumerate(ex.imap(_encode_chunk, tasks)):
            if i + 1 == len(tasks) or tasks[i + 1].path != tasks[i].path:
                Path(tasks[i].path).unlink(missing_ok=True)  # chunk file fully encoded
            max_payload = max(max_payload, int(spilled["plen"].max(initial=0)))
            ends = np.cumsum(counts)
            bounds = _starts(spilled["plen"])
            for part in np.flatnonzero(counts).tolist():
                lo, hi = int(ends[part] - counts[part]), int(ends[part])
                if part not in handles:
                    handles[part] = open(spills[part], "ab")  # noqa: SIM115
                _write_frame(handles[part], spilled[lo:hi], blob[bounds[lo] : bounds[hi]])
            done += len(spilled)
            tick(step, done, rows)
    finally:
        for handle in handles.values():
            handle.close()
    return spills, max_payload


def _sort_all(
    ex: Executor,
    tasks: list[_PartTask],
    out_dir: Path,
    rows: int,
    codec: RecordCodec,
    bits: int,
    tick: Callable[[str, int, int], None],
) -> None:
    """Phase 3: sort partitions on the executor; write each at its place in the index files."""
    size = codec.record_size

    def memmap(name: str, dtype: Any, shape: tuple[int, ...]) -> Any:
        return np.lib.format.open_memmap(out_dir / name, mode="w+", dtype=dtype, shape=shape)

    tags = memmap("tags.npy", "S16", (rows,))
    recs = memmap("records.npy", np.uint8, (rows, size))
    if bits:
        otags = memmap("bucket_otags.npy", np.uint8, (rows, TAG_SIZE))
        cts = memmap("bucket_cts.npy", np.uint8, (rows, AEAD_OVERHEAD + size))
        counts = np.zeros(1 << bits, dtype=np.int64)
    pos = 0
    step = "index: sorting" + (" + sealing" if bits else "")
    for finished, part in enumerate(ex.imap(_sort_partition, tasks), start=1):
        count = len(part.tags)
        if pos + count > rows:
            raise DataError(f"index build found more rows than scanned ({rows})")
        tags[pos : pos + count] = part.tags
        recs[pos : pos + count] = part.records
        if bits:
            otags[pos : pos + count] = part.otags
            cts[pos : pos + count] = part.cts
            counts[part.buckets[:, 0]] += part.buckets[:, 1]
        pos += count
        tick(step, finished, len(tasks))
    if pos != rows:
        raise DataError(f"index build lost rows: {pos} written of {rows}")
    tags.flush()
    recs.flush()
    if bits:
        offsets = _starts(counts)
        if (1 << bits) < len(tasks):
            # A bucket spans several partitions: order its entries by otag alone.
            for b in range(1 << bits):
                lo, hi = int(offsets[b]), int(offsets[b + 1])
                block = np.array(otags[lo:hi])
                order = _otag_order(block)
                otags[lo:hi] = block[order]
                cts[lo:hi] = np.array(cts[lo:hi])[order]
        otags.flush()
        cts.flush()
        np.save(out_dir / "bucket_offsets.npy", offsets)


@dataclass(frozen=True)
class LoadedIndex:
    """An index opened by :func:`load_index`: the label source plus its metadata."""

    source: ArrayLabelSource
    stats: list[PrefixStat]
    meta: dict[str, Any]


def load_index(path: str | os.PathLike[str]) -> LoadedIndex:
    """Memory-map an index made by :func:`build_index`."""
    p = Path(path)
    try:
        meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: not a covert-query index ({exc})") from exc
    if meta.get("v") != INDEX_VERSION:
        raise DataError(f"{p}: unsupported covert index version {meta.get('v')}")
    codec = RecordCodec(tuple(meta["labels"]), int(meta["record_size"]))
    tags = np.load(p / "tags.npy", mmap_mode="r")
    records: npt.NDArray[np.uint8] = np.load(p / "records.npy", mmap_mode="r")
    bucket = None
    bits = int(meta.get("bucket_bits") or 0)
    if bits:
        raw_key = (p / "oprf.key").read_bytes()
        if len(raw_key) != 33 or raw_key[0] != INDEX_VERSION:
            raise DataError(f"{p}/oprf.key: malformed")
        bucket = BucketArrays(
            bits,
            raw_key[1:],
            np.load(p / "bucket_otags.npy", mmap_mode="r"),
            np.load(p / "bucket_cts.npy", mmap_mode="r"),
            np.load(p / "bucket_offsets.npy"),
        )
    stats = [PrefixStat(**s) for s in meta["prefix_stats"]]
    return LoadedIndex(ArrayLabelSource(codec, tags, records, bucket), stats, meta)
