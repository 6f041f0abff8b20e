"""The ``atoll`` command line: parse, call the library, render.

Why: commands stay thin (Typer style) so that everything they do is a library
call a user can script; long work shows rich progress bars; every Atoll error
is printed as one clear line (file, row, column, reason) and a non-zero exit
code, never a traceback from deep inside.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
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
from rich.table import Table

from atoll.errors import AtollError, ConfigError

app = typer.Typer(
    name="atoll",
    help="Atoll: a privacy-preserving marketing clean room.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ids_app = typer.Typer(help="Identifier normalization and ID-mapping.", no_args_is_help=True)
app.add_typer(ids_app, name="ids")

from atoll.cli._common import console, out_console
from atoll.cli._common import fail as _fail
from atoll.cli._common import print_kv as _print_kv


class TableFormat(StrEnum):
    """File formats the CLI writes."""

    parquet = "parquet"
    csv = "csv"


@contextmanager
def _progress() -> Iterator[Progress]:
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


def _print_invalid(report: Any, title: str) -> None:
    table = Table(title=title)
    table.add_column("reason")
    table.add_column("rows", justify="right")
    table.add_column("sample rows (masked values)")
    for reason, count in sorted(report.by_reason.items(), key=lambda kv: -kv[1]):
        samples = ", ".join(f"{s.row}:{s.value}" for s in report.samples if s.reason == reason)
        table.add_row(reason, f"{count:,}", samples)
    table.caption = f"{report.valid:,} valid / {report.total:,} rows"
    out_console.print(table)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    devices: Annotated[
        int, typer.Option(min=100, help="Devices in the provider universe.")
    ] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 7,
    fmt: Annotated[TableFormat, typer.Option("--format", help="Table file format.")] = (
        TableFormat.parquet
    ),
) -> None:
    """Generate the synthetic world (provider, brand, media, truth) as files."""
    from atoll.synth import WorldConfig, generate_world, write_world

    try:
        with _progress() as progress:
            task = progress.add_task("generating world", total=None)

            def report(step: str, done: int, total: int) -> None:
                progress.update(
                    task, description=f"generating: {step}", completed=done, total=total
                )

            world = generate_world(WorldConfig(devices=devices, seed=seed), progress=report)
            paths = write_world(world, out, fmt=fmt.value)
    except AtollError as exc:
        raise _fail(exc) from exc
    table = Table(title=f"synthetic world → {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, path in paths.items():
        source = world.tables.get(name)
        if source is None:
            source = world.truth.get(name.removeprefix("truth/"))
        rows = f"{source.num_rows:,}" if source is not None else ""
        table.add_row(name, rows, str(path))
    out_console.print(table)


@ids_app.command("normalize")
def ids_normalize(
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file.")],
    column: Annotated[str, typer.Option(help="Column holding the identifier.")],
    id_type: Annotated[str, typer.Option("--type", help="ID kind: phone, imei, oaid, imei_md5…")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")],
    hash_form: Annotated[
        str, typer.Option("--hash", help="Also emit the hashed form: plain, md5 or sha256.")
    ] = "plain",
    rejects: Annotated[
        Path | None, typer.Option(help="Where rows with invalid IDs go (default: <out>.rejects.*)")
    ] = None,
) -> None:
    """Normalize one identifier column; invalid rows go to a rejects file, counted per reason.

    Streams the input batch by batch: memory stays bounded whatever the file size.
    """
    import contextlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from atoll.data.io import TableWriter, iter_batches
    from atoll.ids.normalize import (
        HashForm,
        IdKind,
        InvalidReport,
        hash_array,
        normalize_table_column,
    )

    rejects_path = rejects or out.with_name(f"{out.stem}.rejects{out.suffix}")
    report: InvalidReport | None = None
    kept = rejected = 0
    try:
        kind = IdKind.parse(id_type)
        if hash_form not in {f.value for f in HashForm}:
            raise ConfigError(f"--hash must be one of plain, md5, sha256 (got {hash_form!r})")
        form = HashForm(hash_form)
        with contextlib.ExitStack() as stack, _progress() as progress:
            task = progress.add_task(f"normalizing {column} as {kind.label}", total=None)
            good_writer = stack.enter_context(TableWriter(out))
            bad_writer: TableWriter | None = None
            offset = 0
            for batch in iter_batches(input_path):
                table = pa.Table.from_batches([batch])
                normalized, result = normalize_table_column(
                    table, column, kind, source=str(input_path), row_offset=offset
                )
                report = result.report if report is None else report.merge(result.report)
                good = normalized.filter(result.valid)
                if form is not HashForm.PLAIN and kind.form is HashForm.PLAIN:
                    good = good.append_column(
                        f"{column}_{form.value}",
                        hash_array(good[column].combine_chunks(), kind, form),
                    )
                good_writer.write(good)
                kept += good.num_rows
                invalid = pc.invert(result.valid)
                bad = table.filter(invalid)
                if bad.num_rows:
                    rows = pa.array(np.arange(offset + 1, offset + table.num_rows + 1))
                    bad = bad.append_column("source_row", rows.filter(invalid))
                    if bad_writer is None:
                        bad_writer = stack.enter_context(TableWriter(rejects_path))
                    bad_writer.write(bad)
                    rejected += bad.num_rows
                offset += table.num_rows
                progress.update(task, completed=offset)
            if report is None:
                raise ConfigError(f"{input_path}: the file has no rows to normalize")
    except AtollError as exc:
        raise _fail(exc) from exc
    _print_invalid(report, f"{input_path} · {column} as {kind.label}")
    console.print(f"wrote {kept:,} rows → {out}")
    if rejected:
        console.print(f"wrote {rejected:,} rejected rows (with source_row) → {rejects_path}")


@ids_app.command("map")
def ids_map(
    edges: Annotated[Path, typer.Option(help="Edge table: id_type_a, id_a, id_type_b, id_b[, …]")],
    out: Annotated[Path, typer.Option(help="Output file: id_type, id, one_id, component_size.")],
    max_component_size: Annotated[
        int, typer.Option(min=2, help="Split components larger than this (hub guard).")
    ] = 1000,
    report_path: Annotated[Path | None, typer.Option("--report", help="JSON report path.")] = None,
) -> None:
    """Build the ID-mapping graph (OneID) from edge tables."""
    from atoll.data.io import iter_batches, write_table
    from atoll.ids.mapping import MappingConfig, build_id_graph

    try:
        config = MappingConfig(max_component_size=max_component_size)
        with _progress() as progress:
            progress.add_task("building ID graph", total=None)
            graph = build_id_graph(iter_batches(edges), config, source=str(edges))
        write_table(graph.nodes, out, fmt="csv" if out.suffix == ".csv" else "parquet")
        report = graph.report.to_dict()
        target = report_path or out.with_name(f"{out.stem}.report.json")
        target.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    except AtollError as exc:
        raise _fail(exc) from exc
    rep = graph.report
    _print_kv(
        f"ID graph {edges}",
        {
            "edges in": f"{rep.edges_in:,}",
            "edges used": f"{rep.edges_used:,}",
            "nodes": f"{rep.nodes:,}",
            "components (one_id)": f"{rep.components:,}",
            "oversized components split": len(rep.splits),
            "size histogram": rep.size_histogram,
        },
    )
    if rep.invalid.invalid:
        _print_invalid(rep.invalid, "invalid edge endpoints (excluded, counted)")
    console.print(f"wrote {graph.nodes.num_rows:,} nodes → {out}; report → {target}")


@app.command()
def bucket(
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file.")],
    id_column: Annotated[str, typer.Option(help="Identifier column to partition by.")],
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Number of buckets B.")],
    out: Annotated[Path, typer.Option(help="Output dataset folder.")],
    id_type: Annotated[
        str | None,
        typer.Option(
            "--type", help="Normalize the column as this ID kind first (rejects counted)."
        ),
    ] = None,
    salt: Annotated[
        str | None, typer.Option(help="Bucket salt, hex (both parties must use the same).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
) -> None:
    """Hash-partition a table by a normalized identifier into B buckets (Parquet + manifest).

    Streams the input batch by batch. With ``--type``, rows whose identifier is
    invalid are left out of the dataset and counted per reason (printed).
    """

    import pyarrow as pa

    from atoll.data.datasets import BucketedDataset
    from atoll.data.io import iter_batches
    from atoll.ids.buckets import BucketFunction
    from atoll.ids.normalize import IdKind, InvalidReport, normalize_table_column

    try:
        fn = BucketFunction(buckets, bytes.fromhex(salt)) if salt else BucketFunction(buckets)
        kind = IdKind.parse(id_type) if id_type is not None else None
    except ValueError as exc:
        raise _fail(ConfigError(f"--salt must be hex: {exc}")) from exc
    except AtollError as exc:
        raise _fail(exc) from exc
    reports: list[InvalidReport] = []
    try:
        with _progress() as progress:
            task = progress.add_task(f"bucketing into {buckets}", total=None)

            def batches() -> Iterator[pa.Table]:
                offset = 0
                for batch in iter_batches(input_path):
                    table = pa.Table.from_batches([batch])
                    if kind is not None:
                        normalized, result = normalize_table_column(
                            table, id_column, kind, source=str(input_path), row_offset=offset
                        )
                        reports.append(result.report)
                        table = normalized.filter(result.valid)
                    offset += batch.num_rows
                    progress.update(task, completed=offset)
                    yield table

            dataset = BucketedDataset.write(
                batches(),
                out,
                id_column=id_column,
                buckets=fn,
                id_kind=kind.label if kind is not None else None,
                overwrite=overwrite,
                source=str(input_path),
            )
    except AtollError as exc:
        raise _fail(exc) from exc
    if reports:
        merged = reports[0]
        for more in reports[1:]:
            merged = merged.merge(more)
        if merged.invalid:
            _print_invalid(merged, f"{input_path} · {id_column}: invalid rows left out")
    console.print(
        f"wrote {dataset.num_rows:,} rows into {len(dataset.buckets())} non-empty buckets → {out}"
        f" (manifest: {out / 'manifest.json'})"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the demo run.")] = Path("out/demo"),
    devices: Annotated[
        int, typer.Option(min=1000, help="Size of the synthetic universe.")
    ] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    buckets: Annotated[int, typer.Option(min=1, max=4096, help="Buckets per dataset.")] = 32,
    executor: Annotated[
        str, typer.Option(help="Executor: inline, local (process pool) or ray.")
    ] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (executor=ray).")] = None,
) -> None:
    """Run the closed loop end to end on a synthetic world (match, insight, island, query, TA)."""
    from atoll.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(
            out=out,
            devices=devices,
            seed=seed,
            buckets=buckets,
            executor=executor,
            address=address,
        )
        with _progress() as progress:
            tasks: dict[str, Any] = {}

            def step(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total or None)
                progress.update(tasks[name], completed=done, total=total or None)

            summary = run_demo(config, progress=step)
    except AtollError as exc:
        raise _fail(exc) from exc
    for section, rows in summary.sections.items():
        _print_kv(section, rows)
    out_console.print(f"[bold green]demo finished.[/] Outputs are in {summary.out.resolve()}")
    out_console.print(f"  summary: {summary.summary_md.resolve()}")
    out_console.print(f"  summary (JSON): {summary.summary_json.resolve()}")


# --- sub-command groups of later capabilities: each lives in atoll/cli/<name>.py,
# defines its own `app = typer.Typer(...)`, and is registered here, one line each.
from atoll.cli import attest as _attest

app.add_typer(_attest.app, name="attest")
from atoll.cli import report as _report

app.add_typer(_report.app, name="report")
from atoll.cli import ivt as _ivt

app.command("ivt")(_ivt.ivt)
from atoll.cli import lbs as _lbs

app.command("lbs-tags")(_lbs.lbs_tags)
from atoll.cli import query as _query

app.add_typer(_query.app, name="query")
from atoll.cli import island as _island

app.add_typer(_island.app, name="island")
from atoll.cli import certs as _certs

app.add_typer(_certs.app, name="certs")
from atoll.cli import psi as _psi

app.add_typer(_psi.app, name="psi")
from atoll.cli import lookalike as _lookalike

app.add_typer(_lookalike.app, name="lookalike")
# (end of sub-command registrations)


def main() -> None:
    """Entry point of the ``atoll`` console script."""
    app()
