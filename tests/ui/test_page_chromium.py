"""Report pages render in headless Chromium: charts drawn, no console errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from atoll.analytics.persona import persona
from atoll.privacy import Guard, PartyRule, PrivacyPolicy
from atoll.ui import (
    Bar,
    Page,
    grouped_bar_chart,
    hbar_chart,
    histogram,
    line_chart,
    persona_page,
    province_map,
)
from tests.ui.chromium import check_page


def test_every_chart_kind_renders(tmp_path: Path) -> None:
    page = Page("All charts")
    page.chart(hbar_chart([Bar("a", 120.0), Bar("b", None, note="< k")], title="h", reference=100))
    page.chart(grouped_bar_chart(["x", "y"], {"s1": [1.0, 2.0], "s2": [2.0, None]}, title="g"))
    page.chart(histogram(["1", "2", "3+"], [10, 5, 2], title="freq"))
    page.chart(line_chart([0, 0.5, 1], {"gain": [0, 0.7, 1]}, title="gain", diagonal=True))
    page.chart(province_map({"Guangdong": 130.0, "Sichuan": 70.0}, title="map"))
    rendered = check_page(page.write(tmp_path / "charts.html"), tmp_path, min_charts=5)
    assert rendered.charts == 5
    assert rendered.count("rect") > 40  # bars + map tiles


def test_persona_page_renders(tmp_path: Path) -> None:
    n = 4000
    universe = pa.table(
        {
            "device_id": [f"d{i}" for i in range(n)],
            "gender": [("female", "male", "unknown")[i % 3] for i in range(n)],
            "province": [("Guangdong", "Beijing", "Sichuan", "Tibet")[i % 4] for i in range(n)],
            "city": [f"c{i % 9}" for i in range(n)],
            "consumption_level": [("low", "mid", "high", "premium", None)[i % 5] for i in range(n)],
            "app_categories": pa.array(
                [["social", "beauty"] if i % 2 else ["games"] for i in range(n)],
                pa.list_(pa.string()),
            ),
        }
    )
    audience = [f"d{i}" for i in range(0, n, 3)] + [f"d{i}" for i in range(1, n, 10)]
    guard = Guard(PrivacyPolicy.strictest([PartyRule("brand", 50)]))
    report = persona(audience, universe, id_column="device_id", guard=guard)
    page = persona_page(report)
    assert page.charts >= 6
    check_page(page.write(tmp_path / "persona.html"), tmp_path, min_charts=page.charts)


def test_the_check_catches_console_errors(tmp_path: Path) -> None:
    from atoll.ui import Html
    from tests.ui.chromium import render

    page = Page("Broken").raw(Html("<script>throw new Error('boom')</script>"))
    rendered = render(page.write(tmp_path / "broken.html"), tmp_path / "profile")
    assert any("Uncaught Error: boom" in line for line in rendered.console)
