"""A small synthetic world shared by the lookalike tests (50k devices, ~3 s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from atoll.models.joint import join_features, media_features
from atoll.models.lookalike import LookalikeModel
from atoll.synth import WorldConfig, generate_world
from atoll.synth.world import World


@dataclass
class Lookalike:
    """The world, its universe with media features, seed mask, truth."""

    world: World
    universe: pa.Table
    seeds: np.ndarray[Any, Any]
    buyer: np.ndarray[Any, Any]
    propensity: np.ndarray[Any, Any]
    buyer_phones: pa.Array


def buyer_phones(world: World) -> pa.Array:
    """Phones of the brand's buyers (orders by phone, or by member id → member phone)."""
    orders, members = world.tables["brand/orders"], world.tables["brand/members"]
    by_member = members.filter(
        pc.is_in(members["member_id"], value_set=pc.drop_null(orders["member_id"]).combine_chunks())
    )["phone"]
    phones = pa.concat_arrays(
        [pc.drop_null(orders["phone"]).combine_chunks(), pc.drop_null(by_member).combine_chunks()]
    )
    return pc.unique(phones)


@pytest.fixture(scope="session")
def lookalike_world() -> Lookalike:
    world = generate_world(WorldConfig(devices=50_000, seed=7))
    universe = world.tables["provider/universe"]
    feats = media_features(world.tables["media/users"], world.tables["media/behaviour"])
    table = join_features(universe, feats)
    phones = buyer_phones(world)
    seeds = np.asarray(
        pc.fill_null(pc.is_in(universe["phone"], value_set=phones), False).to_numpy(
            zero_copy_only=False
        ),
        dtype=bool,
    )
    truth = world.truth["propensity"]
    idx = pc.index_in(universe["device_id"], value_set=truth["device_id"])
    buyer = np.asarray(truth["is_planted_buyer"].take(idx).to_numpy(zero_copy_only=False), bool)
    prop = np.asarray(truth["propensity"].take(idx).to_numpy(zero_copy_only=False), np.float64)
    return Lookalike(world, table, seeds, buyer, prop, phones)


@pytest.fixture(scope="session")
def fitted_bagging(lookalike_world: Lookalike) -> LookalikeModel:
    """The default model fitted on all seeds of the shared world."""
    w = lookalike_world
    return LookalikeModel("bagging", random_state=0).fit(w.universe, w.seeds)
