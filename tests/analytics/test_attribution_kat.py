"""Hand-computed known answers for the attribution models and the order accounting.

Every expected number below is written from the definitions in
``docs/methods.md`` (and the methods reference §3 vectors, cited inline),
not from running the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest

from atoll.analytics.attribution import (
    ALL_MODELS,
    AttributionConfig,
    AttributionResult,
    attribute,
    parse_models,
    rule_credits,
    run_attribution,
)
from atoll.analytics.paths import CampaignWindow, member_edges, prepare
from atoll.errors import ConfigError, SchemaError
from atoll.execution import make_executor
from atoll.ids.mapping import build_id_graph

TZ = ZoneInfo("Asia/Shanghai")
WINDOW = CampaignWindow(date(2026, 6, 1), date(2026, 6, 14))
DAY = 86_400_000

# A touch: (device, channel, event_type, local time); an order: (id, device, local time, amount).
Touch = tuple[str, str, str, datetime]
Order = tuple[str, str, datetime, str]


def at(day: int, hour: float = 12.0, month: int = 6) -> datetime:
    """A local (Asia/Shanghai) time on 2026-<month>-<day>."""
    return datetime(2026, month, day, tzinfo=TZ) + timedelta(hours=hour)


def exposures(touches: Sequence[Touch], cost: float = 0.0) -> pa.Table:
    """A canonical exposure table from (device, channel, type, time) tuples."""
    n = len(touches)
    return pa.table(
        {
            "event_id": pa.array([f"e{i}" for i in range(n)], pa.string()),
            "event_time": pa.array([t[3] for t in touches], pa.timestamp("us", tz="UTC")),
            "event_type": pa.array([t[2] for t in touches], pa.string()),
            "campaign_id": pa.array(["c1"] * n, pa.string()),
            "channel": pa.array([t[1] for t in touches], pa.string()),
            "device_id": pa.array([t[0] for t in touches], pa.string()),
            "cost": pa.array([cost] * n, pa.float64()),
        }
    )


def orders(rows: Sequence[Order]) -> pa.Table:
    """A canonical order table keyed by device id (resolved without a graph)."""
    return pa.table(
        {
            "order_id": pa.array([r[0] for r in rows], pa.string()),
            "order_time": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
            "amount": pa.array([Decimal(r[3]) for r in rows], pa.decimal128(18, 2)),
            "device_id": pa.array([r[1] for r in rows], pa.string()),
        }
    )


def run(
    touches: Sequence[Touch], order_rows: Sequence[Order], **options: object
) -> AttributionResult:
    """Attribute with every model and per-order credits kept."""
    config = AttributionConfig(window=WINDOW, **options)  # type: ignore[arg-type]
    return run_attribution(exposures(touches), orders(order_rows), config, keep_order_credits=True)


def credits_of(result: AttributionResult, model: str) -> dict[str, float]:
    """Attributed orders per channel under ``model``."""
    return {
        name: round(float(result.credits[model][0][i]), 9) for i, name in enumerate(result.channels)
    }


def order_credits(result: AttributionResult, model: str, order_id: str) -> list[float]:
    """The credits of one order's touches under a rule model, in time order."""
    assert result.order_credits is not None
    table = result.order_credits.to_pylist()
    return [r["credit"] for r in table if r["model"] == model and r["order_id"] == order_id]


# ------------------------------------------------------------------ rule models


def test_time_decay_vectors_from_the_reference() -> None:
    # methods reference §3.1: H = 7 d, touches 14, 7, 0 days before -> 1/7, 2/7, 4/7.
    seg = np.zeros(3, dtype=np.int64)
    click = np.zeros(3, dtype=np.bool_)
    credit = rule_credits("time_decay", seg, click, np.array([14, 7, 0]) * DAY)
    assert credit == pytest.approx([1 / 7, 2 / 7, 4 / 7], rel=1e-9)
    # 10, 3, 0 days -> [0.175691, 0.351383, 0.472926] (reference, 6 decimals).
    credit = rule_credits("time_decay", seg, click, np.array([10, 3, 0]) * DAY)
    assert credit == pytest.approx([0.175691, 0.351383, 0.472926], abs=5e-7)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1.0]),
        (2, [0.5, 0.5]),
        (3, [0.4, 0.2, 0.4]),
        (5, [0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4]),
    ],
)
def test_position_based(n: int, expected: list[float]) -> None:
    seg = np.zeros(n, dtype=np.int64)
    credit = rule_credits("position_based", seg, np.zeros(n, np.bool_), np.arange(n)[::-1] * DAY)
    assert credit == pytest.approx(expected, rel=1e-12)


