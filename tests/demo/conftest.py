"""A small prepared demo world (2,000 devices, inline executor) for the step tests.

``demo_ctx`` is built once per test session; a step test that mutates
``ctx.artifacts`` should copy what it needs (``fresh_ctx`` gives a private
context sharing the prepared world)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from atoll.demo import DemoConfig, DemoContext
from atoll.demo.core import DemoSummary, run_core


@pytest.fixture(scope="session")
def demo_ctx(tmp_path_factory: pytest.TempPathFactory) -> DemoContext:
    """The prepared world (steps 1–5 of the demo) at 2,000 devices."""
    out: Path = tmp_path_factory.mktemp("demo")
    config = DemoConfig(out=out, devices=2000, executor="inline", buckets=8)
    return run_core(config, DemoSummary(out=out), lambda name, done, total: None)


@pytest.fixture
def fresh_ctx(demo_ctx: DemoContext, tmp_path: Path) -> DemoContext:
    """A private copy of the prepared context writing under its own ``tmp_path``."""
    config = dataclasses.replace(demo_ctx.config, out=tmp_path)
    return dataclasses.replace(
        demo_ctx, config=config, artifacts=dict(demo_ctx.artifacts), timings={}
    )
