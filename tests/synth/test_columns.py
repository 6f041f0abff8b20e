"""The vectorised column builders: Luhn, fixed-width strings, decimals, lists, local days."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.synth._columns import (
    assemble,
    categorical,
    decimal_from_cents,
    fixed_width_chars,
    list_from_mask,
    local_midnight_us,
    luhn_check_digit,
    prefixed_numbers,
)


def luhn_valid(number: str) -> bool:
    """Textbook Luhn check (ISO/IEC 7812-1 annex B), written independently of the code."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def test_luhn_known_answer() -> None:
    # Wikipedia "International Mobile Equipment Identity": 49015420323751 -> check digit 8.
    payload = np.array([[int(c) for c in "49015420323751"]])
    assert luhn_check_digit(payload).tolist() == [8]
    # ISO/IEC 7812 example account number 7992739871 -> check digit 3.
    assert luhn_check_digit(np.array([[int(c) for c in "7992739871"]])).tolist() == [3]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text("0123456789", min_size=14, max_size=14), min_size=1, max_size=20))
def test_luhn_digit_validates(payloads: list[str]) -> None:
    digits = np.array([[int(c) for c in p] for p in payloads])
    checks = luhn_check_digit(digits)
    for p, c in zip(payloads, checks, strict=True):
        assert luhn_valid(p + str(int(c)))


def test_prefixed_numbers_keep_leading_zeros() -> None:
    assert prefixed_numbers("ev", [1, 42, 999], 5).to_pylist() == ["ev00001", "ev00042", "ev00999"]
    assert prefixed_numbers("", [7], 10).to_pylist() == ["0000000007"]


def test_fixed_width_chars_round_trip_on_slices() -> None:
    arr = prefixed_numbers("x", np.arange(10), 3)
    sliced = arr.slice(3, 4)
    chars = fixed_width_chars(sliced, 4)
    assert [bytes(row).decode() for row in chars] == ["x003", "x004", "x005", "x006"]


def test_decimal_from_cents_is_exact() -> None:
    arr = decimal_from_cents([4990, 1, 0, 123456789012])
    assert arr.type == pa.decimal128(18, 2)
    assert [str(v) for v in arr.to_pylist()] == ["49.90", "0.01", "0.00", "1234567890.12"]


def test_list_from_mask_with_null_rows() -> None:
    mask = np.array([[True, False, True], [False, False, False], [False, True, False]])
    out = list_from_mask(mask, ["a", "b", "c"], np.array([False, True, False]))
    assert out.to_pylist() == [["a", "c"], None, ["b"]]


def test_assemble_places_parts_and_nulls() -> None:
    out = assemble(4, [(np.array([3, 0]), pa.array(["d", "a"]))], pa.string())
    assert out.to_pylist() == ["a", None, None, "d"]


def test_categorical_matches_probabilities() -> None:
    rng = np.random.default_rng(0)
    draws = categorical(rng, [0.2, 0.8], 20_000)
    assert abs(draws.mean() - 0.8) < 0.02
    rows = categorical(rng, np.array([[1.0, 0.0], [0.0, 1.0]] * 50))
    assert rows.tolist() == [0, 1] * 50


def test_local_midnight_is_utc_plus_8() -> None:
    # 2026-06-01 00:00 Asia/Shanghai == 2026-05-31 16:00 UTC
    assert local_midnight_us(date(2026, 6, 1)) == (1780272000 - 8 * 3600) * 1_000_000
