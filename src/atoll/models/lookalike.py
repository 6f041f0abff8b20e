"""The lookalike model: tag encoding + a PU strategy, trained on seeds in a universe table.

Why: users think in *tables and seeds* ("these devices are my buyers; score
the universe"), the estimators in :mod:`atoll.models.pu` think in matrices
and labels. :class:`LookalikeModel` is the thin bridge: a scikit-learn
:class:`~sklearn.pipeline.Pipeline` of :class:`~atoll.models.features.TagEncoder`
and one PU strategy, fitted from ``(table, is_seed)``, scoring tables part by
part, with feature importance in the tags' own names and a JSON state for
the model registry (:mod:`atoll.models.registry`).

Strategies (``strategy=``): ``"bagging"`` (default — the best ranking on
the synthetic world, see ``docs/lookalike.md``), ``"elkan_noto"`` (the one
with calibrated ``P(buyer)`` and a class-prior estimate, needed for
expected-conversion thresholds) and ``"logistic"`` (the baseline).

Warm start: ``fit(..., warm_start=True)`` on a fitted model keeps the
encoder's vocabulary (so feature columns line up) and continues each
LightGBM booster with new trees on the new labels — the closed loop's
retraining (:mod:`atoll.models.feedback`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from atoll.errors import ConfigError, DataError
from atoll.models.features import TagEncoder, as_table
from atoll.models.pu import (
    BaggingPU,
    ElkanNotoPU,
    LogisticLookalike,
    default_gbm,
    estimator_from_state,
)

__all__ = ["STRATEGIES", "LookalikeModel", "make_estimator"]

#: The PU strategies a :class:`LookalikeModel` can use.
STRATEGIES = ("bagging", "elkan_noto", "logistic")
Estimator = ElkanNotoPU | BaggingPU | LogisticLookalike


def make_estimator(strategy: str, *, random_state: int = 0, n_jobs: int = 1) -> Estimator:
    """A fresh estimator for ``strategy`` with Atoll's defaults."""
    if strategy == "bagging":
        return BaggingPU(
            default_gbm(random_state, n_jobs=n_jobs),
            n_bags=5,
            unlabeled_ratio=5.0,
            oob=False,
            random_state=random_state,
        )
    if strategy == "elkan_noto":
        return ElkanNotoPU(default_gbm(random_state, n_jobs=n_jobs), random_state=random_state)
    if strategy == "logistic":
        return LogisticLookalike(random_state=random_state)
    raise ConfigError(
        f"unknown lookalike strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
    )


def _seed_mask(is_seed: Any, rows: int) -> npt.NDArray[np.bool_]:
    if isinstance(is_seed, pa.ChunkedArray | pa.Array):
        is_seed = is_seed.to_numpy(zero_copy_only=False)
    mask = np.asarray(is_seed, dtype=bool)
    if mask.shape != (rows,):
        raise ConfigError(f"is_seed has {mask.size} entries for {rows} universe rows")
    return mask


