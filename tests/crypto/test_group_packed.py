"""The batch (joined-buffer) group operations: known answers, validation, fallback, properties.

Provenance of the vectors: RFC 9496 ("The ristretto255 and decaf448
Groups") Appendix A.1 (encodings of the multiples 0..15 of the generator) and
A.2 (invalid encodings every decoder must reject); both lists are shared
with ``test_group.py``.
"""

from __future__ import annotations

import hashlib

import pytest
import rbcl
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto import group
from atoll.crypto.group import (
    IDENTITY,
    hash_to_group,
    hash_to_group_many,
    hash_to_group_packed,
    point_mul,
    point_mul_many,
    point_mul_packed,
    scalar_from_int,
    scalar_random,
)
from atoll.errors import CryptoError
from tests.crypto.test_group import BAD_ENCODINGS, MULTIPLES

B = bytes.fromhex(MULTIPLES[1])


@pytest.fixture(params=["direct", "wrappers"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the direct libsodium calls and through rbcl's wrappers."""
    if request.param == "wrappers":
        monkeypatch.setattr(group, "_DIRECT", None)
    else:
        assert group._DIRECT is not None, "rbcl no longer exposes its libsodium handle"
    return str(request.param)


def test_rfc9496_a1_multiples_by_packed_multiplication(path: str) -> None:
    # [k]([1]B, [2]B, [3]B, [5]B) = [k]B, [2k]B, [3k]B, [5k]B for k = 3: 3, 6, 9, 15.
    points = b"".join(bytes.fromhex(MULTIPLES[i]) for i in (1, 2, 3, 5))
    out = point_mul_packed(scalar_from_int(3), points)
    assert out.hex() == MULTIPLES[3] + MULTIPLES[6] + MULTIPLES[9] + MULTIPLES[15]


def test_rfc9496_a1_every_multiple_from_the_generator(path: str) -> None:
    out = point_mul_packed(scalar_from_int(1), B * 15)
    assert out == B * 15
    for k in range(1, 16):
        assert point_mul_packed(scalar_from_int(k), B).hex() == MULTIPLES[k]


@pytest.mark.parametrize("bad", BAD_ENCODINGS)
def test_rfc9496_a2_invalid_encodings_are_refused_with_their_index(path: str, bad: str) -> None:
    points = B + B + bytes.fromhex(bad) + B
    with pytest.raises(CryptoError, match="invalid ristretto255 point at index 2"):
        point_mul_packed(scalar_random(), points)


def test_identity_length_and_scalar_are_checked(path: str) -> None:
    with pytest.raises(CryptoError, match="at index 1"):
        point_mul_packed(scalar_random(), B + IDENTITY)
    with pytest.raises(CryptoError, match="whole number"):
        point_mul_packed(scalar_random(), B + b"\x01")
    with pytest.raises(CryptoError, match="zero"):
        point_mul_packed(bytes(32), B)
    with pytest.raises(CryptoError, match="at index 1"):
        point_mul_many(scalar_random(), [B, B[:31], B])
    assert point_mul_packed(scalar_random(), b"") == b""
    assert hash_to_group_packed([], domain=b"d") == b""


def test_hash_to_group_packed_is_the_domain_separated_from_hash(path: str) -> None:
    values = [b"", b"a", b"13800138000", "ü".encode() * 40]
    domain = b"atoll/test"
    prefix = bytes([len(domain)]) + domain
    expected = b"".join(
        bytes(rbcl.crypto_core_ristretto255_from_hash(hashlib.sha512(prefix + v).digest()))
        for v in values
    )
    assert hash_to_group_packed(values, domain=domain) == expected
    assert hash_to_group_many(values, domain=domain) == [
        hash_to_group(v, domain=domain) for v in values
    ]


def test_memoryview_and_bytearray_inputs_are_accepted() -> None:
    k = scalar_random()
    pts = hash_to_group_packed([b"x", b"y"], domain=b"d")
    assert point_mul_packed(k, bytearray(pts)) == point_mul_packed(k, pts)
    assert point_mul_packed(k, memoryview(pts)) == point_mul_packed(k, pts)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.binary(max_size=40), max_size=12),
    st.integers(min_value=1, max_value=2**252),
    st.integers(min_value=1, max_value=2**252),
)
def test_property_packed_equals_per_item_and_commutes(values: list[bytes], x: int, y: int) -> None:
    a, b = scalar_from_int(x), scalar_from_int(y)
    hashed = hash_to_group_packed(values, domain=b"prop")
    per_item = [point_mul(a, hash_to_group(v, domain=b"prop")) for v in values]
    once = point_mul_packed(a, hashed)
    assert once == b"".join(per_item)
    # ECDH PSI's identity: b*(a*H(v)) == a*(b*H(v)).
    assert point_mul_packed(b, once) == point_mul_packed(a, point_mul_packed(b, hashed))
