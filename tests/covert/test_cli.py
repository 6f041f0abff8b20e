"""``atoll query local`` and ``atoll query receipts`` through Typer's runner."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from typer.testing import CliRunner

from atoll.cli import app

from .conftest import phone


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    ids = [phone(i) for i in range(200)]
    pa_csv.write_csv(
        pa.table({"phone": ids, "age": [i % 60 for i in range(200)], "city": ["sh"] * 200}),
        root / "db.csv",
    )
    pa_csv.write_csv(pa.table({"phone": [phone(3), "+86 139-0000-0150", "12", "13700000000"]}),
                     root / "ids.csv")  # fmt: skip
    return root


@pytest.mark.parametrize("mode", ["ec", "bucket", "rsa"])
def test_query_local_writes_one_row_per_id(files: Path, mode: str) -> None:
    out = files / f"out_{mode}.csv"
    result = CliRunner().invoke(
        app,
        ["query", "local", "--db", str(files / "db.csv"), "--ids", str(files / "ids.csv"),
         "--id-column", "phone", "--labels", "age", "--out", str(out), "--mode", mode,
         "--n", "10", "--id-type", "phone", "--rsa-bits", "1024"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pa_csv.read_csv(out)
    assert table.column_names == ["id", "status", "n", "m", "age"]
    assert table["status"].to_pylist() == ["hit", "hit", "invalid_id", "no_record"]
    assert table["age"].to_pylist()[:2] == [3, 30]
    assert table["age"].to_pylist()[2:] == [None, None]
    ledger = out.with_name(out.name + ".provider") / "ledger.jsonl"
    pub = str(ledger.with_name("provider.pub"))
    ok = CliRunner().invoke(
        app, ["query", "receipts", "--ledger", str(ledger), "--public-key", pub]
    )
    assert ok.exit_code == 0, ok.output
    assert "verified" in ok.output
    lines = ledger.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"m":', '"m":1')
    ledger.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = CliRunner().invoke(app, ["query", "receipts", "--ledger", str(ledger)])
    assert bad.exit_code == 2
    assert "line 2" in bad.output


def test_query_local_bad_options(files: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["query", "local", "--db", str(files / "db.csv"), "--ids", str(files / "ids.csv"),
         "--id-column", "phone", "--out", str(files / "x.csv"), "--mode", "quantum"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "mode must be rsa, ec or bucket" in result.output
    result = CliRunner().invoke(
        app,
        ["query", "local", "--db", str(files / "db.csv"), "--ids", str(files / "ids.csv"),
         "--id-column", "nope", "--out", str(files / "x.csv")],
    )  # fmt: skip
    assert result.exit_code == 2
