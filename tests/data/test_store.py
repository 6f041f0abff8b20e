"""The DuckDB store: bound parameters, Arrow results, DuckDB errors mapped once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atoll.data.datasets import BucketedDataset
from atoll.data.store import Store
from atoll.errors import ConfigError, DataError

PEOPLE = pa.table({"id": ["a", "b", "c", "d"], "age": [20, 35, 41, 35]})


def test_query_binds_positional_and_named_parameters() -> None:
    with Store() as store:
        store.register("people", PEOPLE)
        result = store.query("SELECT id FROM people WHERE age = ? ORDER BY id", [35])
        assert isinstance(result, pa.Table)
        assert result["id"].to_pylist() == ["b", "d"]
        named = store.query("SELECT count(*) AS n FROM people WHERE age > $min", {"min": 30})
        assert named.to_pylist() == [{"n": 3}]
        # a value that would be an injection if formatted into SQL is just a value
        hostile = "x' OR '1'='1"
        assert store.query("SELECT * FROM people WHERE id = ?", [hostile]).num_rows == 0


def test_duckdb_errors_become_data_errors() -> None:
    with Store() as store:
        store.register("people", PEOPLE)
        for sql, kind in [
            ("SELECT nope FROM people", "BinderException"),
            ("SELEC 1", "ParserException"),
            ("SELECT * FROM missing_table", "CatalogException"),
            ("SELECT CAST('x' AS INTEGER)", "ConversionException"),
        ]:
            with pytest.raises(DataError, match=kind) as info:
                store.query(sql)
            assert info.value.__cause__ is not None
        with pytest.raises(DataError):
            store.execute("INSERT INTO nowhere VALUES (1)")
        with pytest.raises(ConfigError):
            store.query("SELECT ?", "not-a-sequence")


def test_register_rejects_names_that_are_not_identifiers() -> None:
    with Store() as store:
        with pytest.raises(ConfigError):
            store.register("people; DROP TABLE x", PEOPLE)
        with pytest.raises(ConfigError):
            store.register("people", 42)  # type: ignore[arg-type]


def test_register_replaces_and_unregisters() -> None:
    with Store() as store:
        store.register("t", PEOPLE)
        store.register("t", PEOPLE.slice(0, 1))
        assert store.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 1}]
        store.unregister("t")
        with pytest.raises(DataError):
            store.query("SELECT * FROM t")
        with pytest.raises(ConfigError):
            store.unregister("t")


def test_files_folders_and_write_parquet(tmp_path: Path) -> None:
    parquet = tmp_path / "people.parquet"
    pq.write_table(PEOPLE, parquet)
    csv = tmp_path / "people.csv"
    csv.write_text("id,zip\na,010000\n")
    dataset = BucketedDataset.write(PEOPLE, tmp_path / "ds", id_column="id", buckets=4)
    with Store() as store:
        store.register("p", parquet)
        store.register("c", csv)
        store.register("d", dataset.path)
        assert store.query("SELECT sum(age) AS s FROM p").to_pylist() == [{"s": 131}]
        assert store.query("SELECT zip FROM c").to_pylist() == [{"zip": "010000"}]
        rows = store.query("SELECT id, bucket FROM d ORDER BY id").to_pylist()
        assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
        assert {r["bucket"] for r in rows} == set(dataset.buckets())
        out = store.write_parquet("SELECT id FROM p WHERE age >= ?", tmp_path / "out.parquet", [35])
        assert pq.read_table(out)["id"].to_pylist() == ["b", "c", "d"]
        with pytest.raises(DataError):
            store.write_parquet("SELECT nope FROM p", tmp_path / "bad.parquet")
        assert not (tmp_path / "bad.parquet").exists()
        with pytest.raises(DataError, match="not found"):
            store.register("m", tmp_path / "missing.parquet")


def test_workspace_file_persists_tables_and_lists_names(tmp_path: Path) -> None:
    path = tmp_path / "workspace.duckdb"
    with Store(path, threads=1) as store:
        store.register("people", PEOPLE)
        store.execute("CREATE TABLE adults AS SELECT * FROM people WHERE age > ?", [30])
        assert store.table_names() == ["adults", "people"]
    with Store(path, read_only=True) as store:
        assert store.table_names() == ["adults"]
        assert store.query("SELECT count(*) AS n FROM adults").to_pylist() == [{"n": 3}]


def test_closed_store_raises() -> None:
    store = Store()
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(DataError, match="closed"):
        store.query("SELECT 1")
    with pytest.raises(ConfigError):
        Store(threads=0)
