"""The island HTTP app in process: upload strategies, filter requests, error mapping."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from atoll.cli import app as cli_app
from atoll.crypto.hpke import hpke_seal
from atoll.data.envelope import IdFilter, SealedStore
from atoll.errors import ConfigError, DataError, IntegrityError, RemoteProtocolError
from atoll.island.evidence.simulated import SimulatedBackend
from atoll.island.runner import Island
from atoll.service.island import (
    IslandClient,
    PartyKeys,
    create_app,
    release_keys,
    run_job,
    upload_dataset,
)
from tests.island.island_helpers import sim_policy


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Island, IslandClient]]:
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    with TestClient(create_app(island)) as http:
        yield island, IslandClient("http://island", http=http)


def _job(brand: PartyKeys, provider: PartyKeys, *, digest: str | None, version: int = 1) -> bytes:
    filter_line = f'filter_digest = "{digest}"\n' if digest else ""
    b, p = brand.public(), provider.public()
    return (
        'version = 1\njob = "svc"\ncomputation = "match"\n'
        f'[parties.brand]\nsigning_key = "{b["signing_key"]}"\n'
        f'[parties.provider]\nsigning_key = "{p["signing_key"]}"\n'
        '[[inputs]]\nname = "seed"\nparty = "brand"\ndataset = "members"\nversion = 1\n'
        f'[[inputs]]\nname = "uni"\nparty = "provider"\ndataset = "universe"\nversion = {version}\n'
        f"{filter_line}"
        '[match]\nleft = "seed"\nright = "uni"\n[[match.steps]]\nleft = "phone"\nright = "phone"\n'
        '[params]\nkey_column = "member_id"\n'
        '[[outputs]]\nname = "hits"\nrecipient = "brand"\n'
        f'public_key = "{b["public_key"]}"\nrow_level = true\n'
    ).encode()


def test_filter_strategy_end_to_end(tmp_path: Path, served: tuple[Island, IslandClient]) -> None:
    island, client = served
    brand, provider = PartyKeys.generate("brand"), PartyKeys.generate("provider")
    members = pa.table(
        {"member_id": ["a", "b", "c"], "phone": ["13800000001", "13800000002", "13899999999"]}
    )
    universe = pa.table({"phone": [f"138{i:08d}" for i in range(3000)], "x": list(range(3000))})
    pq.write_table(members, tmp_path / "members.parquet")
    pq.write_table(universe, tmp_path / "universe.parquet")
    # The brand's filter request, built with the CLI.
    out = tmp_path / "request.json"
    result = CliRunner().invoke(
        cli_app,
        ["island", "filter-request", "--input", str(tmp_path / "members.parquet"),
         "--id-column", "phone", "--out", str(out), "--bits", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = IdFilter.from_json(json.loads(out.read_text()))
    upload_dataset(
        client, brand, SealedStore(tmp_path / "b"), dataset_id="members",
        input_path=tmp_path / "members.parquet", id_column="phone", buckets=4,
    )  # fmt: skip
    sealed, _ = upload_dataset(
        client, provider, SealedStore(tmp_path / "p"), dataset_id="universe",
        input_path=tmp_path / "universe.parquet", id_column="phone", buckets=4,
        strategy="filter", id_filter=request,
    )  # fmt: skip
    assert sealed.manifest.strategy == "filter"
    assert sealed.manifest.rows < 3000 * 0.2  # only the covered prefixes were uploaded
    policy = sim_policy(island.backend.measurement)
    release_keys(client, provider, policy, _job(brand, provider, digest=request.digest()))
    run = run_job(client, brand, policy, _job(brand, provider, digest=request.digest()))
    hits = run.results["hits"]
    assert sorted(hits["member_id"].to_pylist()) == ["a", "b"]
    assert len(run.receipts) == 2
    # A job that demands another filter is refused inside the island.
    other = IdFilter.from_ids(["13800000001"], bits=6, salt=os.urandom(16)).digest()
    release_keys(client, provider, policy, _job(brand, provider, digest=other))
    with pytest.raises(DataError, match="filter"):
        run_job(client, brand, policy, _job(brand, provider, digest=other))


def test_full_strategy_and_incremental_upload(
    tmp_path: Path, served: tuple[Island, IslandClient]
) -> None:
    _, client = served
    party = PartyKeys.generate("brand")
    state = SealedStore(tmp_path / "state")
    table = pa.table({"phone": [f"138{i:08d}" for i in range(500)]})
    pq.write_table(table, tmp_path / "a.parquet")
    full, sent = upload_dataset(
        client, party, state, dataset_id="d", input_path=tmp_path / "a.parquet",
        id_column="phone", strategy="full",
    )  # fmt: skip
    assert full.manifest.bucket_function.buckets == 1
    assert sent == len(full.manifest.chunk_hashes())
    pq.write_table(table, tmp_path / "a.parquet")
    again, sent = upload_dataset(
        client, party, state, dataset_id="d", input_path=tmp_path / "a.parquet",
        id_column="phone", strategy="full",
    )  # fmt: skip
    assert again.manifest.version == 2
    assert sent == 0  # nothing changed: nothing re-sealed, nothing re-sent
    with pytest.raises(ConfigError, match="filter"):
        upload_dataset(
            client, party, state, dataset_id="d", input_path=tmp_path / "a.parquet",
            id_column="phone", strategy="filter",
        )  # fmt: skip


def test_errors_are_mapped_back(served: tuple[Island, IslandClient]) -> None:
    _, client = served
    with pytest.raises(RemoteProtocolError, match="not listed"):
        client.put_chunk("ab" * 32, b"junk")
    with pytest.raises(DataError):  # ManifestError / IntegrityError
        client.put_manifest(b"\x01not a manifest at all" + bytes(100))
    with pytest.raises(ConfigError, match="not valid TOML"):
        client.submit_job(b"version = = 1")
    with pytest.raises(RemoteProtocolError, match="no job"):
        client.job_status("0" * 32)
    bundle = client.attest(os.urandom(32))
    assert bundle.job_hash == bytes(32)
    info = client.info()
    assert info["simulated"] is True
    assert info["stamp"] == "simulated — no hardware protection"


def test_a_substituted_result_is_refused(
    tmp_path: Path, served: tuple[Island, IslandClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    island, client = served
    brand, provider = PartyKeys.generate("brand"), PartyKeys.generate("provider")
    table = pa.table({"member_id": ["a"], "phone": ["13800000001"]})
    pq.write_table(table, tmp_path / "t.parquet")
    for party, name in ((brand, "members"), (provider, "universe")):
        upload_dataset(
            client, party, SealedStore(tmp_path / name), dataset_id=name,
            input_path=tmp_path / "t.parquet", id_column="phone", buckets=2,
        )  # fmt: skip
    policy = sim_policy(island.backend.measurement)
    text = _job(brand, provider, digest=None)
    release_keys(client, provider, policy, text)
    real_run = client.run

    def forged_run(job_id: str) -> dict[str, object]:
        outcome = real_run(job_id)
        forged = hpke_seal(brand.hpke.public_bytes, b"not from the island", info=b"x")
        outcome["results"][0]["sealed"] = base64.b64encode(forged).decode()
        return outcome

    monkeypatch.setattr(client, "run", forged_run)
    with pytest.raises(IntegrityError, match="signed receipt"):
        run_job(client, brand, policy, text)


def test_measure_recomputes_the_served_measurement() -> None:
    result = CliRunner().invoke(cli_app, ["island", "measure", "--config-tag", "prod"])
    assert result.exit_code == 0, result.output
    backend = SimulatedBackend({"backend": "simulated", "config_tag": "prod", "format": 1})
    assert json.loads(result.output)["measurement"] == backend.measurement
