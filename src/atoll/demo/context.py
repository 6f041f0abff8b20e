"""What the demo's steps share: the world, each party's normalized tables, the outputs.

Why: ``make demo`` is one closed loop built from independent steps (matching,
insight, island, covert query, lookalike). Each step is a function
``run(ctx) -> dict[str, dict[str, Any]]`` that reads what earlier steps left in
the :class:`DemoContext`, writes its files under its own folder of ``ctx.out``,
and returns the summary sections it wants printed. A step touches only the
data its party would have; anything that crosses parties goes through a
protocol or the island, as in production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from atoll.errors import ConfigError
from atoll.ids.buckets import BucketFunction
from atoll.synth import World

__all__ = ["DemoConfig", "DemoContext", "ProgressFn", "StepFn"]

#: ``progress(step, done, total)``; total 0 means unknown.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of one demo run."""

    out: Path = Path("out/demo")
    devices: int = 50_000
    seed: int = 7
    buckets: int = 32
    executor: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.devices < 1000:
            raise ConfigError(f"demo needs at least 1000 devices, got {self.devices}")
        if not 1 <= self.buckets <= 4096:
            raise ConfigError(f"demo buckets must be in 1..4096, got {self.buckets}")


@dataclass
class DemoContext:
    """State handed from step to step.

    ``tables`` holds each party's validated tables with identifiers already
    normalized (keys as in the synthetic world: ``"brand/members"``,
    ``"brand/orders"``, ``"provider/universe"``, ``"provider/exposures"``);
    other world tables are in ``world.tables`` as generated. ``paths`` are the
    written world files. ``world.truth`` is the planted ground truth: steps may
    use it only to *grade* their results (true buyer rate, planted channel
    order), never as an input to a computation. ``artifacts`` carries results
    between steps; the keys in use are documented in the steps' modules
    (``"matched"``: the brand's matched members with the provider's tags, a
    ``pa.Table``, left by the matching step).
    """

    config: DemoConfig
    world: World
    paths: dict[str, Path]
    tables: dict[str, pa.Table]
    graph_nodes: pa.Table
    bucket_fn: BucketFunction
    progress: ProgressFn
    artifacts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, str] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        """The demo's output folder."""
        return self.config.out

    def folder(self, name: str) -> Path:
        """``out/<name>``, created."""
        path = self.config.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def executor_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`atoll.execution.make_executor` with the demo's executor."""
        return {"address": self.config.address} if self.config.executor == "ray" else {}


#: One demo step: reads the context, writes under ``ctx.out``, returns summary sections.
StepFn = Callable[[DemoContext], dict[str, dict[str, Any]]]
