"""RayExecutor's own logic against a stand-in ``ray`` module (no Ray needed).

The real engine is exercised in test_executors.py; here a small synchronous
fake records how the executor drives Ray -- what it passes to ``ray.init``,
when it shuts Ray down, the usage-stats switch -- including cases a test
machine cannot produce (a cluster address, a failed connection, a missing
``ray`` package).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from atoll.errors import ConfigError, ExecutionError, InputError
from atoll.execution import RayExecutor
from atoll.execution.base import ChunkResult, run_chunk

from . import _tasks

ENV = "RAY_USAGE_STATS_ENABLED"


@dataclass(frozen=True, eq=False)  # hashed by identity, like an ObjectRef
class Ref:
    value: Any


class FakeRemote:
    def __init__(self, ray: FakeRay, fn: Callable[..., ChunkResult]) -> None:
        self._ray = ray
        self._fn = fn

    def remote(self, task: Ref, start: int, items: list[Any]) -> Ref:
        self._ray.calls.append(("remote", start))
        if self._ray.fail_get:
            return Ref(RuntimeError("worker died"))
        return Ref(self._fn(task.value, start, items))


class FakeRay(types.ModuleType):
    def __init__(self, *, initialized: bool = False, init_error: Exception | None = None) -> None:
        super().__init__("ray")
        self.initialized = initialized
        self.init_error = init_error
        self.fail_get = False
        self.calls: list[tuple[str, Any]] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs: Any) -> None:
        self.calls.append(("init", {**kwargs, "env": os.environ.get(ENV)}))
        if self.init_error is not None:
            raise self.init_error
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))
        self.initialized = False

    def remote(self, fn: Callable[..., ChunkResult]) -> FakeRemote:
        assert fn is run_chunk
        return FakeRemote(self, fn)

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 3.0}

    def put(self, value: Any) -> Ref:
        return Ref(value)

    def wait(self, refs: list[Ref], num_returns: int) -> tuple[list[Ref], list[Ref]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: Ref) -> Any:
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value

    def cancel(self, ref: Ref) -> None:
        self.calls.append(("cancel", ref))


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv(ENV, raising=False)
    return fake


def test_local_instance_is_started_privately_and_shut_down(fake_ray: FakeRay) -> None:
    with RayExecutor(num_cpus=2) as executor:
        assert executor.map(_tasks.square, range(7)) == [x * x for x in range(7)]
        assert os.environ[ENV] == "0"
    assert fake_ray.calls[0] == (
        "init",
        {
            "address": "local",
            "num_cpus": 2,
            "runtime_env": None,
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
            "env": "0",
        },
    )
    assert fake_ray.calls[-1] == ("shutdown", None)
    assert ENV not in os.environ


def test_cluster_address_and_runtime_env_are_passed(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    with RayExecutor("ray://head:10001", runtime_env={"py_modules": ["x"]}) as executor:
        assert executor.map(_tasks.square, [4]) == [16]
    _, kwargs = fake_ray.calls[0]
    assert (kwargs["address"], kwargs["num_cpus"], kwargs["runtime_env"], kwargs["env"]) == (
        "ray://head:10001",
        None,
        {"py_modules": ["x"]},
        "0",
    )
    assert os.environ[ENV] == "1", "the caller's setting is restored"


def test_existing_session_is_used_and_left_running(fake_ray: FakeRay) -> None:
    fake_ray.initialized = True
    with RayExecutor() as executor:
        assert executor.map(_tasks.square, [5]) == [25]
    assert [name for name, _ in fake_ray.calls if name != "remote"] == []
    assert fake_ray.initialized


def test_failed_connection_is_an_execution_error(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ray.init_error = ConnectionError("no route to host")
    executor = RayExecutor("10.0.0.1:6379")
    with (
        pytest.raises(ExecutionError, match=r"could not connect to the Ray cluster at '10\.0"),
        executor,
    ):
        pass
    assert not executor.running
    assert ENV not in os.environ


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'atoll\[ray\]'"), RayExecutor():
        pass


def test_errors_follow_the_common_contract(fake_ray: FakeRay) -> None:
    with RayExecutor() as executor:
        with pytest.raises(InputError) as info:
            executor.map(_tasks.bad_phone, range(4))
        assert info.value.row == 3
        assert info.value.__notes__ == ["raised by the task on items[2] (2)"]
        fake_ray.fail_get = True
        with pytest.raises(
            ExecutionError, match=r"^Ray failed to run the task on items\[0\]"
        ) as err:
            executor.map(_tasks.square, [1])
        assert isinstance(err.value.__cause__, RuntimeError)


def test_chunks_are_sized_by_cluster_cpus(fake_ray: FakeRay) -> None:
    calls: list[tuple[int, int]] = []
    with RayExecutor() as executor:
        executor.map(_tasks.square, range(24), progress=lambda d, t: calls.append((d, t)))
    # 3 CPUs -> about four chunks per CPU -> chunks of 2 items.
    assert [d for d, _ in calls] == list(range(0, 25, 2))


def test_after_a_failure_no_chunk_is_submitted_and_none_is_cancelled(fake_ray: FakeRay) -> None:
    # ray.cancel racing a task's completion can end the driver process (Ray's
    # task manager checks): chunks in flight are left to finish instead.
    with RayExecutor(num_cpus=2) as executor, pytest.raises(ExecutionError, match=r"items\[0\]"):
        executor.map(partial(_tasks.fail_if, bad=frozenset({0})), range(30))
    submitted = [start for name, start in fake_ray.calls if name == "remote"]
    assert submitted == [0, 3, 6, 9, 12, 15]  # one window of 2 x 3 CPUs, then nothing
    assert not [call for call in fake_ray.calls if call[0] == "cancel"]


def test_unstarted_executor_repr_and_validation() -> None:
    assert repr(RayExecutor(num_cpus=2)) == "RayExecutor(num_cpus=2)"
    assert repr(RayExecutor("auto")) == "RayExecutor(address='auto')"
    with pytest.raises(ConfigError, match="num_cpus must be a positive integer"):
        RayExecutor(num_cpus=0)
