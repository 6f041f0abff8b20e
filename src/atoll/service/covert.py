"""The provider side of the covert query as a service: index, state, HTTP endpoints.

Why: the protocol machines (:mod:`atoll.protocols.covert`) never touch files or
sockets. A provider needs three more things, all here:

1. **An index of its label database** built once, streaming, bucket by
   bucket (:func:`build_index`): rows are spilled into 256 partitions by the
   first byte of their public ID tag, each partition is sorted (and, for
   bucket mode, OPRF-encrypted: one scalar multiplication per row) as an
   independent task on an :mod:`atoll.execution` executor, and the results
   are concatenated into memory-mappable ``.npy`` files. Loading the index
   (:func:`load_index`) maps them; nothing is read into memory until a
   query touches it.
2. **Provider state** (:class:`ProviderState`) in a state directory: the
   Ed25519 receipt-signing key, the RSA key pool (generated once, reused --
   docs say why that is safe), the metering ledger, async job results.
3. **Endpoints** (:func:`create_app`, FastAPI): ``GET /covert/v1/info``
   (labels, prefix statistics, limits, the receipt key); ``POST
   /covert/v1/sessions`` (a GroupRequest opens a batch session) and ``POST
   /covert/v1/sessions/{batch}`` (its next messages); the asynchronous batch
   mode ``POST /covert/v1/jobs/{batch}`` (submit the Query, get the job id),
   ``GET /covert/v1/jobs/{batch}`` (poll) and ``GET
   /covert/v1/jobs/{batch}/result`` (download). Bodies are frame lists of
   the versioned codec; protocol errors become HTTP 400 with a JSON reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atoll.control.metering import Ledger
from atoll.crypto.group import scalar_random
from atoll.crypto.rsa import RsaKeyPool
from atoll.crypto.sign import SigningKey
from atoll.data.io import iter_batches
from atoll.errors import (
    AtollError,
    ConfigError,
    CryptoError,
    DataError,
    InputError,
    ProtocolError,
    RemoteProtocolError,
    SchemaError,
)
from atoll.execution import make_executor
from atoll.ids.normalize import IdKind, InvalidReport, normalize_array
from atoll.protocols.covert import CovertProvider, GroupRequest, Mode
from atoll.protocols.covert_source import (
    AEAD_OVERHEAD,
    MAX_BUCKET_BITS,
    MAX_ID_BYTES,
    TAG_SIZE,
    ArrayLabelSource,
    BucketArrays,
    PrefixStat,
    RecordCodec,
    bucket_entries,
    id_tag,
    prefix_of,
    prefix_stats,
)
from atoll.protocols.messages import decode_frames, encode_frames
from atoll.service.server import TlsConfig, serve_app

__all__ = [
    "INDEX_VERSION",
    "IndexReport",
    "ProviderConfig",
    "ProviderService",
    "ProviderState",
    "build_index",
    "create_app",
    "load_index",
    "serve",
]

#: Version written into the index's meta.json.
INDEX_VERSION = 1
_PARTITIONS = 256
_MAX_BODY = 256 * 1024 * 1024
_SESSION_TTL = 600.0
_MAX_SESSIONS = 10_000


# --- index building ------------------------------------------------------------------


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` did."""

    rows: int
    invalid: InvalidReport | None
    record_size: int
    bucket_bits: int
    seconds: float
    bucket_seconds: float
    path: Path


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


def _batch_rows(
    batch: pa.RecordBatch,
    id_column: str,
    labels: Sequence[str],
    kind: IdKind | None,
    source: str,
    offset: int,
) -> tuple[list[str], list[bytes], InvalidReport | None]:
    if id_column not in batch.schema.names:
        raise SchemaError(f"no column {id_column!r}", source=source)
    column = batch.column(id_column)
    report = None
    if kind is not None:
        result = normalize_array(column, kind, source=source, column=id_column, row_offset=offset)
        keep = np.asarray(result.valid.to_numpy(zero_copy_only=False), dtype=bool)
        ids = [v for v, k in zip(result.values.to_pylist(), keep, strict=True) if k]
        report = result.report
    else:
        values = column.cast(pa.string()).to_pylist()
        keep = np.array([v is not None and v.strip() != "" for v in values], dtype=bool)
        for i, ok in enumerate(keep):
            if not ok:
                raise InputError("empty identifier", source=source, row=offset + i + 1,
                                 column=id_column)  # fmt: skip
        ids = [v.strip() for v in values]
    cols = [batch.column(name).to_pylist() for name in labels]
    payloads = [
        RecordCodec.payload(row) for row, k in zip(zip(*cols, strict=True), keep, strict=True) if k
    ]
    for i, x in enumerate(ids):
        if len(x.encode("utf-8")) > MAX_ID_BYTES:
            raise InputError(f"identifier longer than {MAX_ID_BYTES} bytes", source=source,
                             row=offset + i + 1, column=id_column)  # fmt: skip
    return ids, payloads, report


