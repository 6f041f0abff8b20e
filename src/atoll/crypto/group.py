"""ristretto255 (RFC 9496) group operations through libsodium, via ``rbcl``.

Why: every public-key protocol in Atoll (ECDH PSI, the OPRF behind labeled
PSI and the covert query's bucket mode, exponential ElGamal for
intersection-sum, Chou–Orlandi 1-of-N OT) runs over one prime-order group.
``rbcl`` bundles a current libsodium (PyNaCl's release has no ristretto255
bindings). Points and scalars are opaque 32-byte strings; scalars are
canonical (reduced mod the group order L). Every function that takes a point
from a peer validates it (canonical encoding, not the identity) and raises
:class:`~atoll.errors.CryptoError` otherwise -- never an error from the binding.

Batch form (the PSI hot path): :func:`hash_to_group_packed` and
:func:`point_mul_packed` work on *joined* buffers (``n * 32`` bytes) and call
libsodium's C functions directly through ``ctypes`` on pointers into those
buffers -- no Python object, wrapper check or copy per point. Validation is
not skipped: ``crypto_scalarmult_ristretto255`` decodes its input point with
the RFC 9496 decoder (refusing non-canonical and invalid encodings) and
refuses an identity result, which for a non-zero scalar in a prime-order
group happens exactly when the input is the identity. That is the same check
:func:`is_valid_point` makes, so a separate validation pass (a second decode,
~10% of a multiplication) would only repeat it; every point -- our own or a
peer's -- goes through that decoder once. If the binding's raw library handle
is unavailable, the same functions fall back to ``rbcl``'s per-item wrappers.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class _Direct:
    """libsodium's raw entry points (pointer arguments, ``int`` status)."""

    scalarmult: Callable[[int, int, int], int]
    from_hash: Callable[[int, int], int]


def _bind_direct() -> _Direct | None:
    """Typed ``ctypes`` prototypes over the functions inside rbcl's libsodium.

    rbcl loads libsodium with ``ctypes`` and calls it with default argument
    conversion; re-declaring the two hot functions with pointer-sized
    arguments lets us pass addresses into joined buffers. ``None`` if the
    binding does not expose its library handle (then the wrappers are used).
    """
    lib: Any = getattr(rbcl, "_sodium", None)
    try:
        mul_addr = ctypes.cast(lib.crypto_scalarmult_ristretto255, ctypes.c_void_p).value
        hash_addr = ctypes.cast(lib.crypto_core_ristretto255_from_hash, ctypes.c_void_p).value
    except (AttributeError, TypeError, ctypes.ArgumentError):
        return None
    if not mul_addr or not hash_addr:
        return None
    vp = ctypes.c_void_p
    mul = ctypes.CFUNCTYPE(ctypes.c_int, vp, vp, vp)(mul_addr)
    from_hash = ctypes.CFUNCTYPE(ctypes.c_int, vp, vp)(hash_addr)
    return _Direct(scalarmult=mul, from_hash=from_hash)


#: The direct libsodium calls, or None to use rbcl's wrappers (tests may set None).
_DIRECT: _Direct | None = _bind_direct()


def _address(data: bytes) -> tuple[object, int]:
    """``(keep-alive handle, address)`` of an immutable bytes object's buffer (no copy)."""
    ref = ctypes.c_char_p(data)
    addr = ctypes.cast(ref, ctypes.c_void_p).value
    assert addr is not None
    return ref, addr


def _out_buffer(size: int) -> tuple[bytearray, object, int]:
    """A zeroed writable buffer of ``size`` bytes, its ctypes view and address."""
    out = bytearray(size)
    view = (ctypes.c_char * size).from_buffer(out)
    return out, view, ctypes.addressof(view)


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
    return _split(hash_to_group_packed(values, domain=domain))


def hash_to_group_packed(values: Iterable[bytes], *, domain: bytes) -> bytes:
    """:func:`hash_to_group` of every value, joined: ``32 * n`` bytes.

    One SHA-512 per value (``hashlib``), then libsodium's ``from_hash``
    writing straight into the output buffer.
    """
    prefix = _domain_prefix(domain)
    sha512 = hashlib.sha512
    digests = b"".join([sha512(prefix + v).digest() for v in values])
    n = len(digests) // 64
    if n == 0:
        return b""
    direct = _DIRECT
    if direct is None:
        from_hash = rbcl.crypto_core_ristretto255_from_hash
        return b"".join([bytes(from_hash(digests[i : i + 64])) for i in range(0, len(digests), 64)])
    out, view, dst = _out_buffer(n * POINT_SIZE)
    keep, src = _address(digests)
    call = direct.from_hash
    for i in range(n):
        call(dst + (i << 5), src + (i << 6))
    del view, keep
    return bytes(out)


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
    pts = list(points)
    for i, p in enumerate(pts):
        if len(p) != POINT_SIZE:
            raise CryptoError(f"peer sent an invalid ristretto255 point at index {i}")
    return _split(point_mul_packed(scalar, b"".join(pts)))


def point_mul_packed(scalar: bytes, points: bytes) -> bytes:
    """``scalar * p`` for every 32-byte point of the joined ``points``, joined.

    Every point is validated by libsodium's decoder inside the multiplication
    (canonical RFC 9496 encoding, not the identity -- see the module
    docstring); CryptoError names the index of the first invalid one.
    """
    _check_scalar(scalar)
    scalar = bytes(scalar)
    if not isinstance(points, bytes):
        points = bytes(points)
    if len(points) % POINT_SIZE:
        raise CryptoError(f"packed points are not a whole number of {POINT_SIZE}-byte points")
    n = len(points) // POINT_SIZE
    if n == 0:
        return b""
    direct = _DIRECT
    if direct is None:
        return b"".join(_mul_each(scalar, points))
    out, view, dst = _out_buffer(len(points))
    keep_s, k = _address(scalar)
    keep_p, src = _address(points)
    call = direct.scalarmult
    for off in range(0, len(points), POINT_SIZE):
        if call(dst + off, k, src + off):
            raise CryptoError(
                f"peer sent an invalid ristretto255 point at index {off // POINT_SIZE}"
            )
    del view, keep_s, keep_p
    return bytes(out)


def _mul_each(scalar: bytes, points: bytes) -> list[bytes]:
    """The wrapper fallback of :func:`point_mul_packed`."""
    mul = rbcl.crypto_scalarmult_ristretto255
    out: list[bytes] = []
    for off in range(0, len(points), POINT_SIZE):
        try:
            out.append(bytes(mul(scalar, points[off : off + POINT_SIZE])))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CryptoError(
                f"peer sent an invalid ristretto255 point at index {off // POINT_SIZE}"
            ) from exc
    return out


def _split(data: bytes) -> list[bytes]:
    return [data[i : i + POINT_SIZE] for i in range(0, len(data), POINT_SIZE)]


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
