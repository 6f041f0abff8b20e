"""Bucketed datasets: placement, integrity, manifests, streaming and appends."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto import sha256_file
from atoll.data.datasets import (
    DATASET_VERSION,
    MANIFEST_NAME,
    BucketedDataset,
    Manifest,
    bucket_table,
)
from atoll.errors import ConfigError, InputError, IntegrityError, ManifestError, SchemaError
from atoll.ids.buckets import BucketFunction

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)


def _table(ids: list[str], start: int = 0) -> pa.Table:
    return pa.table(
        {
            "phone": pa.array(ids, pa.string()),
            "seq": pa.array(range(start, start + len(ids)), pa.int64()),
            "tag": pa.array([f"t{i % 3}" for i in range(start, start + len(ids))]),
        }
    )


def _rows(table: pa.Table) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(row.values()) for row in table.to_pylist())


def _phones(n: int, seed: int = 0) -> list[str]:
    return [f"138{(i * 7919 + seed) % 10**8:08d}" for i in range(n)]


ids_strategy = st.lists(
    st.text(alphabet="0123456789abcdef-", min_size=1, max_size=12), min_size=0, max_size=60
)


@settings(max_examples=40, deadline=None)
@given(ids=ids_strategy, buckets=st.integers(min_value=1, max_value=16))
def test_every_row_lands_once_in_its_bucket(ids: list[str], buckets: int) -> None:
    table = _table(ids)
    fn = BucketFunction(buckets, b"test-salt")
    with tempfile.TemporaryDirectory() as tmp:
        ds = BucketedDataset.write(table, Path(tmp) / "ds", id_column="phone", buckets=fn, now=NOW)
        seen: Counter[tuple[Any, ...]] = Counter()
        for bucket, part in ds.iter_buckets():
            assert part.num_rows > 0
            assert all(fn.bucket_of(v) == bucket for v in part["phone"].to_pylist())
            seen += _rows(part)
        assert seen == _rows(table)  # union of buckets == input, as multisets
        assert ds.num_rows == len(ids)
        assert ds.buckets() == sorted({fn.bucket_of(v) for v in ids})
        ds.verify()


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, buckets=st.integers(min_value=1, max_value=64))
def test_bucket_table_partitions_in_memory(ids: list[str], buckets: int) -> None:
    table = _table(ids)
    parts = bucket_table(table, "phone", buckets)
    fn = BucketFunction(buckets)
    total: Counter[tuple[Any, ...]] = Counter()
    for bucket, part in parts.items():
        assert {fn.bucket_of(v) for v in part["phone"].to_pylist()} == {bucket}
        seqs = part["seq"].to_pylist()
        assert seqs == sorted(seqs)  # input order is kept within a bucket
        total += _rows(part)
    assert total == _rows(table)


def test_manifest_round_trip_and_layout(tmp_path: Path) -> None:
    table = _table(_phones(500))
    ds = BucketedDataset.write(
        table, tmp_path / "ds", id_column="phone", buckets=32, id_kind="phone", now=NOW
    )
    raw = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    assert next(iter(raw)) == "atoll_dataset_version"
    assert raw["atoll_dataset_version"] == DATASET_VERSION
    assert raw["created_at"] == "2024-05-01T12:00:00Z"
    assert raw["bucket_function"]["buckets"] == 32
    assert bytes.fromhex(raw["bucket_function"]["salt_hex"]) == BucketFunction(32).salt
    assert raw["totals"] == {
        "rows": 500,
        "files": len(raw["buckets"]),
        "buckets": len(raw["buckets"]),
    }
    assert [f["name"] for f in raw["schema"]["fields"]] == ["phone", "seq", "tag"]
    for entry in raw["buckets"]:
        for part in entry["files"]:
            path = tmp_path / "ds" / part["path"]
            assert path.parent.name == f"bucket={entry['bucket']:05d}"
            assert path.name.startswith("part-" + part["sha256"][:16])
            assert sha256_file(path) == part["sha256"]
    folders = sorted(p.name for p in (tmp_path / "ds").iterdir() if p.is_dir())
    assert folders == [f"bucket={b:05d}" for b in ds.buckets()]
    again = BucketedDataset.open(tmp_path / "ds")
    assert again.manifest == ds.manifest
    assert again.manifest.to_json() == raw
    assert again.schema.equals(table.schema)
    assert (again.id_column, again.id_kind) == ("phone", "phone")
    assert again.bucket_function == BucketFunction(32)
    assert Manifest.from_json(raw, where="m") == ds.manifest


def test_writes_are_deterministic(tmp_path: Path) -> None:
    table = _table(_phones(300))
    a = BucketedDataset.write(table, tmp_path / "a", id_column="phone", buckets=8, now=NOW)
    b = BucketedDataset.write(table, tmp_path / "b", id_column="phone", buckets=8, now=NOW)
    assert a.manifest.to_json() == b.manifest.to_json()


def test_streaming_input_with_small_buffer_makes_several_parts(tmp_path: Path) -> None:
    phones = _phones(2000)
    batches = [_table(phones[i : i + 250], i).to_batches()[0] for i in range(0, 2000, 250)]
    calls: list[tuple[int, int]] = []
    ds = BucketedDataset.write(
        iter(batches),
        tmp_path / "ds",
        id_column="phone",
        buckets=4,
        buffer_bytes=20_000,
        progress=lambda done, total: calls.append((done, total)),
        now=NOW,
    )
    assert calls == [(250 * (i + 1), -1) for i in range(8)]
    assert any(len(ds.files(b)) > 1 for b in ds.buckets())
    assert _rows(pa.concat_tables(t for _, t in ds.iter_buckets())) == _rows(_table(phones))
    for bucket in ds.buckets():
        seqs = ds.read_bucket(bucket)["seq"].to_pylist()
        assert seqs == sorted(seqs)
    ds.verify()
    whole: list[tuple[int, int]] = []
    BucketedDataset.write(
        _table(phones),
        tmp_path / "w",
        id_column="phone",
        buckets=4,
        progress=lambda d, t: whole.append((d, t)),
    )
    assert whole[-1] == (2000, 2000)


def test_reader_input_and_empty_inputs(tmp_path: Path) -> None:
    table = _table(_phones(10))
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    assert (
        BucketedDataset.write(reader, tmp_path / "r", id_column="phone", buckets=2).num_rows == 10
    )
    empty = BucketedDataset.write(table.slice(0, 0), tmp_path / "e", id_column="phone", buckets=2)
    assert (empty.num_rows, empty.buckets()) == (0, [])
    assert empty.read_bucket(1).schema.equals(table.schema)
    with pytest.raises(InputError, match="no data"):
        BucketedDataset.write([], tmp_path / "none", id_column="phone", buckets=2)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ConfigError):
        BucketedDataset.write("file.csv", tmp_path / "s", id_column="phone", buckets=2)  # type: ignore[arg-type]


def test_null_ids_are_errors_with_their_row(tmp_path: Path) -> None:
    first = _table(_phones(5))
    second = _table([*_phones(3, seed=9), None, "x"], start=5)  # type: ignore[list-item]
    with pytest.raises(InputError) as info:
        BucketedDataset.write(
            [first, second], tmp_path / "ds", id_column="phone", buckets=4, source="orders.csv"
        )
    assert (info.value.source, info.value.row, info.value.column) == ("orders.csv", 9, "phone")
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir()]  # staging removed
    with pytest.raises(InputError) as info:
        bucket_table(second, "phone", 4)
    assert info.value.row == 4


def test_id_column_must_exist_and_be_text(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        BucketedDataset.write(_table(["a"]), tmp_path / "ds", id_column="oaid", buckets=2)
    assert info.value.column == "oaid"
    with pytest.raises(SchemaError, match="text"):
        BucketedDataset.write(_table(["a"]), tmp_path / "ds", id_column="seq", buckets=2)
    with pytest.raises(SchemaError, match="seq"):
        BucketedDataset.write(
            [_table(["a"]), _table(["b"]).drop_columns(["seq"])],
            tmp_path / "ds",
            id_column="phone",
            buckets=2,
        )


def test_overwrite_rules(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    BucketedDataset.write(_table(_phones(20)), target, id_column="phone", buckets=4)
    with pytest.raises(ConfigError, match="overwrite"):
        BucketedDataset.write(_table(_phones(5)), target, id_column="phone", buckets=4)
    ds = BucketedDataset.write(
        _table(_phones(5)), target, id_column="phone", buckets=4, overwrite=True
    )
    assert BucketedDataset.open(target).num_rows == ds.num_rows == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an Atoll dataset"):
        BucketedDataset.write(_table(["a"]), other, id_column="phone", buckets=2, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_tampered_or_missing_files_raise_integrity_errors(tmp_path: Path) -> None:
    ds = BucketedDataset.write(_table(_phones(200)), tmp_path / "ds", id_column="phone", buckets=4)
    bucket = ds.buckets()[0]
    part = tmp_path / "ds" / ds.files(bucket)[0].path
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="hash"):
        ds.read_bucket(bucket)
    with pytest.raises(IntegrityError):
        ds.verify()
    other = ds.buckets()[1]
    ds.read_bucket(other)  # other buckets stay readable
    (tmp_path / "ds" / ds.files(other)[0].path).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        ds.read_bucket(other, verify=False)


def test_verify_detects_rows_in_the_wrong_bucket(tmp_path: Path) -> None:
    ds = BucketedDataset.write(_table(_phones(100)), tmp_path / "ds", id_column="phone", buckets=4)
    raw = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    first, second = raw["buckets"][0], raw["buckets"][1]
    # Swap a foreign file into bucket `first` with a consistent hash and row count.
    foreign = tmp_path / "ds" / second["files"][0]["path"]
    moved = tmp_path / "ds" / f"bucket={first['bucket']:05d}" / ("part-" + "0" * 16 + ".parquet")
    moved.write_bytes(foreign.read_bytes())
    first["files"].append(
        {
            "path": moved.relative_to(tmp_path / "ds").as_posix(),
            "sha256": sha256_file(moved),
            "rows": second["rows"],
            "bytes": moved.stat().st_size,
        }
    )
    first["rows"] += second["rows"]
    raw["totals"]["rows"] += second["rows"]
    raw["totals"]["files"] += 1
    (tmp_path / "ds" / MANIFEST_NAME).write_text(json.dumps(raw))
    tampered = BucketedDataset.open(tmp_path / "ds")
    with pytest.raises(IntegrityError, match=f"not {first['bucket']}"):
        tampered.verify()
    assert ds.num_rows == 100


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: m.update(atoll_dataset_version=2), "unknown version 2"),
        (lambda m: m.pop("atoll_dataset_version"), "'atoll_dataset_version': missing"),
        (lambda m: m.update(id_column="nope"), "'id_column'"),
        (lambda m: m["bucket_function"].update(name="md5-mod"), "'bucket_function.name'"),
        (lambda m: m["bucket_function"].update(salt_hex="zz"), "'bucket_function.salt_hex'"),
        (lambda m: m["schema"].update(arrow_ipc_base64="!!"), "'schema.arrow_ipc_base64'"),
        (lambda m: m["totals"].update(rows=1), "'totals.rows'"),
        (lambda m: m["buckets"][0].update(rows="3"), "'buckets[0].rows'"),
        (
            lambda m: m["buckets"][0]["files"][0].update(path="../../etc/passwd"),
            "'buckets[0].files[0].path'",
        ),
        (
            lambda m: m["buckets"][0]["files"][0].update(sha256="abc"),
            "'buckets[0].files[0].sha256'",
        ),
        (lambda m: m["buckets"].reverse(), "increasing order"),
        (lambda m: m.update(created_at="yesterday"), "'created_at'"),
    ],
)
def test_malformed_manifests_raise_manifest_errors(
    tmp_path: Path, mutate: Any, fragment: str
) -> None:
    BucketedDataset.write(_table(_phones(50)), tmp_path / "ds", id_column="phone", buckets=4)
    path = tmp_path / "ds" / MANIFEST_NAME
    raw = json.loads(path.read_text())
    mutate(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(
        ManifestError, match=fragment.replace("[", r"\[").replace("]", r"\]")
    ) as info:
        BucketedDataset.open(tmp_path / "ds")
    assert str(path) in str(info.value)


def test_missing_or_unparsable_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing"):
        BucketedDataset.open(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="JSON"):
        BucketedDataset.open(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[]")
    with pytest.raises(ManifestError, match="object"):
        BucketedDataset.open(tmp_path)


def test_append_touches_only_the_buckets_it_writes_to(tmp_path: Path) -> None:
    fn = BucketFunction(16)
    ds = BucketedDataset.write(
        _table(_phones(400)), tmp_path / "ds", id_column="phone", buckets=fn, now=NOW
    )
    before = {
        p.relative_to(tmp_path / "ds").as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
        for p in (tmp_path / "ds").rglob("*.parquet")
    }
    new_ids = [f"new-{i}" for i in range(40)]
    touched = {fn.bucket_of(v) for v in new_ids}
    assert touched != set(range(16))
    ds.append(_table(new_ids, start=1000), now=LATER)
    assert ds.num_rows == 440
    assert ds.manifest.created_at == NOW
    assert ds.manifest.updated_at == LATER
    after = {
        p.relative_to(tmp_path / "ds").as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
        for p in (tmp_path / "ds").rglob("*.parquet")
    }
    assert {k: after[k] for k in before} == before  # no existing file rewritten
    added = set(after) - set(before)
    assert {int(k.split("/")[0].split("=")[1]) for k in added} == touched
    reopened = BucketedDataset.open(tmp_path / "ds")
    assert reopened.manifest == ds.manifest
    reopened.verify()
    for bucket in touched:
        assert set(new_ids) & set(reopened.read_bucket(bucket)["phone"].to_pylist())


def test_appending_identical_rows_keeps_both_copies(tmp_path: Path) -> None:
    table = _table(_phones(30))
    ds = BucketedDataset.write(table, tmp_path / "ds", id_column="phone", buckets=2)
    ds.append(table)
    assert ds.num_rows == 60
    assert _rows(pa.concat_tables(t for _, t in ds.iter_buckets())) == _rows(table) + _rows(table)
    ds.verify()


def test_append_rejects_other_schemas_and_leaves_no_trace(tmp_path: Path) -> None:
    ds = BucketedDataset.write(_table(_phones(30)), tmp_path / "ds", id_column="phone", buckets=4)
    manifest = (tmp_path / "ds" / MANIFEST_NAME).read_text()
    files = sorted((tmp_path / "ds").rglob("*"))
    bad_type = _table(["a"]).set_column(1, "seq", pa.array(["1"]))
    with pytest.raises(SchemaError) as info:
        ds.append(bad_type)
    assert info.value.column == "seq"
    with pytest.raises(SchemaError):
        ds.append(_table(["a"]).drop_columns(["tag"]))
    with pytest.raises(InputError):  # second batch fails after the first was written
        ds.append([_table(["ok-1", "ok-2"]), _table([None])], buffer_bytes=1)  # type: ignore[list-item]
    assert (tmp_path / "ds" / MANIFEST_NAME).read_text() == manifest
    assert sorted((tmp_path / "ds").rglob("*")) == files
    nullable = _table(["z"]).cast(
        pa.schema(
            [
                pa.field("phone", pa.string(), nullable=False),
                ("seq", pa.int64()),
                ("tag", pa.string()),
            ]
        )
    )
    ds.append(nullable)
    assert ds.num_rows == 31


def test_read_bucket_columns_and_bounds(tmp_path: Path) -> None:
    ds = BucketedDataset.write(_table(_phones(50)), tmp_path / "ds", id_column="phone", buckets=4)
    bucket = ds.buckets()[0]
    assert ds.read_bucket(bucket, ["seq"]).column_names == ["seq"]
    assert ds.bucket_rows(bucket) == ds.read_bucket(bucket).num_rows
    with pytest.raises(ConfigError, match="unknown column"):
        ds.read_bucket(bucket, ["nope"])
    with pytest.raises(ConfigError, match="out of range"):
        ds.read_bucket(4)
    assert [b for b, _ in ds.iter_buckets(["phone"], verify=False)] == ds.buckets()
    part = pq.ParquetFile(tmp_path / "ds" / ds.files(bucket)[0].path)
    assert part.metadata.num_rows == ds.files(bucket)[0].rows


def test_nested_and_typed_columns_round_trip_exactly(tmp_path: Path) -> None:
    table = pa.table(
        {
            "device_id": ["a", "b", "c", "d"],
            "interests": pa.array([["x", "y"], [], None, ["z"]], pa.list_(pa.string())),
            "seen": pa.array([0, 1, 2, 3], pa.timestamp("us", tz="UTC")),
            "amount": pa.array([1, 2, 3, 4], pa.decimal128(18, 2)),
        }
    )
    ds = BucketedDataset.write(table, tmp_path / "ds", id_column="device_id", buckets=3)
    back = pa.concat_tables(t for _, t in ds.iter_buckets()).sort_by("device_id")
    assert back.equals(table)
    assert back.schema.field("interests").type.value_field.name == "item"
    assert BucketedDataset.open(tmp_path / "ds").schema.equals(table.schema)
