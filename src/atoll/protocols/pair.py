"""Run two protocol machines against each other in memory, counting the wire bytes.

Why: the matching engine runs each bucket's pair of machines in a worker
process, and a worker imports whatever module the task function lives in.
Living here -- next to the codec and the machine base, importing nothing
else -- keeps a spawned worker's start-up to the protocol modules (numpy,
libsodium), instead of the whole matching package with its data-plane
dependencies (DuckDB, pandas, Arrow datasets), which tripled the start-up
time of every worker. The result is plain data (results and four counters)
so that nothing above the protocol layer is needed to unpickle it.

Every message goes through the real codec (encoded, counted, decoded), as
in :func:`atoll.transport.memory.run_pair`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from atoll.errors import LocalProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, decode, encode

__all__ = ["MachinePair", "PairCounts", "run_machine_pair", "run_machines"]

#: One task: a label (e.g. the bucket number) and the two fresh machines.
MachinePair = tuple[int, Machine[Any], Machine[Any]]


@dataclass(frozen=True)
class PairCounts:
    """Both results and what each side sent (bytes and messages)."""

    a_result: Any
    b_result: Any
    a_bytes: int
    b_bytes: int
    a_messages: int
    b_messages: int


def run_machines(a: Machine[Any], b: Machine[Any], *, max_messages: int = 10_000) -> PairCounts:
    """Start ``a`` then ``b`` and deliver every message through the codec until both are done.

    Raises the machines' own ProtocolErrors, and LocalProtocolError if the
    pair stalls (nothing to send while a side is not done) or runs away.
    """
    machines = (a, b)
    sent = [0, 0]
    count = [0, 0]
    queue: deque[tuple[int, Message]] = deque()
    queue.extend((0, m) for m in a.start())
    queue.extend((1, m) for m in b.start())
    while queue:
        who, msg = queue.popleft()
        data = encode(msg)
        sent[who] += len(data)
        count[who] += 1
        if count[0] + count[1] > max_messages:
            raise LocalProtocolError(f"machine pair: no end after {max_messages} messages")
        other = 1 - who
        queue.extend((other, m) for m in machines[other].receive(decode(data)))
    if not (a.done and b.done):
        raise LocalProtocolError(f"machine pair stalled with done={a.done}/{b.done}")
    return PairCounts(a.result(), b.result(), sent[0], sent[1], count[0], count[1])


def run_machine_pair(task: MachinePair) -> tuple[int, PairCounts]:
    """Executor task: ``(label, run_machines(a, b))`` (module-level, so it pickles by name)."""
    label, a, b = task
    return label, run_machines(a, b)
