"""Evaluating a lookalike model when there are no true negatives.

Why: in PU data nobody is labeled "will not buy", so accuracy, precision
and the usual AUC cannot be computed. What *can* be measured (methods
reference §5.3, ``docs/lookalike.md``): hide a random share of the seeds
(default 20 %) before training — they become unlabeled like everyone else —
and ask where the model ranks them among all non-training rows:

* **recall@k%** = hidden seeds in the top k % / hidden seeds;
* **lift@k%** = recall@k% / (k/100) — 1 is random, 3 means the top k % holds
  three times its share of buyers;
* **PU-AUC** = P(score(hidden seed) > score(unlabeled row)). The unlabeled
  rows contain a share θ of buyers, so ``AUC_PU = θ/2 + (1 − θ)·AUC_true``:
  monotone in the true AUC (fine to compare models), biased towards 0.5;
* **calibration**: per score decile, the mean predicted score, the share of
  hidden seeds it captures (their decile lift), and — on the synthetic
  world — the true buyer rate, so a calibrated ``P(buyer)`` (Elkan–Noto)
  can be compared with reality;
* **true precision@k%** (synthetic world only): the share of planted buyers
  in the top k %, against the base rate.

Every metric is computed over the *candidates*: rows that are not training
seeds, i.e. exactly the rows that could end up in an audience package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from atoll.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_KS",
    "Evaluation",
    "evaluate_holdout",
    "evaluate_scores",
    "gain_curve",
    "hide_seeds",
    "pu_auc",
]

#: The k (percent of the universe) of recall@k% and lift@k%.
DEFAULT_KS = (1, 5, 10, 20)
Bool = npt.NDArray[np.bool_]
Float = npt.NDArray[np.float64]


def hide_seeds(is_seed: Bool, share: float = 0.2, *, random_state: int = 0) -> tuple[Bool, Bool]:
    """Split the seeds into ``(train_seeds, hidden_seeds)`` masks; a random ``share`` is hidden."""
    if not 0 < share < 1:
        raise ConfigError(f"hidden seed share must be in (0, 1), got {share}")
    seeds = np.flatnonzero(np.asarray(is_seed, dtype=bool))
    n_hidden = round(share * seeds.size)
    if n_hidden < 1 or n_hidden >= seeds.size:
        raise DataError(f"{seeds.size} seeds are too few to hide {share:.0%} of them")
    rng = np.random.default_rng(random_state)
    hidden_rows = rng.choice(seeds, size=n_hidden, replace=False)
    hidden = np.zeros(len(is_seed), dtype=bool)
    hidden[hidden_rows] = True
    train = np.asarray(is_seed, dtype=bool) & ~hidden
    return train, hidden


def pu_auc(score_pos: Float, score_unl: Float) -> float:
    """P(positive > unlabeled) + ½ P(tie) — the Mann–Whitney AUC of two score samples."""
    n_p, n_u = score_pos.size, score_unl.size
    if n_p == 0 or n_u == 0:
        raise DataError("AUC needs hidden seeds and unlabeled rows")
    ranks = rankdata(np.concatenate([score_pos, score_unl]))
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2) / (n_p * n_u))


def _top_counts(order_hits: Float, n: int, k: float) -> int:
    top = round(n * k / 100)
    return int(order_hits[:top].sum()) if top else 0


def gain_curve(
    score: Float, hidden: Bool, candidates: Bool, points: int = 50
) -> dict[str, list[float]]:
    """Cumulative gain (recall of hidden seeds) and lift at ``points`` universe shares."""
    s = score[candidates]
    h = hidden[candidates]
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(h[order])
    total = max(int(h.sum()), 1)
    xs = [i / points for i in range(1, points + 1)]
    gains, lifts = [], []
    for x in xs:
        top = max(1, round(x * s.size))
        recall = float(cum[top - 1]) / total
        gains.append(recall)
        lifts.append(recall / x)
    return {"share": xs, "gain": gains, "lift": lifts}


@dataclass
class Evaluation:
    """Hidden-seed metrics of one model (JSON via :meth:`to_dict`)."""

    hidden_seeds: int
    train_seeds: int
    candidates: int
    at_k: list[dict[str, Any]]
    auc_pu: float
    calibration: list[dict[str, Any]]
    gain: dict[str, list[float]]
    true_base_rate: float | None = None
    true_auc: float | None = None
    model: dict[str, Any] = field(default_factory=dict)

    def recall(self, k: float) -> float:
        """recall@k% of the hidden seeds."""
        return float(next(r["recall"] for r in self.at_k if r["k"] == k))

    def lift(self, k: float) -> float:
        """lift@k% of the hidden seeds."""
        return float(next(r["lift"] for r in self.at_k if r["k"] == k))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the formulas."""
        return {
            "hidden_seeds": self.hidden_seeds,
            "train_seeds": self.train_seeds,
            "candidates": self.candidates,
            "at_k": self.at_k,
            "auc_pu": self.auc_pu,
            "true_auc": self.true_auc,
            "true_base_rate": self.true_base_rate,
            "calibration": self.calibration,
            "gain": self.gain,
            "model": self.model,
            "formulas": {
                "recall_at_k": "hidden seeds in the top k% of candidates / hidden seeds",
                "lift_at_k": "recall@k% / (k/100); random = 1",
                "auc_pu": "P(score(hidden seed) > score(unlabeled)); AUC_PU = θ/2 + (1−θ)·AUC_true",
                "true_precision_at_k": "planted buyers in the top k% / rows in the top k%",
                "candidates": "universe rows that are not training seeds",
            },
        }