def _part_path(work: Path, part: int, name: str) -> Path:
    return work / f"p{part:03d}.{name}"


@dataclass(frozen=True)
class _PartTask:
    spill: str
    record_size: int
    id_width: int
    bucket_bits: int
    oprf_key: bytes


def _process_partition(task: _PartTask) -> tuple[str, int]:
    """Sort one partition by tag; with bucket mode, compute its OPRF entries."""
    spill = Path(task.spill)
    width = TAG_SIZE + task.record_size + 2 + task.id_width
    raw = np.fromfile(spill, dtype=np.uint8) if spill.exists() else np.zeros(0, np.uint8)
    rows = raw.reshape(-1, width)
    tags = np.ascontiguousarray(rows[:, :TAG_SIZE]).view("S16").ravel()
    order = np.argsort(tags, kind="stable")
    rows = rows[order]
    tags = tags[order]
    if len(tags) > 1 and bool((tags[1:] == tags[:-1]).any()):
        raise InputError("an identifier appears more than once in the database")
    base = str(spill.with_suffix(""))
    np.save(base + ".tags.npy", tags)
    np.save(base + ".records.npy", rows[:, TAG_SIZE : TAG_SIZE + task.record_size])
    if task.bucket_bits:
        id_off = TAG_SIZE + task.record_size
        lengths = rows[:, id_off].astype(np.int64) * 256 + rows[:, id_off + 1]
        ids = [
            bytes(rows[i, id_off + 2 : id_off + 2 + int(lengths[i])]).decode("utf-8")
            for i in range(len(rows))
        ]
        records = [bytes(r) for r in rows[:, TAG_SIZE:id_off]]
        otags, cts = bucket_entries(task.oprf_key, ids, records)
        tag_list = [bytes(t) for t in rows[:, :TAG_SIZE]]
        prefixes = [prefix_of(t, task.bucket_bits) for t in tag_list]
        order2 = sorted(range(len(ids)), key=lambda i: (prefixes[i], otags[i]))
        ot = np.frombuffer(b"".join(otags[i] for i in order2), dtype=np.uint8)
        ct = np.frombuffer(b"".join(cts[i] for i in order2), dtype=np.uint8)
        np.save(base + ".otags.npy", ot.reshape(-1, TAG_SIZE))
        np.save(base + ".cts.npy", ct.reshape(-1, AEAD_OVERHEAD + task.record_size))
        np.save(base + ".prefixes.npy", np.array(prefixes, dtype=np.int64))
    spill.unlink(missing_ok=True)
    return base, len(rows)


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
    progress: Callable[[str, int, int], None] | None = None,
) -> IndexReport:
    """Build the provider's covert-query index from a CSV/Parquet label table.

    ``labels`` defaults to every column but the ID. With ``id_type`` the IDs
    are normalized first and invalid rows are left out *and counted* in the
    report. ``bucket_bits`` (default: about ``bucket_target`` IDs per bucket)
    fixes the bucket-mode granularity; ``with_bucket=False`` skips the OPRF
    setup (rsa/ec only). Two streaming passes over ``db``; memory holds one
    partition at a time.
    """
    started = time.perf_counter()
    src = str(db)
    kind = IdKind.parse(id_type) if id_type else None
    out_dir = Path(out)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work = out_dir / "work"
    work.mkdir(parents=True)
    report: InvalidReport | None = None

    def tick(step: str, done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    # pass 1: sizes
    max_payload, max_id, rows, chosen = 0, 1, 0, list(labels or [])
    offset = 0
    for batch in iter_batches(db):
        if offset == 0:
            chosen = _split_labels(labels, batch.schema.names, id_column)
        ids, payloads, rep = _batch_rows(batch, id_column, chosen, kind, src, offset)
        if rep is not None:
            report = rep if report is None else report.merge(rep)
        max_payload = max([max_payload, *map(len, payloads)])
        max_id = max([max_id, *(len(x.encode("utf-8")) for x in ids)])
        rows += len(ids)
        offset += batch.num_rows
        tick("index: scanning", offset, 0)
    if not chosen:
        raise InputError("the database has no rows", source=src)
    codec = RecordCodec(tuple(chosen), RecordCodec.size_for(max_payload))
    if bucket_bits is None:
        bucket_bits = max(1, round(math.log2(max(rows, 2) / max(bucket_target, 1))))
    bucket_bits = min(max(bucket_bits, 1), MAX_BUCKET_BITS) if with_bucket else 0
    # pass 2: encode and spill by the first tag byte
    width = TAG_SIZE + codec.record_size + 2 + max_id
    handles: dict[int, Any] = {}
    offset = done = 0
    try:
        for batch in iter_batches(db):
            ids, payloads, _ = _batch_rows(batch, id_column, chosen, kind, src, offset)
            offset += batch.num_rows
            if not ids:
                continue
            matrix = np.zeros((len(ids), width), dtype=np.uint8)
            for i, (x, body) in enumerate(zip(ids, payloads, strict=True)):
                raw_id = x.encode("utf-8")
                line = id_tag(x) + codec.encode_payload(body) + len(raw_id).to_bytes(2, "big")
                matrix[i, : len(line)] = np.frombuffer(line, dtype=np.uint8)
                matrix[i, len(line) : len(line) + len(raw_id)] = np.frombuffer(raw_id, np.uint8)
            parts = matrix[:, 0]
            for part in np.unique(parts).tolist():
                if part not in handles:
                    handles[part] = open(_part_path(work, part, "spill"), "ab")  # noqa: SIM115
                matrix[parts == part].tofile(handles[part])
            done += len(ids)
            tick("index: partitioning", done, rows)
    finally:
        for handle in handles.values():
            handle.close()
    # per-partition sort (+ OPRF), as executor tasks
    bucket_started = time.perf_counter()
    oprf_key = scalar_random() if bucket_bits else b""
    tasks = [
        _PartTask(
            str(_part_path(work, p, "spill")), codec.record_size, max_id, bucket_bits, oprf_key
        )
        for p in range(_PARTITIONS)
    ]
    results: list[tuple[str, int]] = []
    with make_executor(executor) as ex:
        for finished, result in enumerate(ex.imap(_process_partition, tasks), start=1):
            results.append(result)
            tick("index: sorting" + (" + OPRF" if bucket_bits else ""), finished, _PARTITIONS)
    bucket_seconds = time.perf_counter() - bucket_started
    _concatenate(out_dir, results, rows, codec, bucket_bits)
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


def _concatenate(
    out_dir: Path, results: list[tuple[str, int]], rows: int, codec: RecordCodec, bits: int
) -> None:
    size = codec.record_size
    tags = np.lib.format.open_memmap(out_dir / "tags.npy", mode="w+", dtype="S16", shape=(rows,))
    recs = np.lib.format.open_memmap(
        out_dir / "records.npy", mode="w+", dtype=np.uint8, shape=(rows, size)
    )
    if bits:
        otags = np.lib.format.open_memmap(
            out_dir / "bucket_otags.npy", mode="w+", dtype=np.uint8, shape=(rows, TAG_SIZE)
        )
        cts = np.lib.format.open_memmap(
            out_dir / "bucket_cts.npy", mode="w+", dtype=np.uint8,
            shape=(rows, AEAD_OVERHEAD + size),
        )  # fmt: skip
        counts = np.zeros(1 << bits, dtype=np.int64)
    pos = 0
    for base, count in results:
        if count:
            tags[pos : pos + count] = np.load(base + ".tags.npy")
            recs[pos : pos + count] = np.load(base + ".records.npy")
            if bits:
                otags[pos : pos + count] = np.load(base + ".otags.npy")
                cts[pos : pos + count] = np.load(base + ".cts.npy")
                counts += np.bincount(np.load(base + ".prefixes.npy"), minlength=1 << bits)
        pos += count
    if pos != rows:
        raise DataError(f"index build lost rows: {pos} written of {rows}")
    for arr in (tags, recs):
        arr.flush()
    if bits:
        otags.flush()
        cts.flush()
        offsets = np.zeros((1 << bits) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
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


# --- provider state --------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderConfig:
    """What a provider serves: modes, limits and the RSA pool."""

    modes: tuple[Mode, ...] = (Mode.RSA, Mode.EC, Mode.BUCKET)
    max_n: int = 1024
    rsa_pool_size: int = 128
    rsa_bits: int = 2048
    name: str = "provider"
    max_batch: int = 10_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_n <= 1 << 16:
            raise ConfigError(f"max N must be 1..65536, got {self.max_n}")
        if Mode.RSA in self.modes and self.rsa_pool_size < 1:
            raise ConfigError("rsa mode needs an RSA key pool of at least one key")


def _load_or_make_signing_key(path: Path) -> SigningKey:
    if path.exists():
        raw = path.read_bytes()
        if len(raw) != 33 or raw[0] != 1:
            raise ConfigError(f"{path}: malformed provider key file")
        return SigningKey(raw[1:])
    key = SigningKey.generate()
    path.write_bytes(b"\x01" + key.seed_bytes())
    path.chmod(0o600)
    (path.with_suffix(".pub")).write_text(key.verify_key.to_text() + "\n", encoding="utf-8")
    return key


class ProviderState:
    """Everything a provider keeps between queries, rooted in one state directory.

    ``state_dir/provider.key`` (Ed25519 seed, 0600) and ``provider.pub``;
    ``rsa_pool.bin`` (0600); ``ledger.jsonl``; ``jobs/`` (async results).
    """

    def __init__(
        self,
        index: LoadedIndex,
        state_dir: str | os.PathLike[str],
        config: ProviderConfig,
        *,
        rsa_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.index = index
        self.config = config
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir = self.dir / "jobs"
        self.jobs_dir.mkdir(exist_ok=True)
        self.signing_key = _load_or_make_signing_key(self.dir / "provider.key")
        self.ledger = Ledger(self.dir / "ledger.jsonl", self.signing_key, provider=config.name)
        self.rsa_pool: RsaKeyPool | None = None
        self.rsa_pool_seconds = 0.0
        if Mode.RSA in config.modes:
            self.rsa_pool = self._rsa_pool(rsa_progress)
        if Mode.BUCKET in config.modes and index.source.bucket is None:
            raise ConfigError("bucket mode needs an index built with bucket entries")

    def _rsa_pool(self, progress: Callable[[int, int], None] | None) -> RsaKeyPool:
        path = self.dir / "rsa_pool.bin"
        pool: RsaKeyPool | None = None
        if path.exists():
            try:
                pool = RsaKeyPool.from_bytes(path.read_bytes())
            except CryptoError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            if pool.bits != self.config.rsa_bits:
                pool = None
        have = 0 if pool is None else len(pool)
        if have < self.config.rsa_pool_size:
            started = time.perf_counter()
            more = RsaKeyPool.generate(
                self.config.rsa_pool_size - have, bits=self.config.rsa_bits, progress=progress
            )
            self.rsa_pool_seconds = time.perf_counter() - started
            pool = RsaKeyPool((pool.keys if pool else []) + more.keys)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pool.to_bytes())
            tmp.chmod(0o600)
            os.replace(tmp, path)
        assert pool is not None
        return pool

    def machine(self) -> CovertProvider:
        """A fresh provider machine for one batch."""
        return CovertProvider(
            self.index.source,
            signing_key=self.signing_key,
            biller=self.ledger,
            rsa_pool=self.rsa_pool,
            modes=self.config.modes,
            max_n=self.config.max_n,
            max_batch=self.config.max_batch,
        )

    def info(self) -> dict[str, Any]:
        """The public description clients read first (``GET /covert/v1/info``)."""
        src = self.index.source
        return {
            "v": 1,
            "provider": self.config.name,
            "modes": [m.label for m in self.config.modes],
            "labels": list(src.codec.labels),
            "record_size": src.codec.record_size,
            "rows": len(src),
            "id_type": self.index.meta.get("id_type"),
            "prefix_stats": [s.to_dict() for s in self.index.stats],
            "bucket_bits": src.bucket_bits,
            "max_n": self.config.max_n,
            "max_group_rsa": len(self.rsa_pool) if self.rsa_pool else 0,
            "rsa_bits": self.config.rsa_bits if self.rsa_pool else 0,
            "max_batch": self.config.max_batch,
            "signing_key": self.signing_key.verify_key.to_text(),
        }


# --- sessions and jobs (framework-independent) -------------------------------------------


@dataclass
class _Session:
    machine: CovertProvider
    created: float
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Job:
    status: str = "queued"
    error: str = ""


class SessionNotFoundError(ConfigError):
    """No open batch session with that id (expired, finished or never opened)."""


class ProviderService:
    """Batch sessions and async jobs over a :class:`ProviderState` (used by the app).

    Kept apart from FastAPI so that it can be driven directly (benchmarks,
    the in-process CLI) and tested without HTTP.
    """

    def __init__(self, state: ProviderState, *, workers: int = 1) -> None:
        self.state = state
        self._sessions: dict[str, _Session] = {}
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="covert-job")

    def close(self) -> None:
        """Stop the job workers (waits for running jobs)."""
        self._pool.shutdown(wait=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if now - s.created > _SESSION_TTL]:
            del self._sessions[key]

    def open_session(self, body: bytes) -> tuple[str, bytes]:
        """Handle a GroupRequest: returns ``(batch id hex, GroupOffer frames)``."""
        messages = decode_frames(body, max_size=_MAX_BODY)
        if len(messages) != 1 or not isinstance(messages[0], GroupRequest):
            raise RemoteProtocolError("a session opens with exactly one GroupRequest")
        machine = self.state.machine()
        machine.start()
        out = machine.receive(messages[0])
        batch = machine.batch_id.hex()
        with self._lock:
            self._expire()
            if len(self._sessions) >= _MAX_SESSIONS:
                raise RemoteProtocolError("too many open sessions; retry later")
            self._sessions[batch] = _Session(machine, time.monotonic())
        return batch, encode_frames(out)

    def _session(self, batch: str) -> _Session:
        with self._lock:
            session = self._sessions.get(batch)
        if session is None:
            raise SessionNotFoundError(f"no open covert-query session {batch!r}")
        return session

    def step(self, batch: str, body: bytes) -> bytes:
        """Deliver the next messages of a session; returns the replies as frames."""
        session = self._session(batch)
        messages = decode_frames(body, max_size=_MAX_BODY)
        out = []
        with session.lock:
            for msg in messages:
                out.extend(session.machine.receive(msg))
            if session.machine.done:
                with self._lock:
                    self._sessions.pop(batch, None)
        return encode_frames(out)

    # async batch: the Query is processed in the background, the Response persisted
    def submit(self, batch: str, body: bytes) -> str:
        """Queue a session's Query for background processing; returns the job id."""
        self._session(batch)
        with self._lock:
            if batch in self._jobs:
                raise RemoteProtocolError(f"job {batch} was already submitted")
            self._jobs[batch] = _Job()
        self._write_status(batch)
        self._pool.submit(self._run_job, batch, body)
        return batch

    def _run_job(self, batch: str, body: bytes) -> None:
        job = self._jobs[batch]
        job.status = "running"
        self._write_status(batch)
        try:
            result = self.step(batch, body)
            tmp = self.state.jobs_dir / f"{batch}.frames.tmp"
            tmp.write_bytes(result)
            os.replace(tmp, self.state.jobs_dir / f"{batch}.frames")
            job.status = "done"
        except AtollError as exc:
            job.status, job.error = "failed", str(exc)
        self._write_status(batch)

    def _write_status(self, batch: str) -> None:
        job = self._jobs[batch]
        path = self.state.jobs_dir / f"{batch}.json"
        path.write_text(json.dumps({"v": 1, "job": batch, "status": job.status,
                                    "error": job.error}), encoding="utf-8")  # fmt: skip

    def job_status(self, batch: str) -> dict[str, str]:
        """``{"job", "status", "error"}``; reads the state dir for jobs of a past run."""
        job = self._jobs.get(batch)
        if job is not None:
            return {"job": batch, "status": job.status, "error": job.error}
        path = self.state.jobs_dir / f"{_safe_id(batch)}.json"
        if not path.exists():
            raise SessionNotFoundError(f"no covert-query job {batch!r}")
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"job": batch, "status": str(data["status"]), "error": str(data.get("error", ""))}

    def job_result(self, batch: str) -> bytes:
        """The Response frames of a finished job."""
        path = self.state.jobs_dir / f"{_safe_id(batch)}.frames"
        if not path.exists():
            raise SessionNotFoundError(f"job {batch!r} has no result (yet)")
        return path.read_bytes()


