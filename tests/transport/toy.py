"""A toy two-party protocol and party sessions, to test transports without real crypto.

Why: transports and the node service must drive *any* machine; testing them
against a tiny protocol whose result is obvious (a plain set intersection)
keeps their tests independent of the PSI code and fast. The protocol has
the shapes a transport must handle: both sides emit on ``start()``, a
reply carries several messages, and the last message flows client→server.

Flow (client = receiver, server = sender)::

    client start  -> Offer(items)
    server start  -> Hello(count)
    server Offer  -> Match(common)           (server now waits for Ack)
    client Hello  -> (records count)
    client Match  -> Ack(n)                  client done: result = common
    server Ack    -> ()                      server done: result = n
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atoll.errors import LocalProtocolError, RemoteProtocolError
from atoll.matching.session import PartyJob, PartySession, Traffic, check_params
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, Reader, Writer, register


@register
@dataclass(frozen=True)
class Offer(Message):
    """Client's items."""

    TYPE = 0xFE01
    items: tuple[bytes, ...]

    def encode_body(self, w: Writer) -> None:
        w.blobs(list(self.items))

    @classmethod
    def decode_body(cls, r: Reader) -> Offer:
        return cls(tuple(r.blobs(max_len=1024)))


@register
@dataclass(frozen=True)
class Hello(Message):
    """Server's set size."""

    TYPE = 0xFE02
    count: int

    def encode_body(self, w: Writer) -> None:
        w.u32(self.count)

    @classmethod
    def decode_body(cls, r: Reader) -> Hello:
        return cls(r.u32())


@register
@dataclass(frozen=True)
class Match(Message):
    """Items both hold."""

    TYPE = 0xFE03
    items: tuple[bytes, ...]

    def encode_body(self, w: Writer) -> None:
        w.blobs(list(self.items))

    @classmethod
    def decode_body(cls, r: Reader) -> Match:
        return cls(tuple(r.blobs(max_len=1024)))


@register
@dataclass(frozen=True)
class Ack(Message):
    """Client acknowledges n matches."""

    TYPE = 0xFE04
    n: int

    def encode_body(self, w: Writer) -> None:
        w.u32(self.n)

    @classmethod
    def decode_body(cls, r: Reader) -> Ack:
        return cls(r.u32())


class ToyClient(Machine[list[bytes]]):
    """Receiver role: learns the common items."""

    protocol = "toy"

    def __init__(self, items: Sequence[bytes]) -> None:
        super().__init__()
        self.items = list(items)
        self.peer_count: int | None = None
        self._common: list[bytes] | None = None

    @property
    def done(self) -> bool:
        return self._common is not None

    def _on_start(self) -> list[Message]:
        return [Offer(tuple(self.items))]

    def _on_receive(self, msg: Message) -> list[Message]:
        if isinstance(msg, Hello) and self.peer_count is None:
            self.peer_count = msg.count
            return []
        if isinstance(msg, Match) and self._common is None:
            if not set(msg.items) <= set(self.items):
                raise RemoteProtocolError("toy: peer matched items I never sent")
            self._common = sorted(msg.items)
            return [Ack(len(msg.items))]
        raise self._unexpected(msg, "Hello or Match")

    def _result(self) -> list[bytes]:
        assert self._common is not None
        return self._common


class ToyServer(Machine[int]):
    """Sender role: learns only how many items matched."""

    protocol = "toy"

    def __init__(self, items: Sequence[bytes]) -> None:
        super().__init__()
        self.items = set(items)
        self._matched: int | None = None
        self._acked: int | None = None

    @property
    def done(self) -> bool:
        return self._acked is not None

    def _on_start(self) -> list[Message]:
        return [Hello(len(self.items))]

    def _on_receive(self, msg: Message) -> list[Message]:
        if isinstance(msg, Offer) and self._matched is None:
            common = sorted(set(msg.items) & self.items)
            self._matched = len(common)
            return [Match(tuple(common))]
        if isinstance(msg, Ack) and self._matched is not None and self._acked is None:
            if msg.n != self._matched:
                raise RemoteProtocolError("toy: ack count differs")
            self._acked = msg.n
            return []
        raise self._unexpected(msg, "Offer or Ack")

    def _result(self) -> int:
        assert self._acked is not None
        return self._acked


def bucket_of(item: bytes, buckets: int) -> int:
    """A toy bucket function (both sides agree)."""
    return sum(item) % buckets


class ToySession(PartySession):
    """One stage of a toy job: items of one "ID type", bucketed."""

    def __init__(self, job: ToyJob, stage: int, items: Sequence[bytes]) -> None:
        self.job = job
        self.role = job.role
        self.stage = stage
        self.items = list(items)
        self.accepted: dict[int, Any] = {}
        self.traffic: dict[int, Traffic | None] = {}
        self.machines_made: list[int] = []

    def params(self) -> dict[str, Any]:
        return {**self.job.params(), "stage": self.stage}

    def buckets(self) -> list[int]:
        return list(range(self.job.n_buckets))

    def machine(self, bucket: int) -> Machine[Any]:
        self.machines_made.append(bucket)
        mine = [x for x in self.items if bucket_of(x, self.job.n_buckets) == bucket]
        return ToyClient(mine) if self.role == "receiver" else ToyServer(mine)

    def accept(self, bucket: int, result: Any, traffic: Traffic | None = None) -> None:
        if bucket in self.accepted:
            raise LocalProtocolError(f"bucket {bucket} accepted twice")
        self.accepted[bucket] = result
        self.traffic[bucket] = traffic

    def finish(self) -> Any:
        missing = [b for b in self.buckets() if b not in self.accepted]
        if missing:
            raise LocalProtocolError(f"buckets {missing} not accepted")
        if self.role == "receiver":
            return sorted(x for r in self.accepted.values() for x in r)
        return sum(self.accepted.values())


class ToyJob(PartyJob):
    """A toy multi-stage job: stage k intersects ``stages[k]`` with the peer's."""

    def __init__(
        self,
        role: str,
        stages: Sequence[Sequence[bytes]],
        *,
        n_buckets: int = 4,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.role = role
        self.stage_items = [list(s) for s in stages]
        self.n_buckets = n_buckets
        self.extra = extra or {}
        self.agreed: Mapping[str, Any] | None = None
        self.sessions_made: list[ToySession] = []
        self.results: list[Any] = []

    def params(self) -> dict[str, Any]:
        return {
            "protocol": "toy",
            "version": 1,
            "role": self.role,
            "buckets": self.n_buckets,
            "stages": len(self.stage_items),
            **self.extra,
        }

    def agree(self, peer_params: Mapping[str, Any]) -> None:
        check_params(self.params(), peer_params)
        self.agreed = peer_params

    def sessions(self) -> Iterator[PartySession]:
        if self.agreed is None:
            raise LocalProtocolError("agree() first")
        for k, items in enumerate(self.stage_items):
            session = ToySession(self, k, items)
            self.sessions_made.append(session)
            yield session
            self.results.append(session.finish())

    def finish(self) -> Any:
        if len(self.results) != len(self.stage_items):
            raise LocalProtocolError("not every stage finished")
        return list(self.results)
