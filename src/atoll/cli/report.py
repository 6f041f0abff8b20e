"""``atoll report …``: analytics reports written as CSV + ``metrics.json`` + an HTML page.

Why: the reports are what brands pay for; each sub-command parses options,
calls the library (:mod:`atoll.analytics`), passes the result through the
collaboration's output guard (:mod:`atoll.privacy`), and writes the three
artefacts every report has — machine-readable rows, a metrics file and a
self-contained page with charts (:mod:`atoll.ui`). Sub-commands live in
separate blocks below so that each report family adds its own without
touching the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from atoll.cli._common import console, fail, out_console, print_kv
from atoll.errors import AtollError, ConfigError
from atoll.ui.reports import attribution_page, write_json

app = typer.Typer(
    help="Analytics reports (persona/TGI, attribution): CSV + metrics.json + HTML page.",
    no_args_is_help=True,
)

__all__ = ["app", "progress_bar", "write_json"]


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """The rich progress display every report command uses (on stderr)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield progress


def _split(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(dict.fromkeys(items)) or None


def _product_lines(spec: str | None) -> tuple[tuple[str, str], ...] | None:
    if spec is None:
        return None
    pairs = []
    for item in spec.split(","):
        if not item.strip():
            continue
        level, sep, line = item.partition("=")
        if not sep or not level.strip() or not line.strip():
            raise ConfigError(
                f"--product-lines takes level=line pairs separated by commas, got {item!r}"
            )
        pairs.append((level.strip(), line.strip()))
    return tuple(pairs)


# =========================================================================== persona


@app.command("persona")
def persona_cmd(
    audience: Annotated[Path, typer.Option(help="Target audience file (CSV or Parquet).")],
    id_column: Annotated[str, typer.Option(help="Identifier column of the audience file.")],
    universe: Annotated[
        Path,
        typer.Option(help="Base: the provider universe (CSV, Parquet or a bucketed dataset)."),
    ],
    out: Annotated[Path, typer.Option(help="Output folder (persona.csv, metrics.json, HTML).")],
    universe_id_column: Annotated[
        str | None,
        typer.Option(help="Identifier column of the base (default: same as --id-column)."),
    ] = None,
    dimensions: Annotated[
        list[str] | None,
        typer.Option(help="Dimensions to profile (repeat or comma-separate; default: all tags)."),
    ] = None,
    id_type: Annotated[
        str | None,
        typer.Option(help="Normalize both ID columns as this kind first (phone, oaid, …)."),
    ] = None,
    k: Annotated[
        int, typer.Option(min=1, help="Minimum cell size (the contract's may be stricter).")
    ] = 50,
    contract: Annotated[
        Path | None, typer.Option(help="Collaboration contract (TOML) with a [privacy] table.")
    ] = None,
    small_base: Annotated[
        int, typer.Option(min=1, help="Flag cells with fewer target holders.")
    ] = 100,
    product_lines: Annotated[
        str | None,
        typer.Option(help="Consumption level → product line, e.g. 'low=shampoo,high=serum'."),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="Executor for bucketed/Parquet bases: inline, local or ray.")
    ] = "inline",
    title: Annotated[str, typer.Option(help="Page title.")] = "Persona report",
) -> None:
    """Persona / TGI of a target audience against the universe (guarded, with an HTML page)."""
    from atoll.analytics.persona import DEFAULT_PRODUCT_LINES, PersonaConfig, persona
    from atoll.data.io import iter_batches, write_table
    from atoll.execution import make_executor
    from atoll.privacy import Guard, PrivacyPolicy
    from atoll.ui import persona_page

    try:
        lines = _product_lines(product_lines)
        config = PersonaConfig(
            dimensions=_split(dimensions),
            small_base=small_base,
            product_lines=lines if lines is not None else DEFAULT_PRODUCT_LINES,
        )
        policy = (
            PrivacyPolicy.from_contract(contract, min_cell_size=k)
            if contract is not None
            else PrivacyPolicy.strictest([], floors={"caller": k})
        )
        guard = Guard(policy)
        ids = []
        for batch in iter_batches(audience):
            if id_column not in batch.schema.names:
                raise ConfigError(
                    f"{audience}: no column {id_column!r} "
                    f"(columns: {', '.join(batch.schema.names)})"
                )
            ids.append(batch.column(id_column))
        import pyarrow as pa

        audience_ids = pa.chunked_array(ids) if ids else pa.chunked_array([], pa.string())
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar() as progress:
            task = progress.add_task("persona: counting base parts", total=None)

            def step(done: int, total: int) -> None:
                progress.update(task, completed=done, total=None if total < 0 else total)

            with make_executor(executor) as ex:
                report = persona(
                    audience_ids,
                    universe,
                    id_column=universe_id_column or id_column,
                    id_kind=id_type,
                    config=config,
                    guard=guard,
                    executor=ex,
                    audience_source=str(audience),
                    audience_column=id_column,
                    progress=step,
                    name=f"persona {audience.name}",
                )
        csv_path = write_table(report.csv_table(), out / "persona.csv", fmt="csv")
        metrics_path = write_json(report.metrics, out / "metrics.json")
        html_path = persona_page(report, title=title).write(out / "persona.html")
    except AtollError as exc:
        raise fail(exc) from None
    aud = report.metrics["audience"]
    guard_summary = report.metrics["guard"]
    print_kv(
        "persona",
        {
            "audience IDs (valid, distinct)": aud["valid_distinct_ids"],
            "matched devices": aud["matched_devices"],
            "match rate": "—" if aud["match_rate"] is None else f"{aud['match_rate']:.1%}",
            "dimensions": len(report.coverage),
            "cells": report.cells.num_rows,
            "withheld cells": f"{guard_summary['suppressed_rows']} (k = {guard.k})",
            "top tags": ", ".join(f"{t['dimension']}={t['value']}" for t in report.top_tags[:5]),
        },
    )
    out_console.print(f"wrote {csv_path}, {metrics_path}, {html_path}")


