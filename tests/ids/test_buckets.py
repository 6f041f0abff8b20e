"""The bucket function: its written specification, stability and spread."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError, InputError
from atoll.ids.buckets import BUCKET_FUNCTION_NAME, BucketFunction


def _spec(value: str, buckets: int, salt: bytes) -> int:
    """The function exactly as documented in atoll.ids.buckets (independent re-implementation)."""
    h = hashlib.blake2b(value.encode(), digest_size=8, key=salt, person=b"atoll-bucket-v1")
    return int.from_bytes(h.digest(), "big") % buckets


# Regression vectors: computed once (2026-11-26) with Python's hashlib BLAKE2b
# from the written specification, then pinned as literals, so that any change
# to the function (which would re-shuffle every stored dataset and break
# cross-party bucket agreement) fails loudly. Salt: the default salt.
DEFAULT_SALT = b"atoll-default-bucket-salt-v1"
PINNED = [
    # (value, buckets, BLAKE2b-64 hex, bucket)
    ("13800138000", 64, "3426f39823a122e9", 41),
    ("13800138000", 1024, "3426f39823a122e9", 745),
    ("", 7, "7e7eaeddb249a713", 3),
    ("oaid:abc", 65536, "ed7a27b44febdb03", 56067),
]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.text(max_size=40), max_size=30),
    buckets=st.integers(1, 5000),
    salt=st.binary(min_size=1, max_size=64),
)
def test_matches_written_spec(values: list[str], buckets: int, salt: bytes) -> None:
    fn = BucketFunction(buckets, salt)
    got = fn.assign(values)
    assert got.dtype == np.uint32
    assert [int(x) for x in got] == [_spec(v, buckets, salt) for v in values]
    assert all(0 <= int(x) < buckets for x in got)


def test_pinned_and_named() -> None:
    for value, buckets, digest, expected in PINNED:
        assert int(digest, 16) % buckets == expected
        assert BucketFunction(buckets, DEFAULT_SALT).bucket_of(value) == expected
        assert BucketFunction(buckets).bucket_of(value) == expected
    assert BucketFunction(8).name == BUCKET_FUNCTION_NAME


def test_salt_changes_assignment_and_spread_is_uniform() -> None:
    values = [f"138{i:08d}" for i in range(20000)]
    a = BucketFunction(16, b"salt-a").assign(values)
    b = BucketFunction(16, b"salt-b").assign(values)
    assert (a != b).mean() > 0.8
    counts = np.bincount(a, minlength=16)
    expected = len(values) / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50.0  # 15 dof: p < 1e-4 only if badly skewed


def test_arrow_column_and_null_error() -> None:
    fn = BucketFunction(8)
    col = pa.chunked_array([["a", "b"], ["c"]])
    assert list(fn.assign_arrow(col)) == list(fn.assign(["a", "b", "c"]))
    with pytest.raises(InputError, match=r"m\.csv row 2, column 'phone'"):
        fn.assign_arrow(pa.array(["a", None]), source="m.csv", column_name="phone")


@pytest.mark.parametrize(
    ("buckets", "salt"), [(0, b"s"), (1 << 17, b"s"), (4, b""), (4, b"x" * 65)]
)
def test_bad_config(buckets: int, salt: bytes) -> None:
    with pytest.raises(ConfigError):
        BucketFunction(buckets, salt)
