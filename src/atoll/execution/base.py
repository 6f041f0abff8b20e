"""The executor interface: map a task over items, locally or on a cluster.

Why: every large computation in Atoll is a map over buckets followed by a
merge of additive partial results (ARCHITECTURE idea 2). The *what* (the task
function and its items, usually bucket paths) must not depend on the *where*
(this thread, a process pool, a Ray cluster), so that a job written and
tested inline runs unchanged on 64 cores or a cluster. This module holds the
one interface, :class:`Executor`, and everything the engines share:

* structured lifetime: an executor is used as ``with executor:``; its workers
  start on entry and are gone on exit, and calling it outside the block is an
  error rather than a silently leaked pool;
* the scheduler for pooled engines (:class:`PooledExecutor`): items are cut
  into contiguous chunks (few round trips for many small tasks), at most
  ``max_in_flight`` chunks are outstanding (bounded memory, even when results
  must be re-ordered), results come back in input order (:meth:`Executor.map`,
  :meth:`Executor.imap`) or as they complete (:meth:`Executor.map_unordered`);
* one error contract for every engine. Tasks run inside a wrapper
  (:func:`run_chunk`) that catches the task's exception *in the worker* and
  sends back its type, message, formatted traceback and a re-buildable copy,
  so that no engine-specific wrapper type (``RayTaskError``, a broken pickle)
  reaches the caller. Then:

  - a task raising an :class:`~atoll.errors.AtollError` subclass (an
    ``InputError`` naming a file/row/column, a nested ``ExecutionError``...)
    re-raises **that same class** with its attributes, plus a note (PEP 678)
    naming the item: the CLI prints the same actionable message whether the
    job ran inline or on Ray;
  - any other exception becomes :class:`~atoll.errors.ExecutionError`
    ``"task on items[7] (<item>) failed: ValueError: <message>"``, chained
    (``raise ... from``) to the original exception, whose own ``__cause__``
    carries the worker's traceback text when it ran in another process;
  - when several items fail, the ordered variants report the first failing
    item in input order, so the error is deterministic across engines.

Task functions travel to workers *by reference* (``module.qualname``): they
must be module-level functions (or picklable callables such as a
``functools.partial`` of one). A closure or a partial that captures a large
table is an anti-pattern: pass bucket paths (small) and let the task read its
bucket, not the data itself.
"""

from __future__ import annotations

import abc
import contextlib
import math
import pickle
import reprlib
import traceback
from collections.abc import Callable, Collection, Generator, Hashable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar

from atoll.errors import AtollError, ConfigError, ExecutionError

__all__ = [
    "ChunkResult",
    "Describe",
    "Executor",
    "PooledExecutor",
    "Progress",
    "ProgressReporter",
    "TaskFailure",
    "run_chunk",
    "task_failed",
]

T = TypeVar("T")
R = TypeVar("R")
H = TypeVar("H", bound=Hashable)

#: A progress callback: ``progress(done, total)``, called in the calling thread.
Progress = Callable[[int, int], None]
#: Describes an item in error messages (default: a shortened ``repr``).
Describe = Callable[[Any], str]

_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = 4


