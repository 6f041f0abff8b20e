"""The data side of the covert query: ID tags, fixed-length label records, the
provider's label source, prefix statistics, bucket-mode entries and decoys.

Why a separate module: :mod:`atoll.protocols.covert` is the message flow; this
is what the flow reads and sends -- kept free of files, sockets and clocks so
that the same code serves an in-memory table (tests, ``atoll query local``)
and memory-mapped index files (the provider service, built by
:mod:`atoll.service.covert`).

Conventions every party must share (docs/protocols/covert-query.md):

* **Public ID tag** ``tag(x) = SHA-256("atoll/covert/id/v1" || 0x00 || x)[:16]``
  of the *normalized* identifier ``x`` (UTF-8). Hash-truncation amplification
  uses its leading bits: the candidate group of ``x`` at ``bits`` is every
  provider ID whose tag shares the first ``bits`` bits.
* **Label record**: exactly ``record_size`` bytes. A present record is
  ``RECORD_VERSION (1) || u16 len || JSON array of the label values || zero
  padding``; "no record" is ``record_size`` zero bytes. Fixed length is what
  lets a masked slot hide whether the provider knew the ID.
* **Bucket-mode entry** of provider ID ``y``, with ``F = k * H2G(y)`` the
  OPRF value (ristretto255): ``otag = BLAKE2b(F, "tag")[:16]`` and
  ``ct = nonce (12) || ChaCha20-Poly1305(K = BLAKE2b(F, "key"), record)``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from atoll.crypto import Rng, _rng, aead_decrypt, aead_encrypt, keyed_hash, sha256_digest
from atoll.crypto.group import (
    hash_to_group,
    hash_to_group_many,
    point_mul,
    point_mul_many,
    scalar_invert,
)
from atoll.errors import ConfigError, DecryptionError, InputError, RemoteProtocolError

__all__ = [
    "AEAD_OVERHEAD",
    "MAX_BUCKET_BITS",
    "MAX_ID_BYTES",
    "OPRF_DOMAIN",
    "RECORD_VERSION",
    "TAG_SIZE",
    "ArrayLabelSource",
    "BucketArrays",
    "DecoySource",
    "LabelSource",
    "LibraryDecoys",
    "PhoneDecoys",
    "PrefixStat",
    "RecordCodec",
    "bucket_entries",
    "build_bucket_arrays",
    "choose_prefix_bits",
    "id_tag",
    "id_tag_matrix",
    "id_tags",
    "open_bucket_entry",
    "oprf_blind",
    "oprf_entry_keys",
    "oprf_entry_matrices",
    "oprf_finalize",
    "prefix_of",
    "prefix_stats",
    "rng_below",
    "seal_entries",
    "shuffle",
]

#: Bytes of a public ID tag and of a bucket-mode OPRF tag.
TAG_SIZE = 16
#: First byte of a present label record (0 means "no record").
RECORD_VERSION = 1
#: Longest normalized identifier accepted on the wire, in UTF-8 bytes.
MAX_ID_BYTES = 256
#: Finest bucket-mode prefix (2^24 buckets).
MAX_BUCKET_BITS = 24
#: Nonce + Poly1305 tag around a bucket-mode record.
AEAD_OVERHEAD = 12 + 16
#: Hash-to-group domain of the bucket-mode OPRF.
OPRF_DOMAIN = b"atoll/covert/oprf/v1"
_TAG_PREFIX = b"atoll/covert/id/v1\x00"
_DERIVE_KEY = b"atoll/covert/oprf-derive/v1"
_ENTRY_AAD = b"atoll/covert/bucket-entry/v1"
#: One encoder for every record (``json.dumps`` with options builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


# --- identifiers and prefixes ---------------------------------------------------


def id_tag(normalized_id: str) -> bytes:
    """The 16-byte public tag of a normalized identifier."""
    data = normalized_id.encode("utf-8")
    if not data or len(data) > MAX_ID_BYTES:
        raise ConfigError(f"identifier must be 1..{MAX_ID_BYTES} UTF-8 bytes")
    return sha256_digest(_TAG_PREFIX + data)[:TAG_SIZE]


def id_tags(ids: Sequence[str]) -> list[bytes]:
    """:func:`id_tag` of every identifier, in order."""
    return [id_tag(x) for x in ids]


def prefix_of(tag: bytes, bits: int) -> int:
    """The first ``bits`` bits of ``tag`` as an integer (0 when ``bits`` is 0)."""
    if not 0 <= bits <= 64:
        raise ConfigError(f"prefix length must be 0..64 bits, got {bits}")
    return int.from_bytes(tag[:8], "big") >> (64 - bits) if bits else 0


def _tag_bound(bits: int, value: int) -> bytes:
    return (value << (128 - bits)).to_bytes(TAG_SIZE, "big") if bits else bytes(TAG_SIZE)


# --- randomness helpers (injected rng, no global RNG) --------------------------


def rng_below(bound: int, rng: Rng | None = None) -> int:
    """A uniform integer in ``[0, bound)`` by rejection sampling on rng bytes."""
    if bound < 1:
        raise ConfigError("rng_below needs a positive bound")
    if bound == 1:
        return 0
    source = _rng(rng)
    size = (bound.bit_length() + 7) // 8
    excess = 8 * size - (bound - 1).bit_length()
    while True:
        value = int.from_bytes(source(size), "big") >> excess
        if value < bound:
            return value


def shuffle(items: list[Any], rng: Rng | None = None) -> None:
    """Uniform in-place Fisher-Yates shuffle driven by ``rng``."""
    for i in range(len(items) - 1, 0, -1):
        j = rng_below(i + 1, rng)
        items[i], items[j] = items[j], items[i]


# --- fixed-length label records -------------------------------------------------


@dataclass(frozen=True)
class RecordCodec:
    """Fixed-length encoding of a label record (see the module docstring)."""

    labels: tuple[str, ...]
    record_size: int

    def __post_init__(self) -> None:
        if self.record_size < 8 or self.record_size > 1 << 20:
            raise ConfigError(f"record size must be 8..2^20 bytes, got {self.record_size}")

    @staticmethod
    def payload(values: Sequence[Any]) -> bytes:
        """The JSON body of a record (compact, UTF-8; non-JSON types as strings)."""
        return _JSON.encode(list(values)).encode("utf-8")

    @staticmethod
    def size_for(payload_len: int) -> int:
        """The record size that fits a payload of ``payload_len`` bytes (multiple of 8)."""
        return max(16, (3 + payload_len + 7) // 8 * 8)

    def encode(self, values: Sequence[Any]) -> bytes:
        """One present record, padded to :attr:`record_size`."""
        return self.encode_payload(self.payload(values))

    def encode_payload(self, body: bytes) -> bytes:
        """One present record from a :meth:`payload` body."""
        if 3 + len(body) > self.record_size:
            raise InputError(
                f"label record of {len(body)} bytes exceeds the record size {self.record_size}"
            )
        out = bytes([RECORD_VERSION]) + len(body).to_bytes(2, "big") + body
        return out + bytes(self.record_size - len(out))

    def empty(self) -> bytes:
        """The "no record" encoding (all zeros)."""
        return bytes(self.record_size)

    def decode(self, record: bytes) -> list[Any] | None:
        """Values of a record, or None for "no record"; RemoteProtocolError if malformed."""
        if len(record) != self.record_size:
            raise RemoteProtocolError("label record has the wrong length")
        if record[0] == 0:
            if any(record):
                raise RemoteProtocolError("'no record' slot is not all zeros")
            return None
        if record[0] != RECORD_VERSION:
            raise RemoteProtocolError(f"unsupported label record version {record[0]}")
        size = int.from_bytes(record[1:3], "big")
        if 3 + size > self.record_size or any(record[3 + size :]):
            raise RemoteProtocolError("label record length or padding is invalid")
        try:
            values = json.loads(record[3 : 3 + size].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RemoteProtocolError("label record is not valid JSON") from exc
        if not isinstance(values, list) or len(values) != len(self.labels):
            raise RemoteProtocolError("label record does not match the label columns")
        return values


# --- bucket-mode OPRF entries --------------------------------------------------


def oprf_entry_keys(f_point: bytes) -> tuple[bytes, bytes]:
    """``(otag, record key)`` derived from an OPRF value ``F``."""
    otag = keyed_hash(f_point, b"tag", size=TAG_SIZE, person=b"atoll-cq-tag")
    key = keyed_hash(f_point, _DERIVE_KEY, size=32, person=b"atoll-cq-key")
    return otag, key


def id_tag_matrix(raw_ids: Sequence[bytes]) -> npt.NDArray[np.uint8]:
    """:func:`id_tag` of many UTF-8 encoded normalized identifiers, as a ``(n, 16)`` matrix.

    The batch form used by the index build: one C hash call per ID and one
    buffer, no per-ID Python objects kept. IDs must be 1..``MAX_ID_BYTES`` bytes.
    """
    if any(not 0 < len(x) <= MAX_ID_BYTES for x in raw_ids):
        raise ConfigError(f"identifier must be 1..{MAX_ID_BYTES} UTF-8 bytes")
    prefix = _TAG_PREFIX
    blob = b"".join([sha256_digest(prefix + x)[:TAG_SIZE] for x in raw_ids])
    return np.frombuffer(blob, dtype=np.uint8).reshape(-1, TAG_SIZE)


def oprf_entry_matrices(
    oprf_key: bytes, raw_ids: Sequence[bytes]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Bucket-mode ``(otags (n, 16), record keys (n, 32))`` of many UTF-8 encoded IDs.

    The setup's per-row cost: one hash-to-group and one scalar
    multiplication (the batch calls of :mod:`atoll.crypto.group`), then two
    keyed hashes of the OPRF value ``F = k * H2G(y)`` (:func:`oprf_entry_keys`).
    """
    points = hash_to_group_many(raw_ids, domain=OPRF_DOMAIN)
    values = point_mul_many(oprf_key, points)
    del points
    otags = bytearray()
    keys = bytearray()
    for f_point in values:
        otag, key = oprf_entry_keys(f_point)
        otags += otag
        keys += key
    return (
        np.frombuffer(bytes(otags), dtype=np.uint8).reshape(-1, TAG_SIZE),
        np.frombuffer(bytes(keys), dtype=np.uint8).reshape(-1, 32),
    )


