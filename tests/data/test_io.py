"""CSV/Parquet reading: nothing lost silently, every failure names file, row and column."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atoll.data.io import Format, iter_batches, read_table, write_table
from atoll.data.schema import EXPOSURES, MEMBERS, ORDERS, PINGS, STRING_LIST, UNIVERSE
from atoll.errors import ConfigError, InputError, SchemaError

ORDERS_CSV = (
    "order_id,order_time,amount,product,channel,phone\n"
    "o1,2024-03-01 10:00:00,199.90,lipstick,tmall,13800138000\n"
    "o2,2024-03-01T12:00:00+08:00,59.00,mask,jd,13900139000\n"
    "o3,2024-03-02,0.01,mask,store,13700137000\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _located(exc: InputError, path: Path, row: int | None, column: str | None) -> None:
    assert exc.source == str(path)
    assert exc.row == row
    assert exc.column == column
    assert str(path) in str(exc)


def test_reads_orders_csv_to_canonical_types(tmp_path: Path) -> None:
    path = _write(tmp_path, "orders.csv", ORDERS_CSV)
    table = read_table(path, ORDERS)
    assert table.num_rows == 3
    assert table["amount"].to_pylist()[0] == Decimal("199.90")
    assert table.schema == ORDERS.schema.remove(ORDERS.schema.get_field_index("member_id"))


def test_identifiers_keep_leading_zeros(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "members.csv",
        "member_id,phone,imei,zip\n0001234,013800138000,012345678901234,010000\n0099,,,\n",
    )
    for spec in (None, MEMBERS):
        table = read_table(path, spec)
        assert table["member_id"].to_pylist() == ["0001234", "0099"]
        assert table["phone"].to_pylist() == ["013800138000", None]
        assert table["imei"].to_pylist() == ["012345678901234", None]
        assert table["zip"].to_pylist() == ["010000", None]  # extra columns stay text


@pytest.mark.parametrize(
    ("name", "text", "spec", "row", "column", "fragment"),
    [
        (
            "bad_enum.csv",
            "event_id,event_time,event_type,campaign_id,channel,device_id\n"
            "e1,2024-03-01 10:00:00,impression,c1,ch,d1\n"
            "e2,2024-03-01 10:00:00,view,c1,ch,d2\n",
            EXPOSURES,
            2,
            "event_type",
            "not one of click, impression",
        ),
        (
            "bad_time.csv",
            ORDERS_CSV + "o4,2024/03/05 10:00,1.00,p,c,13800138000\n",
            ORDERS,
            4,
            "order_time",
            "not an ISO 8601 timestamp",
        ),
        (
            "negative.csv",
            ORDERS_CSV.replace("59.00", "-59.00"),
            ORDERS,
            2,
            "amount",
            "must be >= 0",
        ),
        (
            "lat.csv",
            "device_id,ts,lat,lon\n"
            "d1,2024-03-01 10:00:00,31.2,121.5\n"
            "d2,2024-03-01 10:00:00,131.2,121.5\n",
            PINGS,
            2,
            "lat",
            "must be between -90 and 90",
        ),
    ],
)
def test_bad_values_name_file_row_and_column(
    tmp_path: Path,
    name: str,
    text: str,
    spec: object,
    row: int,
    column: str,
    fragment: str,
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(InputError) as info:
        read_table(path, spec)  # type: ignore[arg-type]
    _located(info.value, path, row, column)
    assert fragment in info.value.reason
    assert "1 row fails" in info.value.reason


def test_missing_column_is_a_schema_error_naming_the_file(tmp_path: Path) -> None:
    text = "order_id,order_time,product,channel,phone\no1,2024-03-01,p,c,13800138000\n"
    path = _write(tmp_path, "orders.csv", text)
    with pytest.raises(SchemaError) as info:
        read_table(path, ORDERS)
    _located(info.value, path, None, "amount")


def test_malformed_rows_are_counted_and_never_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", "a,b,c\n1,2,3\n4,secret13800138000,6,7\n8,9\n")
    with pytest.raises(InputError) as info:
        read_table(path)
    _located(info.value, path, 2, None)
    assert "expected 3 fields, got 4" in info.value.reason
    assert "2 malformed rows" in info.value.reason
    assert "13800138000" not in str(info.value)


def test_quoted_newlines_and_blank_lines_keep_row_numbers(tmp_path: Path) -> None:
    text = 'a,b\n1,"multi\nline"\n\n2,x\n3,y,z\n'
    path = _write(tmp_path, "q.csv", text)
    with pytest.raises(InputError) as info:
        read_table(path)
    assert info.value.row == 3  # the third record; blank lines are not rows


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="not a regular file"):
        read_table(tmp_path)
    empty = _write(tmp_path, "empty.csv", "")
    with pytest.raises(InputError, match="no header"):
        read_table(empty)
    dup = _write(tmp_path, "dup.csv", "a,a\n1,2\n")
    with pytest.raises(SchemaError) as info:
        read_table(dup)
    assert info.value.column == "a"
    fake = _write(tmp_path, "fake.parquet", "not parquet at all")
    with pytest.raises(InputError, match="Parquet"):
        read_table(fake)
    with pytest.raises(ConfigError, match="suffix"):
        read_table(_write(tmp_path, "data.txt", "a\n1\n"))
    with pytest.raises(ConfigError, match="unknown format"):
        read_table(empty, fmt="xlsx")


def test_encodings(tmp_path: Path) -> None:
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("member_id,phone,name\n1,13800138000,张三\n".encode("gbk"))
    with pytest.raises(InputError) as info:
        read_table(gbk)
    assert (info.value.row, info.value.column) == (1, "name")
    assert "encoding" in info.value.reason
    assert read_table(gbk, MEMBERS, encoding="gbk")["name"].to_pylist() == ["张三"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfmember_id,phone\n1,2\n")
    assert read_table(bom, MEMBERS).column_names == ["member_id", "phone"]


def test_tsv_gzip_and_fmt_override(tmp_path: Path) -> None:
    tsv = _write(tmp_path, "m.tsv", "member_id\tphone\n01\t02\n")
    assert read_table(tsv, MEMBERS)["phone"].to_pylist() == ["02"]
    gz = tmp_path / "m.csv.gz"
    gz.write_bytes(gzip.compress(b"member_id,phone\n01,02\n"))
    assert read_table(gz, MEMBERS)["member_id"].to_pylist() == ["01"]
    odd = _write(tmp_path, "m.dat", "member_id,phone\n01,02\n")
    assert read_table(odd, MEMBERS, fmt=Format.CSV).num_rows == 1


def test_column_types_for_extra_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.csv", "device_id,interests,age\nd1,beauty|travel,31\nd2,,x\n")
    with pytest.raises(InputError) as info:
        read_table(path, UNIVERSE, column_types={"age": pa.int64()})
    _located(info.value, path, 2, "age")
    path = _write(tmp_path, "u.csv", "device_id,interests,age\nd1,beauty|travel,31\nd2,,40\n")
    table = read_table(path, UNIVERSE, column_types={"interests": STRING_LIST, "age": pa.int64()})
    assert table["interests"].to_pylist() == [["beauty", "travel"], None]
    assert table["age"].to_pylist() == [31, 40]
    with pytest.raises(ConfigError, match="canonical type"):
        read_table(path, UNIVERSE, column_types={"device_id": pa.int64()})


def test_iter_batches_numbers_rows_from_the_start_of_the_file(tmp_path: Path) -> None:
    rows = [f"o{i},2024-03-01 10:00:00,{i}.00,p,c,1380013{i:04d}" for i in range(250)]
    rows[203] = rows[203].replace("203.00", "-203.00")
    path = _write(tmp_path, "orders.csv", "order_id,order_time,amount,product,channel,phone\n")
    path.write_text(path.read_text() + "\n".join(rows) + "\n")
    batches = iter_batches(path, ORDERS, batch_rows=64)
    assert [next(batches).num_rows for _ in range(3)] == [64, 64, 64]
    with pytest.raises(InputError) as info:
        next(batches)
    _located(info.value, path, 204, "amount")


def test_iter_batches_matches_read_table(tmp_path: Path) -> None:
    path = _write(tmp_path, "orders.csv", ORDERS_CSV)
    whole = read_table(path, ORDERS)
    for source in (path, write_table(whole, tmp_path / "orders.parquet")):
        batches = list(iter_batches(source, ORDERS, batch_rows=2))
        assert [b.num_rows for b in batches] == [2, 1]
        assert pa.Table.from_batches(batches).equals(whole)
    with pytest.raises(ConfigError):
        next(iter_batches(path, batch_rows=0))


def test_write_read_round_trip(tmp_path: Path) -> None:
    orders = read_table(_write(tmp_path, "orders.csv", ORDERS_CSV), ORDERS)
    for name in ("out.csv", "out.parquet", "out.tsv"):
        path = write_table(orders, tmp_path / name)
        assert read_table(path, ORDERS).equals(orders)
    assert not list(tmp_path.glob(".*tmp*"))
    universe = pa.table({"device_id": ["d"], "tags": pa.array([["a", "b"]])})
    path = write_table(universe, tmp_path / "u.csv")
    back = read_table(path, UNIVERSE, column_types={"tags": STRING_LIST})
    assert back["tags"].to_pylist() == [["a", "b"]]
    clash = pa.table({"device_id": ["d", "e"], "tags": pa.array([["a"], ["b|c"]])})
    with pytest.raises(InputError) as info:
        write_table(clash, tmp_path / "clash.csv")
    assert (info.value.row, info.value.column) == (2, "tags")
    assert not (tmp_path / "clash.csv").exists()


def test_parquet_typed_identifiers_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "members.parquet"
    pq.write_table(pa.table({"member_id": [1, 2], "phone": ["1", None]}), path)
    with pytest.raises(SchemaError) as info:
        read_table(path, MEMBERS)
    assert info.value.column == "member_id"
    assert "leading zeros" in info.value.reason


def test_files_without_rows_still_have_their_columns_checked(tmp_path: Path) -> None:
    header_only = _write(tmp_path, "orders.csv", "order_id,order_time,product,channel,phone\n")
    with pytest.raises(SchemaError) as info:
        list(iter_batches(header_only, ORDERS))
    assert info.value.column == "amount"
    good = _write(tmp_path, "members.csv", "member_id,phone\n")
    assert list(iter_batches(good, MEMBERS)) == []
    assert read_table(good, MEMBERS).num_rows == 0
    empty_parquet = tmp_path / "e.parquet"
    pq.write_table(pa.table({"member_id": pa.array([], pa.string())}), empty_parquet)
    with pytest.raises(SchemaError) as info:
        list(iter_batches(empty_parquet, MEMBERS))
    assert info.value.column == "phone"


def test_header_names_are_trimmed(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.csv", " member_id , phone\n01,02\n")
    assert read_table(path, MEMBERS).column_names == ["member_id", "phone"]
    assert pa.Table.from_batches(list(iter_batches(path, MEMBERS))).column_names == [
        "member_id",
        "phone",
    ]
    with pytest.raises(SchemaError, match="more than once"):
        read_table(_write(tmp_path, "d.csv", "phone,phone \n1,2\n"))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_table_writer_streams_and_replaces_atomically(tmp_path: Path, suffix: str) -> None:
    from atoll.data.io import TableWriter

    target = tmp_path / f"out{suffix}"
    first = pa.table({"id": ["007", "008"], "tags": [["a", "b"], []]})
    second = pa.table({"id": ["009"], "tags": [["c"]]})
    with TableWriter(target) as writer:
        writer.write(first)
        writer.write(second.to_batches()[0])
        assert not target.exists()  # nothing visible until close
    assert writer.rows == 3
    back = read_table(target, column_types={"tags": pa.list_(pa.string())})
    assert back["id"].to_pylist() == ["007", "008", "009"]
    assert back["tags"].to_pylist()[0] == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_table_writer_aborts_on_error_and_rejects_schema_drift(tmp_path: Path) -> None:
    from atoll.data.io import TableWriter

    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous")

    def write_two() -> None:
        with TableWriter(target) as writer:
            writer.write(pa.table({"id": ["1"]}))
            writer.write(pa.table({"id": [1]}))

    with pytest.raises(SchemaError, match=r"out\.parquet"):
        write_two()
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    with pytest.raises(ConfigError, match="nothing was written"):
        TableWriter(tmp_path / "empty.csv").close()
