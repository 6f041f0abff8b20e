"""Run two protocol machines against each other in one process.

Why: tests and ``atoll ... local`` commands need both roles in one process;
routing every message through the real codec (encode, then decode) means
the in-memory run exercises exactly the bytes a network run would, and the
byte counts it reports are the real wire sizes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from atoll.errors import LocalProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, decode, encode

__all__ = ["PairRun", "run_pair"]

#: Optional hook to observe or tamper with traffic: (sender, encoded) -> encoded.
Tap = Callable[[str, bytes], bytes]


@dataclass
class PairRun:
    """What :func:`run_pair` returns: both results and the traffic counters."""

    a_result: Any
    b_result: Any
    bytes_a_to_b: int = 0
    bytes_b_to_a: int = 0
    messages_a_to_b: int = 0
    messages_b_to_a: int = 0
    transcript: list[tuple[str, Message]] = field(default_factory=list)


def run_pair(
    a: Machine[Any],
    b: Machine[Any],
    *,
    tap: Tap | None = None,
    keep_transcript: bool = False,
    max_rounds: int = 10_000,
) -> PairRun:
    """Start ``a`` then ``b`` and deliver messages until both are done.

    Every message is encoded and decoded on the way (``tap`` may observe or
    alter the bytes). Raises the machines' own ProtocolErrors, and
    LocalProtocolError if the pair stalls (nobody has anything to send and
    one side is not done).
    """
    run = PairRun(None, None)
    queue: deque[tuple[str, Message]] = deque()
    queue.extend(("a", m) for m in a.start())
    queue.extend(("b", m) for m in b.start())
    rounds = 0
    while queue:
        rounds += 1
        if rounds > max_rounds:
            raise LocalProtocolError(f"run_pair: no end after {max_rounds} messages")
        sender, msg = queue.popleft()
        data = encode(msg)
        if tap is not None:
            data = tap(sender, data)
        received = decode(data)
        if keep_transcript:
            run.transcript.append((sender, received))
        if sender == "a":
            run.bytes_a_to_b += len(data)
            run.messages_a_to_b += 1
            queue.extend(("b", m) for m in b.receive(received))
        else:
            run.bytes_b_to_a += len(data)
            run.messages_b_to_a += 1
            queue.extend(("a", m) for m in a.receive(received))
    if not (a.done and b.done):
        raise LocalProtocolError(
            f"run_pair: stalled with a.done={a.done}, b.done={b.done} and nothing to send"
        )
    run.a_result = a.result()
    run.b_result = b.result()
    return run
