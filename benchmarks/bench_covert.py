"""Covert query benchmarks: rsa vs ec per-query cost, bucket mode at scale, micro vs single.

One command, side-by-side tables (markdown on stdout, JSON with --json):

    .venv/bin/python benchmarks/bench_covert.py                        # small (CI-sized)
    .venv/bin/python benchmarks/bench_covert.py --ns 10,100,1000 --db-size 10000000

1. per-query provider CPU (``time.process_time`` inside the provider's
   ``receive`` calls only) and end-to-end latency (both roles in one process
   through the real codec) for N in ``--ns``, modes rsa and ec, decoy groups;
   the RSA key-pool generation time is reported separately;
2. bucket mode against a ``--db-size`` DB: index setup time (sort + one OPRF
   per row) and single-query throughput on one core;
3. a micro-batch of ``--micro`` IDs vs the same IDs as single queries (ec).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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
from atoll.protocols.covert_source import ArrayLabelSource, LibraryDecoys
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


def bench_bucket(db_size: int, queries: int, n: int, workdir: Path) -> dict[str, Any]:
    ids = _phones(db_size, seed=2)
    db = workdir / "db.parquet"
    write_table(pa.table({"phone": ids, "age": np.arange(db_size) % 90}), db)
    del ids
    started = time.perf_counter()
    report = build_index(db, workdir / "index", id_column="phone", bucket_target=n)
    setup = time.perf_counter() - started
    index = load_index(workdir / "index")
    key = SigningKey.generate()
    sample = _phones(db_size, seed=2)[:queries]
    cpu_total = 0.0
    started = time.perf_counter()
    sizes = []
    for x in sample:
        client = CovertClient([x], mode="bucket", prefix_bits=index.source.bucket_bits)
        provider = CovertProvider(index.source, signing_key=key, biller=_Biller(key),
                                  max_bucket=1 << 20)  # fmt: skip
        cpu, _ = _run(client, provider)
        cpu_total += cpu
        sizes.append(client.result()[0].n)
    wall = time.perf_counter() - started
    return {
        "db_size": db_size,
        "bucket_bits": report.bucket_bits,
        "mean_bucket": statistics.mean(sizes),
        "setup_seconds": setup,
        "oprf_setup_seconds": report.bucket_seconds,
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
    parser.add_argument("--ns", default="10,100", help="comma list of N (full: 10,100,1000)")
    parser.add_argument("--rsa-bits", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db-size", type=int, default=100_000, help="bucket-mode DB rows")
    parser.add_argument("--bucket-n", type=int, default=1000, help="target bucket size")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--micro", type=int, default=1000)
    parser.add_argument("--micro-n", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    modes = bench_modes(ns, args.rsa_bits, args.repeats)
    print(f"\n### rsa vs ec, per query (decoy groups; RSA-{args.rsa_bits})\n")
    print(
        "| N | rsa provider CPU ms | ec provider CPU ms | rsa/ec | rsa latency ms | ec latency ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in modes["rows"]:
        print(f"| {r['N']} | {r['rsa_cpu_ms']:.2f} | {r['ec_cpu_ms']:.2f} | {r['ratio']:.1f}x | "
              f"{r['rsa_latency_ms']:.2f} | {r['ec_latency_ms']:.2f} |")  # fmt: skip
    print(f"\nRSA key pool: {modes['pool_keys']} keys generated in {modes['pool_seconds']:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        bucket = bench_bucket(args.db_size, args.queries, args.bucket_n, Path(tmp))
        micro = bench_micro(args.micro, args.micro_n, Path(tmp))
    print(f"\n### bucket mode, {bucket['db_size']:,}-row DB\n")
    print("| bucket bits | mean bucket | setup s (OPRF part) | provider q/s (1 core) | e2e q/s |")
    print("|---:|---:|---:|---:|---:|")
    b = bucket
    print(f"| {b['bucket_bits']} | {b['mean_bucket']:.0f} | {b['setup_seconds']:.1f} "
          f"({b['oprf_setup_seconds']:.1f}) | {b['provider_qps']:.0f} | "
          f"{b['end_to_end_qps']:.0f} |")  # fmt: skip
    print(f"\n### micro-batch vs single over HTTP (ec, N={micro['N']}, {micro['ids']} IDs)\n")
    print("| micro q/s | single q/s | async q/s | micro/single |\n|---:|---:|---:|---:|")
    print(f"| {micro['micro_qps']:.0f} | {micro['single_qps']:.0f} | {micro['async_qps']:.0f} | "
          f"{micro['speedup']:.1f}x |")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"modes": modes, "bucket": bucket, "micro": micro}, indent=1)
        )


if __name__ == "__main__":
    main()
