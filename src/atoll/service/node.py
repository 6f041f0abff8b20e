"""A party node: serves bucketed two-party jobs (PSI, labeled PSI, intersection-sum) over HTTPS.

Why: in ``atoll psi serve`` one party waits while the other joins. The
serving side must agree parameters, hold a protocol machine per bucket
between HTTP requests, survive a client that retries or reconnects, and
never let a stranger in. :class:`Node` is that state (no HTTP in it, so it
is tested directly); :func:`create_app` puts it behind FastAPI;
:func:`atoll.service.server.serve_app` adds mutual TLS.

A *job* (:class:`atoll.matching.session.PartyJob`) is agreed first (both
sides' ``params()`` are exchanged and each side calls ``agree`` on the
other's), then runs *stages* in order (one per ID type of a multi-ID
waterfall), each with its buckets. Per bucket the node keeps, in memory, the
machine, the next expected round and the last reply, so a repeated round --
the client's retry after a lost response -- is answered from the cache
instead of feeding the machine twice. A round 0 with a *different* body
restarts the bucket with a fresh machine (the client lost its state); a
finished bucket keeps its result until the stage finishes, and a restarted
finished bucket replaces it. Cached replies of finished buckets are evicted
beyond a memory budget; a client repeating such a round is told to restart
the bucket (``409 restart_bucket``). If the node process dies its jobs are
gone: the client's next run re-creates the job and re-runs every bucket the
node does not list as finished.

Errors become JSON bodies ``{"error": code, "message": text}``:
401 ``unauthorized`` (bad or missing bearer token); 404 ``unknown_job`` /
``unknown_bucket``; 409 ``params_mismatch`` / ``bad_stage`` / ``bad_round`` /
``restart_bucket`` / ``not_finished`` / ``finished``; 400 ``bad_request`` /
``remote_protocol`` (the client sent something invalid); 413 ``too_large``;
503 ``busy`` (too many jobs); 500 ``internal`` (the node's own failure: the
message is generic and details go to the node's log, so a peer never reads
the node's file names or rows).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from atoll.crypto import constant_time_equal, sha256_digest
from atoll.errors import (
    AtollError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from atoll.matching.session import (
    PartyJob,
    PartySession,
    Traffic,
    canonical_params,
    check_params,
)
from atoll.protocols._machine import Machine
from atoll.protocols.messages import WIRE_VERSION, decode_frames, encode_frames
from atoll.transport.http import API_PREFIX, DEFAULT_MAX_BODY, DONE_HEADER

__all__ = ["Node", "NodeError", "create_app"]

log = logging.getLogger("atoll.node")

#: Cap on JSON request bodies (job and stage parameters).
_JSON_LIMIT = 1024 * 1024
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class NodeError(AtollError):
    """A refusal the node sends back: HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class _Bucket:
    lock: threading.Lock = field(default_factory=threading.Lock)
    machine: Machine[Any] | None = None
    next_round: int = 0
    last_digest: bytes | None = None
    last_reply: bytes | None = None
    done: bool = False
    result: Any = None
    traffic: Traffic = field(default_factory=Traffic)


@dataclass
class _Stage:
    index: int
    session: PartySession
    client_params: str
    bucket_ids: list[int]
    buckets: dict[int, _Bucket]
    complete: bool = False


@dataclass
class _Job:
    jid: str
    caller: str
    job: PartyJob
    client_params: str
    sessions: Iterator[PartySession]
    last_used: float
    stages: list[_Stage] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    finished: bool = False
    report: Any = None
    pending: PartySession | None = None


