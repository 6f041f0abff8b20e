"""Markov-chain attribution by removal effect, solved exactly (absorbing chain, linear algebra).

Why: the rule-based models (first/last/linear...) assign credit by position
only. The Markov model (Anderl et al. 2016; the ``ChannelAttribution``
package) asks instead how much the probability of converting drops when a
channel is removed from the journeys. ChannelAttribution *estimates* that
probability by Monte-Carlo simulation, truncated at ``max_step``, which is
biased when journeys loop (methods reference §3.2, toy 2). Here it is solved
exactly: with ``Q`` the transient-to-transient transition matrix and ``r``
the transient-to-conversion vector, the absorption probabilities are
``x = (I − Q)⁻¹ r`` (one sparse solve per removed channel).

Definitions (order ``k`` = 1, 2 or 3):

* a journey is a sequence of channels (consecutive repeats collapsed) ending in
  ``(conversion)`` or ``(null)``;
* the state after the ``j``-th touch is the tuple of the last ``min(j, k)``
  channels (a journey's first ``k − 1`` states are shorter tuples — our
  convention, documented in ``docs/methods.md``); ``(start)`` is the empty
  tuple;
* transition probabilities are transition counts normalized per source state;
* ``P`` = probability of absorption in ``(conversion)`` from ``(start)``;
  removing channel ``i`` sends every transition into a state containing ``i``
  to ``(null)``; ``RE_i = 1 − P₋ᵢ / P``; channel ``i`` receives
  ``RE_i / Σⱼ REⱼ`` of the conversions (and of the sales).

Transition counts are additive, so they are computed per identity bucket and
merged (:func:`merge_transitions`) before the one small solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_array, diags_array, identity
from scipy.sparse.linalg import spsolve

from atoll.errors import ConfigError

__all__ = [
    "MAX_ORDER",
    "MarkovResult",
    "collapse_repeats",
    "merge_transitions",
    "solve_removal_effects",
    "transition_counts",
    "transition_counts_many",
]

#: Highest supported chain order.
MAX_ORDER = 3
_DENSE_KEYS = 1 << 22

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MarkovResult:
    """The solved chain: conversion probability, removal effects and credit shares.

    ``removal_effects[i]`` and ``shares[i]`` are per channel index; ``shares``
    sum to 1 unless no channel has a positive removal effect (then all 0).
    """

    order: int
    p_conversion: float
    removal_effects: npt.NDArray[np.float64]
    shares: npt.NDArray[np.float64]
    states: int


def _check(n_channels: int, order: int) -> None:
    if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise ConfigError(f"Markov order must be 1..{MAX_ORDER}, got {order!r}")
    if n_channels < 1:
        raise ConfigError("Markov attribution needs at least one channel")


def _space(n_channels: int, order: int) -> tuple[int, int]:
    """``(M, S)``: number of history codes and the key stride (M + conversion + null)."""
    base = n_channels + 1
    m = base**order
    return m, m + 2


def collapse_repeats(seg: IntArray, channel: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """Mask keeping a touch unless it repeats the previous touch's channel in the same journey.

    ``seg`` (journey id per touch) must be grouped (equal ids contiguous) and
    touches in time order within a journey.
    """
    keep = np.ones(seg.size, dtype=np.bool_)
    if seg.size > 1:
        keep[1:] = (seg[1:] != seg[:-1]) | (channel[1:] != channel[:-1])
    return keep


def transition_counts(
    seg: IntArray,
    channel: npt.NDArray[np.integer],
    converted: npt.NDArray[np.bool_],
    n_channels: int,
    order: int,
) -> tuple[IntArray, IntArray]:
    """Counted transitions ``(keys, counts)`` of journeys, repeats already collapsed.

    ``seg[i]`` is the journey of touch ``i`` (0..J-1, grouped, time order
    inside), ``channel[i]`` its channel index, ``converted[j]`` whether journey
    ``j`` ends in a conversion. A key encodes ``from_state * S + to_state``
    (see :func:`solve_removal_effects`). Every journey id must have at least
    one touch.
    """
    return transition_counts_many(seg, channel, converted, n_channels, [order])[order]


def transition_counts_many(
    seg: IntArray,
    channel: npt.NDArray[np.integer],
    converted: npt.NDArray[np.bool_],
    n_channels: int,
    orders: list[int],
) -> dict[int, tuple[IntArray, IntArray]]:
    """:func:`transition_counts` for several chain orders, sharing one pass over the touches.

    The order-``k`` state extends the order-``k − 1`` state by one more
    channel digit, so orders 1, 2, 3 cost little more than order 3 alone.
    """
    for order in orders:
        _check(n_channels, order)
    base = n_channels + 1
    n = seg.size
    out: dict[int, tuple[IntArray, IntArray]] = {}
    if n == 0:
        return {k: (np.empty(0, np.int64), np.empty(0, np.int64)) for k in orders}
    first = np.ones(n, dtype=np.bool_)
    first[1:] = seg[1:] != seg[:-1]
    last = np.append(np.flatnonzero(first)[1:] - 1, n - 1)
    ends_in_conversion = converted[seg[last]]
    digit = channel.astype(np.int64) + 1
    state = digit.copy()
    for k in range(1, max(orders) + 1):
        if k > 1:
            d = k - 1
            older = np.zeros(n, dtype=np.int64)
            older[d:] = np.where(seg[d:] == seg[:-d], digit[:-d] * base**d, 0)
            state += older
        if k not in orders:
            continue
        m, stride = _space(n_channels, k)
        previous = np.empty(n, dtype=np.int64)
        previous[0] = 0
        previous[1:] = state[:-1]
        previous[first] = 0  # (start)
        keys = np.concatenate(
            [
                previous * stride + state,
                state[last] * stride + np.where(ends_in_conversion, m, m + 1),
            ]
        )
        if stride * stride <= _DENSE_KEYS:  # small chains: count densely, no sort
            dense = np.bincount(keys, minlength=stride * stride)
            unique = np.flatnonzero(dense)
            out[k] = (unique.astype(np.int64), dense[unique].astype(np.int64))
        else:
            unique, counts = np.unique(keys, return_counts=True)
            out[k] = (unique.astype(np.int64), counts.astype(np.int64))
    return out


def merge_transitions(parts: list[tuple[IntArray, IntArray]]) -> tuple[IntArray, IntArray]:
    """Sum counted transitions from several buckets (keys of the same chain)."""
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    unique, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=counts, minlength=unique.size)
    return unique.astype(np.int64), np.rint(summed).astype(np.int64)


def solve_removal_effects(
    keys: IntArray, counts: IntArray, n_channels: int, order: int
) -> MarkovResult:
    """Solve the absorbing chain exactly and compute every channel's removal effect."""
    _check(n_channels, order)
    m, stride = _space(n_channels, order)
    zeros = np.zeros(n_channels, dtype=np.float64)
    if keys.size == 0:
        return MarkovResult(order, 0.0, zeros, zeros.copy(), 0)
    src = keys // stride
    dst = keys % stride
    transient = np.unique(np.concatenate([src, dst[dst < m], [0]]))
    n = transient.size
    src_i = np.searchsorted(transient, src)
    weight = counts.astype(np.float64)
    out = np.bincount(src_i, weights=weight, minlength=n)
    prob = weight / out[src_i]
    inner = dst < m
    q = csr_array(
        (prob[inner], (src_i[inner], np.searchsorted(transient, dst[inner]))), shape=(n, n)
    )
    to_conv = dst == m
    r = np.bincount(src_i[to_conv], weights=prob[to_conv], minlength=n)
    start = int(np.searchsorted(transient, 0))
    eye = identity(n, format="csr")

    def p_conv(keep: npt.NDArray[np.float64] | None) -> float:
        matrix = q if keep is None else q @ diags_array(keep)
        x = spsolve((eye - matrix).tocsc(), r)
        return float(np.atleast_1d(x)[start])

    p = p_conv(None)
    base = n_channels + 1
    digits = np.stack([(transient // base**d) % base for d in range(order)])
    effects = np.zeros(n_channels, dtype=np.float64)
    if p > 0:
        for channel in range(n_channels):  # one solve per channel, not per row
            contains = (digits == channel + 1).any(axis=0)
            if not contains.any():
                continue
            removed = p_conv((~contains).astype(np.float64))
            effects[channel] = max(0.0, 1.0 - removed / p)
    total = effects.sum()
    shares = effects / total if total > 0 else np.zeros(n_channels, dtype=np.float64)
    return MarkovResult(order, p, effects, shares, n)
