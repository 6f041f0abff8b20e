"""Report pages and report files shared by the command line and the demo.

Why: ``atoll ivt``, ``atoll report attribution`` and the demo's insight step
render the same reports; the page builders and the JSON writer live here,
beside the page and chart primitives, so no caller reaches into another
command's module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from atoll.analytics.ivt import RULES, IvtEvaluation, IvtReport
from atoll.errors import DataError

__all__ = ["attribution_page", "ivt_page", "write_json"]


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def write_json(obj: Any, path: Path) -> Path:
    """Write ``obj`` as pretty JSON (non-finite floats become null)."""
    try:
        path.write_text(
            json.dumps(_json_ready(obj), indent=2, ensure_ascii=False, default=str) + "\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc})") from exc
    return path


def ivt_page(report: IvtReport, evaluation: IvtEvaluation | None = None) -> Any:
    """The HTML page of an IVT report: per-rule bars, class totals, overlaps, parameters."""
    from atoll.ui import Bar, Page, formula_cell, hbar_chart

    total = int(report.total["events"])
    page = Page("Invalid-traffic report", f"{total:,} events; rules applied before any metric")
    page.kv(
        {
            "events": total,
            "flagged (any rule)": int(report.any["events"]),
            "kept": total - int(report.any["events"]),
            "GIVT": int(report.givt["events"]),
            "SIVT": int(report.sivt["events"]),
        }
    )
    bars = [
        Bar(
            f"{r} ({RULES[r]})",
            float(report.per_rule[r]["events"]),
            tooltip=f"{report.share(int(report.per_rule[r]['events'])):.2%} of events",
        )
        for r in report.rules
    ]
    page.chart(hbar_chart(bars, title="Events flagged per rule"), "an event may match several")
    rows: list[list[Any]] = []
    for r in report.rules:
        s = report.per_rule[r]
        share = report.share(int(s["events"]))
        rows.append(
            [
                r,
                RULES[r],
                int(s["events"]),
                formula_cell(f"{share:.2%}", "flagged events / all events"),
                int(s["impressions"]),
                int(s["clicks"]),
                float(s["cost"]),
                int(s["devices"]),
                int(s["exclusive"]),
            ]
        )
    page.table(
        ["rule", "class", "events", "share", "impressions", "clicks", "cost", "devices", "only"],
        rows,
        caption="Per rule ('only' = flagged by this rule and no other)",
        digits=2,
    )
    page.table(
        ["rule", *report.rules],
        [[a, *[report.overlap[a][b] for b in report.rules]] for a in report.rules],
        caption="Overlap: events flagged by both rules (diagonal = the rule's own count)",
    )
    if evaluation is not None:
        page.heading("Against planted labels")
        page.paragraph(
            f"precision {evaluation.precision:.4f}, recall {evaluation.recall:.4f} "
            "(precision = flagged and labelled / flagged; recall = flagged and labelled / labelled)"
        )
        page.chart(
            hbar_chart(
                [Bar(t, s["recall"] * 100) for t, s in evaluation.by_type.items()],
                title="Recall per planted ivt_type (%)",
                value_format="{:.1f}",
            )
        )
    page.heading("Parameters")
    page.paragraph(json.dumps(report.config, sort_keys=True))
    page.paragraph(json.dumps(report.lists, sort_keys=True))
    return page


def attribution_page(metrics: dict[str, Any]) -> Any:
    """The attribution report page: KPI view, delivery, frequency, model comparison, money."""
    from atoll.ui import (
        Bar,
        Html,
        Page,
        format_number,
        formula_cell,
        grouped_bar_chart,
        hbar_chart,
        histogram,
    )

    formulas = metrics["formulas"]
    settings = metrics["settings"]
    page = Page(
        "Campaign attribution report",
        f"campaign {settings['campaign_period']} · conversion window "
        f"{settings['conversion_window']} ({settings['timezone']})",
    )

    def cell(value: Any, key: str, *, percent: bool = False, digits: int = 2) -> Html:
        return formula_cell(format_number(value, digits, percent=percent), formulas[key])

    kpi = metrics["kpi_view"]
    page.heading("Before → Now")
    page.table(
        ["", "exposure UV", "TA%", "CTR", "→", "CPO", "ROAS", "ROI"],
        [
            [
                f"headline model: {kpi['now']['model']}",
                cell(kpi["before"]["exposure_uv"], "exposure_uv", digits=0),
                cell(kpi["before"]["ta_pct"], "ta_pct", percent=True),
                cell(kpi["before"]["ctr"], "ctr", percent=True),
                "→",
                cell(kpi["now"]["cpo"], "cpo"),
                cell(kpi["now"]["roas"], "roas"),
                cell(kpi["now"]["roi"], "roi"),
            ]
        ],
        caption="ROI here is (sales − cost) / cost; Chinese practice often calls sales / cost "
        "'ROI' (投产比) — that number is ROAS.",
    )
    page.heading("Orders accounted for")
    page.table(
        ["status", "orders", "sales", "note"],
        [
            [r["status"], r["orders"], r["sales"], r["suppression_reason"] or ""]
            for r in metrics["orders"]
        ],
    )
    page.heading("Delivery")
    rows = metrics["delivery"]
    page.table(
        [
            "channel",
            "impressions",
            "exposure UV",
            "avg frequency",
            "clicks",
            "CTR",
            "TA%",
            "TA coverage",
            "cost",
        ],
        [
            [
                r["channel"],
                cell(r["impressions"], "impressions", digits=0),
                cell(r["exposure_uv"], "exposure_uv", digits=0),
                cell(r["avg_frequency"], "avg_frequency"),
                cell(r["clicks"], "clicks", digits=0),
                cell(r["ctr"], "ctr", percent=True),
                cell(r["ta_pct"], "ta_pct", percent=True),
                cell(r["ta_coverage"], "ta_coverage", percent=True),
                cell(r["cost"], "cost"),
            ]
            for r in rows
        ],
        caption="UV counts persons resolved through the ID graph; reach (all) is deduplicated "
        "across channels. Withheld cells show —.",
    )
    labels = [str(i) for i in range(1, 10)] + ["10+"]
    for r in rows:
        page.chart(
            histogram(
                labels,
                [r[f"freq_{label}"] for label in labels],
                title=f"frequency distribution · {r['channel']}",
            ),
            caption=formulas["frequency_distribution"],
        )
    attribution = [r for r in metrics["attribution"] if r["channel"] != "(all)"]
    channels = list(dict.fromkeys(r["channel"] for r in attribution))
    model_names = list(dict.fromkeys(r["model"] for r in attribution))
    by_key = {(r["channel"], r["model"]): r for r in attribution}
    page.heading("Model comparison")
    page.chart(
        grouped_bar_chart(
            channels,
            {m: [by_key[(c, m)]["orders"] for c in channels] for m in model_names},
            title="attributed orders per channel and model",
        ),
        caption=formulas["orders"],
    )
    headline = kpi["now"]["model"]
    page.chart(
        hbar_chart(
            [
                Bar(
                    c,
                    by_key[(c, headline)]["cpo"],
                    note=by_key[(c, headline)]["suppression_reason"] or "",
                )
                for c in channels
                if (c, headline) in by_key
            ],
            title=f"CPO per channel ({headline})",
            value_format="{:,.2f}",
        ),
        caption=formulas["cpo"],
    )
    page.heading("Orders, sales, CPO, ROAS, ROI per channel and model")
    page.table(
        ["model", "channel", "orders", "sales", "cost", "CPO", "ROAS", "ROI", "note"],
        [
            [
                r["model"],
                r["channel"],
                cell(r["orders"], "orders"),
                cell(r["sales"], "sales"),
                cell(r["cost"], "cost"),
                cell(r["cpo"], "cpo"),
                cell(r["roas"], "roas"),
                cell(r["roi"], "roi"),
                r["suppression_reason"] or "",
            ]
            for r in metrics["attribution"]
        ],
    )
    page.heading("Model definitions")
    page.kv({k.removeprefix("model:"): v for k, v in formulas.items() if k.startswith("model:")})
    privacy = metrics["privacy"]["attribution"]
    if privacy["suppressed_rows"]:
        page.note(
            f"{privacy['suppressed_rows']} cells withheld by the privacy guard "
            f"(k = {privacy['policy']['min_cell_size']}); the reason is shown on each row.",
            warning=True,
        )
    return page
