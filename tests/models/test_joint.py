"""Joint modeling: media behaviour through the ID graph, and the island job hook."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from atoll.ids.mapping import build_id_graph
from atoll.island.lookalike_job import joint_job
from atoll.models.joint import media_features
from tests.models.conftest import Lookalike


@dataclass
class _Input:
    table: pa.Table

    def read_all(self) -> pa.Table:
        return self.table


@dataclass
class _Ctx:
    inputs: dict[str, Any]
    params: dict[str, Any]
    notes: dict[str, Any]


def test_graph_carries_media_features_to_every_device_of_a_person(
    lookalike_world: Lookalike,
) -> None:
    w = lookalike_world.world
    universe = w.tables["provider/universe"]
    graph = build_id_graph(w.tables["provider/edges"])
    direct = media_features(w.tables["media/users"], w.tables["media/behaviour"])
    via = media_features(
        w.tables["media/users"],
        w.tables["media/behaviour"],
        graph=graph,
        device_ids=universe["device_id"],
    )
    assert via.num_rows > direct.num_rows  # other devices of the same persons
    assert pc.sum(via["media_events"]).as_py() >= pc.sum(direct["media_events"]).as_py()


def test_island_job_returns_guarded_aggregate_and_group_rows(lookalike_world: Lookalike) -> None:
    w = lookalike_world.world
    universe = w.tables["provider/universe"]
    seeds = pa.table({"phone": lookalike_world.buyer_phones})
    ctx = _Ctx(
        inputs={
            "universe": _Input(universe),
            "seeds": _Input(seeds),
            "media_users": _Input(w.tables["media/users"]),
            "behaviour": _Input(w.tables["media/behaviour"]),
        },
        params={"seed_column": "phone", "groups": [0.01, 0.05]},
        notes={},
    )
    result = joint_job(ctx)  # type: ignore[arg-type]
    assert result.aggregate["group"].to_pylist() == ["group 1", "group 2"]
    assert result.counts == ("devices",)
    assert result.rows is not None
    assert set(result.rows.column_names) == {"device_id", "group"}
    assert ctx.notes["lookalike"]["hidden_seeds"] > 0
    seed_devices = universe.filter(
        pc.fill_null(pc.is_in(universe["phone"], value_set=lookalike_world.buyer_phones), False)
    )["device_id"]
    assert not pc.any(pc.is_in(result.rows["device_id"], value_set=seed_devices)).as_py()


def test_every_island_knows_the_joint_job_without_the_cli() -> None:
    # An island started from a library call (not the CLI) must know the job,
    # and an island that never trains must not pay LightGBM's import.
    code = (
        "import sys\n"
        "from atoll.island.runner import computation, computation_names\n"
        "names = set(computation_names())\n"
        "wanted = {'match', 'tag_augmentation', 'persona', 'attribution', 'lookalike_joint'}\n"
        "assert wanted <= names, names\n"
        "computation('persona'), computation('attribution')\n"
        "assert 'lightgbm' not in sys.modules\n"
        "computation('lookalike_joint')\n"
        "assert 'lightgbm' in sys.modules\n"
        "assert not any(m.startswith('atoll.cli') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
