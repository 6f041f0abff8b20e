"""The fast scoring paths give exactly the numbers of the plain ones.

Why: scoring was made faster (issue 6, performance) by encoding tags once
per distinct value, encoding column-major in blocks, and evaluating the
LightGBM trees with NumPy (:class:`atoll.models.pu._Forest`). "Same model →
same scores" is the contract: these tests compare, bit for bit,

* the tag encoder against a straightforward reference implementation (the
  previous row-by-row one, kept here), on generated tables with unknown
  labels, nulls, case and whitespace variants, booleans, lists with
  repeats and null items, chunked and dictionary-typed columns;
* the compiled forest against ``lightgbm.Booster.predict`` (raw and
  probability) on generated models with every missing-value type, data on
  and around the split thresholds, tiny values, NaN, float32 and float64;
* :func:`atoll.models.scoring.score_table` and ``score_universe`` against
  :meth:`LookalikeModel.score` with LightGBM's own predict, and the
  partial-sort group cut against the full sort.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError
from atoll.models.features import OTHER, TagEncoder
from atoll.models.lookalike import LookalikeModel
from atoll.models.pu import _Booster, _Forest
from atoll.models.registry import load_model_dir, save_model_dir
from atoll.models.scoring import (
    GroupSpec,
    cut_points,
    exclusions_table,
    score_table,
    score_universe,
)

# --------------------------------------------------------------------------- reference encoder

UNKNOWN = frozenset({"unknown", ""})


def _ref_text(chunk: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_decode()
    if not pa.types.is_string(chunk.type):
        chunk = pc.cast(chunk, pa.string())
    return chunk


def _ref_known(values: pa.Array) -> pa.Array:
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    is_unknown = pc.is_in(folded, value_set=pa.array(sorted(UNKNOWN), pa.string()))
    return pc.if_else(pc.fill_null(is_unknown, True), pa.nulls(len(values), pa.string()), values)


def _ref_flat(column: pa.ChunkedArray, kind: str) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    values, rows, offset = [], [], 0
    for chunk in column.chunks:
        if kind == "multi":
            parents = pc.list_parent_indices(chunk).to_numpy(zero_copy_only=False)
            values.append(_ref_text(pc.list_flatten(chunk)))
            rows.append(parents.astype(np.int64) + offset)
        else:
            values.append(_ref_text(chunk))
            rows.append(np.arange(offset, offset + len(chunk), dtype=np.int64))
        offset += len(chunk)
    if not values:
        return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
    return pa.concat_arrays([v.cast(pa.string()) for v in values]), np.concatenate(rows)


def reference_vocab(column: pa.ChunkedArray, kind: str, min_freq: int, max_values: int) -> tuple:
    """The previous implementation's vocabulary rule (value_counts / group_by)."""
    values, rows = _ref_flat(column, kind)
    if kind == "multi":
        pairs = pa.table({"v": _ref_known(values), "r": pa.array(rows)})
        pairs = pairs.filter(pc.is_valid(pairs["v"])).group_by(["v", "r"]).aggregate([])
        known = pairs["v"]
    else:
        known = pc.drop_null(_ref_known(values))
    counts = pc.value_counts(known).to_pylist() if len(known) else []
    ranked = sorted(
        ((c["values"], c["counts"]) for c in counts if c["counts"] >= min_freq),
        key=lambda vc: (-vc[1], vc[0]),
    )[:max_values]
    return tuple(sorted(v for v, _ in ranked))