def seal_entries(
    keys: npt.NDArray[np.uint8], records: npt.NDArray[np.uint8], *, rng: Rng | None = None
) -> npt.NDArray[np.uint8]:
    """Encrypt row ``i`` of ``records`` under ``keys[i]``: ``(n, 12 + record_size + 16)``.

    Each entry is ``nonce || ChaCha20-Poly1305(key, record, aad)`` with a fresh
    random nonce (all nonces drawn in one call of ``rng``).
    """
    count = len(records)
    if records.ndim != 2 or keys.shape != (count, 32):
        raise ConfigError("seal_entries needs a record matrix and one 32-byte key per record")
    size = records.shape[1]
    width = AEAD_OVERHEAD + size
    nonces = _rng(rng)(12 * count) if count else b""
    if len(nonces) != 12 * count:
        raise ConfigError("rng returned the wrong number of bytes")
    out = bytearray()
    key_blob = keys.tobytes()
    rec_blob = records.tobytes()
    for i in range(count):
        nonce = nonces[12 * i : 12 * i + 12]
        out += nonce
        out += aead_encrypt(
            key_blob[32 * i : 32 * i + 32], nonce, rec_blob[size * i : size * (i + 1)], _ENTRY_AAD
        )
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(-1, width)


def bucket_entries(
    oprf_key: bytes, ids: Sequence[str], records: Sequence[bytes], *, rng: Rng | None = None
) -> tuple[list[bytes], list[bytes]]:
    """The provider's bucket-mode entries ``(otags, cts)`` for ``ids`` (setup work).

    One hash-to-group and one scalar multiplication per row (the setup
    cost reported by the benchmark); each record is encrypted under its
    F-derived key with a fresh random nonce. List form of
    :func:`oprf_entry_matrices` + :func:`seal_entries` (in-memory sources).
    """
    if len(ids) != len(records):
        raise ConfigError("ids and records differ in length")
    if not ids:
        return [], []
    otags, keys = oprf_entry_matrices(oprf_key, [x.encode("utf-8") for x in ids])
    matrix = np.frombuffer(b"".join(records), dtype=np.uint8).reshape(len(records), -1)
    cts = seal_entries(keys, matrix, rng=rng)
    return [bytes(t) for t in otags], [bytes(c) for c in cts]


