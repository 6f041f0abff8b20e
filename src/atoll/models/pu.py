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

Prediction: LightGBM models are evaluated by :class:`_Forest`, the trees
compiled to lookup tables and run column by column with NumPy — bit-for-bit
LightGBM's ``predict`` (tested against it), several times faster on the
wide one-hot matrices of tag features; models it does not replicate
(categorical splits, linear or large trees) use LightGBM itself.

Saved state is JSON plus LightGBM's own text model format
(:meth:`to_state` / :func:`estimator_from_state`): no pickles, so a model
directory can be inspected and loading one runs no code.
"""

# ruff: noqa: N803, N806  (scikit-learn names matrices X, Z and the inverse regularization C)

from __future__ import annotations

import math
import warnings
import weakref
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
    "is_lightgbm",
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


#: LightGBM's ``kZeroThreshold`` (``1e-35f``, a float literal widened to double).
_ZERO = float(np.float32(1e-35))
#: Trees with more internal nodes than this are left to LightGBM (their table would be 2^k).
_MAX_TABLE_NODES = 12
#: Rows evaluated at a time by :class:`_Forest` (keeps its temporaries in the CPU cache).
_FOREST_BLOCK = 32_768
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2


def _float32_at_most(threshold: float) -> np.float32:
    """The largest float32 ``t <= threshold``, so that ``x <= t`` iff ``x <= threshold``.

    For float32 ``x``: LightGBM compares in double; this float32 test is the same.
    """
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return t


class _Split:
    """One internal node: which rows go left, exactly as LightGBM's ``NumericalDecision``."""

    __slots__ = ("default_left", "feature", "missing", "t32", "t64", "zero_left")

    def __init__(self, feature: int, threshold: float, decision_type: int) -> None:
        self.feature = feature
        self.t64 = np.float64(threshold)
        self.t32 = _float32_at_most(threshold)
        self.missing = (decision_type >> 2) & 3
        self.default_left = bool(decision_type & 2)
        self.zero_left = threshold >= 0.0

    def left(self, x: Float, has_nan: bool, out: npt.NDArray[np.bool_]) -> None:
        """Write into ``out`` whether each value of the feature column ``x`` goes left."""
        t = self.t32 if x.dtype == np.float32 else self.t64
        np.less_equal(x, t, out=out)
        if -_ZERO <= float(self.t64) < _ZERO:
            # LightGBM drops |x| <= kZeroThreshold from a dense row: such x are read as 0.
            tiny = np.abs(x) <= _ZERO
            out[tiny] = self.zero_left
        if self.missing == _MISSING_ZERO:
            default = np.abs(x) <= _ZERO
            if has_nan:
                default |= np.isnan(x)
            out[default] = self.default_left
        elif has_nan and (
            (self.missing == _MISSING_NAN and self.default_left)
            or (self.missing == _MISSING_NONE and self.zero_left)
        ):
            out |= np.isnan(x)  # NaN: the default side (NaN type) or read as 0 (None type)


class _Tree:
    """A tree as a lookup table: the bits "went left at node j" index its leaf value."""

    __slots__ = ("constant", "splits", "values")

    def __init__(self, fields: Mapping[str, str]) -> None:
        leaves = int(fields["num_leaves"])
        leaf_value = np.array(fields["leaf_value"].split(), dtype=np.float64)
        self.splits: list[_Split] = []
        self.values = leaf_value
        self.constant: float | None = None
        if leaves == 1:
            self.constant = float(leaf_value[0])
            return
        features = [int(v) for v in fields["split_feature"].split()]
        thresholds = [float(v) for v in fields["threshold"].split()]
        kinds = [int(v) for v in fields["decision_type"].split()]
        left = np.array(fields["left_child"].split(), dtype=np.int64)
        right = np.array(fields["right_child"].split(), dtype=np.int64)
        k = leaves - 1
        if not (len(features) == len(thresholds) == len(kinds) == left.size == right.size == k):
            raise ValueError("inconsistent tree arrays")
        self.splits = [_Split(f, t, d) for f, t, d in zip(features, thresholds, kinds, strict=True)]
        # Walk every combination of decisions down the tree at once. Node j's
        # decision is bit k-1-j of the code (the evaluator shifts left as it goes).
        codes = np.arange(1 << k, dtype=np.int64)
        node = np.zeros(codes.size, dtype=np.int64)
        for _ in range(k):
            inner = node >= 0
            if not inner.any():
                break
            n = node[inner]
            went_left = (codes[inner] >> (k - 1 - n)) & 1
            node[inner] = np.where(went_left == 1, left[n], right[n])
        if (node >= 0).any():
            raise ValueError("a tree path is longer than its node count")
        self.values = leaf_value[~node]