def test_single_touch_gets_everything_in_every_model() -> None:
    result = run([("d1", "A", "impression", at(3))], [("o1", "d1", at(5), "100.00")])
    for model in ALL_MODELS:
        assert credits_of(result, model) == {"A": 1.0}, model
        assert float(result.credits[model][1][0]) == pytest.approx(100.0), model


def test_two_touches_each_model() -> None:
    touches = [("d1", "A", "impression", at(1)), ("d1", "B", "impression", at(8))]
    result = run(touches, [("o1", "d1", at(15), "90.00")])
    assert credits_of(result, "first_touch") == {"A": 1.0, "B": 0.0}
    assert credits_of(result, "last_touch") == {"A": 0.0, "B": 1.0}
    assert credits_of(result, "linear") == {"A": 0.5, "B": 0.5}
    assert credits_of(result, "position_based") == {"A": 0.5, "B": 0.5}
    # Ages 14 and 7 days: weights 2^-2 and 2^-1 -> 1/3 and 2/3.
    decay = credits_of(result, "time_decay")
    assert decay["A"] == pytest.approx(1 / 3)
    assert decay["B"] == pytest.approx(2 / 3)
    assert credits_of(result, "shapley") == {"A": 0.5, "B": 0.5}
    # Sales follow the credits: 90 × 2/3 = 60 to B under time decay.
    assert float(result.credits["time_decay"][1][1]) == pytest.approx(60.0)


def test_repeated_channels_count_per_occurrence_except_shapley() -> None:
    touches = [
        ("d1", "A", "impression", at(2)),
        ("d1", "A", "impression", at(3)),
        ("d1", "B", "impression", at(4)),
    ]
    result = run(touches, [("o1", "d1", at(5), "30.00")])
    assert credits_of(result, "linear") == pytest.approx({"A": 2 / 3, "B": 1 / 3})
    assert credits_of(result, "position_based") == pytest.approx({"A": 0.6, "B": 0.4})
    assert credits_of(result, "first_touch") == {"A": 1.0, "B": 0.0}
    # Shapley splits over *distinct* channels.
    assert credits_of(result, "shapley") == {"A": 0.5, "B": 0.5}
    # Markov collapses the repeat: one path A > B converting, no null journeys:
    # P = 1, removing either channel kills it -> RE 1 and 1 -> 0.5 each.
    assert credits_of(result, "markov_1") == {"A": 0.5, "B": 0.5}


def test_click_priority_last_touch() -> None:
    touches = [
        ("d1", "A", "impression", at(2)),
        ("d1", "A", "click", at(2, 12.01)),
        ("d1", "B", "impression", at(4)),
    ]
    result = run(touches, [("o1", "d1", at(5), "10.00")])
    assert credits_of(result, "last_touch") == {"A": 0.0, "B": 1.0}
    assert credits_of(result, "last_touch_click_priority") == {"A": 1.0, "B": 0.0}
    # Without any click, click priority is plain last touch.
    no_click = run([t for t in touches if t[2] != "click"], [("o1", "d1", at(5), "10.00")])
    assert credits_of(no_click, "last_touch_click_priority") == {"A": 0.0, "B": 1.0}
    # The click_priority option applies to every model: the path becomes [click A].
    only_clicks = run(touches, [("o1", "d1", at(5), "10.00")], click_priority=True)
    assert credits_of(only_clicks, "linear") == {"A": 1.0, "B": 0.0}


def test_lookbacks_drop_old_touches() -> None:
    touches = [
        ("d1", "A", "click", at(1)),
        ("d1", "B", "impression", at(9)),
        ("d1", "C", "impression", at(12)),
    ]
    order = [("o1", "d1", at(13), "10.00")]
    result = run(touches, order, view_lookback_days=2.0)
    # B (4 days old) is beyond the 2-day view lookback; the 12-day-old click stays.
    assert credits_of(result, "linear") == {"A": 0.5, "B": 0.0, "C": 0.5}
    result = run(touches, order, click_lookback_days=7.0, view_lookback_days=2.0)
    assert credits_of(result, "linear") == {"A": 0.0, "B": 0.0, "C": 1.0}
    result = run(touches, order, click_lookback_days=0.5, view_lookback_days=0.5)
    assert result.order_status["no_touch_in_lookback"]["orders"] == 1
    assert result.attributed_orders == 0