class Node:
    """The serving party's jobs (see the module docstring).

    ``factory()`` returns a fresh :class:`~atoll.matching.session.PartyJob`
    for each new job a client opens. ``tokens`` maps caller names to
    accepted bearer tokens. ``on_finish(caller, job_id, report)`` runs after
    a job finished (``atoll psi serve`` stops the server there).
    """

    def __init__(
        self,
        factory: Callable[[], PartyJob],
        tokens: Mapping[str, str],
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_jobs: int = 8,
        idle_timeout: float = 3600.0,
        reply_cache_budget: int = 256 * 1024 * 1024,
        on_finish: Callable[[str, str, Any], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not tokens:
            raise AtollError("a node needs at least one accepted bearer token")
        self._factory = factory
        self._tokens = [(name, sha256_digest(tok.encode())) for name, tok in tokens.items()]
        self.max_body = max_body
        self.max_jobs = max_jobs
        self.idle_timeout = idle_timeout
        self._cache_budget = reply_cache_budget
        self._on_finish = on_finish
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._cache: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        self._cached_bytes = 0

    # -- auth ---------------------------------------------------------------------
    def authenticate(self, header: str | None) -> str:
        """The caller's name for an ``Authorization`` header, or a 401 NodeError."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NodeError(401, "unauthorized", "missing bearer token")
        digest = sha256_digest(token.strip().encode())
        caller = None
        for name, expected in self._tokens:  # no early exit: time independent of which
            if constant_time_equal(digest, expected) and caller is None:
                caller = name
        if caller is None:
            raise NodeError(401, "unauthorized", "invalid bearer token")
        return caller

    # -- jobs -----------------------------------------------------------------------
    def _expire(self) -> None:
        now = self._clock()
        for jid, j in list(self._jobs.items()):
            if now - j.last_used > self.idle_timeout:
                log.info("job %s expired after %.0f s idle", jid, now - j.last_used)
                self._drop(jid)

    def _drop(self, jid: str) -> None:
        self._jobs.pop(jid, None)
        for key in [k for k in self._cache if k[0] == jid]:
            self._cached_bytes -= self._cache.pop(key)

    def _get(self, caller: str, jid: str) -> _Job:
        with self._lock:
            j = self._jobs.get(jid)
            if j is None or j.caller != caller:
                raise NodeError(404, "unknown_job", f"no job {jid!r} on this node")
            j.last_used = self._clock()
            return j

    @property
    def jobs(self) -> int:
        """Jobs currently held."""
        return len(self._jobs)

    def open_job(self, caller: str, jid: Any, params: Any) -> dict[str, Any]:
        """Create or resume a job; refuses parameters that do not agree with ours."""
        if not isinstance(jid, str) or not _JOB_ID.match(jid):
            raise NodeError(400, "bad_request", "job id must be 16-64 URL-safe characters")
        if not isinstance(params, dict):
            raise NodeError(400, "bad_request", "params must be a JSON object")
        text = canonical_params(params)
        with self._lock:
            self._expire()
            existing = self._jobs.get(jid)
            if existing is not None:
                if existing.caller != caller:
                    raise NodeError(404, "unknown_job", f"no job {jid!r} on this node")
                if existing.client_params != text:
                    raise NodeError(409, "params_mismatch", "job exists with other parameters")
                existing.last_used = self._clock()
                return self._describe_job(existing, resumed=True)
            if len(self._jobs) >= self.max_jobs:
                raise NodeError(503, "busy", f"node busy: {self.max_jobs} jobs open")
        job = self._factory()
        try:
            job.agree(params)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            raise NodeError(409, "params_mismatch", f"parameter mismatch: {exc}") from exc
        j = _Job(jid, caller, job, text, job.sessions(), self._clock())
        with self._lock:
            if jid in self._jobs:  # raced with an identical open
                return self._describe_job(self._jobs[jid], resumed=True)
            self._jobs[jid] = j
        log.info("job %s opened by %s", jid, caller)
        return self._describe_job(j, resumed=False)

    @staticmethod
    def _describe_job(j: _Job, *, resumed: bool) -> dict[str, Any]:
        return {
            "job": j.jid,
            "params": j.job.params(),
            "stages": [
                {"stage": st.index, "complete": st.complete, "buckets": len(st.bucket_ids)}
                for st in j.stages
            ],
            "finished": j.finished,
            "resumed": resumed,
        }

    def status(self, caller: str, jid: str) -> dict[str, Any]:
        """The node's view of a job."""
        return self._describe_job(self._get(caller, jid), resumed=True)

    def abandon(self, caller: str, jid: str) -> None:
        """Drop a job (the client gave up)."""
        self._get(caller, jid)
        with self._lock:
            self._drop(jid)
        log.info("job %s abandoned by %s", jid, caller)

    # -- stages ---------------------------------------------------------------------
    def open_stage(self, caller: str, jid: str, stage: int, params: Any) -> dict[str, Any]:
        """Open stage ``stage`` (the next one, once the previous completed) or resume it."""
        j = self._get(caller, jid)
        if not isinstance(params, dict):
            raise NodeError(400, "bad_request", "params must be a JSON object")
        text = canonical_params(params)
        with j.lock:
            if j.finished:
                raise NodeError(409, "finished", f"job {jid} already finished")
            if stage < len(j.stages):
                st = j.stages[stage]
                if st.client_params != text:
                    raise NodeError(409, "params_mismatch", f"stage {stage} has other parameters")
                return self._describe_stage(st)
            if stage != len(j.stages) or (j.stages and not j.stages[-1].complete):
                raise NodeError(
                    409,
                    "bad_stage",
                    f"cannot open stage {stage}: {len(j.stages)} opened, "
                    f"last complete: {bool(j.stages) and j.stages[-1].complete}",
                )
            session, j.pending = j.pending, None
            if session is None:
                session = next(j.sessions, None)
            if session is None:
                raise NodeError(409, "bad_stage", f"this job has no stage {stage}")
            try:  # job-level keys were settled by agree(); compare what the stage adds
                check_params(session.params(), params, ignore=frozenset(j.job.params()) - {"role"})
            except RemoteProtocolError as exc:
                raise NodeError(409, "params_mismatch", f"stage {stage}: {exc}") from exc
            ids = sorted(int(b) for b in session.buckets())
            st = _Stage(stage, session, text, ids, {b: _Bucket() for b in ids})
            j.stages.append(st)
            return self._describe_stage(st)

    @staticmethod
    def _describe_stage(st: _Stage) -> dict[str, Any]:
        return {
            "stage": st.index,
            "buckets": st.bucket_ids,
            "finished": sorted(b for b, x in st.buckets.items() if x.done),
            "complete": st.complete,
        }

    def _stage(self, j: _Job, stage: int) -> _Stage:
        if not 0 <= stage < len(j.stages):
            raise NodeError(409, "bad_stage", f"stage {stage} is not open")
        return j.stages[stage]

    # -- rounds -----------------------------------------------------------------------
    def round(
        self, caller: str, jid: str, stage: int, bucket: int, round_no: int, body: bytes
    ) -> tuple[bytes, bool]:
        """Feed one round of a bucket; returns (reply frame list, our machine is done)."""
        j = self._get(caller, jid)
        with j.lock:
            st = self._stage(j, stage)
        if st.complete:
            raise NodeError(409, "finished", f"stage {stage} already finished")
        b = st.buckets.get(bucket)
        if b is None:
            raise NodeError(404, "unknown_bucket", f"bucket {bucket} is not part of stage {stage}")
        if round_no < 0:
            raise NodeError(400, "bad_request", "round must be non-negative")
        digest = sha256_digest(body)
        key = (jid, stage, bucket)
        with b.lock:
            if (
                round_no == b.next_round - 1
                and b.last_digest is not None
                and constant_time_equal(digest, b.last_digest)
            ):
                if b.last_reply is None:
                    raise NodeError(
                        409,
                        "restart_bucket",
                        f"bucket {bucket}: reply no longer cached; restart it",
                    )
                return b.last_reply, b.done
            if round_no == 0:
                self._uncache(key)
                with j.lock:  # party sessions need not be thread safe
                    b.machine = st.session.machine(bucket)
                b.done, b.result, b.next_round, b.traffic = False, None, 0, Traffic()
                outbound = b.machine.start()
            elif round_no == b.next_round and b.machine is not None and not b.done:
                outbound = []
            else:
                raise NodeError(
                    409,
                    "bad_round",
                    f"bucket {bucket}: expected round {b.next_round}, got {round_no}; "
                    "restart the bucket from round 0",
                )
            machine = b.machine
            try:
                inbound = decode_frames(body, max_size=self.max_body)
                for msg in inbound:
                    outbound.extend(machine.receive(msg))
                reply = encode_frames(outbound)
                result = machine.result() if machine.done else None
            except ProtocolError:
                b.machine, b.next_round, b.last_digest, b.last_reply = None, 0, None, None
                b.done, b.result = False, None
                raise
            b.traffic = b.traffic + Traffic(len(reply), len(body), len(outbound), len(inbound))
            b.next_round = round_no + 1
            b.last_digest, b.last_reply = digest, reply
            if machine.done:
                b.done, b.result, b.machine = True, result, None
                self._add_cache(key, st, len(reply))
            return reply, b.done

    def _uncache(self, key: tuple[str, int, int]) -> None:
        with self._lock:
            size = self._cache.pop(key, None)
            if size is not None:
                self._cached_bytes -= size

    def _add_cache(self, key: tuple[str, int, int], st: _Stage, size: int) -> None:
        with self._lock:
            self._cache[key] = size
            self._cached_bytes += size
            while self._cached_bytes > self._cache_budget and self._cache:
                (ojid, ostage, ob), osize = self._cache.popitem(last=False)
                self._cached_bytes -= osize
                other = self._jobs.get(ojid)
                if other is not None and ostage < len(other.stages):
                    ost = other.stages[ostage]
                    if ob in ost.buckets:
                        ost.buckets[ob].last_reply = None
                elif ojid == key[0]:
                    st.buckets[ob].last_reply = None

    # -- finishing ----------------------------------------------------------------------
    def finish_stage(self, caller: str, jid: str, stage: int) -> dict[str, Any]:
        """All buckets of a stage done: hand results to the session and finish it (idempotent)."""
        j = self._get(caller, jid)
        with j.lock:
            st = self._stage(j, stage)
            if not st.complete:
                missing = [b for b in st.bucket_ids if not st.buckets[b].done]
                if missing:
                    raise NodeError(
                        409,
                        "not_finished",
                        f"stage {stage}: {len(missing)} buckets not finished "
                        f"(first: {missing[:5]})",
                    )
                for bid in st.bucket_ids:
                    x = st.buckets[bid]
                    st.session.accept(bid, x.result, x.traffic)
                st.session.finish()
                st.complete = True
                for bid, x in st.buckets.items():
                    x.result, x.last_reply = None, None
                    self._uncache((jid, stage, bid))
        return self._describe_stage(st)

    def finish_job(self, caller: str, jid: str) -> dict[str, Any]:
        """Every stage complete: finish the job (idempotent); calls ``on_finish`` once."""
        j = self._get(caller, jid)
        first = False
        with j.lock:
            if not j.finished:
                if not j.stages or not all(st.complete for st in j.stages):
                    raise NodeError(409, "not_finished", f"job {jid}: not every stage finished")
                extra = next(j.sessions, None)  # let the job close its last stage
                if extra is not None:
                    j.pending = extra
                    raise NodeError(
                        409, "not_finished", f"job {jid}: stage {len(j.stages)} never ran"
                    )
                j.report = j.job.finish()
                j.finished = True
                first = True
                log.info("job %s finished (%d stages)", jid, len(j.stages))
        if first and self._on_finish is not None:
            self._on_finish(caller, jid, j.report)
        return {"job": jid, "finished": True, "stages": len(j.stages)}


def create_app(node: Node, *, title: str = "Atoll party node") -> FastAPI:
    """The FastAPI app of a party node (serve it with :func:`atoll.service.server.serve_app`)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    prefix = f"{API_PREFIX}/jobs"

    def caller(request: Request) -> str:
        return node.authenticate(request.headers.get("authorization"))

    @app.exception_handler(NodeError)
    async def node_error(_: Request, exc: NodeError) -> JSONResponse:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"error": exc.code, "message": str(exc)}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RemoteProtocolError)
    async def remote_error(_: Request, exc: RemoteProtocolError) -> JSONResponse:
        return JSONResponse({"error": "remote_protocol", "message": str(exc)}, status_code=400)

    @app.exception_handler(LocalProtocolError)
    async def local_error(_: Request, exc: LocalProtocolError) -> JSONResponse:
        return JSONResponse({"error": "local_protocol", "message": str(exc)}, status_code=409)

    @app.exception_handler(AtollError)
    async def internal(_: Request, exc: AtollError) -> JSONResponse:
        log.error("node failure: %s", exc)
        return JSONResponse(
            {"error": "internal", "message": "the node failed internally (see its log)"},
            status_code=500,
        )

    async def read_body(request: Request, limit: int | None = None) -> bytes:
        limit = node.max_body if limit is None else limit
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise NodeError(413, "too_large", _too_large(int(declared), limit))
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise NodeError(413, "too_large", _too_large(size, limit))
            parts.append(chunk)
        return b"".join(parts)

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(await read_body(request, _JSON_LIMIT))
        except ValueError:
            raise NodeError(400, "bad_request", "body must be JSON") from None
        if not isinstance(payload, dict):
            raise NodeError(400, "bad_request", "body must be a JSON object")
        return payload

    @app.get(f"{API_PREFIX}/info")
    def info(who: str = Depends(caller)) -> dict[str, Any]:
        return {
            "service": "atoll-node",
            "api": API_PREFIX,
            "wire_version": WIRE_VERSION,
            "max_body": node.max_body,
            "caller": who,
        }

    @app.post(prefix)
    async def open_job(request: Request, who: str = Depends(caller)) -> JSONResponse:
        payload = await read_json(request)
        out = await run_in_threadpool(node.open_job, who, payload.get("job"), payload.get("params"))
        return JSONResponse(out, status_code=200 if out["resumed"] else 201)

    @app.get(prefix + "/{jid}")
    def status(jid: str, who: str = Depends(caller)) -> dict[str, Any]:
        return node.status(who, jid)

    @app.delete(prefix + "/{jid}")
    def abandon(jid: str, who: str = Depends(caller)) -> dict[str, Any]:
        node.abandon(who, jid)
        return {"job": jid, "abandoned": True}

    @app.post(prefix + "/{jid}/stages/{stage}")
    async def open_stage(
        jid: str, stage: int, request: Request, who: str = Depends(caller)
    ) -> dict[str, Any]:
        payload = await read_json(request)
        return await run_in_threadpool(node.open_stage, who, jid, stage, payload.get("params"))

    @app.post(prefix + "/{jid}/stages/{stage}/buckets/{bucket}")
    async def bucket_round(
        jid: str,
        stage: int,
        bucket: int,
        request: Request,
        round: int = 0,
        who: str = Depends(caller),
    ) -> Response:
        body = await read_body(request)
        reply, done = await run_in_threadpool(node.round, who, jid, stage, bucket, round, body)
        return Response(
            reply,
            media_type="application/octet-stream",
            headers={DONE_HEADER: "1" if done else "0"},
        )

    @app.post(prefix + "/{jid}/stages/{stage}/finish")
    def finish_stage(jid: str, stage: int, who: str = Depends(caller)) -> dict[str, Any]:
        return node.finish_stage(who, jid, stage)

    @app.post(prefix + "/{jid}/finish")
    def finish_job(jid: str, who: str = Depends(caller)) -> dict[str, Any]:
        return node.finish_job(who, jid)

    return app


def _too_large(size: int, limit: int) -> str:
    return (
        f"body of {size} bytes exceeds the node's limit of {limit} bytes; "
        "split the data into more buckets (--buckets) or raise --max-message-mb on both sides"
    )
