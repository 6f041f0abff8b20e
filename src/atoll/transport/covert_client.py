"""Client SDK of the covert query: ask a provider over HTTPS, or run both sides locally.

Why: the client's part of seed §9 runs on the brand's own front-end machine
("deployed on the customer's front-end machine and integrates with its
systems"). Integrators want one call -- ``client.query(ids)`` -- not the six
protocol messages; this module plans the query from the provider's public
statistics (prefix length for about N candidates, limits), drives
:class:`~atoll.protocols.covert.CovertClient` machines over HTTP in the
three query modes of the seed (single, micro-batch, asynchronous batch), and
maps transport failures to Atoll errors once, here.

* ``single`` -- one ID per protocol run (three round trips each);
* ``micro``  -- up to ``micro_size`` IDs per run, sharing the RSA key group /
  OT setup and the round trips;
* ``async``  -- the whole file as batches submitted as jobs: submit, poll,
  download, then buy keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from atoll.crypto.sign import VerifyKey
from atoll.errors import ConfigError, CryptoError, RemoteProtocolError
from atoll.protocols.covert import (
    DEFAULT_K_MIN,
    Amplify,
    CovertAnswer,
    CovertClient,
    GroupOffer,
    KMinPolicy,
    Mode,
)
from atoll.protocols.covert_source import DecoySource, PrefixStat, choose_prefix_bits
from atoll.protocols.messages import Message, decode_frames, encode_frames

__all__ = [
    "BATCH_MODES",
    "CovertHttpClient",
    "ProviderInfo",
    "dedupe",
    "make_client_machine",
    "plan_prefix_bits",
]

#: Query modes of the seed: 单条 / 微批 / 异步批量.
BATCH_MODES = ("single", "micro", "async")
_PREFIX = "/covert/v1"


@dataclass(frozen=True)
class ProviderInfo:
    """The provider's public description (``GET /covert/v1/info``)."""

    provider: str
    modes: tuple[str, ...]
    labels: tuple[str, ...]
    record_size: int
    rows: int
    prefix_stats: tuple[PrefixStat, ...]
    bucket_bits: int
    max_n: int
    max_group_rsa: int
    rsa_bits: int
    max_batch: int
    signing_key: VerifyKey

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderInfo:
        """Parse (RemoteProtocolError if the document is malformed)."""
        try:
            if data["v"] != 1:
                raise RemoteProtocolError(f"unsupported provider info version {data['v']}")
            return cls(
                str(data["provider"]),
                tuple(str(m) for m in data["modes"]),
                tuple(str(x) for x in data["labels"]),
                int(data["record_size"]),
                int(data["rows"]),
                tuple(PrefixStat(**s) for s in data["prefix_stats"]),
                int(data["bucket_bits"]),
                int(data["max_n"]),
                int(data["max_group_rsa"]),
                int(data["rsa_bits"]),
                int(data["max_batch"]),
                VerifyKey.from_text(str(data["signing_key"])),
            )
        except (KeyError, TypeError, ValueError, CryptoError) as exc:
            raise RemoteProtocolError(f"malformed provider info: {exc}") from exc


def plan_prefix_bits(info: ProviderInfo, mode: Mode, n: int) -> int:
    """The prefix length for about ``n`` candidates that the provider will serve.

    Longest prefix whose *average* group holds at least ``n`` IDs; then made
    longer while the largest group would exceed the provider's limit
    (``max_n``, or the RSA pool for rsa mode); bucket mode is capped at the
    index's bucket granularity.
    """
    stats = list(info.prefix_stats)
    bits = choose_prefix_bits(stats, n)
    if mode is Mode.BUCKET:
        if not info.bucket_bits:
            raise ConfigError("the provider does not serve bucket mode")
        return max(1, min(bits, info.bucket_bits))
    limit = info.max_group_rsa if mode is Mode.RSA else info.max_n
    by_bits = {s.bits: s for s in stats}
    while bits in by_bits and by_bits[bits].max > limit and bits + 1 in by_bits:
        bits += 1
    return bits


def make_client_machine(
    ids: Sequence[str],
    info: ProviderInfo,
    *,
    mode: Mode,
    amplify: Amplify,
    n: int,
    k_min: int = DEFAULT_K_MIN,
    decoys: DecoySource | None = None,
    client: str = "client",
    pin_key: bool = True,
    rsa_min_bits: int = 2048,
    verified_keys: set[bytes] | None = None,
    prefix_bits: int | None = None,
) -> CovertClient:
    """A :class:`CovertClient` for one batch, planned from the provider's info."""
    if mode.label not in info.modes:
        raise ConfigError(f"the provider does not serve mode {mode.label}")
    if amplify is Amplify.PREFIX or mode is Mode.BUCKET:
        bits = prefix_bits if prefix_bits is not None else plan_prefix_bits(info, mode, n)
    else:
        bits = None
    return CovertClient(
        ids,
        mode=mode,
        amplify=amplify,
        n=n,
        prefix_bits=bits,
        decoys=decoys,
        policy=KMinPolicy(k_min),
        client=client,
        provider_key=info.signing_key if pin_key else None,
        rsa_min_bits=rsa_min_bits,
        verified_keys=verified_keys,
    )


