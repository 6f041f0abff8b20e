"""The island as a real process on loopback, over mutual TLS, driven through the CLI.

Brand and provider each keep their own keys and policy; the island is
``python -m atoll island serve`` in a subprocess. The test checks the whole
"done means" list: encrypted uploads, a match + tag-augmentation job whose
result only the brand decrypts, an empty temp area afterwards (also after
SIGTERM), verified receipts, and refusals of a tampered chunk, a replayed
chunk, a wrong-policy island and simulated evidence under a strict policy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from atoll.cli import app
from atoll.data.envelope import SealedStore
from atoll.errors import IntegrityError, RemoteProtocolError
from atoll.service.island import IslandClient, PartyKeys
from atoll.transport.tls import PartyFiles, init_certs
from tests.island.island_helpers import policy_toml

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@dataclass
class Env:
    url: str
    certs: Path
    work: Path
    island_dir: Path
    proc: subprocess.Popen[str]
    measurement: str

    def cli(self, *args: str, party: str | None = None) -> tuple[int, str]:
        extra = ["--certs", str(self.certs), "--tls-name", party] if party else []
        result = runner.invoke(app, ["island", *args, *extra])
        return result.exit_code, result.output

    def client(self, party: str) -> IslandClient:
        return IslandClient(self.url, tls=PartyFiles(self.certs, party).client_tls())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("e2e")
    certs = work / "certs"
    init_certs(certs, ["island", "brand", "provider"])
    island_dir = work / "island"
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "atoll",
        "island",
        "serve",
        "--backend",
        "simulated",
        "--port",
        str(port),
        "--workdir",
        str(island_dir),
        "--certs",
        str(certs),
    ]
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_vars
    )
    url = f"https://127.0.0.1:{port}"
    info = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with IslandClient(url, tls=PartyFiles(certs, "brand").client_tls()) as client:
                info = client.info()
                break
        except RemoteProtocolError:
            time.sleep(0.2)
    if info is None:
        proc.kill()
        out = proc.stdout.read() if proc.stdout else ""
        pytest.fail(f"island did not start: {out}")
    environment = Env(url, certs, work, island_dir, proc, str(info["measurement"]))
    yield environment
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _write_inputs(work: Path) -> tuple[Path, Path]:
    members = pa.table(
        {
            "member_id": [f"m{i:03d}" for i in range(60)],
            "phone": [f"1380000{i:04d}" for i in range(60)],
        }
    )
    tags = pa.table(
        {
            "phone": [f"1380000{i:04d}" for i in range(20, 120)],
            "tag": [("sports", "beauty", "travel")[i % 3] for i in range(100)],
        }
    )
    pq.write_table(members, work / "members.parquet")
    pq.write_table(tags, work / "tags.parquet")
    return work / "members.parquet", work / "tags.parquet"


def _job(
    work: Path, brand: dict[str, str], provider: dict[str, str], name: str, version: int = 1
) -> Path:
    text = (
        f'version = 1\njob = "{name}"\ncomputation = "tag_augmentation"\n'
        f'[parties.brand]\nsigning_key = "{brand["signing_key"]}"\n'
        f'[parties.provider]\nsigning_key = "{provider["signing_key"]}"\n'
        '[[inputs]]\nname = "seed"\nparty = "brand"\ndataset = "brand-members"\nversion = 1\n'
        '[[inputs]]\nname = "tags"\nparty = "provider"\ndataset = "provider-tags"\n'
        f"version = {version}\n"
        '[match]\nleft = "seed"\nright = "tags"\n'
        '[[match.steps]]\nleft = "phone"\nright = "phone"\n'
        '[params]\ntag_columns = ["tag"]\nkey_column = "member_id"\n'
        '[[outputs]]\nname = "brand-tags"\nrecipient = "brand"\n'
        f'public_key = "{brand["public_key"]}"\nrow_level = false\n'
        "[guards]\nmin_cell_size = 5\n"
    )
    path = work / f"{name}.toml"
    path.write_text(text)
    return path


def _policies(env: Env) -> tuple[Path, Path, Path]:
    good = env.work / "policy.toml"
    good.write_text(policy_toml(env.measurement))
    strict = env.work / "strict.toml"
    strict.write_text(policy_toml(env.measurement, allow_simulated=False))
    other = env.work / "other-island.toml"
    other.write_text(policy_toml("ab" * 32))
    return good, strict, other


def test_two_party_island_run_and_every_refusal(env: Env) -> None:
    good, strict, other = _policies(env)
    members, tags = _write_inputs(env.work)
    brand_state, provider_state = env.work / "brand", env.work / "provider"
    keys = {}
    for party, state in (("brand", brand_state), ("provider", provider_state)):
        code, out = env.cli("keygen", "--party", party, "--state", str(state))
        assert code == 0, out
        keys[party] = PartyKeys.load(state / "keys.json").public()

    # Attestation: accepted under the party's policy; refused (exit 1) under the others.
    code, out = env.cli("attest", "--peer", env.url, "--policy", str(good), party="brand")
    assert code == 0, out
    assert '"simulated": true' in out
    code, out = env.cli("attest", "--peer", env.url, "--policy", str(strict), party="brand")
    assert code == 1
    assert "allow_simulated" in out
    code, out = env.cli("attest", "--peer", env.url, "--policy", str(other), party="brand")
    assert code == 1
    assert "measurements.measurement" in out

    # Encrypted uploads (bucketed).
    for party, state, path, dataset in (
        ("brand", brand_state, members, "brand-members"),
        ("provider", provider_state, tags, "provider-tags"),
    ):
        code, out = env.cli(
            "upload", "--peer", env.url, "--dataset", dataset, "--input", str(path),
            "--id-column", "phone", "--state", str(state), "--buckets", "4", party=party,
        )  # fmt: skip
        assert code == 0, out

    job = _job(env.work, keys["brand"], keys["provider"], "e2e-1")
    # A wrong-policy island gets no key: release is refused before any key leaves.
    code, out = env.cli(
        "release", "--peer", env.url, "--job", str(job), "--state", str(provider_state),
        "--policy", str(other), party="provider",
    )  # fmt: skip
    assert code == 1
    assert "no key released" in out
    with env.client("brand") as client:
        job_id = client.submit_job(job.read_bytes())["job_id"]
        assert client.job_status(job_id)["released"] == []

    code, out = env.cli(
        "release", "--peer", env.url, "--job", str(job), "--state", str(provider_state),
        "--policy", str(good), party="provider",
    )  # fmt: skip
    assert code == 0, out
    results = env.work / "results"
    code, out = env.cli(
        "run", "--peer", env.url, "--job", str(job), "--out", str(results),
        "--state", str(brand_state), "--policy", str(good), party="brand",
    )  # fmt: skip
    assert code == 0, out
    assert "SIMULATED" in out
    table = pq.read_table(results / "brand-tags.parquet")
    cells = {(r["dimension"], r["value"]): r["users"] for r in table.to_pylist()}
    assert cells[("matched", "all")] == 40  # phones 20..59 are on both sides
    assert cells[("tag", "sports")] + cells[("tag", "beauty")] + cells[("tag", "travel")] == 40
    receipts = json.loads((results / "receipts.json").read_text())
    kinds = {r["kind"]: r for r in receipts}
    assert kinds["usage"]["rows_out"] == {"brand-tags": table.num_rows}
    assert kinds["deletion"]["deleted"]["temp_area_empty"] is True
    assert kinds["usage"]["stamp"] == "simulated — no hardware protection"
    assert not any((env.island_dir / "private").iterdir())

    # Tampered chunk in transit: the island refuses it.
    store = SealedStore(provider_state / "sealed")
    manifest, _ = store.manifest("provider-tags", 1)
    first = manifest.buckets[0].chunks[0].sha256
    data = bytearray(store.get_chunk(first))
    data[30] ^= 1
    with env.client("provider") as client, pytest.raises(IntegrityError, match="tampered"):
        client.put_chunk(first, bytes(data))

    # Provider uploads version 2 (changed data: only changed buckets are re-sent).
    tags2 = pa.table(
        {
            "phone": [f"1380000{i:04d}" for i in range(20, 121)],
            "tag": [("sports", "beauty", "travel")[i % 3] for i in range(101)],
        }
    )
    pq.write_table(tags2, env.work / "tags2.parquet")
    code, out = env.cli(
        "upload", "--peer", env.url, "--dataset", "provider-tags", "--input",
        str(env.work / "tags2.parquet"), "--id-column", "phone", "--state", str(provider_state),
        "--buckets", "4", party="provider",
    )  # fmt: skip
    assert code == 0, out
    assert "v2" in out
    v2, _ = store.manifest("provider-tags", 2)
    resealed = next(b for b in v2.buckets if b.sealed_in == 2)
    old = manifest.bucket(resealed.bucket)
    assert old is not None
    # Replayed chunk at rest: the operator puts v1's chunk where v2's should be.
    stored = (
        env.island_dir
        / "store"
        / "chunks"
        / resealed.chunks[0].sha256[:2]
        / resealed.chunks[0].sha256
    )
    stored.write_bytes(store.get_chunk(old.chunks[0].sha256))
    job2 = _job(env.work, keys["brand"], keys["provider"], "e2e-2", version=2)
    code, out = env.cli(
        "release", "--peer", env.url, "--job", str(job2), "--state", str(provider_state),
        "--policy", str(good), party="provider",
    )  # fmt: skip
    assert code == 0, out
    code, out = env.cli(
        "run", "--peer", env.url, "--job", str(job2), "--out", str(env.work / "results2"),
        "--state", str(brand_state), "--policy", str(good), party="brand",
    )  # fmt: skip
    assert code == 2
    assert "replayed from another version" in out
    assert not any((env.island_dir / "private").iterdir())

    # SIGTERM: the island exits and leaves no temp area behind.
    env.proc.send_signal(signal.SIGTERM)
    env.proc.wait(timeout=60)
    assert not any((env.island_dir / "private").iterdir())
