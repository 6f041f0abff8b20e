"""``atoll lbs-tags``: LBS visit-frequency tags from location pings and POIs.

Why: the provider builds LBS tags as a batch job over its ping store; the
command wraps :func:`atoll.analytics.lbs.run_lbs` (streamed, device-bucketed,
on any executor) and writes an ordinary tag table (``device_id`` + tag
columns) that ``atoll report persona``, targeting and lookalike read like
any other tags, plus the visits it was built from.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atoll.analytics.lbs import LbsConfig, StayConfig, run_lbs
from atoll.cli._common import console, fail, print_kv
from atoll.errors import AtollError, ConfigError
from atoll.execution import make_executor

app = typer.Typer(help="LBS tags from location pings and POIs.", no_args_is_help=True)


@app.command("run")
def lbs_tags(
    pings: Annotated[Path, typer.Option(help="Pings: device_id, ts, lat, lon (CSV or Parquet).")],
    pois: Annotated[Path, typer.Option(help="POIs: poi_id, name, category, lat, lon.")],
    out: Annotated[Path, typer.Option(help="Tag table to write (.parquet or .csv).")],
    radius_m: Annotated[
        float, typer.Option(min=1, max=50_000, help="A stay this close to a POI is a visit.")
    ] = 500.0,
    min_days: Annotated[
        int, typer.Option(min=1, help="Frequent: visited on at least this many distinct days.")
    ] = 3,
    days: Annotated[int, typer.Option(min=1, help="Window length (days) ending at --as-of.")] = 30,
    as_of: Annotated[
        str | None,
        typer.Option(help="First local date after the window (default: day after last ping)."),
    ] = None,
    stay_distance_m: Annotated[
        float, typer.Option(min=1, help="Stay-point distance threshold D.")
    ] = 200.0,
    stay_min_minutes: Annotated[
        float, typer.Option(min=0.1, help="Stay-point dwell threshold T (minutes).")
    ] = 10.0,
    stay_max_gap_minutes: Annotated[
        float, typer.Option(min=0.1, help="A longer gap between pings ends a stay (minutes).")
    ] = 120.0,
    timezone: Annotated[str, typer.Option(help="Zone of local dates.")] = "Asia/Shanghai",
    buckets: Annotated[int, typer.Option(min=1, max=4096, help="Device buckets.")] = 16,
    executor: Annotated[
        str, typer.Option(help="Executor: inline, thread, local or ray.")
    ] = "inline",
) -> None:
    """Detect stays, match them to POIs and write visit-frequency tag columns."""
    try:
        try:
            when = date.fromisoformat(as_of) if as_of else None
        except ValueError as exc:
            raise ConfigError(f"--as-of must be a date YYYY-MM-DD, got {as_of!r}") from exc
        config = LbsConfig(
            stay=StayConfig(
                distance_m=stay_distance_m,
                min_dwell_s=stay_min_minutes * 60,
                max_gap_s=stay_max_gap_minutes * 60,
            ),
            radius_m=radius_m,
            min_days=min_days,
            days=days,
            as_of=when,
            timezone=timezone,
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

            result = run_lbs(pings, pois, out, config, executor=ex, buckets=buckets, progress=step)
        summary_path = out.with_name(f"{out.stem}.summary.json")
        summary_path.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    except AtollError as exc:
        raise fail(exc) from None
    print_kv(
        f"LBS tags → {out}",
        {
            "pings": f"{result.counts['pings']:,}",
            "stays": f"{result.counts['stays']:,}",
            "visits (device, POI, day)": f"{result.counts['visits']:,}",
            "devices tagged": f"{result.counts['devices']:,}",
            "window": f"{days} days before {result.as_of.isoformat()}",
            "visits file": str(result.visits_path),
            "summary": str(summary_path),
        },
    )
