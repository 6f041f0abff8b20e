"""Covert query benchmarks: rsa vs ec per-query cost, bucket mode at scale, micro vs single.

One command, side-by-side tables (markdown on stdout, JSON with --json):

    .venv/bin/python benchmarks/bench_covert.py                        # small (CI-sized)
    .venv/bin/python benchmarks/bench_covert.py --ns 10,100,1000 --db-size 10000000
    .venv/bin/python benchmarks/bench_covert.py --parts bucket --db-size 10000000  # setup only

1. per-query provider CPU (``time.process_time`` inside the provider's
   ``receive`` calls only) and end-to-end latency (both roles in one process
   through the real codec) for N in ``--ns``, modes rsa and ec, decoy groups;
   the RSA key-pool generation time is reported separately;
2. bucket mode against a ``--db-size`` DB: index setup time on ``--executor``
   (default ``local``: every core; one OPRF evaluation per row), next to the
   one-core bound of the OPRF alone (hash-to-group + scalar multiplication per
   row) and the peak memory of the build, then single-query throughput on one
   core (provider CPU) and end to end, with buckets of about ``--bucket-n``
   (use ``--db-size`` = 1000 * 2^k for a mean bucket of exactly 1000);
3. a micro-batch of ``--micro`` IDs vs the same IDs as single queries (ec).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atoll.crypto.group import hash_to_group_many, point_mul_many, scalar_random
from atoll.crypto.rsa import RsaKeyPool
from atoll.crypto.sign import SigningKey
from atoll.data.io import write_table
from atoll.protocols.covert import (
    BillingEvent,
    CovertClient,
    CovertProvider,
    Mode,
    sign_receipt,
)
from atoll.protocols.covert_source import OPRF_DOMAIN, ArrayLabelSource, LibraryDecoys
from atoll.protocols.messages import Message, decode, encode
from atoll.service.covert import build_index, load_index


class _Biller:
    def __init__(self, key: SigningKey) -> None:
        self.key, self.seq = key, 0

    def __call__(self, event: BillingEvent) -> bytes:
        self.seq += 1
        return sign_receipt(self.key, event, time="t", seq=self.seq, provider="bench")


def _phones(count: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    nums = rng.choice(10**9, size=count, replace=False)
    return [f"13{int(x):09d}" for x in nums]


def _run(client: CovertClient, provider: CovertProvider) -> tuple[float, float]:
    """Drive the pair; return (provider CPU seconds, wall seconds)."""
    cpu = 0.0
    started = time.perf_counter()
    provider.start()
    pending: list[tuple[str, Message]] = [("c", m) for m in client.start()]
    while pending:
        sender, msg = pending.pop(0)
        received = decode(encode(msg))
        if sender == "c":
            t0 = time.process_time()
            out = provider.receive(received)
            cpu += time.process_time() - t0
            pending.extend(("p", m) for m in out)
        else:
            pending.extend(("c", m) for m in client.receive(received))
    return cpu, time.perf_counter() - started


def bench_modes(ns: list[int], rsa_bits: int, repeats: int) -> dict[str, Any]:
    key = SigningKey.generate()
    ids = _phones(max(ns) * 4 + 100)
    source = ArrayLabelSource.from_rows(ids, [[i % 90, "seg"] for i in range(len(ids))], ["a", "s"])
    library = LibraryDecoys(tuple(ids))
    started = time.perf_counter()
    pool = RsaKeyPool.generate(max(ns), bits=rsa_bits)
    pool_seconds = time.perf_counter() - started
    rows = []
    verified: set[bytes] = set()
    for n in ns:
        row: dict[str, Any] = {"N": n}
        for mode in ("rsa", "ec"):
            cpus, walls = [], []
            for r in range(repeats):
                client = CovertClient([ids[r]], mode=mode, amplify="decoy", n=n, decoys=library,
                                      rsa_min_bits=rsa_bits, verified_keys=verified)  # fmt: skip
                provider = CovertProvider(source, signing_key=key, biller=_Biller(key),
                                          rsa_pool=pool, max_n=max(ns))  # fmt: skip
                cpu, wall = _run(client, provider)
                cpus.append(cpu)
                walls.append(wall)
            row[f"{mode}_cpu_ms"] = 1000 * statistics.median(cpus)
            row[f"{mode}_latency_ms"] = 1000 * statistics.median(walls)
        row["ratio"] = row["rsa_cpu_ms"] / max(row["ec_cpu_ms"], 1e-9)
        rows.append(row)
    return {"rows": rows, "rsa_bits": rsa_bits, "pool_keys": max(ns), "pool_seconds": pool_seconds}


def _write_phone_db(path: Path, rows: int, seed: int, chunk: int = 1_000_000) -> list[str]:
    """Write a ``rows``-row (phone, age) Parquet DB in chunks; return the first chunk's phones."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice(10**9, size=rows, replace=False)
    first: list[str] = []
    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, rows, chunk):
            part = numbers[start : start + chunk]
            phones = [f"13{int(x):09d}" for x in part]
            if not first:
                first = phones[:10_000]
            table = pa.table({"phone": phones, "age": (np.arange(len(part)) + start) % 90})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return first