class Executor(abc.ABC):
    """Runs ``fn(item)`` for every item; the engine decides where.

    Use it as a context manager; nothing it starts outlives the ``with``
    block. An executor is not re-entrant, but may be entered again after it
    has been exited (a fresh pool is started).

    ``progress(done, total)`` is called in the calling thread with
    ``(0, total)`` when a map starts and again each time more items have
    completed successfully (``done`` counts items, not chunks). An exception
    raised by the callback propagates and stops the map.
    """

    def __init__(self, *, progress: Progress | None = None) -> None:
        self._progress = progress
        self._running = False
        self._generation = 0

    # -- lifetime -----------------------------------------------------------

    def __enter__(self) -> Self:
        if self._running:
            raise ExecutionError(f"{self!r} is already running; executors are not re-entrant")
        self._open()
        self._generation += 1
        self._running = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        self._close()

    @property
    def running(self) -> bool:
        """Whether the executor is inside its ``with`` block."""
        return self._running

    @abc.abstractmethod
    def _open(self) -> None:
        """Start the engine (workers, cluster connection)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Stop everything :meth:`_open` started; wait for it to be gone."""

    # -- the interface ------------------------------------------------------

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        describe: Callable[[T], str] | None = None,
        progress: Progress | None = None,
    ) -> list[R]:
        """``[fn(item) for item in items]``, computed by the engine, in input order.

        ``describe(item)`` names an item in error messages (default: a
        shortened ``repr``); ``progress`` overrides the executor's callback
        for this call. Raises as described in the module docstring.
        """
        with contextlib.closing(self._start(fn, items, True, describe, progress)) as pairs:
            return [value for _, value in pairs]

    def imap(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        describe: Callable[[T], str] | None = None,
        progress: Progress | None = None,
    ) -> Generator[R, None, None]:
        """Like :meth:`map`, but yields results in input order as they become available.

        Pooled engines keep at most ``max_in_flight`` chunks submitted but not
        yet yielded, so memory stays bounded while the consumer streams.
        Closing the generator early (``close()``, or dropping it) cancels the
        chunks not yet started.
        """
        return _values(self._start(fn, items, True, describe, progress))

    def map_unordered(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        describe: Callable[[T], str] | None = None,
        progress: Progress | None = None,
    ) -> Generator[tuple[int, R], None, None]:
        """Yield ``(index, fn(items[index]))`` pairs in completion order.

        Suited to additive merges, where order does not matter; the first
        failure observed (not necessarily the lowest index) is raised.
        """
        return self._start(fn, items, False, describe, progress)

    # -- shared machinery ---------------------------------------------------

    def _start(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        ordered: bool,
        describe: Callable[[T], str] | None,
        progress: Progress | None,
    ) -> Generator[tuple[int, R], None, None]:
        # Validation happens here, eagerly, not at the generator's first step.
        if not self._running:
            raise ExecutionError(f"{self!r} is not running: use it as `with executor: ...`")
        if not callable(fn):
            raise ConfigError(f"the task must be callable, got {type(fn).__name__}")
        batch = list(items)
        task = self._prepare(fn)
        reporter = ProgressReporter(
            progress if progress is not None else self._progress, len(batch)
        )
        return self._iterate(task, batch, ordered, reporter, describe, self._generation)

    def _prepare(self, fn: Callable[[Any], Any]) -> Any:
        """Turn the task into what :meth:`_iterate` sends to workers."""
        return fn

    def _check_alive(self, generation: int) -> None:
        if not self._running or self._generation != generation:
            raise ExecutionError(
                f"{self!r} was closed while results were still being consumed; "
                "consume imap/map_unordered inside the `with` block"
            )

    @abc.abstractmethod
    def _iterate(
        self,
        task: Any,
        batch: list[Any],
        ordered: bool,
        reporter: ProgressReporter,
        describe: Describe | None,
        generation: int,
    ) -> Generator[tuple[int, Any], None, None]:
        """Yield ``(index, result)`` pairs; raise per the error contract."""


