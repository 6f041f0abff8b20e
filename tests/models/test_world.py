"""Done-means on the synthetic world: lift@5% of hidden seeds, GBM PU vs the logistic baseline."""

from __future__ import annotations

from atoll.models.evaluation import evaluate_holdout
from atoll.models.lookalike import LookalikeModel
from tests.models.conftest import Lookalike


def test_lift_at_5_and_gbm_beats_logistic(lookalike_world: Lookalike) -> None:
    w = lookalike_world
    results = {}
    for strategy in ("bagging", "elkan_noto", "logistic"):
        ev = evaluate_holdout(
            LookalikeModel(strategy, random_state=0), w.universe, w.seeds, truth=w.buyer
        )
        results[strategy] = ev
        cells = " ".join(
            f"@{r['k']}%: recall {r['recall']:.3f} lift {r['lift']:.2f} "
            f"true-prec {r['true_precision']:.3f};"
            for r in ev.at_k
        )
        print(
            f"\n{strategy:10s} hidden={ev.hidden_seeds} PU-AUC={ev.auc_pu:.3f} "
            f"true-AUC={ev.true_auc:.3f} base={ev.true_base_rate:.3f} {cells}"
        )
    gbm = results["bagging"]
    assert gbm.lift(5) >= 3.0
    assert gbm.recall(10) > results["logistic"].recall(10)
    assert results["elkan_noto"].lift(5) >= 3.0
    # the true precision of the top 5 % beats the base rate by the same order as the lift
    top5 = next(r for r in gbm.at_k if r["k"] == 5)
    assert top5["true_precision"] > 2.5 * gbm.true_base_rate