@app.command("match-rate")
def match_rate_cmd(
    members: Annotated[Path, typer.Option(help="Brand member file (CSV or Parquet).")],
    out: Annotated[Path, typer.Option(help="Output folder (match_rate.csv, metrics.json).")],
    id_columns: Annotated[
        str,
        typer.Option(help="Member ID columns and kinds, e.g. 'phone=phone,oaid=oaid'."),
    ],
    universe: Annotated[
        Path | None, typer.Option(help="Provider universe (CSV or Parquet) for a plain join.")
    ] = None,
    matched: Annotated[
        Path | None, typer.Option(help="Matched IDs from PSI: a file with columns id_type, id.")
    ] = None,
    source_column: Annotated[
        str | None, typer.Option(help="Member column naming each member's source.")
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="Minimum cell size.")] = 50,
    contract: Annotated[
        Path | None, typer.Option(help="Collaboration contract (TOML) with a [privacy] table.")
    ] = None,
) -> None:
    """Match rate of the member base against the universe, per ID type and per source."""
    from atoll.analytics.match_rate import match_rate
    from atoll.data.io import read_table, write_table
    from atoll.privacy import Guard, PrivacyPolicy

    try:
        kinds: dict[str, str] = {}
        for item in id_columns.split(","):
            column, sep, kind = item.partition("=")
            if not item.strip():
                continue
            kinds[column.strip()] = kind.strip() if sep else column.strip()
        policy = (
            PrivacyPolicy.from_contract(contract, min_cell_size=k)
            if contract is not None
            else PrivacyPolicy.strictest([], floors={"caller": k})
        )
        report = match_rate(
            read_table(members),
            id_columns=kinds,
            universe=universe,
            matched=read_table(matched) if matched is not None else None,
            source_column=source_column,
            guard=Guard(policy),
            source=str(members),
        )
        out.mkdir(parents=True, exist_ok=True)
        csv_path = write_table(report.table, out / "match_rate.csv", fmt="csv")
        metrics_path = write_json(
            {"rows": report.table.to_pylist(), "guard": report.guarded.summary()},
            out / "metrics.json",
        )
    except AtollError as exc:
        raise fail(exc) from None
    from rich.table import Table

    table = Table(title=f"match rate of {members}")
    for col in ("id_type", "source", "members", "with_id", "matched", "match_rate", "flag"):
        table.add_column(col)
    for row in report.table.to_pylist():
        rate = "—" if row["match_rate"] is None else f"{row['match_rate']:.1%}"
        table.add_row(
            row["id_type"],
            row["source"],
            str(row["members"]),
            str(row["with_id"]),
            str(row["matched"]),
            rate,
            row["flag"],
        )
    out_console.print(table)
    out_console.print(f"wrote {csv_path}, {metrics_path}")


