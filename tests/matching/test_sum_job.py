"""Intersection-sum jobs: decimals, duplicates, several columns, bad values."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError, InputError, RemoteProtocolError, SchemaError
from atoll.matching import OutputGuardError, run_local
from atoll.matching.sum_job import SumOptions, parse_amounts, sum_party

ORDERS = pa.table(
    {
        "phone": ["13800138000", "13800138001", "+86 13800138001", "13800138003", "junk"],
        "amount": ["10.50", "3.25", "1", "7.00", "5"],
        "items": [1, 2, 3, 4, 5],
    }
)
EXPOSED = pa.table({"phone": ["13800138001", "13800138003", "13900000000"]})


def _run(values: pa.Table, ids: pa.Table, cols: str, opts: SumOptions | None = None) -> Any:
    o = opts or SumOptions(buckets=2)
    a = sum_party(values, "phone", role="values", value_columns=cols, options=o, source="orders")
    b = sum_party(ids, "phone", role="ids", options=o)
    return run_local(a, b)


def test_sums_duplicates_added_and_both_learn() -> None:
    mine, theirs = _run(ORDERS, EXPOSED, "amount,items")
    assert mine.cardinality == theirs.cardinality == 2
    assert mine.to_dict()["sums"] == {"amount": "11.25", "items": "9.00"}
    assert theirs.to_dict()["sums"] == mine.to_dict()["sums"]
    assert mine.stage.duplicates == 1
    assert mine.stage.invalid.invalid == 1
    assert theirs.stage.peer_unique == 3  # values party's unique valid IDs


def test_parse_amounts_is_exact_and_strict() -> None:
    got = parse_amounts(pa.array(["0.1", "2", " 3.50 "]), decimals=2)
    assert got.tolist() == [10, 200, 350]
    assert parse_amounts(pa.array([0.1, 2.25]), decimals=2).tolist() == [10, 225]
    assert parse_amounts(pa.array([7]), decimals=0).tolist() == [7]
    for bad, msg in [
        (["1.234"], "more than 2 decimal places"),
        (["-1"], "negative"),
        (["abc"], "not a number"),
        ([None], "missing"),
        (["1e30"], "out of range"),
        (["nan"], "finite"),
    ]:
        with pytest.raises(InputError, match=msg) as info:
            parse_amounts(
                pa.array(bad, type=pa.string()), decimals=2, source="o.csv", name="amount"
            )
        assert info.value.row == 1
        assert info.value.column == "amount"
    with pytest.raises(SchemaError):
        parse_amounts(pa.array([True]), decimals=2)


def test_bad_values_name_the_row() -> None:
    bad = ORDERS.set_column(1, "amount", pa.array(["1", "2", "-3", "4", "5"]))
    with pytest.raises(InputError, match="orders row 3, column 'amount': negative"):
        _run(bad, EXPOSED, "amount")


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="one ID column"):
        sum_party(ORDERS, "phone,oaid", role="values", value_columns="amount")
    with pytest.raises(SchemaError, match="no value column"):
        sum_party(ORDERS, "phone", role="values", value_columns="price")
    with pytest.raises(ConfigError, match="at least one value column"):
        sum_party(ORDERS, "phone", role="values")
    a = sum_party(
        ORDERS, "phone", role="values", value_columns="amount", options=SumOptions(buckets=2)
    )
    b = sum_party(EXPOSED, "phone", role="ids", options=SumOptions(buckets=3))
    with pytest.raises(RemoteProtocolError, match="buckets"):
        run_local(a, b)


def test_guard() -> None:
    with pytest.raises(OutputGuardError):
        _run(ORDERS, EXPOSED, "amount", SumOptions(buckets=1, min_cardinality=3))


@settings(max_examples=8, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.decimals(0, 100, places=2, allow_nan=False)), max_size=12
    ),
    st.lists(st.integers(0, 30), max_size=12),
)
def test_property_equals_plain_sum(rows: list[tuple[int, Decimal]], ids: list[int]) -> None:
    values = pa.table(
        {"phone": [f"138{i:08d}" for i, _ in rows], "amount": [str(v) for _, v in rows]},
        schema=pa.schema([("phone", pa.string()), ("amount", pa.string())]),
    )
    others = pa.table({"phone": pa.array([f"138{i:08d}" for i in ids], type=pa.string())})
    mine, _ = _run(values, others, "amount", SumOptions(buckets=3))
    wanted = set(ids)
    assert mine.cardinality == len({i for i, _ in rows if i in wanted})
    expected = sum((v for i, v in rows if i in wanted), Decimal(0))
    assert Decimal(mine.to_dict()["sums"]["amount"]) == expected


def test_buckets_are_never_decrypted_alone() -> None:
    # Eight buckets for four members: decrypting per bucket would hand both
    # parties single members' spend. The job decrypts the total only.
    events: list[tuple[str, dict[str, Any]]] = []
    o = SumOptions(buckets=8)
    a = sum_party(ORDERS, "phone", role="values", value_columns="amount", options=o)
    b = sum_party(EXPOSED, "phone", role="ids", options=o)
    mine, theirs = run_local(a, b, audit=lambda e, f: events.append((e, f)))
    stages = [f for e, f in events if e == "stage"]
    assert [s["stage"] for s in stages] == [0, 1]
    # After the bucket runs the values party knows no intersection size at all...
    assert stages[0]["values"]["matched_ids"] is None
    assert stages[0]["ids"]["matched_ids"] == 2
    # ...and after the total, both know the total (and nothing per bucket).
    assert stages[1]["values"]["matched_ids"] == stages[1]["ids"]["matched_ids"] == 2
    assert mine.to_dict()["sums"] == theirs.to_dict()["sums"] == {"amount": "11.25"}
    assert mine.stage.buckets == 8
    assert mine.stage.bytes_sent > 0
    assert theirs.stage.bytes_received == mine.stage.bytes_sent