def _safe_id(batch: str) -> str:
    if len(batch) != 32 or any(c not in "0123456789abcdef" for c in batch):
        raise SessionNotFoundError(f"malformed job id {batch!r}")
    return batch


# --- HTTP --------------------------------------------------------------------------------


def create_app(service: ProviderService) -> Any:
    """The FastAPI app of a covert-query provider (see the module docstring)."""
    app = FastAPI(title="Atoll covert query provider", version="1")
    octet = "application/octet-stream"

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > _MAX_BODY:
            raise RemoteProtocolError(f"request body over {_MAX_BODY} bytes")
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise RemoteProtocolError(f"request body over {_MAX_BODY} bytes")
        return body

    @app.exception_handler(AtollError)
    async def atoll_error(_: Request, exc: AtollError) -> JSONResponse:
        status = 404 if isinstance(exc, SessionNotFoundError) else 400
        if not isinstance(exc, ProtocolError | ConfigError | InputError):
            status = 500
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=status)

    @app.get("/covert/v1/info")
    def info() -> dict[str, Any]:
        return service.state.info()

    @app.post("/covert/v1/sessions")
    async def open_session(request: Request) -> Response:
        batch, out = service.open_session(await body_of(request))
        return Response(out, media_type=octet, headers={"X-Atoll-Batch": batch})

    @app.post("/covert/v1/sessions/{batch}")
    async def step(batch: str, request: Request) -> Response:
        body = await body_of(request)
        return Response(service.step(batch, body), media_type=octet)

    @app.post("/covert/v1/jobs/{batch}", status_code=202)
    async def submit(batch: str, request: Request) -> dict[str, str]:
        body = await body_of(request)
        return {"job": service.submit(batch, body), "status": "queued"}

    @app.get("/covert/v1/jobs/{batch}")
    def job(batch: str) -> dict[str, str]:
        return service.job_status(batch)

    @app.get("/covert/v1/jobs/{batch}/result")
    def job_result(batch: str) -> Response:
        return Response(service.job_result(batch), media_type=octet)

    return app


