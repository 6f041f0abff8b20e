"""The joining side of a two-party run over HTTPS: client for an Atoll node, and the bucket loop.

Why: the serving party runs :mod:`atoll.service.node`; the joining party
drives its own machines and posts their messages to it, one bucket at a
time, over mutual TLS with a bearer token. This module is that client
(:class:`HttpPeer`: one method per endpoint, foreign exceptions mapped once
to Atoll's) and the loop over buckets (:func:`join_session`), which is where
*resume* lives: finished buckets are journaled and skipped on a re-run.

Endpoints (all under ``/v1``, see ``docs/transport.md``)::

    GET    /v1/info                               service, API and wire versions
    POST   /v1/sessions              (JSON)       open or resume: {"session", "params"}
    GET    /v1/sessions/{sid}                      status: finished buckets
    POST   /v1/sessions/{sid}/buckets/{b}?round=r  frame list in, frame list out
    POST   /v1/sessions/{sid}/finish               all buckets done: the peer finishes
    DELETE /v1/sessions/{sid}                      abandon

Bodies of bucket rounds are frame lists (:func:`atoll.protocols.messages.encode_frames`)
sent with chunked transfer encoding and read back under a size cap
(:data:`DEFAULT_MAX_BODY`); a round that would exceed it fails with a message
telling to use more buckets. A failed round is retried (same round number:
the server answers a repeated round from its cache), so a blip costs
nothing; a longer outage fails the run and a re-run resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx

from atoll.errors import ConfigError, DataError, RemoteProtocolError
from atoll.matching.session import PartyJob, PartySession, Traffic
from atoll.protocols.messages import Message, decode_frames, encode_frames
from atoll.transport.base import Reply, TransportError, drive
from atoll.transport.journal import Journal, new_session_id
from atoll.transport.resultcodec import decode_result, encode_result
from atoll.transport.tls import TlsConfig

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY",
    "DONE_HEADER",
    "HttpPeer",
    "JoinResult",
    "StageState",
    "join_job",
]

#: Path prefix of the node API; bump with incompatible changes.
API_PREFIX = "/v1"
#: Default cap on one round's body, either direction (64 MiB ≈ 2M ristretto points).
DEFAULT_MAX_BODY = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
#: Response header of a bucket round: "1" when the node's machine is done.
DONE_HEADER = "x-atoll-peer-done"


@dataclass(frozen=True)
class StageState:
    """What the node says about a stage: its buckets, those it finished, whether it is complete."""

    stage: int
    buckets: list[int]
    finished: set[int]
    complete: bool


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(view), _CHUNK):
        yield bytes(view[i : i + _CHUNK])


def _error_text(response: httpx.Response, body: bytes) -> str:
    import json

    try:
        payload = json.loads(body)
        message = str(payload.get("message") or payload.get("detail") or payload)
    except ValueError:
        message = body[:200].decode("utf-8", "replace") or response.reason_phrase
    return message


class HttpPeer:
    """A client for one Atoll node (mutual TLS + bearer token).

    ``tls=None`` means plain HTTP and is accepted only for loopback URLs
    (local development); ``retries`` bounds how often one request is
    repeated after a connection-level failure.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        tls: TlsConfig | None,
        timeout: float = 300.0,
        max_body: int = DEFAULT_MAX_BODY,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ConfigError(f"--peer must be an http(s) URL, got {base_url!r}")
        if (
            url.scheme == "http"
            and transport is None
            and url.host not in {"127.0.0.1", "localhost", "::1"}
        ):
            raise ConfigError(f"refusing plain HTTP to {url.host}: use https:// and TLS")
        if url.scheme == "https" and tls is None and transport is None:
            raise ConfigError(
                "an https peer needs TLS settings (--certs/--name or --cert/--key/--ca)"
            )
        verify: Any = tls.client_context() if tls is not None and url.scheme == "https" else True
        self.base_url = str(url).rstrip("/")
        self.max_body = max_body
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(
            base_url=self.base_url,
            verify=verify,
            headers={"authorization": f"Bearer {token}", "user-agent": "atoll"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            transport=transport,
            follow_redirects=False,
        )

    # -- plumbing -------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[httpx.Response, bytes]:
        attempt = 0
        while True:
            try:
                return self._once(method, path, json_body=json_body, content=content, params=params)
            except TransportError:
                attempt += 1
                if attempt > self.retries:
                    raise
                time.sleep(self.backoff * 2 ** (attempt - 1))

    def _once(
        self,
        method: str,
        path: str,
        *,
        json_body: Any,
        content: bytes | None,
        params: dict[str, Any] | None,
    ) -> tuple[httpx.Response, bytes]:
        kwargs: dict[str, Any] = {"params": params}
        if json_body is not None:
            kwargs["json"] = json_body
        elif content is not None:
            kwargs["content"] = _chunks(content)
            kwargs["headers"] = {"content-type": "application/octet-stream"}
        where = f"{method} {self.base_url}{path}"
        try:
            with self._client.stream(method, path, **kwargs) as response:
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                    raise RemoteProtocolError(
                        f"{where}: the peer's reply of {declared} bytes exceeds the limit "
                        f"{self.max_body}; use more buckets"
                    )
                parts: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_body:
                        raise RemoteProtocolError(
                            f"{where}: the peer's reply exceeds the limit {self.max_body} bytes; "
                            "use more buckets"
                        )
                    parts.append(chunk)
                body = b"".join(parts)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc):
                # Not transient: the peer is not who the CA says, or does not speak TLS.
                raise RemoteProtocolError(f"{where}: TLS handshake failed: {exc}") from exc
            raise TransportError(
                f"{where}: connection failed: {exc or type(exc).__name__}"
            ) from exc
        except httpx.TransportError as exc:
            raise TransportError(
                f"{where}: connection failed: {exc or type(exc).__name__}"
            ) from exc
        if response.status_code >= 400:
            message = _error_text(response, body)
            if response.status_code == 401:
                raise RemoteProtocolError(f"{where}: the peer refused our token (401): {message}")
            if response.status_code in (502, 503, 504):
                raise TransportError(
                    f"{where}: peer unavailable ({response.status_code}): {message}"
                )
            raise RemoteProtocolError(
                f"{where}: the peer refused ({response.status_code}): {message}"
            )
        return response, body

    def _json(self, response: httpx.Response, body: bytes) -> dict[str, Any]:
        import json

        try:
            value = json.loads(body)
        except ValueError as exc:
            raise RemoteProtocolError(f"{response.url}: the peer sent invalid JSON") from exc
        if not isinstance(value, dict):
            raise RemoteProtocolError(f"{response.url}: the peer sent a non-object JSON")
        return value

    # -- endpoints --------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The node's service description (``GET /v1/info``)."""
        return self._json(*self._request("GET", f"{API_PREFIX}/info"))

    def open_job(self, job: str, params: dict[str, Any]) -> dict[str, Any]:
        """Open (or resume) ``job`` with our parameters; returns the node's view and params."""
        data = self._json(*self._request("POST", _JOBS, json_body={"job": job, "params": params}))
        if not isinstance(data.get("params"), dict):
            raise RemoteProtocolError("the peer's job reply lacks its params")
        return data

    def status(self, job: str) -> dict[str, Any]:
        """The node's view of ``job``."""
        return self._json(*self._request("GET", f"{_JOBS}/{job}"))

    def open_stage(self, job: str, stage: int, params: dict[str, Any]) -> StageState:
        """Open (or resume) one stage; the node refuses parameters that differ."""
        data = self._json(
            *self._request("POST", f"{_JOBS}/{job}/stages/{stage}", json_body={"params": params})
        )
        try:
            return StageState(
                stage=int(data["stage"]),
                buckets=[int(b) for b in data["buckets"]],
                finished={int(b) for b in data["finished"]},
                complete=bool(data["complete"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"the peer's stage reply is malformed: {exc}") from exc

    def exchange(
        self, job: str, stage: int, bucket: int, round_no: int, messages: list[Message]
    ) -> Reply:
        """Send one round of a bucket and return the node's reply."""
        body = encode_frames(messages)
        if len(body) > self.max_body:
            raise RemoteProtocolError(
                f"bucket {bucket}: our message of {len(body)} bytes exceeds the limit "
                f"{self.max_body}; use more buckets"
            )
        resp, data = self._request(
            "POST",
            f"{_JOBS}/{job}/stages/{stage}/buckets/{bucket}",
            content=body,
            params={"round": round_no},
        )
        return Reply(
            decode_frames(data, max_size=self.max_body),
            resp.headers.get(DONE_HEADER) == "1",
            sent=len(body),
            received=len(data),
        )

    def finish_stage(self, job: str, stage: int) -> dict[str, Any]:
        """Tell the node every bucket of ``stage`` is done."""
        return self._json(*self._request("POST", f"{_JOBS}/{job}/stages/{stage}/finish"))

    def finish_job(self, job: str) -> dict[str, Any]:
        """Tell the node every stage is done; it finishes its side."""
        return self._json(*self._request("POST", f"{_JOBS}/{job}/finish"))

    def abandon(self, job: str) -> None:
        """Ask the node to drop ``job``."""
        self._request("DELETE", f"{_JOBS}/{job}")


_JOBS = f"{API_PREFIX}/jobs"


@dataclass(frozen=True)
class JoinResult:
    """What :func:`join_job` returns: the job's outcome and what was (re)computed."""

    outcome: Any
    job: str
    stages: int
    ran: list[tuple[int, int]]
    skipped: list[tuple[int, int]]


class _RestartBucketError(Exception):
    pass


def join_job(
    job: PartyJob,
    peer: HttpPeer,
    *,
    journal: Journal | None = None,
    workers: int = 2,
    progress: Callable[[int, int, int], None] | None = None,
    on_bucket: Callable[[int, int], None] | None = None,
    bucket_attempts: int = 3,
) -> JoinResult:
    """Run ``job`` against the node at ``peer``, stage by stage, resuming from ``journal``.

    Parameters are exchanged first (each side's ``agree`` checks the
    other's). In each stage a bucket is *skipped* when the journal holds its
    result and the node lists it finished; every other bucket runs (again)
    from round 0 -- the node then replaces whatever it had for it -- so both
    sides end with exactly one result per bucket. Finished buckets are
    journaled at once (:mod:`atoll.transport.resultcodec`). A bucket whose
    connection fails after the per-request retries is restarted from round
    0, up to ``bucket_attempts`` times. ``progress(stage, done, total)`` and
    ``on_bucket(stage, bucket)`` (after journaling; tests inject failures
    there) are optional callbacks.
    """
    jid = journal.session_id if journal is not None else new_session_id()
    described = peer.open_job(jid, job.params())
    job.agree(described["params"])
    runner = _StageRunner(peer, jid, journal, progress, on_bucket, bucket_attempts)
    stage_no = 0
    for session in job.sessions():
        runner.run(stage_no, session, workers)
        stage_no += 1
    peer.finish_job(jid)
    outcome = job.finish()
    return JoinResult(
        outcome=outcome, job=jid, stages=stage_no, ran=runner.ran, skipped=runner.skipped
    )


class _StageRunner:
    """Runs the buckets of one stage after another (see :func:`join_job`)."""

    def __init__(
        self,
        peer: HttpPeer,
        jid: str,
        journal: Journal | None,
        progress: Callable[[int, int, int], None] | None,
        on_bucket: Callable[[int, int], None] | None,
        attempts: int,
    ) -> None:
        self.peer, self.jid, self.journal = peer, jid, journal
        self.progress, self.on_bucket, self.attempts = progress, on_bucket, attempts
        self.ran: list[tuple[int, int]] = []
        self.skipped: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0

    def run(self, stage: int, session: PartySession, workers: int) -> None:
        state = self.peer.open_stage(self.jid, stage, session.params())
        ours = sorted(session.buckets())
        if sorted(state.buckets) != ours:
            raise RemoteProtocolError(
                f"stage {stage}: the peer runs buckets {_span(state.buckets)}, we run {_span(ours)}"
            )
        peer_done = set(ours) if state.complete else state.finished
        self._done, self._total = 0, len(ours)
        reused: set[int] = set()
        if self.journal is not None:
            for b in self.journal.finished(stage):
                if b in peer_done:
                    result, traffic = _decode_entry(self.journal.load(stage, b))
                    session.accept(b, result, traffic)
                    reused.add(b)
        self.skipped.extend((stage, b) for b in sorted(reused))
        self._done = len(reused)
        if self.progress is not None:
            self.progress(stage, self._done, self._total)
        todo = [b for b in ours if b not in reused]
        _run_all(lambda b: self._bucket(stage, session, b), todo, workers)
        if not state.complete:
            self.peer.finish_stage(self.jid, stage)
        session.finish()

    def _bucket(self, stage: int, session: PartySession, bucket: int) -> None:
        def exchange(round_no: int, msgs: list[Message]) -> Reply:
            try:
                return self.peer.exchange(self.jid, stage, bucket, round_no, msgs)
            except RemoteProtocolError as exc:
                if "(409)" in str(exc) and "restart" in str(exc):
                    raise _RestartBucketError(str(exc)) from exc
                raise

        for attempt in range(1, self.attempts + 1):
            with self._lock:  # party sessions need not be thread safe
                machine = session.machine(bucket)
            try:
                result, traffic = drive(machine, exchange)
                break
            except TransportError:
                if attempt == self.attempts:
                    raise
            except _RestartBucketError as exc:
                if attempt == self.attempts:
                    raise RemoteProtocolError(str(exc)) from exc
        if self.journal is not None:
            self.journal.record(stage, bucket, _encode_entry(result, traffic))
        with self._lock:
            session.accept(bucket, result, traffic)
            self._done += 1
            self.ran.append((stage, bucket))
            if self.progress is not None:
                self.progress(stage, self._done, self._total)
        if self.on_bucket is not None:
            self.on_bucket(stage, bucket)


def _run_all(fn: Callable[[int], None], items: list[int], workers: int) -> None:
    if workers <= 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atoll-join") as pool:
        futures: list[Future[None]] = [pool.submit(fn, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                exc = f.exception()
                if exc is not None:
                    raise exc


def _encode_entry(result: Any, traffic: Traffic) -> bytes:
    return encode_result({"result": result, "traffic": traffic})


def _decode_entry(data: bytes) -> tuple[Any, Traffic]:
    entry = decode_result(data)
    if not isinstance(entry, dict) or not isinstance(entry.get("traffic"), Traffic):
        raise DataError("resume journal entry is malformed")
    return entry["result"], entry["traffic"]


def _span(buckets: list[int]) -> str:
    if not buckets:
        return "none"
    if buckets == list(range(buckets[0], buckets[-1] + 1)):
        return f"{buckets[0]}..{buckets[-1]} ({len(buckets)})"
    return f"{len(buckets)} buckets"
