"""``atoll ivt``: invalid-traffic filtering of an exposure/click log from the command line.

Why: filtering runs before every measurement, often as a scheduled job over a
day's log; the command wraps :func:`atoll.analytics.ivt.run_ivt` (streamed,
bucketed, on any executor) and writes the kept events, the per-event flags,
the JSON report and an HTML page with per-rule bars, so an analyst can see
what was removed and why without reading code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atoll.analytics.ivt import (
    RULES,
    IvtConfig,
    IvtEvaluation,
    IvtReport,
    default_lists,
    evaluate_ivt,
    run_ivt,
)
from atoll.cli._common import console, fail, out_console
from atoll.data.io import read_table
from atoll.errors import AtollError, ConfigError
from atoll.execution import make_executor
from atoll.ui.reports import ivt_page

app = typer.Typer(help="Invalid-traffic (IVT) filtering of exposure logs.", no_args_is_help=True)


def _config(rules_file: Path | None, only: str | None, skip: str | None) -> IvtConfig:
    config = IvtConfig.from_file(rules_file) if rules_file is not None else IvtConfig()
    rules = list(config.rules)
    if only:
        rules = [r.strip() for r in only.split(",") if r.strip()]
    if skip:
        drop = {r.strip() for r in skip.split(",") if r.strip()}
        unknown = sorted(drop - set(RULES))
        if unknown:
            raise ConfigError(f"--skip names unknown rule(s) {unknown}; known: {', '.join(RULES)}")
        rules = [r for r in rules if r not in drop]
    return IvtConfig.from_mapping({**config.to_dict(), "rules": rules}, source="--only/--skip")


@app.command("run")
def ivt(
    events: Annotated[Path, typer.Option(help="Exposure/click log (CSV or Parquet).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    datacenter_ranges: Annotated[
        Path | None,
        typer.Option(help="Data-centre CIDR list (CSV/Parquet with a 'cidr' column, or text)."),
    ] = None,
    bot_patterns: Annotated[
        Path | None,
        typer.Option(help="Bot user-agent patterns (crawler-user-agents JSON or one a line)."),
    ] = None,
    bot_patterns_case_insensitive: Annotated[
        bool, typer.Option(help="Match bot patterns ignoring case (IAB-style lists).")
    ] = False,
    extra_bot_patterns: Annotated[
        bool, typer.Option(help="Add Atoll's own automation-tool patterns.")
    ] = True,
    device_blacklist: Annotated[
        Path | None, typer.Option(help="Blacklisted device ids, one a line.")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option(help="JSON file of rule parameters (IvtConfig fields).")
    ] = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated rules to run.")] = None,
    skip: Annotated[str | None, typer.Option(help="Comma-separated rules to leave out.")] = None,
    installs: Annotated[
        Path | None,
        typer.Option(help="Installs (device_id, install_time) for click-to-install checks."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Planted labels (event_id, ivt_type), e.g. truth/ivt_labels.parquet."),
    ] = None,
    buckets: Annotated[int, typer.Option(min=1, max=4096, help="Device buckets.")] = 16,
    executor: Annotated[
        str, typer.Option(help="Executor: inline, thread, local or ray.")
    ] = "inline",
) -> None:
    """Flag invalid traffic; write filtered.parquet, flags.parquet, ivt_report.json, ivt.html."""
    try:
        config = _config(rules, only, skip)
        lists = default_lists(
            bot_patterns=bot_patterns,
            extra_bot_patterns=extra_bot_patterns,
            datacenter_ranges=datacenter_ranges,
            device_blacklist=device_blacklist,
            case_insensitive=bot_patterns_case_insensitive,
        )
        with (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress,
            make_executor(executor) as ex,
        ):
            tasks: dict[str, Any] = {}

            def step(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total or None)
                progress.update(tasks[name], completed=done, total=total or None)

            result = run_ivt(
                events,
                out,
                config,
                lists,
                installs_path=installs,
                executor=ex,
                buckets=buckets,
                progress=step,
            )
        evaluation = None
        if labels is not None:
            flags = read_table(result.flags_path)
            evaluation = evaluate_ivt(flags, read_table(labels))
            (out / "ivt_evaluation.json").write_text(
                json.dumps(evaluation.to_dict(), indent=2), encoding="utf-8"
            )
        html_path = out / "ivt.html"
        ivt_page(result.report, evaluation).write(html_path)
    except AtollError as exc:
        raise fail(exc) from None
    _print(result.report, evaluation)
    console.print(
        f"wrote {result.filtered_path}, {result.flags_path}, {result.report_path}, {html_path}"
    )


def _print(report: IvtReport, evaluation: IvtEvaluation | None) -> None:
    table = Table(title=f"IVT: {int(report.total['events']):,} events")
    for col in ("rule", "class", "events", "share", "impressions", "clicks", "devices", "only"):
        table.add_column(col, justify="left" if col in ("rule", "class") else "right")
    for r in report.rules:
        s = report.per_rule[r]
        table.add_row(
            r,
            RULES[r],
            f"{int(s['events']):,}",
            f"{report.share(int(s['events'])):.2%}",
            f"{int(s['impressions']):,}",
            f"{int(s['clicks']):,}",
            f"{int(s['devices']):,}",
            f"{int(s['exclusive']):,}",
        )
    for name, s in (("GIVT", report.givt), ("SIVT", report.sivt), ("any", report.any)):
        table.add_row(
            name,
            "",
            f"{int(s['events']):,}",
            f"{report.share(int(s['events'])):.2%}",
            f"{int(s['impressions']):,}",
            f"{int(s['clicks']):,}",
            f"{int(s['devices']):,}",
            "",
        )
    table.caption = "share = flagged events / all events"
    out_console.print(table)
    if evaluation is not None:
        for line in evaluation.lines():
            out_console.print(line, highlight=False)