def serve(
    service: ProviderService,
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    tls: TlsConfig | None = None,
    ready: Callable[[Any], None] | None = None,
) -> None:
    """Serve the provider app through :func:`atoll.service.server.serve_app` (mutual TLS).

    Without ``tls`` it serves plain HTTP on loopback only (local development).
    """
    serve_app(create_app(service), host, port, tls, ready=ready)


# --- both sides in one process -------------------------------------------------------------


@dataclass(frozen=True)
class LocalRun:
    """What :func:`run_local` returns: answers in input order, byte counts, timings."""

    answers: list[Any]
    bytes_client_to_provider: int
    bytes_provider_to_client: int
    batches: int
    seconds: float


def run_local(
    state: ProviderState,
    ids: Sequence[str],
    *,
    mode: Mode,
    amplify: Any,
    n: int,
    k_min: int,
    decoys: Any = None,
    client: str = "local-client",
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> LocalRun:
    """Run the client and the provider in one process, through the real codec.

    Used by ``atoll query local`` and the demo; the provider side bills into
    ``state``'s ledger exactly as the service would.
    """
    from atoll.transport.covert_client import ProviderInfo, dedupe, make_client_machine
    from atoll.transport.memory import run_pair

    started = time.perf_counter()
    info = ProviderInfo.from_dict(state.info())
    distinct, index = dedupe(ids)
    verified: set[bytes] = set()
    answers: list[Any] = []
    sent = received = batches = 0
    for start in range(0, len(distinct), max(1, batch_size)):
        chunk = distinct[start : start + batch_size]
        machine = make_client_machine(
            chunk, info, mode=mode, amplify=amplify, n=n, k_min=k_min, decoys=decoys,
            client=client, rsa_min_bits=min(2048, state.config.rsa_bits),
            verified_keys=verified,
        )  # fmt: skip
        run = run_pair(machine, state.machine())
        answers.extend(run.a_result)
        sent += run.bytes_a_to_b
        received += run.bytes_b_to_a
        batches += 1
        if progress is not None:
            progress(len(answers), len(distinct))
    return LocalRun(
        [answers[i] for i in index], sent, received, batches, time.perf_counter() - started
    )
