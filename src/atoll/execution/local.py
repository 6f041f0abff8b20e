"""The local engine: run tasks in the calling thread, a pool of threads or of processes.

Why: most jobs fit one machine, and the default must need no server. Three
modes behind one class:

* ``"inline"`` runs every task in the calling thread, in input order. It is
  deterministic, has no start-up cost and shows the task's own traceback;
  tests and small inputs use it (most library functions that accept an
  optional executor default to it).
* ``"thread"`` runs chunks on a :class:`concurrent.futures.ThreadPoolExecutor`
  of ``workers`` threads in this process. Nothing is pickled and nothing
  starts up, so it suits short tasks over arrays the caller already holds,
  whose time is spent in NumPy or Arrow kernels that release the GIL (the
  attribution bucket map uses it by default). Pure-Python tasks gain nothing.
* ``"process"`` runs chunks of items on a
  :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` processes
  (default: the CPUs this process may use), so CPU-bound bucket tasks use
  every core despite the GIL.

Why the ``spawn`` start method, not ``fork`` or ``forkserver``: a spawned
worker is a fresh interpreter that receives only the task and its item. A
forked worker inherits a copy of the whole parent -- decrypted keys, raw
party data still in memory, open DuckDB handles, and locks held by the
parent's other threads (Arrow, DuckDB and Ray all start threads), which can
deadlock the child. For a clean room, "workers see only what they are given"
is worth the start-up cost (about a second per worker, paid once per ``with``
block, not per task). ``forkserver`` would be cheaper but keeps a server
process alive for the rest of the parent's life, which breaks "nothing
outlives the ``with`` block"; it is also unavailable on Windows. Like every
``spawn`` user, a script that uses the process mode must guard its entry
point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Collection, Generator
from typing import Any, Literal, get_args

from atoll.errors import ConfigError, ExecutionError
from atoll.execution.base import (
    ChunkResult,
    Describe,
    PooledExecutor,
    Progress,
    ProgressReporter,
    run_chunk,
    task_failed,
)

__all__ = ["LocalExecutor", "Mode", "default_workers"]

#: The local execution modes.
Mode = Literal["inline", "thread", "process"]
_START_METHOD = "spawn"


def default_workers() -> int:
    """The number of CPUs this process may run on (affinity-aware where supported)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class LocalExecutor(PooledExecutor["cf.Future[ChunkResult]"]):
    """Run tasks inline (``mode="inline"``), on threads (``"thread"``) or processes (``"process"``).

    ``workers`` (pool modes; default :func:`default_workers`) sizes the
    pool. ``chunksize`` items travel per round trip (default: about four
    chunks per worker); ``max_in_flight`` bounds the chunks submitted but not
    yet consumed (default: twice the workers). Neither applies to the inline
    mode, which rejects them rather than ignore them.

    On exit the pool is shut down: queued chunks are cancelled and running
    ones are waited for (a running task is never killed mid-way).
    """

    backend_name = "the process pool"

    def __init__(
        self,
        workers: int | None = None,
        mode: Mode = "process",
        *,
        chunksize: int | None = None,
        max_in_flight: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        if mode not in get_args(Mode):
            raise ConfigError(
                f"local executor mode must be 'inline', 'thread' or 'process', got {mode!r}"
            )
        if mode == "inline":
            extra = {
                name: value
                for name, value in (
                    ("workers", workers),
                    ("chunksize", chunksize),
                    ("max_in_flight", max_in_flight),
                )
                if value is not None
            }
            if extra:
                raise ConfigError(
                    f"option(s) {', '.join(sorted(extra))} apply only to mode='thread' or 'process'"
                )
        super().__init__(chunksize=chunksize, max_in_flight=max_in_flight, progress=progress)
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.mode: Mode = mode
        self.workers: int = 1 if mode == "inline" else (workers or default_workers())
        self._pool: cf.Executor | None = None
        if mode == "thread":
            self.backend_name = "the thread pool"

    def __repr__(self) -> str:
        if self.mode == "inline":
            return "LocalExecutor(mode='inline')"
        return f"LocalExecutor(workers={self.workers}, mode={self.mode!r})"

    # -- lifetime -----------------------------------------------------------

    def _open(self) -> None:
        if self.mode == "process":
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(_START_METHOD),
            )
        elif self.mode == "thread":
            self._pool = cf.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="atoll-local"
            )

    def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- inline mode --------------------------------------------------------

    def _prepare(self, fn: Any) -> Any:
        # Inline and thread tasks never leave this process, so any callable will do.
        return fn if self.mode != "process" else super()._prepare(fn)

    def _iterate(
        self,
        task: Any,
        batch: list[Any],
        ordered: bool,
        reporter: ProgressReporter,
        describe: Describe | None,
        generation: int,
    ) -> Generator[tuple[int, Any], None, None]:
        if self.mode != "inline":
            return super()._iterate(task, batch, ordered, reporter, describe, generation)
        return self._iterate_inline(task, batch, reporter, describe, generation)

    def _iterate_inline(
        self,
        task: Any,
        batch: list[Any],
        reporter: ProgressReporter,
        describe: Describe | None,
        generation: int,
    ) -> Generator[tuple[int, Any], None, None]:
        reporter.start()
        # One iteration per task: the loop *is* the engine here.
        for index, item in enumerate(batch):
            self._check_alive(generation)
            try:
                value = task(item)
            except Exception as exc:
                task_failed(exc, batch, index, describe)
                raise
            reporter.advance(1)
            yield index, value

    # -- pool mode primitives (threads or processes) -----------------------------

    def _parallelism(self) -> int:
        return self.workers

    def _submit(self, task: Any, start: int, items: list[Any]) -> cf.Future[ChunkResult]:
        pool = self._pool
        if pool is None:
            raise ExecutionError(f"{self!r} is not running")
        return pool.submit(run_chunk, task, start, items)

    def _wait(self, handles: Collection[cf.Future[ChunkResult]]) -> list[cf.Future[ChunkResult]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def _fetch(self, handle: cf.Future[ChunkResult]) -> ChunkResult:
        return handle.result()

    def _cancel(self, handles: Collection[cf.Future[ChunkResult]]) -> None:
        for handle in handles:
            handle.cancel()