# ------------------------------------------------------------------ Markov / Shapley end to end


def toy1() -> tuple[list[Touch], list[Order]]:
    """Reference §3.2 toy 1 as persons: GA conv 2 null 1; mailing conv 1; GA>mailing conv 1."""
    touches: list[Touch] = [
        ("p1", "google ads", "impression", at(2)),
        ("p2", "google ads", "impression", at(2)),
        ("p3", "google ads", "impression", at(2)),
        ("p4", "mailing", "impression", at(2)),
        ("p5", "google ads", "impression", at(2)),
        ("p5", "mailing", "impression", at(3)),
    ]
    order_rows: list[Order] = [
        ("o1", "p1", at(4), "10.00"),
        ("o2", "p2", at(4), "10.00"),
        ("o4", "p4", at(4), "10.00"),
        ("o5", "p5", at(4), "10.00"),
    ]
    return touches, order_rows


def test_toy1_all_models() -> None:
    result = run(*toy1())
    # Exact Markov: P(conv) = 0.8, RE_GA = 0.75, RE_mail = 0.5 -> 2.4 / 1.6 (reference §3.2).
    assert result.markov[1].p_conversion == pytest.approx(0.8)
    assert result.markov[1].removal_effects.tolist() == pytest.approx([0.75, 0.5])
    assert credits_of(result, "markov_1") == pytest.approx({"google ads": 2.4, "mailing": 1.6})
    # Heuristics (reference: first 3/1, last 2/2, linear 2.5/1.5) and Zhao Shapley 2.5/1.5.
    assert credits_of(result, "first_touch") == {"google ads": 3.0, "mailing": 1.0}
    assert credits_of(result, "last_touch") == {"google ads": 2.0, "mailing": 2.0}
    assert credits_of(result, "linear") == {"google ads": 2.5, "mailing": 1.5}
    assert credits_of(result, "shapley") == {"google ads": 2.5, "mailing": 1.5}
    # Order 2 on these paths (length <= 2) has the same removal effects.
    assert credits_of(result, "markov_2") == pytest.approx({"google ads": 2.4, "mailing": 1.6})


def test_markov_loops_toy2_end_to_end() -> None:
    # Reference §3.2 toy 2: A>B>A>B>B>A, A>B>B>A>A, A>A, one conversion each -> A 2.0, B 1.0.
    paths = ["ABABBA", "ABBAA", "AA"]
    touches: list[Touch] = []
    order_rows: list[Order] = []
    for p, path in enumerate(paths):
        for k, ch in enumerate(path):
            touches.append((f"p{p}", ch, "impression", at(2, 1.0 + k)))
        order_rows.append((f"o{p}", f"p{p}", at(5), "1.00"))
    result = run(touches, order_rows)
    assert result.markov[1].removal_effects.tolist() == pytest.approx([1.0, 0.5])
    assert credits_of(result, "markov_1") == pytest.approx({"A": 2.0, "B": 1.0})
    # Heuristics per occurrence (reference): first A 3, last A 3, linear A 2.1 / B 0.9.
    assert credits_of(result, "first_touch") == {"A": 3.0, "B": 0.0}
    assert credits_of(result, "last_touch") == {"A": 3.0, "B": 0.0}
    assert credits_of(result, "linear") == pytest.approx({"A": 2.1, "B": 0.9})


# ------------------------------------------------------------------ order accounting


