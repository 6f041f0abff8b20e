"""Shared test data for the executor tests: a small bucketed Parquet dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from atoll.ids.buckets import BucketFunction


def write_bucketed_parquet(
    root: Path, *, rows: int = 3000, buckets: int = 8, seed: int = 7
) -> tuple[pa.Table, list[str]]:
    """A small bucketed dataset: one Parquet file per bucket of ``id``."""
    rng = np.random.default_rng(seed)
    ids = [f"dev-{n:06d}" for n in rng.integers(0, rows // 2, rows)]
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "amount": pa.array(rng.integers(1, 1000, rows), pa.int64()),
            "bucket": pa.array(BucketFunction(buckets).assign(ids), pa.uint32()),
        }
    )
    paths = []
    for bucket in range(buckets):
        path = root / f"bucket={bucket:04d}.parquet"
        pq.write_table(table.filter(pc.equal(table["bucket"], bucket)), path)
        paths.append(str(path))
    return table, paths


@pytest.fixture
def bucketed(tmp_path: Path) -> tuple[pa.Table, list[str]]:
    return write_bucketed_parquet(tmp_path)
