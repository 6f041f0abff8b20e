"""The PSI engine interface and the built-in engine.

Why: the orchestration (normalization, multi-ID, bucketing, labels, guards,
audit) must not care *what* computes each bucket's intersection. An engine
takes the two parties' sessions of one stage and yields, per bucket, each
party's result in the protocol's own result types, so that
:meth:`~atoll.matching.session.PartySession.accept` is engine-blind:

* :class:`BuiltinEngine` runs the sans-IO machines of :mod:`atoll.protocols`
  pairwise in memory (through the real codec), buckets in parallel on the
  :class:`~atoll.execution.Executor`;
* :class:`atoll.matching.spu.SpuEngine` runs SecretFlow's PSI (ECDH, KKRT,
  RR22) in a separate interpreter;
* the secure island's hash join plugs in later through the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from atoll.errors import ConfigError, LocalProtocolError
from atoll.execution import Executor
from atoll.matching.session import PartySession, Traffic
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, decode, encode

__all__ = [
    "BucketOutcome",
    "BuiltinEngine",
    "PsiEngine",
    "get_engine",
    "run_bucket_pair",
]


@dataclass(frozen=True)
class BucketOutcome:
    """One bucket's results for both parties and the traffic each one saw."""

    bucket: int
    a_result: Any
    b_result: Any
    a_traffic: Traffic
    b_traffic: Traffic


#: Called with the number of buckets finished so far (for progress bars).
BucketProgress = Callable[[int], None]


class PsiEngine(ABC):
    """Computes one stage's per-bucket results for two local parties."""

    #: The engine's name in params and on the command line.
    name: str = "engine"

    def check(self, params: dict[str, Any]) -> None:
        """Raise ConfigError if the engine cannot run a job with these params."""
        return None

    @abstractmethod
    def run_stage(
        self,
        a: PartySession,
        b: PartySession,
        executor: Executor,
        *,
        progress: BucketProgress | None = None,
    ) -> Iterator[BucketOutcome]:
        """Yield every bucket's :class:`BucketOutcome` (any order, each bucket once)."""


# -- built-in engine ---------------------------------------------------------

#: What one task carries to a worker: the bucket and the two fresh machines.
PairTask = tuple[int, Machine[Any], Machine[Any]]


def run_bucket_pair(task: PairTask) -> BucketOutcome:
    """Run one bucket's two machines in memory (a module-level task for executors).

    Every message goes through the real codec (encoded, counted, decoded), as
    in :func:`atoll.transport.memory.run_pair`, which this layer may not import.
    """
    bucket, a, b = task
    machines = {"a": a, "b": b}
    sent = {"a": 0, "b": 0}
    count = {"a": 0, "b": 0}
    queue: deque[tuple[str, Message]] = deque()
    queue.extend(("a", m) for m in a.start())
    queue.extend(("b", m) for m in b.start())
    while queue:
        who, msg = queue.popleft()
        data = encode(msg)
        sent[who] += len(data)
        count[who] += 1
        other = "b" if who == "a" else "a"
        queue.extend((other, m) for m in machines[other].receive(decode(data)))
    if not (a.done and b.done):
        raise LocalProtocolError(
            f"bucket {bucket}: stalled with done={a.done}/{b.done} and nothing to send"
        )
    return BucketOutcome(
        bucket,
        a.result(),
        b.result(),
        Traffic(sent["a"], sent["b"], count["a"], count["b"]),
        Traffic(sent["b"], sent["a"], count["b"], count["a"]),
    )


class BuiltinEngine(PsiEngine):
    """Atoll's own protocols, each bucket's pair run in memory on the executor.

    Buckets go to the executor in windows of ``window`` pairs so that only a
    few buckets' machines (and their inputs) exist at a time.
    """

    name = "builtin"

    def __init__(self, *, window: int = 8) -> None:
        if window < 1:
            raise ConfigError("window must be >= 1")
        self.window = window

    def run_stage(
        self,
        a: PartySession,
        b: PartySession,
        executor: Executor,
        *,
        progress: BucketProgress | None = None,
    ) -> Iterator[BucketOutcome]:
        """Run every pending bucket of ``a`` (and ``b``) through the executor."""
        buckets = a.pending()
        done = 0
        for start in range(0, len(buckets), self.window):
            group = buckets[start : start + self.window]
            tasks: list[PairTask] = [(k, a.machine(k), b.machine(k)) for k in group]
            for outcome in executor.map(
                run_bucket_pair, tasks, describe=lambda t: f"bucket {t[0]}"
            ):
                done += 1
                if progress is not None:
                    progress(done)
                yield outcome


def get_engine(name: str) -> PsiEngine:
    """The engine called ``name``: ``builtin``, ``spu`` (RR22) or ``spu-ecdh|kkrt|rr22``."""
    key = name.strip().lower()
    if key == "builtin":
        return BuiltinEngine()
    if key == "spu" or key.startswith("spu-"):
        from atoll.matching.spu import SpuEngine

        return SpuEngine(key[4:] or "rr22")
    raise ConfigError(
        f"unknown PSI engine {name!r} (engines: builtin, spu, spu-ecdh, spu-kkrt, spu-rr22)"
    )
