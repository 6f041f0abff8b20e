"""Every engine gives the same results and the same errors.

The process pool and Ray are started once for this module (Ray start-up
costs seconds); the inline engine is cheap and made per test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError, DecryptionError, ExecutionError, InputError
from atoll.execution import Executor, LocalExecutor, RayExecutor

from . import _tasks

ENGINES = ["inline", "thread", "process", pytest.param("ray", marks=pytest.mark.ray)]


@pytest.fixture(scope="module")
def thread_executor() -> Iterator[LocalExecutor]:
    with LocalExecutor(workers=2, mode="thread") as executor:
        yield executor


@pytest.fixture(scope="module")
def process_executor() -> Iterator[LocalExecutor]:
    with LocalExecutor(workers=2, mode="process") as executor:
        yield executor


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[RayExecutor]:
    ray = pytest.importorskip("ray")
    started = time.perf_counter()
    # Ray workers import task modules by name; make `tests` importable for them
    # whatever the directory pytest was started from.
    runtime_env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}}
    with RayExecutor(num_cpus=2, runtime_env=runtime_env) as executor:
        print(f"ray.init took {time.perf_counter() - started:.1f} s")
        yield executor
    assert not ray.is_initialized(), "the executor started Ray, so it must shut it down"


@pytest.fixture(params=ENGINES)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    if request.param == "inline":
        with LocalExecutor(mode="inline") as inline:
            yield inline
    else:
        yield request.getfixturevalue(f"{request.param}_executor")


def _is_inline(executor: Executor) -> bool:
    return isinstance(executor, LocalExecutor) and executor.mode == "inline"


def _in_process(executor: Executor) -> bool:
    """Tasks and items stay in this process (nothing is pickled): inline and thread modes."""
    return isinstance(executor, LocalExecutor) and executor.mode in ("inline", "thread")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


# -- results -------------------------------------------------------------------


def test_map_matches_builtin_map(executor: Executor) -> None:
    assert executor.map(_tasks.square, range(50)) == [x * x for x in range(50)]


def test_generator_input(executor: Executor) -> None:
    assert executor.map(_tasks.square, (x for x in range(5))) == [0, 1, 4, 9, 16]


def test_order_is_input_order_when_completion_order_differs(executor: Executor) -> None:
    # Early items sleep longest, so later chunks complete first on pooled engines.
    items = [(x, 0.03 if x < 4 else 0.0) for x in range(16)]
    expected = [x * x for x in range(16)]
    assert executor.map(_tasks.square_after, items) == expected
    assert list(executor.imap(_tasks.square_after, items)) == expected
    pairs = list(executor.map_unordered(_tasks.square_after, items))
    assert sorted(pairs) == list(enumerate(expected))


def test_empty_input(executor: Executor) -> None:
    progress = Recorder()
    assert executor.map(_tasks.square, [], progress=progress) == []
    assert list(executor.map_unordered(_tasks.square, [])) == []
    assert progress.calls == [(0, 0)]


def test_progress_counts_every_item(executor: Executor) -> None:
    progress = Recorder()
    executor.map(_tasks.square, range(37), progress=progress)
    assert progress.calls[0] == (0, 37)
    assert progress.calls[-1] == (37, 37)
    done = [d for d, _ in progress.calls]
    assert done == sorted(done)
    assert len(set(done)) == len(done), "each call reports new progress"
    assert {t for _, t in progress.calls} == {37}


def test_bucketed_sum_is_identical_on_every_engine(
    executor: Executor, bucketed: tuple[pa.Table, list[str]]
) -> None:
    table, paths = bucketed
    partials = executor.map(_tasks.bucket_stats, paths)
    assert len(partials) == len(paths)
    rows, amount, distinct = (sum(column) for column in zip(*partials, strict=True))
    assert rows == table.num_rows
    assert amount == pc.sum(table["amount"]).as_py()
    # Buckets partition the ids, so distinct counts are additive.
    assert distinct == len(pc.unique(table["id"]))
    assert all(part[0] > 0 for part in partials)
    unordered = dict(executor.map_unordered(_tasks.bucket_stats, paths))
    assert [unordered[i] for i in range(len(paths))] == partials


def test_bucketed_dataset_profile_is_identical_on_every_engine(
    executor: Executor, tmp_path: Path
) -> None:
    """A real BucketedDataset, the demo's per-bucket task: local == process == Ray."""
    from atoll.data.datasets import BucketedDataset
    from atoll.demo import bucket_profile

    ids = [f"138{n % 700:08d}" for n in range(2000)]
    table = pa.table({"phone": ids, "n": list(range(2000))})
    dataset = BucketedDataset.write(table, tmp_path / "ds", id_column="phone", buckets=16)
    tasks = [(str(dataset.path), b, "phone") for b in dataset.buckets()]
    parts = executor.map(bucket_profile, tasks)
    expected = [
        {"rows": t.num_rows, "distinct_ids": len(pc.unique(t["phone"]))}
        for _, t in dataset.iter_buckets()
    ]
    assert parts == expected
    assert sum(p["rows"] for p in parts) == 2000
    assert sum(p["distinct_ids"] for p in parts) == 700


# -- errors --------------------------------------------------------------------


def test_task_error_names_the_item_and_chains_the_original(executor: Executor) -> None:
    fn = partial(_tasks.fail_if, bad=frozenset({7}))
    with pytest.raises(ExecutionError) as info:
        executor.map(fn, range(20))
    assert str(info.value) == "task on items[7] (7) failed: ValueError: bad item 7"
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "bad item 7"
    if not _is_inline(executor):
        # The worker's traceback travels as the cause of the rebuilt exception.
        assert "bad item 7" in str(cause.__cause__)
        assert "fail_if" in str(cause.__cause__)


