"""The demo's first steps: each party prepares its own data.

Why: every later step (matching, insight, island, covert query, lookalike)
starts from the same prepared world. These steps touch only each party's own
data; nothing here joins one party's plaintext with another's.

1. generate the synthetic world (provider, brand, media, truth) and write it;
2. each party validates its tables against the canonical schemas and
   normalizes its identifiers, with invalid IDs counted per reason;
3. the provider builds its ID-mapping graph (OneID) with the hub guard;
4. each party partitions its identity-keyed tables into buckets with the
   collaboration's agreed bucket function (same B, same salt);
5. per-bucket profiles are computed on the executor (a map over buckets and a
   merge of additive partials) and checked against the in-memory totals;
6. a summary (Markdown + JSON) records every number and where outputs are.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from atoll.data.datasets import BucketedDataset
from atoll.data.io import read_table, write_table
from atoll.data.schema import SPECS
from atoll.demo.context import DemoConfig, DemoContext, ProgressFn
from atoll.errors import IntegrityError
from atoll.execution import make_executor
from atoll.ids.buckets import BucketFunction
from atoll.ids.mapping import MappingConfig, build_id_graph
from atoll.ids.normalize import InvalidReport, normalize_table_column
from atoll.synth import WorldConfig, generate_world, write_world

__all__ = ["DemoSummary", "bucket_profile", "run_core", "write_summary"]

_COLLAB_SALT = b"atoll-demo-collaboration-salt"


@dataclass
class DemoSummary:
    """What the demo did: sections of numbers, and where the outputs are."""

    out: Path
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary_md: Path = Path()
    summary_json: Path = Path()


def bucket_profile(task: tuple[str, int, str]) -> dict[str, int]:
    """Profile one bucket of a dataset: rows and distinct identifiers (an additive partial).

    Runs inside an executor worker; takes the dataset folder, not the data.
    """
    folder, bucket, id_column = task
    dataset = BucketedDataset.open(Path(folder))
    table = dataset.read_bucket(bucket, columns=[id_column])
    distinct = pc.count_distinct(table[id_column]).as_py()
    return {"rows": table.num_rows, "distinct_ids": int(distinct)}


def _report_row(report: InvalidReport) -> str:
    reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(report.by_reason.items()))
    return f"{report.valid:,} valid / {report.total:,}" + (
        f" (invalid: {reasons})" if reasons else ""
    )


def run_core(config: DemoConfig, summary: DemoSummary, step: ProgressFn) -> DemoContext:
    """Steps 1–5 (world, normalization, OneID, bucketing, map over buckets); return the context."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, str] = {}
    fn = BucketFunction(config.buckets, _COLLAB_SALT)

    # 1. The synthetic world.
    t0 = time.perf_counter()
    world = generate_world(
        WorldConfig(devices=config.devices, seed=config.seed),
        progress=lambda name, done, total: step(f"synth: {name}", done, total),
    )
    paths = write_world(world, out / "world")
    timings["synthetic world"] = f"{time.perf_counter() - t0:.1f} s"
    summary.sections["1 · synthetic world"] = {
        name: f"{table.num_rows:,} rows" for name, table in world.tables.items()
    } | {"written to": str(out / "world")}

    # 2. Each party validates (read_table checks the canonical spec) and
    #    normalizes its own identity-keyed column.
    t0 = time.perf_counter()
    plan2 = [
        ("brand/members", "members", "phone"),
        ("brand/orders", "orders", "phone"),
        ("provider/universe", "universe", "phone"),
        ("provider/exposures", "exposures", None),
    ]
    tables: dict[str, pa.Table] = {}
    reports: dict[str, InvalidReport] = {}
    for i, (name, spec, column) in enumerate(plan2):
        step("validate + normalize", i, len(plan2))
        table = read_table(paths[name], SPECS[spec])
        if column is not None:
            table, result = normalize_table_column(table, column, column, source=str(paths[name]))
            reports[name] = result.report
        tables[name] = table
    step("validate + normalize", len(plan2), len(plan2))
    members, orders = tables["brand/members"], tables["brand/orders"]
    universe, exposures = tables["provider/universe"], tables["provider/exposures"]
    members_report, orders_report = reports["brand/members"], reports["brand/orders"]
    universe_report = reports["provider/universe"]
    timings["validate + normalize"] = f"{time.perf_counter() - t0:.1f} s"
    summary.sections["2 · identifiers normalized (each party, own data)"] = {
        "brand members.phone": _report_row(members_report),
        "brand orders.phone (empty = keyed by member_id only)": _report_row(orders_report),
        "provider universe.phone": _report_row(universe_report),
        "provider exposures": f"{exposures.num_rows:,} rows valid against the schema",
    }

    # 3. The provider's ID-mapping graph.
    t0 = time.perf_counter()
    step("ID-mapping graph", 0, 1)
    edges_path = paths["provider/edges"]
    graph = build_id_graph(
        read_table(edges_path), MappingConfig(max_component_size=500), source=str(edges_path)
    )
    graph_path = out / "provider" / "id_graph.parquet"
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    write_table(graph.nodes, graph_path, fmt="parquet")
    (out / "provider" / "id_graph.report.json").write_text(
        json.dumps(graph.report.to_dict(), indent=2, default=str), encoding="utf-8"
    )
    step("ID-mapping graph", 1, 1)
    timings["ID-mapping graph"] = f"{time.perf_counter() - t0:.1f} s"
    rep = graph.report
    summary.sections["3 · provider ID-mapping (OneID)"] = {
        "edges in / used": f"{rep.edges_in:,} / {rep.edges_used:,}",
        "identifiers (nodes)": f"{rep.nodes:,}",
        "persons (one_id components)": f"{rep.components:,}",
        "component sizes": ", ".join(f"{k}: {v:,}" for k, v in rep.size_histogram.items()),
        "oversized components split": f"{len(rep.splits)}"
        + (
            " (hub degrees: " + ", ".join(str(h[1]) for s in rep.splits for h in s.hubs[:3]) + ")"
            if rep.splits
            else ""
        ),
        "invalid endpoints (excluded, counted)": _report_row(rep.invalid),
    }

    # 4. Bucketing with the collaboration's bucket function.
    t0 = time.perf_counter()
    datasets: dict[str, tuple[BucketedDataset, str]] = {}
    plan = [
        ("brand/members_by_phone", members, "phone", "phone"),
        ("brand/orders_by_phone", orders, "phone", "phone"),
        ("provider/universe_by_phone", universe, "phone", "phone"),
        ("provider/exposures_by_device", exposures, "device_id", "device_id"),
    ]
    for i, (name, table, column, kind) in enumerate(plan):
        step("bucketing", i, len(plan))
        keep = table.filter(pc.is_valid(table[column]))
        datasets[name] = (
            BucketedDataset.write(
                keep, out / name, id_column=column, buckets=fn, id_kind=kind, overwrite=True
            ),
            column,
        )
    step("bucketing", len(plan), len(plan))
    timings["bucketing"] = f"{time.perf_counter() - t0:.1f} s"

    # 5. A map over buckets on the executor, merged from additive partials.
    t0 = time.perf_counter()
    section: dict[str, Any] = {
        "bucket function": f"{fn.name}, B={fn.buckets}, same salt on both sides",
        "executor": config.executor,
    }
    options = {"address": config.address} if config.executor == "ray" else {}
    with make_executor(config.executor, **options) as ex:
        for name, (dataset, column) in datasets.items():
            tasks = [(str(dataset.path), b, column) for b in dataset.buckets()]
            parts = ex.map(bucket_profile, tasks)
            rows = sum(p["rows"] for p in parts)
            distinct = sum(p["distinct_ids"] for p in parts)
            if rows != dataset.num_rows:
                raise IntegrityError(
                    f"{name}: per-bucket rows {rows} != manifest {dataset.num_rows}"
                )
            sizes = [p["rows"] for p in parts]
            section[name] = (
                f"{rows:,} rows, {distinct:,} distinct IDs in {len(parts)} buckets "
                f"(per bucket {min(sizes):,}–{max(sizes):,})"
            )
            step("map over buckets", len(section), len(datasets) + 2)
    timings["map over buckets"] = f"{time.perf_counter() - t0:.1f} s"
    summary.sections["4 · bucketed datasets (map over buckets, merged)"] = section
    return DemoContext(
        config=config,
        world=world,
        paths=paths,
        tables=tables,
        graph_nodes=graph.nodes,
        bucket_fn=fn,
        progress=step,
        timings=timings,
    )


def write_summary(summary: DemoSummary, config: DemoConfig) -> None:
    """Write ``summary.json`` and ``summary.md`` under the output folder."""
    summary.summary_json = summary.out / "summary.json"
    summary.summary_md = summary.out / "summary.md"
    payload = {"config": {k: str(v) for k, v in vars(config).items()}, **summary.sections}
    summary.summary_json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    lines = ["# Atoll demo summary", ""]
    for title, rows in summary.sections.items():
        lines += [f"## {title}", "", "| item | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows.items()]
        lines.append("")
    summary.summary_md.write_text("\n".join(lines), encoding="utf-8")
