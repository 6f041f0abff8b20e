"""Tests for atoll.ids.normalize.

Known answers come from tests/vectors/identifiers.json (each with its source:
platform documentation, Wikipedia, RFCs, and digests made with the coreutils
md5sum/sha256sum CLI — never with the code under test). Properties are checked
with Hypothesis, partly against the slow, independent pure-Python reference
implementations at the bottom of this file.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError, DataError, IdentifierError, SchemaError
from atoll.ids.normalize import (
    ALL_KINDS,
    KIND_LABELS,
    REASONS,
    HashForm,
    IdKind,
    IdType,
    InvalidReport,
    InvalidSample,
    Normalized,
    describe_reason,
    detect_form,
    hash_array,
    hash_value,
    luhn_check_digit,
    mask_identifier,
    normalize_array,
    normalize_value,
    parse_form,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "identifiers.json").read_text(encoding="utf-8")
)
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reason_of(value: str, kind: str) -> str | None:
    """None if valid, else the reason code normalize_value raises."""
    try:
        normalize_value(value, kind)
    except IdentifierError as exc:
        return exc.reason
    return None


def _id(item: dict[str, Any]) -> str:
    shown = item.get("input", item.get("normalized", item.get("body")))
    return f"{item.get('kind', '')}:{str(shown)[:40]!r}"


# ---------------------------------------------------------------------------
# Known-answer vectors
# ---------------------------------------------------------------------------


def test_every_vector_names_its_source() -> None:
    groups = [v for k, v in VECTORS.items() if not k.startswith("_")]
    assert groups
    for group in groups:
        for item in group:
            assert isinstance(item["source"], str), item
            assert len(item["source"]) > 10, item


@pytest.mark.parametrize("item", VECTORS["normalize"], ids=_id)
def test_normalize_vectors(item: dict[str, Any]) -> None:
    result = normalize_array([item["input"]], item["kind"])
    assert result.values.to_pylist() == [item["expected"]]
    assert result.valid.to_pylist() == [True]
    assert result.report.invalid == 0
    assert normalize_value(item["input"], item["kind"]) == item["expected"]


@pytest.mark.parametrize("item", VECTORS["invalid"], ids=_id)
def test_invalid_vectors(item: dict[str, Any]) -> None:
    result = normalize_array([item["input"]], item["kind"], source="f.csv", column="c")
    assert result.values.to_pylist() == [None]
    assert result.valid.to_pylist() == [False]
    assert result.report.by_reason == {item["reason"]: 1}
    assert [s.reason for s in result.report.samples] == [item["reason"]]
    if item["input"] is not None:
        with pytest.raises(IdentifierError) as caught:
            normalize_value(item["input"], item["kind"])
        assert caught.value.reason == item["reason"]


def test_every_reason_has_a_vector_and_a_description() -> None:
    covered = {item["reason"] for item in VECTORS["invalid"]}
    # unknown_id_type is raised by the ID-mapping graph for an edge row's
    # id_type column, not by a value's normalization (tests/ids/test_mapping.py).
    assert covered == set(REASONS) - {"unknown_id_type"}
    for reason in REASONS:
        assert re.fullmatch(r"[a-z0-9_]+", reason)
        assert describe_reason(reason)
    with pytest.raises(ConfigError, match="unknown reason"):
        describe_reason("nope")


@pytest.mark.parametrize("item", VECTORS["hash"], ids=_id)
def test_hash_vectors(item: dict[str, Any]) -> None:
    assert hash_value(item["normalized"], item["kind"], item["form"]) == item["expected"]
    arr = hash_array(pa.array([item["normalized"], None]), item["kind"], item["form"])
    assert arr.to_pylist() == [item["expected"], None]


@pytest.mark.parametrize("item", VECTORS["end_to_end"], ids=_id)
def test_end_to_end_vectors(item: dict[str, Any]) -> None:
    normalized = normalize_array([item["input"]], item["kind"]).values
    assert hash_array(normalized, item["kind"], item["form"]).to_pylist() == [item["expected"]]


@pytest.mark.parametrize("item", VECTORS["luhn"], ids=_id)
def test_luhn_vectors(item: dict[str, Any]) -> None:
    assert luhn_check_digit(item["body"]) == item["check_digit"]
    assert _ref_luhn(item["body"]) == item["check_digit"]


@pytest.mark.parametrize("item", VECTORS["detect_form"], ids=_id)
def test_detect_form_vectors(item: dict[str, Any]) -> None:
    assert detect_form(item["input"]) == HashForm(item["form"])


@pytest.mark.parametrize("item", VECTORS["mask"], ids=_id)
def test_mask_vectors(item: dict[str, Any]) -> None:
    assert mask_identifier(item["input"], item["kind"]) == item["expected"]


# ---------------------------------------------------------------------------
# Kinds, forms, errors
# ---------------------------------------------------------------------------


def test_kind_labels_round_trip() -> None:
    assert len(ALL_KINDS) == len(IdType) * len(HashForm) == len(set(KIND_LABELS))
    for kind in ALL_KINDS:
        assert IdKind.parse(kind.label) == kind
        assert IdKind.parse(kind) is kind
        assert kind.hashed == (kind.form is not HashForm.PLAIN)
    assert IdKind.parse(" IMEI_MD5 ") == IdKind(IdType.IMEI, HashForm.MD5)
    assert IdKind(IdType.PHONE).label == "phone"
    assert IdKind("phone", "sha256").label == "phone_sha256"  # type: ignore[arg-type]


def test_unknown_kind_lists_valid_labels() -> None:
    with pytest.raises(ConfigError, match="imei_md5") as caught:
        IdKind.parse("imei_sha1")
    assert "android_id_sha256" in str(caught.value)
    with pytest.raises(ConfigError):
        IdKind.parse(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        IdKind("cookie")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="valid forms"):
        parse_form("sha1")
    assert parse_form("MD5") is HashForm.MD5


def test_input_types() -> None:
    ints = pa.array([13800138000, None, 12800138000], type=pa.int64())
    result = normalize_array(ints, "phone")
    assert result.values.to_pylist() == ["13800138000", None, None]
    assert result.report.by_reason == {"empty": 1, "bad_prefix": 1}
    with pytest.raises(SchemaError, match="leading zeros"):
        normalize_array(pa.array([12345678901234], type=pa.int64()), "imei", column="imei")
    with pytest.raises(SchemaError):
        normalize_array(pa.array([1.38e10]), "phone")
    with pytest.raises(SchemaError) as caught:
        normalize_array(["13800138000", 13800138000], "phone", source="a.csv", column="tel")  # type: ignore[list-item]
    assert (caught.value.source, caught.value.row, caught.value.column) == ("a.csv", 2, "tel")
    with pytest.raises(ConfigError, match="single string"):
        normalize_array("13800138000", "phone")
    with pytest.raises(SchemaError):
        normalize_value(13800138000, "phone")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        normalize_array(["1"], "phone", row_offset=-1)
    with pytest.raises(ConfigError):
        normalize_array(["1"], "phone", max_samples=-1)

    dictionary = pa.array(["13800138000", "13800138000", None]).dictionary_encode()
    assert normalize_array(dictionary, "phone").values.to_pylist() == ["13800138000"] * 2 + [None]
    large = normalize_array(pa.array(["86804903950125"], type=pa.large_string()), "imei")
    assert large.values.type == pa.large_string()
    assert large.values.to_pylist() == ["868049039501257"]
    assert normalize_array(pa.nulls(2), "email").report.by_reason == {"empty": 2}
    empty = normalize_array([], "oaid")
    assert (len(empty.values), empty.report.total, empty.report.samples) == (0, 0, [])


def test_sliced_arrays_use_the_right_rows() -> None:
    arr = pa.array(["x", "+86 138 0013 8000", "86804903950125", "bad"])
    assert normalize_array(arr.slice(1, 1), "phone").values.to_pylist() == ["13800138000"]
    assert normalize_array(arr.slice(2, 2), "imei").values.to_pylist() == ["868049039501257", None]


def test_hash_array_rules() -> None:
    values = pa.array(["ff1999cd-7177-4937-a474-74937a102630", None])
    assert hash_array(values, "idfa", "plain").to_pylist() == [
        "FF1999CD-7177-4937-A474-74937A102630",
        None,
    ]
    digests = pa.array(["2C010ED96AEF2FC34983E1E7E9176B7E"])
    assert hash_array(digests, "idfa_md5", "md5").to_pylist() == [
        "2c010ed96aef2fc34983e1e7e9176b7e"
    ]
    with pytest.raises(ConfigError, match="already md5"):
        hash_array(digests, "idfa_md5", "sha256")
    with pytest.raises(ConfigError):
        hash_array(digests, "idfa", "sha1")
    with pytest.raises(SchemaError):
        hash_array(pa.array([1]), "phone", "md5")
    chunked = pa.chunked_array([["13500000000"], [None, "13500000000"]])
    out = hash_array(chunked, "phone", HashForm.MD5).to_pylist()
    assert out == ["4dbeaa3acd2620411c7ba4fd78bb32d0", None, "4dbeaa3acd2620411c7ba4fd78bb32d0"]


def test_normalized_is_the_documented_shape() -> None:
    result = normalize_array(["13800138000", "x"], "phone")
    assert isinstance(result, Normalized)
    assert isinstance(result.valid, pa.BooleanArray)
    assert result.values.type == pa.string()
    assert result.values.null_count == 1


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def test_report_samples_rows_offset_and_cap() -> None:
    values = ["12800138000"] * 7 + ["13800138000", None, "abc"]
    report = normalize_array(values, "phone", row_offset=100, max_samples=3).report
    assert (report.total, report.valid, report.invalid) == (10, 1, 9)
    assert report.by_reason == {"empty": 1, "non_digit": 1, "bad_prefix": 7}
    assert [(s.row, s.reason) for s in report.samples] == [
        (101, "bad_prefix"),
        (102, "bad_prefix"),
        (103, "bad_prefix"),
        (109, "empty"),
        (110, "non_digit"),
    ]
    assert report.samples[0].value == "128****8000"
    assert normalize_array(values, "phone", max_samples=0).report.samples == []


def test_chunked_input_numbers_rows_across_chunks() -> None:
    chunked = pa.chunked_array([["13800138000", "bad"], ["x", "13900139000", "12800138000"]])
    result = normalize_array(chunked, "phone", source="big.csv", column="tel", row_offset=10)
    assert result.values.to_pylist() == ["13800138000", None, None, "13900139000", None]
    assert [s.row for s in result.report.samples] == [12, 13, 15]
    assert result.report.source == "big.csv"
    assert result.report.total == 5


def test_report_merge_and_to_dict() -> None:
    first = normalize_array(["bad", "13800138000"], "phone", source="a.csv", column="tel").report
    second = normalize_array(["", "bad"], "phone", source="b.csv", column="tel").report
    merged = first.merge(second)
    assert (merged.total, merged.invalid, merged.valid) == (4, 3, 1)
    assert merged.by_reason == {"empty": 1, "non_digit": 2}
    assert merged.source is None
    assert merged.column == "tel"
    assert [(s.source, s.row) for s in merged.samples] == [("a.csv", 1), ("b.csv", 1), ("b.csv", 2)]
    encoded = json.loads(json.dumps(merged.to_dict()))
    assert encoded["valid"] == 1
    assert encoded["samples"][0]["source"] == "a.csv"
    same = first.merge(first)
    assert same.source == "a.csv"
    assert all(s.source is None for s in same.samples)
    other_kind = normalize_array(["x"], "imei").report
    with pytest.raises(ConfigError, match="kinds"):
        first.merge(other_kind)


def test_inconsistent_report_is_refused() -> None:
    with pytest.raises(DataError):
        InvalidReport("f", "c", total=2, invalid=3, by_reason={"empty": 3}, samples=[])
    with pytest.raises(DataError):
        InvalidReport("f", "c", total=2, invalid=1, by_reason={"empty": 2}, samples=[])
    with pytest.raises(DataError):
        InvalidReport("f", "c", total=2, invalid=1, by_reason={"made_up": 1}, samples=[])
    ok = InvalidReport("f", "c", 2, 1, {"empty": 1}, [InvalidSample(1, "empty", "")])
    assert ok.valid == 1


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

PHONE = st.from_regex(r"\A1[3-9][0-9]{9}\Z")
IMEI_BODY = st.from_regex(r"\A[0-9]{14}\Z").filter(lambda b: len(set(b)) > 1)
HEX = "0123456789abcdef"
VALID_RAW: dict[IdType, st.SearchStrategy[str]] = {
    IdType.PHONE: PHONE.map(lambda p: f" +86 {p[:3]}-{p[3:7]} {p[7:]}"),
    IdType.IMEI: IMEI_BODY | st.from_regex(r"\A[a-fA-F][0-9a-fA-F]{13}\Z"),
    IdType.OAID: st.uuids().map(str)
    | st.sampled_from([16, 32, 64]).flatmap(
        lambda n: st.text(alphabet="0123456789abcdefABCDEF", min_size=n, max_size=n)
    ),
    IdType.IDFA: st.uuids().map(str),
    IdType.ANDROID_ID: st.text(alphabet=HEX + "ABCDEF", min_size=13, max_size=16),
    IdType.DEVICE_ID: st.text(min_size=1, max_size=40),
    IdType.MEMBER_ID: st.text(min_size=1, max_size=40),
    IdType.EMAIL: st.from_regex(r"\A[A-Za-z0-9._%+-]{1,20}@[a-z0-9]{1,10}\.(com|cn|net)\Z"),
}


@pytest.mark.parametrize("id_type", list(IdType), ids=str)
@PROPS
@given(data=st.data())
def test_idempotent(id_type: IdType, data: st.DataObject) -> None:
    raw = data.draw(VALID_RAW[id_type])
    reason = _reason_of(raw, id_type.value)
    assume(reason is None)
    once = normalize_value(raw, id_type)
    assert normalize_value(once, id_type) == once
    for form in (HashForm.MD5, HashForm.SHA256):
        digest = hash_value(once, id_type, form)
        hashed_kind = IdKind(id_type, form)
        assert normalize_value(digest, hashed_kind) == digest
        assert normalize_value(f" {digest.upper()} ", hashed_kind) == digest
        assert detect_form(digest) is form


@PROPS
@given(
    phone=PHONE,
    prefix=st.sampled_from(["", "+86", "0086", "86", "+86 ", "(+86)", "0086-"]),
    seps=st.lists(st.sampled_from(["", " ", "-", ".", "  "]), min_size=11, max_size=11),
    pad=st.sampled_from(["", " ", "\t", "\u3000", "\ufeff"]),
    wide=st.booleans(),
)
def test_phone_formatting_noise_is_ignored(
    phone: str, prefix: str, seps: list[str], pad: str, wide: bool
) -> None:
    body = "".join(d + s for d, s in zip(phone, seps, strict=True))
    raw = f"{pad}{prefix}{body}{pad}"
    if wide:  # full-width digits, as typed with a Chinese IME
        raw = raw.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789+"})
    assert normalize_value(raw, "phone") == phone


@PROPS
@given(body=IMEI_BODY, sep=st.sampled_from(["", "-", " "]))
def test_luhn_completion_validates(body: str, sep: str) -> None:
    full = normalize_value(f"{body[:2]}{sep}{body[2:8]}{sep}{body[8:]}", "imei")
    assert full[:14] == body
    assert len(full) == 15
    assert int(full[14]) == _ref_luhn(body) == luhn_check_digit(body)
    assert normalize_value(full, "imei") == full
    wrong = full[:14] + str((int(full[14]) + 1) % 10)
    assert _reason_of(wrong, "imei") == "imei_bad_check_digit"


MIXED_ALPHABET = "0123456789abcdefABCDEF+-.() @x\t\u3000\uff11\uff18"
MIXED = st.one_of(
    st.none(),
    st.text(alphabet=MIXED_ALPHABET, max_size=40),
    PHONE,
    IMEI_BODY,
    st.uuids().map(str),
    st.sampled_from(["NULL", "", "9774d56d682e549c", "00000000-0000-0000-0000-000000000000"]),
)


@pytest.mark.parametrize("kind", KIND_LABELS)
@settings(max_examples=40, deadline=None)
@given(values=st.lists(MIXED, max_size=12))
def test_array_agrees_with_value(kind: str, values: list[str | None]) -> None:
    result = normalize_array(values, kind)
    got = result.values.to_pylist()
    for value, out in zip(values, got, strict=True):
        if value is None:
            assert out is None
            continue
        reason = _reason_of(value, kind)
        if reason is None:
            assert out == normalize_value(value, kind)
        else:
            assert out is None
    assert result.valid.to_pylist() == [v is not None for v in got]


REFERENCES = {
    "phone": lambda v: _ref_phone(v),
    "imei": lambda v: _ref_imei(v),
    "oaid": lambda v: _ref_oaid(v),
    "idfa": lambda v: _ref_idfa(v),
    "android_id": lambda v: _ref_android_id(v),
}


@pytest.mark.parametrize("kind", list(REFERENCES))
@settings(max_examples=60, deadline=None)
@given(values=st.lists(MIXED, max_size=16))
def test_array_agrees_with_reference(kind: str, values: list[str | None]) -> None:
    expected = [None if v is None else REFERENCES[kind](v) for v in values]
    assert normalize_array(values, kind).values.to_pylist() == expected


@PROPS
@given(
    values=st.lists(MIXED, max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=3),
    row_offset=st.integers(0, 10**6),
    max_samples=st.integers(0, 3),
    kind=st.sampled_from(["phone", "imei", "oaid", "member_id", "email_md5"]),
)
def test_report_counts_add_up(
    values: list[str | None], cuts: list[int], row_offset: int, max_samples: int, kind: str
) -> None:
    bounds = sorted({0, len(values), *(c for c in cuts if c <= len(values))})
    chunks = [values[a:b] for a, b in itertools.pairwise(bounds)]
    column = pa.chunked_array(chunks, type=pa.string()) if chunks else pa.array([], pa.string())
    report = normalize_array(column, kind, row_offset=row_offset, max_samples=max_samples).report
    assert report.total == len(values)
    assert report.valid + report.invalid == report.total
    assert sum(report.by_reason.values()) == report.invalid
    expected: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        reason = "empty" if value is None else _reason_of(value, kind)
        if reason is not None:
            expected.setdefault(reason, []).append(index + 1 + row_offset)
    assert report.by_reason == {r: len(rows) for r, rows in expected.items()}
    got: dict[str, list[int]] = {}
    for sample in report.samples:
        got.setdefault(sample.reason, []).append(sample.row)
    assert got == {r: rows[:max_samples] for r, rows in expected.items() if max_samples}
    assert [s.row for s in report.samples] == sorted(s.row for s in report.samples)


@PROPS
@given(
    phone=PHONE,
    noise=st.text(alphabet="0123456789 -+()abc", max_size=6),
    where=st.booleans(),
    kind=st.sampled_from(["phone", "phone_md5", "member_id", "imei"]),
)
def test_masked_samples_never_show_a_full_phone(
    phone: str, noise: str, where: bool, kind: str
) -> None:
    raw = f"{noise}{phone}x" if where else f"x{phone}{noise}"
    report = normalize_array([raw, phone + "9"], kind).report
    for sample in report.samples:
        assert phone not in sample.value
        assert phone not in json.dumps(report.to_dict())
    assert phone not in mask_identifier(phone, kind)


# ---------------------------------------------------------------------------
# Slow, independent reference implementations (plain Python, from the spec)
# ---------------------------------------------------------------------------

TRIM = (
    " \t\n\v\f\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    "\u180e\u200b\u200c\u200d\u2060\ufeff"
)


def _prep(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip(TRIM)


def _ref_luhn(body: str) -> int:
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def _ref_phone(value: str) -> str | None:
    text = re.sub(r"[ \t\n\v\f\r\-.()]", "", _prep(value))
    if text.startswith("+86"):
        text = text[3:]
    elif text.startswith("0086"):
        text = text[4:]
    elif text.startswith("86") and len(text) == 13:
        text = text[2:]
    return text if re.fullmatch(r"1[3-9][0-9]{9}", text) else None


def _ref_imei(value: str) -> str | None:
    text = re.sub(r"[ \t\n\v\f\r\-./]", "", _prep(value).lower())
    if re.fullmatch(r"[0-9]{14,15}", text):
        if len(set(text[:14])) == 1:
            return None
        check = _ref_luhn(text[:14])
        if len(text) == 14:
            return text + str(check)
        return text if int(text[14]) == check else None
    return text if re.fullmatch(r"[a-f][0-9a-f]{13}", text) else None


def _ref_oaid(value: str) -> str | None:
    text = _prep(value).lower()
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    if not re.fullmatch(rf"{uuid}|[0-9a-f]{{16}}|[0-9a-f]{{32}}|[0-9a-f]{{64}}", text):
        return None
    return None if set(text) <= {"0", "-"} else text


def _ref_idfa(value: str) -> str | None:
    text = _prep(value).upper()
    if not re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", text):
        return None
    return None if set(text) <= {"0", "-"} else text


def _ref_android_id(value: str) -> str | None:
    text = _prep(value).lower()
    if not re.fullmatch(r"[0-9a-f]{13,16}", text):
        return None
    return None if set(text) == {"0"} or text == "9774d56d682e549c" else text


def test_normalize_table_column_replaces_the_column_and_names_a_missing_one() -> None:
    from atoll.ids.normalize import normalize_table_column

    table = pa.table({"member_id": ["m1", "m2"], "phone": ["+86 138-0013-8000", "12345"]})
    out, result = normalize_table_column(table, "phone", "phone", source="m.csv", row_offset=10)
    assert out.column_names == table.column_names
    assert out["phone"].to_pylist() == ["13800138000", None]
    assert out["member_id"].to_pylist() == ["m1", "m2"]
    assert result.valid.to_pylist() == [True, False]
    assert [s.row for s in result.report.samples] == [12]
    with pytest.raises(
        SchemaError, match=r"m\.csv: no column 'mobile' \(columns: member_id, phone\)"
    ):
        normalize_table_column(table, "mobile", "phone", source="m.csv")
