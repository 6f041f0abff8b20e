"""Positive–unlabeled (PU) lookalike estimators with the scikit-learn contract.

Why: a brand knows its buyers (the *seeds*, labeled positives) but nobody
knows who in the provider's universe will *not* buy — the rest of the
universe is *unlabeled*, a mixture of future buyers and non-buyers. Treating
unlabeled as negative ranks reasonably but mis-states probabilities, so the
expected conversion of a scoring group would be wrong. Two standard PU
strategies (``docs/lookalike.md``; methods reference §5.2) are implemented
on a gradient-boosted base learner (LightGBM), plus a logistic baseline:

* :class:`ElkanNotoPU` — Elkan & Noto (KDD 2008): train ``g(x) ≈ P(s=1|x)``
  (labeled vs unlabeled) without a held-out share of the seeds, estimate
  ``c = P(s=1|y=1)`` as the mean of ``g`` on those held-out seeds (their
  estimator e1), and predict ``P(y=1|x) = g(x)/c`` (clipped to 1). Valid
  under SCAR: the seeds are a random sample of all buyers. ``prior_``
  estimates the buyer share of the universe, ``P(s=1)/c``.
* :class:`BaggingPU` — Mordelet & Vert (2014): ``n_bags`` times, draw ``K``
  unlabeled rows (``K = unlabeled_ratio × |P|``), train P vs that draw, and
  score the unlabeled rows left out of it; the out-of-bag mean is the score
  of a training row (``oob_score_``), the mean over bags scores new rows.
  Scores rank; they are not calibrated probabilities.
* :class:`LogisticLookalike` — the baseline: seeds vs unlabeled with an
  L2 logistic regression on imputed, standardised features.

Contract (scikit-learn): ``__init__`` only stores hyper-parameters, ``fit``
returns ``self``, learned attributes end in ``_``, ``random_state`` seeds
everything (LightGBM runs in its ``deterministic`` mode), and each class
works inside a :class:`~sklearn.pipeline.Pipeline` after
:class:`~atoll.models.features.TagEncoder`. Labels: any two classes; the
*larger* label (``1`` of ``{0, 1}`` or ``{-1, 1}``) marks the seeds, the
other the unlabeled rows. ``warm_start=True`` continues the previous
boosters (LightGBM ``init_model``) instead of starting over — the closed
loop's retraining.

Saved state is JSON plus LightGBM's own text model format
(:meth:`to_state` / :func:`estimator_from_state`): no pickles, so a model
directory can be inspected and loading one runs no code.
"""

# ruff: noqa: N803, N806  (scikit-learn names matrices X, Z and the inverse regularization C)

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from atoll.errors import ConfigError, DataError

__all__ = [
    "STATE_VERSION",
    "BaggingPU",
    "ElkanNotoPU",
    "LogisticLookalike",
    "default_gbm",
    "estimator_from_state",
]

#: Version of the estimator state written by ``to_state``.
STATE_VERSION = 1
Float = npt.NDArray[np.float64]


def default_gbm(
    random_state: int | None = None,
    *,
    n_estimators: int = 300,
    learning_rate: float = 0.03,
    num_leaves: int = 7,
    n_jobs: int = 1,
) -> lgb.LGBMClassifier:
    """The default base learner: a small, regularised, deterministic LightGBM classifier.

    Shallow trees (7 leaves) and a low learning rate: seeds are few (hundreds
    to thousands) and tags noisy, so deeper trees memorise the seeds and
    rank hidden ones worse (measured in ``docs/lookalike.md``). ``n_jobs``
    defaults to 1 thread: LightGBM's OpenMP threads collapse on a shared or
    oversubscribed machine, and the executor parallelises across buckets.
    """
    return lgb.LGBMClassifier(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        importance_type="gain",
        random_state=0 if random_state is None else random_state,
        deterministic=True,
        force_row_wise=True,
        n_jobs=n_jobs,
        verbose=-1,
    )


