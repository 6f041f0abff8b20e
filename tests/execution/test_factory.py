"""``make_executor``: the CLI's ``--executor`` names and options."""

from __future__ import annotations

import pytest

from atoll.errors import ConfigError
from atoll.execution import EXECUTOR_SPECS, LocalExecutor, RayExecutor, make_executor


def test_inline() -> None:
    executor = make_executor("inline")
    assert isinstance(executor, LocalExecutor)
    assert executor.mode == "inline"


def test_thread() -> None:
    executor = make_executor("thread", workers=3)
    assert isinstance(executor, LocalExecutor)
    assert (executor.mode, executor.workers) == ("thread", 3)


@pytest.mark.parametrize("spec", ["local", "process", " Local "])
def test_process(spec: str) -> None:
    executor = make_executor(spec, workers=3, chunksize=5)
    assert isinstance(executor, LocalExecutor)
    assert (executor.mode, executor.workers, executor.chunksize) == ("process", 3, 5)


def test_default_is_the_local_process_pool() -> None:
    executor = make_executor()
    assert isinstance(executor, LocalExecutor)
    assert executor.mode == "process"


def test_ray_is_built_without_importing_ray() -> None:
    executor = make_executor("ray", address="ray://head:10001")
    assert isinstance(executor, RayExecutor)
    assert executor.address == "ray://head:10001"
    assert not executor.running


def test_every_documented_spec_builds() -> None:
    for spec in EXECUTOR_SPECS:
        assert isinstance(make_executor(spec), LocalExecutor | RayExecutor)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("threads", {}, "executor must be one of inline, thread, local, process, ray"),
        ("local", {"mode": "inline"}, "mode are set by the executor name"),
        ("local", {"adress": "x"}, "does not take option"),
        ("inline", {"workers": 2}, "apply only to mode='thread' or 'process'"),
        ("ray", {"workers": 2}, "does not take option"),
        ("ray", {"address": "ray://h:1", "num_cpus": 2}, "num_cpus applies only to a local"),
        ("ray", {"address": " "}, "non-empty string"),
    ],
)
def test_bad_spec_or_options(spec: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_executor(spec, **options)
