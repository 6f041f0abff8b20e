"""PSI jobs end to end in memory: normalization, buckets, waterfall, labels, guards."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import (
    ConfigError,
    IdentifierError,
    LocalProtocolError,
    RemoteProtocolError,
    SchemaError,
)
from atoll.execution import make_executor
from atoll.ids.normalize import normalize_value
from atoll.matching import (
    OutputGuardError,
    PsiOptions,
    check_params,
    psi_party,
    run_local,
    write_outcome,
)
from atoll.matching.session import Traffic

LEFT = pa.table(
    {
        "phone": ["13800138000", "+86 138-0013-8001", "bad", "13800138002", "13800138002", None],
        "oaid": ["a" * 16, "b" * 16, "c" * 16, "d" * 16, "e" * 16, "f" * 16],
        "name": ["m0", "m1", "m2", "m3", "m4", "m5"],
    }
)
RIGHT = pa.table(
    {
        "phone": ["13800138001", "13800138002", "13900000000", "13800138001"],
        "oaid": ["x" * 16, "y" * 16, "c" * 16, "f" * 16],
        "age": [30, None, 40, 31],
        "city": ["sh", "bj", None, "gz"],
    }
)


def _run(left: pa.Table, right: pa.Table, cols: str, opts: PsiOptions, **kw: Any) -> Any:
    recv_opts = opts if opts.labels is None else PsiOptions(**{**_fields(opts), "labels": ()})
    a = psi_party(left, cols, role="receiver", options=recv_opts, source="left.csv")
    b = psi_party(right, cols, role="sender", options=opts, source="right.csv")
    return run_local(a, b, **kw)


def _fields(opts: PsiOptions) -> dict[str, Any]:
    return {f: getattr(opts, f) for f in opts.__dataclass_fields__ if f != "extra_guards"}


def test_single_id_reports_invalid_and_duplicates() -> None:
    mine, theirs = _run(LEFT, RIGHT, "phone", PsiOptions(buckets=4))
    assert mine.table.column("name").to_pylist() == ["m1", "m3", "m4"]
    assert mine.table.column("matched_by").to_pylist() == ["phone"] * 3
    stage = mine.stages[0]
    assert (stage.invalid.invalid, stage.duplicates, stage.unique) == (2, 1, 3)
    assert stage.matched_ids == 2
    assert stage.matched_rows == 3
    assert theirs.table is None
    assert theirs.stages[0].duplicates == 1
    assert mine.bytes_sent == theirs.bytes_received > 0
    assert mine.bytes_received == theirs.bytes_sent > 0


def test_waterfall_matches_each_row_once_at_its_highest_priority() -> None:
    mine, theirs = _run(LEFT, RIGHT, "phone,oaid", PsiOptions(buckets=3, reveal="both"))
    got = dict(
        zip(mine.table["name"].to_pylist(), mine.table["matched_by"].to_pylist(), strict=True)
    )
    assert got == {"m1": "phone", "m2": "oaid", "m3": "phone", "m4": "phone", "m5": "oaid"}
    assert mine.per_id_type() == {"phone": 3, "oaid": 2}
    # the sender's rows: 0,3 (phone 13800138001), 1 (phone 13800138002), 2 and 3 via oaid
    assert theirs.table["matched_by"].to_pylist() == ["phone", "phone", "oaid", "phone"]


def test_labels_are_attached_with_their_types() -> None:
    mine, theirs = _run(LEFT, RIGHT, "phone", PsiOptions(buckets=2, labels=("age", "city")))
    assert mine.protocol == "labeled-psi"
    rows = mine.table.select(["name", "age", "city"]).to_pylist()
    assert rows == [
        {"name": "m1", "age": 30, "city": "sh"},
        {"name": "m3", "age": None, "city": "bj"},
        {"name": "m4", "age": None, "city": "bj"},
    ]
    assert mine.table.schema.field("age").type == pa.int64()
    assert theirs.table is None


def test_label_name_collisions_are_renamed() -> None:
    right = RIGHT.append_column("name", pa.array(["p0", "p1", "p2", "p3"]))
    mine, _ = _run(LEFT, right, "phone", PsiOptions(buckets=1, labels=("name",)))
    assert mine.table["label_name"].to_pylist() == ["p0", "p1", "p1"]


def test_cardinality_only() -> None:
    mine, theirs = _run(LEFT, RIGHT, "phone", PsiOptions(cardinality_only=True, reveal="both"))
    assert mine.table is None
    assert mine.cardinality == 2
    assert theirs.cardinality == 2
    with pytest.raises(ConfigError, match="one ID column"):
        psi_party(LEFT, "phone,oaid", role="receiver", options=PsiOptions(cardinality_only=True))


def test_empty_sides() -> None:
    empty = LEFT.slice(0, 0)
    mine, _ = _run(empty, RIGHT, "phone", PsiOptions(buckets=4))
    assert mine.table.num_rows == 0
    assert mine.cardinality == 0
    mine, _ = _run(LEFT, RIGHT.slice(0, 0), "phone", PsiOptions(buckets=4))
    assert mine.table.num_rows == 0


def test_process_executor_gives_the_same_answer(tmp_path: Any) -> None:
    with make_executor("local", workers=2) as ex:
        mine, _ = _run(LEFT, RIGHT, "phone,oaid", PsiOptions(buckets=4), executor=ex)
    assert sorted(mine.table["name"].to_pylist()) == ["m1", "m2", "m3", "m4", "m5"]
    out = tmp_path / "o.parquet"
    write_outcome(mine, out)
    assert pa.parquet.read_table(out).num_rows == 5  # type: ignore[attr-defined]


def test_output_guard_and_audit_events() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(OutputGuardError, match="below the minimum of 5"):
        _run(
            LEFT,
            RIGHT,
            "phone",
            PsiOptions(min_cardinality=5),
            audit=lambda e, f: events.append((e, f)),
        )
    assert [e for e, _ in events] == ["start", "stage", "error"]
    assert "OutputGuardError" in events[-1][1]["type"]
    assert "13800138001" not in repr(events)  # no row data in audit lines


def test_parameter_mismatch_is_refused() -> None:
    a = psi_party(LEFT, "phone", role="receiver", options=PsiOptions(buckets=4))
    b = psi_party(RIGHT, "phone", role="sender", options=PsiOptions(buckets=8))
    with pytest.raises(RemoteProtocolError, match="peer's 'buckets' is 8, ours is 4"):
        run_local(a, b)
    a = psi_party(LEFT, "phone,oaid", role="receiver")
    b = psi_party(RIGHT, "phone", role="sender")
    with pytest.raises(RemoteProtocolError, match="stages"):
        run_local(a, b)
    with pytest.raises(RemoteProtocolError, match="role"):
        check_params({"role": "receiver"}, {"role": "receiver"})


def test_bad_columns_and_types() -> None:
    with pytest.raises(SchemaError, match="no ID column 'mobile'"):
        psi_party(LEFT, "mobile", role="receiver", id_types="phone")
    with pytest.raises(ConfigError, match="--id-type"):
        psi_party(LEFT, "name", role="receiver")
    with pytest.raises(SchemaError, match="no label column"):
        psi_party(RIGHT, "phone", role="sender", options=PsiOptions(labels=("income",)))
    with pytest.raises(ConfigError, match="cannot be combined"):
        PsiOptions(labels=("age",), reveal="both")


def test_sessions_refuse_partial_results() -> None:
    a = psi_party(LEFT, "phone", role="receiver", options=PsiOptions(buckets=2))
    b = psi_party(RIGHT, "phone", role="sender", options=PsiOptions(buckets=2))
    a.agree(b.params())
    b.agree(a.params())
    sa, sb = next(a.sessions()), next(b.sessions())
    from atoll.transport.memory import run_pair

    run = run_pair(sa.machine(0), sb.machine(0))
    sa.accept(0, run.a_result, Traffic(run.bytes_a_to_b, run.bytes_b_to_a))
    with pytest.raises(LocalProtocolError, match="accepted twice"):
        sa.accept(0, run.a_result)
    assert sa.pending() == [1]
    with pytest.raises(LocalProtocolError, match="never finished"):
        sa.finish()
    with pytest.raises(LocalProtocolError, match="unfinished stages"):
        a.finish()


# -- property: the waterfall equals a reference pandas waterfall join ---------

_phones = ["13800138000", "+8613800138001", "138 0013 8002", "13800138003", "12345", "", "📞", "ｘ"]
_oaids = ["0" * 16, "1" * 16, "2" * 16, "not an oaid!", "3" * 16]


def _norm(value: str | None, kind: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_value(value, kind)
    except IdentifierError:
        return None


def _reference(left: pd.DataFrame, right: pd.DataFrame, kinds: list[str]) -> dict[int, str]:
    matched: dict[int, str] = {}
    for kind in kinds:
        theirs = {v for v in (_norm(x, kind) for x in right[kind]) if v is not None}
        for i, raw in enumerate(left[kind]):
            if i not in matched and _norm(raw, kind) in theirs:
                matched[i] = kind
    return matched


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([*_phones, None]), st.sampled_from(_oaids)), max_size=12),
    st.lists(st.tuples(st.sampled_from(_phones), st.sampled_from([*_oaids, None])), max_size=12),
    st.integers(1, 5),
)
def test_property_waterfall_equals_reference_join(
    left_rows: list[tuple[str | None, str]],
    right_rows: list[tuple[str, str | None]],
    buckets: int,
) -> None:
    left = pd.DataFrame(left_rows, columns=["phone", "oaid"], dtype=object)
    right = pd.DataFrame(right_rows, columns=["phone", "oaid"], dtype=object)
    schema = pa.schema([("phone", pa.string()), ("oaid", pa.string())])
    lt = pa.Table.from_pandas(left, schema=schema, preserve_index=False)
    rt = pa.Table.from_pandas(right, schema=schema, preserve_index=False)
    mine, _ = _run(
        lt,
        rt.append_column("row", pa.array(range(len(rt)))),
        "phone,oaid",
        PsiOptions(buckets=buckets),
    )
    expected = _reference(left, right, ["phone", "oaid"])
    rows = mine.matched_rows.tolist()
    assert dict(zip(rows, mine.table["matched_by"].to_pylist(), strict=True)) == expected


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=15),
    st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=15),
    st.sampled_from(["receiver", "both"]),
)
def test_property_psi_equals_plain_intersection_with_garbage(
    left: list[str | None], right: list[str | None], reveal: str
) -> None:
    lt = pa.table({"member_id": pa.array(left, type=pa.string())})
    rt = pa.table({"member_id": pa.array(right, type=pa.string())})
    mine, theirs = _run(lt, rt, "member_id", PsiOptions(buckets=3, reveal=reveal))
    ln = [_norm(v, "member_id") for v in left]
    rn = [_norm(v, "member_id") for v in right]
    rset = {v for v in rn if v is not None}
    lset = {v for v in ln if v is not None}
    assert mine.matched_rows.tolist() == [i for i, v in enumerate(ln) if v in rset]
    assert mine.cardinality == len(lset & rset)
    if reveal == "both":
        assert theirs.matched_rows.tolist() == [j for j, v in enumerate(rn) if v in lset]