def dedupe(ids: Sequence[str]) -> tuple[list[str], list[int]]:
    """Distinct IDs in first-seen order and, per input ID, the index of its distinct ID.

    Querying an ID twice with independent decoys would let the provider
    intersect the two groups; the SDK asks once and copies the answer.
    """
    distinct: dict[str, int] = {}
    index = [distinct.setdefault(x, len(distinct)) for x in ids]
    return list(distinct), index


class CovertHttpClient:
    """Ask a covert-query provider over HTTP(S).

    ``http`` may be any ``httpx.Client`` (e.g. one configured for mutual
    TLS, or FastAPI's ``TestClient``); otherwise one is made for ``base_url``.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        client_name: str = "client",
        http: httpx.Client | None = None,
        timeout: float = 120.0,
        verify: Any = True,
        cert: Any = None,
    ) -> None:
        self._http = http or httpx.Client(
            base_url=base_url, timeout=timeout, verify=verify, cert=cert
        )
        self._own = http is None
        self.client_name = client_name
        self._info: ProviderInfo | None = None
        self._verified: set[bytes] = set()

    def close(self) -> None:
        """Close the HTTP connection pool (if this object made it)."""
        if self._own:
            self._http.close()

    def __enter__(self) -> CovertHttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- HTTP plumbing, foreign errors mapped once -------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                _PREFIX + path,
                content=body,
                headers={"content-type": "application/octet-stream"} if body else None,
            )
        except httpx.HTTPError as exc:
            raise RemoteProtocolError(f"covert-query provider unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text[:200]
            raise RemoteProtocolError(f"provider answered {response.status_code}: {reason}")
        return response

    def info(self) -> ProviderInfo:
        """The provider's public description (cached)."""
        if self._info is None:
            try:
                data = self._request("GET", "/info").json()
            except ValueError as exc:
                raise RemoteProtocolError("provider info is not JSON") from exc
            self._info = ProviderInfo.from_dict(data)
        return self._info

    def _open(self, messages: list[Message]) -> tuple[str, list[Message]]:
        response = self._request("POST", "/sessions", encode_frames(messages))
        batch = response.headers.get("x-atoll-batch", "")
        return batch, decode_frames(response.content)

    def _step(self, batch: str, messages: list[Message]) -> list[Message]:
        return decode_frames(
            self._request("POST", f"/sessions/{batch}", encode_frames(messages)).content
        )

    def _run(self, machine: CovertClient, *, use_jobs: bool, poll: float) -> list[CovertAnswer]:
        batch, replies = self._open(machine.start())
        while not machine.done:
            outgoing: list[Message] = []
            for msg in replies:
                outgoing.extend(machine.receive(msg))
            if machine.done:
                break
            if not outgoing:
                raise RemoteProtocolError("provider sent nothing to answer")
            if use_jobs and any(isinstance(m, GroupOffer) for m in replies):
                self._request("POST", f"/jobs/{batch}", encode_frames(outgoing))
                replies = self._wait_job(batch, poll)
            else:
                replies = self._step(batch, outgoing)
        return machine.result()

    def _wait_job(self, batch: str, poll: float) -> list[Message]:
        while True:
            status = self._request("GET", f"/jobs/{batch}").json()
            if status.get("status") == "done":
                return decode_frames(self._request("GET", f"/jobs/{batch}/result").content)
            if status.get("status") == "failed":
                raise RemoteProtocolError(f"provider job {batch} failed: {status.get('error')}")
            time.sleep(poll)

    def query(
        self,
        ids: Sequence[str],
        *,
        mode: Mode | str = Mode.EC,
        amplify: Amplify | str = Amplify.PREFIX,
        n: int = 100,
        k_min: int = DEFAULT_K_MIN,
        batch: str = "micro",
        micro_size: int = 256,
        decoys: DecoySource | None = None,
        rsa_min_bits: int = 2048,
        poll_interval: float = 0.2,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[CovertAnswer]:
        """Ask for the labels of ``ids`` (normalized); one answer per input ID, in order."""
        if batch not in BATCH_MODES:
            raise ConfigError(f"batch must be one of {', '.join(BATCH_MODES)}, got {batch!r}")
        mode_, amplify_ = Mode.parse(mode), Amplify.parse(amplify)
        info = self.info()
        distinct, index = dedupe(ids)
        size = {"single": 1, "micro": micro_size, "async": info.max_batch}[batch]
        size = max(1, min(size, info.max_batch))
        answers: list[CovertAnswer] = []
        for start in range(0, len(distinct), size):
            chunk = distinct[start : start + size]
            machine = make_client_machine(
                chunk, info, mode=mode_, amplify=amplify_, n=n, k_min=k_min, decoys=decoys,
                client=self.client_name, rsa_min_bits=rsa_min_bits,
                verified_keys=self._verified,
            )  # fmt: skip
            answers.extend(self._run(machine, use_jobs=batch == "async", poll=poll_interval))
            if progress is not None:
                progress(len(answers), len(distinct))
        return [answers[i] for i in index]