def reference_transform(enc: TagEncoder, table: pa.Table) -> np.ndarray[Any, Any]:
    """The previous implementation's transform (string kernels over every value)."""
    out = np.zeros((table.num_rows, len(enc.feature_names_out_)), dtype=np.float32)
    col = 0
    for name, kind, vocab in enc.dimensions_:
        if kind == "numeric":
            out[:, col] = np.asarray(pc.cast(table[name], pa.float64()).to_numpy(), np.float32)
            col += 1
            continue
        values, rows = _ref_flat(table[name], kind)
        known = _ref_known(values)
        valid = np.asarray(known.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        idx = pc.index_in(known, value_set=pa.array(vocab, pa.string()))
        slot = np.asarray(pc.fill_null(idx, len(vocab)).to_numpy(zero_copy_only=False))
        slot = slot.astype(np.int64)
        out[rows[valid], col + slot[valid]] = 1.0
        col += len(vocab) + 1
    return out


# --------------------------------------------------------------------------- generated tables

LABELS = ["a", "b", "B", " b ", "c", "unknown", " Unknown ", "UNKNOWN", "", "  ", "d", "e"]


@st.composite
def tag_tables(draw: Any) -> pa.Table:
    """A table of every tag kind, in 1-3 record batches, with dictionary-typed columns."""
    n = draw(st.integers(1, 60))
    text = st.one_of(st.none(), st.sampled_from(LABELS))
    cat = draw(st.lists(text, min_size=n, max_size=n))
    flag = draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n))
    count = draw(st.lists(st.one_of(st.none(), st.integers(-5, 50)), min_size=n, max_size=n))
    real = draw(
        st.lists(
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32)),
            min_size=n,
            max_size=n,
        )
    )
    lists = draw(st.lists(st.one_of(st.none(), st.lists(text, max_size=4)), min_size=n, max_size=n))
    table = pa.table(
        {
            "device_id": pa.array([f"d{i}" for i in range(n)]),
            "cat": pa.array(cat, pa.string()),
            "dict_cat": pa.array(cat, pa.string()).dictionary_encode(),
            "flag": pa.array(flag, pa.bool_()),
            "count": pa.array(count, pa.int64()),
            "real": pa.array(real, pa.float64()),
            "tags": pa.array(lists, pa.list_(pa.string())),
        }
    )
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=2))))
    bounds = [0, *cuts, n]
    batches = [
        b for lo, hi in itertools.pairwise(bounds) for b in table.slice(lo, hi - lo).to_batches()
    ]
    return pa.Table.from_batches(batches, schema=table.schema) if batches else table


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=tag_tables(),
    other=tag_tables(),
    min_frequency=st.integers(1, 3),
    max_values=st.integers(1, 4),
)
def test_encoder_matches_reference(
    table: pa.Table, other: pa.Table, min_frequency: int, max_values: int
) -> None:
    enc = TagEncoder(min_frequency=min_frequency, max_values=max_values).fit(table)
    for name, kind, vocab in enc.dimensions_:
        if kind != "numeric":
            assert vocab == reference_vocab(table[name], kind, min_frequency, max_values), name
    for data in (table, other):  # the training table and one with unseen values
        expected = reference_transform(enc, data)
        np.testing.assert_array_equal(enc.transform(data), expected)
        f = enc.encode(data, order="F")
        assert f.flags.f_contiguous
        np.testing.assert_array_equal(f, expected)
        buffer = np.full(expected.shape, 7.0, dtype=np.float32, order="F")
        assert enc.encode(data, order="F", out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected)
        for start in range(0, data.num_rows, 7):  # blocks sliced from the table
            block = data.slice(start, 7)
            np.testing.assert_array_equal(enc.encode(block, order="F"), expected[start : start + 7])


def test_encoder_reads_parquet_dictionaries_and_list_dictionaries(tmp_path: Path) -> None:
    """Columns read with ``read_dictionary`` (incl. list items) encode like plain strings."""
    table = pa.table(
        {
            "g": pa.array(["x", "y", None, "Unknown", "x", "z"] * 20),
            "l": pa.array([["p", "q"], None, [], ["p", "p", None], ["r"], ["unknown"]] * 20),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    read = pq.ParquetFile(tmp_path / "t.parquet", read_dictionary=["g", "l.list.element"]).read()
    assert pa.types.is_dictionary(read.schema.field("g").type)
    assert pa.types.is_dictionary(read.schema.field("l").type.value_type)
    enc = TagEncoder(min_frequency=1).fit(table)
    assert TagEncoder(min_frequency=1).fit(read).dimensions_ == enc.dimensions_
    np.testing.assert_array_equal(enc.encode(read, order="F"), enc.transform(table))
    assert f"l={OTHER}" in enc.get_feature_names_out()


def test_encode_rejects_a_wrong_buffer() -> None:
    table = pa.table({"g": pa.array(["x", "y"] * 30)})
    enc = TagEncoder(min_frequency=1).fit(table)
    with pytest.raises(ConfigError, match="contiguous float32"):
        enc.encode(table, order="F", out=np.zeros((60, 3), dtype=np.float32))  # C order
    with pytest.raises(ConfigError, match="shape"):
        enc.encode(table, out=np.zeros((59, 3), dtype=np.float32))


# --------------------------------------------------------------------------- compiled forest


def _probe_values(booster: lgb.Booster, rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows whose values sit on, just around and far from the model's split thresholds."""
    thresholds = [float(t) for t in booster.trees_to_dataframe()["threshold"].dropna()]
    special = [0.0, -0.0, 1e-40, -1e-40, 1e-35, -1e-35, 1.0, -1.0, 1e30, -1e30, np.nan]
    pool = np.array(
        [
            *thresholds,
            *np.nextafter(thresholds, np.inf),
            *np.nextafter(thresholds, -np.inf),
            *special,
        ]
    )
    X = rng.choice(pool, size=(n, d))
    mixed = rng.random((n, d)) < 0.3
    X[mixed] = rng.normal(size=int(mixed.sum()))
    return X


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    num_leaves=st.integers(2, 13),
    zero_as_missing=st.booleans(),
    use_missing=st.booleans(),
    binary_features=st.booleans(),
)
def test_forest_equals_lightgbm(
    seed: int, num_leaves: int, zero_as_missing: bool, use_missing: bool, binary_features: bool
) -> None:
    rng = np.random.default_rng(seed)
    n, d = 400, 5
    X = rng.normal(size=(n, d))
    if binary_features:
        X[:, :3] = rng.random((n, 3)) < 0.3
    X[rng.random((n, d)) < 0.15] = np.nan
    X[rng.random((n, d)) < 0.15] = 0.0
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) + rng.normal(size=n) > 0).astype(int)
    model = lgb.LGBMClassifier(
        n_estimators=8,
        num_leaves=num_leaves,
        min_child_samples=5,
        zero_as_missing=zero_as_missing,
        use_missing=use_missing,
        random_state=seed,
        verbose=-1,
    ).fit(X, y)
    booster = model.booster_
    forest = _Forest.compile(booster.model_to_string())
    assert forest is not None
    probe = _probe_values(booster, rng, 3000, d)
    for data in (probe, probe.astype(np.float32), np.asfortranarray(probe.astype(np.float32))):
        np.testing.assert_array_equal(forest.raw(data), booster.predict(data, raw_score=True))
        np.testing.assert_array_equal(forest.proba(data), booster.predict(data))


