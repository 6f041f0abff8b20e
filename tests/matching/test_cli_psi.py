"""``atoll psi local`` and ``atoll psi sum`` through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
from typer.testing import CliRunner

from atoll.cli import app
from atoll.control.audit import verify_log

runner = CliRunner()


def _files(tmp: Path) -> tuple[Path, Path, Path]:
    left = tmp / "brand.csv"
    left.write_text(
        "phone,oaid,name\n"
        "13800138000,aaaaaaaaaaaaaaaa,m0\n"
        "+86 138 0013 8001,bbbbbbbbbbbbbbbb,m1\n"
        "oops,cccccccccccccccc,m2\n"
        "13800138003,dddddddddddddddd,m3\n"
    )
    right = tmp / "provider.csv"
    right.write_text(
        "phone,oaid,gender,age\n"
        "13800138001,xxxxxxxxxxxxxxxx,F,30\n"
        "13800138003,yyyyyyyyyyyyyyyy,M,\n"
        "13900000000,cccccccccccccccc,F,41\n"
    )
    orders = tmp / "orders.csv"
    orders.write_text("phone,amount\n13800138001,10.50\n13800138001,2\n13800138003,0.25\n")
    return left, right, orders


def test_psi_local_labels_waterfall_and_audit(tmp_path: Path) -> None:
    left, right, _ = _files(tmp_path)
    out = tmp_path / "matched.csv"
    audit = tmp_path / "audit.jsonl"
    result = runner.invoke(
        app,
        [
            "psi", "local", "--left", str(left), "--right", str(right),
            "--id-column", "phone,oaid", "--labels", "gender,age", "--out", str(out),
            "--executor", "inline", "--buckets", "3", "--audit-log", str(audit),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pacsv.read_csv(out).to_pylist()
    got = {r["name"]: (r["matched_by"], r["gender"]) for r in rows}
    assert got == {"m1": ("phone", "F"), "m2": ("oaid", "F"), "m3": ("phone", "M")}
    assert "matched by phone" in result.output
    assert verify_log(audit) == 4  # start, two stages, finish


def test_psi_local_cardinality_json(tmp_path: Path) -> None:
    left, right, _ = _files(tmp_path)
    out = tmp_path / "card.json"
    result = runner.invoke(
        app,
        [
            "psi", "local", "--left", str(left), "--right", str(right), "--id-column", "phone",
            "--cardinality-only", "--out", str(out), "--executor", "inline",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["cardinality"] == 2
    assert data["matched_rows"] is None


def test_psi_local_errors_are_one_line(tmp_path: Path) -> None:
    left, right, _ = _files(tmp_path)
    result = runner.invoke(
        app,
        [
            "psi", "local", "--left", str(left), "--right", str(right), "--id-column", "mobile",
            "--out", str(tmp_path / "x.csv"), "--executor", "inline",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "pass --id-type" in result.output
    result = runner.invoke(
        app,
        [
            "psi", "local", "--left", str(left), "--right", str(right), "--id-column", "phone",
            "--cardinality-only", "--out", str(tmp_path / "x.csv"),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "use --out F.json" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_psi_sum(tmp_path: Path) -> None:
    left, _, orders = _files(tmp_path)
    out = tmp_path / "sum.json"
    result = runner.invoke(
        app,
        [
            "psi", "sum", "--left", str(orders), "--value-column", "amount", "--right", str(left),
            "--id-column", "phone", "--out", str(out), "--executor", "inline", "--buckets", "2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["cardinality"] == 2
    assert data["sums"] == {"amount": "12.75"}
