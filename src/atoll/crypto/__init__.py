"""The crypto seam: the only module that imports cryptographic libraries.

Why: keeping every primitive behind one small, reviewed module means the rest
of Atoll handles opaque keys and calls *recipes* (seal, open, derive, keyed
hash), never raw primitives; an audit reads one file; swapping an
implementation touches one file. We never implement a primitive that
``cryptography`` (OpenSSL) or the standard library's ``hashlib`` (BLAKE2,
MD5, SHA-2 from OpenSSL / the reference BLAKE2 code) provides.

What is here:

* :func:`md5_hex`, :func:`sha256_hex` – the industry's hashed-ID forms, and
  their batch forms :func:`md5_hex_many` / :func:`sha256_hex_many` (one tight
  loop here instead of a function call per identifier in every caller).
* :func:`keyed_hash` / :func:`keyed_hash64_many` / :func:`keyed_hash_many` –
  keyed BLAKE2b (RFC 7693), used for bucket assignment and stable
  pseudonymous identifiers (OneID).
* :func:`hkdf` – HKDF-SHA256 (RFC 5869).
* :func:`seal` / :func:`open_sealed` – AEAD (ChaCha20-Poly1305, RFC 8439)
  in a versioned envelope: ``version(1) || nonce(12) || ciphertext||tag``.
* :func:`constant_time_equal` – never compare secrets with ``==``.

Submodules hold the larger families, each the only importer of its library
for its purpose: :mod:`atoll.crypto.group` (ristretto255 through libsodium,
the group every public-key protocol runs over).

Randomness is injected (``rng``) so that known-answer tests can replay
byte-for-byte; production callers leave it ``None`` (``os.urandom``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from atoll.errors import CryptoError, DecryptionError

__all__ = [
    "AEAD_KEY_SIZE",
    "SEAL_VERSION",
    "Rng",
    "aead_decrypt",
    "aead_encrypt",
    "constant_time_equal",
    "hkdf",
    "keyed_hash",
    "keyed_hash64_many",
    "keyed_hash_many",
    "md5_hex",
    "md5_hex_many",
    "new_key",
    "open_sealed",
    "seal",
    "sha256_digest",
    "sha256_file",
    "sha256_hex",
    "sha256_hex_many",
]

#: A source of random bytes: ``rng(n) -> n bytes``. ``os.urandom`` by default.
Rng = Callable[[int], bytes]

#: Key size of :func:`seal` (ChaCha20-Poly1305), in bytes.
AEAD_KEY_SIZE = 32
#: First byte of every sealed envelope; bump on any format change.
SEAL_VERSION = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
_BLAKE2B_MAX_KEY = 64


def _rng(rng: Rng | None) -> Rng:
    return os.urandom if rng is None else rng


def new_key(size: int = AEAD_KEY_SIZE, *, rng: Rng | None = None) -> bytes:
    """Return a fresh uniformly random key of ``size`` bytes."""
    if size < 16:
        raise CryptoError(f"refusing to make a key shorter than 16 bytes (asked {size})")
    key = _rng(rng)(size)
    if len(key) != size:
        raise CryptoError("rng returned the wrong number of bytes")
    return key


def md5_hex(data: bytes) -> str:
    """Lowercase hex MD5 of ``data`` (an exchange format, not a security measure)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def md5_hex_many(values: Iterable[bytes]) -> list[str]:
    """Lowercase hex MD5 of each value, in order (batch form of :func:`md5_hex`).

    Neither Arrow nor numpy has an MD5 kernel, so hashing identifiers is a
    per-value loop; keeping it here (one comprehension, constructor bound
    once) is about a third faster than calling :func:`md5_hex` per value.
    """
    md5 = hashlib.md5
    return [md5(value, usedforsecurity=False).hexdigest() for value in values]


def sha256_hex_many(values: Iterable[bytes]) -> list[str]:
    """Lowercase hex SHA-256 of each value, in order (batch form of :func:`sha256_hex`)."""
    sha256 = hashlib.sha256
    return [sha256(value).hexdigest() for value in values]


def sha256_digest(data: bytes) -> bytes:
    """Raw 32-byte SHA-256 of ``data`` (content hashes of files and manifests)."""
    return hashlib.sha256(data).digest()


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Lowercase hex SHA-256 of a file, read in ``chunk``-sized pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_hash_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise CryptoError("keyed hash key must be bytes")
    if not 1 <= len(key) <= _BLAKE2B_MAX_KEY:
        raise CryptoError(f"keyed hash key must be 1..{_BLAKE2B_MAX_KEY} bytes, got {len(key)}")