class _Booster:
    """A LightGBM booster restored from its text form, with the predict API the PU classes use."""

    def __init__(self, text: str) -> None:
        try:
            self.booster_ = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"invalid saved LightGBM model ({exc})") from exc
        self.feature_importances_ = self.booster_.feature_importance("gain")

    def predict_proba(self, X: Any) -> Float:
        p = np.asarray(self.booster_.predict(X), dtype=np.float64)
        return np.column_stack([1.0 - p, p])


def _booster_of(est: Any) -> lgb.Booster | None:
    booster = getattr(est, "booster_", None)
    return booster if isinstance(booster, lgb.Booster) else None


def _fit_base(base: Any, X: Any, s: npt.NDArray[np.int64], seed: int, previous: Any | None) -> Any:
    """Clone and fit ``base`` on ``(X, s)``; continue ``previous``'s booster when given."""
    est = clone(base)
    if "random_state" in est.get_params():
        est.set_params(random_state=seed)
    if previous is not None and isinstance(est, lgb.LGBMModel):
        booster = _booster_of(previous)
        if booster is not None and booster.num_feature() == X.shape[1]:
            est.fit(X, s, init_model=booster)
            return est
    est.fit(X, s)
    return est


def _importances(est: Any, n_features: int) -> Float:
    raw = getattr(est, "feature_importances_", None)
    if raw is None:
        coef = getattr(est, "coef_", None)
        raw = np.zeros(n_features) if coef is None else np.abs(np.ravel(coef))
    values = np.asarray(raw, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


class _PUClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Shared validation, prediction and tags of the PU classifiers."""

    def _validate_fit(self, X: Any, y: Any) -> tuple[Float, npt.NDArray[np.bool_]]:
        X, y = validate_data(
            self, X, y, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32]
        )
        check_classification_targets(y)
        classes = np.unique(y)
        if classes.size == 1:
            raise ValueError(
                "PU learning needs two classes (seeds and unlabeled rows); one class is present"
            )
        if classes.size != 2:
            raise ValueError(
                "Only binary classification is supported. PU labels are seed / unlabeled; "
                f"got {classes.size} classes"
            )
        self.classes_ = classes
        labeled = np.asarray(y == classes[1], dtype=bool)
        return X, labeled

    def _validate_predict(self, X: Any) -> Float:
        # float32 stays float32 (the encoder's output): no 2x copy of a large scoring batch.
        check_is_fitted(self)
        X = validate_data(
            self, X, reset=False, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32]
        )
        out: Float = X
        return out

    def _positive(self, X: Float) -> Float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw(self, X: Float) -> Float:
        return self._positive(X)

    def score_samples(self, X: Any) -> Float:
        """The ranking score: ``predict_proba[:, 1]`` before any clipping (Elkan–Noto: g/c).

        Clipping ``g/c`` to 1 would tie the best rows; scoring groups rank on this.
        """
        return self._raw(self._validate_predict(X))

    def predict_proba(self, X: Any) -> Float:
        """``[[1 − p, p]]`` per row, ``p`` the model's probability (score) of being a buyer."""
        p = self._positive(self._validate_predict(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """The seed label where ``p ≥ 0.5``, else the unlabeled label."""
        p = self.predict_proba(X)[:, 1]
        out: npt.NDArray[Any] = self.classes_[(p >= 0.5).astype(np.int64)]
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.allow_nan = True
        return tags


class ElkanNotoPU(_PUClassifier):
    """Elkan–Noto PU classifier: ``P(y=1|x) = g(x) / c`` (see the module docs).

    Parameters
    ----------
    estimator:
        Probabilistic base classifier (default :func:`default_gbm`).
    hold_out_ratio:
        Share of the seeds held out of training to estimate ``c``.
    random_state:
        Seeds the hold-out draw and the base learner.
    warm_start:
        Refit continues the previous booster (LightGBM ``init_model``).

    Attributes
    ----------
    estimator_, c_, prior_, classes_, n_features_in_, feature_importances_,
    n_seeds_, n_unlabeled_.
    """

    def __init__(
        self,
        estimator: Any = None,
        hold_out_ratio: float = 0.2,
        random_state: int | None = None,
        warm_start: bool = False,
    ) -> None:
        self.estimator = estimator
        self.hold_out_ratio = hold_out_ratio
        self.random_state = random_state
        self.warm_start = warm_start

    def fit(self, X: Any, y: Any) -> ElkanNotoPU:
        """Fit ``g`` on seeds-vs-unlabeled and estimate ``c`` on held-out seeds."""
        if not 0 < self.hold_out_ratio < 1:
            raise ValueError(f"hold_out_ratio must be in (0, 1), got {self.hold_out_ratio}")
        previous = getattr(self, "estimator_", None) if self.warm_start else None
        X, labeled = self._validate_fit(X, y)
        rng = check_random_state(self.random_state)
        pos = np.flatnonzero(labeled)
        if pos.size < 2:
            raise ValueError("Elkan–Noto needs at least two seeds (one to hold out)")
        n_hold = min(pos.size - 1, max(1, round(self.hold_out_ratio * pos.size)))
        hold = np.sort(rng.choice(pos, size=n_hold, replace=False))
        train = np.ones(X.shape[0], dtype=bool)
        train[hold] = False
        base = self.estimator if self.estimator is not None else default_gbm()
        seed = int(rng.randint(0, 2**31 - 1))
        s = labeled.astype(np.int64)
        self.estimator_ = _fit_base(base, X[train], s[train], seed, previous)
        g_hold = self.estimator_.predict_proba(X[hold])[:, 1]
        c = float(np.mean(g_hold))
        if not c > 0:
            raise DataError("Elkan–Noto: the held-out seeds all score 0, c cannot be estimated")
        self.c_ = c
        self.prior_ = float(min(1.0, labeled.mean() / c))
        self.n_seeds_ = int(pos.size)
        self.n_unlabeled_ = int(X.shape[0] - pos.size)
        self.feature_importances_ = _importances(self.estimator_, X.shape[1])
        return self

    def _raw(self, X: Float) -> Float:
        g = np.asarray(self.estimator_.predict_proba(X)[:, 1], dtype=np.float64)
        out: Float = g / self.c_
        return out

    def _positive(self, X: Float) -> Float:
        out: Float = np.clip(self._raw(X), 0.0, 1.0)
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state (LightGBM base learners only)."""
        check_is_fitted(self)
        booster = _booster_of(self.estimator_)
        if booster is None:
            raise ConfigError("only LightGBM base learners can be saved")
        return {
            "state_version": STATE_VERSION,
            "kind": "elkan_noto",
            "params": {"hold_out_ratio": self.hold_out_ratio, "random_state": self.random_state},
            "classes": self.classes_.tolist(),
            "n_features_in": self.n_features_in_,
            "c": self.c_,
            "prior": self.prior_,
            "n_seeds": self.n_seeds_,
            "n_unlabeled": self.n_unlabeled_,
            "boosters": [booster.model_to_string()],
        }


class BaggingPU(_PUClassifier):
    """Bagging PU (Mordelet & Vert): mean score of ``n_bags`` seeds-vs-subsample models.

    Parameters
    ----------
    estimator:
        Probabilistic base classifier (default :func:`default_gbm`).
    n_bags:
        Number of bootstrap models.
    unlabeled_ratio:
        Unlabeled rows drawn per bag, as a multiple of the number of seeds.
    oob:
        Compute ``oob_score_`` (out-of-bag score of each unlabeled training row).
    random_state, warm_start:
        As in :class:`ElkanNotoPU`.
    """

    def __init__(
        self,
        estimator: Any = None,
        n_bags: int = 10,
        unlabeled_ratio: float = 1.0,
        oob: bool = True,
        random_state: int | None = None,
        warm_start: bool = False,
    ) -> None:
        self.estimator = estimator
        self.n_bags = n_bags
        self.unlabeled_ratio = unlabeled_ratio
        self.oob = oob
        self.random_state = random_state
        self.warm_start = warm_start

    def fit(self, X: Any, y: Any) -> BaggingPU:
        """Fit ``n_bags`` models, each on all seeds and a random draw of unlabeled rows."""
        if not isinstance(self.n_bags, int) or self.n_bags < 1:
            raise ValueError(f"n_bags must be a positive integer, got {self.n_bags}")
        if not self.unlabeled_ratio > 0:
            raise ValueError(f"unlabeled_ratio must be positive, got {self.unlabeled_ratio}")
        previous = list(getattr(self, "estimators_", [])) if self.warm_start else []
        X, labeled = self._validate_fit(X, y)
        rng = check_random_state(self.random_state)
        pos = np.flatnonzero(labeled)
        unl = np.flatnonzero(~labeled)
        if pos.size == 0 or unl.size == 0:
            raise ValueError("bagging PU needs seeds and unlabeled rows")
        k = min(unl.size, max(1, math.ceil(self.unlabeled_ratio * pos.size)))
        base = self.estimator if self.estimator is not None else default_gbm()
        models = []
        oob_sum = np.zeros(unl.size)
        oob_n = np.zeros(unl.size)
        for t in range(self.n_bags):
            pick = np.sort(rng.choice(unl.size, size=k, replace=False))
            rows = np.concatenate([pos, unl[pick]])
            s = np.concatenate([np.ones(pos.size, np.int64), np.zeros(k, np.int64)])
            seed = int(rng.randint(0, 2**31 - 1))
            prev = previous[t] if t < len(previous) else None
            model = _fit_base(base, X[rows], s, seed, prev)
            models.append(model)
            if self.oob:
                out = np.ones(unl.size, dtype=bool)
                out[pick] = False
                if out.any():
                    oob_sum[out] += model.predict_proba(X[unl[out]])[:, 1]
                    oob_n[out] += 1
        self.estimators_ = models
        if self.oob:
            score = np.full(X.shape[0], np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                score[unl] = np.where(oob_n > 0, oob_sum / np.maximum(oob_n, 1), np.nan)
            self.oob_score_ = score
        self.n_seeds_ = int(pos.size)
        self.n_unlabeled_ = int(unl.size)
        self.feature_importances_ = np.mean([_importances(m, X.shape[1]) for m in models], axis=0)
        return self

    def _positive(self, X: Float) -> Float:
        total = np.zeros(X.shape[0])
        for model in self.estimators_:
            total += model.predict_proba(X)[:, 1]
        out: Float = total / len(self.estimators_)
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state (LightGBM base learners only)."""
        check_is_fitted(self)
        boosters = [_booster_of(m) for m in self.estimators_]
        if any(b is None for b in boosters):
            raise ConfigError("only LightGBM base learners can be saved")
        return {
            "state_version": STATE_VERSION,
            "kind": "bagging",
            "params": {
                "n_bags": self.n_bags,
                "unlabeled_ratio": self.unlabeled_ratio,
                "random_state": self.random_state,
            },
            "classes": self.classes_.tolist(),
            "n_features_in": self.n_features_in_,
            "n_seeds": self.n_seeds_,
            "n_unlabeled": self.n_unlabeled_,
            "boosters": [b.model_to_string() for b in boosters if b is not None],
        }


class LogisticLookalike(_PUClassifier):
    """The baseline: L2 logistic regression of seeds vs unlabeled.

    Missing numeric values are imputed with the training median (plus a
    missing indicator), features standardised; ``class_weight="balanced"``
    keeps the rare seeds from being ignored. Scores rank; they are not
    calibrated buyer probabilities.
    """

    def __init__(
        self, C: float = 1.0, max_iter: int = 1000, random_state: int | None = None
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LogisticLookalike:
        """Impute, standardise and fit the logistic regression."""
        X, labeled = self._validate_fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: median 0 below
            median = np.nanmedian(X, axis=0)
        self.median_ = np.where(np.isnan(median), 0.0, median)
        Z = np.where(np.isnan(X), self.median_, X)
        self.mean_ = Z.mean(axis=0)
        std = Z.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.estimator_ = LogisticRegression(
            C=self.C,
            class_weight="balanced",
            max_iter=self.max_iter,
            random_state=self.random_state,
        ).fit((Z - self.mean_) / self.scale_, labeled.astype(np.int64))
        self.n_iter_ = self.estimator_.n_iter_
        self.n_seeds_ = int(labeled.sum())
        self.n_unlabeled_ = int(X.shape[0] - self.n_seeds_)
        self.feature_importances_ = _importances(self.estimator_, X.shape[1])
        return self

    def _positive(self, X: Float) -> Float:
        Z = (np.where(np.isnan(X), self.median_, X) - self.mean_) / self.scale_
        out: Float = self.estimator_.predict_proba(Z)[:, 1]
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state: medians, scaling and coefficients."""
        check_is_fitted(self)
        return {
            "state_version": STATE_VERSION,
            "kind": "logistic",
            "params": {"C": self.C, "max_iter": self.max_iter, "random_state": self.random_state},
            "classes": self.classes_.tolist(),
            "n_features_in": self.n_features_in_,
            "n_seeds": self.n_seeds_,
            "n_unlabeled": self.n_unlabeled_,
            "median": self.median_.tolist(),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.estimator_.coef_.ravel().tolist(),
            "intercept": float(self.estimator_.intercept_[0]),
        }


def _floats(values: Sequence[Any], n: int, what: str) -> Float:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ConfigError(f"saved {what} has {arr.size} values, expected {n}")
    return arr


def estimator_from_state(
    state: Mapping[str, Any],
) -> ElkanNotoPU | BaggingPU | LogisticLookalike:
    """Rebuild a fitted estimator from ``to_state`` output (validated, no code executed)."""
    try:
        if state.get("state_version") != STATE_VERSION:
            raise ConfigError(
                f"unsupported model state version {state.get('state_version')!r} "
                f"(this Atoll reads {STATE_VERSION})"
            )
        kind = state["kind"]
        params = dict(state["params"])
        classes = np.asarray(state["classes"])
        n_features = int(state["n_features_in"])
        if classes.size != 2:
            raise ConfigError("a saved PU model must have two classes")
        est: ElkanNotoPU | BaggingPU | LogisticLookalike
        if kind == "elkan_noto":
            est = ElkanNotoPU(**params)
            est.estimator_ = _Booster(str(state["boosters"][0]))
            est.c_ = float(state["c"])
            est.prior_ = float(state["prior"])
        elif kind == "bagging":
            est = BaggingPU(**params)
            est.estimators_ = [_Booster(str(text)) for text in state["boosters"]]
            if not est.estimators_:
                raise ConfigError("a saved bagging model has no boosters")
        elif kind == "logistic":
            est = LogisticLookalike(**params)
            est.median_ = _floats(state["median"], n_features, "medians")
            est.mean_ = _floats(state["mean"], n_features, "means")
            est.scale_ = _floats(state["scale"], n_features, "scales")
            lr = LogisticRegression()
            lr.coef_ = _floats(state["coef"], n_features, "coefficients").reshape(1, -1)
            lr.intercept_ = np.array([float(state["intercept"])])
            lr.classes_ = np.array([0, 1])
            est.estimator_ = lr
        else:
            raise ConfigError(f"unknown saved model kind {kind!r}")
        est.classes_ = classes
        est.n_features_in_ = n_features
        est.n_seeds_ = int(state["n_seeds"])
        est.n_unlabeled_ = int(state["n_unlabeled"])
        if kind == "bagging":
            assert isinstance(est, BaggingPU)
            est.feature_importances_ = np.mean(
                [_importances(m, n_features) for m in est.estimators_], axis=0
            )
        else:
            est.feature_importances_ = _importances(est.estimator_, n_features)
        return est
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid saved model state ({exc})") from exc
