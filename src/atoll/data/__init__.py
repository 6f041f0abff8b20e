"""The data plane: canonical schemas, file I/O, the DuckDB store, bucketed datasets.

Why: every computation above this layer reads rows that were validated once,
here (:mod:`atoll.data.schema`, :mod:`atoll.data.io`), and every large table
keyed by a person or device is stored hash-partitioned by identity
(:mod:`atoll.data.datasets`), so that joins and per-person work run bucket by
bucket. SQL runs in the embedded DuckDB store (:mod:`atoll.data.store`, the
only module that imports ``duckdb``).
"""

from atoll.data.datasets import BucketedDataset, Manifest, bucket_table
from atoll.data.io import Format, iter_batches, read_table, write_table
from atoll.data.schema import (
    EDGES,
    EXPOSURES,
    MEMBERS,
    ORDERS,
    PINGS,
    POIS,
    SPECS,
    UNIVERSE,
    ColumnSpec,
    ExtraColumns,
    TableSpec,
    get_spec,
    validate,
)
from atoll.data.store import Store

__all__ = [
    "EDGES",
    "EXPOSURES",
    "MEMBERS",
    "ORDERS",
    "PINGS",
    "POIS",
    "SPECS",
    "UNIVERSE",
    "BucketedDataset",
    "ColumnSpec",
    "ExtraColumns",
    "Format",
    "Manifest",
    "Store",
    "TableSpec",
    "bucket_table",
    "get_spec",
    "iter_batches",
    "read_table",
    "validate",
    "write_table",
]