class _Forest:
    """A LightGBM binary model evaluated with NumPy, giving LightGBM's own numbers.

    Why: scoring a universe is the lookalike's hot loop, and LightGBM's
    per-row predictor (build a feature vector, walk 300 small trees with a
    branch per node) dominates it. Here each tree becomes a table indexed by
    its nodes' decisions, evaluated a feature *column* at a time over a block
    of rows (branch-free, vectorised). The result is bit-for-bit LightGBM's:

    * decisions replicate ``Tree::NumericalDecision`` — missing type None
      (NaN read as 0), Zero (0 and NaN take the default side) or NaN (NaN
      takes the default side) — and the dense-row rule that values with
      ``|x| <= 1e-35`` are dropped (read as 0); float32 input is compared
      against the largest float32 not above the double threshold, which is
      the same test as LightGBM's comparison in double;
    * the raw score sums the trees in their order in float64, as
      ``GBDT::PredictRaw`` does, and the probability is
      ``1 / (1 + exp(-sigmoid * raw))`` with the C library's ``exp``
      (``math.exp``), as ``BinaryLogloss::ConvertOutput``.

    :meth:`compile` returns ``None`` for what it does not replicate
    (categorical splits, linear trees, multi-class or non-binary objectives,
    averaged forests, trees with more than ``_MAX_TABLE_NODES`` splits); the
    caller then uses LightGBM. ``tests/models/test_speed.py`` checks equality
    against ``Booster.predict`` on models with every missing type.
    """

    def __init__(self, trees: list[_Tree], n_features: int, sigmoid: float) -> None:
        self.trees = trees
        self.n_features = n_features
        self.sigmoid = sigmoid

    @classmethod
    def compile(cls, text: str) -> _Forest | None:
        """Parse LightGBM's text model format; ``None`` if the model is not supported."""
        header: dict[str, str] = {}
        trees: list[dict[str, str]] = []
        current: dict[str, str] | None = None
        for line in text.splitlines():
            if line.startswith("end of trees"):
                break
            if line.startswith("Tree="):
                current = {}
                trees.append(current)
                continue
            key, sep, value = line.partition("=")
            if current is not None:
                if sep:
                    current[key] = value
            elif sep:
                header[key] = value
            elif line.strip() == "average_output":
                return None
        try:
            objective = header.get("objective", "").split()
            sigmoid = [float(t.split(":", 1)[1]) for t in objective if t.startswith("sigmoid:")]
            if (
                not objective
                or objective[0] != "binary"
                or len(sigmoid) != 1
                or int(header.get("num_class", "1")) != 1
                or int(header.get("num_tree_per_iteration", "1")) != 1
                or not trees
            ):
                return None
            compiled: list[_Tree] = []
            for fields in trees:
                if int(fields.get("num_cat", "0")) != 0 or int(fields.get("is_linear", "0")) != 0:
                    return None
                if int(fields["num_leaves"]) - 1 > _MAX_TABLE_NODES:
                    return None
                if any(int(d) & 1 for d in fields.get("decision_type", "").split()):
                    return None  # categorical split
                compiled.append(_Tree(fields))
            n_features = int(header["max_feature_idx"]) + 1
        except (KeyError, ValueError, IndexError):
            return None
        return cls(compiled, n_features, sigmoid[0])

    def raw(self, X: Any) -> Float:
        """Raw scores (sum of leaf values) of the rows of a 2-D float array."""
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float32)  # what LightGBM's predict does with other dtypes
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"the model has {self.n_features} features, the input has shape {X.shape}"
            )
        out = np.zeros(X.shape[0], dtype=np.float64)
        for start in range(0, X.shape[0], _FOREST_BLOCK):
            block = X[start : start + _FOREST_BLOCK]
            if block.strides[0] != block.itemsize:  # columns must be contiguous
                block = np.asfortranarray(block)
            out[start : start + block.shape[0]] = self._raw_block(block)
        return out

    def _raw_block(self, X: Float) -> Float:
        n = X.shape[0]
        acc = np.zeros(n, dtype=np.float64)
        went = np.empty(n, dtype=bool)
        has_nan: dict[int, bool] = {}
        for tree in self.trees:
            if tree.constant is not None:
                acc += tree.constant
                continue
            code: npt.NDArray[np.unsignedinteger[Any]] = np.zeros(
                n, dtype=np.uint8 if len(tree.splits) <= 8 else np.uint16
            )
            for split in tree.splits:
                x = X[:, split.feature]
                nan = has_nan.get(split.feature)
                if nan is None:
                    nan = has_nan[split.feature] = bool(np.isnan(x).any())
                split.left(x, nan, went)
                np.left_shift(code, 1, out=code)
                np.bitwise_or(code, went, out=code)
            acc += tree.values[code]
        return acc

    def proba(self, X: Any) -> Float:
        """``P(y=1)`` per row, as LightGBM's ``predict``."""
        return _logistic(self.raw(X), self.sigmoid)