def evaluate_scores(
    score: Float,
    hidden: Bool,
    train_seeds: Bool,
    *,
    ks: Sequence[float] = DEFAULT_KS,
    truth: Bool | None = None,
    bins: int = 10,
) -> Evaluation:
    """Metrics of ``score`` for the ``hidden`` seeds among the non-training rows.

    ``truth`` (synthetic world) marks the planted buyers: adds true
    precision@k, the base rate, the true AUC and the true rate per decile.
    """
    score = np.asarray(score, dtype=np.float64)
    candidates = ~np.asarray(train_seeds, dtype=bool)
    hidden = np.asarray(hidden, dtype=bool)
    if (hidden & ~candidates).any():
        raise ConfigError("a hidden seed is also a training seed")
    n = int(candidates.sum())
    s = score[candidates]
    h = hidden[candidates]
    t = None if truth is None else np.asarray(truth, dtype=bool)[candidates]
    n_hidden = int(h.sum())
    if n_hidden == 0:
        raise DataError("no hidden seeds to evaluate on")
    order = np.argsort(-s, kind="stable")
    h_sorted = h[order].astype(np.float64)
    t_sorted = None if t is None else t[order].astype(np.float64)
    base_rate = None if t is None else float(t.mean())
    at_k = []
    for k in ks:
        top = round(n * k / 100)
        recall = _top_counts(h_sorted, n, k) / n_hidden
        row: dict[str, Any] = {"k": k, "rows": top, "recall": recall, "lift": recall / (k / 100)}
        if t_sorted is not None and top:
            precision = float(t_sorted[:top].mean())
            row["true_precision"] = precision
            row["true_lift"] = precision / base_rate if base_rate else None
        at_k.append(row)
    calibration = []
    edges = np.linspace(0, n, bins + 1).astype(np.int64)
    for b in range(bins):
        lo, hi = int(edges[b]), int(edges[b + 1])
        part = order[lo:hi]
        entry: dict[str, Any] = {
            "decile": b + 1,
            "rows": hi - lo,
            "mean_score": float(s[part].mean()) if hi > lo else None,
            "hidden_share": float(h[part].sum()) / n_hidden,
            "hidden_lift": (float(h[part].sum()) / n_hidden) / ((hi - lo) / n) if hi > lo else None,
        }
        if t is not None and hi > lo:
            entry["true_rate"] = float(t[part].mean())
        calibration.append(entry)
    true_auc = None
    if t is not None and t.any() and not t.all():
        true_auc = pu_auc(s[t], s[~t])
    return Evaluation(
        hidden_seeds=n_hidden,
        train_seeds=int((~candidates).sum()),
        candidates=n,
        at_k=at_k,
        auc_pu=pu_auc(s[h], s[~h]),
        calibration=calibration,
        gain=gain_curve(score, hidden, candidates),
        true_base_rate=base_rate,
        true_auc=true_auc,
    )


def evaluate_holdout(
    model: Any,
    table: Any,
    is_seed: Any,
    *,
    share: float = 0.2,
    random_state: int = 0,
    truth: Bool | None = None,
    ks: Sequence[float] = DEFAULT_KS,
) -> Evaluation:
    """Hide ``share`` of the seeds, fit a fresh copy of ``model`` on the rest, evaluate.

    ``model`` is a :class:`~atoll.models.lookalike.LookalikeModel` (its
    :meth:`clone` is fitted; ``model`` itself is left untouched).
    """
    mask = np.asarray(
        is_seed.to_numpy(zero_copy_only=False) if hasattr(is_seed, "to_numpy") else is_seed,
        dtype=bool,
    )
    train, hidden = hide_seeds(mask, share, random_state=random_state)
    fresh = model.clone()
    fresh.fit(table, train)
    result = evaluate_scores(fresh.score(table), hidden, train, ks=ks, truth=truth)
    result.model = fresh.info()
    return result
