"""Bucketed Parquet datasets: every large table, hash-partitioned by identity.

Why: ARCHITECTURE idea 2 — everything keyed by a person or device is split
into ``B`` buckets by ``bucket = H(normalized_id) mod B``
(:class:`atoll.ids.buckets.BucketFunction`). Two parties that agree on ``B``
and the salt put the same identifier in the same bucket, so joins, per-person
computations and uploads to the island run one bucket at a time: parallel,
in bounded memory, and incremental (an append touches only the buckets its
rows fall into).

Layout on disk (one folder per non-empty bucket; ``manifest.json`` is written
last, atomically, and is the only source of truth — files it does not list are
ignored)::

    out_dir/
      manifest.json
      bucket=00042/part-3f9a0c1d2b4e5f60.parquet
      bucket=00042/part-9e8d7c6b5a4f3e2d.parquet     (a later append)
      bucket=01337/part-0a1b2c3d4e5f6a7b.parquet

A part file is named by the first 16 hex digits of its SHA-256, which the
manifest records in full with its row count; :meth:`BucketedDataset.read_bucket`
checks both, so a changed or truncated file raises
:class:`~atoll.errors.IntegrityError` instead of feeding wrong rows onward.

Writing streams the input batch by batch: rows are buffered per bucket and
flushed to part files whenever the buffers exceed ``buffer_bytes``, so memory
is bounded by that budget plus one input slice, whatever the input size.
Partitioning a batch is one stable counting sort of its bucket numbers and one
Arrow ``take`` (measured faster than a ``filter`` per bucket or a DuckDB
``ORDER BY``; see ``docs/data-formats.md``).

A dataset has a single writer at a time; readers see either the old or the
new manifest, never a half-written one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.crypto import sha256_digest
from atoll.errors import (
    ConfigError,
    InputError,
    IntegrityError,
    ManifestError,
    SchemaError,
)
from atoll.ids.buckets import BUCKET_FUNCTION_NAME, BucketFunction

__all__ = [
    "DATASET_VERSION",
    "DEFAULT_BUFFER_BYTES",
    "MANIFEST_NAME",
    "BucketEntry",
    "BucketedDataset",
    "DataInput",
    "Manifest",
    "PartFile",
    "Progress",
    "bucket_table",
]

#: Version of the on-disk format; the first key of every manifest.
DATASET_VERSION = 1
#: File name of the manifest inside a dataset folder.
MANIFEST_NAME = "manifest.json"
#: Default memory budget for rows buffered between part-file flushes.
DEFAULT_BUFFER_BYTES = 256 << 20

#: What :meth:`BucketedDataset.write` and ``append`` accept.
DataInput: TypeAlias = (
    pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.Table | pa.RecordBatch]
)
#: Progress callback: ``progress(rows_done, rows_total)``; total is -1 when unknown.
Progress = Callable[[int, int], None]

_SLICE_ROWS = 1 << 20
_BUCKET_DIR = "bucket={:05d}"
_PART_RE = re.compile(r"^bucket=(\d{5})/part-([0-9a-f]{16})(?:-\d+)?\.parquet$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class PartFile:
    """One Parquet part file of a bucket: path relative to the dataset root, hash, rows."""

    path: str
    sha256: str
    rows: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """The manifest form of this file."""
        return {"path": self.path, "sha256": self.sha256, "rows": self.rows, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class BucketEntry:
    """A non-empty bucket: its number and its part files, oldest first."""

    bucket: int
    files: tuple[PartFile, ...]

    @property
    def rows(self) -> int:
        """Rows in this bucket."""
        return sum(f.rows for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """The manifest form of this bucket."""
        return {
            "bucket": self.bucket,
            "rows": self.rows,
            "files": [f.to_json() for f in self.files],
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ConfigError(f"now must be a timezone-aware datetime, got {now!r}")
    return now


def _schema_fields(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed ``manifest.json`` of a bucketed dataset (see the module docstring)."""

    schema: pa.Schema
    id_column: str
    id_kind: str | None
    bucket_function: BucketFunction
    buckets: tuple[BucketEntry, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def num_rows(self) -> int:
        """Rows in the whole dataset."""
        return sum(entry.rows for entry in self.buckets)

    @property
    def num_files(self) -> int:
        """Part files in the whole dataset."""
        return sum(len(entry.files) for entry in self.buckets)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (version first)."""
        fn = self.bucket_function
        return {
            "atoll_dataset_version": DATASET_VERSION,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "id_column": self.id_column,
            "id_kind": self.id_kind,
            "bucket_function": {
                "name": fn.name,
                "buckets": fn.buckets,
                "salt_hex": fn.salt.hex(),
            },
            "schema": {
                "arrow_ipc_base64": base64.b64encode(self.schema.serialize().to_pybytes()).decode(
                    "ascii"
                ),
                "fields": _schema_fields(self.schema),
            },
            "totals": {
                "rows": self.num_rows,
                "files": self.num_files,
                "buckets": len(self.buckets),
            },
            "buckets": [entry.to_json() for entry in self.buckets],
        }

    @classmethod
    def from_json(cls, obj: object, *, where: str) -> Manifest:
        """Parse and check a manifest object; ManifestError names ``where`` and the field."""
        return _ManifestParser(where).parse(obj)


class _ManifestParser:
    """Strict reader of manifest JSON: every field is checked, every error located."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, field: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.where}: field {field!r}: {problem}")

    def get(
        self, obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], field: str
    ) -> Any:
        if key not in obj:
            return self._missing(field)
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(field, f"must be {self._names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(field, f"must be {self._names(kinds)}, got {type(value).__name__}")
        return value

    def _missing(self, field: str) -> Any:
        raise self.error(field, "missing")

    @staticmethod
    def _names(kinds: tuple[type, ...]) -> str:
        names = {int: "an integer", str: "a string", list: "a list", dict: "an object"}
        return " or ".join(names.get(k, "null" if k is type(None) else k.__name__) for k in kinds)

    def count(self, obj: Mapping[str, Any], key: str, field: str) -> int:
        value: int = self.get(obj, key, int, field)
        if value < 0:
            raise self.error(field, f"must be >= 0, got {value}")
        return value

    def timestamp(self, obj: Mapping[str, Any], key: str) -> datetime:
        text = self.get(obj, key, str, key)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.error(key, f"not an ISO 8601 timestamp: {text!r}") from None
        if moment.tzinfo is None:
            raise self.error(key, "timestamp has no timezone")
        return moment

    def parse(self, obj: object) -> Manifest:
        if not isinstance(obj, dict):
            raise ManifestError(f"{self.where}: not a JSON object")
        version = self.get(obj, "atoll_dataset_version", int, "atoll_dataset_version")
        if version != DATASET_VERSION:
            raise self.error(
                "atoll_dataset_version",
                f"unknown version {version} (this Atoll reads version {DATASET_VERSION})",
            )
        schema = self.schema(self.get(obj, "schema", dict, "schema"))
        id_column = self.get(obj, "id_column", str, "id_column")
        if id_column not in schema.names:
            raise self.error("id_column", f"{id_column!r} is not a column of the schema")
        id_kind = self.get(obj, "id_kind", (str, type(None)), "id_kind")
        fn = self.bucket_function(self.get(obj, "bucket_function", dict, "bucket_function"))
        raw_buckets = self.get(obj, "buckets", list, "buckets")
        entries = tuple(self.bucket(raw, i, fn) for i, raw in enumerate(raw_buckets))
        numbers = [entry.bucket for entry in entries]
        if any(b >= a for a, b in zip(numbers[1:], numbers, strict=False)):
            raise self.error("buckets", "bucket numbers must be unique and in increasing order")
        totals = self.get(obj, "totals", dict, "totals")
        expected = {
            "rows": sum(e.rows for e in entries),
            "files": sum(len(e.files) for e in entries),
            "buckets": len(entries),
        }
        for key, value in expected.items():
            stated = self.count(totals, key, f"totals.{key}")
            if stated != value:
                raise self.error(
                    f"totals.{key}", f"says {stated} but the buckets add up to {value}"
                )
        return Manifest(
            schema=schema,
            id_column=id_column,
            id_kind=id_kind,
            bucket_function=fn,
            buckets=entries,
            created_at=self.timestamp(obj, "created_at"),
            updated_at=self.timestamp(obj, "updated_at"),
        )

    def schema(self, obj: Mapping[str, Any]) -> pa.Schema:
        encoded = self.get(obj, "arrow_ipc_base64", str, "schema.arrow_ipc_base64")
        try:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError, pa.ArrowException) as exc:
            raise self.error(
                "schema.arrow_ipc_base64", f"not a serialized Arrow schema ({exc})"
            ) from exc
        fields = self.get(obj, "fields", list, "schema.fields")
        names = [f.get("name") if isinstance(f, dict) else None for f in fields]
        if names != schema.names:
            raise self.error(
                "schema.fields", f"lists {names} but the Arrow schema has {schema.names}"
            )
        return schema

    def bucket_function(self, obj: Mapping[str, Any]) -> BucketFunction:
        name = self.get(obj, "name", str, "bucket_function.name")
        if name != BUCKET_FUNCTION_NAME:
            raise self.error(
                "bucket_function.name",
                f"unknown function {name!r} (expected {BUCKET_FUNCTION_NAME})",
            )
        count = self.get(obj, "buckets", int, "bucket_function.buckets")
        salt_hex = self.get(obj, "salt_hex", str, "bucket_function.salt_hex")
        try:
            salt = bytes.fromhex(salt_hex)
        except ValueError:
            raise self.error("bucket_function.salt_hex", "not hexadecimal") from None
        try:
            return BucketFunction(count, salt)
        except ConfigError as exc:
            raise self.error("bucket_function", str(exc)) from exc

    def bucket(self, raw: object, index: int, fn: BucketFunction) -> BucketEntry:
        field = f"buckets[{index}]"
        if not isinstance(raw, dict):
            raise self.error(field, "must be an object")
        number = self.count(raw, "bucket", f"{field}.bucket")
        if number >= fn.buckets:
            raise self.error(
                f"{field}.bucket", f"{number} is not below the bucket count {fn.buckets}"
            )
        raw_files = self.get(raw, "files", list, f"{field}.files")
        if not raw_files:
            raise self.error(f"{field}.files", "a listed bucket must have files")
        files = tuple(self.part(f, f"{field}.files[{i}]", number) for i, f in enumerate(raw_files))
        entry = BucketEntry(number, files)
        rows = self.count(raw, "rows", f"{field}.rows")
        if rows != entry.rows:
            raise self.error(f"{field}.rows", f"says {rows} but its files hold {entry.rows}")
        return entry

    def part(self, raw: object, field: str, bucket: int) -> PartFile:
        if not isinstance(raw, dict):
            raise self.error(field, "must be an object")
        path = self.get(raw, "path", str, f"{field}.path")
        match = _PART_RE.match(path)
        if match is None or int(match.group(1)) != bucket:
            raise self.error(
                f"{field}.path",
                f"{path!r} is not a part file of bucket {bucket} "
                "(bucket=NNNNN/part-<hash>.parquet)",
            )
        digest = self.get(raw, "sha256", str, f"{field}.sha256")
        if not _SHA256_RE.match(digest):
            raise self.error(f"{field}.sha256", "must be 64 lowercase hex digits")
        return PartFile(
            path=path,
            sha256=digest,
            rows=self.count(raw, "rows", f"{field}.rows"),
            bytes=self.count(raw, "bytes", f"{field}.bytes"),
        )