def open_bucket_entry(key: bytes, ct: bytes) -> bytes:
    """Decrypt one bucket-mode entry with the client's F-derived key.

    Raises DecryptionError for any entry that is not the client's own.
    """
    if len(ct) < AEAD_OVERHEAD:
        raise DecryptionError()
    return aead_decrypt(key, ct[:12], ct[12:], _ENTRY_AAD)


def oprf_blind(normalized_id: str, *, rng: Rng | None = None) -> tuple[bytes, bytes]:
    """``(rho, rho * H2G(x))``: the client's blinding of its identifier."""
    from atoll.crypto.group import scalar_random

    rho = scalar_random(rng=rng)
    return rho, point_mul(rho, hash_to_group(normalized_id.encode("utf-8"), domain=OPRF_DOMAIN))


def oprf_finalize(rho: bytes, evaluated: bytes) -> bytes:
    """Unblind the provider's ``k * rho * H2G(x)`` to ``F = k * H2G(x)`` (validates the point)."""
    return point_mul(scalar_invert(rho), evaluated)


# --- the provider's label source -----------------------------------------------


@dataclass(frozen=True)
class PrefixStat:
    """Size of the hash-truncation groups at one prefix length."""

    bits: int
    min: int
    mean: float
    max: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON form."""
        return {"bits": self.bits, "min": self.min, "mean": self.mean, "max": self.max}


def prefix_stats(tags: npt.NDArray[Any], *, max_bits: int = 20) -> list[PrefixStat]:
    """Group sizes per prefix length 0..max_bits over a sorted ``S16`` tag array."""
    total = len(tags)
    head = (
        np.frombuffer(np.ascontiguousarray(tags).tobytes(), dtype=">u8")[::2].astype(np.uint64)
        if total
        else np.zeros(0, dtype=np.uint64)
    )
    out = []
    for bits in range(max_bits + 1):
        if bits == 0:
            out.append(PrefixStat(0, total, float(total), total))
            continue
        counts = np.bincount((head >> np.uint64(64 - bits)).astype(np.int64), minlength=1 << bits)
        out.append(PrefixStat(bits, int(counts.min()), total / (1 << bits), int(counts.max())))
    return out


def choose_prefix_bits(stats: Sequence[PrefixStat], n: int) -> int:
    """The longest prefix whose average group still holds at least ``n`` IDs (0 if none)."""
    if n < 1:
        raise ConfigError("N must be at least 1")
    best = 0
    for stat in stats:
        if stat.mean >= n:
            best = max(best, stat.bits)
    return best


class LabelSource(Protocol):
    """What the provider's machine reads: records by ID tag, by prefix, bucket entries."""

    @property
    def codec(self) -> RecordCodec:
        """Label names and the fixed record size."""
        ...

    def lookup(self, tags: Sequence[bytes]) -> list[bytes | None]:
        """The record of each tag, or None where the provider has no such ID."""
        ...

    def prefix_group(self, bits: int, value: int) -> tuple[list[bytes], list[bytes]]:
        """``(tags, records)`` of every ID whose tag starts with the prefix, tag order."""
        ...

    def prefix_count(self, bits: int, value: int) -> int:
        """How many IDs share the prefix."""
        ...

    def bucket_group(self, bits: int, value: int) -> tuple[bytes, bytes, int]:
        """Bucket mode: ``(otags packed, cts packed, count)`` for the prefix."""
        ...

    @property
    def oprf_key(self) -> bytes | None:
        """Bucket mode's OPRF key (None when bucket mode was not set up)."""
        ...

    @property
    def bucket_bits(self) -> int:
        """Finest bucket-mode prefix length (0 when not set up)."""
        ...


