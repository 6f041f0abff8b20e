"""Shapley-value attribution over channel coalitions (Zhao, Mahboobi & Bagheri 2018).

Why: Shapley values are the one credit split that is efficient (credits add
up to the total), symmetric (interchangeable channels get equal credit),
gives nothing to a channel that never adds anything, and is additive over
games — properties a media buyer can state in one sentence. The game used
here is Zhao et al.'s (arXiv:1804.05327): ``R(T)`` is the number (or value)
of conversions whose journey touched *exactly* the channel set ``T``, and a
coalition's worth is ``v(S) = Σ_{T ⊆ S} R(T)``. For that game the Shapley
value has a closed form, ``φ_i = Σ_{T ∋ i} R(T) / |T|`` (the "simplified"
Shapley value; Google Ads Data Hub uses the same method).

Two computations, which agree exactly (tested):

* :func:`exact_shapley` builds ``v`` over all ``2^C`` coalitions (a subset-sum
  transform, ``O(C·2^C)``) and applies the Shapley formula — used for up to
  :data:`EXACT_MAX_CHANNELS` channels;
* :func:`simplified_shapley` uses the closed form — linear in the number of
  *distinct* coalitions observed, so any number of channels up to 64 works
  (coalitions are 64-bit masks; group channels beyond that).

Coalition counts are additive: they are computed per identity bucket and
merged (:func:`merge_coalitions`).
"""

from __future__ import annotations

from math import factorial

import numpy as np
import numpy.typing as npt

from atoll.errors import ConfigError

__all__ = [
    "EXACT_MAX_CHANNELS",
    "MAX_CHANNELS",
    "coalition_masks",
    "count_coalitions",
    "exact_shapley",
    "merge_coalitions",
    "simplified_shapley",
]

#: Channels beyond which the exact 2^C enumeration is not attempted.
EXACT_MAX_CHANNELS = 20
#: Channels a coalition mask can hold.
MAX_CHANNELS = 64

FloatArray = npt.NDArray[np.float64]
MaskArray = npt.NDArray[np.uint64]


def _check_channels(n_channels: int) -> None:
    if not 1 <= n_channels <= MAX_CHANNELS:
        raise ConfigError(
            f"Shapley attribution supports 1..{MAX_CHANNELS} channels, got {n_channels}; "
            "group channels (e.g. by media type) first"
        )


def coalition_masks(
    seg: npt.NDArray[np.int64], channel: npt.NDArray[np.integer], n_journeys: int, n_channels: int
) -> MaskArray:
    """The set of distinct channels of each journey as a 64-bit mask.

    ``seg`` must be grouped and cover journey ids ``0..n_journeys-1``, each
    with at least one touch.
    """
    _check_channels(n_channels)
    if n_journeys == 0:
        return np.empty(0, dtype=np.uint64)
    bits = np.left_shift(np.uint64(1), channel.astype(np.uint64))
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    masks: MaskArray = np.bitwise_or.reduceat(bits, starts)
    return masks


def merge_coalitions(
    parts: list[tuple[MaskArray, FloatArray, FloatArray]],
) -> tuple[MaskArray, FloatArray, FloatArray]:
    """Sum ``(masks, conversions, values)`` partials with equal masks."""
    if not parts:
        return np.empty(0, np.uint64), np.empty(0), np.empty(0)
    masks = np.concatenate([p[0] for p in parts])
    unique, inverse = np.unique(masks, return_inverse=True)
    convs = np.bincount(
        inverse, weights=np.concatenate([p[1] for p in parts]), minlength=unique.size
    )
    values = np.bincount(
        inverse, weights=np.concatenate([p[2] for p in parts]), minlength=unique.size
    )
    return unique.astype(np.uint64), convs.astype(np.float64), values.astype(np.float64)


def count_coalitions(
    masks: MaskArray, amounts: FloatArray
) -> tuple[MaskArray, FloatArray, FloatArray]:
    """Distinct masks with their journey counts and summed amounts."""
    unique, inverse = np.unique(masks, return_inverse=True)
    counts = np.bincount(inverse, minlength=unique.size).astype(np.float64)
    values = np.bincount(inverse, weights=amounts, minlength=unique.size)
    return unique.astype(np.uint64), counts, values.astype(np.float64)


def simplified_shapley(masks: MaskArray, worth: FloatArray, n_channels: int) -> FloatArray:
    """``φ_i = Σ_{T ∋ i} R(T)/|T|`` for coalitions ``masks`` with worth ``R`` (Zhao et al.)."""
    _check_channels(n_channels)
    masks = masks.astype(np.uint64)
    if masks.size and (masks == 0).any():
        raise ConfigError("a coalition must contain at least one channel")
    if n_channels < MAX_CHANNELS and masks.size and (masks >> np.uint64(n_channels)).any():
        raise ConfigError("a coalition names a channel index beyond n_channels")
    member = (masks[None, :] >> np.arange(n_channels, dtype=np.uint64)[:, None]) & np.uint64(1)
    sizes = member.sum(axis=0)
    share = np.divide(worth, sizes, out=np.zeros_like(worth, dtype=np.float64), where=sizes > 0)
    phi: FloatArray = member.astype(np.float64) @ share
    return phi


def exact_shapley(masks: MaskArray, worth: FloatArray, n_channels: int) -> FloatArray:
    """Shapley values of the game ``v(S) = Σ_{T ⊆ S} R(T)``, enumerating all 2^C coalitions."""
    if not 1 <= n_channels <= EXACT_MAX_CHANNELS:
        raise ConfigError(
            f"exact Shapley enumerates 2^C coalitions; supported up to {EXACT_MAX_CHANNELS} "
            f"channels, got {n_channels} (use the simplified form, which is equal)"
        )
    size = 1 << n_channels
    masks = masks.astype(np.int64)
    if masks.size and (masks >= size).any():
        raise ConfigError("a coalition names a channel index beyond n_channels")
    v = np.bincount(masks, weights=worth, minlength=size).astype(np.float64)
    for i in range(n_channels):  # subset-sum (zeta) transform
        view = v.reshape(-1, 2, 1 << i)
        view[:, 1, :] += view[:, 0, :]
    popcount = np.zeros(size, dtype=np.int64)
    for i in range(n_channels):
        popcount += (np.arange(size) >> i) & 1
    weights = np.array(
        [
            factorial(s) * factorial(n_channels - s - 1) / factorial(n_channels)
            for s in range(n_channels)
        ]
    )
    phi = np.zeros(n_channels, dtype=np.float64)
    for i in range(n_channels):  # over channels, not rows
        v_view = v.reshape(-1, 2, 1 << i)
        p_view = popcount.reshape(-1, 2, 1 << i)[:, 0, :]
        phi[i] = float((weights[p_view] * (v_view[:, 1, :] - v_view[:, 0, :])).sum())
    return phi