def _oprf_bound(sample: list[str]) -> float:
    """Seconds per row of the OPRF alone (hash-to-group + one scalar multiplication), one core."""
    key = scalar_random()
    started = time.perf_counter()
    point_mul_many(key, hash_to_group_many([x.encode() for x in sample], domain=OPRF_DOMAIN))
    return (time.perf_counter() - started) / len(sample)


def _peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its (finished) children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def bench_bucket(
    db_size: int, queries: int, n: int, workdir: Path, executor: str
) -> dict[str, Any]:
    """Bucket mode: index setup on ``executor`` and one-core query throughput."""
    db = workdir / "db.parquet"
    sample = _write_phone_db(db, db_size, seed=2)
    bound = _oprf_bound(sample[: min(len(sample), 4000)])
    started = time.perf_counter()
    report = build_index(db, workdir / "index", id_column="phone", bucket_target=n,
                         executor=executor)  # fmt: skip
    setup = time.perf_counter() - started
    rss_own, rss_children = _peak_rss_mib()
    index = load_index(workdir / "index")
    key = SigningKey.generate()
    cpu_total = 0.0
    started = time.perf_counter()
    sizes = []
    for x in sample[:queries]:
        client = CovertClient([x], mode="bucket", prefix_bits=index.source.bucket_bits)
        provider = CovertProvider(index.source, signing_key=key, biller=_Biller(key),
                                  max_bucket=1 << 20)  # fmt: skip
        cpu, _ = _run(client, provider)
        cpu_total += cpu
        answer = client.result()[0]
        if answer.status != "hit":
            raise SystemExit(f"bucket query for a DB member answered {answer.status}")
        sizes.append(answer.n)
    wall = time.perf_counter() - started
    return {
        "db_size": db_size,
        "executor": executor,
        "bucket_bits": report.bucket_bits,
        "mean_bucket": statistics.mean(sizes),
        "setup_seconds": setup,
        "setup_us_per_row": 1e6 * setup / db_size,
        "oprf_bound_us_per_row": 1e6 * bound,
        "oprf_setup_seconds": report.bucket_seconds,
        "peak_rss_mib": rss_own,
        "peak_rss_worker_mib": rss_children,
        "provider_qps": queries / cpu_total,
        "end_to_end_qps": queries / wall,
        "queries": queries,
    }