def test_forest_handles_constant_trees_and_saturated_scores() -> None:
    X = np.zeros((100, 2))
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)
    stump = lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(X, y).booster_
    forest = _Forest.compile(stump.model_to_string())
    assert forest is not None
    assert all(t.constant is not None for t in forest.trees)
    np.testing.assert_array_equal(forest.proba(X), stump.predict(X))
    # Raw scores around exp()'s overflow (-sigmoid * raw > 709.78): C's exp gives inf there,
    # so the probability is exactly 0; math.exp raises instead and must be caught.
    text = stump.model_to_string()
    lines = [line for line in text.splitlines() if not line.startswith("tree_sizes=")]
    first = next(i for i, line in enumerate(lines) if line.startswith("leaf_value="))
    for value in (-800.0, -709.9, -709.5, -709.0, 0.25, 745.0):
        lines[first] = f"leaf_value={value!r}"
        edited = "\n".join(lines) + "\n"
        booster = lgb.Booster(model_str=edited)
        forest = _Forest.compile(edited)
        assert forest is not None
        np.testing.assert_array_equal(forest.proba(X[:3]), booster.predict(X[:3]))


def test_forest_declines_what_it_does_not_replicate() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + rng.normal(size=600) > 0).astype(int)
    deep = lgb.LGBMClassifier(n_estimators=2, num_leaves=31, min_child_samples=2, verbose=-1)
    assert _Forest.compile(deep.fit(X, y).booster_.model_to_string()) is None
    Xc = X.copy()
    Xc[:, 2] = rng.integers(0, 5, 600)
    cat = lgb.LGBMClassifier(n_estimators=5, min_child_samples=2, verbose=-1)
    cat.fit(Xc, (Xc[:, 2] == 3).astype(int), categorical_feature=[2])
    assert _Forest.compile(cat.booster_.model_to_string()) is None
    # ... and a restored booster then predicts with LightGBM itself.
    restored = _Booster(cat.booster_.model_to_string())
    assert restored.forest_ is None
    np.testing.assert_array_equal(restored.positive(Xc), cat.booster_.predict(Xc))
    small = lgb.LGBMClassifier(n_estimators=2, num_leaves=4, verbose=-1).fit(X, y).booster_
    forest = _Forest.compile(small.model_to_string())
    assert forest is not None
    with pytest.raises(ValueError, match="features"):
        forest.raw(X[:, :2])


# --------------------------------------------------------------------------- scoring


