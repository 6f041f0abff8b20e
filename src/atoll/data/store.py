"""The DuckDB store: Atoll's embedded SQL engine, and its only ``duckdb`` import.

Why: joins, group-bys and window functions over Arrow tables and Parquet
folders are what SQL is for, and DuckDB runs them in-process with no server
(the embedded workspace database of ARCHITECTURE "Storage and services").
Keeping DuckDB behind this thin wrapper means one place to

* bind parameters (values never reach SQL text: ``query(sql, params)``);
* return Arrow tables, the currency of the rest of Atoll;
* map DuckDB's exceptions to :class:`~atoll.errors.DataError`, once;
* swap or upgrade the engine.

``Store()`` is in memory; ``Store(path)`` opens (or creates) the workspace's
database file. Registered Arrow tables and Parquet files are views that live
as long as the store is open; use ``execute("CREATE TABLE t AS ...")`` to
persist rows into the database file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq

from atoll.data.io import Format, read_table
from atoll.errors import ConfigError, DataError

__all__ = ["Params", "Store"]

#: Bound SQL parameters: positional (``?``) or named (``$name``).
Params = Sequence[Any] | Mapping[str, Any] | None

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _sql_error(exc: Exception) -> DataError:
    """The one mapping of DuckDB's exceptions into Atoll's tree."""
    return DataError(f"SQL failed ({type(exc).__name__}): {exc}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"table name must be a letter or '_' followed by letters, digits or '_', got {name!r}"
        )
    return name


class Store:
    """A DuckDB connection that speaks Arrow and raises Atoll errors.

    ``path`` ``None`` is an in-memory database; otherwise the database file
    (created if missing). ``threads`` caps DuckDB's worker threads and
    ``memory_limit`` (e.g. ``"2GB"``) its memory; both default to DuckDB's.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.path: Path | None = None if path is None else Path(path)
        config: dict[str, Any] = {}
        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise ConfigError(f"threads must be a positive integer, got {threads!r}")
            config["threads"] = threads
        if memory_limit is not None:
            config["memory_limit"] = memory_limit
        database = ":memory:" if self.path is None else str(self.path)
        try:
            self._con: Any = duckdb.connect(database, read_only=read_only, config=config)
        except duckdb.Error as exc:
            raise DataError(f"cannot open database {database}: {exc}") from exc
        self._registered: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._con is not None:
            self._con.close()
            self._con = None
            self._registered.clear()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._con is None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> Any:
        if self._con is None:
            raise DataError("the store is closed")
        return self._con

    # ------------------------------------------------------------------ data in

    def register(
        self,
        name: str,
        table_or_path: pa.Table | pa.RecordBatch | pa_ds.Dataset | str | os.PathLike[str],
    ) -> None:
        """Make an Arrow table, an Arrow dataset or a file/folder queryable as ``name``.

        A Parquet file or a folder of Parquet files (e.g. a bucketed dataset)
        is registered lazily as an Arrow dataset, so that DuckDB reads only
        the columns and row groups a query needs; a CSV file is read with
        :func:`atoll.data.io.read_table` (all text). Replaces an earlier
        registration of the same name.
        """
        _check_name(name)
        con = self._connection()
        source: Any
        if isinstance(table_or_path, pa.RecordBatch):
            source = pa.Table.from_batches([table_or_path])
        elif isinstance(table_or_path, pa.Table | pa_ds.Dataset):
            source = table_or_path
        elif isinstance(table_or_path, str | os.PathLike):
            source = self._open_path(Path(table_or_path))
        else:
            raise ConfigError(
                f"cannot register a {type(table_or_path).__name__}; "
                "pass an Arrow table or dataset, or a path"
            )
        try:
            if name in self._registered:
                con.unregister(name)
            con.register(name, source)
        except duckdb.Error as exc:
            raise DataError(f"cannot register {name!r}: {exc}") from exc
        self._registered.add(name)

    @staticmethod
    def _open_path(path: Path) -> Any:
        if path.is_dir():
            try:
                return pa_ds.dataset(
                    str(path),
                    format="parquet",
                    partitioning="hive",
                    ignore_prefixes=[".", "_", "manifest"],
                )
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{path}: cannot open as a Parquet folder ({exc})") from exc
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] in (".parquet", ".pq"):
            if not path.is_file():
                raise DataError(f"{path}: file not found")
            return pa_ds.dataset(str(path), format="parquet")
        return read_table(path, fmt=Format.CSV if ".csv" in suffixes else None)

    def unregister(self, name: str) -> None:
        """Forget a registration made by :meth:`register`."""
        con = self._connection()
        if name not in self._registered:
            raise ConfigError(f"{name!r} is not registered")
        con.unregister(name)
        self._registered.discard(name)

    # ------------------------------------------------------------------ SQL

    @staticmethod
    def _check_params(sql: str, params: Params) -> None:
        if not isinstance(sql, str):
            raise ConfigError("sql must be a string")
        if isinstance(params, str | bytes):
            raise ConfigError("params must be a sequence or a mapping, not a string")

    def _relation(self, sql: str, params: Params) -> Any:
        """A lazy DuckDB relation for a query (``None`` for statements without rows)."""
        con = self._connection()
        self._check_params(sql, params)
        try:
            return con.sql(sql) if params is None else con.sql(sql, params=params)
        except duckdb.Error as exc:
            raise _sql_error(exc) from exc

    def query(self, sql: str, params: Params = None) -> pa.Table:
        """Run a query with bound ``params`` and return its result as an Arrow table."""
        relation = self._relation(sql, params)
        if relation is None:
            return pa.table({})
        try:
            table: pa.Table = relation.to_arrow_table()
        except duckdb.Error as exc:
            raise _sql_error(exc) from exc
        return table

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement (DDL, INSERT, ...) with bound ``params``; discard any result."""
        con = self._connection()
        self._check_params(sql, params)
        try:
            if params is None:
                con.execute(sql)
            else:
                con.execute(sql, params)
        except duckdb.Error as exc:
            raise _sql_error(exc) from exc

    def write_parquet(self, sql: str, path: str | os.PathLike[str], params: Params = None) -> Path:
        """Write a query's result to a Parquet file (atomically: temp file, then rename).

        The result streams out of DuckDB batch by batch, so it need not fit in
        memory. Returns the path.
        """
        target = Path(path)
        relation = self._relation(sql, params)
        if relation is None:
            raise ConfigError("write_parquet needs a query that returns rows")
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            reader = relation.to_arrow_reader()
            with pq.ParquetWriter(str(tmp), reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
            os.replace(tmp, target)
        except duckdb.Error as exc:
            tmp.unlink(missing_ok=True)
            raise _sql_error(exc) from exc
        except (pa.ArrowException, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{target}: cannot write Parquet ({exc})") from exc
        return target

    def table_names(self) -> list[str]:
        """Names of the tables and views visible in the store (registered ones included)."""
        table = self.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'main' ORDER BY table_name"
        )
        names: list[str] = table.column(0).to_pylist()
        return names
