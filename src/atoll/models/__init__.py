"""Lookalike "TA scoring": PU models, evaluation, scoring groups, packages, the closed loop.

Why: from a brand's first-party buyers (the seeds, matched into the
provider's universe) learn who else is likely to buy, cut the universe into
scoring groups, hand the best group to the media platform as a hashed-ID
package, and learn again from what delivery brings back
(``docs/lookalike.md``). The pieces, bottom up:

* :mod:`~atoll.models.features` — :class:`TagEncoder`, tag columns → named features;
* :mod:`~atoll.models.pu` — :class:`ElkanNotoPU`, :class:`BaggingPU` (LightGBM),
  :class:`LogisticLookalike` (baseline), all scikit-learn estimators;
* :mod:`~atoll.models.lookalike` — :class:`LookalikeModel`, table + seeds → scores;
* :mod:`~atoll.models.evaluation` — hidden-seed recall/lift@k, PU-AUC, calibration;
* :mod:`~atoll.models.scoring` / :mod:`~atoll.models.packages` — streaming
  scoring on an executor, groups 1/2/3, exclusions, hashed-ID packages;
* :mod:`~atoll.models.ladder` — the precision ladder report;
* :mod:`~atoll.models.feedback` — delivery results, retraining, lift vs the previous model;
* :mod:`~atoll.models.registry` — model directories with data manifest, metrics, lineage;
* :mod:`~atoll.models.joint` — media behaviour joined to provider tags (island job).
"""

from atoll.models.evaluation import (
    DEFAULT_KS,
    Evaluation,
    evaluate_holdout,
    evaluate_scores,
    hide_seeds,
    pu_auc,
)
from atoll.models.features import TagEncoder
from atoll.models.lookalike import STRATEGIES, LookalikeModel, make_estimator
from atoll.models.pu import BaggingPU, ElkanNotoPU, LogisticLookalike, default_gbm

__all__ = [
    "DEFAULT_KS",
    "STRATEGIES",
    "BaggingPU",
    "ElkanNotoPU",
    "Evaluation",
    "LogisticLookalike",
    "LookalikeModel",
    "TagEncoder",
    "default_gbm",
    "evaluate_holdout",
    "evaluate_scores",
    "hide_seeds",
    "make_estimator",
    "pu_auc",
]
