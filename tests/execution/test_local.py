"""The local engine's own contract: lifetime, validation, chunking, worker crashes."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from functools import partial

import psutil
import pytest

from atoll.errors import ConfigError, ExecutionError
from atoll.execution import LocalExecutor, default_workers

from . import _tasks


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalExecutor]:
    with LocalExecutor(workers=2) as executor:
        yield executor


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


# -- lifetime ---------------------------------------------------------------------


def test_use_outside_the_with_block_is_an_error() -> None:
    executor = LocalExecutor(mode="inline")
    with pytest.raises(ExecutionError, match="not running"):
        executor.map(_tasks.square, [1])
    with pytest.raises(ExecutionError, match="not running"):
        executor.imap(_tasks.square, [1])  # eager: raises before the first next()
    with executor:
        assert executor.running
        assert executor.map(_tasks.square, [2]) == [4]
    assert not executor.running
    with pytest.raises(ExecutionError, match="not running"):
        executor.map(_tasks.square, [1])


def test_not_reentrant_but_reusable() -> None:
    executor = LocalExecutor(mode="inline")
    with executor:
        with pytest.raises(ExecutionError, match="not re-entrant"):
            executor.__enter__()
        assert executor.running
    with executor:
        assert executor.map(_tasks.square, [3]) == [9]


def test_stream_consumed_after_exit_is_an_error() -> None:
    with LocalExecutor(mode="inline") as executor:
        stream = executor.imap(_tasks.square, range(5))
        assert next(stream) == 0
    with pytest.raises(ExecutionError, match="closed while results were still being consumed"):
        next(stream)


def test_workers_are_gone_after_exit() -> None:
    with LocalExecutor(workers=2) as executor:
        pids = set(executor.map(_tasks.worker_pid, range(8)))
        assert pids
        assert all(psutil.pid_exists(pid) for pid in pids)
    assert not executor.running
    assert all(_gone(pid) for pid in pids)


def test_worker_crash_names_the_items_and_chains_the_pool_error() -> None:
    with LocalExecutor(workers=1, chunksize=2) as executor:
        with pytest.raises(ExecutionError) as info:
            executor.map(_tasks.crash, range(6))
        message = str(info.value)
        # A dying worker breaks the whole pool: every chunk still in flight fails
        # with it, and which of them is collected first is up to the scheduler.
        assert re.match(
            r"the process pool failed to run the task on items\[(2:4|4:6)\] \(from [24]\)", message
        ), message
        assert isinstance(info.value.__cause__, BrokenProcessPool)
        # The pool is broken now; later maps say so instead of leaking a pool error.
        with pytest.raises(ExecutionError, match=r"could not accept the task on items\[0:2\]"):
            executor.map(_tasks.square, range(4))


def test_inline_runs_in_order_in_the_calling_thread() -> None:
    calls: list[int] = []

    def record(x: int) -> int:  # a closure: fine inline, never leaves this process
        calls.append(x)
        return -x

    with LocalExecutor(mode="inline") as executor:
        assert list(executor.map_unordered(record, [3, 1, 2])) == [(0, -3), (1, -1), (2, -2)]
    assert calls == [3, 1, 2]


def test_thread_mode_runs_closures_on_pool_threads_at_once() -> None:
    """Two tasks wait for each other: they can only finish if they run at the same time."""
    both = threading.Barrier(2, timeout=10)
    names: list[str] = []

    def meet(x: int) -> int:  # a closure over local state: never pickled in thread mode
        names.append(threading.current_thread().name)
        both.wait()
        return x * 10

    with LocalExecutor(workers=2, mode="thread", chunksize=1) as executor:
        assert repr(executor) == "LocalExecutor(workers=2, mode='thread')"
        assert executor.map(meet, [1, 2]) == [10, 20]
    assert len(names) == 2
    assert all(name.startswith("atoll-local") for name in names)
    assert threading.current_thread().name not in names


def test_inline_stops_at_the_first_failure() -> None:
    calls: list[int] = []

    def record(x: int) -> int:
        calls.append(x)
        if x == 2:
            raise KeyError(x)
        return x

    with LocalExecutor(mode="inline") as executor, pytest.raises(ExecutionError) as info:
        executor.map(record, range(5))
    assert calls == [0, 1, 2]
    assert str(info.value) == "task on items[2] (2) failed: KeyError: 2"


# -- chunking and windowing ---------------------------------------------------------


def test_chunks_report_progress_per_chunk(
    pool: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "chunksize", 3)
    calls: list[tuple[int, int]] = []
    assert pool.map(_tasks.square, range(10), progress=lambda d, t: calls.append((d, t))) == [
        x * x for x in range(10)
    ]
    steps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert sorted(steps) == [1, 3, 3, 3]
    assert calls[-1] == (10, 10)


def test_failure_inside_a_chunk_is_named_exactly(
    pool: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "chunksize", 4)
    fn = partial(_tasks.fail_if, bad=frozenset({5}))
    seen: list[int] = []
    with pytest.raises(ExecutionError, match=r"^task on items\[5\] \(5\)"):
        seen.extend(pool.imap(fn, range(12)))
    assert seen == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("ordered", [True, False])
def test_window_of_one_chunk_still_completes(
    pool: LocalExecutor, monkeypatch: pytest.MonkeyPatch, ordered: bool
) -> None:
    monkeypatch.setattr(pool, "max_in_flight", 1)
    monkeypatch.setattr(pool, "chunksize", 1)
    items = [(x, 0.01 if x % 3 == 0 else 0.0) for x in range(9)]
    if ordered:
        assert pool.map(_tasks.square_after, items) == [x * x for x in range(9)]
    else:
        pairs = sorted(pool.map_unordered(_tasks.square_after, items))
        assert pairs == [(x, x * x) for x in range(9)]


def test_window_bounds_work_submitted_ahead_of_the_consumer(
    pool: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "max_in_flight", 2)
    monkeypatch.setattr(pool, "chunksize", 1)
    submitted: list[int] = []
    original = pool._submit

    def spy(task: object, start: int, items: list[object]) -> object:
        submitted.append(start)
        return original(task, start, items)

    monkeypatch.setattr(pool, "_submit", spy)
    stream = pool.imap(_tasks.square, range(10))
    assert next(stream) == 0
    time.sleep(0.05)
    assert len(submitted) <= 2
    assert list(stream) == [x * x for x in range(1, 10)]
    assert submitted == list(range(10))


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be a positive integer"),
        ({"workers": True}, "workers must be a positive integer"),
        ({"workers": 2.5}, "workers must be a positive integer"),
        ({"chunksize": 0}, "chunksize must be a positive integer"),
        ({"max_in_flight": -1}, "max_in_flight must be a positive integer"),
        ({"mode": "threads"}, "mode must be 'inline', 'thread' or 'process'"),
        ({"mode": "inline", "workers": 2}, "workers apply only to mode='thread' or 'process'"),
        ({"mode": "inline", "chunksize": 2}, "chunksize apply only to mode='thread' or 'process'"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LocalExecutor(**kwargs)  # type: ignore[arg-type]


def test_non_callable_task_is_a_config_error() -> None:
    with LocalExecutor(mode="inline") as executor, pytest.raises(ConfigError, match="callable"):
        executor.map(42, [1])  # type: ignore[arg-type]


def test_defaults() -> None:
    assert LocalExecutor().workers == default_workers() >= 1
    assert LocalExecutor().mode == "process"
    assert LocalExecutor(mode="inline").workers == 1
    assert repr(LocalExecutor(3)) == "LocalExecutor(workers=3, mode='process')"
    assert repr(LocalExecutor(mode="inline")) == "LocalExecutor(mode='inline')"
