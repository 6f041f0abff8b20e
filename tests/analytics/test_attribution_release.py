"""The attribution report passes through the privacy guard: small cells withheld, with reasons."""

from __future__ import annotations

import json

import pytest

from atoll.analytics.attribution import AttributionConfig, release, run_attribution
from atoll.privacy import Guard, PrivacyPolicy
from tests.analytics.test_attribution_kat import WINDOW, Touch, at, exposures, orders


def test_release_suppresses_small_cells_and_keeps_rows() -> None:
    touches: list[Touch] = [(f"a{i}", "A", "impression", at(2)) for i in range(5)]
    touches += [("b0", "B", "impression", at(2))]
    order_rows = [(f"o{i}", f"a{i}", at(3), "10.00") for i in range(4)]
    order_rows += [("ob", "b0", at(3), "99.00")]
    config = AttributionConfig(window=WINDOW, models=("last_touch", "linear"))
    result = run_attribution(exposures(touches, cost=1.0), orders(order_rows), config)
    guard = Guard(PrivacyPolicy(min_cell_size=3))
    out = release(result, guard)
    rows = {(r["channel"], r["model"]): r for r in out.channels.to_pylist()}
    # A: 4 orders touched by A >= 3: released; B: 1 order < 3: withheld with the reason.
    assert rows[("A", "last_touch")]["orders"] == pytest.approx(4.0)
    assert rows[("A", "last_touch")]["cpo"] == pytest.approx(5.0 / 4.0)
    b = rows[("B", "last_touch")]
    assert b["suppressed"]
    assert b["orders"] is None
    assert b["cpo"] is None
    assert "fewer than 3" in b["suppression_reason"]
    assert out.channels.num_rows == result.channel_table().num_rows  # nothing disappears
    delivery = {r["channel"]: r for r in out.delivery.to_pylist()}
    assert delivery["A"]["exposure_uv"] == 5
    assert delivery["A"]["avg_frequency"] == 1.0
    assert delivery["B"]["suppressed"]
    assert delivery["B"]["ctr"] is None
    metrics = out.metrics
    json.dumps(metrics)  # JSON-ready
    assert metrics["privacy"]["attribution"]["suppressed_below_k"] == 2
    assert metrics["kpi_view"]["before"]["exposure_uv"] == 6
    statuses = {r["status"]: r for r in metrics["orders"]}
    assert statuses["attributed"]["orders"] == 5
    assert statuses["unexposed"]["suppressed"]  # 0 < k: withheld, not dropped
