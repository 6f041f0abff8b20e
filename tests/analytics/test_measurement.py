"""Delivery metrics (impressions, UV, frequency, CTR, reach, TA%) and money ratios, by hand."""

from __future__ import annotations

import pyarrow as pa
import pytest

from atoll.analytics.attribution import AttributionConfig, attribute
from atoll.analytics.measurement import FORMULAS, efficiency, ratio
from atoll.analytics.paths import TargetAudience, prepare
from tests.analytics.test_attribution_kat import WINDOW, Touch, at, exposures, orders


def delivery_touches() -> list[Touch]:
    touches: list[Touch] = []
    # Channel A: d1 x3 impressions, d2 x1, d3 x12 (10+ bin); d1 clicks twice.
    touches += [("d1", "A", "impression", at(2, h)) for h in (1, 2, 3)]
    touches += [("d2", "A", "impression", at(2))]
    touches += [("d3", "A", "impression", at(3, h)) for h in range(12)]
    touches += [("d1", "A", "click", at(2, 1.1)), ("d1", "A", "click", at(2, 2.1))]
    # Channel B: d1 x1, d4 x2; d4 clicks once.
    touches += [("d1", "B", "impression", at(4)), ("d4", "B", "impression", at(4))]
    touches += [("d4", "B", "impression", at(5)), ("d4", "B", "click", at(5, 0.1))]
    # Outside the campaign period (June 15 local): not delivery, still a touch.
    touches += [("d5", "B", "impression", at(15, 1.0))]
    # Channel C appears only after the campaign: an empty channel in delivery.
    touches += [("d5", "C", "impression", at(16))]
    return touches


def test_basic_metrics_hand_computed() -> None:
    ta = TargetAudience(pa.table({"device_id": ["d1", "d3", "d9"]}), "device_id")
    prepared = prepare(
        exposures(delivery_touches(), cost=0.5), orders([]), WINDOW, target_audience=ta
    )
    result = attribute(prepared, AttributionConfig(window=WINDOW, buckets=3))
    a = result.delivery["channels"]["A"]
    assert a["impressions"] == 16
    assert a["exposure_uv"] == 3
    assert a["avg_frequency"] == pytest.approx(16 / 3)
    assert a["frequency_distribution"] == {
        "1": 1, "2": 0, "3": 1, "4": 0, "5": 0, "6": 0, "7": 0, "8": 0, "9": 0, "10+": 1
    }  # fmt: skip
    assert a["clicks"] == 2
    assert a["click_uv"] == 1
    assert a["ctr"] == pytest.approx(2 / 16)
    # TA = {d1, d3, d9}: exposed TA in A = d1, d3 -> TA% 2/3, coverage 2/3 (d9 never exposed).
    assert a["ta_uv"] == 2
    assert a["ta_pct"] == pytest.approx(2 / 3)
    assert a["ta_coverage"] == pytest.approx(2 / 3)
    assert a["cost"] == pytest.approx(18 * 0.5)
    b = result.delivery["channels"]["B"]
    assert (b["impressions"], b["exposure_uv"], b["clicks"], b["ctr"]) == (3, 2, 1, 1 / 3)
    assert b["ta_pct"] == pytest.approx(0.5)
    c = result.delivery["channels"]["C"]
    assert (c["impressions"], c["exposure_uv"], c["avg_frequency"], c["ctr"]) == (0, 0, None, None)
    overall = result.delivery["overall"]
    # Reach deduplicates d1 (A and B): d1, d2, d3, d4 = 4 persons; 19 impressions.
    assert overall["reach"] == overall["exposure_uv"] == 4
    assert overall["impressions"] == 19
    assert overall["clicks"] == 3
    assert overall["frequency_distribution"]["4"] == 1  # d1: 3 in A + 1 in B
    assert overall["frequency_distribution"]["2"] == 1  # d4
    assert overall["ta_uv"] == 2
    assert overall["ta_pct"] == pytest.approx(0.5)
    assert overall["ta_size"] == 3
    assert overall["ta_coverage"] == pytest.approx(2 / 3)
    assert prepared.ta_counts == {"ta_rows": 3, "ta_invalid_id": 0, "ta_unresolved_id": 0}
    # Billed cost covers the campaign period only (22 events inside it).
    assert overall["cost"] == pytest.approx(22 * 0.5)


def test_without_ta_the_ta_metrics_are_absent() -> None:
    prepared = prepare(exposures(delivery_touches()), orders([]), WINDOW)
    result = attribute(prepared, AttributionConfig(window=WINDOW))
    overall = result.delivery["overall"]
    assert overall["ta_pct"] is None
    assert overall["ta_coverage"] is None
    assert overall["ta_size"] is None


def test_ratios_and_formulas() -> None:
    assert ratio(1, 0) is None
    assert ratio(3, 4) == 0.75
    assert efficiency(orders=4, sales=500, cost=100) == {"cpo": 25.0, "roas": 5.0, "roi": 4.0}
    assert efficiency(orders=0, sales=0, cost=100) == {"cpo": None, "roas": 0.0, "roi": -1.0}
    assert efficiency(orders=2, sales=10, cost=0) == {"cpo": 0.0, "roas": None, "roi": None}
    for key in ("ctr", "cpo", "roas", "roi", "ta_pct", "ta_coverage", "avg_frequency"):
        assert "/" in FORMULAS[key]


def test_conversion_rates_are_named_by_denominator() -> None:
    touches = delivery_touches()
    prepared = prepare(exposures(touches), orders([("o1", "d1", at(6), "10.00")]), WINDOW)
    result = attribute(prepared, AttributionConfig(window=WINDOW, models=("last_touch",)))
    rates = result.conversion_rates()["last_touch"]
    # d1's last touch is B (June 4): 1 order / B's 2 UV, / B's 1 click.
    assert rates["B"] == {"cvr_by_exposure_uv": 0.5, "cvr_by_clicks": 1.0}
    assert rates["A"]["cvr_by_exposure_uv"] == 0.0
    kpi = result.kpi_view()
    assert kpi["before"]["exposure_uv"] == 4
    assert kpi["now"]["model"] == "last_touch"
