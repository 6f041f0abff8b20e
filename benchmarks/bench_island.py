"""Benchmark: island upload (seal) throughput, island match N x N incl. decryption, vs ECDH PSI.

Why: the island's case rests on two numbers (issue 4, "Done means"): sealing
must not be the bottleneck of an upload, and matching inside the island --
decrypt the sealed buckets, then a vectorized hash join -- must beat
public-key PSI on the same sets by a wide margin (target: 10M x 10M under
60 s on 2 cores, at least 20x faster than ECDH PSI, measured side by side).

What runs (one process, in memory apart from the sealed store in a temp dir):

1. **seal** -- raw AES-256-GCM over 4 MiB chunks (``ChunkSealer``), and the
   whole upload path ``seal_dataset`` (Arrow IPC + zstd + seal + store) of the
   brand's N rows, reported as MB/s of plaintext IPC bytes;
2. **island match** -- brand and provider datasets of N rows each (half the
   IDs shared), bucketed (B buckets) and sealed; then the island's real job
   path: attest + key release, open every bucket both sides have (decrypt,
   check), waterfall hash join per bucket (Arrow C++), guarded aggregate,
   HPKE-sealed result, burn, signed receipts. Bucketing and sealing are the
   parties' work and are timed apart;
3. **ECDH PSI** -- ``atoll.protocols.psi`` (ristretto255 via libsodium,
   hash-to-group + two scalar multiplications per item and party) on the
   same ID sets, both roles in one process through the real codec
   (``run_pair``). With ``--psi-max`` smaller than N it runs on the first
   ``--psi-max`` IDs of each side and the time is scaled linearly to N
   (PSI cost is linear in the set sizes), marked "extrapolated".

Checks: both methods find the same intersection size (PSI on its subset is
checked against the plain set intersection of that subset).

    .venv/bin/python benchmarks/bench_island.py --size 1000000 --psi-max 100000
    .venv/bin/python benchmarks/bench_island.py --size 10000000 --psi-max 200000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from atoll.crypto.chunks import ChunkSealer
from atoll.crypto.hpke import HpkePrivateKey
from atoll.crypto.sign import SigningKey
from atoll.data.datasets import bucket_table
from atoll.data.envelope import SealedStore, seal_dataset
from atoll.ids.buckets import BucketFunction
from atoll.island.evidence.simulated import SimulatedBackend
from atoll.island.keyrelease import new_nonce, sign_release, verify_bundle, wrap_dataset_key
from atoll.island.policy import parse_policy
from atoll.island.runner import Island, open_result
from atoll.protocols.psi import PsiReceiver, PsiSender
from atoll.transport.memory import run_pair

console = Console()


def _phones(values: np.ndarray) -> pa.Array:
    digits = pa.array(values.astype(np.int64) + 13_000_000_000).cast(pa.string())
    return digits


def _tables(n: int, seed: int) -> tuple[pa.Table, pa.Table, int]:
    rng = np.random.default_rng(seed)
    universe = rng.choice(900_000_000, size=int(n * 1.5), replace=False)
    brand_ids = universe[:n]
    provider_ids = universe[n // 2 : n // 2 + n]
    shared = n - n // 2
    brand = pa.table(
        {
            "phone": _phones(brand_ids),
            "member_id": pc.cast(pa.array(np.arange(n)), pa.string()),
        }
    )
    provider = pa.table(
        {
            "phone": _phones(provider_ids),
            "tag": pa.array(
                np.array(["sports", "beauty", "travel", "auto"])[rng.integers(0, 4, n)]
            ),
        }
    )
    return brand, provider, shared


def _seal(
    store: SealedStore, table: pa.Table, name: str, key: bytes, sk: SigningKey, fn: BucketFunction
) -> tuple[bytes, float, float, int]:
    t0 = time.perf_counter()
    buckets = bucket_table(table, "phone", fn)
    t1 = time.perf_counter()
    sealed = seal_dataset(
        sorted(buckets.items()),
        dataset_id=name,
        version=1,
        dataset_key=key,
        signing_key=sk,
        schema=table.schema,
        id_column="phone",
        bucket_function=fn,
        store=store,
    )
    t2 = time.perf_counter()
    return sealed.signed, t1 - t0, t2 - t1, sealed.manifest.sealed_bytes


def _raw_seal_mb_s(total_mb: int = 256) -> float:
    sealer = ChunkSealer(os.urandom(32))
    chunk = os.urandom(4 << 20)
    count = total_mb // 4
    t0 = time.perf_counter()
    for i in range(count):
        sealer.seal(chunk, aad=i.to_bytes(8, "big"))
    return total_mb / (time.perf_counter() - t0)


def _job(brand_sk: SigningKey, provider_sk: SigningKey, brand_hpke: HpkePrivateKey) -> bytes:
    import base64

    return (
        'version = 1\njob = "bench"\ncomputation = "match"\n'
        f'[parties.brand]\nsigning_key = "{brand_sk.verify_key.to_text()}"\n'
        f'[parties.provider]\nsigning_key = "{provider_sk.verify_key.to_text()}"\n'
        '[[inputs]]\nname = "seed"\nparty = "brand"\ndataset = "brand"\nversion = 1\n'
        '[[inputs]]\nname = "uni"\nparty = "provider"\ndataset = "provider"\nversion = 1\n'
        '[match]\nleft = "seed"\nright = "uni"\n[[match.steps]]\nleft = "phone"\nright = "phone"\n'
        '[[outputs]]\nname = "counts"\nrecipient = "brand"\n'
        f'public_key = "{base64.b64encode(brand_hpke.public_bytes).decode()}"\n'
        "[guards]\nmin_cell_size = 50\n"
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="rows per party (N)")
    parser.add_argument("--buckets", type=int, default=64, help="bucket count B")
    parser.add_argument("--psi-max", type=int, default=100_000, help="largest PSI run (0: skip)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n = args.size
    console.print(f"generating 2 x {n:,} IDs (half shared) …")
    brand, provider, shared = _tables(n, args.seed)
    fn = BucketFunction(args.buckets)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-island-") as tmp:
        island = Island(Path(tmp) / "island", backend=SimulatedBackend({"bench": True}))
        brand_sk, provider_sk = SigningKey.generate(), SigningKey.generate()
        brand_hpke = HpkePrivateKey.generate()
        keys = {"brand": os.urandom(32), "provider": os.urandom(32)}
        raw = _raw_seal_mb_s()
        rows.append(("seal: AES-256-GCM, 4 MiB chunks", f"{raw:,.0f} MB/s", "one core"))
        blobs = {}
        for name, table, sk in (("brand", brand, brand_sk), ("provider", provider, provider_sk)):
            store = SealedStore(Path(tmp) / f"party-{name}")
            signed, t_bucket, t_seal, sealed_bytes = _seal(store, table, name, keys[name], sk, fn)
            blobs[name] = (signed, store)
            mb = sealed_bytes / 1e6
            plain_mb = table.nbytes / 1e6
            rows.append(
                (
                    f"upload path, {name}: bucket {n:,} rows",
                    f"{t_bucket:.2f} s",
                    "keyed BLAKE2b per ID (party side)",
                )
            )
            rows.append(
                (
                    f"upload path, {name}: IPC+zstd+seal",
                    f"{t_seal:.2f} s",
                    f"{plain_mb:,.1f} MB Arrow in, {plain_mb / t_seal:,.0f} MB/s; "
                    f"{mb:,.1f} MB sealed",
                )
            )
        for signed, store in blobs.values():
            _, missing = island.put_manifest(signed)
            for digest in missing:
                island.put_chunk(digest, store.get_chunk(digest))
        text = _job(brand_sk, provider_sk, brand_hpke)
        policy = parse_policy(
            {
                "version": 1,
                "tee_types": ["simulated"],
                "allow_simulated": True,
                "measurements": {"measurement": [island.backend.measurement]},
            }
        )
        t0 = time.perf_counter()
        job = island.submit_job(text)
        for party in ("brand", "provider"):
            nonce = new_nonce()
            bundle = island.attest(nonce, job.job_id)
            verify_bundle(bundle, policy, nonce=nonce, job_hash=job.digest)
            wrapped = wrap_dataset_key(
                bundle, keys[party], party=party, dataset_id=party, version=1
            )
            signer = brand_sk if party == "brand" else provider_sk
            signature = sign_release(
                signer,
                job_hash=job.digest,
                nonce=nonce,
                party=party,
                dataset_id=party,
                version=1,
                wrapped=wrapped,
            )
            island.release_key(
                job.job_id,
                party=party,
                dataset_id=party,
                version=1,
                nonce=nonce,
                wrapped=wrapped,
                signature=signature,
            )
        t1 = time.perf_counter()
        outcome = island.run(job.job_id)
        t2 = time.perf_counter()
        if outcome.status != "done":
            raise SystemExit(f"island job failed: {outcome.error}")
        result = open_result(outcome.results[0], brand_hpke, job_digest=job.digest)
        matched = result.filter(pc.equal(result["step"], "all steps"))["users"][0].as_py()
        if matched != shared:
            raise SystemExit(f"island matched {matched}, expected {shared}")
        island_s = t2 - t1
        rows.append(("island: attest + key release (2 parties)", f"{t1 - t0:.3f} s", ""))
        rows.append(
            (
                f"island: match {n:,} x {n:,} incl. decryption",
                f"{island_s:.2f} s",
                f"{matched:,} matched; {args.buckets} buckets; burn + receipts included",
            )
        )
        if args.psi_max > 0:
            m = min(n, args.psi_max)
            left = [v.encode() for v in brand["phone"].slice(0, m).to_pylist()]
            right = [v.encode() for v in provider["phone"].slice(0, m).to_pylist()]
            t0 = time.perf_counter()
            run = run_pair(PsiReceiver(left), PsiSender(right))
            psi_s = time.perf_counter() - t0
            expected = len(set(left) & set(right))
            got = run.a_result.cardinality
            scale = (2 * n) / (2 * m)
            psi_full = psi_s * scale
            note = f"{m:,} x {m:,} in {psi_s:.2f} s" + (
                f", extrapolated x{scale:.0f} (linear)" if m < n else ""
            )
            if got != expected:
                raise SystemExit(f"PSI found {got}, expected {expected}")
            rows.append((f"ECDH PSI {n:,} x {n:,}", f"{psi_full:.1f} s", note))
            rows.append(("island speed-up over ECDH PSI", f"{psi_full / island_s:,.0f}x", ""))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = Table(title=f"island benchmark, N = {n:,} per party (peak RSS {peak:,.0f} MiB)")
    table.add_column("step")
    table.add_column("time / rate", justify="right")
    table.add_column("notes")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
