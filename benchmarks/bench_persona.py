"""Benchmark: persona/TGI over an N-device universe with T tag columns.

Why: the issue's target is a 10M-device universe with 50 tag columns within
60 s (2 cores). The run generates a universe of that shape — string device
IDs; 40 single-valued text tags with 2 to 300 values and 5-25 % unknowns
(nulls or the ``unknown`` label); 10 multi-valued ``list<string>`` tags with
20-value vocabularies, 0-6 items per device and some repeated items —
writes it as a bucketed Parquet dataset (setup, reported apart), then times
:func:`atoll.analytics.persona.persona` end to end: the map over buckets on
the executor (read, mark the audience, count every dimension), the merge of
additive partials, the guard (k = 50) and the statistics. It checks the
merged counts against the manifest's row count and prints a table, with the
CPU time spent (driver + workers): on a shared machine wall time depends on
the load, CPU time much less.

    .venv/bin/python benchmarks/bench_persona.py --size 1000000
    .venv/bin/python benchmarks/bench_persona.py --size 10000000 --workers 2

``--keep DIR`` keeps (and reuses) the generated dataset between runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from atoll.analytics.persona import PersonaConfig, persona
from atoll.data import BucketedDataset
from atoll.execution import make_executor
from atoll.privacy import Guard

CHUNK = 1_000_000


def _ids(numbers: np.ndarray) -> pa.Array:
    """``d000000012``-style IDs built as one Arrow buffer (fast, no Python loop)."""
    width = 10
    n = len(numbers)
    digits = np.empty((n, width), dtype=np.uint8)
    digits[:, 0] = ord("d")
    rest = numbers.astype(np.int64)
    for col in range(width - 1, 0, -1):
        digits[:, col] = ord("0") + rest % 10
        rest //= 10
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())]
    )


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool's workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _single(rng: np.random.Generator, n: int, card: int, unknown: float) -> pa.Array:
    vocab = [f"v{j}" for j in range(card)] + ["unknown"]
    weights = rng.dirichlet(np.ones(card))
    idx = rng.choice(card, size=n, p=weights).astype(np.int32)
    missing = rng.random(n) < unknown
    idx[missing & (rng.random(n) < 0.5)] = card  # half the unknowns say "unknown"
    mask = missing & (idx != card)
    indices = pa.array(idx, mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(vocab)).cast(pa.string())


def _multi(rng: np.random.Generator, n: int, vocab_size: int) -> pa.Array:
    lengths = rng.integers(0, 7, size=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    items = rng.integers(0, vocab_size, size=int(offsets[-1]))
    values = pa.DictionaryArray.from_arrays(
        pa.array(items.astype(np.int32)), pa.array([f"m{j}" for j in range(vocab_size)])
    ).cast(pa.string())
    null = rng.random(n) < 0.1
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(null))


def universe_chunks(size: int, tags: int, seed: int) -> Iterator[pa.Table]:
    """The synthetic universe, ``CHUNK`` rows at a time."""
    n_multi = max(1, tags // 5)
    n_single = tags - n_multi
    rng = np.random.default_rng(seed)
    cards = [int(c) for c in np.geomspace(2, 300, n_single).round()]
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        cols: dict[str, pa.Array] = {"device_id": _ids(np.arange(start, start + n))}
        for i, card in enumerate(cards):
            cols[f"tag{i:02d}"] = _single(rng, n, card, 0.05 + 0.2 * (i % 5) / 4)
        for i in range(n_multi):
            cols[f"list{i:02d}"] = _multi(rng, n, 20)
        yield pa.table(cols)


def main() -> None:
    """Parse options, build (or reuse) the universe, time the persona, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="devices in the universe")
    parser.add_argument("--tags", type=int, default=50, help="tag columns (1 in 5 multi-valued)")
    parser.add_argument("--audience", type=float, default=0.05, help="audience share of U")
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--executor", default="local", help="inline, local or ray")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="keep/reuse the dataset here")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the per-part SHA-256 integrity check"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory(prefix="atoll-bench-persona-") as tmp:
        root = args.keep or Path(tmp) / "universe"
        t0 = time.perf_counter()
        if (root / "manifest.json").exists():
            dataset = BucketedDataset.open(root)
            if dataset.num_rows != args.size:
                raise SystemExit(f"{root} holds {dataset.num_rows} rows, not --size {args.size}")
            setup = "reused"
        else:
            dataset = BucketedDataset.write(
                universe_chunks(args.size, args.tags, args.seed),
                root,
                id_column="device_id",
                buckets=args.buckets,
                overwrite=True,
            )
            setup = f"{time.perf_counter() - t0:.1f} s"
        rng = np.random.default_rng(args.seed + 1)
        picks = np.flatnonzero(rng.random(args.size) < args.audience)
        audience = _ids(picks)
        options = {"workers": args.workers} if args.executor in ("local", "process") else {}
        t1 = time.perf_counter()
        cpu0 = _cpu_seconds()
        with make_executor(args.executor, **options) as executor:
            report = persona(
                audience,
                root,
                id_column="device_id",
                config=PersonaConfig(),
                guard=Guard(),
                executor=executor,
                verify=not args.no_verify,
            )
        elapsed = time.perf_counter() - t1
        cpu = _cpu_seconds() - cpu0
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_children_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        assert report.metrics["base"]["rows"] == dataset.num_rows, "merged rows != manifest"
        result = {
            "devices": args.size,
            "tag_columns": args.tags,
            "buckets": len(dataset.buckets()),
            "audience_ids": len(audience),
            "matched_devices": report.metrics["audience"]["matched_devices"],
            "cells": report.cells.num_rows,
            "executor": f"{args.executor} ({args.workers} workers)" if options else args.executor,
            "setup (generate + bucket)": setup,
            "persona seconds": round(elapsed, 2),
            "devices per second": round(args.size / elapsed),
            "CPU seconds (driver + workers)": round(cpu, 2),
            "CPU seconds per 1M devices": round(cpu / args.size * 1e6, 2),
            "peak RSS driver MiB": round(peak_mib),
            "peak RSS worker MiB": round(peak_children_mib),
            "target": "10M devices × 50 tags ≤ 60 s",
        }
    table = Table(title="persona / TGI benchmark")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
