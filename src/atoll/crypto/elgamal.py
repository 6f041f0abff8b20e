"""Exponential (lifted) ElGamal over ristretto255, with baby-step giant-step decoding.

Why: intersection-sum needs additively homomorphic encryption. Paillier
through ``phe`` costs ~8 ms per encryption here; exponential ElGamal over the
group every other protocol already uses costs two *fixed-base* scalar
multiplications per item when the encryptor owns the key (below), and its
sums decode by a discrete log over a bounded range. ``docs/protocols/
intersection-sum.md`` records the measurement behind the choice.

Scheme (generator ``G``, one key per value column ``x_k``, ``X_k = x_k*G``):

* a *row* encrypts values ``m_1..m_c`` with one random ``r``:
  ``(R, C_1..C_c) = (r*G, m_1*G + r*X_1, ..., m_c*G + r*X_c)``. Sharing ``r``
  across columns is safe because each column has its own independent key
  (multi-recipient ElGamal with randomness re-use, Bellare-Boldyreva-Staddon
  2003); it saves a multiplication per column.
* the key owner computes ``m*G + r*X = (m + r*x)*G`` -- one fixed-base
  multiplication per column (:func:`encrypt_rows`); others use the public
  keys (:func:`rerandomize`).
* rows add point-wise (:func:`add_rows`); decryption computes
  ``M_k = C_k - x_k*R = (sum m)*G`` and recovers the sum by
  baby-step giant-step over ``[0, max_value]`` (:func:`decode_small`).

Only non-negative integer plaintexts are accepted; callers scale decimals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from atoll.crypto import Rng
from atoll.crypto.group import (
    GROUP_ORDER,
    IDENTITY,
    POINT_SIZE,
    base_mul,
    is_valid_point,
    point_add,
    point_mul,
    point_sub,
    scalar_from_int,
    scalar_random,
    scalar_to_int,
)
from atoll.errors import CryptoError

__all__ = [
    "DEFAULT_BABY_STEPS",
    "MAX_PLAINTEXT",
    "ElGamalKey",
    "add_rows",
    "decode_small",
    "decrypt_row",
    "encrypt_rows",
    "keygen",
    "rerandomize",
    "row_size",
]

#: Largest plaintext (and decodable sum) accepted: 2**62.
MAX_PLAINTEXT = 1 << 62
#: Baby-step table size used by default (one table per process, built on first use).
DEFAULT_BABY_STEPS = 1 << 16


@dataclass(frozen=True)
class ElGamalKey:
    """One column's key pair: secret scalar ``x`` and public point ``X = x*G``."""

    secret: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"ElGamalKey(public={self.public.hex()[:16]}...)"


def keygen(*, rng: Rng | None = None) -> ElGamalKey:
    """A fresh key pair."""
    x = scalar_random(rng=rng)
    return ElGamalKey(x, base_mul(x))


def row_size(columns: int) -> int:
    """Bytes of one encrypted row of ``columns`` values: ``32 * (1 + columns)``."""
    return POINT_SIZE * (1 + columns)


def _check_value(m: int) -> int:
    if not isinstance(m, int) or not 0 <= m <= MAX_PLAINTEXT:
        raise CryptoError(f"ElGamal plaintext must be an integer in 0..2**62, got {m!r}")
    return m


def encrypt_rows(
    keys: Sequence[ElGamalKey], rows: Sequence[Sequence[int]], *, rng: Rng | None = None
) -> bytes:
    """Encrypt each row of values (one per key) as the key owner; rows packed back to back.

    Cost per row: ``1 + len(keys)`` fixed-base multiplications.
    """
    if not keys:
        raise CryptoError("at least one key is needed")
    xs = [scalar_to_int(k.secret) for k in keys]
    c = len(keys)
    out = bytearray()
    order = GROUP_ORDER
    for values in rows:
        if len(values) != c:
            raise CryptoError(f"a row has {len(values)} values for {c} keys")
        r_bytes = scalar_random(rng=rng)
        r = scalar_to_int(r_bytes)
        out += base_mul(r_bytes)
        for m, x in zip(values, xs, strict=True):
            out += base_mul(scalar_from_int((_check_value(m) + r * x) % order))
    return bytes(out)


