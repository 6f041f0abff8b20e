"""Campaign measurement: reach, frequency, CTR, TA%, and the money ratios CPO, ROAS, ROI.

Why: before any attribution model, a brand asks the delivery questions —
how many people were reached (deduplicated across channels), how often,
how many clicked, how many of them were the target audience — and after it,
what an order cost. These definitions are easy to get subtly wrong
(impressions-based vs UV-based CTR, "ROI" meaning sales/cost in Chinese
practice), so each is pinned here once, with its formula, and every report
shows the formula next to the number (``FORMULAS``).

Definitions (methods reference §2.1-2.2; persons are resolved through the
ID-mapping graph, so "UV" counts persons, not devices):

* impressions: valid impression events in the campaign period;
* exposure UV: distinct persons with ≥ 1 impression; reach (overall) is the
  same over all channels, so a person seen in two channels counts once;
* average frequency: impressions / exposure UV; the frequency distribution
  counts persons by impressions seen (1, 2, …, 9, 10+);
* clicks, click UV; CTR = clicks / impressions;
* TA% = exposed UV in the target audience / exposed UV; TA coverage = exposed
  TA UV / TA size;
* CPO = cost / attributed orders; ROAS = attributed sales / cost;
  ROI = (attributed sales − cost) / cost. Undefined ratios (zero denominator)
  are ``None``, never 0 or infinity.

Everything is computed per identity bucket as additive counts
(:class:`BasicPartial`) and merged, so it scales with the bucket map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FORMULAS",
    "FREQUENCY_BINS",
    "BasicPartial",
    "basic_from_counts",
    "basic_metrics",
    "basic_partial",
    "efficiency",
    "ratio",
]

#: Frequency distribution bins: 1..9 and 10+.
FREQUENCY_BINS = 10
#: The formula shown next to each metric in reports.
FORMULAS: dict[str, str] = {
    "impressions": "count of valid impression events in the campaign period",
    "exposure_uv": "distinct persons with >= 1 impression",
    "reach": "distinct persons with >= 1 impression in any channel (deduplicated)",
    "avg_frequency": "impressions / exposure UV",
    "frequency_distribution": "persons by impressions seen: 1, 2, ..., 9, 10+",
    "clicks": "count of valid click events in the campaign period",
    "click_uv": "distinct persons with >= 1 click",
    "ctr": "clicks / impressions",
    "ta_uv": "exposed persons in the target audience",
    "ta_pct": "exposed UV in TA / exposed UV",
    "ta_coverage": "exposed UV in TA / TA size",
    "cost": "sum of billed event cost in the campaign period (or the spend table)",
    "valid_cost": "sum of the cost of valid (post-IVT) events in the campaign period",
    "orders": "sum over attributed orders of the channel's credit",
    "sales": "sum over attributed orders of credit x order amount",
    "cpo": "cost / attributed orders",
    "roas": "attributed sales / cost",
    "roi": "(attributed sales - cost) / cost",
    "cvr_by_exposure_uv": "attributed orders / exposure UV",
    "cvr_by_clicks": "attributed orders / clicks",
}

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is 0."""
    if denominator == 0:
        return None
    return float(numerator) / float(denominator)


def efficiency(orders: float, sales: float, cost: float) -> dict[str, float | None]:
    """CPO, ROAS and ROI of one channel (see the module docstring for the definitions)."""
    return {
        "cpo": ratio(cost, orders),
        "roas": ratio(sales, cost),
        "roi": ratio(sales - cost, cost),
    }


@dataclass
class BasicPartial:
    """Additive delivery counts of one identity bucket (persons are disjoint across buckets).

    Per channel (index ``c``): ``impressions``, ``clicks``, ``cost``, ``uv``,
    ``click_uv``, ``ta_uv`` and ``frequency[c, f]`` (persons whose
    impression count in the channel falls in bin ``f``: 0 → 1 impression …
    9 → 10+). Overall: ``reach``, ``click_reach``, ``ta_reach``,
    ``frequency_all``.
    """

    impressions: IntArray
    clicks: IntArray
    cost: FloatArray
    uv: IntArray
    click_uv: IntArray
    ta_uv: IntArray
    frequency: IntArray
    reach: int
    click_reach: int
    ta_reach: int
    frequency_all: IntArray

    @classmethod
    def empty(cls, n_channels: int) -> BasicPartial:
        """All-zero counts."""
        z = np.zeros(n_channels, dtype=np.int64)
        return cls(
            z,
            z.copy(),
            np.zeros(n_channels),
            z.copy(),
            z.copy(),
            z.copy(),
            np.zeros((n_channels, FREQUENCY_BINS), dtype=np.int64),
            0,
            0,
            0,
            np.zeros(FREQUENCY_BINS, dtype=np.int64),
        )

    def __add__(self, other: BasicPartial) -> BasicPartial:
        return BasicPartial(
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.cost + other.cost,
            self.uv + other.uv,
            self.click_uv + other.click_uv,
            self.ta_uv + other.ta_uv,
            self.frequency + other.frequency,
            self.reach + other.reach,
            self.click_reach + other.click_reach,
            self.ta_reach + other.ta_reach,
            self.frequency_all + other.frequency_all,
        )


def _bins(counts: IntArray) -> IntArray:
    return np.minimum(counts, FREQUENCY_BINS) - 1


def _frequency(counts: IntArray) -> IntArray:
    """Persons by count bin (1..9, 10+) of the non-zero ``counts``."""
    seen = counts[counts > 0]
    return np.bincount(_bins(seen), minlength=FREQUENCY_BINS).astype(np.int64)