def bench_micro(count: int, n: int, workdir: Path) -> dict[str, Any]:
    """Micro-batch vs single vs async over real HTTP (uvicorn on loopback, ec mode)."""
    from atoll.service.covert import ProviderConfig, ProviderService, ProviderState, create_app
    from atoll.service.server import AppServer
    from atoll.transport.covert_client import CovertHttpClient

    ids = _phones(max(count * 2, n * 4), seed=3)
    db = workdir / "micro.parquet"
    write_table(pa.table({"phone": ids, "age": np.arange(len(ids)) % 90}), db)
    build_index(db, workdir / "micro_index", id_column="phone", with_bucket=False)
    config = ProviderConfig(modes=(Mode.EC,), max_n=max(4 * n, 16), max_batch=count)
    state = ProviderState(load_index(workdir / "micro_index"), workdir / "micro_state", config)
    service = ProviderService(state)
    server = AppServer(create_app(service), "127.0.0.1", 0)
    server.start_background()
    library = LibraryDecoys(tuple(ids))
    asked = ids[:count]
    out: dict[str, Any] = {"ids": count, "N": n}
    try:
        with CovertHttpClient(f"http://127.0.0.1:{server.port}") as client:
            client.info()
            for batch in ("micro", "single", "async"):
                started = time.perf_counter()
                client.query(asked, mode="ec", amplify="decoy", n=n, decoys=library,
                             batch=batch, micro_size=count, poll_interval=0.005)  # fmt: skip
                out[f"{batch}_qps"] = count / (time.perf_counter() - started)
    finally:
        server.stop()
        service.close()
    out["speedup"] = out["micro_qps"] / out["single_qps"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="modes,bucket,micro",
                        help="benchmarks to run: comma list of modes, bucket, micro")  # fmt: skip
    parser.add_argument("--ns", default="10,100", help="comma list of N (full: 10,100,1000)")
    parser.add_argument("--rsa-bits", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db-size", type=int, default=100_000, help="bucket-mode DB rows")
    parser.add_argument("--bucket-n", type=int, default=1000, help="target bucket size")
    parser.add_argument("--executor", default="local",
                        help="executor of the bucket index build (inline, local, ray)")  # fmt: skip
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--micro", type=int, default=1000)
    parser.add_argument("--micro-n", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"modes", "bucket", "micro"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    if "modes" in parts:
        ns = [int(x) for x in args.ns.split(",")]
        modes = results["modes"] = bench_modes(ns, args.rsa_bits, args.repeats)
        print(f"\n### rsa vs ec, per query (decoy groups; RSA-{args.rsa_bits})\n")
        print(
            "| N | rsa provider CPU ms | ec provider CPU ms | rsa/ec | rsa latency ms "
            "| ec latency ms |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for r in modes["rows"]:
            print(f"| {r['N']} | {r['rsa_cpu_ms']:.2f} | {r['ec_cpu_ms']:.2f} | "
                  f"{r['ratio']:.1f}x | {r['rsa_latency_ms']:.2f} | "
                  f"{r['ec_latency_ms']:.2f} |")  # fmt: skip
        print(f"\nRSA key pool: {modes['pool_keys']} keys generated in "
              f"{modes['pool_seconds']:.1f} s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if "bucket" in parts:
            results["bucket"] = bench_bucket(
                args.db_size, args.queries, args.bucket_n, Path(tmp), args.executor
            )
        if "micro" in parts:
            results["micro"] = bench_micro(args.micro, args.micro_n, Path(tmp))
    if "bucket" in parts:
        b = results["bucket"]
        print(f"\n### bucket mode, {b['db_size']:,}-row DB (index built on the "
              f"{b['executor']} executor)\n")  # fmt: skip
        print("| bucket bits | mean bucket | setup s | setup µs/row | OPRF bound µs/row (1 core) "
              "| peak RSS MiB (main / worker) | provider q/s (1 core) | e2e q/s |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {b['bucket_bits']} | {b['mean_bucket']:.0f} | {b['setup_seconds']:.1f} | "
              f"{b['setup_us_per_row']:.0f} | {b['oprf_bound_us_per_row']:.0f} | "
              f"{b['peak_rss_mib']:.0f} / {b['peak_rss_worker_mib']:.0f} | "
              f"{b['provider_qps']:.0f} | {b['end_to_end_qps']:.0f} |")  # fmt: skip
    if "micro" in parts:
        m = results["micro"]
        print(f"\n### micro-batch vs single over HTTP (ec, N={m['N']}, {m['ids']} IDs)\n")
        print("| micro q/s | single q/s | async q/s | micro/single |\n|---:|---:|---:|---:|")
        print(f"| {m['micro_qps']:.0f} | {m['single_qps']:.0f} | {m['async_qps']:.0f} | "
              f"{m['speedup']:.1f}x |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
