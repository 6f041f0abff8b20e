"""ristretto255 (RFC 9496) group operations through libsodium, via ``rbcl``.

Why: every public-key protocol in Atoll (ECDH PSI, the OPRF behind labeled
PSI and the covert query's bucket mode, exponential ElGamal for
intersection-sum, Chou–Orlandi 1-of-N OT) runs over one prime-order group.
``rbcl`` bundles a current libsodium (PyNaCl's release has no ristretto255
bindings). Points and scalars are opaque 32-byte strings; scalars are
canonical (reduced mod the group order L). Every function that takes a point
from a peer validates it (canonical encoding, not the identity) and raises
:class:`~atoll.errors.CryptoError` otherwise -- never an error from the binding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import rbcl

from atoll.crypto import Rng, _rng
from atoll.errors import CryptoError

#: Size of an encoded ristretto255 point and of a canonical scalar, in bytes.
POINT_SIZE = 32
SCALAR_SIZE = 32
#: Order L of the ristretto255 group (RFC 9496 section 4.4).
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
#: The encoding of the identity element (all zero bytes).
IDENTITY = bytes(POINT_SIZE)


def scalar_random(*, rng: Rng | None = None) -> bytes:
    """A uniformly random non-zero scalar (reduced from 64 random bytes)."""
    while True:
        s = bytes(rbcl.crypto_core_ristretto255_scalar_reduce(_rng(rng)(64)))
        if s != bytes(SCALAR_SIZE):
            return s


def scalar_from_int(value: int) -> bytes:
    """Encode ``value mod L`` as a canonical little-endian scalar."""
    return (value % GROUP_ORDER).to_bytes(SCALAR_SIZE, "little")


def scalar_to_int(scalar: bytes) -> int:
    """Decode a scalar (little-endian) to an int."""
    return int.from_bytes(scalar, "little")


def scalar_reduce(wide: bytes) -> bytes:
    """Reduce 64 bytes (e.g. a hash output) to a canonical scalar mod L."""
    if len(wide) != 64:
        raise CryptoError(f"scalar_reduce needs 64 bytes, got {len(wide)}")
    return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(wide))


def scalar_invert(scalar: bytes) -> bytes:
    """The multiplicative inverse of a non-zero scalar mod L."""
    _check_scalar(scalar)
    return bytes(rbcl.crypto_core_ristretto255_scalar_invert(scalar))


def scalar_mul(a: bytes, b: bytes) -> bytes:
    """``a * b mod L``."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_mul(a, b))


def scalar_add(a: bytes, b: bytes) -> bytes:
    """``a + b mod L``."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_add(a, b))


def scalar_sub(a: bytes, b: bytes) -> bytes:
    """``a - b mod L``."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_sub(a, b))


def _check_scalar(scalar: bytes) -> None:
    if len(scalar) != SCALAR_SIZE or scalar_to_int(scalar) >= GROUP_ORDER:
        raise CryptoError("scalar is not a canonical 32-byte ristretto255 scalar")
    if scalar == bytes(SCALAR_SIZE):
        raise CryptoError("scalar is zero")


def _domain_prefix(domain: bytes) -> bytes:
    if not domain or len(domain) > 255:
        raise CryptoError("hash-to-group domain must be 1..255 bytes")
    return bytes([len(domain)]) + domain


def hash_to_group(data: bytes, *, domain: bytes) -> bytes:
    """Hash bytes to a ristretto255 point: ``from_hash(SHA-512(len(dst)||dst||data))``.

    RFC 9496 section 4.3.4 one-way map on a domain-separated SHA-512; the
    domain (e.g. ``b"atoll/psi/v1"``) keeps protocols' groups apart.
    """
    prefix = _domain_prefix(domain)
    return bytes(rbcl.crypto_core_ristretto255_from_hash(hashlib.sha512(prefix + data).digest()))


def hash_to_group_many(values: Iterable[bytes], *, domain: bytes) -> list[bytes]:
    """:func:`hash_to_group` over many values (one tight loop)."""
    prefix = _domain_prefix(domain)
    from_hash = rbcl.crypto_core_ristretto255_from_hash
    sha512 = hashlib.sha512
    return [bytes(from_hash(sha512(prefix + v).digest())) for v in values]


def is_valid_point(point: bytes) -> bool:
    """True for a canonical encoding of a non-identity ristretto255 point."""
    return (
        isinstance(point, bytes)
        and len(point) == POINT_SIZE
        and point != IDENTITY
        and bool(rbcl.crypto_core_ristretto255_is_valid_point(point))
    )


def point_mul(scalar: bytes, point: bytes) -> bytes:
    """``scalar * point``; raises CryptoError for an invalid or identity point."""
    if not is_valid_point(point):
        raise CryptoError("peer sent an invalid ristretto255 point")
    try:
        return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, point))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CryptoError("ristretto255 scalar multiplication failed") from exc


def point_mul_many(scalar: bytes, points: Iterable[bytes]) -> list[bytes]:
    """``scalar * p`` for every point, validating each; one tight loop.

    Raises CryptoError naming the index of the first invalid point.
    """
    _check_scalar(scalar)
    valid = rbcl.crypto_core_ristretto255_is_valid_point
    mul = rbcl.crypto_scalarmult_ristretto255
    out: list[bytes] = []
    append = out.append
    for i, p in enumerate(points):
        if len(p) != POINT_SIZE or p == IDENTITY or not valid(p):
            raise CryptoError(f"peer sent an invalid ristretto255 point at index {i}")
        append(bytes(mul(scalar, p)))
    return out


def base_mul(scalar: bytes) -> bytes:
    """``scalar * G`` (the generator); the zero scalar gives :data:`IDENTITY`."""
    return bytes(rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(scalar))


def point_add(p: bytes, q: bytes) -> bytes:
    """``p + q`` (either may be :data:`IDENTITY`)."""
    try:
        return bytes(rbcl.crypto_core_ristretto255_add(p, q))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CryptoError("ristretto255 point addition got an invalid point") from exc


def point_sub(p: bytes, q: bytes) -> bytes:
    """``p - q`` (either may be :data:`IDENTITY`)."""
    try:
        return bytes(rbcl.crypto_core_ristretto255_sub(p, q))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CryptoError("ristretto255 point subtraction got an invalid point") from exc
