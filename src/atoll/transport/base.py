"""What every network transport shares: the round driver and the transport error.

Why: the plan (``shared/ARCHITECTURE.md``) sketches ``run(machine, channel)``
over a *stream* channel. Between two Atoll nodes the channel is HTTPS, which
is request/response: the joining party (client) sends the messages its
machine produced, the serving party answers with its machine's replies. So
the driver here is round based -- :func:`drive` runs one machine through an
:class:`Exchange` (one HTTP round trip per call) -- and it is the only loop
that knows the order of ``start``/``receive``. The HTTP client
(:mod:`atoll.transport.http`) and the node service
(:mod:`atoll.service.node`) both build on it.

What is driven is a *party job* (:class:`atoll.matching.session.PartyJob`):
parameters agreed first, then one *stage* per ID type, each a
:class:`~atoll.matching.session.PartySession` with its buckets and a fresh
machine per bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atoll.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from atoll.matching.session import Traffic
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message

__all__ = ["Exchange", "Reply", "TransportError", "drive"]


class TransportError(ProtocolError):
    """The connection failed (refused, reset, timed out): retrying may help.

    Distinct from :class:`~atoll.errors.RemoteProtocolError` (the peer said
    or sent something wrong: retrying will not help).
    """


@dataclass(frozen=True)
class Reply:
    """The peer's answer to one round: its messages, and whether its machine is done."""

    messages: list[Message]
    peer_done: bool
    #: Bytes we sent in this round and bytes of the reply (payloads, as framed on the wire).
    sent: int = 0
    received: int = 0


#: One round trip: (round number, our messages) -> the peer's reply.
Exchange = Callable[[int, list[Message]], Reply]


def drive(
    machine: Machine[Any], exchange: Exchange, *, max_rounds: int = 1000
) -> tuple[Any, Traffic]:
    """Run ``machine`` (the client side of one bucket) to completion over ``exchange``.

    Round 0 carries ``machine.start()`` (possibly no messages: the peer's
    machine starts when round 0 arrives); each later round carries the
    replies the machine produced to the previous answer. Ends when our
    machine is done, has nothing left to send, and the peer reports done.
    Returns ``machine.result()`` and the traffic of the run.
    """
    outbound = machine.start()
    traffic = Traffic()
    for round_no in range(max_rounds):
        reply = exchange(round_no, outbound)
        traffic = traffic + Traffic(reply.sent, reply.received, len(outbound), len(reply.messages))
        outbound = []
        for msg in reply.messages:
            outbound.extend(machine.receive(msg))
        if outbound:
            continue
        if machine.done and reply.peer_done:
            return machine.result(), traffic
        if machine.done:
            raise RemoteProtocolError(
                f"{machine.protocol}: the peer is not done but we have nothing left to send"
            )
        raise RemoteProtocolError(
            f"{machine.protocol}: the peer sent nothing we could answer and we are not done"
        )
    raise LocalProtocolError(f"{machine.protocol}: no end after {max_rounds} rounds")
