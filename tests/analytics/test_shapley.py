"""Shapley attribution: reference vector, exact = simplified, efficiency, symmetry, dummy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.analytics.shapley import (
    coalition_masks,
    count_coalitions,
    exact_shapley,
    merge_coalitions,
    simplified_shapley,
)
from atoll.errors import ConfigError


def test_toy1_reference_values() -> None:
    # Reference §3.3: toy 1 -> GA 2.5, mailing 1.5; full game v({GA})=2, v({M})=1, v(both)=4.
    masks = np.array([0b01, 0b10, 0b11], dtype=np.uint64)
    worth = np.array([2.0, 1.0, 1.0])
    assert simplified_shapley(masks, worth, 2).tolist() == [2.5, 1.5]
    assert exact_shapley(masks, worth, 2).tolist() == pytest.approx([2.5, 1.5])


def test_hand_computed_three_channels() -> None:
    # R({A}) = 6, R({A,B}) = 4, R({A,B,C}) = 3: phi_A = 6 + 2 + 1 = 9, phi_B = 2 + 1, phi_C = 1.
    masks = np.array([0b001, 0b011, 0b111], dtype=np.uint64)
    worth = np.array([6.0, 4.0, 3.0])
    assert simplified_shapley(masks, worth, 3).tolist() == pytest.approx([9.0, 3.0, 1.0])
    assert exact_shapley(masks, worth, 3).tolist() == pytest.approx([9.0, 3.0, 1.0])


def test_masks_counts_and_merge() -> None:
    seg = np.array([0, 0, 0, 1, 2, 2], dtype=np.int64)
    chan = np.array([0, 2, 0, 1, 1, 1], dtype=np.int32)
    masks = coalition_masks(seg, chan, 3, 3)
    assert masks.tolist() == [0b101, 0b010, 0b010]
    unique, counts, sales = count_coalitions(masks, np.array([1.0, 2.0, 3.0]))
    assert unique.tolist() == [0b010, 0b101]
    assert counts.tolist() == [2.0, 1.0]
    assert sales.tolist() == [5.0, 1.0]
    merged = merge_coalitions([(unique, counts, sales), (unique[:1], counts[:1], sales[:1])])
    assert merged[1].tolist() == [4.0, 1.0]
    assert merged[2].tolist() == [10.0, 1.0]


def test_channel_limits() -> None:
    with pytest.raises(ConfigError, match="group channels"):
        coalition_masks(np.zeros(1, np.int64), np.zeros(1, np.int32), 1, 65)
    with pytest.raises(ConfigError, match="simplified"):
        exact_shapley(np.array([1], np.uint64), np.array([1.0]), 21)
    # 40 channels: the simplified form needs no enumeration.
    masks = np.array([(1 << 39) | 1], dtype=np.uint64)
    phi = simplified_shapley(masks, np.array([2.0]), 40)
    assert phi[0] == 1.0
    assert phi[39] == 1.0
    assert phi.sum() == 2.0


coalitions = st.lists(
    st.tuples(st.integers(1, 31), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=30
)


@settings(max_examples=80, deadline=None)
@given(items=coalitions)
def test_exact_equals_simplified_efficiency_symmetry(items: list[tuple[int, float]]) -> None:
    masks = np.array([m for m, _ in items], dtype=np.uint64)
    worth = np.array([w for _, w in items])
    exact = exact_shapley(masks, worth, 5)
    simple = simplified_shapley(masks, worth, 5)
    assert exact == pytest.approx(simple, abs=1e-7)
    # Efficiency: the values add up to v(N) = total worth.
    assert exact.sum() == pytest.approx(worth.sum(), abs=1e-7)
    # Symmetry: swapping channels 0 and 1 in every coalition swaps their values.
    m = masks.astype(np.int64)
    swapped = (m & ~0b11) | ((m & 1) << 1) | ((m >> 1) & 1)
    other = exact_shapley(swapped.astype(np.uint64), worth, 5)
    assert other[[1, 0, 2, 3, 4]] == pytest.approx(exact, abs=1e-7)
    # Dummy: a channel in no coalition gets 0.
    absent = [c for c in range(5) if not (m >> c & 1).any()]
    assert all(abs(exact[c]) < 1e-12 for c in absent)
