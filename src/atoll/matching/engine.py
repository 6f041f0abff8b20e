"""The PSI engine interface and the built-in engine.

Why: the orchestration (normalization, multi-ID, bucketing, labels, guards,
audit) must not care *what* computes each bucket's intersection. An engine
takes the two parties' sessions of one stage and yields, per bucket, each
party's result in the protocol's own result types, so that
:meth:`~atoll.matching.session.PartySession.accept` is engine-blind:

* :class:`BuiltinEngine` runs the sans-IO machines of :mod:`atoll.protocols`
  pairwise in memory (through the real codec), buckets in parallel on the
  :class:`~atoll.execution.Executor`. The worker task is
  :func:`atoll.protocols.pair.run_machine_pair`, which lives in the protocol
  layer so that a spawned worker imports only the protocols, not this
  package's data-plane dependencies; the machines carry their inputs as
  compact :class:`~atoll.protocols.psi.PackedItems` where the session
  provides them, and results come back as completed (no per-window order);
* :class:`atoll.matching.spu.SpuEngine` runs SecretFlow's PSI (ECDH, KKRT,
  RR22) in a separate interpreter;
* the secure island's hash join plugs in later through the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from atoll.errors import ConfigError
from atoll.execution import Executor
from atoll.matching.session import PartySession, Traffic
from atoll.protocols._machine import Machine
from atoll.protocols.pair import PairCounts, run_machine_pair, run_machines

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


def _outcome(bucket: int, run: PairCounts) -> BucketOutcome:
    return BucketOutcome(
        bucket,
        run.a_result,
        run.b_result,
        Traffic(run.a_bytes, run.b_bytes, run.a_messages, run.b_messages),
        Traffic(run.b_bytes, run.a_bytes, run.b_messages, run.a_messages),
    )


def run_bucket_pair(task: PairTask) -> BucketOutcome:
    """Run one bucket's two machines in memory through the real codec, in this process.

    (Executors run :func:`atoll.protocols.pair.run_machine_pair` instead, whose
    module is cheap for a worker to import; this wraps the same loop.)
    """
    bucket, a, b = task
    return _outcome(bucket, run_machines(a, b))


class BuiltinEngine(PsiEngine):
    """Atoll's own protocols, each bucket's pair run in memory on the executor.

    Buckets go to the executor in windows of ``window`` pairs so that only a
    few buckets' machines (and their inputs) exist at a time; within a
    window, outcomes are yielded as buckets complete.
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
            for _, (bucket, run) in executor.map_unordered(
                run_machine_pair, tasks, describe=lambda t: f"bucket {t[0]}"
            ):
                done += 1
                if progress is not None:
                    progress(done)
                yield _outcome(bucket, run)


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
