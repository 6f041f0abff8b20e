"""The precision ladder: audiences of increasing precision, with size and buyer rate.

Why: the deck sells targeting as a ladder (``../shared/seed/README.md`` §4):
all traffic → after invalid-traffic filtering → demographic TA → interest
tags → LBS → lookalike group 1. Each rung is smaller and (one hopes) denser
in buyers; the report shows, for one campaign, *where each step pays off*:
its size, its buyer rate and its lift over the previous rung and over all
traffic. On the synthetic world the buyer rate is the true one (planted
buyers); on real data it is the rate of a measured outcome (e.g. next
period's purchasers from delivery results).

The ladder is generic: each :class:`LadderStep` is a named set of device IDs
and the rung it narrows (``within``; default the previous rung). Building
the rungs — IVT filtering (:mod:`atoll.analytics.ivt`), demographic and
interest tags, LBS visits (:mod:`atoll.analytics.lbs`), lookalike groups —
happens in the layer that may import them all (the CLI and the demo, see
``atoll.cli.lookalike.world_ladder``). Counts go through the output guard:
a rung with fewer than k buyers shows its buyer count withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError
from atoll.privacy import Guard

__all__ = ["LadderStep", "precision_ladder"]


@dataclass(frozen=True)
class LadderStep:
    """One rung: a name, its device IDs, and the rung it narrows (``None``: the previous one)."""

    name: str
    devices: pa.Array
    within: str | None = None
    description: str = ""


def _ids(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.unique(pc.drop_null(arr.cast(pa.string())))


def precision_ladder(
    steps: Sequence[LadderStep],
    buyers: pa.Array | pa.ChunkedArray | None,
    *,
    guard: Guard | None = None,
) -> dict[str, Any]:
    """Size, buyers, buyer rate and lifts of each rung (guarded).

    The first step is the base ("all traffic"); every later rung is
    intersected with the rung it narrows. ``buyers``: device IDs of the
    buyers (``None``: sizes only).
    """
    if not steps:
        raise ConfigError("the ladder needs at least one step")
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ConfigError("ladder step names must be distinct")
    buyer_set = None if buyers is None else _ids(buyers)
    audiences: dict[str, pa.Array] = {}
    rows: list[dict[str, Any]] = []
    previous: str | None = None
    for step in steps:
        ids = _ids(step.devices)
        parent = step.within if step.within is not None else previous
        if parent is not None:
            if parent not in audiences:
                raise ConfigError(f"ladder step {step.name!r} narrows unknown step {parent!r}")
            ids = ids.filter(pc.is_in(ids, value_set=audiences[parent]))
        audiences[step.name] = ids
        hits = (
            None
            if buyer_set is None
            else int(pc.sum(pc.is_in(ids, value_set=buyer_set)).as_py() or 0)
        )
        rows.append(
            {
                "step": step.name,
                "narrows": parent,
                "description": step.description,
                "devices": len(ids),
                "buyers": hits,
            }
        )
        previous = step.name
    table = pa.table(
        {
            "step": pa.array([r["step"] for r in rows], pa.string()),
            "devices": pa.array([r["devices"] for r in rows], pa.int64()),
            "buyers": pa.array([r["buyers"] or 0 for r in rows], pa.int64()),
        }
    )
    released = (guard or Guard()).apply(
        table,
        counts=["buyers", "devices"],
        threshold="buyers",
        key=["step"],
        what="precision ladder",
    )
    out_rows = []
    guarded = released.table.to_pylist()
    rate_of: dict[str, float | None] = {}
    base_rate: float | None = None
    for r, g in zip(rows, guarded, strict=True):
        buyers_shown = None if buyer_set is None else g["buyers"]
        rate = buyers_shown / g["devices"] if buyers_shown is not None and g["devices"] else None
        if base_rate is None and r is rows[0]:
            base_rate = rate
        parent_rate = rate_of.get(r["narrows"]) if r["narrows"] else None
        out_rows.append(
            {
                **r,
                "devices": g["devices"],
                "buyers": buyers_shown,
                "buyer_rate": rate,
                "lift_vs_all": rate / base_rate if rate is not None and base_rate else None,
                "lift_vs_narrowed": rate / parent_rate
                if rate is not None and parent_rate
                else None,
                "suppression_reason": g["suppression_reason"],
            }
        )
        rate_of[r["step"]] = rate
    return {
        "steps": out_rows,
        "guard": released.summary(),
        "formulas": {
            "buyer_rate": "buyers in the rung / devices in the rung",
            "lift_vs_all": "buyer rate / buyer rate of the first rung",
            "lift_vs_narrowed": "buyer rate / buyer rate of the rung it narrows",
        },
    }
