"""Benchmark: Atoll's PSI family against its cost bound, OpenMined PSI and SecretFlow (spu).

Why: the issue's performance claims must be measured in one run on one
machine, side by side: per-party CPU per item of the built-in ECDH PSI
versus the bound of the group (hash-to-group + 2 scalar multiplications per
item, measured here too); OpenMined PSI (``openmined-psi``) on the same
sets; both cores through the process executor; the ``spu`` engine's RR22,
KKRT and ECDH rows when ``ATOLL_SPU_PYTHON`` is set; labeled PSI (provider
``size`` rows x brand ``size/10`` rows, 10 label columns); intersection-sum;
Paillier (``phe``) versus exponential ElGamal per encryption; and the
ristretto255 versus X25519 micro-measure behind the group choice.

    .venv/bin/python benchmarks/bench_psi.py --size 20000
    .venv/bin/python benchmarks/bench_psi.py --size 200000 --repeat 2 --no-labeled --no-sum
    .venv/bin/python benchmarks/bench_psi.py --size 1000000        # the issue's scale

The bound is the raw cost of the group operations on this machine: SHA-512 +
libsodium ``from_hash`` + two ``crypto_scalarmult_ristretto255`` per item, in
the tightest loop Atoll has (joined buffers, direct calls); each
multiplication decodes -- and so validates -- its input point, which any
correct implementation must do for the peer's points. It is sampled (100k
items) right before each 1-core run and the fastest sample kept. ``--repeat N`` runs
the 1-core Atoll and OpenMined rows N times, interleaved, and keeps each
one's fastest run, so that a noisy (shared) machine biases neither side.
    ATOLL_SPU_PYTHON=/opt/spu-venv/bin/python \
        .venv/bin/python benchmarks/bench_psi.py --size 1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from atoll.crypto.elgamal import encrypt_rows, keygen
from atoll.crypto.group import (
    hash_to_group_many,
    hash_to_group_packed,
    point_mul_many,
    point_mul_packed,
    scalar_random,
)
from atoll.execution import make_executor
from atoll.matching import PsiOptions, get_engine, psi_party, run_local
from atoll.matching.spu import spu_unavailable_reason
from atoll.matching.sum_job import SumOptions, sum_party

console = Console(width=170)


def phones(n: int, offset: int) -> list[str]:
    """Distinct valid phones number ``offset .. offset+n-1`` of one fixed scrambled sequence."""
    idx = np.arange(offset, offset + n, dtype=np.int64)
    body = (idx * 48271 + 12345) % 100_000_000  # a bijection of 0..10^8-1 (48271 is coprime)
    return [f"138{int(v):08d}" for v in body]


def sets(size: int) -> tuple[pa.Table, pa.Table]:
    """Left and right tables of ``size`` rows each, half of them shared."""
    left = pa.table({"phone": phones(size, 0)})
    right = pa.table({"phone": phones(size, size // 2)})
    return left, right


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, CPU seconds of this process)``."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


@contextmanager
def worker_cpu() -> Iterator[dict[int, float]]:
    """Sample the CPU seconds of this process's children (the pool's workers) while inside.

    On a machine shared with other jobs, the wall time of a 2-process run
    says little (the workers get whatever share the scheduler gives them);
    the busiest worker's CPU time plus the parent's is the run's critical
    path, i.e. its wall time on two free cores.
    """
    seen: dict[int, float] = {}
    stop = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        while not stop.is_set():
            for child in me.children(recursive=True):
                try:
                    t = child.cpu_times()
                except psutil.Error:
                    continue
                seen[child.pid] = t.user + t.system
            stop.wait(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def bound_per_item(n: int) -> float:
    """Measured CPU µs per item of hash_to_group + 2 scalar multiplications."""
    items = [p.encode() for p in phones(n, 0)]
    a, b = scalar_random(), scalar_random()

    def work() -> None:
        pts = hash_to_group_packed(items, domain=b"bench")
        pts = point_mul_packed(a, pts)
        point_mul_packed(b, pts)

    _, _wall, cpu = timed(work)
    return cpu / n * 1e6


def psi_run(
    left: pa.Table, right: pa.Table, buckets: int, executor: str, engine: str, workers: int = 2
) -> Any:
    opts = PsiOptions(buckets=buckets, engine=engine)
    a = psi_party(left, "phone", role="receiver", options=opts)
    b = psi_party(right, "phone", role="sender", options=opts)
    ex = (
        make_executor(executor, workers=workers) if executor == "local" else make_executor(executor)
    )
    return run_local(a, b, engine=get_engine(engine), executor=ex)


def openmined(left: pa.Table, right: pa.Table) -> int:
    import private_set_intersection.python as psi

    client_items = left["phone"].to_pylist()
    server_items = right["phone"].to_pylist()
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, psi.DataStructure.RAW)
    response = server.ProcessRequest(client.CreateRequest(client_items))
    return len(client.GetIntersection(setup, response))


def main() -> None:
    """Parse options, run every row, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="items per side")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of the 1-core rows (fastest kept)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for the 2-core row")
    parser.add_argument("--no-openmined", action="store_true")
    parser.add_argument("--no-labeled", action="store_true")
    parser.add_argument("--no-sum", action="store_true")
    parser.add_argument(
        "--two-core-only",
        action="store_true",
        help="run only Atoll's ECDH PSI on the process pool (the 10M x 10M memory run)",
    )
    args = parser.parse_args()
    n = args.size
    left, right = sets(n)
    table = Table(title=f"PSI family, {n:,} x {n:,} items (half shared), {os.cpu_count()} cores")
    for col in (
        "row",
        "wall s",
        "CPU µs/item/party",
        "vs bound",
        "bytes/item R→S",
        "bytes/item S→R",
        "note",
    ):
        table.add_column(col)

    workers = args.workers
    if args.two_core_only:
        with worker_cpu() as kids:
            (res, _), wall2, parent_cpu = timed(
                lambda: psi_run(left, right, args.buckets, "local", "builtin", workers)
            )
        assert res.cardinality == n - n // 2
        table.add_row(
            f"Atoll ECDH PSI, {workers} processes", f"{wall2:.2f}", "", "",
            f"{res.bytes_sent / n:.1f}", f"{res.bytes_received / n:.1f}",
            f"critical path {parent_cpu + max(kids.values(), default=0.0):.1f} CPU-s",
        )  # fmt: skip
        report(table)
        return

    # The bound is sampled right before each 1-core run (below) and the fastest
    # sample kept, as the runs keep theirs: a VM whose speed drifts during a
    # long run then biases neither side. This first sample covers --repeat 0.
    sample = min(n, 100_000)
    bound = bound_per_item(sample)

    # The 1-core rows, interleaved; each keeps its fastest run (wall, CPU).
    best: dict[str, tuple[float, float]] = {}
    mine: Any = None
    for i in range(max(1, args.repeat)):
        if i:
            bound = min(bound, bound_per_item(sample))
        (mine, _), wall, cpu = timed(
            lambda: psi_run(left, right, args.buckets, "inline", "builtin")
        )
        assert mine.cardinality == n - n // 2
        best["atoll"] = min(best.get("atoll", (wall, cpu)), (wall, cpu))
        if not args.no_openmined:
            count, wall_om, cpu_om = timed(lambda: openmined(left, right))
            assert count == n - n // 2
            best["om"] = min(best.get("om", (wall_om, cpu_om)), (wall_om, cpu_om))
    wall, cpu = best["atoll"]
    per = cpu / (2 * n) * 1e6
    table.add_row(
        "bound: h2g + 2 mul (ristretto255, rbcl)",
        "",
        f"{bound:.1f}",
        "1.00",
        "",
        "",
        f"fastest of {max(1, args.repeat)} samples of {sample:,} items, one before each 1-core run",
    )
    table.add_row(
        "Atoll ECDH PSI, 1 core", f"{wall:.2f}", f"{per:.1f}", f"{per / bound:.2f}",
        f"{mine.bytes_sent / n:.1f}", f"{mine.bytes_received / n:.1f}", "incl. normalize+bucket",
    )  # fmt: skip
    with worker_cpu() as kids:
        (mine2, _), wall2, parent_cpu = timed(
            lambda: psi_run(left, right, args.buckets, "local", "builtin", workers)
        )
    assert mine2.cardinality == n - n // 2
    table.add_row(
        f"Atoll ECDH PSI, {workers} processes", f"{wall2:.2f}", "", "", "", "",
        f"x{wall / wall2:.2f} vs 1 core (incl. worker start-up)",
    )  # fmt: skip
    busiest = max(kids.values(), default=0.0)
    path = parent_cpu + busiest
    table.add_row(
        f"  critical path on {workers} free cores", f"{path:.2f}", "", "", "", "",
        f"parent {parent_cpu:.1f} + busiest worker {busiest:.1f} CPU-s; "
        f"x{cpu / path:.2f} vs 1-core CPU",
    )  # fmt: skip

    if "om" in best:
        wall_om, cpu_om = best["om"]
        table.add_row(
            "OpenMined PSI (its ECDH PSI), 1 core", f"{wall_om:.2f}",
            f"{cpu_om / (2 * n) * 1e6:.1f}", f"{cpu_om / (2 * n) * 1e6 / bound:.2f}", "", "",
            f"Atoll faster: 1 core x{wall_om / wall:.2f}, {workers} procs x{wall_om / wall2:.2f}",
        )  # fmt: skip
        table.add_row(
            "  same, in CPU time", "", "", "", "", "",
            f"Atoll faster: 1 core x{cpu_om / cpu:.2f}, "
            f"{workers} procs (critical path) x{cpu_om / path:.2f}",
        )  # fmt: skip

    reason = spu_unavailable_reason()
    for engine in ("spu", "spu-kkrt", "spu-ecdh"):
        if reason is not None:
            table.add_row(f"{engine} engine", "", "", "", "", "", f"skipped: {reason}")
            break
        (res, _), wall_s, _ = timed(
            lambda e=engine: psi_run(left, right, args.buckets, "inline", e)
        )
        assert res.cardinality == n - n // 2
        label = {"spu": "RR22", "spu-kkrt": "KKRT", "spu-ecdh": "ECDH"}[engine]
        table.add_row(
            f"spu engine ({label})", f"{wall_s:.2f}", "", "", "", "", "separate interpreter"
        )

    if not args.no_labeled:
        brand = pa.table({"phone": phones(max(1, n // 10), n // 2)})
        cols = {f"tag{i}": [f"v{i}-{j % 17}" for j in range(n)] for i in range(10)}
        provider = pa.table({"phone": phones(n, 0), **cols})
        opts = PsiOptions(buckets=args.buckets, labels=tuple(cols))

        def labeled() -> Any:
            a = psi_party(
                brand, "phone", role="receiver", options=PsiOptions(buckets=args.buckets, labels=())
            )
            b = psi_party(provider, "phone", role="sender", options=opts)
            return run_local(a, b, executor=make_executor("local", workers=2))

        (lab, _), wall_l, _ = timed(labeled)
        table.add_row(
            f"labeled PSI {n:,} provider x {n // 10:,} brand, 10 labels", f"{wall_l:.2f}",
            "", "", f"{lab.bytes_sent / max(1, n // 10):.1f}", f"{lab.bytes_received / n:.1f}",
            "2 processes; R→S per brand row, S→R per provider row",
        )  # fmt: skip

    if not args.no_sum:
        values = pa.table(
            {"phone": phones(n, 0), "amount": [f"{(j % 9973) / 100:.2f}" for j in range(n)]}
        )
        ids = pa.table({"phone": phones(n, n // 2)})

        def isum() -> Any:
            o = SumOptions(buckets=args.buckets)
            a = sum_party(values, "phone", role="values", value_columns="amount", options=o)
            b = sum_party(ids, "phone", role="ids", options=o)
            return run_local(a, b, executor=make_executor("local", workers=2))

        (s, _), wall_sum, _ = timed(isum)
        table.add_row(
            "intersection-sum (exp. ElGamal), 2 processes", f"{wall_sum:.2f}", "", "",
            f"{s.stage.bytes_sent / n:.1f}", f"{s.stage.bytes_received / n:.1f}",
            f"values→ids / ids→values; sum {s.to_dict()['sums']['amount']}",
        )  # fmt: skip

    # Homomorphic encryption per item: exponential ElGamal (owner) vs Paillier (phe).
    keys = [keygen()]
    k = 2000
    _, w_eg, _ = timed(lambda: encrypt_rows(keys, [[j] for j in range(k)]))
    table.add_row(
        "exp. ElGamal encrypt (1 column)", "", f"{w_eg / k * 1e6:.1f}", "", "", "", "2 base mults"
    )
    try:
        import phe

        pub, _priv = phe.paillier.generate_paillier_keypair(n_length=2048)
        m = 30
        _, w_p, _ = timed(lambda: [pub.encrypt(j) for j in range(m)])
        table.add_row(
            "Paillier-2048 encrypt (phe+gmpy2)", "", f"{w_p / m * 1e6:.1f}", "", "", "", ""
        )
    except ImportError:
        table.add_row("Paillier (phe)", "", "", "", "", "", "phe not installed")

    # ristretto255 vs X25519 (OpenSSL via cryptography), per scalar multiplication.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    reps = 3000
    pts = hash_to_group_many([str(i).encode() for i in range(reps)], domain=b"bench")
    s_ = scalar_random()
    _, w_r, _ = timed(lambda: point_mul_many(s_, pts))
    _, w_h, _ = timed(
        lambda: hash_to_group_many([str(i).encode() for i in range(reps)], domain=b"b")
    )
    priv = X25519PrivateKey.generate()
    peers = [X25519PrivateKey.generate().public_key() for _ in range(200)]
    _, w_x, _ = timed(lambda: [priv.exchange(peers[i % 200]) for i in range(reps)])
    table.add_row(
        "ristretto255 scalar mult (rbcl)", "", f"{w_r / reps * 1e6:.1f}", "", "", "", "validated"
    )
    table.add_row("ristretto255 from_hash + SHA-512", "", f"{w_h / reps * 1e6:.1f}", "", "", "", "")
    table.add_row(
        "X25519 exchange (cryptography/OpenSSL)", "", f"{w_x / reps * 1e6:.1f}", "", "", "", ""
    )

    report(table)


def report(table: Table) -> None:
    """Print the table and the peak RSS of this process and its largest child."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    console.print(table)
    console.print(f"peak RSS: this process {peak:.0f} MiB, largest child {kids:.0f} MiB")


if __name__ == "__main__":
    main()