def add_rows(rows: Sequence[bytes], columns: int) -> bytes:
    """Point-wise sum of encrypted rows (the identity row for none)."""
    size = row_size(columns)
    acc = [IDENTITY] * (1 + columns)
    for row in rows:
        if len(row) != size:
            raise CryptoError(f"encrypted row must be {size} bytes, got {len(row)}")
        for k in range(1 + columns):
            acc[k] = point_add(acc[k], row[k * POINT_SIZE : (k + 1) * POINT_SIZE])
    return b"".join(acc)


def rerandomize(row: bytes, publics: Sequence[bytes], *, rng: Rng | None = None) -> bytes:
    """Add a fresh encryption of zeros (so the row's randomness is uniform again)."""
    c = len(publics)
    if len(row) != row_size(c):
        raise CryptoError(f"encrypted row must be {row_size(c)} bytes, got {len(row)}")
    s = scalar_random(rng=rng)
    parts = [point_add(row[:POINT_SIZE], base_mul(s))]
    for k, pub in enumerate(publics):
        start = (k + 1) * POINT_SIZE
        parts.append(point_add(row[start : start + POINT_SIZE], point_mul(s, pub)))
    return b"".join(parts)


@lru_cache(maxsize=4)
def _baby_steps(size: int) -> dict[bytes, int]:
    table: dict[bytes, int] = {IDENTITY: 0}
    g = base_mul(scalar_from_int(1))
    p = IDENTITY
    for j in range(1, size):
        p = point_add(p, g)
        table[p] = j
    return table


def decode_small(point: bytes, max_value: int, *, baby_steps: int = DEFAULT_BABY_STEPS) -> int:
    """The ``m`` in ``[0, max_value]`` with ``m*G == point``; CryptoError if none.

    Baby-step giant-step: a cached table of ``j*G`` for ``j < baby_steps``,
    then giant steps of ``baby_steps*G`` -- at most ``max_value/baby_steps``
    point subtractions, so small sums decode quickly whatever the range.
    """
    if not isinstance(max_value, int) or not 0 <= max_value <= MAX_PLAINTEXT:
        raise CryptoError(f"decoding range must be 0..2**62, got {max_value!r}")
    # Table sizes are powers of two, so buckets with different ranges share the
    # few cached tables instead of each building its own.
    size = 1 << max(1, min(baby_steps, max_value + 1) - 1).bit_length()
    size = min(size, max(2, baby_steps))
    table = _baby_steps(size)
    giant = base_mul(scalar_from_int(size))
    steps = math.ceil((max_value + 1) / size)
    current = point
    for i in range(steps):
        j = table.get(current)
        if j is not None:
            m = i * size + j
            if m <= max_value:
                return m
            break
        current = point_sub(current, giant)
    raise CryptoError(f"the decrypted value is not in 0..{max_value}")


def decrypt_row(
    keys: Sequence[ElGamalKey], row: bytes, max_value: int, *, baby_steps: int = DEFAULT_BABY_STEPS
) -> list[int]:
    """Decrypt an (added) row to its small integer plaintexts, one per key."""
    c = len(keys)
    if len(row) != row_size(c):
        raise CryptoError(f"encrypted row must be {row_size(c)} bytes, got {len(row)}")
    r_point = row[:POINT_SIZE]
    out: list[int] = []
    for k, key in enumerate(keys):
        start = (k + 1) * POINT_SIZE
        c_point = row[start : start + POINT_SIZE]
        shared = point_mul(key.secret, r_point) if r_point != IDENTITY else IDENTITY
        if c_point != IDENTITY and not is_valid_point(c_point):
            raise CryptoError("encrypted row holds an invalid point")
        out.append(decode_small(point_sub(c_point, shared), max_value, baby_steps=baby_steps))
    return out