# =========================================================================== attribution
# (added by the attribution module: `atoll report attribution`)


@app.command("attribution")
def attribution_cmd(
    exposures: Annotated[Path, typer.Option(help="Exposure log (CSV, Parquet file or folder).")],
    orders: Annotated[Path, typer.Option(help="Brand orders (CSV or Parquet).")],
    campaign_start: Annotated[str, typer.Option(help="First campaign day, YYYY-MM-DD (local).")],
    campaign_end: Annotated[str, typer.Option(help="Last campaign day, YYYY-MM-DD (local).")],
    out: Annotated[Path, typer.Option(help="Output folder (CSV, metrics.json, HTML).")],
    edges: Annotated[
        Path | None, typer.Option(help="ID-mapping edges (phone ↔ device …) resolving persons.")
    ] = None,
    members: Annotated[
        Path | None, typer.Option(help="Brand members (member_id, phone): member-id orders.")
    ] = None,
    window_days: Annotated[
        int, typer.Option(min=0, max=366, help="Conversion window after the campaign end.")
    ] = 15,
    timezone: Annotated[str, typer.Option(help="Timezone of the campaign days.")] = (
        "Asia/Shanghai"
    ),
    models: Annotated[
        str, typer.Option(help="'all' or a comma list: first_touch, linear, markov_2, shapley…")
    ] = "all",
    spend: Annotated[
        Path | None,
        typer.Option(help="Spend table (campaign_id, channel, cost); default: exposure cost."),
    ] = None,
    target_audience: Annotated[
        Path | None, typer.Option("--ta", help="Target-audience IDs (for TA% and TA coverage).")
    ] = None,
    ta_id_column: Annotated[str, typer.Option(help="ID column of --ta.")] = "device_id",
    ta_id_type: Annotated[str, typer.Option(help="ID kind of --ta (device_id, phone…).")] = (
        "device_id"
    ),
    exclude_events: Annotated[
        Path | None,
        typer.Option(help="Events to drop as invalid traffic (a table with event_id)."),
    ] = None,
    click_lookback_days: Annotated[
        float | None, typer.Option(help="Max click age at order time (default: any).")
    ] = None,
    view_lookback_days: Annotated[
        float | None, typer.Option(help="Max impression age at order time (default: any).")
    ] = None,
    click_priority: Annotated[
        bool, typer.Option(help="Paths holding a click keep only their clicks (all models).")
    ] = False,
    orders_per_person: Annotated[
        str, typer.Option(help="'every' order, or each person's 'first' attributable one.")
    ] = "every",
    half_life_days: Annotated[float, typer.Option(help="Time-decay half-life.")] = 7.0,
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Identity buckets.")] = 8,
    executor: Annotated[
        str, typer.Option(help="Where buckets run: thread (this process), inline, local or ray.")
    ] = "thread",
    k: Annotated[
        int, typer.Option(min=1, help="Minimum cell size (the contract's may be stricter).")
    ] = 50,
    contract: Annotated[
        Path | None, typer.Option(help="Collaboration contract (TOML) with a [privacy] table.")
    ] = None,
) -> None:
    """Campaign measurement and multi-touch attribution: CPO, ROAS, ROI per channel and model.

    Writes attribution_channels.csv, metrics.json and attribution.html (through the
    privacy guard: small cells are withheld with the reason shown).
    """
    import itertools
    from datetime import date

    from atoll.analytics.attribution import (
        AttributionConfig,
        attribute,
        release,
    )
    from atoll.analytics.paths import CampaignWindow, TargetAudience, member_edges, prepare
    from atoll.data.io import iter_batches, read_table, write_table
    from atoll.data.schema import MEMBERS
    from atoll.execution import make_executor
    from atoll.ids.mapping import build_id_graph
    from atoll.privacy import Guard, PrivacyPolicy

    try:
        try:
            start, end = date.fromisoformat(campaign_start), date.fromisoformat(campaign_end)
        except ValueError as exc:
            raise ConfigError(f"campaign dates must be YYYY-MM-DD: {exc}") from None
        window = CampaignWindow(start, end, window_days=window_days, timezone=timezone)
        config = AttributionConfig(
            window=window,
            models=models,  # type: ignore[arg-type]  # parsed and validated by the config
            click_lookback_days=click_lookback_days,
            view_lookback_days=view_lookback_days,
            click_priority=click_priority,
            orders_per_person=orders_per_person,
            half_life_days=half_life_days,
            buckets=buckets,
        )
        if contract is not None:
            guard = Guard.from_contract(contract, min_cell_size=k)
        else:
            guard = Guard(PrivacyPolicy.strictest([], floors={"--k": k}))
        with progress_bar() as progress:
            task = progress.add_task("resolving persons", total=4)
            graph = None
            if edges is not None or members is not None:
                parts: list[Any] = []
                if edges is not None:
                    parts.append(iter_batches(edges))
                if members is not None:
                    table = read_table(members, MEMBERS, timezone=timezone)
                    parts.append(member_edges(table, source=str(members)).to_batches())
                graph = build_id_graph(itertools.chain(*parts), source=str(edges or members))
            ta = None
            if target_audience is not None:
                ta_table = read_table(target_audience)
                ta = TargetAudience(ta_table, ta_id_column, ta_id_type)
            excluded = None
            if exclude_events is not None:
                flagged = read_table(exclude_events)
                if "event_id" not in flagged.column_names:
                    raise ConfigError(f"{exclude_events}: needs an event_id column")
                excluded = flagged["event_id"]
            spend_table = read_table(spend) if spend is not None else None
            if spend_table is not None and "cost" in spend_table.column_names:
                spend_table = spend_table.set_column(
                    spend_table.schema.get_field_index("cost"),
                    "cost",
                    _numbers(spend_table["cost"], str(spend)),
                )
            progress.update(task, advance=1, description="reading exposures and orders")
            prepared = prepare(
                exposures,
                orders,
                window,
                graph=graph,
                target_audience=ta,
                exclude_event_ids=excluded,
            )
            progress.update(task, advance=1, description="attributing (map over buckets)")
            with make_executor(executor) as ex:
                result = attribute(prepared, config, executor=ex, spend=spend_table)
            progress.update(task, advance=1, description="privacy guard and report")
            released = release(result, guard)
            out.mkdir(parents=True, exist_ok=True)
            csv_path = write_table(released.channels, out / "attribution_channels.csv", fmt="csv")
            metrics_path = write_json(released.metrics, out / "metrics.json")
            html_path = attribution_page(released.metrics).write(out / "attribution.html")
            progress.update(task, advance=1, description="done")
    except AtollError as exc:
        raise fail(exc) from None
    kpi = released.metrics["kpi_view"]

    def shown(value: Any) -> str:
        return "withheld" if value is None else f"{value:,.2f}"

    print_kv(
        "attribution",
        {
            **{
                f"orders: {r['status']}": "withheld" if r["orders"] is None else r["orders"]
                for r in released.metrics["orders"]
            },
            "reach (persons)": kpi["before"]["exposure_uv"],
            f"CPO ({kpi['now']['model']})": shown(kpi["now"]["cpo"]),
            "ROAS = sales / cost": shown(kpi["now"]["roas"]),
            "ROI = (sales - cost) / cost": shown(kpi["now"]["roi"]),
            "suppressed cells": released.metrics["privacy"]["attribution"]["suppressed_rows"],
        },
    )
    out_console.print(f"wrote {csv_path}, {metrics_path}, {html_path}")


def _numbers(column: Any, source: str) -> Any:
    """A text or numeric column as float64, or a SchemaError naming the file."""
    import pyarrow as pa

    from atoll.errors import SchemaError

    try:
        return column.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(f"cost must be numeric ({exc})", source=source, column="cost") from None