def test_every_order_is_accounted_for() -> None:
    touches = [
        ("d1", "A", "impression", at(5)),
        ("d2", "B", "impression", at(5)),
        ("d2", "B", "click", at(5, 12.1)),
    ]
    order_rows = [
        ("before", "d1", at(3), "1.00"),  # d1's touch comes later
        ("ok", "d1", at(6), "2.00"),
        ("again", "d1", at(7), "4.00"),  # second order of d1
        ("unexposed", "d9", at(6), "8.00"),
        ("early", "d1", at(30, month=5), "16.00"),  # before the campaign
        ("late", "d1", at(30), "32.00"),  # after the window (June 29 is the last day)
        ("lastday", "d2", at(29, 23.9), "64.00"),  # 23:54 local on the last day: in
    ]
    table = orders(order_rows)
    table = table.append_column("phone", pa.array([None] * len(order_rows), pa.string()))
    table = pa.concat_tables(
        [
            table,
            pa.table(
                {
                    "order_id": ["nobody"],
                    "order_time": pa.array([at(6)], pa.timestamp("us", tz="UTC")),
                    "amount": pa.array([Decimal("128.00")], pa.decimal128(18, 2)),
                    "device_id": pa.array([None], pa.string()),
                    "phone": ["13800001111"],
                }
            ),
        ]
    )
    config = AttributionConfig(window=WINDOW)
    result = run_attribution(exposures(touches), table, config)
    status = {k: int(v["orders"]) for k, v in result.order_status.items()}
    assert status == {
        "outside_window": 2,
        "unresolved_id": 1,
        "unexposed": 1,
        "before_first_touch": 1,
        "no_touch_in_lookback": 0,
        "repeat_order": 0,
        "attributed": 3,
    }
    assert result.order_status["attributed"]["sales"] == pytest.approx(70.0)
    first = run_attribution(
        exposures(touches), table, AttributionConfig(window=WINDOW, orders_per_person="first")
    )
    assert first.order_status["repeat_order"] == {"orders": 1, "sales": 4.0}
    assert first.attributed_orders == 2


def test_window_boundaries_follow_the_timezone() -> None:
    touches = [("d1", "A", "impression", at(1, 0.5))]
    rows = [
        ("in_first", "d1", at(1, 1.0), "1.00"),
        ("in_last", "d1", at(29, 23.99), "1.00"),
        ("out_next_midnight", "d1", at(30, 0.0), "1.00"),
    ]
    result = run(touches, rows)
    assert result.order_status["outside_window"]["orders"] == 1
    assert result.attributed_orders == 2
    utc = CampaignWindow(date(2026, 6, 1), date(2026, 6, 14), timezone="UTC")
    assert utc.window_end_ms - WINDOW.window_end_ms == 8 * 3_600_000
    shorter = CampaignWindow(date(2026, 6, 1), date(2026, 6, 14), window_days=0)
    assert shorter.window_end_ms == shorter.campaign_end_ms


def test_phone_and_member_orders_resolve_through_the_graph() -> None:
    touches = [("dev-1", "A", "impression", at(3)), ("dev-2", "B", "impression", at(3))]
    edges = pa.table(
        {
            "id_type_a": ["phone", "phone"],
            "id_a": ["13800001111", "13900002222"],
            "id_type_b": ["device_id", "device_id"],
            "id_b": ["dev-1", "dev-2"],
        }
    )
    members = pa.table({"member_id": ["M01", "M02"], "phone": ["13900002222", None]})
    graph = build_id_graph(pa.concat_tables([edges, member_edges(members).drop(["source"])]))
    order_table = pa.table(
        {
            "order_id": ["by_phone", "by_member", "unknown_member", "formatted_phone"],
            "order_time": pa.array([at(5)] * 4, pa.timestamp("us", tz="UTC")),
            "amount": pa.array([Decimal("1.00")] * 4, pa.decimal128(18, 2)),
            "phone": ["13800001111", None, None, "+86 138-0000-1111"],
            "member_id": [None, "M01", "M02", None],
        }
    )
    result = run_attribution(
        exposures(touches),
        order_table,
        AttributionConfig(window=WINDOW),
        graph=graph,
        keep_order_credits=True,
    )
    assert result.order_status["unresolved_id"]["orders"] == 1
    assert credits_of(result, "last_touch") == {"A": 2.0, "B": 1.0}


# ------------------------------------------------------------------ money, spend, buckets


