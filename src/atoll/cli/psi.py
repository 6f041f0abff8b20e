"""``atoll psi``: private set intersection, tag augmentation and intersection-sum.

Why: the brand and the provider match audiences ("撞库"), enrich members with
the provider's tags ("三方标签增补") and measure matched spend without
revealing the rest of their lists. ``psi local`` and ``psi sum`` run both
parties in one process (left = receiver / values holder, right = sender /
ids holder) through exactly the jobs, machines and codec that the
two-process commands (``psi serve`` / ``psi join``, registered at the end of
this module from :mod:`atoll.cli.psi_net`) use over HTTPS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atoll.cli._common import console, fail, out_console, print_kv
from atoll.errors import AtollError, ConfigError
from atoll.protocols.psi import DEFAULT_TRUNCATE

__all__ = ["app", "local", "psi_sum"]

app = typer.Typer(
    help="Private set intersection: match, cardinality, multi-ID, labels, intersection-sum.",
    no_args_is_help=True,
)

_ExecutorOpt = Annotated[
    str, typer.Option("--executor", help="Where buckets run: inline, local (processes) or ray.")
]
_BucketsOpt = Annotated[int, typer.Option("--buckets", min=1, max=65536, help="Bucket count.")]
_AuditOpt = Annotated[
    Path | None, typer.Option("--audit-log", help="Append hash-chained audit lines here (JSONL).")
]


@contextmanager
def _stage_progress() -> Iterator[Any]:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[int, Any] = {}

    def update(stage: int, label: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(f"{label}: buckets", total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield update


def _executor(spec: str, workers: int | None) -> Any:
    from atoll.execution import make_executor

    key = spec.strip().lower()
    if key not in ("inline", "local", "process", "ray"):
        raise ConfigError(f"--executor must be inline, local or ray, not {spec!r}")
    if key in ("local", "process") and workers is not None:
        return make_executor(key, workers=workers)
    return make_executor(key)


def _audit(path: Path | None) -> Any:
    if path is None:
        return None
    from atoll.control.audit import AuditLog

    return AuditLog(path)


def _labels(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    cols = tuple(c.strip() for c in text.split(",") if c.strip())
    if not cols:
        raise ConfigError("--labels needs at least one column name")
    return cols


@app.command("local")
def local(
    left: Annotated[Path, typer.Option("--left", help="Receiver's table (CSV or Parquet).")],
    right: Annotated[Path, typer.Option("--right", help="Sender's table (CSV or Parquet).")],
    id_column: Annotated[
        str, typer.Option("--id-column", help="ID column, or a priority list phone,oaid,idfa.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Matched rows (.parquet/.csv) or a .json summary.")
    ],
    id_type: Annotated[
        str | None, typer.Option("--id-type", help="ID kind(s) when not the column name(s).")
    ] = None,
    reveal: Annotated[str, typer.Option("--reveal", help="receiver or both.")] = "receiver",
    cardinality_only: Annotated[
        bool, typer.Option("--cardinality-only", help="Output only the intersection size.")
    ] = False,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Sender label columns to attach (COL,...).")
    ] = None,
    right_out: Annotated[
        Path | None, typer.Option("--right-out", help="Sender's output (with --reveal both).")
    ] = None,
    buckets: _BucketsOpt = 16,
    executor: _ExecutorOpt = "local",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="builtin or spu.")] = "builtin",
    truncate: Annotated[
        int,
        typer.Option(
            "--truncate", min=8, max=32, help="Compared bytes per value (see docs/protocols)."
        ),
    ] = DEFAULT_TRUNCATE,
    min_cardinality: Annotated[
        int, typer.Option("--min-cardinality", min=0, help="Withhold output below this size.")
    ] = 0,
    audit_log: _AuditOpt = None,
) -> None:
    """Both PSI parties in one process: left = receiver, right = sender."""
    from atoll.data.io import read_table
    from atoll.matching import PsiOptions, get_engine, psi_party, run_local, write_outcome

    try:
        label_cols = _labels(labels)
        if cardinality_only and out.suffix.lower() != ".json":
            raise ConfigError("--cardinality-only writes a JSON summary: use --out F.json")
        common: dict[str, Any] = dict(
            reveal=reveal,
            cardinality_only=cardinality_only,
            truncate=truncate,
            buckets=buckets,
            engine=engine,
            min_cardinality=min_cardinality,
        )
        eng = get_engine(engine)
        left_table = read_table(left)
        right_table = read_table(right)
        receiver = psi_party(
            left_table,
            id_column,
            role="receiver",
            id_types=id_type,
            options=PsiOptions(**common, labels=label_cols),
            source=str(left),
        )
        sender = psi_party(
            right_table,
            id_column,
            role="sender",
            id_types=id_type,
            options=PsiOptions(**common, labels=label_cols),
            source=str(right),
        )
        with _stage_progress() as progress:
            mine, theirs = run_local(
                receiver,
                sender,
                engine=eng,
                executor=_executor(executor, workers),
                progress=progress,
                audit=_audit(audit_log),
            )
        write_outcome(mine, out)
        if right_out is not None:
            write_outcome(theirs, right_out)
    except AtollError as exc:
        raise fail(exc) from None
    summary: dict[str, Any] = {
        "protocol": mine.protocol,
        "engine": mine.engine,
        "receiver rows": mine.stages[0].rows,
        "sender unique IDs": ", ".join(str(s.peer_unique) for s in mine.stages),
        "intersection (unique IDs)": mine.cardinality,
    }
    for s in mine.stages:
        counted = s.matched_rows if s.matched_rows is not None else s.matched_ids
        summary[f"matched by {s.kind}"] = (
            f"{counted} (invalid {s.invalid.invalid}, duplicates {s.duplicates})"
        )
    summary["bytes receiver→sender"] = mine.bytes_sent
    summary["bytes sender→receiver"] = mine.bytes_received
    summary["seconds"] = round(mine.seconds, 3)
    print_kv("PSI (local)", summary)
    out_console.print(f"wrote → {out}")


@app.command("sum")
def psi_sum(
    left: Annotated[Path, typer.Option("--left", help="Values holder's table (id + values).")],
    value_column: Annotated[
        str, typer.Option("--value-column", help="Value column(s) to add up, COL[,COL...].")
    ],
    right: Annotated[Path, typer.Option("--right", help="Ids holder's table.")],
    id_column: Annotated[str, typer.Option("--id-column", help="ID column (both tables).")],
    out: Annotated[Path, typer.Option("--out", help="JSON summary with the sums.")],
    id_type: Annotated[
        str | None, typer.Option("--id-type", help="ID kind when not the column name.")
    ] = None,
    decimals: Annotated[
        int, typer.Option("--decimals", min=0, max=6, help="Decimal places of the values.")
    ] = 2,
    buckets: _BucketsOpt = 8,
    executor: _ExecutorOpt = "local",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes.")] = None,
    min_cardinality: Annotated[
        int, typer.Option("--min-cardinality", min=0, help="Withhold sums below this size.")
    ] = 0,
    audit_log: _AuditOpt = None,
) -> None:
    """Intersection size and the sums of the left's values over it, both parties in one process."""
    from atoll.data.io import read_table
    from atoll.matching import run_local, write_outcome
    from atoll.matching.sum_job import SumOptions, sum_party

    try:
        if out.suffix.lower() != ".json":
            raise ConfigError("psi sum writes a JSON summary: use --out F.json")
        options = SumOptions(buckets=buckets, decimals=decimals, min_cardinality=min_cardinality)
        values = sum_party(
            read_table(left),
            id_column,
            role="values",
            id_type=id_type,
            value_columns=value_column,
            options=options,
            source=str(left),
        )
        ids = sum_party(
            read_table(right),
            id_column,
            role="ids",
            id_type=id_type,
            options=options,
            source=str(right),
        )
        with _stage_progress() as progress:
            mine, _ = run_local(
                values,
                ids,
                executor=_executor(executor, workers),
                progress=progress,
                audit=_audit(audit_log),
            )
        write_outcome(mine.to_dict(), out)
    except AtollError as exc:
        raise fail(exc) from None
    data = mine.to_dict()
    summary: dict[str, Any] = {"intersection": data["cardinality"]}
    for name, total in data["sums"].items():
        summary[f"sum of {name}"] = total
    summary["invalid IDs (left)"] = mine.stage.invalid.invalid
    summary["duplicate IDs (left, values added)"] = mine.stage.duplicates
    summary["bytes left→right"] = data["bytes_sent"]
    summary["bytes right→left"] = data["bytes_received"]
    summary["seconds"] = round(mine.seconds, 3)
    print_kv("intersection-sum (local)", summary)
    out_console.print(f"wrote → {out}")


# --- two-process commands (psi serve / join / sum-serve / sum-join): atoll.cli.psi_net ---
from atoll.cli import psi_net as _psi_net  # noqa: E402

_psi_net.register(app)
