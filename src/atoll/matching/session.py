"""The party-session contract: one party's side of a bucketed matching run.

Why: a matching job (ECDH PSI, labeled PSI, intersection-sum; one or several
ID types) is the same whatever carries its messages -- both parties bucket
their normalized IDs with the agreed bucket function, run one fresh protocol
machine per bucket, and merge the per-bucket results. The in-memory runner
(:func:`atoll.matching.local.run_local`) and the HTTPS runner (the ``psi
serve`` / ``psi join`` commands) must therefore share everything except the
transport. This module fixes the seam between them:

:class:`PartyJob`
    One party's whole job. ``params()`` is a JSON-able dict that both sides
    exchange *before* any protocol message; ``agree(peer_params)`` checks the
    peer's dict against ours (raising :class:`~atoll.errors.RemoteProtocolError`
    naming the first mismatch) and adopts what only the peer decides (e.g. the
    sender's label schema). Then ``sessions()`` yields one
    :class:`PartySession` per *stage* (one per ID type of a multi-ID
    waterfall, in priority order); a stage's session is created only after
    the previous one's :meth:`PartySession.finish` returned, because the
    waterfall removes rows matched at a higher priority. Finally
    ``finish()`` returns the party's :class:`~atoll.matching.report.MatchOutcome`.

:class:`PartySession`
    One stage. ``params()`` (the job's params plus ``stage``/``id_kind``),
    ``buckets()`` (the bucket numbers to run, ascending; a bucket where one
    side is empty still runs -- the other side must learn it is empty),
    ``machine(bucket)`` (a *fresh* :class:`~atoll.protocols._machine.Machine`
    each call, so a broken connection can retry a bucket), ``accept(bucket,
    result, traffic)`` (the machine's ``result()`` and the bytes it moved),
    ``finish()`` (the stage's report). ``accept`` may be called in any bucket
    order, once per bucket; ``finish`` refuses to run if a bucket is missing,
    so partial output is never presented as complete.

How a driver runs a bucket: call ``start()`` on *both* machines (either may
speak first -- PSI's receiver does, intersection-sum's id holder does; the
other returns ``[]``), deliver every message to the other side until both
are ``done``, then ``accept`` each side's ``result()``. Over HTTP the client
POSTs its machine's messages (possibly none) and the server feeds them to its
machine (started on the bucket's first request) and returns the replies.

Which side is which: PSI's ``receiver`` (left, the brand) initiates and gets
the output; its ``sender`` (right, the provider) responds. Intersection-sum's
``ids`` party initiates; the ``values`` party holds the values and the
decryption key. :data:`INITIATOR_ROLES` lists the initiating role of each
protocol for drivers that want the initiator to be the client.

Building jobs: :func:`atoll.matching.psi_party` and
:func:`atoll.matching.sum_party` from an Arrow table; write a receiver's
outcome with :func:`atoll.matching.report.write_outcome`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from atoll.errors import RemoteProtocolError
from atoll.protocols._machine import Machine

__all__ = [
    "COMPLEMENT_ROLE",
    "INITIATOR_ROLES",
    "PartyJob",
    "PartySession",
    "Traffic",
    "canonical_params",
    "check_params",
]

#: The role each role must meet.
COMPLEMENT_ROLE: Mapping[str, str] = {
    "receiver": "sender",
    "sender": "receiver",
    "values": "ids",
    "ids": "values",
}
#: The role whose machine speaks first, per protocol name.
INITIATOR_ROLES: Mapping[str, str] = {
    "ecdh-psi": "receiver",
    "labeled-psi": "receiver",
    "intersection-sum": "ids",
}


@dataclass(frozen=True)
class Traffic:
    """What one bucket's run moved, seen from this party."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.bytes_sent + other.bytes_sent,
            self.bytes_received + other.bytes_received,
            self.messages_sent + other.messages_sent,
            self.messages_received + other.messages_received,
        )


class PartySession(ABC):
    """One party's side of one stage (one ID type) of a bucketed run."""

    #: ``"receiver"``/``"sender"`` (PSI) or ``"values"``/``"ids"`` (intersection-sum).
    role: str
    #: 0-based stage index (position of the ID type in the waterfall).
    stage: int

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The job's params plus this stage's ``stage`` and ``id_kind`` (JSON-able)."""

    @abstractmethod
    def buckets(self) -> list[int]:
        """Bucket numbers to run, ascending (all of ``range(B)``)."""

    @abstractmethod
    def machine(self, bucket: int) -> Machine[Any]:
        """A fresh protocol machine for ``bucket`` (call again to retry a bucket)."""

    @abstractmethod
    def accept(self, bucket: int, result: Any, traffic: Traffic | None = None) -> None:
        """Record the finished machine's ``result()`` for ``bucket`` (once per bucket)."""

    @abstractmethod
    def finish(self) -> Any:
        """Close the stage; raises LocalProtocolError if any bucket was not accepted."""

    def pending(self) -> list[int]:
        """Buckets not yet accepted (all of them before the first ``accept``)."""
        return self.buckets()


class PartyJob(ABC):
    """One party's whole matching job: params, agreement, stages, outcome."""

    #: This party's role (see :data:`COMPLEMENT_ROLE`).
    role: str

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-able parameters both sides must agree on (see :func:`check_params`)."""

    @abstractmethod
    def agree(self, peer_params: Mapping[str, Any]) -> None:
        """Check the peer's params against ours and adopt what the peer decides.

        Raises RemoteProtocolError naming the first mismatch (protocol,
        version, bucket function/count/salt hash, reveal, stages, ...).
        Must be called once before :meth:`sessions`.
        """

    @abstractmethod
    def sessions(self) -> Iterator[PartySession]:
        """Yield one session per stage, each after the previous one finished."""

    @abstractmethod
    def finish(self) -> Any:
        """The party's outcome (:class:`atoll.matching.report.MatchOutcome` or SumOutcome)."""


def canonical_params(params: Mapping[str, Any]) -> str:
    """A canonical JSON text of ``params`` (sorted keys), for hashing and audit lines."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_params(
    mine: Mapping[str, Any],
    theirs: Mapping[str, Any],
    *,
    ignore: frozenset[str] = frozenset(),
) -> None:
    """Refuse a peer whose params differ from ours (except roles and ``ignore`` keys).

    The peer's ``role`` must be the complement of ours. Every other key
    present on either side must be equal; the error names the key and both
    values, e.g. ``peer's 'reveal' is 'both', ours is 'receiver'``.
    """
    if not isinstance(theirs, Mapping):
        raise RemoteProtocolError("peer params must be a JSON object")
    my_role = mine.get("role")
    want = COMPLEMENT_ROLE.get(str(my_role))
    if theirs.get("role") != want:
        raise RemoteProtocolError(
            f"peer's role is {theirs.get('role')!r}; a {my_role!r} needs a {want!r}"
        )
    for key in sorted(set(mine) | set(theirs)):
        if key == "role" or key in ignore:
            continue
        if key not in theirs:
            raise RemoteProtocolError(f"peer's params lack {key!r} (ours: {mine[key]!r})")
        if key not in mine:
            raise RemoteProtocolError(f"peer's params have unknown {key!r}")
        if mine[key] != theirs[key]:
            raise RemoteProtocolError(
                f"parameter mismatch: peer's {key!r} is {theirs[key]!r}, ours is {mine[key]!r}"
            )