def test_cpo_roas_roi_zero_cost_and_empty_channel() -> None:
    touches = [("d1", "A", "impression", at(3)), ("d2", "B", "impression", at(3))]
    rows = [("o1", "d1", at(4), "300.00"), ("o2", "d2", at(4), "50.00")]
    spend = pa.table(
        {
            "campaign_id": ["c1", "c1", "c1", "c2"],
            "channel": ["A", "B", "EMPTY", "A"],
            "cost": [60.0, 0.0, 25.0, 40.0],
        }
    )
    config = AttributionConfig(window=WINDOW, models=("last_touch",))
    result = attribute(prepare(exposures(touches), orders(rows), WINDOW), config, spend=spend)
    table = {(r["channel"], r["model"]): r for r in result.channel_rows()}
    a = table[("A", "last_touch")]
    # A: cost 60 + 40 = 100, 1 order, sales 300 -> CPO 100, ROAS 3, ROI 2.
    assert (a["cost"], a["cpo"], a["roas"], a["roi"]) == (100.0, 100.0, 3.0, 2.0)
    b = table[("B", "last_touch")]
    assert (b["cost"], b["cpo"], b["roas"], b["roi"]) == (0.0, 0.0, None, None)
    empty = table[("EMPTY", "last_touch")]
    assert (empty["orders"], empty["cpo"], empty["roas"], empty["roi"]) == (0.0, None, 0.0, -1.0)
    total = table[("(all)", "last_touch")]
    assert (total["cost"], total["orders"], total["sales"]) == (125.0, 2.0, 350.0)
    assert total["cpo"] == 62.5
    assert total["roas"] == 2.8
    assert result.channel_table().column_names == [
        "channel",
        "model",
        "orders",
        "sales",
        "cost",
        "cpo",
        "roas",
        "roi",
        "orders_with_touch",
    ]


def test_buckets_and_executors_do_not_change_results() -> None:
    rng = np.random.default_rng(3)
    touches: list[Touch] = []
    order_rows: list[Order] = []
    for p in range(60):
        for _ in range(int(rng.integers(0, 6))):
            ch = "ABCD"[int(rng.integers(0, 4))]
            kind = "click" if rng.random() < 0.2 else "impression"
            touches.append((f"p{p}", ch, kind, at(1, float(rng.uniform(0, 300)))))
        if rng.random() < 0.6:
            order_rows.append((f"o{p}", f"p{p}", at(1, float(rng.uniform(0, 400))), "9.90"))
    prepared = prepare(exposures(touches), orders(order_rows), WINDOW)
    one = attribute(prepared, AttributionConfig(window=WINDOW, buckets=1))
    many = attribute(prepared, AttributionConfig(window=WINDOW, buckets=7))
    with make_executor("inline") as executor:
        mapped = attribute(prepared, AttributionConfig(window=WINDOW, buckets=5), executor=executor)
    for other in (many, mapped):
        for status, values in one.order_status.items():
            assert other.order_status[status]["orders"] == values["orders"]
            assert other.order_status[status]["sales"] == pytest.approx(values["sales"])
        for model in ALL_MODELS:
            assert other.credits[model][0] == pytest.approx(one.credits[model][0], abs=1e-9)
        for name in [*one.channels, None]:
            got = other.delivery["overall"] if name is None else other.delivery["channels"][name]
            want = one.delivery["overall"] if name is None else one.delivery["channels"][name]
            for key in (
                "impressions",
                "exposure_uv",
                "clicks",
                "click_uv",
                "frequency_distribution",
            ):
                assert got[key] == want[key]


def test_invalid_settings_and_inputs_are_reported() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        parse_models("first_touch,magic")
    assert parse_models("all") == ALL_MODELS
    assert parse_models("markov, linear") == ("linear", "markov_1")
    with pytest.raises(ConfigError):
        AttributionConfig(window=WINDOW, orders_per_person="some")
    with pytest.raises(ConfigError):
        CampaignWindow(date(2026, 6, 2), date(2026, 6, 1))
    with pytest.raises(ConfigError, match="timezone"):
        CampaignWindow(date(2026, 6, 1), date(2026, 6, 2), timezone="Mars/Base")
    bad = exposures([("d1", "A", "impression", at(3))]).drop(["channel"])
    with pytest.raises(SchemaError, match="channel"):
        prepare(bad, orders([]), WINDOW)
    weird = exposures(
        [("d1", "A", "impression", at(3)), ("d1", "A", "hover", at(3)), ("", "A", "click", at(3))]
    )
    prepared = prepare(weird, orders([]), WINDOW)
    assert prepared.event_counts["unknown_event_type"] == 1
    assert prepared.event_counts["invalid_device_id"] == 1
    assert prepared.event_counts["events_used"] == 1