def test_imap_yields_up_to_the_failing_item(executor: Executor) -> None:
    fn = partial(_tasks.fail_if, bad=frozenset({5}))
    seen: list[int] = []
    with pytest.raises(ExecutionError, match=r"items\[5\]"):
        seen.extend(executor.imap(fn, range(12)))
    assert seen == [x * x for x in range(5)]


def test_first_failing_item_in_input_order_is_reported(executor: Executor) -> None:
    fn = partial(_tasks.fail_if, bad=frozenset({3, 11}))
    with pytest.raises(ExecutionError, match=r"^task on items\[3\] \(3\) failed"):
        executor.map(fn, range(16))
    with pytest.raises(ExecutionError, match=r"^task on items\[(3|11)\]"):
        list(executor.map_unordered(fn, range(16)))


def test_describe_names_the_item(executor: Executor) -> None:
    fn = partial(_tasks.fail_if, bad=frozenset({7}))
    with pytest.raises(ExecutionError, match=r"items\[7\] \(bucket 0007\)"):
        executor.map(fn, range(9), describe=lambda x: f"bucket {x:04d}")


def test_atoll_error_keeps_its_class_and_fields(executor: Executor) -> None:
    with pytest.raises(InputError) as info:
        executor.map(_tasks.bad_phone, range(5))
    err = info.value
    assert type(err) is InputError
    assert (err.source, err.row, err.column, err.reason) == (
        "orders.csv",
        3,
        "phone",
        "not a phone number",
    )
    assert str(err) == "orders.csv row 3, column 'phone': not a phone number"
    assert err.__notes__ == ["raised by the task on items[2] (2)"]


def test_error_without_constructor_arguments_keeps_its_class(executor: Executor) -> None:
    with pytest.raises(DecryptionError) as info:
        executor.map(_tasks.cannot_decrypt, range(3))
    assert str(info.value) == "decryption failed"
    assert info.value.__notes__ == ["raised by the task on items[1] (1)"]


def test_nested_execution_error_keeps_its_class(executor: Executor) -> None:
    with pytest.raises(ExecutionError) as info:
        executor.map(_tasks.sum_with_nested_inline, [2, 3])
    assert str(info.value) == "task on items[2] (2) failed: ValueError: bad item 2"
    assert info.value.__notes__[-1] == "raised by the task on items[1] (3)"


def test_exception_that_cannot_travel_still_names_type_and_item(executor: Executor) -> None:
    with pytest.raises(ExecutionError) as info:
        executor.map(_tasks.raise_locked, range(3))
    assert str(info.value) == (
        "task on items[1] (1) failed: tests.execution._tasks.LockedError: holds a lock"
    )
    cause = info.value.__cause__
    if _is_inline(executor):
        assert isinstance(cause, _tasks.LockedError)
    else:  # only the worker's traceback could travel
        assert "LockedError: holds a lock" in str(cause)


def test_lambda_tasks_run_in_process_only(executor: Executor) -> None:
    if _in_process(executor):
        assert executor.map(lambda x: x + 1, [1, 2]) == [2, 3]
        return
    with pytest.raises(ConfigError, match="module-level functions"):
        executor.map(lambda x: x + 1, [1, 2])


def test_item_that_cannot_travel_is_named(executor: Executor) -> None:
    items: list[object] = [1, threading.Lock(), 3]
    if _in_process(executor):
        assert executor.map(_tasks.identity, items) == items
        return
    with pytest.raises(ExecutionError, match=r"task on items\[1\] \(<unlocked _thread.lock"):
        executor.map(_tasks.identity, items)


def test_executor_stays_usable_after_a_failure(executor: Executor) -> None:
    fn = partial(_tasks.fail_if, bad=frozenset({0}))
    with pytest.raises(ExecutionError):
        executor.map(fn, range(30))
    assert executor.map(_tasks.square, range(6)) == [0, 1, 4, 9, 16, 25]


def test_abandoned_stream_does_not_disturb_the_executor(executor: Executor) -> None:
    stream = executor.imap(_tasks.square_after, [(x, 0.01) for x in range(20)])
    assert next(stream) == 0
    stream.close()
    assert executor.map(_tasks.square, range(4)) == [0, 1, 4, 9]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    items=st.lists(st.integers(-50, 50), max_size=25),
    bad=st.frozensets(st.integers(-50, 50), max_size=3),
)
def test_matches_a_plain_loop(executor: Executor, items: list[int], bad: frozenset[int]) -> None:
    fn = partial(_tasks.fail_if, bad=bad)
    failing = [i for i, x in enumerate(items) if x in bad]
    if not failing:
        assert executor.map(fn, items) == [x * x for x in items]
        return
    first = failing[0]
    with pytest.raises(ExecutionError) as info:
        executor.map(fn, items)
    assert str(info.value).startswith(f"task on items[{first}] ({items[first]}) failed")


# -- Ray-specific -------------------------------------------------------------------


@pytest.mark.ray
def test_ray_session_owned_by_someone_else_is_left_running(ray_executor: RayExecutor) -> None:
    import ray

    with RayExecutor() as guest:
        assert guest.map(_tasks.square, range(5)) == [0, 1, 4, 9, 16]
    assert ray.is_initialized()
    assert ray_executor.map(_tasks.square, [3]) == [9]
