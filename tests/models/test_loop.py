"""Done-means on the synthetic world: the feedback loop and the precision ladder.

(Lift@5% and GBM vs logistic are in test_world.py.)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from atoll.cli.lookalike import world_ladder
from atoll.models.feedback import (
    compare_group,
    period_outcomes,
    read_results,
    retrain,
    simulate_delivery,
    top_share,
)
from atoll.models.lookalike import LookalikeModel
from atoll.models.scoring import GroupSpec, assign_groups
from tests.models.conftest import Lookalike


def test_feedback_loop_improves_group_1(
    lookalike_world: Lookalike, fitted_bagging: LookalikeModel
) -> None:
    w = lookalike_world
    ids = w.universe["device_id"]
    model = fitted_bagging
    score = model.score(w.universe)
    group = assign_groups(score, ~w.seeds, GroupSpec.quantiles([0.01, 0.05, 0.2]))
    buys_1 = period_outcomes(ids, w.propensity, period=1, seed=11)
    results = read_results(simulate_delivery(ids, group > 0, buys_1, seed=12))
    outcomes = results.append_column("period", pa.array(np.ones(results.num_rows, np.int32)))
    seed_ids = ids.filter(pa.array(w.seeds)).combine_chunks()
    new_model, mask = retrain(model, w.universe, seed_ids, outcomes)
    new_score = new_model.score(w.universe)
    eligible = ~mask
    expected = compare_group(score, new_score, eligible, w.propensity)
    buys_2 = period_outcomes(ids, w.propensity, period=2, seed=11).astype(np.float64)
    realised = compare_group(score, new_score, eligible, buys_2)
    planted = compare_group(score, new_score, eligible, w.buyer.astype(np.float64))
    print(
        f"\nfeedback: +{int(mask.sum() - w.seeds.sum())} buyers from delivery; group 1 next-period "
        f"purchase probability {expected['previous']['rate']:.4f} → {expected['new']['rate']:.4f} "
        f"(lift {expected['lift']:.3f}); realised {realised['previous']['rate']:.4f} → "
        f"{realised['new']['rate']:.4f}; planted-buyer share {planted['previous']['rate']:.4f} → "
        f"{planted['new']['rate']:.4f}; base {expected['base_rate']:.4f}"
    )
    assert expected["new"]["rate"] > expected["previous"]["rate"]
    assert top_share(new_score, eligible, 0.01).sum() == expected["new"]["devices"]


def test_precision_ladder_on_the_world(
    lookalike_world: Lookalike, fitted_bagging: LookalikeModel
) -> None:
    w = lookalike_world
    model = fitted_bagging
    score = model.score(w.universe)
    group = assign_groups(score, ~w.seeds, GroupSpec.quantiles([0.01]))
    group1 = w.universe["device_id"].filter(pa.array(group == 1)).combine_chunks()
    ladder = world_ladder(w.world.tables, w.world.truth, group1)
    for row in ladder["steps"]:
        print(
            f"\n{row['step']:18s} devices={row['devices']} buyers={row['buyers']} "
            f"rate={row['buyer_rate']} lift_vs_all={row['lift_vs_all']}"
        )
    steps = {r["step"]: r for r in ladder["steps"]}
    assert steps["IVT-filtered"]["devices"] <= steps["all traffic"]["devices"]
    assert steps["lookalike group 1"]["narrows"] == "IVT-filtered"
    assert steps["lookalike group 1"]["buyer_rate"] > steps["demographic TA"]["buyer_rate"]
    assert steps["demographic TA"]["buyer_rate"] > steps["all traffic"]["buyer_rate"]
    assert ladder["guard"]["policy"]["min_cell_size"] == 50
