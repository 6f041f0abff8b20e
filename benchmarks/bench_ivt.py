"""Benchmark: invalid-traffic filtering throughput (events/s) on the synthetic world's log.

Why: IVT filtering runs over every exposure log before any metric, so its cost is
paid on the largest table Atoll reads. The run generates a synthetic world of
``--devices`` devices (generation excluded from the timing), writes its exposure
log, then runs :func:`atoll.analytics.ivt.run_ivt` exactly as ``atoll ivt`` does
(validate + spill into device buckets, IP aggregates in DuckDB, all eight rules
per bucket on the executor, sorted outputs) and prints events/s, peak memory and
precision/recall against the planted labels.

    .venv/bin/python benchmarks/bench_ivt.py                     # 1M devices (~2.5M events)
    .venv/bin/python benchmarks/bench_ivt.py --devices 100000
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from atoll.analytics.ivt import IvtConfig, default_lists, evaluate_ivt, run_ivt
from atoll.execution import make_executor
from atoll.synth import WorldConfig, generate_world, write_world


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    console = Console(width=120)
    work = Path(tempfile.mkdtemp(prefix="bench_ivt_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        write_world(generate_world(WorldConfig(devices=args.devices, seed=args.seed)), work)
        console.print(f"generated the world in {time.perf_counter() - t0:.1f} s")
        events = work / "provider" / "exposures.parquet"
        n = pq.ParquetFile(events).metadata.num_rows
        lists = default_lists(datacenter_ranges=work / "truth" / "datacenter_ranges.parquet")
        table = Table(title=f"IVT filtering: {n:,} events, all 8 rules, {args.buckets} buckets")
        for col in ("executor", "seconds", "events/s", "flagged", "precision", "recall"):
            table.add_column(col, justify="left" if col == "executor" else "right")
        for executor in ("inline", "local"):
            t1 = time.perf_counter()
            with make_executor(executor) as ex:
                result = run_ivt(
                    events, work / f"out_{executor}", IvtConfig(), lists, executor=ex,
                    buckets=args.buckets,
                )  # fmt: skip
            secs = time.perf_counter() - t1
            ev = evaluate_ivt(
                pq.read_table(result.flags_path),
                pq.read_table(work / "truth" / "ivt_labels.parquet"),
            )
            table.add_row(
                f"{executor} ({'1 core' if executor == 'inline' else 'process pool'})",
                f"{secs:.1f}",
                f"{n / secs:,.0f}",
                f"{int(result.report.any['events']):,}",
                f"{ev.precision:.4f}",
                f"{ev.recall:.4f}",
            )
        table.caption = (
            "seconds = run_ivt end to end (validate, spill, DuckDB IP aggregates, rules, sorted "
            f"outputs); peak RSS {peak_rss_mib():,.0f} MiB (max of parent and workers)"
        )
        console.print(table)
        for line in ev.lines():
            console.print(line, highlight=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
