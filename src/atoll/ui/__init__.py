"""Report pages: self-contained HTML with inline SVG charts (the UI edge).

Why: a report must open anywhere, offline, without loading a script or a
font from the network, and must show the formula next to each number. The
chart functions (:mod:`atoll.ui.charts`) return inline SVG; :class:`Page`
(:mod:`atoll.ui.page`) assembles escaped, CSP-locked pages. Each report
family builds its page from these pieces (:func:`persona_page` here).
"""

from atoll.ui.charts import (
    Bar,
    Html,
    format_number,
    grouped_bar_chart,
    hbar_chart,
    histogram,
    line_chart,
    province_map,
)
from atoll.ui.page import Page, formula_cell, persona_page

__all__ = [
    "Bar",
    "Html",
    "Page",
    "format_number",
    "formula_cell",
    "grouped_bar_chart",
    "hbar_chart",
    "histogram",
    "line_chart",
    "persona_page",
    "province_map",
]