def _write_manifest(root: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically: temp file, fsync, rename."""
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    target = root / MANIFEST_NAME
    tmp = root / f".{MANIFEST_NAME}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path}: missing (not an Atoll bucketed dataset, or its write did not finish)"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not readable JSON ({exc})") from exc
    return Manifest.from_json(obj, where=str(path))


# --------------------------------------------------------------------------- partitioning


def _check_id_column(schema: pa.Schema, id_column: str, source: str | None) -> None:
    if id_column not in schema.names:
        raise SchemaError(
            f"id column not found (columns: {', '.join(schema.names)})",
            source=source,
            column=id_column,
        )
    kind = schema.field(id_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise SchemaError(
            f"id column has type {kind}; bucketing needs normalized identifiers as text",
            source=source,
            column=id_column,
        )


def _assign(
    table: pa.Table, id_column: str, fn: BucketFunction, *, source: str | None, row_offset: int
) -> npt.NDArray[np.uint32]:
    """Bucket numbers of every row; a null id is an InputError naming its row."""
    column = table.column(id_column)
    if column.null_count:
        first = int(pc.index(pc.is_null(column), True).as_py())
        raise InputError(
            "null identifier cannot be bucketed (normalize the IDs and set invalid ones aside "
            "first; rows are never dropped silently)",
            source=source,
            row=row_offset + first + 1,
            column=id_column,
        )
    return fn.assign_arrow(column, source=source, column_name=id_column)


def _partition(
    table: pa.Table, buckets: npt.NDArray[np.uint32], bucket_count: int
) -> list[tuple[int, pa.Table]]:
    """Split ``table`` by bucket number: one stable sort + one take + zero-copy slices."""
    n = table.num_rows
    if n == 0:
        return []
    # uint16 keys make numpy's stable sort a radix (counting) sort: O(n).
    keys = buckets.astype(np.uint16) if bucket_count <= 1 << 16 else buckets
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [n]))
    taken = table if len(starts) == 1 else table.take(pa.array(order))
    return [
        (int(ordered[start]), taken.slice(int(start), int(end - start)))
        for start, end in zip(starts, ends, strict=True)
    ]


def bucket_table(
    table: pa.Table,
    id_column: str,
    fn: BucketFunction | int,
    *,
    source: str | None = None,
) -> dict[int, pa.Table]:
    """Partition an in-memory table by the bucket of ``id_column``.

    Returns ``{bucket: rows}`` for the non-empty buckets, each keeping the
    input's row order. A null identifier is an InputError naming its row.
    """
    function = _function(fn)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    _check_id_column(table.schema, id_column, source)
    buckets = _assign(table, id_column, function, source=source, row_offset=0)
    return dict(_partition(table, buckets, function.buckets))


def _function(buckets: BucketFunction | int) -> BucketFunction:
    if isinstance(buckets, BucketFunction):
        return buckets
    if isinstance(buckets, bool) or not isinstance(buckets, int):
        raise ConfigError(f"buckets must be an int or a BucketFunction, got {buckets!r}")
    return BucketFunction(buckets)


def _conform(table: pa.Table, schema: pa.Schema, source: str | None, what: str) -> pa.Table:
    """``table`` with exactly ``schema``'s names and types, or a SchemaError saying why."""
    got = table.schema
    if got.names != schema.names:
        missing = [n for n in schema.names if n not in got.names]
        extra = [n for n in got.names if n not in schema.names]
        if missing:
            raise SchemaError(f"{what} lacks this column", source=source, column=missing[0])
        if extra:
            raise SchemaError(f"{what} has an unexpected column", source=source, column=extra[0])
        raise SchemaError(
            f"{what} has the columns in another order ({', '.join(got.names)}; "
            f"expected {', '.join(schema.names)})",
            source=source,
        )
    for field, want in zip(got, schema, strict=True):
        if not field.type.equals(want.type):
            raise SchemaError(
                f"{what} has type {field.type}, expected {want.type}",
                source=source,
                column=field.name,
            )
    if got.equals(schema, check_metadata=True):
        return table
    return table.cast(schema)


def _tables(data: DataInput) -> tuple[Iterator[pa.Table], int, pa.Schema | None]:
    """Normalize the accepted inputs to an iterator of tables, the total (-1) and a schema."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        table = data
        slices = (
            [table]
            if table.num_rows <= _SLICE_ROWS
            else [table.slice(i, _SLICE_ROWS) for i in range(0, table.num_rows, _SLICE_ROWS)]
        )
        return iter(slices), table.num_rows, table.schema
    if isinstance(data, pa.RecordBatchReader):
        reader = data
        return (pa.Table.from_batches([b]) for b in reader), -1, reader.schema
    if isinstance(data, str | bytes | os.PathLike) or not isinstance(data, Iterable):
        raise ConfigError(
            f"expected an Arrow table, record batches or a reader, got {type(data).__name__} "
            "(read files with atoll.data.io.iter_batches)"
        )

    def generate(items: Iterable[pa.Table | pa.RecordBatch]) -> Iterator[pa.Table]:
        for item in items:
            if isinstance(item, pa.RecordBatch):
                yield pa.Table.from_batches([item])
            elif isinstance(item, pa.Table):
                yield item
            else:
                raise ConfigError(f"expected Arrow tables or batches, got {type(item).__name__}")

    return generate(data), -1, None


class _PartWriter:
    """Buffers rows per bucket and flushes them to content-addressed part files."""

    def __init__(
        self,
        root: Path,
        fn: BucketFunction,
        schema: pa.Schema,
        id_column: str,
        *,
        source: str | None,
        buffer_bytes: int,
        compression: str,
    ) -> None:
        if not isinstance(buffer_bytes, int) or buffer_bytes < 1:
            raise ConfigError(f"buffer_bytes must be a positive integer, got {buffer_bytes!r}")
        self.root = root
        self.fn = fn
        self.schema = schema
        self.id_column = id_column
        self.source = source
        self.buffer_bytes = buffer_bytes
        self.compression = compression
        self.rows = 0
        self.parts: dict[int, list[PartFile]] = {}
        self.written: list[Path] = []
        self._buffers: dict[int, list[pa.Table]] = {}
        self._buffered = 0

    def add(self, table: pa.Table, what: str) -> None:
        table = _conform(table, self.schema, self.source, what)
        buckets = _assign(table, self.id_column, self.fn, source=self.source, row_offset=self.rows)
        pieces = _partition(table, buckets, self.fn.buckets)
        for bucket, piece in pieces:
            self._buffers.setdefault(bucket, []).append(piece)
        self._buffered += sum(piece.nbytes for _, piece in pieces)
        self.rows += table.num_rows
        if self._buffered >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        for bucket in sorted(self._buffers):
            self._write_part(bucket, pa.concat_tables(self._buffers[bucket]).combine_chunks())
        self._buffers.clear()
        self._buffered = 0

    def _write_part(self, bucket: int, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=self.compression)
        data = sink.getvalue().to_pybytes()
        digest = sha256_digest(data).hex()
        folder_name = _BUCKET_DIR.format(bucket)
        folder = self.root / folder_name
        folder.mkdir(exist_ok=True)
        # Identical content (the same rows appended twice) must still be two files.
        name, n = f"part-{digest[:16]}.parquet", 0
        while (folder / name).exists():
            n += 1
            name = f"part-{digest[:16]}-{n}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written.append(folder / name)
        self.parts.setdefault(bucket, []).append(
            PartFile(f"{folder_name}/{name}", digest, table.num_rows, len(data))
        )

    def discard(self) -> None:
        """Delete the part files written so far (they are in no manifest)."""
        for path in self.written:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only succeeds for a folder left empty
        self.written.clear()


def _merge(
    old: Sequence[BucketEntry], new: Mapping[int, list[PartFile]]
) -> tuple[BucketEntry, ...]:
    merged = {entry.bucket: entry for entry in old}
    for bucket, files in new.items():
        before = merged[bucket].files if bucket in merged else ()
        merged[bucket] = BucketEntry(bucket, before + tuple(files))
    return tuple(merged[b] for b in sorted(merged))


def _prepare_target(target: Path, overwrite: bool) -> bool:
    """Check that ``target`` may be written; returns whether it exists."""
    if not target.exists():
        return False
    if not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a directory")
    if any(target.iterdir()):
        if not overwrite:
            raise ConfigError(f"{target}: not empty; pass overwrite=True to replace the dataset")
        if not (target / MANIFEST_NAME).is_file():
            raise ConfigError(
                f"{target}: refusing to replace a non-empty directory that is not an Atoll dataset"
            )
    return True


# --------------------------------------------------------------------------- dataset


class BucketedDataset:
    """A hash-partitioned Parquet dataset on disk (see the module docstring).

    Obtain one with :meth:`write` or :meth:`open`; the constructor takes an
    already-checked manifest.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest) -> None:
        #: The dataset folder (holds ``manifest.json`` and the bucket folders).
        self.path = Path(path)
        self._set_manifest(manifest)

    def _set_manifest(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._entries = {entry.bucket: entry for entry in manifest.buckets}

    def __repr__(self) -> str:
        return (
            f"BucketedDataset({str(self.path)!r}, rows={self.num_rows}, "
            f"buckets={len(self._entries)}/{self.bucket_function.buckets})"
        )

    # ------------------------------------------------------------------ creation

    @classmethod
    def write(
        cls,
        table_or_batches: DataInput,
        out_dir: str | os.PathLike[str],
        *,
        id_column: str,
        buckets: int | BucketFunction,
        id_kind: str | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        now: datetime | None = None,
        source: str | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        compression: str = "zstd",
    ) -> BucketedDataset:
        """Hash-partition rows by the bucket of ``id_column`` into ``out_dir``.

        ``id_column`` must hold *normalized* identifiers as text; a null is an
        InputError naming its row (``source`` names the input in messages).
        ``buckets`` is a count (default salt) or a :class:`BucketFunction`.
        The dataset is built in a hidden sibling folder and moved into place
        when complete, so ``out_dir`` never holds a half-written dataset; an
        existing dataset there is replaced only with ``overwrite=True``.
        ``progress(rows_done, rows_total)`` is called after every input batch
        (total -1 when unknown); ``now`` stamps the manifest.
        """
        fn = _function(buckets)
        if id_kind is not None and (not isinstance(id_kind, str) or not id_kind):
            raise ConfigError(f"id_kind must be a non-empty string or None, got {id_kind!r}")
        stamp = _now(now)
        target = Path(out_dir)
        existed = _prepare_target(target, overwrite)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        try:
            tables, total, schema = _tables(table_or_batches)
            first = next(tables, None)
            if first is not None:
                schema = first.schema
            if schema is None:
                raise InputError(
                    "no data: an empty sequence of batches has no schema", source=source
                )
            base = schema.remove_metadata()
            _check_id_column(base, id_column, source)
            writer = _PartWriter(
                staging,
                fn,
                base,
                id_column,
                source=source,
                buffer_bytes=buffer_bytes,
                compression=compression,
            )
            stream = tables if first is None else chain([first], tables)
            for index, table in enumerate(stream):
                writer.add(table, f"input batch {index + 1}")
                if progress is not None:
                    progress(writer.rows, total)
            writer.flush()
            manifest = Manifest(
                schema=base,
                id_column=id_column,
                id_kind=id_kind,
                bucket_function=fn,
                buckets=_merge((), writer.parts),
                created_at=stamp,
                updated_at=stamp,
            )
            _write_manifest(staging, manifest)
            if existed:
                retired = staging.with_name(staging.name.replace(".staging-", ".retired-", 1))
                os.rename(target, retired)
                os.rename(staging, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(target, manifest)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BucketedDataset:
        """Open a dataset folder; ManifestError if its manifest is missing or malformed."""
        root = Path(path)
        return cls(root, _read_manifest(root))

    # ------------------------------------------------------------------ metadata

    @property
    def manifest(self) -> Manifest:
        """The dataset's current manifest."""
        return self._manifest

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of every bucket."""
        return self._manifest.schema

    @property
    def id_column(self) -> str:
        """The column whose bucket places each row."""
        return self._manifest.id_column

    @property
    def id_kind(self) -> str | None:
        """What kind of identifier the id column holds (``phone``, ``oaid``, ...), if known."""
        return self._manifest.id_kind

    @property
    def bucket_function(self) -> BucketFunction:
        """The bucket function (count and salt) that placed the rows."""
        return self._manifest.bucket_function

    @property
    def num_rows(self) -> int:
        """Rows in the whole dataset."""
        return self._manifest.num_rows

    def buckets(self) -> list[int]:
        """The non-empty bucket numbers, ascending."""
        return list(self._entries)

    def bucket_rows(self, bucket: int) -> int:
        """Rows in ``bucket`` (0 for an empty bucket)."""
        self._check_bucket(bucket)
        entry = self._entries.get(bucket)
        return 0 if entry is None else entry.rows

    def files(self, bucket: int) -> tuple[PartFile, ...]:
        """The part files of ``bucket`` (empty for an empty bucket)."""
        self._check_bucket(bucket)
        entry = self._entries.get(bucket)
        return () if entry is None else entry.files

    def _check_bucket(self, bucket: int) -> None:
        count = self.bucket_function.buckets
        if isinstance(bucket, bool) or not isinstance(bucket, int | np.integer):
            raise ConfigError(f"bucket must be an integer, got {bucket!r}")
        if not 0 <= bucket < count:
            raise ConfigError(f"bucket {bucket} out of range 0..{count - 1}")

    def _columns(self, columns: Sequence[str] | None) -> list[str] | None:
        if columns is None:
            return None
        if isinstance(columns, str):
            raise ConfigError("columns must be a list of names, not a string")
        unknown = [c for c in columns if c not in self.schema.names]
        if unknown:
            raise ConfigError(
                f"unknown column(s) {unknown}; the dataset has {', '.join(self.schema.names)}"
            )
        return list(columns)

    # ------------------------------------------------------------------ reading

    def _read_part(self, part: PartFile, columns: list[str] | None, verify: bool) -> pa.Table:
        path = self.path / part.path
        try:
            if verify:
                data = path.read_bytes()
                digest = sha256_digest(data).hex()
                if digest != part.sha256:
                    raise IntegrityError(
                        f"{path}: content hash {digest[:16]}... does not match the manifest's "
                        f"{part.sha256[:16]}... (the file was changed or is corrupt)"
                    )
                handle = pq.ParquetFile(pa.BufferReader(data))
            else:
                handle = pq.ParquetFile(str(path))
            if handle.metadata.num_rows != part.rows:
                raise IntegrityError(
                    f"{path}: holds {handle.metadata.num_rows} rows, the manifest says {part.rows}"
                )
            if not handle.schema_arrow.remove_metadata().equals(self.schema):
                raise IntegrityError(f"{path}: schema differs from the dataset's")
            table: pa.Table = handle.read(columns=columns)
            # Parquet renames list children ("element"); give back the manifest's exact schema.
            expected = (
                self.schema
                if columns is None
                else pa.schema([self.schema.field(c) for c in columns])
            )
            table = table.replace_schema_metadata(None).cast(expected)
        except FileNotFoundError as exc:
            raise IntegrityError(f"{path}: listed in the manifest but missing") from exc
        except (pa.ArrowException, OSError) as exc:
            raise IntegrityError(f"{path}: unreadable Parquet ({exc})") from exc
        return table

    def read_bucket(
        self, bucket: int, columns: Sequence[str] | None = None, *, verify: bool = True
    ) -> pa.Table:
        """All rows of ``bucket`` (an empty table for an empty bucket).

        With ``verify`` (the default) every part file's SHA-256 is checked
        against the manifest; row counts and schemas are always checked.
        Mismatches raise :class:`~atoll.errors.IntegrityError`.
        """
        self._check_bucket(bucket)
        names = self._columns(columns)
        entry = self._entries.get(bucket)
        if entry is None:
            empty = self.schema.empty_table()
            return empty if names is None else empty.select(names)
        tables = [self._read_part(part, names, verify) for part in entry.files]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def iter_buckets(
        self, columns: Sequence[str] | None = None, *, verify: bool = True
    ) -> Iterator[tuple[int, pa.Table]]:
        """Stream ``(bucket, rows)`` over the non-empty buckets, one bucket in memory at a time."""
        names = self._columns(columns)
        for bucket in self.buckets():
            yield bucket, self.read_bucket(bucket, names, verify=verify)

    def verify(self) -> None:
        """Check every file's hash, row count and schema, and every row's bucket.

        Raises :class:`~atoll.errors.IntegrityError` at the first problem;
        returns nothing when the dataset is intact.
        """
        fn = self.bucket_function
        seen = 0
        for entry in self.manifest.buckets:
            for part in entry.files:
                table = self._read_part(part, [self.id_column], verify=True)
                column = table.column(self.id_column)
                path = self.path / part.path
                if column.null_count:
                    first = int(pc.index(pc.is_null(column), True).as_py())
                    raise IntegrityError(f"{path}: row {first + 1} has a null identifier")
                assigned = fn.assign_arrow(column)
                wrong = np.flatnonzero(assigned != entry.bucket)
                if wrong.size:
                    first = int(wrong[0])
                    raise IntegrityError(
                        f"{path}: row {first + 1} belongs in bucket {int(assigned[first])}, "
                        f"not {entry.bucket} ({wrong.size} misplaced rows in this file)"
                    )
                seen += table.num_rows
        if seen != self.num_rows:
            raise IntegrityError(
                f"{self.path}: files hold {seen} rows, manifest says {self.num_rows}"
            )

    # ------------------------------------------------------------------ appending

    def append(
        self,
        table_or_batches: DataInput,
        *,
        progress: Progress | None = None,
        now: datetime | None = None,
        source: str | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        compression: str = "zstd",
    ) -> BucketedDataset:
        """Add rows: new part files in the touched buckets only, then a new manifest.

        Files of untouched buckets — and existing files of touched ones — are
        never rewritten. The input must have the dataset's column names and
        types (SchemaError otherwise). If anything fails before the new
        manifest is in place, the new part files are deleted and the dataset
        is unchanged. Returns ``self``, updated.
        """
        stamp = _now(now)
        tables, total, schema = _tables(table_or_batches)
        if schema is not None:
            _conform(schema.empty_table(), self.schema, source, "appended data")
        writer = _PartWriter(
            self.path,
            self.bucket_function,
            self.schema,
            self.id_column,
            source=source,
            buffer_bytes=buffer_bytes,
            compression=compression,
        )
        try:
            for index, table in enumerate(tables):
                writer.add(table, f"appended batch {index + 1}")
                if progress is not None:
                    progress(writer.rows, total)
            writer.flush()
            if not writer.parts:
                return self
            manifest = replace(
                self._manifest,
                buckets=_merge(self._manifest.buckets, writer.parts),
                updated_at=stamp,
            )
            _write_manifest(self.path, manifest)
        except BaseException:
            writer.discard()
            raise
        self._set_manifest(manifest)
        return self
