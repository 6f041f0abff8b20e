"""A synthetic marketing world with planted effects and the ground truth kept aside.

Why: a clean room's reports (persona/TGI, window attribution with MTA/CPO/ROI,
invalid-traffic filtering, LBS tags, lookalike scoring, media joint modelling)
cannot be checked on real customer data, whose answers nobody knows. This
package generates a provider (device universe, tags, ID edges, exposure log,
POIs and pings), a brand (members, orders) and a media platform (in-site IDs,
behaviour) from one causal model, and keeps the answers (propensities, person
links, order causes, channel lift, IVT labels, POI visits) in separate truth
tables. See ``docs/synthetic-world.md``.

This is an edge package: it may import anything below it, and nothing in
Atoll's core imports it.
"""

from __future__ import annotations

from atoll.synth.config import DEFAULT_CHANNELS, ChannelSpec, IvtConfig, WorldConfig
from atoll.synth.world import (
    TABLE_NAMES,
    TRUTH_NAMES,
    World,
    generate_world,
    load_world_tables,
    write_world,
)

__all__ = [
    "DEFAULT_CHANNELS",
    "TABLE_NAMES",
    "TRUTH_NAMES",
    "ChannelSpec",
    "IvtConfig",
    "World",
    "WorldConfig",
    "generate_world",
    "load_world_tables",
    "write_world",
]
