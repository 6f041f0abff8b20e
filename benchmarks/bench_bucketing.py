"""Benchmark: normalize + bucket N raw phone numbers (default 10M), streamed in chunks.

Why: every dataset keyed by a person goes through normalization and the bucket
function before anything else; this is the data plane's entry cost. The run
prints rows/s and peak memory for Atoll's vectorised path (pyarrow.compute +
one keyed BLAKE2b per row, optionally fanned out over the process pool) and,
side by side in the same run, a named baseline: the straightforward per-row
Python loop (``re`` + ``hashlib``) that a first version would write.

    .venv/bin/python benchmarks/bench_bucketing.py              # 10M rows
    .venv/bin/python benchmarks/bench_bucketing.py --rows 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import re
import resource
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from atoll.execution import make_executor
from atoll.ids.buckets import BucketFunction
from atoll.ids.normalize import normalize_array

CHUNK = 1_000_000
BUCKETS = 256
PREFIXES = np.array(["", "+86", "0086", "+86 "], dtype=object)


def make_chunk(seed: int, rows: int) -> pa.Array:
    """Raw phones with realistic noise: country prefixes, dashes, spaces, 1% invalid."""
    rng = np.random.default_rng(seed)
    second = rng.choice(np.array(list("3456789")), size=rows)
    rest = rng.integers(0, 10**9, size=rows)
    digits = np.char.add(np.char.add("1", second.astype(str)), np.char.zfill(rest.astype(str), 9))
    dashed = rng.random(rows) < 0.2
    digits = np.where(
        dashed,
        np.char.add(
            np.char.add(
                np.char.add(np.char.add(_slice(digits, 0, 3), "-"), _slice(digits, 3, 7)), "-"
            ),
            _slice(digits, 7, 11),
        ),
        digits,
    )
    prefix = PREFIXES[rng.integers(0, len(PREFIXES), size=rows)].astype(str)
    raw = np.char.add(prefix, digits)
    bad = rng.random(rows) < 0.01
    raw = np.where(bad, _slice(raw, 0, 7), raw)
    return pa.array(raw.tolist(), pa.string())


def _slice(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.strings.slice(a, start, stop)


Result = tuple[int, int, np.ndarray, float]


def atoll_chunk(seed_rows: tuple[int, int]) -> Result:
    """Normalize + bucket one chunk; returns (rows, valid, per-bucket counts, work seconds)."""
    seed, rows = seed_rows
    raw = make_chunk(seed, rows)
    t0 = time.perf_counter()
    norm = normalize_array(raw, "phone")
    valid = norm.values.filter(norm.valid)
    buckets = BucketFunction(BUCKETS).assign_arrow(valid)
    return rows, len(valid), np.bincount(buckets, minlength=BUCKETS), time.perf_counter() - t0


_PHONE = re.compile(r"^1[3-9]\d{9}$")
_STRIP = re.compile(r"[\s\-().]")


def baseline_chunk(seed_rows: tuple[int, int]) -> Result:
    """Named baseline: a per-row Python loop with re + hashlib (same rules, same hash)."""
    seed, rows = seed_rows
    raw = make_chunk(seed, rows).to_pylist()
    t0 = time.perf_counter()
    counts = np.zeros(BUCKETS, dtype=np.int64)
    valid = 0
    salt = b"atoll-default-bucket-salt-v1"
    for value in raw:
        v = _STRIP.sub("", value)
        if v.startswith("+86"):
            v = v[3:]
        elif v.startswith("0086"):
            v = v[4:]
        elif len(v) == 13 and v.startswith("86"):
            v = v[2:]
        if not _PHONE.match(v):
            continue
        valid += 1
        h = hashlib.blake2b(v.encode(), digest_size=8, key=salt, person=b"atoll-bucket-v1")
        counts[int.from_bytes(h.digest(), "big") % BUCKETS] += 1
    return rows, valid, counts, time.perf_counter() - t0


def peak_rss_mib() -> float:
    """Peak resident set size of this process and its finished children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def run(
    name: str,
    fn: Callable[[tuple[int, int]], tuple[int, int, np.ndarray]],
    rows: int,
    executor: str,
) -> tuple[str, int, int, float, np.ndarray]:
    chunks = [(seed, min(CHUNK, rows - start)) for seed, start in enumerate(range(0, rows, CHUNK))]
    t0 = time.perf_counter()
    with make_executor(executor) as ex:
        parts = ex.map(fn, chunks)
    elapsed = time.perf_counter() - t0
    total = sum(p[0] for p in parts)
    valid = sum(p[1] for p in parts)
    counts = np.sum([p[2] for p in parts], axis=0)
    work = sum(p[3] for p in parts)
    return name, total, valid, elapsed, work, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    console = Console(width=140)
    results = [
        run("atoll: pyarrow.compute + BLAKE2b, inline (1 core)", atoll_chunk, args.rows, "inline"),
        run("atoll: same, process pool (2 cores)", atoll_chunk, args.rows, "local"),
        run(
            "baseline: per-row Python re + hashlib (1 core)",
            baseline_chunk,
            args.baseline_rows,
            "inline",
        ),
    ]
    agree = bool(np.array_equal(results[0][5], results[1][5]))
    table = Table(title=f"normalize + bucket phones into {BUCKETS} buckets (chunks of {CHUNK:,})")
    cols = ("method", "rows", "valid", "work s (all cores)", "rows/s per core", "wall s")
    for col in cols:
        table.add_column(col, justify="right" if col != "method" else "left")
    for name, total, valid, elapsed, work, _ in results:
        table.add_row(
            name,
            f"{total:,}",
            f"{valid:,}",
            f"{work:.2f}",
            f"{total / work:,.0f}",
            f"{elapsed:.2f}",
        )
    table.caption = (
        "work = normalize + bucket only (generating the raw phones excluded); wall includes it.\n"
        f"peak RSS {peak_rss_mib():,.0f} MiB (max of parent and workers); pool == inline: {agree}"
    )
    console.print(table)
    base = results[2]
    same_prefix = run("check", atoll_chunk, args.baseline_rows, "inline")
    console.print(
        f"baseline and atoll agree on per-bucket counts for {args.baseline_rows:,} rows: "
        f"{bool(np.array_equal(base[5], same_prefix[5]))}"
    )


if __name__ == "__main__":
    main()
