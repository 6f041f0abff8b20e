"""The island job ``lookalike_joint``: joint lookalike modeling inside the island.

Why here: a media platform's behaviour rows and the provider's tags may only
meet where both are plaintext under attestation, so the model trains in the
island and only guarded outputs leave (:mod:`atoll.models.joint` is the
computation on Arrow tables). The island imports this module on first use
(:func:`atoll.island.runner.computations`), so the job is available to every
island -- whether started from the CLI, the demo or a library call -- without
every island paying LightGBM's import when it never trains.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError
from atoll.ids.mapping import MappingConfig, build_id_graph
from atoll.island.runner import ComputationResult, JobContext, register_computation
from atoll.models.joint import joint_lookalike
from atoll.models.seeds import KNOWN_KINDS, match_seeds

__all__ = ["joint_job"]


@register_computation("lookalike_joint")
def joint_job(ctx: JobContext) -> ComputationResult:
    """Island job: inputs ``universe``, ``seeds``, ``media_users``, ``behaviour``, opt. ``edges``.

    ``[params]``: ``seed_column`` (default ``device_id``), ``groups`` (default
    ``[0.01, 0.05, 0.2]``). Aggregate: devices per group (guarded by the
    island); rows (``device_id, group``; only with ``row_level = true``).
    """
    for name in ("universe", "seeds", "media_users", "behaviour"):
        if name not in ctx.inputs:
            raise ConfigError(f"lookalike_joint needs an input named {name!r}")
    universe = ctx.inputs["universe"].read_all()
    seeds = ctx.inputs["seeds"].read_all()
    column = str(ctx.params.get("seed_column", "device_id"))
    if column not in seeds.column_names or column not in universe.column_names:
        raise ConfigError(f"params.seed_column {column!r} must be a column of seeds and universe")
    mask, _ = match_seeds(
        universe,
        seeds[column].combine_chunks(),
        universe_column=column,
        kind=column if column in KNOWN_KINDS else None,
    )
    seed_ids = universe["device_id"].filter(pa.array(mask)).combine_chunks()
    graph = None
    if "edges" in ctx.inputs:
        graph = build_id_graph(
            ctx.inputs["edges"].read_all(), MappingConfig(), source="input edges"
        )
    bounds = ctx.params.get("groups", [0.01, 0.05, 0.2])
    result = joint_lookalike(
        universe,
        seed_ids,
        ctx.inputs["media_users"].read_all(),
        ctx.inputs["behaviour"].read_all(),
        graph=graph,
        groups=[float(b) for b in bounds],
    )
    ctx.notes["lookalike"] = {k: result.metrics[k] for k in ("hidden_seeds", "auc_pu", "at_k")}
    rows = result.scores.filter(pc.greater(result.scores["group"], 0)).select(
        ["device_id", "group"]
    )
    return ComputationResult(
        aggregate=result.aggregate, counts=("devices",), key=("group",), rows=rows
    )
