"""The command line end to end: real files in, real files out, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from atoll.cli import app
from atoll.data.datasets import BucketedDataset
from atoll.data.io import read_table

runner = CliRunner()

MEMBERS = (
    "member_id,phone,level\n"
    "m1,+86 138-0013-8000,gold\n"
    "m2,12345,silver\n"
    "m3,13912345678,gold\n"
    "m4,,gold\n"
)


@pytest.fixture
def members_csv(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    path.write_text(MEMBERS, encoding="utf-8")
    return path


def test_normalize_writes_valid_rows_hashes_and_rejects(tmp_path: Path, members_csv: Path) -> None:
    out = tmp_path / "members.norm.csv"
    result = runner.invoke(
        app,
        [
            "ids", "normalize", "--input", str(members_csv), "--column", "phone",
            "--type", "phone", "--out", str(out), "--hash", "md5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    good = read_table(out)
    assert good["phone"].to_pylist() == ["13800138000", "13912345678"]
    # printf '%s' 13800138000 | md5sum  (GNU coreutils 9.1)
    assert good["phone_md5"].to_pylist()[0] == "7945bd83237335e5376ff44d62e4f0ae"
    rejects = read_table(tmp_path / "members.norm.rejects.csv")
    assert rejects["member_id"].to_pylist() == ["m2", "m4"]
    assert rejects["source_row"].to_pylist() == ["2", "4"]
    assert "bad_length" in result.output
    assert "empty" in result.output
    assert "12345" not in result.output  # sample values are masked


def test_normalize_unknown_column_and_kind_fail_clearly(tmp_path: Path, members_csv: Path) -> None:
    base = ["ids", "normalize", "--input", str(members_csv), "--out", str(tmp_path / "o.csv")]
    result = runner.invoke(app, [*base, "--column", "mobile", "--type", "phone"])
    assert result.exit_code == 2
    assert "no column 'mobile'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, [*base, "--column", "phone", "--type", "fax"])
    assert result.exit_code == 2
    assert "fax" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_malformed_csv_row_names_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("member_id,phone\nm1,13800138000\nm2,13800138001,extra\n", encoding="utf-8")
    result = runner.invoke(
        app,
        ["ids", "normalize", "--input", str(bad), "--column", "phone", "--type", "phone",
         "--out", str(tmp_path / "o.parquet")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "bad.csv" in result.output
    assert "row 2" in result.output
    assert "Traceback" not in result.output


def test_bucket_normalizes_partitions_and_writes_manifest(
    tmp_path: Path, members_csv: Path
) -> None:
    out = tmp_path / "by_phone"
    result = runner.invoke(
        app,
        ["bucket", "--input", str(members_csv), "--id-column", "phone", "--type", "phone",
         "--buckets", "8", "--out", str(out), "--salt", "00ff"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = BucketedDataset.open(out)
    assert dataset.num_rows == 2
    assert dataset.bucket_function.salt == b"\x00\xff"
    dataset.verify()
    phones = sorted(v for _, t in dataset.iter_buckets() for v in t["phone"].to_pylist())
    assert phones == ["13800138000", "13912345678"]
    assert "bad_length" in result.output
    again = runner.invoke(
        app,
        ["bucket", "--input", str(members_csv), "--id-column", "phone", "--type", "phone",
         "--buckets", "8", "--out", str(out)],
    )  # fmt: skip
    assert again.exit_code == 2  # an existing dataset is never overwritten silently


def test_ids_map_and_synth(tmp_path: Path) -> None:
    world = tmp_path / "world"
    result = runner.invoke(
        app, ["synth", "--out", str(world), "--devices", "2000", "--seed", "3", "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    edges = world / "provider" / "edges.csv"
    assert edges.exists()
    out = tmp_path / "graph.parquet"
    result = runner.invoke(
        app,
        ["ids", "map", "--edges", str(edges), "--out", str(out), "--max-component-size", "100"],
    )
    assert result.exit_code == 0, result.output
    nodes = pq.read_table(out)
    assert set(nodes.column_names) >= {"id_type", "id", "one_id", "component_size"}
    assert max(nodes["component_size"].to_pylist()) <= 100
    report = json.loads((tmp_path / "graph.report.json").read_text())
    assert report["splits"], "the planted hub phones must be split and reported"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app, ["demo", "--out", str(out), "--devices", "2000", "--executor", "inline"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert "3 · provider ID-mapping (OneID)" in summary
    buckets = summary["4 · bucketed datasets (map over buckets, merged)"]
    members = BucketedDataset.open(out / "brand" / "members_by_phone")
    assert buckets["brand/members_by_phone"].startswith(f"{members.num_rows:,} rows")
    assert (out / "summary.md").read_text().startswith("# Atoll demo summary")
    assert "demo finished" in result.output