#: ``math.exp`` overflows (raises) above about 709.78; C's ``exp`` returns ``inf`` there.
_EXP_SAFE = 709.0


def _logistic(raw: Float, sigmoid: float) -> Float:
    """``1 / (1 + exp(-sigmoid * raw))`` with the C library's ``exp``, as LightGBM computes it.

    NumPy's ``exp`` may use its own SIMD routine, which need not round like
    the C library's; ``math.exp`` is the C library's, mapped over the values
    in C. The product, sum and quotient are single IEEE operations either way.
    """
    z = -sigmoid * raw
    big = z > _EXP_SAFE
    if big.any():
        e = np.fromiter(map(math.exp, np.where(big, 0.0, z).tolist()), np.float64, z.size)
        e[big] = [_exp(v) for v in z[big].tolist()]
    else:
        e = np.fromiter(map(math.exp, z.tolist()), np.float64, z.size)
    out: Float = 1.0 / (1.0 + e)
    return out


def _exp(z: float) -> float:
    """The C library's ``exp`` (as LightGBM calls it), ``inf`` where it overflows."""
    try:
        return math.exp(z)
    except OverflowError:
        return math.inf


#: Compiled forests of fitted LightGBM models (``None``: not supported), by booster.
_FORESTS: weakref.WeakKeyDictionary[lgb.Booster, _Forest | None] = weakref.WeakKeyDictionary()


def is_lightgbm(est: Any) -> bool:
    """Whether a fitted base learner is a LightGBM model (fitted classifier or restored booster)."""
    return isinstance(est, _Booster) or (
        isinstance(est, lgb.LGBMClassifier) and _booster_of(est) is not None
    )


def _positive_proba(est: Any, X: Any) -> Float:
    """``est.predict_proba(X)[:, 1]``; LightGBM models run as their compiled :class:`_Forest`."""
    if isinstance(est, _Booster):
        return est.positive(X)
    booster = _booster_of(est)
    if booster is not None and isinstance(est, lgb.LGBMClassifier):
        if booster not in _FORESTS:
            _FORESTS[booster] = _Forest.compile(booster.model_to_string())
        forest = _FORESTS[booster]
        if forest is not None:
            return forest.proba(X)
    return np.asarray(est.predict_proba(X)[:, 1], dtype=np.float64)


class _Booster:
    """A LightGBM booster restored from its text form, with the predict API the PU classes use."""

    def __init__(self, text: str) -> None:
        try:
            self.booster_ = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"invalid saved LightGBM model ({exc})") from exc
        self.feature_importances_ = self.booster_.feature_importance("gain")
        self.forest_ = _Forest.compile(text)

    def positive(self, X: Any) -> Float:
        """``P(y=1)`` per row: the compiled forest's, else LightGBM's (the same numbers)."""
        if self.forest_ is not None:
            return self.forest_.proba(X)
        return np.asarray(self.booster_.predict(X), dtype=np.float64)

    def predict_proba(self, X: Any) -> Float:
        p = self.positive(X)
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
        g_hold = _positive_proba(self.estimator_, X[hold])
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
        g = _positive_proba(self.estimator_, X)
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
                    oob_sum[out] += _positive_proba(model, X[unl[out]])
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
            total += _positive_proba(model, X)
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