class PooledExecutor(Executor, Generic[H]):
    """Base of engines that run chunks of items on workers (process pool, Ray).

    Subclasses provide five primitives over an opaque, hashable handle per
    submitted chunk; the scheduling, ordering, windowing and error mapping
    live here once.
    """

    #: How error messages name the engine ("the process pool", "Ray").
    backend_name = "the executor"

    def __init__(
        self,
        *,
        chunksize: int | None = None,
        max_in_flight: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(progress=progress)
        self.chunksize = _positive_or_none("chunksize", chunksize)
        self.max_in_flight = _positive_or_none("max_in_flight", max_in_flight)

    @abc.abstractmethod
    def _parallelism(self) -> int:
        """How many tasks can run at once (sizes chunks and the window)."""

    @abc.abstractmethod
    def _submit(self, task: Any, start: int, items: list[Any]) -> H:
        """Start ``run_chunk(task, start, items)`` on a worker."""

    @abc.abstractmethod
    def _wait(self, handles: Collection[H]) -> list[H]:
        """Block until at least one handle is done; return the done ones."""

    @abc.abstractmethod
    def _fetch(self, handle: H) -> ChunkResult:
        """The result of a done handle; raises the engine's own errors."""

    @abc.abstractmethod
    def _cancel(self, handles: Collection[H]) -> None:
        """Best-effort cancellation of chunks that are no longer needed."""

    def _prepare(self, fn: Callable[[Any], Any]) -> Any:
        try:
            pickle.dumps(fn)
        except Exception as exc:
            name = getattr(fn, "__qualname__", type(fn).__name__)
            raise ConfigError(
                f"task {name!r} cannot be sent to {self.backend_name}: tasks must be "
                "module-level functions (picklable by reference), not lambdas or "
                f"closures ({type(exc).__name__}: {exc})"
            ) from exc
        return fn

    def _iterate(
        self,
        task: Any,
        batch: list[Any],
        ordered: bool,
        reporter: ProgressReporter,
        describe: Describe | None,
        generation: int,
    ) -> Generator[tuple[int, Any], None, None]:
        reporter.start()
        total = len(batch)
        if total == 0:
            return
        parallelism = max(1, self._parallelism())
        size = self.chunksize or max(1, math.ceil(total / (4 * parallelism)))
        window = self.max_in_flight or 2 * parallelism
        starts = list(range(0, total, size))
        pending: dict[H, int] = {}
        buffered: dict[int, ChunkResult] = {}
        submitted = 0  # chunks submitted
        retired = 0  # chunks yielded (ordered) or completed (unordered)
        failure_seen = False
        try:
            while retired < len(starts):
                self._check_alive(generation)
                in_flight = submitted - retired if ordered else len(pending)
                # Once a failure is known, later chunks are not worth starting.
                while submitted < len(starts) and in_flight < window and not failure_seen:
                    start = starts[submitted]
                    end = min(start + size, total)
                    pending[self._submit_chunk(task, batch, start, end, describe)] = start
                    submitted += 1
                    in_flight += 1
                for handle in self._wait(pending):
                    start = pending.pop(handle)
                    result = self._collect(handle, batch, start, min(start + size, total), describe)
                    reporter.advance(len(result.values))
                    failure_seen = failure_seen or result.failure is not None
                    if ordered:
                        buffered[start] = result
                    else:
                        retired += 1
                        yield from _emit(result, start, batch, describe)
                while ordered and retired < len(starts) and starts[retired] in buffered:
                    start = starts[retired]
                    retired += 1
                    yield from _emit(buffered.pop(start), start, batch, describe)
        finally:
            if pending:
                self._cancel(list(pending))

    def _submit_chunk(
        self,
        task: Any,
        batch: list[Any],
        start: int,
        end: int,
        describe: Describe | None,
    ) -> H:
        try:
            return self._submit(task, start, batch[start:end])
        except Exception as exc:  # e.g. a broken pool, an item that cannot be serialized
            where = _where(batch, start, end, describe)
            raise ExecutionError(
                f"{self.backend_name} could not accept the task on {where}: "
                f"{_describe_exception(type(exc), _safe_str(exc))}"
            ) from exc

    def _collect(
        self,
        handle: H,
        batch: list[Any],
        start: int,
        end: int,
        describe: Describe | None,
    ) -> ChunkResult:
        try:
            return self._fetch(handle)
        except Exception as exc:
            where = _where(batch, start, end, describe)
            raise ExecutionError(
                f"{self.backend_name} failed to run the task on {where}: "
                f"{_describe_exception(type(exc), _safe_str(exc))}"
            ) from exc


# -- what travels between the caller and the workers --------------------------


@dataclass(frozen=True)
class TaskFailure:
    """A task's exception, captured in the worker in a form that always pickles.

    ``payload`` is ``pickle((type, args, __dict__))`` of the exception when
    that pickles, so the caller can rebuild an instance of the same class
    without calling its ``__init__`` (``InputError`` and ``DecryptionError``
    have keyword-only or no constructor arguments, which defeats the default
    exception pickling).
    """

    index: int
    type_name: str
    message: str
    traceback: str
    payload: bytes | None

    @classmethod
    def capture(cls, index: int, exc: Exception) -> TaskFailure:
        """Describe ``exc``, raised by the task on ``items[index]``."""
        return cls(
            index=index,
            type_name=_qualified_name(type(exc)),
            message=_safe_str(exc),
            traceback="".join(traceback.format_exception(exc)),
            payload=_dump_exception(exc),
        )


@dataclass(frozen=True)
class ChunkResult:
    """Results of a chunk starting at ``start``: values in order, then maybe a failure.

    ``values[k]`` is the result for ``items[start + k]``; a failure, if any,
    belongs to the item right after the last value (the chunk stops there).
    """

    values: list[Any]
    failure: TaskFailure | None


def run_chunk(fn: Callable[[Any], Any], start: int, items: list[Any]) -> ChunkResult:
    """Worker entry point: run ``fn`` over a chunk, stop at the first failure.

    A Python loop is right here: each iteration is one whole task.
    """
    values: list[Any] = []
    for offset, item in enumerate(items):
        try:
            values.append(fn(item))
        except Exception as exc:
            return ChunkResult(values, TaskFailure.capture(start + offset, exc))
    return ChunkResult(values, None)


class _RemoteTraceback(Exception):  # noqa: N818 - mirrors concurrent.futures; never raised
    """Carries a worker's formatted traceback as the ``__cause__`` of a rebuilt error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


# -- helpers -------------------------------------------------------------------


class ProgressReporter:
    """Counts completed items and forwards ``(done, total)`` to a progress callback."""

    __slots__ = ("_callback", "_done", "_total")

    def __init__(self, callback: Progress | None, total: int) -> None:
        self._callback = callback
        self._done = 0
        self._total = total

    def start(self) -> None:
        """Report ``(0, total)``: a map has started."""
        if self._callback is not None:
            self._callback(0, self._total)

    def advance(self, count: int) -> None:
        """Report ``count`` more items completed successfully."""
        if count:
            self._done += count
            if self._callback is not None:
                self._callback(self._done, self._total)


def _values(pairs: Generator[tuple[int, R], None, None]) -> Generator[R, None, None]:
    with contextlib.closing(pairs):
        for _, value in pairs:
            yield value


def _emit(
    result: ChunkResult, start: int, batch: list[Any], describe: Describe | None
) -> Iterator[tuple[int, Any]]:
    for offset, value in enumerate(result.values):
        yield start + offset, value
    if result.failure is not None:
        _raise_failure(result.failure, batch, describe)


def _raise_failure(failure: TaskFailure, batch: list[Any], describe: Describe | None) -> NoReturn:
    """Re-raise a failure captured in a worker, per the module's error contract."""
    where = _where(batch, failure.index, failure.index + 1, describe)
    remote = _RemoteTraceback(failure.traceback)
    original = _load_exception(failure.payload)
    if isinstance(original, AtollError):
        original.add_note(_note(where))
        raise original from remote
    if original is not None:
        original.__cause__ = remote
    raise ExecutionError(_failure_message(where, failure.type_name, failure.message)) from (
        original if original is not None else remote
    )


def task_failed(exc: Exception, batch: list[Any], index: int, describe: Describe | None) -> None:
    """Apply the error contract to ``exc``, raised in this process by ``items[index]``.

    Call it from an ``except`` block: an :class:`AtollError` gets the note and
    is re-raised by the caller (this returns); anything else raises
    :class:`ExecutionError` from ``exc``.
    """
    where = _where(batch, index, index + 1, describe)
    if isinstance(exc, AtollError):
        exc.add_note(_note(where))
        return
    message = _failure_message(where, _qualified_name(type(exc)), _safe_str(exc))
    raise ExecutionError(message) from exc


def _note(where: str) -> str:
    return f"raised by the task on {where}"


def _failure_message(where: str, type_name: str, message: str) -> str:
    return f"task on {where} failed: {_describe_exception_name(type_name, message)}"


def _describe_exception(cls: type[BaseException], message: str) -> str:
    return _describe_exception_name(_qualified_name(cls), message)


def _describe_exception_name(type_name: str, message: str) -> str:
    return f"{type_name}: {message}" if message else type_name


def _where(batch: list[Any], start: int, end: int, describe: Describe | None) -> str:
    first = _describe_item(batch[start], describe)
    if end - start == 1:
        return f"items[{start}] ({first})"
    return f"items[{start}:{end}] (from {first})"


def _describe_item(item: Any, describe: Describe | None) -> str:
    if describe is not None:
        # Never let a faulty description hide the error being reported.
        with contextlib.suppress(Exception):
            return str(describe(item))
    return _REPR.repr(item)


def _qualified_name(cls: type[BaseException]) -> str:
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _dump_exception(exc: Exception) -> bytes | None:
    try:
        return pickle.dumps((type(exc), exc.args, dict(getattr(exc, "__dict__", {}))))
    except Exception:
        return None  # the caller falls back to type name, message and traceback text


def _load_exception(payload: bytes | None) -> Exception | None:
    if payload is None:
        return None
    try:
        # The bytes come from our own workers, the same trust as the pool's and
        # Ray's own pickled results.
        cls, args, state = pickle.loads(payload)  # noqa: S301
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            return None
        exc: Exception = cls.__new__(cls, *args)
        exc.args = tuple(args)
        exc.__dict__.update(state)
    except Exception:
        return None  # e.g. the class is not importable here
    return exc


def _positive_or_none(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value
