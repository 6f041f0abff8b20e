"""The provider service: index files, HTTP endpoints, SDK in all three batch modes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from atoll.data.io import write_table
from atoll.errors import InputError, RemoteProtocolError
from atoll.protocols.covert import Mode
from atoll.service.covert import (
    ProviderConfig,
    ProviderService,
    ProviderState,
    build_index,
    create_app,
    load_index,
)
from atoll.transport.covert_client import CovertHttpClient

from .conftest import phone

ROWS = 300


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "db.parquet"
    ids = [phone(i) for i in range(ROWS)] + ["not-a-phone"]
    table = pa.table(
        {
            "phone": ids,
            "age": [*list(range(ROWS)), 0],
            "tags": [[f"t{i % 4}", "x"] for i in range(ROWS)] + [[]],
        }
    )
    write_table(table, path)
    return path


@pytest.fixture(scope="module")
def state(db_file: Path, tmp_path_factory: pytest.TempPathFactory) -> ProviderState:
    root = tmp_path_factory.mktemp("state")
    report = build_index(db_file, root / "index", id_column="phone", id_type="phone",
                         bucket_bits=3)  # fmt: skip
    assert report.rows == ROWS
    assert report.invalid is not None
    assert report.invalid.invalid == 1
    config = ProviderConfig(max_n=64, rsa_pool_size=40, rsa_bits=1024, name="acme")
    return ProviderState(load_index(root / "index"), root, config)


def test_index_matches_the_table(state: ProviderState) -> None:
    src = state.index.source
    assert len(src) == ROWS
    assert src.codec.labels == ("age", "tags")
    from atoll.protocols.covert_source import id_tag

    record = src.lookup([id_tag(phone(17)), id_tag("13800000000")])
    assert src.codec.decode(record[0]) == [17, ["t1", "x"]]  # type: ignore[arg-type]
    assert record[1] is None
    assert src.bucket is not None
    assert int(src.bucket.offsets[-1]) == ROWS


def test_index_rejects_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("id,a\n1,x\n2,y\n1,z\n", encoding="utf-8")
    with pytest.raises(InputError, match="more than once"):
        build_index(path, tmp_path / "idx", id_column="id")


@pytest.fixture(scope="module")
def http(state: ProviderState) -> Any:
    service = ProviderService(state)
    with TestClient(create_app(service)) as tc:
        yield CovertHttpClient(http=tc, client_name="brand"), tc
    service.close()


@pytest.mark.parametrize("batch", ["single", "micro", "async"])
@pytest.mark.parametrize("mode", [Mode.RSA, Mode.EC, Mode.BUCKET])
def test_sdk_query_over_http(http: Any, batch: str, mode: Mode) -> None:
    client, _ = http
    asked = [phone(3), phone(250), "13800000000", phone(3)]
    answers = client.query(asked, mode=mode, n=8, batch=batch, micro_size=2, rsa_min_bits=1024,
                           poll_interval=0.02)  # fmt: skip
    assert [a.values for a in answers] == [
        [3, ["t3", "x"]],
        [250, ["t2", "x"]],
        None,
        [3, ["t3", "x"]],
    ]
    assert [a.status for a in answers] == ["hit", "hit", "no_record", "hit"]


def test_async_results_are_persisted_and_pollable(http: Any, state: ProviderState) -> None:
    client, tc = http
    client.query([phone(1)], mode="ec", n=8, batch="async", poll_interval=0.01)
    done = sorted(state.jobs_dir.glob("*.frames"))
    assert done
    job = done[-1].name.removesuffix(".frames")
    status = tc.get(f"/covert/v1/jobs/{job}").json()
    assert status["status"] == "done"
    assert tc.get(f"/covert/v1/jobs/{job}/result").content == done[-1].read_bytes()


def test_http_errors(http: Any) -> None:
    _, tc = http
    assert tc.get("/covert/v1/info").json()["provider"] == "acme"
    r = tc.post("/covert/v1/sessions", content=b"\x07garbage")
    assert r.status_code == 400
    assert "wire version" in r.json()["error"]
    assert tc.post("/covert/v1/sessions/" + "0" * 32, content=b"\x01").status_code == 404
    assert tc.get("/covert/v1/jobs/../../etc").status_code == 404


def test_unreachable_provider_is_a_protocol_error() -> None:
    client = CovertHttpClient("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(RemoteProtocolError, match="unreachable"):
        client.info()
    client.close()


def test_ledger_records_each_released_key(http: Any, state: ProviderState) -> None:
    from atoll.control.metering import verify_ledger

    client, _ = http
    before = verify_ledger(state.ledger.path).last_seq
    client.query([phone(5), phone(6)], mode="ec", n=8)
    report = verify_ledger(state.ledger.path, state.signing_key.verify_key)
    assert report.last_seq == before + 2
    assert report.bills["brand"].queries >= 2
    time.sleep(0)