@dataclass(frozen=True)
class BucketArrays:
    """Bucket-mode entries ordered by (prefix at ``bits``, otag); ``offsets[p]`` starts prefix p."""

    bits: int
    oprf_key: bytes
    otags: npt.NDArray[np.uint8]  # (rows, 16)
    cts: npt.NDArray[np.uint8]  # (rows, 12 + record_size + 16)
    offsets: npt.NDArray[np.int64]  # (2**bits + 1,)

    def __post_init__(self) -> None:
        if not 0 <= self.bits <= MAX_BUCKET_BITS:
            raise ConfigError(f"bucket bits must be 0..{MAX_BUCKET_BITS}")
        if len(self.offsets) != (1 << self.bits) + 1 or len(self.otags) != len(self.cts):
            raise ConfigError("bucket arrays are inconsistent")


@dataclass
class ArrayLabelSource:
    """A :class:`LabelSource` over numpy arrays (in memory or memory-mapped).

    ``tags`` is an ``S16`` array sorted ascending; ``records`` a
    ``(rows, record_size)`` ``uint8`` matrix aligned with it.
    """

    codec: RecordCodec
    tags: npt.NDArray[Any]
    records: npt.NDArray[np.uint8]
    bucket: BucketArrays | None = None
    _tag_bytes: npt.NDArray[np.uint8] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tags.dtype != np.dtype("S16") or self.records.ndim != 2:
            raise ConfigError("label source needs S16 tags and a 2-D record matrix")
        if len(self.tags) != len(self.records):
            raise ConfigError("tags and records differ in length")
        if len(self.records) and self.records.shape[1] != self.codec.record_size:
            raise ConfigError("record matrix width differs from the record size")
        self._tag_bytes = self.tags.view(np.uint8).reshape(-1, TAG_SIZE)

    @classmethod
    def from_rows(
        cls,
        ids: Sequence[str],
        values: Sequence[Sequence[Any]],
        labels: Sequence[str],
        *,
        bucket_bits: int | None = None,
        oprf_key: bytes | None = None,
        rng: Rng | None = None,
    ) -> ArrayLabelSource:
        """Build in memory from normalized IDs and their label values (tests, small DBs).

        Duplicate IDs are an :class:`InputError`. With ``bucket_bits`` the
        bucket-mode entries are computed too (one OPRF evaluation per row).
        """
        if len(ids) != len(values):
            raise ConfigError("ids and values differ in length")
        payload = max((len(RecordCodec.payload(v)) for v in values), default=0)
        codec = RecordCodec(tuple(labels), RecordCodec.size_for(payload))
        tags = id_tags(ids)
        order = sorted(range(len(ids)), key=tags.__getitem__)
        for a, b in itertools.pairwise(order):
            if tags[a] == tags[b]:
                raise InputError(f"identifier {ids[a]!r} appears more than once in the database")
        tag_arr = np.array([tags[i] for i in order], dtype="S16")
        records = [codec.encode(values[i]) for i in order]
        rec = np.frombuffer(b"".join(records), dtype=np.uint8).reshape(-1, codec.record_size)
        bucket = None
        if bucket_bits is not None:
            if oprf_key is None:
                raise ConfigError("bucket mode needs an OPRF key")
            ordered_ids = [ids[i] for i in order]
            otags, cts = bucket_entries(oprf_key, ordered_ids, records, rng=rng)
            bucket = build_bucket_arrays(
                bucket_bits, oprf_key, [tags[i] for i in order], otags, cts, codec.record_size
            )
        return cls(codec, tag_arr, rec.copy(), bucket)

    def __len__(self) -> int:
        return len(self.tags)

    def _range(self, bits: int, value: int) -> tuple[int, int]:
        if not 0 <= bits <= 64 or not 0 <= value < (1 << bits):
            raise RemoteProtocolError(f"invalid prefix {value} of {bits} bits")
        lo = np.searchsorted(self.tags, np.array([_tag_bound(bits, value)], dtype="S16"))[0]
        if value + 1 == 1 << bits:
            return int(lo), len(self.tags)
        hi = np.searchsorted(self.tags, np.array([_tag_bound(bits, value + 1)], dtype="S16"))[0]
        return int(lo), int(hi)

    def lookup(self, tags: Sequence[bytes]) -> list[bytes | None]:
        """See :class:`LabelSource`."""
        if not tags:
            return []
        probe = np.array(list(tags), dtype="S16")
        pos = np.searchsorted(self.tags, probe)
        out: list[bytes | None] = []
        for tag, i in zip(tags, pos.tolist(), strict=True):
            if i < len(self.tags) and self._tag_bytes[i].tobytes() == tag:
                out.append(self.records[i].tobytes())
            else:
                out.append(None)
        return out

    def prefix_group(self, bits: int, value: int) -> tuple[list[bytes], list[bytes]]:
        """See :class:`LabelSource`."""
        lo, hi = self._range(bits, value)
        tag_blob = self._tag_bytes[lo:hi].tobytes()
        rec_blob = self.records[lo:hi].tobytes()
        size = self.codec.record_size
        return (
            [tag_blob[i : i + TAG_SIZE] for i in range(0, len(tag_blob), TAG_SIZE)],
            [rec_blob[i : i + size] for i in range(0, len(rec_blob), size)],
        )

    def prefix_count(self, bits: int, value: int) -> int:
        """See :class:`LabelSource`."""
        lo, hi = self._range(bits, value)
        return hi - lo

    @property
    def oprf_key(self) -> bytes | None:
        """See :class:`LabelSource`."""
        return None if self.bucket is None else self.bucket.oprf_key

    @property
    def bucket_bits(self) -> int:
        """See :class:`LabelSource`."""
        return 0 if self.bucket is None else self.bucket.bits

    def bucket_group(self, bits: int, value: int) -> tuple[bytes, bytes, int]:
        """See :class:`LabelSource`."""
        b = self.bucket
        if b is None:
            raise RemoteProtocolError("this provider does not serve bucket mode")
        if not 0 <= bits <= b.bits or not 0 <= value < (1 << bits):
            raise RemoteProtocolError(
                f"bucket prefix must be at most {b.bits} bits (got {bits} bits, value {value})"
            )
        shift = b.bits - bits
        lo = int(b.offsets[value << shift])
        hi = int(b.offsets[(value + 1) << shift])
        return b.otags[lo:hi].tobytes(), b.cts[lo:hi].tobytes(), hi - lo

    def stats(self, *, max_bits: int = 20) -> list[PrefixStat]:
        """Prefix statistics the provider publishes (see :func:`prefix_stats`)."""
        return prefix_stats(self.tags, max_bits=max_bits)


