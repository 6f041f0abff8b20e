"""Properties: every rule model's credits of one order sum to 1, for any paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.analytics.attribution import RULE_MODELS, rule_credits

paths = st.lists(
    st.lists(st.tuples(st.booleans(), st.integers(0, 40 * 86_400_000)), min_size=1, max_size=12),
    min_size=1,
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(
    orders=paths,
    half_life=st.floats(0.1, 30),
    weights=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)).filter(lambda w: sum(w) > 0.01),
)
def test_credits_of_each_order_sum_to_one(
    orders: list[list[tuple[bool, int]]], half_life: float, weights: tuple[float, float]
) -> None:
    seg = np.concatenate([np.full(len(o), i, dtype=np.int64) for i, o in enumerate(orders)])
    click = np.array([c for o in orders for c, _ in o], dtype=np.bool_)
    # Ages decrease along a path (touches in time order).
    age = np.concatenate(
        [np.sort(np.array([a for _, a in o], dtype=np.int64))[::-1] for o in orders]
    )
    for model in RULE_MODELS:
        credit = rule_credits(
            model, seg, click, age, half_life_days=half_life, position_weights=weights
        )
        assert (credit >= 0).all(), model
        sums = np.bincount(seg, weights=credit, minlength=len(orders))
        assert sums == pytest.approx(np.ones(len(orders)), abs=1e-9), model