def basic_partial(
    local: IntArray,
    ms: IntArray,
    channel: npt.NDArray[np.integer],
    click: npt.NDArray[np.bool_],
    *,
    n_local: int,
    n_channels: int,
    period: tuple[int, int],
    ta_local: npt.NDArray[np.bool_] | None = None,
) -> BasicPartial:
    """Delivery counts of events inside ``period`` (ms, half-open) of one bucket's persons.

    ``local`` numbers the bucket's persons ``0..n_local-1`` (any order);
    ``ta_local[p]`` says whether local person ``p`` is in the target
    audience. Counting is dense (a ``bincount`` over persons × channels), so
    no sort is needed. ``cost`` is left at 0 (the caller sums it).
    """
    inside = (ms >= period[0]) & (ms < period[1])
    if not inside.all():
        local, channel, click = local[inside], channel[inside], click[inside]
    c = n_channels
    code = local.astype(np.int64) * (2 * c)
    code += channel.astype(np.int64, copy=False) * 2
    code += click
    counts = np.bincount(code, minlength=max(n_local, 1) * c * 2).reshape(-1, c, 2)
    return basic_from_counts(counts[:, :, 0], counts[:, :, 1], ta_local=ta_local)


def basic_from_counts(
    per_pair: IntArray,
    clicked: IntArray,
    *,
    ta_local: npt.NDArray[np.bool_] | None = None,
) -> BasicPartial:
    """Delivery counts from impressions and clicks per local person × channel.

    ``per_pair[p, ch]`` / ``clicked[p, ch]``: impressions / clicks of local
    person ``p`` on channel ``ch`` inside the campaign period (every local
    person a row, channels the columns); ``ta_local`` as in
    :func:`basic_partial`.
    """
    per_pair = np.ascontiguousarray(per_pair)  # views of a wider count table: made dense once
    clicked = np.ascontiguousarray(clicked)
    c = per_pair.shape[1]
    bins = FREQUENCY_BINS
    # Every channel's frequency histogram in one bincount: cell (channel, min(count, 10)).
    binned = np.minimum(per_pair, bins)
    binned += np.arange(c, dtype=binned.dtype) * (bins + 1)
    histogram = np.bincount(binned.ravel(), minlength=c * (bins + 1)).reshape(c, bins + 1)
    frequency = histogram[:, 1:].astype(np.int64)  # counts 1 .. 9 and 10+; 0 left out
    del binned
    per_person = per_pair.sum(axis=1)
    if ta_local is not None:
        ta = np.zeros(per_pair.shape[0], dtype=np.bool_)
        ta[: min(ta_local.size, ta.size)] = ta_local[: ta.size]
        ta_uv = np.count_nonzero(per_pair[ta], axis=0).astype(np.int64)
        ta_reach = int(np.count_nonzero(per_person[ta]))
    else:
        ta_uv = np.zeros(c, dtype=np.int64)
        ta_reach = 0
    return BasicPartial(
        impressions=per_pair.sum(axis=0).astype(np.int64),
        clicks=clicked.sum(axis=0).astype(np.int64),
        cost=np.zeros(c),
        uv=frequency.sum(axis=1),
        click_uv=np.count_nonzero(clicked, axis=0).astype(np.int64),
        ta_uv=ta_uv,
        frequency=frequency,
        reach=int(np.count_nonzero(per_person)),
        click_reach=int(np.count_nonzero(clicked.sum(axis=1))),
        ta_reach=ta_reach,
        frequency_all=_frequency(per_person),
    )


def _frequency_dict(row: IntArray) -> dict[str, int]:
    labels = [str(i) for i in range(1, FREQUENCY_BINS)] + [f"{FREQUENCY_BINS}+"]
    return {label: int(v) for label, v in zip(labels, row, strict=True)}


def _delivery(
    impressions: int,
    uv: int,
    clicks: int,
    click_uv: int,
    ta_uv: int,
    cost: float,
    frequency: IntArray,
    ta_size: int | None,
) -> dict[str, Any]:
    has_ta = ta_size is not None
    return {
        "impressions": impressions,
        "exposure_uv": uv,
        "avg_frequency": ratio(impressions, uv),
        "frequency_distribution": _frequency_dict(frequency),
        "clicks": clicks,
        "click_uv": click_uv,
        "ctr": ratio(clicks, impressions),
        "ta_uv": ta_uv if has_ta else None,
        "ta_pct": ratio(ta_uv, uv) if has_ta else None,
        "ta_coverage": ratio(ta_uv, ta_size or 0) if has_ta else None,
        "cost": float(cost),
    }


def basic_metrics(
    partial: BasicPartial,
    channels: list[str],
    *,
    ta_size: int | None = None,
    cost: FloatArray | None = None,
) -> dict[str, Any]:
    """Per-channel and overall delivery metrics from merged counts.

    ``cost`` overrides the event costs (e.g. from a spend table). Returns
    ``{"channels": {name: metrics}, "overall": metrics}``; the overall
    ``exposure_uv`` is the deduplicated reach.
    """
    spend = partial.cost if cost is None else cost
    per_channel = {
        name: _delivery(
            int(partial.impressions[i]),
            int(partial.uv[i]),
            int(partial.clicks[i]),
            int(partial.click_uv[i]),
            int(partial.ta_uv[i]),
            float(spend[i]),
            partial.frequency[i],
            ta_size,
        )
        for i, name in enumerate(channels)
    }
    overall = _delivery(
        int(partial.impressions.sum()),
        partial.reach,
        int(partial.clicks.sum()),
        partial.click_reach,
        partial.ta_reach,
        float(spend.sum()),
        partial.frequency_all,
        ta_size,
    )
    overall["reach"] = partial.reach
    overall["ta_size"] = ta_size
    return {"channels": per_channel, "overall": overall}
