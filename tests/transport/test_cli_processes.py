"""`psi serve` and `psi join` as two real processes over mutual TLS on loopback.

Why: the one test that proves two separate Atoll processes -- each with its
own certificate, key and token from `atoll certs init` -- compute the right
PSI through the real CLI, uvicorn, TLS stack and HTTP client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from atoll.cli import app as cli_app
from atoll.data.io import read_table


def _psi_command() -> list[str]:
    """The real console entry point, as a user would run it."""
    return [sys.executable, "-m", "atoll", "psi"]


def _world(tmp: Path) -> tuple[Path, Path, set[str]]:
    provider = [f"1380000{i:04d}" for i in range(0, 300)]
    brand = [f"1380000{i:04d}" for i in range(200, 450)] + ["not-a-phone", "13800000201"]
    pacsv.write_csv(
        pa.table({"phone": provider, "tag": [f"t{i % 3}" for i in range(len(provider))]}),
        tmp / "provider.csv",
    )
    pacsv.write_csv(
        pa.table({"phone": brand, "member": [str(i) for i in range(len(brand))]}),
        tmp / "brand.csv",
    )
    return tmp / "provider.csv", tmp / "brand.csv", set(provider) & set(brand)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text().strip())
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        time.sleep(0.1)
    raise AssertionError("serve did not start")


def test_serve_and_join_as_two_processes_over_mutual_tls(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["certs", "init", "--dir", str(tmp_path / "certs"), "--names", "brand,provider"]
    )
    assert result.exit_code == 0, result.output
    provider, brand, expected = _world(tmp_path)
    env = {**os.environ, "COLUMNS": "120"}
    psi = _psi_command()
    serve = subprocess.Popen(
        [*psi, "serve", "--input", str(provider), "--id-column", "phone", "--labels", "tag",
         "--port", "0", "--certs", str(tmp_path / "certs"), "--buckets", "4",
         "--ready-file", str(tmp_path / "port")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        port = _wait_for(tmp_path / "port", serve)
        out = tmp_path / "matched.parquet"
        join = subprocess.run(
            [*psi, "join", "--input", str(brand), "--id-column", "phone", "--labels",
             "--peer", f"https://127.0.0.1:{port}", "--out", str(out),
             "--certs", str(tmp_path / "certs"), "--buckets", "4"],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert join.returncode == 0, join.stderr.decode()
        # One job, then the server exits by itself.
        assert serve.wait(timeout=30) == 0, serve.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    table = read_table(out)
    assert set(table["phone"].to_pylist()) == expected
    assert table.num_rows == len(expected) + 1  # both rows of the duplicated phone match
    tags = dict(zip(table["phone"].to_pylist(), table["tag"].to_pylist(), strict=True))
    assert all(tags[p] == f"t{int(p[-4:]) % 3}" for p in expected)
    assert not (tmp_path / "matched.parquet.state").exists()  # journal removed after success


def test_join_with_a_wrong_token_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    CliRunner().invoke(
        cli_app, ["certs", "init", "--dir", str(tmp_path / "certs"), "--names", "brand,provider"]
    )
    provider, brand, _ = _world(tmp_path)
    bad = tmp_path / "bad-token"
    bad.write_text("X" * 43)
    bad.chmod(0o600)
    psi = _psi_command()
    serve = subprocess.Popen(
        [*psi, "serve", "--input", str(provider), "--id-column", "phone", "--port", "0",
         "--certs", str(tmp_path / "certs"), "--buckets", "2",
         "--ready-file", str(tmp_path / "port")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        port = _wait_for(tmp_path / "port", serve)
        out = tmp_path / "matched.parquet"
        join = subprocess.run(
            [*psi, "join", "--input", str(brand), "--id-column", "phone",
             "--peer", f"https://127.0.0.1:{port}", "--out", str(out),
             "--certs", str(tmp_path / "certs"), "--buckets", "2", "--token-file", str(bad)],
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert join.returncode == 2
        assert "refused our token (401)" in join.stderr.decode()
        assert not out.exists()
        assert serve.poll() is None  # still waiting for a legitimate party
    finally:
        serve.kill()
        serve.wait()


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_join_refuses_a_world_readable_token(tmp_path: Path, mode: int) -> None:
    CliRunner().invoke(
        cli_app, ["certs", "init", "--dir", str(tmp_path / "certs"), "--names", "brand,provider"]
    )
    (tmp_path / "certs" / "brand" / "token").chmod(mode)
    _, brand, _ = _world(tmp_path)
    join = subprocess.run(
        [*_psi_command(), "join", "--input", str(brand), "--id-column", "phone",
         "--peer", "https://127.0.0.1:9", "--out", str(tmp_path / "o.parquet"),
         "--certs", str(tmp_path / "certs")],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert join.returncode == 2
    assert "accessible by other users" in join.stderr.decode()


def test_sum_serve_and_sum_join_as_two_processes(tmp_path: Path) -> None:
    CliRunner().invoke(
        cli_app, ["certs", "init", "--dir", str(tmp_path / "certs"), "--names", "brand,provider"]
    )
    exposed = [f"1380000{i:04d}" for i in range(0, 60)]
    orders = [f"1380000{i:04d}" for i in range(40, 90)]
    amounts = [f"{(i % 7) + 0.25:.2f}" for i in range(40, 90)]
    pacsv.write_csv(pa.table({"phone": exposed}), tmp_path / "exposed.csv")
    pacsv.write_csv(pa.table({"phone": orders, "amount": amounts}), tmp_path / "orders.csv")
    expected = sum(float(a) for p, a in zip(orders, amounts, strict=True) if p in set(exposed))
    psi = _psi_command()
    serve = subprocess.Popen(
        [*psi, "sum-serve", "--input", str(tmp_path / "exposed.csv"), "--id-column", "phone",
         "--port", "0", "--certs", str(tmp_path / "certs"), "--buckets", "2",
         "--ready-file", str(tmp_path / "port")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        port = _wait_for(tmp_path / "port", serve)
        out = tmp_path / "sum.json"
        join = subprocess.run(
            [*psi, "sum-join", "--input", str(tmp_path / "orders.csv"), "--id-column", "phone",
             "--value-column", "amount", "--peer", f"https://127.0.0.1:{port}",
             "--out", str(out), "--certs", str(tmp_path / "certs"), "--buckets", "2"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert join.returncode == 0, join.stderr.decode()
        assert serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    import json

    report = json.loads(out.read_text())
    assert report["protocol"] == "intersection-sum"
    assert report["cardinality"] == 20
    assert report["sums"] == {"amount": f"{expected:.2f}"}
