"""The provider side of the covert query as a service: index, state, HTTP endpoints.

Why: the protocol machines (:mod:`atoll.protocols.covert`) never touch files or
sockets. A provider needs three more things, all here:

1. **An index of its label database**, built once (:func:`build_index`, in
   :mod:`atoll.service.covert_index`): one streaming pass over the DB, the
   per-row work (ID tags, label records, one OPRF evaluation per row for
   bucket mode) as maps over row chunks and tag partitions on an
   :mod:`atoll.execution` executor, the result in memory-mappable ``.npy``
   files. Loading the index (:func:`load_index`) maps them; nothing is read
   into memory until a query touches it.
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
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atoll.control.metering import Ledger
from atoll.crypto.rsa import RsaKeyPool
from atoll.crypto.sign import SigningKey
from atoll.errors import (
    AtollError,
    ConfigError,
    CryptoError,
    InputError,
    ProtocolError,
    RemoteProtocolError,
)
from atoll.protocols.covert import CovertProvider, GroupRequest, Mode
from atoll.protocols.messages import decode_frames, encode_frames
from atoll.service.covert_index import (
    INDEX_VERSION,
    IndexReport,
    LoadedIndex,
    build_index,
    load_index,
)
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

_MAX_BODY = 256 * 1024 * 1024
_SESSION_TTL = 600.0
_MAX_SESSIONS = 10_000


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
