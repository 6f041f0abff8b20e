"""Benchmark: LBS tags (stay points → POI visits → frequency tags) over N pings and P POIs.

Why: the issue's target is 100M pings and 100k POIs within 10 minutes on 2 cores.
The run generates a pings file of that shape (devices with short stays at their
own places and at POIs, plus moves; generation is timed separately and excluded),
then runs :func:`atoll.analytics.lbs.run_lbs` exactly as ``atoll lbs-tags`` does:
validate + spill into device buckets, then stays/visits/tags per bucket on the
process pool. It prints the phases, pings/s and peak memory.

    .venv/bin/python benchmarks/bench_lbs.py                            # 100M pings, 100k POIs
    .venv/bin/python benchmarks/bench_lbs.py --pings 2000000 --pois 10000
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from atoll.analytics.lbs import LbsConfig, run_lbs
from atoll.execution import make_executor

M_PER_DEG = 6_371_008.8 * math.pi / 180
START_US = 1_777_000_000 * 1_000_000  # 2026-04-24 UTC
DAY_US = 86_400 * 1_000_000
CITY_CENTRES = np.array(
    [(39.90, 116.40), (31.23, 121.47), (23.13, 113.26), (22.54, 114.06), (30.57, 104.07),
     (30.27, 120.15), (34.34, 108.94), (29.56, 106.55), (32.06, 118.80), (45.80, 126.53)]
)  # fmt: skip


def make_pois(rng: np.random.Generator, n: int) -> pa.Table:
    city = rng.integers(0, len(CITY_CENTRES), n)
    lat = CITY_CENTRES[city, 0] + rng.normal(0, 0.15, n)
    lon = CITY_CENTRES[city, 1] + rng.normal(0, 0.15, n)
    cats = np.array(["brand_store", "competitor_store", "mall", "office", "residential"])
    return pa.table(
        {
            "poi_id": pa.array([f"poi_{i:07d}" for i in range(n)]),
            "name": pa.array([f"POI {i}" for i in range(n)]),
            "category": pa.array(cats[rng.integers(0, cats.size, n)]),
            "lat": lat,
            "lon": lon,
        }
    )


def make_chunk(rng: np.random.Generator, pois: pa.Table, first_dev: int, n_dev: int) -> pa.Table:
    """~100 pings per device: sessions of 2-6 pings (5-60 min) at a POI or a random place."""
    plat = pois["lat"].to_numpy()
    plon = pois["lon"].to_numpy()
    sessions = rng.poisson(28, n_dev)
    dev = np.repeat(np.arange(first_dev, first_dev + n_dev), sessions)
    n_s = dev.size
    at_poi = rng.random(n_s) < 0.5
    poi = rng.integers(0, plat.size, n_s)
    city = rng.integers(0, len(CITY_CENTRES), n_s)
    lat = np.where(at_poi, plat[poi], CITY_CENTRES[city, 0] + rng.normal(0, 0.2, n_s))
    lon = np.where(at_poi, plon[poi], CITY_CENTRES[city, 1] + rng.normal(0, 0.2, n_s))
    start = START_US + rng.integers(0, 30 * DAY_US, n_s)
    per = rng.integers(2, 7, n_s)
    row = np.repeat(np.arange(n_s), per)
    span = rng.integers(5, 61, n_s) * 60 * 1_000_000
    offset = (rng.random(row.size) * span[row]).astype(np.int64)
    jitter = rng.normal(0, 25, (row.size, 2)) / M_PER_DEG
    ts = start[row] + offset
    d = dev[row]
    order = np.lexsort((ts, d))
    ids = np.char.add("dev", np.char.zfill(d[order].astype(str), 9))
    return pa.table(
        {
            "device_id": pa.array(ids.tolist(), pa.string()),
            "ts": pa.array(ts[order], pa.timestamp("us", tz="UTC")),
            "lat": np.round(lat[row][order] + jitter[order, 0], 6),
            "lon": np.round(lon[row][order] + jitter[order, 1], 6),
        }
    )


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=100_000_000)
    parser.add_argument("--pois", type=int, default=100_000)
    parser.add_argument("--radius-m", type=float, default=200.0)
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    console = Console(width=120)
    work = Path(tempfile.mkdtemp(prefix="bench_lbs_", dir=args.workdir))
    try:
        rng = np.random.default_rng(7)
        t0 = time.perf_counter()
        pois = make_pois(rng, args.pois)
        pq.write_table(pois, work / "pois.parquet")
        devices = max(1, args.pings // 100)
        per_chunk = 50_000
        written = 0
        with pq.ParquetWriter(str(work / "pings.parquet"), make_chunk(rng, pois, 0, 1).schema,
                              compression="zstd") as writer:  # fmt: skip
            for first in range(0, devices, per_chunk):
                chunk = make_chunk(rng, pois, first, min(per_chunk, devices - first))
                writer.write_table(chunk)
                written += chunk.num_rows
        gen_s = time.perf_counter() - t0
        console.print(f"generated {written:,} pings of {devices:,} devices in {gen_s:.1f} s")
        phases: dict[str, float] = {}
        marks = {"t": time.perf_counter(), "phase": ""}

        def progress(name: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if marks["phase"] != name:
                marks["phase"] = name
            phases[name] = phases.get(name, 0.0) + now - float(marks["t"])
            marks["t"] = now

        t1 = time.perf_counter()
        with make_executor(args.executor) as ex:
            result = run_lbs(
                work / "pings.parquet",
                work / "pois.parquet",
                work / "tags.parquet",
                LbsConfig(radius_m=args.radius_m),
                executor=ex,
                buckets=args.buckets,
                progress=progress,
            )
        total_s = time.perf_counter() - t1
        table = Table(
            title=f"LBS tags: {written:,} pings, {args.pois:,} POIs, r = {args.radius_m} m"
        )
        for col in ("phase", "seconds"):
            table.add_column(col, justify="right" if col == "seconds" else "left")
        for name, secs in phases.items():
            table.add_row(name, f"{secs:.1f}")
        table.add_row("total (run_lbs)", f"{total_s:.1f}")
        table.caption = (
            f"{written / total_s:,.0f} pings/s; stays {result.counts['stays']:,}, visits "
            f"{result.counts['visits']:,}, devices {result.counts['devices']:,}; "
            f"executor {args.executor}, {args.buckets} buckets; "
            f"peak RSS {peak_rss_mib():,.0f} MiB (max of parent and workers)"
        )
        console.print(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
