"""Inline SVG charts and the page builder: marks drawn, text escaped, no external resources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atoll.ui import (
    Bar,
    Html,
    Page,
    formula_cell,
    grouped_bar_chart,
    hbar_chart,
    histogram,
    line_chart,
    province_map,
)
from atoll.ui.charts import PROVINCE_TILES, format_number


def _bars(svg: str) -> int:
    return len(re.findall(r'<rect class="bar', svg))


def test_hbar_chart_draws_bars_reference_and_withheld() -> None:
    svg = hbar_chart(
        [Bar("female", 157.5), Bar("male", 38.4), Bar("<script>x</script>", None, note="< k")],
        title="TGI by gender",
        reference=100,
    )
    assert isinstance(svg, Html)
    assert svg.startswith('<svg class="atoll-chart"')
    assert _bars(svg) == 3
    assert 'class="bar withheld"' in svg
    assert 'class="reference"' in svg
    assert "<script>" not in svg  # labels are escaped
    assert "&lt;script&gt;" in svg
    assert "#0072B2" in svg
    assert "#D55E00" in svg


def test_grouped_bars_histogram_and_lines() -> None:
    svg = grouped_bar_chart(
        ["douyin", "weibo"], {"last touch": [10.0, 4.0], "markov": [8.5, None]}, title="models"
    )
    assert _bars(svg) == 4
    hist = histogram(["1", "2", "3", "10+"], [500, 300, 120, 40], title="frequency")
    assert _bars(hist) == 4
    curve = line_chart(
        [0, 0.1, 0.5, 1.0], {"model": [0, 0.3, 0.8, 1.0]}, title="gain", diagonal=True
    )
    assert curve.count('class="line"') == 1
    assert 'class="diagonal"' in curve
    with pytest.raises(ValueError, match="values"):
        line_chart([0, 1], {"bad": [1.0]}, title="x")
    with pytest.raises(ValueError, match="values"):
        grouped_bar_chart(["a"], {"s": [1.0, 2.0]}, title="x")


def test_province_map_and_fallback() -> None:
    svg = province_map({"Guangdong": 130.0, "Tibet": 60.0, "Beijing": None}, title="TGI")
    assert svg.count('class="tile"') == len(PROVINCE_TILES)
    assert "Guangdong: 130" in svg
    bars = province_map({"Atlantis": 120.0, "Lemuria": 80.0}, title="TGI")
    assert _bars(bars) == 2  # unknown names: bars instead of a map


def test_formula_cell_and_page_escape_and_csp(tmp_path: Path) -> None:
    cell = formula_cell("150.0", "= (300/2000) ÷ (10000/100000) × 100")
    assert 'class="formula"' in cell
    assert "300/2000" in cell
    page = Page("Report <1>", "sub & title")
    page.heading("Section").paragraph("a < b").note("careful", warning=True)
    page.kv({"k": 1234, "missing": None})
    page.table(["name", "value", "formula"], [["<b>x</b>", 0.5, cell], ["y", None, object()]])
    page.chart(hbar_chart([Bar("a", 1.0)], title="t"))
    html = page.render()
    assert html.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in html
    assert "default-src 'none'" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "Report &lt;1&gt;" in html
    assert "1,234" in html
    assert "—" in html
    assert not re.search(r"(src|href)=\"https?:", html)  # nothing external
    assert page.charts == 1
    with pytest.raises(TypeError):
        page.chart("<svg></svg>")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cells"):
        page.table(["a", "b"], [[1]])
    path = page.write(tmp_path / "p.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_format_number() -> None:
    assert format_number(None) == "—"
    assert format_number(float("nan")) == "—"
    assert format_number(1234567) == "1,234,567"
    assert format_number(0.1234, 1, percent=True) == "12.3%"
    assert format_number(3.14159, 2) == "3.14"