def build_bucket_arrays(
    bits: int,
    oprf_key: bytes,
    tags: Sequence[bytes],
    otags: Sequence[bytes],
    cts: Sequence[bytes],
    record_size: int,
) -> BucketArrays:
    """Order entries by (public prefix at ``bits``, otag) and compute bucket offsets."""
    prefixes = [prefix_of(t, bits) for t in tags]
    order = sorted(range(len(tags)), key=lambda i: (prefixes[i], otags[i]))
    counts = (
        np.bincount(np.array(prefixes, dtype=np.int64), minlength=1 << bits)
        if tags
        else np.zeros(1 << bits, dtype=np.int64)
    )
    offsets = np.zeros((1 << bits) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    width = AEAD_OVERHEAD + record_size
    ot = np.frombuffer(b"".join(otags[i] for i in order), dtype=np.uint8).reshape(-1, TAG_SIZE)
    ct = np.frombuffer(b"".join(cts[i] for i in order), dtype=np.uint8).reshape(-1, width)
    return BucketArrays(bits, oprf_key, ot.copy(), ct.copy(), offsets)


# --- decoys (ID master library) -------------------------------------------------


class DecoySource(Protocol):
    """Where decoy identifiers come from (same type and format as the true ID)."""

    def sample(self, count: int, exclude: str, rng: Rng | None) -> list[str]:
        """``count`` distinct decoys, none equal to ``exclude``."""
        ...


@dataclass(frozen=True)
class LibraryDecoys:
    """Decoys drawn uniformly without replacement from an ID master library.

    The library should come from the same population as the true IDs (e.g.
    the brand's whole member base): then the provider's hit rate on decoys
    matches that on true IDs and the hit flags do not single out the true
    slot. Decoys are compared by value after normalization.
    """

    ids: tuple[str, ...]

    def sample(self, count: int, exclude: str, rng: Rng | None) -> list[str]:
        """See :class:`DecoySource`."""
        pool = len(self.ids)
        if count > pool - (1 if exclude in self.ids else 0):
            raise ConfigError(
                f"the ID master library has {pool} IDs; {count} distinct decoys are needed"
            )
        chosen: dict[str, None] = {}
        while len(chosen) < count:
            candidate = self.ids[rng_below(pool, rng)]
            if candidate != exclude:
                chosen[candidate] = None
        return list(chosen)


@dataclass(frozen=True)
class PhoneDecoys:
    """Uniformly random valid mainland-China mobile numbers (``1[3-9]`` + 9 digits).

    Same type and format as a normalized phone, but *not* the same
    population as real customers: most will miss the provider's database,
    so the hit flags point at the true slot and the k_min rule will (rightly)
    refuse to buy. Prefer :class:`LibraryDecoys` with a real master library.
    """

    def sample(self, count: int, exclude: str, rng: Rng | None) -> list[str]:
        """See :class:`DecoySource`."""
        chosen: dict[str, None] = {}
        while len(chosen) < count:
            second = 3 + rng_below(7, rng)
            rest = rng_below(10**9, rng)
            candidate = f"1{second}{rest:09d}"
            if candidate != exclude:
                chosen[candidate] = None
        return list(chosen)