def _universe(n: int, seed: int) -> tuple[pa.Table, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    gender = rng.choice(["f", "m", "unknown"], n)
    tier = rng.choice(["1", "2", "3", "4"], n)
    lists = [
        list(rng.choice(["sport", "beauty", "auto", "food"], rng.integers(0, 3))) for _ in range(n)
    ]
    days = rng.poisson(2, n).astype(float)
    days[rng.random(n) < 0.1] = np.nan
    logit = -3 + 1.5 * (gender == "f") + 0.8 * (tier == "1") + 0.3 * np.nan_to_num(days)
    seeds = rng.random(n) < 1 / (1 + np.exp(-logit))
    table = pa.table(
        {
            "device_id": pa.array([f"dev{seed}-{i:06d}" for i in range(n)]),
            "gender": pa.array(gender),
            "city_tier": pa.array(tier),
            "interests": pa.array(lists, pa.list_(pa.string())),
            "lbs_days_mall": pa.array(days),
        }
    )
    return table, seeds


def _lightgbm_scores(model: LookalikeModel, table: pa.Table) -> np.ndarray[Any, Any]:
    """Scores with every compiled forest switched off: LightGBM's own predict."""
    assert model.pipeline is not None
    est = model.pipeline.named_steps["pu"]
    for booster in [getattr(est, "estimator_", None), *getattr(est, "estimators_", [])]:
        if isinstance(booster, _Booster):
            booster.forest_ = None
    return model.score(table)


@pytest.mark.parametrize("strategy", ["elkan_noto", "bagging", "logistic"])
def test_score_table_equals_lightgbm_scores(strategy: str, tmp_path: Path) -> None:
    train, seeds = _universe(3000, 1)
    model = LookalikeModel(strategy, random_state=0, min_frequency=5).fit(train, seeds)
    saved = save_model_dir(
        tmp_path / "m", model, manifest={}, metrics={}, exclusions=exclusions_table(pa.array([]))
    )
    fresh, _ = _universe(2500, 2)
    loaded = load_model_dir(saved).model
    blocks = score_table(loaded, fresh, block_rows=300)  # 9 blocks, a short last one
    np.testing.assert_array_equal(blocks, loaded.score(fresh))
    if strategy != "logistic":  # (a saved logistic model holds float64 medians and scales)
        np.testing.assert_array_equal(blocks, model.score(fresh))
    if strategy != "logistic":  # the compiled forests were used ...
        assert loaded.pipeline is not None
        est = loaded.pipeline.named_steps["pu"]
        boosters = [getattr(est, "estimator_", None), *getattr(est, "estimators_", [])]
        assert boosters[1:] or isinstance(boosters[0], _Booster)
        assert all(b.forest_ is not None for b in boosters if isinstance(b, _Booster))
    # ... and give LightGBM's own numbers.
    np.testing.assert_array_equal(blocks, _lightgbm_scores(loaded, fresh))


def test_score_universe_parquet_equals_lightgbm_scores(tmp_path: Path) -> None:
    """Row groups read with Parquet dictionaries, scored in blocks: LightGBM's numbers, in order."""
    train, seeds = _universe(3000, 3)
    model = LookalikeModel("elkan_noto", random_state=0, min_frequency=5).fit(train, seeds)
    seed_ids = train["device_id"].filter(pa.array(seeds)).combine_chunks()
    saved = save_model_dir(
        tmp_path / "m", model, manifest={}, metrics={}, exclusions=exclusions_table(seed_ids)
    )
    universe = pa.concat_tables([train.slice(0, 1000), _universe(2000, 4)[0]])
    pq.write_table(universe, tmp_path / "u.parquet", row_group_size=700)
    result = score_universe(
        saved, tmp_path / "u.parquet", tmp_path / "out", spec=GroupSpec.parse("0.1,0.3"), kinds=None
    )
    scored = pq.read_table(result.scores_path)
    assert scored["device_id"].to_pylist() == universe["device_id"].to_pylist()
    expected = _lightgbm_scores(load_model_dir(saved).model, universe)
    np.testing.assert_array_equal(scored["score"].to_numpy(), expected)
    seeds_in = int(np.sum(seeds[:1000]))
    assert result.excluded == {"seed": seeds_in}
    assert result.eligible == universe.num_rows - seeds_in


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.5]), max_size=300),
    bounds=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=4, unique=True),
)
def test_cut_points_equal_the_sorted_definition(scores: list[float], bounds: list[float]) -> None:
    """The partial-sort cut is the score at rank ceil(b × n) of the descending sort."""
    spec = GroupSpec.quantiles(sorted(bounds))
    s = np.array(scores, dtype=np.float64)
    ranked = np.sort(s)[::-1]
    expected = [
        float(ranked[math.ceil(b * s.size) - 1]) if math.ceil(b * s.size) >= 1 else math.inf
        for b in spec.bounds
    ]
    assert cut_points(s, spec) == expected
