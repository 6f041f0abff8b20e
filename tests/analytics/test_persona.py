"""Persona/TGI: hand-computed known answers, methods.md vectors, properties, parts and executors.

Vectors marked [methods §1.2/§1.4] come from ``shared/reference/methods.md`` (TGI examples
from 61k.com / jiushuyun, and the computed z / Wilson / risk-ratio vector); the small
universe below is computed by hand in the comments.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.analytics.persona import (
    CSV_COLUMNS,
    DimensionCounts,
    PersonaConfig,
    PersonaCounts,
    count_table,
    persona,
    persona_from_counts,
    tgi,
    two_proportion_z,
    wilson_interval,
)
from atoll.data import BucketedDataset, write_table
from atoll.errors import SchemaError
from atoll.execution import make_executor
from atoll.privacy import Guard, PartyRule, PrivacyPolicy

OPEN = Guard(PrivacyPolicy.strictest([PartyRule("test", 1)]))  # k = 1: nothing withheld


# --------------------------------------------------------------------------- formulas


def test_tgi_vectors_from_methods() -> None:
    # [methods §1.2] 8.9 % of 15-24 y/o vs 6.6 % of all: 134.848… (source prints 134.9).
    assert tgi(8.9, 100, 6.6, 100) == pytest.approx(134.848484848, rel=1e-9)
    assert abs(tgi(8.9, 100, 6.6, 100) - 134.9) < 0.1  # type: ignore[operator]
    # [methods §1.2] regional sales: 江苏 30/93, 浙江 40/123, 上海 50/153 vs 120/369.
    assert tgi(30, 93, 120, 369) == pytest.approx(99.1935484, rel=1e-7)
    assert tgi(40, 123, 120, 369) == pytest.approx(100.0, rel=1e-12)
    assert tgi(50, 153, 120, 369) == pytest.approx(100.4901961, rel=1e-7)
    # [methods §1.2] n_T=2000, x_T=300, N=100000, X=10000 → 150.
    assert tgi(300, 2000, 10_000, 100_000) == pytest.approx(150.0, rel=1e-12)
    assert tgi(1, 0, 1, 1) is None
    assert tgi(1, 1, 0, 1) is None


def test_significance_vector_from_methods() -> None:
    # [methods §1.4] z = 7.529232 (both forms), Wilson p_T ∈ [0.135023, 0.166319].
    z = two_proportion_z(300, 2000, 10_000, 100_000)
    assert z == pytest.approx(7.529232, abs=1e-6)
    p_t, p_u, n_t, n = 0.15, 0.1, 2000, 100_000
    one_sample = (p_t - p_u) / math.sqrt(p_u * (1 - p_u) / n_t * (1 - n_t / n))
    assert z == pytest.approx(one_sample, rel=1e-9)
    lo, hi = wilson_interval(300, 2000)  # type: ignore[misc]
    assert lo == pytest.approx(0.135023, abs=5e-7)
    assert hi == pytest.approx(0.166319, abs=5e-7)
    assert two_proportion_z(5, 10, 50, 10) is None  # the rest of the base is empty
    assert wilson_interval(0, 0) is None


def test_report_on_the_methods_vector() -> None:
    counts = PersonaCounts(
        target_rows=2000,
        base_rows=100_000,
        dimensions={
            "tag": DimensionCounts(
                False, 2000, 100_000, {"yes": [300, 10_000], "no": [1700, 90_000]}
            )
        },
        matched_ids=pa.array([], pa.string()),
    )
    report = persona_from_counts(counts, guard=Guard())
    yes = next(r for r in report.dimension("tag") if r["value"] == "yes")
    assert yes["target_share"] == pytest.approx(0.15)
    assert yes["base_share"] == pytest.approx(0.10)
    assert yes["tgi"] == pytest.approx(150.0)
    assert yes["z"] == pytest.approx(7.529232, abs=1e-6)
    assert yes["ci_low"] == pytest.approx(135.02, abs=0.005)
    assert yes["ci_high"] == pytest.approx(166.32, abs=0.005)
    assert yes["flag"] == ""
    assert yes["significant"]
    assert report.top_tags[0]["value"] == "yes"
    assert report.csv_table().column_names == list(CSV_COLUMNS)


# --------------------------------------------------------------------------- hand-computed

# device:  d0      d1      d2    d3       d4      d5     d6     d7      d8      d9
# target:  yes     yes     yes   yes      no      no     no     no      no      no
# gender:  female  female  male  unknown  female  male   male   (null)  female  male
# interests: d0 [beauty, hair_care, beauty]  d1 [beauty]  d2 []  d3 (null)  d4 [hair_care]
#            d5 [unknown]  d6 (null)  d7 [beauty, auto]  d8 [auto]  d9 (null)
UNIVERSE = pa.table(
    {
        "device_id": [f"d{i}" for i in range(10)],
        "gender": [
            "female",
            "female",
            "male",
            "unknown",
            "female",
            "male",
            "male",
            None,
            "female",
            "male",
        ],
        "interests": pa.array(
            [
                ["beauty", "hair_care", "beauty"],
                ["beauty"],
                [],
                None,
                ["hair_care"],
                ["unknown"],
                None,
                ["beauty", "auto"],
                ["auto"],
                None,
            ],
            pa.list_(pa.string()),
        ),
        "score": [0.5] * 10,
    }
)
TARGET = ["d0", "d1", "d2", "d3", "not-in-universe"]


def _row(report: object, dim: str, value: str) -> dict[str, object]:
    rows = report.dimension(dim)  # type: ignore[attr-defined]
    return next(r for r in rows if r["value"] == value)


def test_hand_computed_universe() -> None:
    report = persona(TARGET, UNIVERSE, id_column="device_id", guard=OPEN)
    # gender, unknowns excluded: T known = {d0 f, d1 f, d2 m} → n_T=3; U known: 4 f + 4 m = 8.
    female = _row(report, "gender", "female")
    assert (female["target_count"], female["base_count"]) == (2, 4)
    assert female["target_share"] == pytest.approx(2 / 3)
    assert female["base_share"] == pytest.approx(0.5)
    assert female["tgi"] == pytest.approx(133.3333333, rel=1e-9)
    male = _row(report, "gender", "male")
    assert male["tgi"] == pytest.approx(66.6666667, rel=1e-9)
    assert {r["value"] for r in report.dimension("gender")} == {"female", "male"}
    # interests (multi-valued): T known = d0, d1, d2 (d2's empty list is known) → n_T = 3;
    # U known = d0 d1 d2 d4 d5 d7 d8 → N = 7. d0 lists beauty twice: one holder.
    beauty = _row(report, "interests", "beauty")
    assert (beauty["target_count"], beauty["base_count"]) == (2, 3)
    assert beauty["tgi"] == pytest.approx((2 / 3) / (3 / 7) * 100)
    hair = _row(report, "interests", "hair_care")
    assert (hair["target_count"], hair["base_count"]) == (1, 2)
    assert hair["tgi"] == pytest.approx((1 / 3) / (2 / 7) * 100)
    auto = _row(report, "interests", "auto")  # 0 holders: below any k, withheld with reason
    assert auto["target_count"] is None
    assert auto["flag"].startswith("suppressed: fewer than 1")
    assert "unknown" not in {r["value"] for r in report.dimension("interests")}
    cov = {c["dimension"]: c for c in report.coverage}
    assert cov["gender"]["target_coverage"] == pytest.approx(3 / 4)
    assert cov["gender"]["base_coverage"] == pytest.approx(8 / 10)
    assert cov["interests"]["base_known"] == 7
    assert cov["interests"]["multi_valued"]
    aud = report.metrics["audience"]
    assert (aud["valid_distinct_ids"], aud["matched_ids"], aud["matched_devices"]) == (5, 4, 4)
    assert report.metrics["skipped_columns"] == ["score"]  # float column: not a tag


def test_suppression_complementary_and_small_base_flags() -> None:
    guard = Guard(PrivacyPolicy.strictest([PartyRule("brand", 2)]))
    report = persona(TARGET, UNIVERSE, id_column="device_id", guard=guard, name="kat")
    male = _row(report, "gender", "male")  # 1 < k = 2
    assert male["target_count"] is None
    assert male["tgi"] is None
    assert male["z"] is None
    assert male["flag"] == "suppressed: fewer than 2 (k set by brand)"
    assert male["base_count"] == 4  # the base stays visible
    female = _row(report, "gender", "female")  # 2 >= k, but 3 - 2 would reveal male
    assert female["target_count"] is None
    assert female["flag"].startswith("suppressed: complementary")
    beauty = _row(report, "interests", "beauty")  # multi-valued: no subtraction identity
    assert beauty["target_count"] == 2
    assert beauty["flag"] == "small_base"  # 2 < small_base (100)
    assert _row(report, "interests", "hair_care")["flag"].startswith("suppressed: fewer than 2")
    assert report.metrics["guard"]["suppressed_complementary"] == 1


def test_explicit_dimensions_and_errors(tmp_path: Path) -> None:
    report = persona(
        TARGET,
        UNIVERSE,
        id_column="device_id",
        guard=OPEN,
        config=PersonaConfig(dimensions=("interests",)),
    )
    assert {c["dimension"] for c in report.coverage} == {"interests"}
    with pytest.raises(SchemaError, match="bin continuous values first"):
        persona(
            TARGET, UNIVERSE, id_column="device_id", config=PersonaConfig(dimensions=("score",))
        )
    with pytest.raises(SchemaError, match="no dimension column 'nope'"):
        persona(TARGET, UNIVERSE, id_column="device_id", config=PersonaConfig(dimensions=("nope",)))
    with pytest.raises(SchemaError, match="no identifier column 'phone'"):
        persona(TARGET, UNIVERSE, id_column="phone")


def test_invalid_audience_ids_are_counted_not_dropped() -> None:
    universe = pa.table({"phone": ["13800001111", "13900002222"], "gender": ["female", "male"]})
    audience = ["+86 138-0000-1111", "12345", None, "13800001111"]
    report = persona(audience, universe, id_column="phone", id_kind="phone", guard=OPEN)
    aud = report.metrics["audience"]
    assert aud["rows"] == 4
    assert aud["valid_distinct_ids"] == 1  # two spellings of one phone
    assert aud["invalid_ids"]["invalid"] == 2  # "12345" and the empty value
    assert aud["matched_devices"] == 1


# --------------------------------------------------------------------------- properties

_VALUES = st.sampled_from(["a", "b", "c", "unknown", None])
_LISTS = st.one_of(st.none(), st.lists(st.sampled_from(["x", "y", "z", "unknown"]), max_size=5))


def _naive(rows: list[tuple[str | None, list[str] | None, bool]]) -> dict[str, Counter[str]]:
    """A pure-Python reference of the counting rules."""
    out: dict[str, Counter[str]] = {"t": Counter(), "u": Counter()}
    for single, multi, in_t in rows:
        for side in ("u", "t") if in_t else ("u",):
            if single not in (None, "unknown"):
                out[side][f"s:{single}"] += 1
                out[side]["s:(known)"] += 1
            if multi is not None:
                out[side]["m:(known)"] += 1
                for v in set(multi) - {"unknown"}:
                    out[side][f"m:{v}"] += 1
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_VALUES, _LISTS, st.booleans()), min_size=1, max_size=40), st.data())
def test_counts_match_reference_and_are_additive(
    rows: list[tuple[str | None, list[str] | None, bool]], data: st.DataObject
) -> None:
    table = pa.table(
        {
            "s": pa.array([r[0] for r in rows], pa.string()),
            "m": pa.array([r[1] for r in rows], pa.list_(pa.string())),
        }
    )
    mask = [r[2] for r in rows]
    dims = [("s", False), ("m", True)]
    whole = count_table(table, mask, dims)
    ref = _naive(rows)
    for side, idx in (("t", 0), ("u", 1)):
        got: Counter[str] = Counter()
        for dim, prefix in (("s", "s"), ("m", "m")):
            dc = whole.dimensions[dim]
            got[f"{prefix}:(known)"] = (dc.target_known, dc.base_known)[idx]
            for value, pair in dc.values.items():
                if pair[idx]:
                    got[f"{prefix}:{value}"] = pair[idx]
        assert +got == +ref[side]
    # Additivity: any split into parts sums to the whole.
    cut = data.draw(st.integers(min_value=0, max_value=len(rows)))
    merged = count_table(table.slice(0, cut), mask[:cut], dims).merge(
        count_table(table.slice(cut), mask[cut:], dims)
    )
    for dim in ("s", "m"):
        a, b = merged.dimensions[dim], whole.dimensions[dim]
        assert (a.target_known, a.base_known) == (b.target_known, b.base_known)
        assert {k: v for k, v in a.values.items() if v[1]} == b.values


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_VALUES, _LISTS), min_size=2, max_size=40))
def test_shares_sum_to_one_and_universe_vs_itself_is_100(
    rows: list[tuple[str | None, list[str] | None]],
) -> None:
    table = pa.table(
        {
            "id": [str(i) for i in range(len(rows))],
            "s": pa.array([r[0] for r in rows], pa.string()),
            "m": pa.array([r[1] for r in rows], pa.list_(pa.string())),
        }
    )
    report = persona(table["id"], table, id_column="id", guard=OPEN)  # T = U
    singles = [r for r in report.dimension("s") if r["target_share"] is not None]
    if singles:
        assert sum(r["target_share"] for r in singles) == pytest.approx(1.0)
        assert sum(r["base_share"] for r in singles) == pytest.approx(1.0)
    for r in report.cells.to_pylist():
        if r["base_count"]:
            assert r["tgi"] == pytest.approx(100.0)
            assert r["z"] is None  # nothing left to compare against


def test_many_values_with_duplicates_use_the_exact_path() -> None:
    vocab = [f"v{i:02d}" for i in range(70)]  # more than 64 values: the pair-unique path
    lists = [[vocab[(i * 7 + j) % 70] for j in range(i % 5)] * 2 for i in range(300)]
    table = pa.table({"m": pa.array(lists, pa.list_(pa.string()))})
    mask = [i % 3 == 0 for i in range(300)]
    counts = count_table(table, mask, [("m", True)]).dimensions["m"]
    for value, (t, u) in counts.values.items():
        assert u == sum(value in set(x) for x in lists)
        assert t == sum(value in set(x) for x, m in zip(lists, mask, strict=True) if m)


# --------------------------------------------------------------------------- parts & executors


def _wide(n: int) -> pa.Table:
    return pa.table(
        {
            "device_id": [f"dev{i:05d}" for i in range(n)],
            "gender": [("female", "male", "unknown")[i % 3] for i in range(n)],
            "city": [f"city{i % 17}" for i in range(n)],
            "tags": pa.array([[f"t{i % 5}", f"t{i % 7}"] for i in range(n)], pa.list_(pa.string())),
        }
    )


def _key(report: object) -> list[tuple[object, ...]]:
    cells = report.cells  # type: ignore[attr-defined]
    return sorted(
        zip(
            *(cells[c].to_pylist() for c in ("dimension", "value", "target_count", "base_count")),
            strict=True,
        )
    )


def test_bucketed_parquet_and_csv_bases_agree_with_the_table(tmp_path: Path) -> None:
    table = _wide(3000)
    audience = [f"dev{i:05d}" for i in range(0, 3000, 4)]
    expected = _key(persona(audience, table, id_column="device_id", guard=OPEN))
    BucketedDataset.write(table, tmp_path / "ds", id_column="device_id", buckets=8)
    with make_executor("inline") as ex:
        got = persona(audience, tmp_path / "ds", id_column="device_id", guard=OPEN, executor=ex)
    assert _key(got) == expected
    pq.write_table(table, tmp_path / "u.parquet", row_group_size=700)
    assert _key(persona(audience, tmp_path / "u.parquet", id_column="device_id", guard=OPEN)) == (
        expected
    )
    write_table(table, tmp_path / "u.csv", fmt="csv")
    got_csv = persona(
        audience, tmp_path / "u.csv", id_column="device_id", guard=OPEN, list_columns=("tags",)
    )
    assert _key(got_csv) == expected


def test_process_pool_executor_gives_the_same_counts(tmp_path: Path) -> None:
    table = _wide(2000)
    audience = pc.unique(table["device_id"].filter(pc.equal(table["gender"], "female")))
    BucketedDataset.write(table, tmp_path / "ds", id_column="device_id", buckets=4)
    expected = _key(persona(audience, table, id_column="device_id", guard=OPEN))
    with make_executor("local", workers=2) as ex:
        got = persona(audience, tmp_path / "ds", id_column="device_id", guard=OPEN, executor=ex)
    assert _key(got) == expected


def test_null_lists_that_span_child_values_are_unknown() -> None:
    # Arrow allows a null list whose offsets still cover child values: they must not count.
    values = pa.array(["x", "y", "x", "z", "unknown", "y"])
    lists = pa.ListArray.from_arrays(
        pa.array([0, 2, 4, 6], pa.int32()), values, mask=pa.array([False, True, False])
    )
    table = pa.table({"m": lists})
    counts = count_table(table, [True, False, True], [("m", True)]).dimensions["m"]
    assert (counts.target_known, counts.base_known) == (2, 2)
    assert counts.values == {"x": [1, 1], "y": [2, 2]}  # row 1's x, z are not counted
    sliced = count_table(table.slice(1), [False, True], [("m", True)]).dimensions["m"]
    assert sliced.values == {"y": [1, 1]}
