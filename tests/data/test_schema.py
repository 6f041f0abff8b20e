"""Canonical schemas: casting to canonical types and locating every bad value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.data.schema import (
    EDGES,
    EXPOSURES,
    MEMBERS,
    MONEY,
    ORDERS,
    PINGS,
    POIS,
    SPECS,
    STRING_LIST,
    TIMESTAMP,
    UNIVERSE,
    ColumnSpec,
    ExtraColumns,
    TableSpec,
    convert_column,
    get_spec,
    locate_failures,
    mask_value,
    validate,
)
from atoll.errors import ConfigError, InputError, SchemaError

UTC = dt.UTC


def _orders(**overrides: list[object]) -> pa.Table:
    columns: dict[str, list[object]] = {
        "order_id": ["o1", "o2", "o3"],
        "order_time": ["2024-03-01T10:00:00+08:00", "2024-03-01 10:00:00", "2024-03-02"],
        "amount": ["199.90", "0.5", "10"],
        "product": ["p1", None, "p3"],
        "channel": ["tmall", "jd", "store"],
        "phone": ["13800138000", None, "13900139000"],
        "member_id": [None, "m2", None],
    }
    columns.update(overrides)
    return pa.table({k: pa.array(v) for k, v in columns.items()})


def _error(table: pa.Table, spec: TableSpec, **kw: object) -> InputError:
    with pytest.raises(InputError) as info:
        validate(table, spec, source="orders.csv", **kw)  # type: ignore[arg-type]
    return info.value


def test_orders_cast_to_canonical_types() -> None:
    out = validate(_orders(), ORDERS, source="orders.csv")
    assert out.schema.field("order_time").type == TIMESTAMP
    assert out.schema.field("amount").type == MONEY
    assert out.column_names == [c.name for c in ORDERS.columns]
    times = out["order_time"].to_pylist()
    # +08:00 explicit, naive in Asia/Shanghai, and a bare date at local midnight
    assert times[0] == dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)
    assert times[1] == dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)
    assert times[2] == dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)
    assert out["amount"].to_pylist() == [Decimal("199.90"), Decimal("0.50"), Decimal("10.00")]


def test_naive_timestamps_follow_the_configured_timezone() -> None:
    out = validate(_orders(), ORDERS, source="o", timezone="UTC")
    assert out["order_time"].to_pylist()[1] == dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="timezone"):
        validate(_orders(), ORDERS, source="o", timezone="Mars/Olympus")


def test_negative_amount_names_row_value_and_count() -> None:
    err = _error(_orders(amount=["1", "-2", "-3.5"]), ORDERS)
    assert (err.source, err.row, err.column) == ("orders.csv", 2, "amount")
    assert "-2.00" in str(err)
    assert "2 rows fail" in str(err)


@pytest.mark.parametrize(
    ("amount", "fragment"),
    [
        (["1", "2.001", "3"], "more than 2 decimal places"),
        (["1", "1,000", "3"], "not a decimal number"),
        (["1", "1e3", "3"], "not a decimal number"),
        (["1", "¥5", "3"], "not a decimal number"),
        (["1", "12345678901234567.00", "3"], "does not fit"),
    ],
)
def test_money_never_loses_precision_from_text(amount: list[object], fragment: str) -> None:
    err = _error(_orders(amount=amount), ORDERS)
    assert err.row == 2
    assert fragment in err.reason


def test_money_from_floats_accepts_two_decimals_and_rejects_more() -> None:
    ok = validate(_orders(amount=[19.99, 0.1 + 0.2, 1e6]), ORDERS, source="o")
    assert ok["amount"].to_pylist() == [Decimal("19.99"), Decimal("0.30"), Decimal("1000000.00")]
    err = _error(_orders(amount=[1.0, 2.0, 0.001]), ORDERS)
    assert err.row == 3
    assert "lose precision" in err.reason
    assert _error(_orders(amount=[1.0, float("nan"), 2.0]), ORDERS).row == 2
    trailing = validate(_orders(amount=["1.500", "2", "3"]), ORDERS, source="o")
    assert trailing["amount"][0].as_py() == Decimal("1.50")


def test_bad_timestamps_are_located() -> None:
    err = _error(_orders(order_time=["2024-03-01", "yesterday", "2024-13-01"]), ORDERS)
    assert (err.row, err.column) == (2, "order_time")
    assert "2 rows fail" in str(err)
    # syntactically fine, but no such day: located by bisection
    err = _error(_orders(order_time=["2024-03-01", "2024-03-02", "2023-02-29T10:00:00"]), ORDERS)
    assert err.row == 3
    assert "'2023-02-29T10:00:00'" in str(err)


def test_nonexistent_local_time_is_an_input_error() -> None:
    times = ["2024-03-31 01:30:00", "2024-03-31 02:30:00", "2024-03-31 03:30:00"]
    err = _error(_orders(order_time=times), ORDERS, timezone="Europe/Berlin")
    assert err.row == 2


def test_row_offset_shifts_reported_rows() -> None:
    err = _error(_orders(amount=["1", "2", "-1"]), ORDERS, row_offset=1000)
    assert err.row == 1003


def test_missing_required_column_is_a_schema_error() -> None:
    table = _orders().drop_columns(["amount"])
    with pytest.raises(SchemaError) as info:
        validate(table, ORDERS, source="orders.csv")
    assert info.value.column == "amount"
    assert "orders.csv" in str(info.value)


def test_orders_need_phone_or_member_id_column_and_value() -> None:
    with pytest.raises(SchemaError, match="at least one of"):
        validate(_orders().drop_columns(["phone", "member_id"]), ORDERS, source="o")
    err = _error(_orders(phone=["138", None, None], member_id=[None, "", None]), ORDERS)
    assert err.row == 2
    assert "2 rows fail" in str(err)
    only_member = _orders(member_id=["m1", "m2", "m3"]).drop_columns(["phone"])
    assert validate(only_member, ORDERS, source="o").num_rows == 3


def test_identifiers_must_be_text_and_are_masked() -> None:
    with pytest.raises(SchemaError, match="leading zeros"):
        validate(_orders(phone=[13800138000, None, 1]), ORDERS, source="o")
    members = pa.table({"member_id": ["007", None], "phone": ["13800138000", None]})
    err = _error(members, MEMBERS)
    assert err.row == 2
    assert "13800138000" not in str(err)
    bad_ids = pa.table({"member_id": ["13800138000"], "phone": [None]})
    assert validate(bad_ids, MEMBERS, source="m")["member_id"].to_pylist() == ["13800138000"]


def test_mask_value() -> None:
    assert mask_value("13800138000") == "138****8000"
    assert mask_value("abc") == "***"
    assert mask_value("abcdef") == "a****f"


def test_enumeration_is_normalized_and_checked() -> None:
    base = {
        "event_id": ["e1", "e2", "e3"],
        "event_time": ["2024-01-01T00:00:00Z"] * 3,
        "event_type": [" Click", "IMPRESSION", "view"],
        "campaign_id": ["c"] * 3,
        "channel": ["a"] * 3,
        "device_id": ["d1", "d2", "d3"],
        "cost": [0.01, None, 0.0],
    }
    err = _error(pa.table(base), EXPOSURES)
    assert (err.row, err.column) == (3, "event_type")
    assert "click, impression" in err.reason
    base["event_type"] = [" Click", "IMPRESSION", "click"]
    out = validate(pa.table(base), EXPOSURES, source="e")
    assert out["event_type"].to_pylist() == ["click", "impression", "click"]
    base["cost"] = [0.01, -0.5, None]
    assert _error(pa.table(base), EXPOSURES).column == "cost"


@pytest.mark.parametrize(("lat", "row"), [([0.0, 91.0], 2), (["-90.5", "1"], 1), ([1.0, None], 2)])
def test_coordinates_in_range(lat: list[object], row: int) -> None:
    pings = pa.table(
        {
            "device_id": ["d1", "d2"],
            "ts": ["2024-01-01T00:00:00Z"] * 2,
            "lat": lat,
            "lon": [1.0, 2.0],
        }
    )
    err = _error(pings, PINGS)
    assert (err.row, err.column) == (row, "lat")


def test_forbidden_and_tag_extra_columns() -> None:
    pings = pa.table(
        {"device_id": ["d"], "ts": ["2024-01-01"], "lat": [1.0], "lon": [1.0], "x": [1]}
    )
    with pytest.raises(SchemaError) as info:
        validate(pings, PINGS, source="p")
    assert info.value.column == "x"
    universe = pa.table(
        {
            "device_id": ["d1"],
            "interests": pa.array([["a", "b"]], pa.large_list(pa.large_string())),
            "age": [30],
            "city": pa.array(["sh"]).dictionary_encode(),
        }
    )
    out = validate(universe, UNIVERSE, source="u")
    assert out.schema.field("interests").type == STRING_LIST
    assert out.schema.field("city").type == pa.string()
    assert out.schema.field("age").type == pa.int64()
    with pytest.raises(SchemaError, match="tags must be"):
        validate(universe.append_column("s", pa.array([{"a": 1}])), UNIVERSE, source="u")


def test_members_keep_attributes_and_edges_pois_validate() -> None:
    members = pa.table({"member_id": ["1"], "phone": [None], "vip_level": [3]})
    assert validate(members, MEMBERS, source="m").column_names == [
        "member_id",
        "phone",
        "vip_level",
    ]
    edges = pa.table(
        {
            "id_type_a": ["phone"],
            "id_a": ["13800138000"],
            "id_type_b": ["oaid"],
            "id_b": ["x"],
            "seen_at": [dt.datetime(2024, 1, 1, 8)],
        }
    )
    out = validate(edges, EDGES, source="e")
    assert out["seen_at"].to_pylist() == [dt.datetime(2024, 1, 1, 0, tzinfo=UTC)]
    pois = pa.table(
        {"poi_id": ["p"], "name": ["店"], "category": ["mall"], "lat": [31.2], "lon": [121.5]}
    )
    assert validate(pois, POIS, source="p").num_rows == 1


def test_duplicate_columns_and_unknown_specs() -> None:
    table = pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["b"])], names=["member_id", "member_id"]
    )
    with pytest.raises(SchemaError, match="more than once"):
        validate(table, MEMBERS, source="m")
    assert get_spec("orders") is ORDERS
    assert set(SPECS) == {"members", "orders", "universe", "exposures", "edges", "pings", "pois"}
    with pytest.raises(ConfigError):
        get_spec("nope")
    with pytest.raises(ConfigError):
        ColumnSpec("x", pa.int64(), allowed=frozenset({"a"}))
    with pytest.raises(ConfigError):
        TableSpec("t", (ColumnSpec("a", pa.string()),), ExtraColumns.KEEP, at_least_one_of=("b",))


def test_arrow_typed_inputs() -> None:
    local = dt.datetime(2024, 1, 1, 8, 0, 0, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
    ts_ns = pa.array([local], pa.timestamp("ns", tz="Asia/Shanghai"))
    out = convert_column(ts_ns, TIMESTAMP, source="s", column="c")
    assert out.to_pylist() == [dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC)]
    dates = pa.array([dt.date(2024, 1, 2)])
    assert convert_column(dates, TIMESTAMP, source="s", column="c").to_pylist() == [
        dt.datetime(2024, 1, 1, 16, tzinfo=UTC)
    ]
    assert convert_column(pa.array([None, None]), MONEY, source="s", column="c").null_count == 2
    with pytest.raises(SchemaError):
        convert_column(pa.array([1.5]), TIMESTAMP, source="s", column="c")


def test_convert_column_extra_types() -> None:
    lists = convert_column(pa.array(["a|b", "", None]), STRING_LIST, source="s", column="c")
    assert lists.to_pylist() == [["a", "b"], [], None]
    ints = convert_column(pa.array(["1", " 2 ", None]), pa.int64(), source="s", column="c")
    assert ints.to_pylist() == [1, 2, None]
    bools = convert_column(pa.array(["TRUE", "0"]), pa.bool_(), source="s", column="c")
    assert bools.to_pylist() == [True, False]
    with pytest.raises(InputError) as info:
        convert_column(pa.array(["1", "99999999999999999999"]), pa.int64(), source="s", column="c")
    assert info.value.row == 2
    with pytest.raises(InputError, match="not a number"):
        convert_column(pa.array(["1.5", "nan"]), pa.float64(), source="s", column="c")
    with pytest.raises(ConfigError):
        convert_column(pa.array(["x"]), pa.binary(), source="s", column="c")


@settings(max_examples=60, deadline=None)
@given(
    bad=st.sets(st.integers(min_value=0, max_value=299), max_size=40),
    n=st.integers(min_value=1, max_value=300),
)
def test_locate_failures_finds_exactly_the_bad_elements(bad: set[int], n: int) -> None:
    bad = {i for i in bad if i < n}
    values = pa.array(["x" if i in bad else str(i) for i in range(n)])
    found, truncated = locate_failures(values, lambda v: pa.compute.cast(v, pa.int64()))
    assert found == sorted(bad)
    assert not truncated
    limited, truncated = locate_failures(values, lambda v: pa.compute.cast(v, pa.int64()), limit=1)
    assert truncated == (len(bad) > 1)
    assert limited == sorted(bad)[:1]
