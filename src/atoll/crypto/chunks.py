"""AES-256-GCM sealing of dataset chunks, and per-version chunk keys.

Why: a party uploads its dataset to the island as many sealed chunks (a few
MiB each, bucket by bucket), so that the island can open only the buckets a
job needs and a single flipped, swapped or replayed chunk is caught on its
own. AES-256-GCM is the industry's bulk AEAD (AES-NI makes it run at GB/s
through OpenSSL); the caller supplies the associated data that pins a chunk
to its place (dataset, version, bucket, index, count -- see
:mod:`atoll.data.envelope`).

Sealed chunk::

    CHUNK_VERSION (1 byte) || nonce (12, random) || ciphertext || tag (16)

The version byte is authenticated as part of the associated data. Nonces are
random 96-bit values; each *version* of a dataset uses its own key derived
with :func:`derive_chunk_key` (HKDF-SHA256 over the dataset key, the dataset
id and the version), so the number of chunks under one key stays far below
the 2**32 bound for random GCM nonces.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoll.crypto import Rng, hkdf
from atoll.errors import CryptoError, DecryptionError

__all__ = [
    "CHUNK_KEY_SIZE",
    "CHUNK_OVERHEAD",
    "CHUNK_VERSION",
    "ChunkSealer",
    "derive_chunk_key",
    "open_chunk",
    "seal_chunk",
]

#: First byte of every sealed chunk.
CHUNK_VERSION = 1
#: AES-256 key size.
CHUNK_KEY_SIZE = 32
_NONCE = 12
_TAG = 16
#: Bytes a sealed chunk adds to its plaintext.
CHUNK_OVERHEAD = 1 + _NONCE + _TAG
_HEADER = bytes([CHUNK_VERSION])


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != CHUNK_KEY_SIZE:
        raise CryptoError(f"chunk key must be {CHUNK_KEY_SIZE} bytes")


def derive_chunk_key(dataset_key: bytes, *, dataset_id: str, version: int) -> bytes:
    """The AES-256 key of one dataset version: HKDF-SHA256(dataset key, id, version)."""
    _check_key(dataset_key)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CryptoError(f"dataset version must be a positive integer, got {version!r}")
    info = b"atoll-chunk-key-v1|" + dataset_id.encode("utf-8") + b"|" + version.to_bytes(8, "big")
    return hkdf(bytes(dataset_key), info=info, length=CHUNK_KEY_SIZE)


class ChunkSealer:
    """Seals and opens chunks under one key (the AES key schedule is built once)."""

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._aead = AESGCM(bytes(key))

    def seal(self, plaintext: bytes, *, aad: bytes, rng: Rng | None = None) -> bytes:
        """Seal ``plaintext``; ``aad`` is authenticated, not stored."""
        nonce = (os.urandom if rng is None else rng)(_NONCE)
        if len(nonce) != _NONCE:
            raise CryptoError("rng returned the wrong number of bytes")
        return _HEADER + nonce + self._aead.encrypt(nonce, plaintext, _HEADER + aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """Open a sealed chunk; :class:`DecryptionError` on any failure (opaque)."""
        if len(sealed) < CHUNK_OVERHEAD or sealed[0] != CHUNK_VERSION:
            raise DecryptionError()
        nonce = bytes(sealed[1 : 1 + _NONCE])
        try:
            return self._aead.decrypt(nonce, bytes(sealed[1 + _NONCE :]), _HEADER + aad)
        except InvalidTag as exc:
            raise DecryptionError() from exc


def seal_chunk(key: bytes, plaintext: bytes, *, aad: bytes, rng: Rng | None = None) -> bytes:
    """One-off form of :meth:`ChunkSealer.seal`."""
    return ChunkSealer(key).seal(plaintext, aad=aad, rng=rng)


def open_chunk(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    """One-off form of :meth:`ChunkSealer.open`."""
    return ChunkSealer(key).open(sealed, aad=aad)