def keyed_hash(key: bytes, data: bytes, *, size: int = 32, person: bytes = b"") -> bytes:
    """Keyed BLAKE2b of ``data`` (RFC 7693), ``size`` bytes, optional personalisation."""
    _check_hash_key(key)
    return hashlib.blake2b(data, digest_size=size, key=key, person=person).digest()


def keyed_hash64_many(
    key: bytes, values: Iterable[bytes], *, person: bytes = b""
) -> npt.NDArray[np.uint64]:
    """Keyed BLAKE2b-64 of each value, as big-endian unsigned 64-bit integers.

    This is the bucket function's core: ``int.from_bytes(BLAKE2b(v, key=key,
    digest_size=8, person=person), "big")``. The keyed state is built once and
    copied per value (≈0.5 µs a value on one core).
    """
    _check_hash_key(key)
    base = hashlib.blake2b(digest_size=8, key=key, person=person)
    out = bytearray()
    for value in values:
        state = base.copy()
        state.update(value)
        out += state.digest()
    return np.frombuffer(bytes(out), dtype=">u8").astype(np.uint64)


def keyed_hash_many(
    key: bytes, values: Iterable[bytes], *, size: int = 32, person: bytes = b""
) -> npt.NDArray[np.uint8]:
    """Keyed BLAKE2b-``size`` of each value, as a ``(len(values), size)`` ``uint8`` matrix.

    Row ``i`` equals ``keyed_hash(key, values[i], size=size, person=person)``.
    Used where many digests wider than 64 bits are needed at once (OneID
    pseudonyms); the keyed state is built once and copied per value.
    """
    _check_hash_key(key)
    if not 1 <= size <= 64:
        raise CryptoError(f"BLAKE2b digest size must be 1..64 bytes, got {size}")
    base = hashlib.blake2b(digest_size=size, key=key, person=person)
    out = bytearray()
    for value in values:
        state = base.copy()
        state.update(value)
        out += state.digest()
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(-1, size)


def hkdf(key_material: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 (RFC 5869): derive ``length`` bytes bound to ``info``."""
    if len(key_material) < 16:
        raise CryptoError("HKDF input key material must be at least 16 bytes")
    if not 1 <= length <= 255 * 32:
        raise CryptoError(f"HKDF output length out of range: {length}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key_material)


def _check_aead_key(key: bytes) -> None:
    if len(key) != AEAD_KEY_SIZE:
        raise CryptoError(f"AEAD key must be {AEAD_KEY_SIZE} bytes, got {len(key)}")


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Raw ChaCha20-Poly1305 (RFC 8439): ``ciphertext || tag``. Prefer :func:`seal`.

    The caller owns nonce uniqueness; this exists for recipes that derive
    nonces deterministically (per-chunk counters) and for known-answer tests.
    """
    _check_aead_key(key)
    if len(nonce) != _NONCE_SIZE:
        raise CryptoError(f"AEAD nonce must be {_NONCE_SIZE} bytes, got {len(nonce)}")
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`aead_encrypt`; :class:`DecryptionError` on any failure."""
    _check_aead_key(key)
    if len(nonce) != _NONCE_SIZE or len(ciphertext) < _TAG_SIZE:
        raise DecryptionError()
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise DecryptionError() from exc


def seal(key: bytes, plaintext: bytes, *, aad: bytes = b"", rng: Rng | None = None) -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key`` (ChaCha20-Poly1305).

    Output: ``SEAL_VERSION (1 byte) || nonce (12) || ciphertext || tag (16)``.
    The version byte and ``aad`` are both authenticated. Nonces are random
    (96 bits): keep well under 2**32 messages per key.
    """
    _check_aead_key(key)
    nonce = _rng(rng)(_NONCE_SIZE)
    if len(nonce) != _NONCE_SIZE:
        raise CryptoError("rng returned the wrong number of bytes")
    header = bytes([SEAL_VERSION])
    return header + nonce + aead_encrypt(key, nonce, plaintext, header + aad)


def open_sealed(key: bytes, envelope: bytes, *, aad: bytes = b"") -> bytes:
    """Decrypt an envelope made by :func:`seal`; raise :class:`DecryptionError` on any failure."""
    _check_aead_key(key)
    if len(envelope) < 1 + _NONCE_SIZE + _TAG_SIZE or envelope[0] != SEAL_VERSION:
        raise DecryptionError()
    nonce = envelope[1 : 1 + _NONCE_SIZE]
    return aead_decrypt(key, nonce, envelope[1 + _NONCE_SIZE :], envelope[:1] + aad)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two secrets in time independent of where they differ."""
    return hmac.compare_digest(a, b)
