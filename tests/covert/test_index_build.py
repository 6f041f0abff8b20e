"""The provider's index build (chunked, parallel, streaming) equals the in-memory source.

``build_index`` encodes chunks of rows on the executor (tags, payloads, one
OPRF evaluation per row), spills them into tag partitions and sorts each
partition on the executor. Whatever the chunking, partitioning or executor,
the files must hold exactly what :meth:`ArrayLabelSource.from_rows` computes
in memory, every bucket entry must open under its own OPRF-derived key only,
and bad rows must be named by their row number.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.crypto.group import hash_to_group, point_mul
from atoll.crypto.sign import SigningKey
from atoll.data.io import write_table
from atoll.errors import DecryptionError, InputError
from atoll.protocols.covert import CovertClient, CovertProvider
from atoll.protocols.covert_source import (
    OPRF_DOMAIN,
    ArrayLabelSource,
    id_tag,
    open_bucket_entry,
    oprf_entry_keys,
    prefix_of,
)
from atoll.service import covert_index
from atoll.service.covert import build_index, load_index
from atoll.transport.memory import run_pair

from .conftest import MemoryBiller, phone

ROWS = 600
LABELS = ["age", "segment", "tags"]


def _values(i: int) -> list[Any]:
    tags = None if i % 5 == 0 else [f"t{i % 3}", "x"]
    return [i % 70 + 18, None if i % 11 == 0 else f"seg{i % 7}", tags]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[list[Any]]]:
    ids = [phone(i * 7919 % 10**8) for i in range(ROWS)]
    values = [_values(i) for i in range(ROWS)]
    path = tmp_path_factory.mktemp("db") / "db.parquet"
    cols = list(zip(*values, strict=True))
    write_table(
        pa.table({"phone": ids, **{n: list(c) for n, c in zip(LABELS, cols, strict=True)}}), path
    )
    return path, ids, values


def _check_against_memory(index_dir: Path, ids: list[str], values: list[list[Any]]) -> None:
    index = load_index(index_dir)
    src = index.source
    assert src.bucket is not None
    bits = src.bucket.bits
    memory = ArrayLabelSource.from_rows(
        ids, values, LABELS, bucket_bits=bits, oprf_key=src.bucket.oprf_key
    )
    assert src.codec == memory.codec
    assert np.array_equal(src.tags, memory.tags)
    assert np.array_equal(src.records, memory.records)
    assert memory.bucket is not None
    assert np.array_equal(src.bucket.offsets, memory.bucket.offsets)
    # The same entry tags, bucket by bucket, each bucket ordered by otag alone.
    assert np.array_equal(src.bucket.otags, memory.bucket.otags)
    offsets = src.bucket.offsets
    for b in range(1 << bits):
        block = [bytes(t) for t in src.bucket.otags[offsets[b] : offsets[b + 1]]]
        assert block == sorted(block)
    # Every entry opens under its own ID's OPRF-derived key, and under no other.
    position = {bytes(t): i for i, t in enumerate(src.bucket.otags)}
    for k, (x, v) in enumerate(zip(ids, values, strict=True)):
        if k % 20:
            continue
        otag, key = oprf_entry_keys(
            point_mul(src.bucket.oprf_key, hash_to_group(x.encode(), domain=OPRF_DOMAIN))
        )
        i = position[otag]
        assert offsets[prefix_of(id_tag(x), bits)] <= i < offsets[prefix_of(id_tag(x), bits) + 1]
        assert src.codec.decode(open_bucket_entry(key, src.bucket.cts[i].tobytes())) == v
        other = src.bucket.cts[(i + 1) % ROWS].tobytes()
        with pytest.raises(DecryptionError):
            open_bucket_entry(key, other)


@pytest.mark.parametrize("bucket_bits", [2, 6])
def test_chunked_partitioned_build_equals_memory(
    db: tuple[Path, list[str], list[list[Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bucket_bits: int,
) -> None:
    """16 partitions: buckets wider (2 bits) and narrower (6 bits) than a partition."""
    path, ids, values = db
    monkeypatch.setattr(covert_index, "_PARTITION_ROWS", 40)
    report = build_index(path, tmp_path / "idx", id_column="phone", labels=LABELS,
                         bucket_bits=bucket_bits, chunk_rows=97)  # fmt: skip
    assert report.rows == ROWS
    assert report.bucket_bits == bucket_bits
    assert not (tmp_path / "idx" / "work").exists()
    _check_against_memory(tmp_path / "idx", ids, values)


def test_process_pool_build_equals_memory_and_serves(
    db: tuple[Path, list[str], list[list[Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ids, values = db
    monkeypatch.setattr(covert_index, "_PARTITION_ROWS", 100)
    build_index(path, tmp_path / "idx", id_column="phone", labels=LABELS, bucket_bits=3,
                chunk_rows=128, executor="local", executor_options={"workers": 2})  # fmt: skip
    _check_against_memory(tmp_path / "idx", ids, values)
    # A bucket-mode query against the built files returns exactly the asked ID's labels.
    src = load_index(tmp_path / "idx").source
    key = SigningKey.generate()
    asked = [ids[5], ids[123], "13800000000"]
    client = CovertClient(asked, mode="bucket", prefix_bits=3)
    provider = CovertProvider(src, signing_key=key, biller=MemoryBiller(key))
    answers = run_pair(client, provider).a_result
    assert [a.values for a in answers] == [values[5], values[123], None]


def test_bad_rows_are_named(tmp_path: Path) -> None:
    dup = tmp_path / "dup.csv"
    dup.write_text("id,a\n1,x\n2,y\n3,z\n2,w\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 4, column 'id'.*more than once.*also in row 2"):
        build_index(dup, tmp_path / "i1", id_column="id")
    empty = tmp_path / "empty.csv"
    empty.write_text('id,a\n1,x\n"  ",y\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"row 2, column 'id'.*empty identifier"):
        build_index(empty, tmp_path / "i2", id_column="id")
    long_id = tmp_path / "long.csv"
    long_id.write_text(f"id,a\n1,x\n2,y\n{'9' * 300},z\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 3, column 'id'.*longer than 256"):
        build_index(long_id, tmp_path / "i3", id_column="id")
    big = tmp_path / "big.parquet"
    write_table(pa.table({"id": ["1", "2"], "a": ["x", "y" * 70_000]}), big)
    with pytest.raises(InputError, match=r"row 2.*exceeds the 65,535-byte limit"):
        build_index(big, tmp_path / "i4", id_column="id")


def test_invalid_identifiers_are_counted_not_indexed(tmp_path: Path) -> None:
    path = tmp_path / "db.csv"
    path.write_text("phone,a\n13912345678,x\nnot-a-phone,y\n+86 139 1234 5679,z\n,w\n",
                    encoding="utf-8")  # fmt: skip
    report = build_index(path, tmp_path / "idx", id_column="phone", id_type="phone")
    assert report.rows == 2
    assert report.invalid is not None
    assert report.invalid.invalid == 2
    src = load_index(tmp_path / "idx").source
    found = src.lookup([id_tag("13912345678"), id_tag("13912345679"), id_tag("not-a-phone")])
    assert [src.codec.decode(r) if r else None for r in found] == [["x"], ["z"], None]
    # Nothing valid: an empty index, every row counted.
    bad = tmp_path / "bad.csv"
    bad.write_text("phone,a\nnot-a-phone,y\n,w\n", encoding="utf-8")
    report = build_index(bad, tmp_path / "empty", id_column="phone", id_type="phone")
    assert report.rows == 0
    assert report.invalid is not None
    assert report.invalid.invalid == 2
    empty = load_index(tmp_path / "empty").source
    assert len(empty) == 0
    assert empty.lookup([id_tag("13912345678")]) == [None]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text("abcdef0123", min_size=1, max_size=6),
        st.tuples(st.integers(-5, 5), st.none() | st.text("xyz", max_size=3)),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 17),
    st.integers(1, 4),
)
def test_lookup_equals_the_plain_table(
    rows: dict[str, tuple[int, str | None]], chunk_rows: int, bucket_bits: int
) -> None:
    ids = list(rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db.parquet"
        write_table(pa.table({"id": ids, "n": [v[0] for v in rows.values()],
                              "s": [v[1] for v in rows.values()]}), path)  # fmt: skip
        build_index(path, Path(tmp) / "idx", id_column="id", bucket_bits=bucket_bits,
                    chunk_rows=chunk_rows)  # fmt: skip
        src = load_index(Path(tmp) / "idx").source
        found = src.lookup([id_tag(x) for x in [*ids, "zzz-missing"]])
        assert [src.codec.decode(r) if r else None for r in found] == [[*rows[x]] for x in ids] + [
            None
        ]
        assert src.bucket is not None
        assert int(src.bucket.offsets[-1]) == len(ids)
