"""Self-contained HTML report pages: one file, inline CSS and SVG, no network.

Why: every Atoll report (persona, attribution, IVT, LBS, lookalike) ends as a
page a marketer opens and forwards. It must work offline and behind strict
proxies, must not phone home, and must show *how* each number was computed
— the issue asks for the formula next to every number, because "ROI" and
"TGI" mean different things to different readers. :class:`Page` is a small
builder (headings, paragraphs, notes, key/value blocks, tables, charts) that
escapes all text, embeds its stylesheet, and sets a Content-Security-Policy
that forbids any fetch, so a page cannot load anything even by accident.
:func:`formula_cell` puts a formula next to a number.

A tiny inline script counts the drawn charts into
``<html data-charts-rendered="N">``; the headless-Chromium test reads it back
to prove the page parsed and ran without errors.

The last section builds the persona page (:func:`persona_page`); other
reports build theirs from the same pieces.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atoll.analytics.persona import PersonaReport
from atoll.errors import DataError
from atoll.ui.charts import Bar, Html, escape, format_number, hbar_chart, province_map

__all__ = ["Cell", "Page", "formula_cell", "persona_page"]

#: What a table cell may hold: text (escaped), numbers, None (—), or trusted markup.
Cell = str | int | float | None | Html

_CSS = """
:root{--ink:#1F2933;--muted:#616E7C;--line:#E4E7EB;--accent:#0072B2;--warn:#B44D12}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--ink);
background:#F7F9FB}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;
border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
.subtitle{color:var(--muted);margin:0 0 16px}
.note{border-left:4px solid var(--accent);background:#EEF6FC;padding:8px 12px;margin:10px 0}
.note.warning{border-color:var(--warn);background:#FDF3EC}
table{border-collapse:collapse;margin:8px 0 16px;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#F5F7FA;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.formula{display:block;color:var(--muted);font-size:11px;white-space:normal}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
.kv dt{color:var(--muted)}.kv dd{margin:0}
figure{margin:12px 0 20px;overflow-x:auto}svg.atoll-chart{max-width:100%;height:auto}
.scroll{overflow-x:auto}figcaption{color:var(--muted);font-size:12px}
.flag{color:var(--warn);font-size:12px}
footer{color:var(--muted);font-size:12px;margin-top:40px}
@media print{body{background:#fff}main{padding:0}}
"""
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
_SCRIPT = (
    "document.documentElement.dataset.chartsRendered="
    "String(document.querySelectorAll('svg.atoll-chart').length);"
)


def formula_cell(value: str, formula: str) -> Html:
    """A number with its formula shown right under it (and as a tooltip)."""
    return Html(
        f'<span class="value" title="{escape(formula)}">{escape(value)}</span>'
        f'<span class="formula">{escape(formula)}</span>'
    )


def _cell(value: object, digits: int) -> tuple[str, bool]:
    if isinstance(value, Html):
        return str(value), True
    if value is None:
        return "—", True
    if isinstance(value, bool):
        return escape("yes" if value else "no"), False
    if isinstance(value, int | float):
        return escape(format_number(value, digits)), True
    return escape(value), False


class Page:
    """A report page under construction; :meth:`render` returns the whole HTML document."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self.charts = 0

    def heading(self, text: str, level: int = 2) -> Page:
        """A section heading (``level`` 2 or 3)."""
        level = 3 if level >= 3 else 2
        self._parts.append(f"<h{level}>{escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str | Html) -> Page:
        """A paragraph of text (escaped unless :class:`Html`)."""
        body = str(text) if isinstance(text, Html) else escape(text)
        self._parts.append(f"<p>{body}</p>")
        return self

    def note(self, text: str | Html, *, warning: bool = False) -> Page:
        """A highlighted note (``warning`` for caveats such as suppressed cells)."""
        body = str(text) if isinstance(text, Html) else escape(text)
        cls = "note warning" if warning else "note"
        self._parts.append(f'<div class="{cls}">{body}</div>')
        return self

    def kv(self, items: Mapping[str, object], digits: int = 1) -> Page:
        """A key/value block."""
        rows = "".join(
            f"<dt>{escape(k)}</dt><dd>{_cell(v, digits)[0]}</dd>" for k, v in items.items()
        )
        self._parts.append(f'<dl class="kv">{rows}</dl>')
        return self

    def chart(self, svg: Html, caption: str = "") -> Page:
        """An inline SVG chart with an optional caption."""
        if not isinstance(svg, Html):
            raise TypeError("chart() takes the Html returned by atoll.ui.charts")
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f"<figure>{svg}{cap}</figure>")
        self.charts += 1
        return self

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        caption: str = "",
        digits: int = 1,
    ) -> Page:
        """A table; numbers are right-aligned, ``None`` shows as —, Html cells are trusted.

        Any other value is shown as its escaped ``str()``.
        """
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        body = []
        for row in rows:
            if len(row) != len(columns):
                raise ValueError(f"table row has {len(row)} cells for {len(columns)} columns")
            cells = []
            for value in row:
                text, numeric = _cell(value, digits)
                cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{escape(caption)}</caption>" if caption else ""
        self._parts.append(
            f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )
        return self

    def raw(self, fragment: Html) -> Page:
        """Insert trusted markup as is."""
        if not isinstance(fragment, Html):
            raise TypeError("raw() takes Html (trusted markup) only")
        self._parts.append(str(fragment))
        return self

    def render(self, *, generated_at: datetime | None = None) -> str:
        """The complete, self-contained HTML document."""
        when = (generated_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        sub = f'<p class="subtitle">{escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{escape(self.title)}</h1>{sub}"
            + "".join(self._parts)
            + f"<footer>Generated by Atoll on {escape(when)} · self-contained page, "
            "no external resources.</footer></main>"
            f"<script>{_SCRIPT}</script></body></html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page (UTF-8, atomically) and return its path."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(self.render(), encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{target}: cannot write the report page ({exc})") from exc
        return target


# --------------------------------------------------------------------------- persona page

_GEO_DIMENSIONS = ("province", "city")
_MAX_BARS = 25


def _pct(value: float | None) -> str:
    return format_number(value, 1, percent=True)


def _tgi_formula(row: Mapping[str, Any]) -> str:
    if row["tgi"] is None:
        return row["flag"] or "not defined"
    return (
        f"= ({row['target_count']:,}/{row['target_known']:,}) ÷ "
        f"({row['base_count']:,}/{row['base_known']:,}) × 100"
    )


def _tgi_bars(rows: Sequence[Mapping[str, Any]]) -> list[Bar]:
    bars = []
    for r in rows:
        note = "*" if r["flag"] == "small_base" else ""
        if r["tgi"] is None:
            bars.append(Bar(r["value"], None, tooltip=r["flag"], note="withheld (< k)"))
        else:
            tip = (
                f"{r['dimension']}={r['value']}: TGI {r['tgi']:.1f} "
                f"({_tgi_formula(r)}); 95% CI {r['ci_low']:.1f}–{r['ci_high']:.1f}"
            )
            bars.append(Bar(r["value"], r["tgi"], tooltip=tip, note=note))
    return bars


def _cells_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[Cell]]:
    out: list[list[Cell]] = []
    for r in rows:
        out.append(
            [
                r["value"],
                r["target_count"],
                formula_cell(
                    _pct(r["target_share"]),
                    "withheld"
                    if r["target_share"] is None
                    else f"= {r['target_count']:,} / {r['target_known']:,}",
                ),
                formula_cell(_pct(r["base_share"]), f"= {r['base_count']:,} / {r['base_known']:,}"),
                formula_cell(format_number(r["tgi"], 1), _tgi_formula(r)),
                None if r["z"] is None else Html(escape(format_number(r["z"], 2))),
                None
                if r["ci_low"] is None
                else Html(
                    escape(f"{format_number(r['ci_low'], 1)} – {format_number(r['ci_high'], 1)}")
                ),
                Html(f'<span class="flag">{escape(r["flag"])}</span>') if r["flag"] else "",
            ]
        )
    return out


def persona_page(report: PersonaReport, *, title: str = "Persona report") -> Page:
    """The persona report page: summary, top tags, per-dimension TGI, geography, channels."""
    m = report.metrics
    aud, guard = m["audience"], m["guard"]
    policy = guard["policy"]
    page = Page(
        title,
        "Target audience (T) against the base (U): shares, TGI = share in T / share in U × 100, "
        "significance and coverage. Unknown values are excluded from shares in both.",
    )
    page.heading("Summary")
    rate = aud["match_rate"]
    page.kv(
        {
            "audience rows": aud["rows"],
            "valid distinct audience IDs": aud["valid_distinct_ids"],
            "matched IDs": aud["matched_ids"],
            "match rate": formula_cell(
                _pct(rate), "= matched distinct IDs / valid distinct audience IDs"
            ),
            "matched devices (T)": aud["matched_devices"],
            "base devices (U)": m["base"]["rows"],
            "minimum cell size k": f"{policy['min_cell_size']} "
            f"(set by {', '.join(policy['min_cell_size_set_by'])})",
            "differential privacy": "off"
            if guard["dp"] is None
            else f"ε {guard['dp']['epsilon_spent']} spent, "
            f"{guard['dp']['epsilon_remaining']} remaining",
        }
    )
    if guard["suppressed_rows"]:
        page.note(
            f"{guard['suppressed_rows']} cells are withheld by the privacy guard "
            f"({guard['suppressed_below_k']} below k = {policy['min_cell_size']}, "
            f"{guard['suppressed_complementary']} complementary); each row says why.",
            warning=True,
        )
    page.note(
        "* = small base (fewer than "
        f"{m['small_base_threshold']} target holders): read with caution. "
        f"Significant = Benjamini–Hochberg at FDR {m['fdr']} on the two-proportion z test "
        "(target vs rest of the base)."
    )

    page.heading("Top distinctive tags")
    if report.top_tags:
        bars = [
            Bar(
                f"{t['dimension']}: {t['value']}",
                t["tgi"],
                tooltip=f"share {_pct(t['target_share'])} vs {_pct(t['base_share'])}",
                note="*" if t["flag"] == "small_base" else "",
            )
            for t in report.top_tags
        ]
        page.chart(
            hbar_chart(
                bars,
                title="Top tags by TGI (significant, not withheld)",
                reference=100,
                label_width=230,
            ),
            "TGI = share in target / share in base × 100; the dashed line is 100 (average).",
        )
    else:
        page.paragraph("No tag is significantly over-represented (or all such cells are withheld).")

    geo = [d for d in _GEO_DIMENSIONS if any(c["dimension"] == d for c in report.coverage)]
    if geo:
        page.heading("Geography")
        for dim in geo:
            rows = report.dimension(dim)
            if dim == "province":
                page.chart(
                    province_map({r["value"]: r["tgi"] for r in rows}, title="TGI by province"),
                    "Tiles coloured by TGI (blue above 100, orange below); grey = withheld.",
                )
            shown = sorted(rows, key=lambda r: -(r["target_share"] or -1))[:_MAX_BARS]
            page.chart(
                hbar_chart(
                    [
                        Bar(
                            r["value"],
                            None if r["target_share"] is None else r["target_share"] * 100,
                            note="" if r["tgi"] is None else f"TGI {r['tgi']:.0f}",
                        )
                        for r in shown
                    ],
                    title=f"Share of target by {dim} (%)",
                    value_format="{:,.1f}",
                    color_by_reference=False,
                ),
                f"Top {len(shown)} {dim} values by share of the target.",
            )

    if report.channels:
        page.heading("Channels: apps most used by the crowd")
        page.chart(
            hbar_chart(
                [
                    Bar(
                        c["app"],
                        c["score"],
                        tooltip=f"reach {_pct(c['reach'])} × TGI {c['tgi']:.0f}",
                    )
                    for c in report.channels
                ],
                title="Channel score = TGI × reach",
                value_format="{:,.0f}",
                color_by_reference=False,
            ),
            "Reach = share of the target holding the app category; score ranks reach and affinity.",
        )
        page.table(
            ["app category", "reach", "TGI", "score"],
            [
                [
                    c["app"],
                    _pct(c["reach"]),
                    format_number(c["tgi"], 1),
                    formula_cell(
                        format_number(c["score"], 1),
                        f"= {c['tgi']:.1f} × {c['reach']:.3f}",
                    ),
                ]
                for c in report.channels
            ],
        )

    if report.product_lines:
        page.heading("Consumption level → product lines")
        page.table(
            ["consumption level", "product line", "share in T", "share in U", "TGI", "advice"],
            [
                [
                    p["consumption_level"],
                    p["product_line"],
                    _pct(p["target_share"]),
                    _pct(p["base_share"]),
                    format_number(p["tgi"], 1),
                    p["recommendation"],
                ]
                for p in report.product_lines
            ],
            caption="Lead with a line when its level's TGI ≥ 110 and significant; "
            "de-emphasise when ≤ 90 and significant.",
        )

    page.heading("All dimensions")
    for cov in report.coverage:
        dim = cov["dimension"]
        rows = report.dimension(dim)
        page.heading(f"{dim}{' (multi-valued)' if cov['multi_valued'] else ''}", level=3)
        page.paragraph(
            f"Coverage: {_pct(cov['target_coverage'])} of target devices and "
            f"{_pct(cov['base_coverage'])} of base devices have a known {dim}."
            + (
                " Shares of a multi-valued tag do not add up to 100%."
                if cov["multi_valued"]
                else ""
            )
        )
        shown = rows[:_MAX_BARS]
        page.chart(
            hbar_chart(_tgi_bars(shown), title=f"TGI by {dim}", reference=100),
            f"{len(shown)} of {len(rows)} values (largest in the base first).",
        )
        page.table(
            ["value", "target count", "share in T", "share in U", "TGI", "z", "95% CI", "flag"],
            _cells_rows(rows),
        )

    page.heading("Method")
    page.table(["quantity", "formula"], [[k, v] for k, v in m["formulas"].items()])
    if m["skipped_columns"]:
        page.paragraph(
            f"Columns not profiled (not categorical): {', '.join(m['skipped_columns'])}."
        )
    return page
