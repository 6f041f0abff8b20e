"""Benchmark: train a PU lookalike on N universe rows × F features; score M rows streaming.

Why: the issue's targets (2 cores): train on 1M rows × 60 features in under
2 minutes; score 10M rows in under 2 minutes, streaming, with peak memory
under 4 GiB. The run generates a universe of that shape — 40 single-valued
text tags with 3 to 12 values (5-15 % unknown), 10 multi-valued
``list<string>`` tags (3 items of 20 on average), 10 numeric columns, a
planted buyer propensity driving ~2 % seeds — writes the scoring universe
as a Parquet file with ``--row-group`` rows per row group (setup, reported
apart), then times:

* **train** — :class:`~atoll.models.lookalike.LookalikeModel` fit on
  ``--size`` rows (encoder + PU strategy, no hidden-seed evaluation), wall
  and CPU; the encoder's share is timed apart on the same table;
* **score** — :func:`atoll.models.scoring.score_universe` over
  ``--score-size`` rows on the executor (groups and seed exclusions on,
  packages off): wall (with pass 1, the parallel scoring, and pass 2, the
  driver's group cut and ``scores.parquet``, apart), CPU of the driver and
  its workers, rows per second of wall and per CPU-second;
* **memory** — a sampler adds up the resident memory of this process and
  its workers every 0.2 s: the peak of that sum and of the largest single
  process, separately for training and scoring.

``--verify`` re-scores the first row group with LightGBM's own
``Booster.predict`` (the compiled evaluator switched off) and reports
whether ``scores.parquet`` holds exactly the same numbers. Compare runs made
on the same machine at the same time: the machine may be shared.

    .venv/bin/python benchmarks/bench_lookalike.py --size 100000 --score-size 200000
    .venv/bin/python benchmarks/bench_lookalike.py --size 1000000 --score-size 10000000 \\
        --strategy elkan_noto --executor local --workers 2 --verify
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from atoll.execution import make_executor
from atoll.models.features import TagEncoder
from atoll.models.lookalike import LookalikeModel
from atoll.models.registry import load_model_dir, save_model_dir
from atoll.models.scoring import GroupSpec, exclusions_table, score_universe


def make_universe(n: int, seed: int, offset: int = 0) -> tuple[pa.Table, np.ndarray]:
    """A universe of ``n`` rows: 40 text, 10 list and 10 numeric tags; and the planted seeds."""
    rng = np.random.default_rng([seed, offset])
    cols: dict[str, pa.Array] = {
        "device_id": pa.array([f"dev{offset + i:09d}" for i in range(n)], pa.string())
    }
    logit = np.full(n, -4.5)
    for j in range(40):
        k = 3 + j % 10
        codes = rng.integers(0, k, n)
        if j < 8:
            logit += 0.4 * (codes == 0)
        labels = np.array([f"v{i}" for i in range(k)] + ["unknown"], dtype=object)
        codes = np.where(rng.random(n) < 0.05 + 0.01 * (j % 11), k, codes)
        cols[f"tag{j:02d}"] = pa.DictionaryArray.from_arrays(
            pa.array(codes, pa.int32()), pa.array(labels, pa.string())
        ).dictionary_decode()
    vocab = np.array([f"item{i}" for i in range(20)], dtype=object)
    for j in range(10):
        lengths = rng.poisson(3, n)
        flat = rng.integers(0, 20, int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        if j < 2:
            has0 = np.zeros(n, dtype=bool)
            np.logical_or.at(has0, np.repeat(np.arange(n), lengths), flat == 0)
            logit += 0.6 * has0
        cols[f"list{j}"] = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(vocab[flat], pa.string())
        )
    for j in range(10):
        x = rng.gamma(1.0 + j % 3, 1.0, n)
        if j < 3:
            logit += 0.3 * np.log1p(x)
        x[rng.random(n) < 0.1] = np.nan
        cols[f"num{j}"] = pa.array(x)
    buyer = rng.random(n) < 1 / (1 + np.exp(-logit))
    seeds = buyer & (rng.random(n) < 0.5)
    return pa.table(cols), seeds


class MemorySampler:
    """Peak resident memory of this process plus its children (sum, and largest one)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_total = 0
        self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        sizes = []
        for proc in [me, *me.children(recursive=True)]:
            try:
                sizes.append(proc.memory_info().rss)
            except psutil.Error:  # a worker that just exited
                continue
        self.peak_total = max(self.peak_total, sum(sizes))
        self.peak_single = max(self.peak_single, max(sizes, default=0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished, waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mib(n: int) -> str:
    """Bytes as MiB text."""
    return f"{n / 2**20:,.0f} MiB"


def verify_scores(model_dir: Path, universe: Path, scores: Path) -> tuple[int, bool, float]:
    """Score the first row group with LightGBM's own predict; compare with ``scores.parquet``."""
    loaded = load_model_dir(model_dir)
    est = loaded.model.pipeline.named_steps["pu"] if loaded.model.pipeline else None
    boosters = [getattr(est, "estimator_", None), *getattr(est, "estimators_", [])]
    for booster in boosters:
        if booster is not None and hasattr(booster, "forest_"):
            booster.forest_ = None  # back to lightgbm.Booster.predict
    table = pq.ParquetFile(universe).read_row_group(0)
    expected = loaded.model.score(table)
    got = pq.read_table(scores, columns=["score"])["score"].slice(0, table.num_rows).to_numpy()
    same = bool(np.array_equal(expected, got))
    return table.num_rows, same, float(np.max(np.abs(expected - got), initial=0.0))


def main() -> None:
    """Run the benchmark and print a table (and JSON with ``--json``)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=100_000, help="training rows")
    ap.add_argument("--score-size", type=int, default=200_000, help="rows to score")
    ap.add_argument("--strategy", default="bagging", help="bagging | elkan_noto | logistic")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads for training")
    ap.add_argument("--executor", default="inline", help="inline | local | ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--row-group", type=int, default=250_000, help="rows per Parquet row group")
    ap.add_argument("--verify", action="store_true", help="check scores against LightGBM")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    console = Console()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="atoll-bench-lookalike-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        train, seeds = make_universe(args.size, 1)
        path = tmp / "universe.parquet"
        writer: pq.ParquetWriter | None = None
        chunk = args.row_group
        for start in range(0, args.score_size, chunk):
            part, _ = make_universe(min(chunk, args.score_size - start), 2, offset=start)
            if writer is None:
                writer = pq.ParquetWriter(path, part.schema)
            writer.write_table(part, row_group_size=chunk)
            del part
        if writer is not None:
            writer.close()
        setup_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        cpu0 = time.process_time()
        TagEncoder().fit_transform(train)
        encode_s, encode_cpu = time.perf_counter() - t0, time.process_time() - cpu0

        with MemorySampler() as train_mem:
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            model = LookalikeModel(args.strategy, random_state=0, n_jobs=args.threads)
            model.fit(train, seeds)
            train_s = time.perf_counter() - t0
            train_cpu = time.process_time() - cpu0
        features = len(model.feature_names)
        model_dir = save_model_dir(
            tmp / "model",
            model,
            manifest={"benchmark": True},
            metrics={},
            exclusions=exclusions_table(
                train["device_id"].filter(pa.array(seeds)).combine_chunks()
            ),
        )
        del train, model

        marks: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if stage == "score" and done == 1:
                marks["first_part"] = now
            if stage == "score" and done == total:
                marks["pass1"] = now
            if stage == "groups" and done == total:
                marks["pass2"] = now

        options: dict[str, Any] = {"workers": args.workers} if args.executor == "local" else {}
        with MemorySampler() as score_mem:
            t0 = time.perf_counter()
            cpu0, kids0 = time.process_time(), children_cpu()
            with make_executor(args.executor, **options) as ex:
                result = score_universe(
                    model_dir,
                    path,
                    tmp / "scored",
                    spec=GroupSpec.parse("0.01,0.05,0.2"),
                    executor=ex,
                    kinds=None,
                    progress=progress,
                )
            score_s = time.perf_counter() - t0
            score_cpu = time.process_time() - cpu0 + children_cpu() - kids0
        pass1 = marks.get("pass1", t0 + score_s) - t0
        pass2 = marks.get("pass2", t0 + score_s) - t0 - pass1
        rows = [
            ("training rows × columns", f"{args.size:,} × 60 ({features} encoded features)"),
            ("seeds", f"{int(seeds.sum()):,}"),
            ("setup (generate + write)", f"{setup_s:.1f} s"),
            ("train wall / CPU", f"{train_s:.1f} s / {train_cpu:.1f} s  (target < 120 s at 1M)"),
            ("  encoder fit+transform", f"{encode_s:.1f} s / {encode_cpu:.1f} s CPU"),
            ("train peak memory", mib(train_mem.peak_total)),
            ("score rows", f"{result.rows:,} in row groups of {args.row_group:,}"),
            ("score wall", f"{score_s:.1f} s  (target < 120 s at 10M)"),
            (
                "  pass 1 / pass 2 / rest",
                f"{pass1:.1f} s (first part after {marks.get('first_part', t0) - t0:.1f} s)"
                f" / {pass2:.1f} s / {score_s - pass1 - pass2:.1f} s",
            ),
            ("score CPU (driver + workers)", f"{score_cpu:.1f} s"),
            ("score rows/s", f"{result.rows / score_s:,.0f}"),
            ("score rows per CPU-second", f"{result.rows / max(score_cpu, 1e-9):,.0f}"),
            ("group sizes", ", ".join(f"{n:,}" for n in result.group_sizes)),
            (
                "score peak memory",
                f"{mib(score_mem.peak_total)} all processes, "
                f"{mib(score_mem.peak_single)} largest  (target < 4096 MiB)",
            ),
        ]
        if args.verify:
            n, same, diff = verify_scores(model_dir, path, result.scores_path)
            rows.append(
                ("scores = LightGBM predict", f"{same} on {n:,} rows (max |diff| {diff:.3g})")
            )
    table = Table(title=f"lookalike benchmark ({args.strategy}, executor {args.executor})")
    table.add_column("measure")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if args.json:
        print(json.dumps(dict(rows), indent=2))


if __name__ == "__main__":
    main()