class LookalikeModel:
    """Seeds in a universe table → a fitted tag-encoder + PU pipeline.

    ``columns``/``exclude`` choose the feature columns (see
    :class:`TagEncoder`); ``n_jobs`` is LightGBM's thread count.
    """

    def __init__(
        self,
        strategy: str = "bagging",
        *,
        columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        random_state: int = 0,
        n_jobs: int = 1,
        min_frequency: int = 20,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown lookalike strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        self.strategy = strategy
        self.columns = None if columns is None else tuple(columns)
        self.exclude = tuple(exclude)
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.min_frequency = min_frequency
        self.pipeline: Pipeline | None = None

    def clone(self) -> LookalikeModel:
        """An unfitted copy with the same settings."""
        return LookalikeModel(
            self.strategy,
            columns=self.columns,
            exclude=self.exclude,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            min_frequency=self.min_frequency,
        )

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or a load) has happened."""
        return self.pipeline is not None

    def _parts(self) -> tuple[TagEncoder, Estimator]:
        if self.pipeline is None:
            raise ConfigError("the lookalike model is not fitted yet")
        enc, est = self.pipeline.named_steps["tags"], self.pipeline.named_steps["pu"]
        return enc, est

    def fit(
        self, table: Any, is_seed: Any, *, warm_start: bool = False, extra_trees: int = 100
    ) -> LookalikeModel:
        """Fit on a universe table where ``is_seed[i]`` marks the seeds (the rest is unlabeled).

        ``warm_start`` on a fitted model keeps the encoder and adds
        ``extra_trees`` trees to each LightGBM booster (the logistic
        baseline is simply refitted).
        """
        data = as_table(table)
        mask = _seed_mask(is_seed, data.num_rows)
        if mask.sum() < 10:
            raise DataError(f"only {int(mask.sum())} seeds matched the universe; need at least 10")
        if mask.all():
            raise DataError("every universe row is a seed: nothing left to score")
        y = mask.astype(np.int64)
        if warm_start and self.pipeline is not None:
            enc, est = self._parts()
            if isinstance(est, ElkanNotoPU | BaggingPU):
                base = (
                    est.estimator if est.estimator is not None else default_gbm(self.random_state)
                )
                base = clone(base).set_params(n_estimators=extra_trees, n_jobs=self.n_jobs)
                est.set_params(estimator=base, warm_start=True)
            est.fit(enc.transform(data), y)
            if isinstance(est, ElkanNotoPU | BaggingPU):
                est.set_params(warm_start=False)
            return self
        encoder = TagEncoder(
            columns=self.columns, exclude=self.exclude, min_frequency=self.min_frequency
        )
        estimator = make_estimator(
            self.strategy, random_state=self.random_state, n_jobs=self.n_jobs
        )
        self.pipeline = Pipeline([("tags", encoder), ("pu", estimator)])
        self.pipeline.fit(data, y)
        return self

    def score(self, table: Any) -> npt.NDArray[np.float64]:
        """Buyer score per row (:meth:`score_samples`: unclipped, ranks never tie at 1)."""
        if self.pipeline is None:
            raise ConfigError("the lookalike model is not fitted yet")
        data = as_table(table)
        if data.num_rows == 0:
            return np.zeros(0, dtype=np.float64)
        enc, est = self._parts()
        return np.asarray(est.score_samples(enc.transform(data)), dtype=np.float64)

    @property
    def feature_names(self) -> list[str]:
        """Encoded feature names (``dim=value`` or numeric ``dim``)."""
        enc, _ = self._parts()
        return [str(n) for n in enc.get_feature_names_out()]

    @property
    def dimensions(self) -> list[str]:
        """The tag columns the model reads."""
        enc, _ = self._parts()
        return [d[0] for d in enc.dimensions_]

    def feature_importance(self, top: int | None = None) -> list[dict[str, Any]]:
        """Normalised importance per encoded feature, largest first, with its dimension.

        LightGBM strategies: total gain; logistic: ``|coefficient|`` on
        standardised features. Importances sum to 1.
        """
        enc, est = self._parts()
        names = self.feature_names
        values = np.asarray(est.feature_importances_, dtype=np.float64)
        pairs = sorted(zip(names, values.tolist(), strict=True), key=lambda nv: (-nv[1], nv[0]))
        rows = [
            {"feature": n, "dimension": n.split("=", 1)[0], "importance": float(v)}
            for n, v in pairs
        ]
        del enc
        return rows if top is None else rows[:top]

    def dimension_importance(self) -> list[dict[str, Any]]:
        """Importance summed per tag column (dimension), largest first."""
        totals: dict[str, float] = {}
        for row in self.feature_importance():
            totals[row["dimension"]] = totals.get(row["dimension"], 0.0) + row["importance"]
        return [
            {"dimension": d, "importance": v}
            for d, v in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    def info(self) -> dict[str, Any]:
        """JSON-ready description: strategy, seeds, features, and (Elkan–Noto) c and prior."""
        enc, est = self._parts()
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "random_state": self.random_state,
            "dimensions": self.dimensions,
            "features": len(self.feature_names),
            "seeds": int(est.n_seeds_),
            "unlabeled": int(est.n_unlabeled_),
        }
        if isinstance(est, ElkanNotoPU):
            out["c"] = est.c_
            out["prior_estimate"] = est.prior_
        del enc
        return out

    # -- state --------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state of the whole model (settings, encoder, estimator)."""
        enc, est = self._parts()
        return {
            "strategy": self.strategy,
            "settings": {
                "columns": None if self.columns is None else list(self.columns),
                "exclude": list(self.exclude),
                "random_state": self.random_state,
                "n_jobs": self.n_jobs,
                "min_frequency": self.min_frequency,
            },
            "encoder": enc.to_state(),
            "estimator": est.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LookalikeModel:
        """Rebuild a fitted model from :meth:`to_state` output."""
        try:
            settings = dict(state["settings"])
            model = cls(
                str(state["strategy"]),
                columns=settings["columns"],
                exclude=tuple(settings["exclude"]),
                random_state=int(settings["random_state"]),
                n_jobs=int(settings["n_jobs"]),
                min_frequency=int(settings["min_frequency"]),
            )
            encoder = TagEncoder.from_state(state["encoder"])
            estimator = estimator_from_state(state["estimator"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid saved lookalike model ({exc})") from exc
        if estimator.n_features_in_ != len(encoder.get_feature_names_out()):
            raise ConfigError("saved model: encoder and estimator disagree on the feature count")
        model.pipeline = Pipeline([("tags", encoder), ("pu", estimator)])
        return model
