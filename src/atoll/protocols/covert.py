"""Covert query (隐匿查询, seed §9): look up labels of a few IDs without telling the
provider which ID was asked about, and pay only for released answers.

Why: a brand wants to ask a data provider "what do you know about this
customer?" in real time, but revealing the customer to the provider is
exactly what it may not do. The seed's answer is N-anonymity plus a 1-of-N
selection: the client hides its ID in a group of N, the provider answers all
N slots masked so that only the client's slot can be opened, and the
provider is paid when it releases the result key. This module holds the two
roles as sans-IO machines (:class:`CovertClient`, :class:`CovertProvider`)
and their messages (type range 0x04xx). Three modes share one flow:

``rsa``     the seed, faithfully: N RSA public keys, one textbook-RSA
            ciphertext decrypted under all N private keys
            (:mod:`atoll.crypto.rsa`);
``ec``      same flow, the key selection by a Chou–Orlandi 1-of-N OT over
            ristretto255 (:mod:`atoll.crypto.ot`) -- no RSA;
``bucket``  hash-truncation groups served from a pre-encrypted bucket of
            the provider's DB through an OPRF (:mod:`.covert_source`).

Message flow (client C, provider P; every list is one entry per query of
the batch -- a single query is a batch of one, a micro-batch many)::

    C -> P  GroupRequest   client, mode, amplification, N, prefixes (prefix modes)
    P -> C  GroupOffer     batch id, labels, record size, provider key,
                           RSA keys | OT point A, candidate tags (prefix rsa/ec)
    C -> P  Query          decoy groups (decoy mode), c | B | blinded point
    P -> C  Response       hit flags, result sealed under a fresh per-query key
                           (bucket: evaluated point, entry tags, sealed entries)
    C -> P  KeyRequest     one yes/no per query (the k_min policy decides)
    P -> C  KeyRelease     result keys + signed usage receipts   <- billed event

What each side learns is in docs/protocols/covert-query.md.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Self

from atoll.crypto import (
    Rng,
    _rng,
    constant_time_equal,
    new_key,
    open_sealed,
    seal,
    sha256_digest,
)
from atoll.crypto.group import POINT_SIZE, is_valid_point, point_mul
from atoll.crypto.ot import OtReceiverChoice, OtSender, ot_receiver_choose, ot_receiver_key
from atoll.crypto.ot import slot_mask as _slot_mask
from atoll.crypto.rsa import (
    RsaKeyPool,
    RsaPrivateKey,
    RsaPublicKey,
    decrypt_many,
    encrypt_below,
    int_to_bytes,
)
from atoll.crypto.sign import SigningKey, VerifyKey, sign, verify
from atoll.errors import (
    ConfigError,
    CryptoError,
    DecryptionError,
    RemoteProtocolError,
)
from atoll.protocols._machine import Machine
from atoll.protocols.covert_source import (
    AEAD_OVERHEAD,
    MAX_ID_BYTES,
    TAG_SIZE,
    DecoySource,
    LabelSource,
    RecordCodec,
    id_tag,
    id_tags,
    open_bucket_entry,
    oprf_blind,
    oprf_entry_keys,
    oprf_finalize,
    prefix_of,
    rng_below,
    shuffle,
)
from atoll.protocols.messages import Message, Reader, Writer, register

__all__ = [
    "BATCH_ID_SIZE",
    "DEFAULT_K_MIN",
    "RECEIPT_CONTEXT",
    "Amplify",
    "AnswerStatus",
    "BillingEvent",
    "CovertAnswer",
    "CovertClient",
    "CovertProvider",
    "GroupOffer",
    "GroupRequest",
    "KMinPolicy",
    "KeyRelease",
    "KeyRequest",
    "Mode",
    "ProviderOutcome",
    "Query",
    "Response",
    "UsageReceipt",
    "sign_receipt",
]

#: Default minimum number of hit slots before a client asks for a result key.
DEFAULT_K_MIN = 3
#: Bytes of a batch id (chosen by the provider).
BATCH_ID_SIZE = 16
#: Signature context of usage receipts.
RECEIPT_CONTEXT = b"atoll/usage-receipt/v1"
#: Version of the usage-receipt payload.
RECEIPT_VERSION = 1
_SEAL_OVERHEAD = 1 + 12 + 16
_MAX_QUERIES = 100_000
_MAX_GROUP = 1 << 16
_MAX_LABELS = 1024
_MAX_RECORD = 1 << 20


class Mode(IntEnum):
    """How the 1-of-N selection is made."""

    RSA = 1
    EC = 2
    BUCKET = 3

    @property
    def label(self) -> str:
        """Lower-case name used by the CLI and the ledger."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        """From ``"rsa" | "ec" | "bucket"`` (ConfigError otherwise)."""
        if isinstance(value, Mode):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ConfigError(f"mode must be rsa, ec or bucket, got {value!r}") from None


class Amplify(IntEnum):
    """How the true ID is hidden in a group of N (seed §9, note 1)."""

    DECOY = 1  # random picks from an ID master library
    PREFIX = 2  # hash truncation: the provider's IDs sharing a tag prefix

    @property
    def label(self) -> str:
        """Lower-case name."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Amplify) -> Amplify:
        """From ``"decoy" | "prefix"``."""
        if isinstance(value, Amplify):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ConfigError(f"amplification must be decoy or prefix, got {value!r}") from None


# --- messages --------------------------------------------------------------------


def _check_batch(batch_id: bytes) -> None:
    if len(batch_id) != BATCH_ID_SIZE:
        raise RemoteProtocolError("batch id has the wrong size")


@register
@dataclass(frozen=True)
class GroupRequest(Message):
    """C -> P: open a batch of ``count`` queries; prefixes for the prefix/bucket modes."""

    TYPE = 0x0410
    client: str
    mode: int
    amplify: int
    n: int
    count: int
    prefixes: tuple[tuple[int, int], ...] = ()

    def encode_body(self, w: Writer) -> None:
        """Write the fields."""
        w.text(self.client)
        w.u8(self.mode)
        w.u8(self.amplify)
        w.u32(self.n)
        w.u32(self.count)
        w.u32(len(self.prefixes))
        for bits, value in self.prefixes:
            w.u8(bits)
            w.u64(value)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the fields."""
        client = r.text(max_len=256)
        mode, amplify, n, count = r.u8(), r.u8(), r.u32(), r.u32()
        k = r.u32()
        if count > _MAX_QUERIES or k > _MAX_QUERIES:
            raise RemoteProtocolError(f"GroupRequest: batch of {max(count, k)} queries too large")
        prefixes = []
        for _ in range(k):
            bits, value = r.u8(), r.u64()
            if bits > 64 or (bits < 64 and value >= 1 << bits):
                raise RemoteProtocolError("GroupRequest: prefix value exceeds its bit length")
            prefixes.append((bits, value))
        return cls(client, mode, amplify, n, count, tuple(prefixes))


@register
@dataclass(frozen=True)
class GroupOffer(Message):
    """P -> C: batch id, label schema, provider key and the selection material."""

    TYPE = 0x0411
    batch_id: bytes
    mode: int
    labels: tuple[str, ...]
    record_size: int
    provider_key: bytes
    rsa_keys: tuple[RsaPublicKey, ...] = ()
    ot_point: bytes = b""
    groups: tuple[tuple[bytes, ...], ...] = ()

    def encode_body(self, w: Writer) -> None:
        """Write the fields."""
        w.raw(self.batch_id)
        w.u8(self.mode)
        w.u32(len(self.labels))
        for name in self.labels:
            w.text(name)
        w.u32(self.record_size)
        w.raw(self.provider_key)
        w.u32(len(self.rsa_keys))
        for key in self.rsa_keys:
            w.bigint(key.n)
            w.u32(key.e)
            w.u8(len(key.certificate))
            for root in key.certificate:
                w.bigint(root)
        w.blob(self.ot_point)
        w.u32(len(self.groups))
        for group in self.groups:
            w.packed(list(group), TAG_SIZE)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the fields."""
        batch_id = r.raw(BATCH_ID_SIZE)
        mode = r.u8()
        count = r.u32()
        if count > _MAX_LABELS:
            raise RemoteProtocolError(f"GroupOffer: {count} label columns exceed {_MAX_LABELS}")
        labels = tuple(r.text(max_len=256) for _ in range(count))
        record_size = r.u32()
        if not 8 <= record_size <= _MAX_RECORD:
            raise RemoteProtocolError(f"GroupOffer: record size {record_size} out of range")
        provider_key = r.raw(32)
        nkeys = r.u32()
        if nkeys > _MAX_GROUP:
            raise RemoteProtocolError(f"GroupOffer: {nkeys} RSA keys exceed {_MAX_GROUP}")
        keys = []
        for _ in range(nkeys):
            n = r.bigint(max_bits=8192)
            e = r.u32()
            rounds = r.u8()
            if rounds > 16:
                raise RemoteProtocolError("GroupOffer: RSA certificate too long")
            cert = tuple(r.bigint(max_bits=8192) for _ in range(rounds))
            keys.append(RsaPublicKey(n, e, cert))
        ot_point = r.blob(max_len=POINT_SIZE)
        ngroups = r.u32()
        if ngroups > _MAX_QUERIES:
            raise RemoteProtocolError("GroupOffer: too many groups")
        groups = tuple(tuple(r.packed(TAG_SIZE, max_count=_MAX_GROUP)) for _ in range(ngroups))
        return cls(batch_id, mode, labels, record_size, provider_key, tuple(keys), ot_point, groups)


@register
@dataclass(frozen=True)
class Query(Message):
    """C -> P: per query, the decoy group (decoy mode) and the selection value."""

    TYPE = 0x0412
    batch_id: bytes
    groups: tuple[tuple[str, ...], ...]
    values: tuple[bytes, ...]

    def encode_body(self, w: Writer) -> None:
        """Write the fields."""
        w.raw(self.batch_id)
        w.u32(len(self.groups))
        for group in self.groups:
            w.u32(len(group))
            for x in group:
                w.text(x)
        w.blobs(list(self.values))

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the fields."""
        batch_id = r.raw(BATCH_ID_SIZE)
        ngroups = r.u32()
        if ngroups > _MAX_QUERIES:
            raise RemoteProtocolError("Query: too many groups")
        groups = []
        for _ in range(ngroups):
            size = r.u32()
            if size > _MAX_GROUP:
                raise RemoteProtocolError(f"Query: group of {size} IDs exceeds {_MAX_GROUP}")
            groups.append(tuple(r.text(max_len=MAX_ID_BYTES) for _ in range(size)))
        values = tuple(r.blobs(max_count=_MAX_QUERIES, max_len=1024))
        return cls(batch_id, tuple(groups), values)


@register
@dataclass(frozen=True)
class Response(Message):
    """P -> C: per query, hit flags (or bucket tags), evaluated point and the sealed result."""

    TYPE = 0x0413
    batch_id: bytes
    hits: tuple[bytes, ...]
    points: tuple[bytes, ...]
    tags: tuple[bytes, ...]
    sealed: tuple[bytes, ...]

    def encode_body(self, w: Writer) -> None:
        """Write the fields."""
        w.raw(self.batch_id)
        w.blobs(list(self.hits))
        w.blobs(list(self.points))
        w.blobs(list(self.tags))
        w.blobs(list(self.sealed))

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the fields."""
        batch_id = r.raw(BATCH_ID_SIZE)
        hits = tuple(r.blobs(max_count=_MAX_QUERIES, max_len=_MAX_GROUP // 8 + 1))
        points = tuple(r.blobs(max_count=_MAX_QUERIES, max_len=POINT_SIZE))
        tags = tuple(r.blobs(max_count=_MAX_QUERIES, max_len=_MAX_GROUP * TAG_SIZE))
        sealed = tuple(r.blobs(max_count=_MAX_QUERIES))
        return cls(batch_id, hits, points, tags, sealed)


@register
@dataclass(frozen=True)
class KeyRequest(Message):
    """C -> P: for each query, whether the client buys the result key (1) or not (0)."""

    TYPE = 0x0414
    batch_id: bytes
    decisions: bytes

    def encode_body(self, w: Writer) -> None:
        """Write the fields."""
        w.raw(self.batch_id)
        w.blob(self.decisions)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the fields."""
        batch_id = r.raw(BATCH_ID_SIZE)
        decisions = r.blob(max_len=_MAX_QUERIES)
        if any(d > 1 for d in decisions):
            raise RemoteProtocolError("KeyRequest: decisions must be 0 or 1")
        return cls(batch_id, decisions)


@register
@dataclass(frozen=True)
class KeyRelease(Message):
    """P -> C: result keys (empty where not bought) and signed usage receipts."""

    TYPE = 0x0415
    batch_id: bytes
    keys: tuple[bytes, ...]
    receipts: tuple[bytes, ...]

    def encode_body(self, w: Writer) -> None:
        """Write the fields."""
        w.raw(self.batch_id)
        w.blobs(list(self.keys))
        w.blobs(list(self.receipts))

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the fields."""
        batch_id = r.raw(BATCH_ID_SIZE)
        keys = tuple(r.blobs(max_count=_MAX_QUERIES, max_len=32))
        receipts = tuple(r.blobs(max_count=_MAX_QUERIES, max_len=4096))
        return cls(batch_id, keys, receipts)


# --- billing ---------------------------------------------------------------------


@dataclass(frozen=True)
class BillingEvent:
    """One released result key: what the ledger records and the receipt attests."""

    query_id: str
    client: str
    mode: str
    amplify: str
    n: int
    m: int
    key_digest: str  # hex SHA-256 prefix of the released key: binds the receipt to it


@dataclass(frozen=True)
class UsageReceipt:
    """The signed payload of a usage receipt (canonical JSON, ``"v": 1``)."""

    query_id: str
    client: str
    mode: str
    n: int
    m: int
    key_digest: str
    time: str
    seq: int
    provider: str

    def to_payload(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces)."""
        body = {"v": RECEIPT_VERSION, **self.__dict__}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_payload(cls, payload: bytes) -> UsageReceipt:
        """Parse a payload; CryptoError if it is not a v1 receipt."""
        try:
            body = json.loads(payload.decode("utf-8"))
            if body.pop("v") != RECEIPT_VERSION:
                raise CryptoError("unsupported usage-receipt version")
            return cls(**body)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CryptoError("malformed usage receipt") from exc

    @classmethod
    def verify(cls, key: VerifyKey, receipt: bytes) -> UsageReceipt:
        """Check the signature and parse (CryptoError on any failure)."""
        return cls.from_payload(verify(key, receipt, context=RECEIPT_CONTEXT))


def sign_receipt(
    signing_key: SigningKey, event: BillingEvent, *, time: str, seq: int, provider: str
) -> bytes:
    """Sign the usage receipt of ``event`` (called by the metering ledger)."""
    receipt = UsageReceipt(
        event.query_id, event.client, event.mode, event.n, event.m, event.key_digest,
        time, seq, provider,
    )  # fmt: skip
    return sign(signing_key, receipt.to_payload(), context=RECEIPT_CONTEXT)


#: The provider's billing hook: record the event, return the signed receipt.
Biller = Callable[[BillingEvent], bytes]


def _key_digest(key: bytes) -> str:
    return sha256_digest(key)[:16].hex()


# --- shared helpers ----------------------------------------------------------------


def _bitmap(flags: Sequence[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def _unbitmap(data: bytes, n: int) -> list[bool]:
    if len(data) != (n + 7) // 8:
        raise RemoteProtocolError(f"hit flags of {len(data)} bytes for a group of {n}")
    flags = [bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(n)]
    if n % 8 and data[-1] & (0xFF >> (n % 8)):
        raise RemoteProtocolError("hit flags have bits set beyond the group")
    return flags


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _slot_context(batch_id: bytes, query: int, slot: int) -> bytes:
    return b"atoll/covert/slot/v1" + batch_id + query.to_bytes(4, "big") + slot.to_bytes(4, "big")


def _aad(batch_id: bytes, query: int) -> bytes:
    return b"atoll/covert/result/v1" + batch_id + query.to_bytes(4, "big")


def _masks(secrets: Sequence[bytes], batch_id: bytes, query: int, size: int) -> bytes:
    return b"".join(
        _slot_mask(s, context=_slot_context(batch_id, query, i), length=size)
        for i, s in enumerate(secrets)
    )


# --- provider ------------------------------------------------------------------------


@dataclass
class _ProvQuery:
    n: int = 0
    m: int = 0
    key: bytes = b""
    records: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderOutcome:
    """What the provider's machine ends with (no client secret: it never learns the slot)."""

    batch_id: bytes
    client: str
    mode: str
    amplify: str
    group_sizes: tuple[int, ...]
    hits: tuple[int, ...]
    released: tuple[bool, ...]
    billed: tuple[BillingEvent, ...]


class CovertProvider(Machine[ProviderOutcome]):
    """The provider's role: answer a batch of covert queries, release keys, bill.

    ``source`` holds the label records; ``rsa_pool`` the RSA keys (rsa mode);
    ``biller`` records each released key and returns its signed receipt
    (:class:`atoll.control.metering.Ledger` provides one). Limits (``max_n``,
    ``max_batch``, ``max_bucket``) are enforced on every request.
    """

    protocol = "covert-query"

    def __init__(
        self,
        source: LabelSource,
        *,
        signing_key: SigningKey,
        biller: Biller,
        rsa_pool: RsaKeyPool | None = None,
        modes: Sequence[Mode] = (Mode.RSA, Mode.EC, Mode.BUCKET),
        max_n: int = 1024,
        max_batch: int = 10_000,
        max_bucket: int = 1 << 16,
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._signing_key = signing_key
        self._biller = biller
        self._pool = rsa_pool
        self._modes = frozenset(Mode(m) for m in modes)
        self._max_n = max_n
        self._max_batch = max_batch
        self._max_bucket = max_bucket
        self._rng = _rng(rng)
        self._state = "group"
        self._request: GroupRequest | None = None
        self._mode = Mode.EC
        self._amplify = Amplify.DECOY
        self._batch_id = b""
        self._rsa_keys: list[RsaPrivateKey] = []
        self._ot: OtSender | None = None
        self._queries: list[_ProvQuery] = []
        self._released: list[bool] = []
        self._billed: list[BillingEvent] = []

    @property
    def done(self) -> bool:
        """True once the key release was sent."""
        return self._state == "done"

    @property
    def batch_id(self) -> bytes:
        """The id of the batch (after the GroupRequest)."""
        return self._batch_id

    @property
    def expects(self) -> str:
        """The message type the provider waits for next (for services)."""
        return {"group": "GroupRequest", "query": "Query", "key": "KeyRequest"}.get(
            self._state, "nothing"
        )

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._state == "group" and isinstance(msg, GroupRequest):
            return [self._offer(msg)]
        if self._state == "query" and isinstance(msg, Query):
            return [self._respond(msg)]
        if self._state == "key" and isinstance(msg, KeyRequest):
            return [self._release(msg)]
        raise self._unexpected(msg, self.expects)

    # step 2: the group offer
    def _offer(self, msg: GroupRequest) -> GroupOffer:
        try:
            mode, amplify = Mode(msg.mode), Amplify(msg.amplify)
        except ValueError:
            raise RemoteProtocolError(f"unknown mode {msg.mode} or amplification") from None
        if mode not in self._modes:
            raise RemoteProtocolError(f"this provider does not serve mode {mode.label}")
        if mode is Mode.BUCKET and amplify is not Amplify.PREFIX:
            raise RemoteProtocolError("bucket mode uses hash-truncation (prefix) amplification")
        if not 1 <= msg.count <= self._max_batch:
            raise RemoteProtocolError(f"batch of {msg.count} queries outside 1..{self._max_batch}")
        if amplify is Amplify.DECOY:
            if not 1 <= msg.n <= self._max_n or msg.prefixes:
                raise RemoteProtocolError(f"decoy group size must be 1..{self._max_n}")
        elif len(msg.prefixes) != msg.count:
            raise RemoteProtocolError("prefix amplification needs one prefix per query")
        self._request, self._mode, self._amplify = msg, mode, amplify
        self._batch_id = new_key(BATCH_ID_SIZE, rng=self._rng)
        groups: list[tuple[bytes, ...]] = []
        self._queries = [_ProvQuery() for _ in range(msg.count)]
        if amplify is Amplify.PREFIX:
            for q, (bits, value) in zip(self._queries, msg.prefixes, strict=True):
                if mode is Mode.BUCKET:
                    if bits > self._source.bucket_bits or bits == 0:
                        raise RemoteProtocolError(
                            f"bucket prefix must be 1..{self._source.bucket_bits} bits"
                        )
                    _, _, q.n = self._source.bucket_group(bits, value)
                    if q.n > self._max_bucket:
                        raise RemoteProtocolError(
                            f"bucket of {q.n} entries exceeds {self._max_bucket}: use more bits"
                        )
                    continue
                tags, records = self._source.prefix_group(bits, value)
                if len(tags) > self._max_n:
                    raise RemoteProtocolError(
                        f"prefix group of {len(tags)} IDs exceeds N <= {self._max_n}: "
                        "use a longer prefix"
                    )
                q.n, q.records = len(tags), records
                groups.append(tuple(tags))
        group_size = max((q.n for q in self._queries), default=0)
        if amplify is Amplify.DECOY:
            group_size = msg.n
        rsa_keys: tuple[RsaPublicKey, ...] = ()
        ot_point = b""
        if mode is Mode.RSA and group_size:
            if self._pool is None or len(self._pool) < group_size:
                have = 0 if self._pool is None else len(self._pool)
                raise RemoteProtocolError(
                    f"RSA key pool of {have} keys cannot serve N={group_size}"
                )
            indices = list(range(len(self._pool)))
            shuffle(indices, self._rng)
            self._rsa_keys = [self._pool.keys[i] for i in indices[:group_size]]
            rsa_keys = tuple(k.public for k in self._rsa_keys)
        elif mode is Mode.EC:
            self._ot = OtSender.new(rng=self._rng)
            ot_point = self._ot.A
        self._state = "query"
        codec = self._source.codec
        return GroupOffer(
            self._batch_id,
            int(mode),
            codec.labels,
            codec.record_size,
            self._signing_key.verify_key.raw,
            rsa_keys,
            ot_point,
            tuple(groups),
        )

    # step 4: decrypt / derive, look up, mask, seal
    def _respond(self, msg: Query) -> Response:
        self._check_batch(msg.batch_id)
        count = len(self._queries)
        if len(msg.values) != count:
            raise RemoteProtocolError(f"Query carries {len(msg.values)} values for {count} queries")
        decoy = self._amplify is Amplify.DECOY
        if len(msg.groups) != (count if decoy else 0):
            raise RemoteProtocolError("Query: decoy groups do not match the amplification")
        size = self._source.codec.record_size
        hits: list[bytes] = []
        points: list[bytes] = []
        tags: list[bytes] = []
        sealed: list[bytes] = []
        for j, (q, value) in enumerate(zip(self._queries, msg.values, strict=True)):
            if decoy:
                group = msg.groups[j]
                if len(group) != self._request.n:  # type: ignore[union-attr]
                    raise RemoteProtocolError(f"query {j}: group of {len(group)} IDs, expected N")
                if len(set(group)) != len(group):
                    raise RemoteProtocolError(f"query {j}: the group repeats an ID")
                try:
                    found = self._source.lookup(id_tags(group))
                except ConfigError as exc:
                    raise RemoteProtocolError(f"query {j}: {exc}") from None
                q.n = len(group)
                q.records = [r if r is not None else b"" for r in found]
            if self._mode is Mode.BUCKET:
                p, t, s = self._bucket_answer(j, q, value)
                points.append(p)
                tags.append(t)
                sealed.append(s)
                hits.append(b"")
                continue
            flags = [bool(r) for r in q.records]
            q.m = sum(flags)
            points.append(b"")
            tags.append(b"")
            hits.append(_bitmap(flags))
            if q.n == 0:
                if value:
                    raise RemoteProtocolError(f"query {j}: a value for an empty group")
                sealed.append(b"")
                continue
            secrets = self._slot_secrets(j, q.n, value)
            plain = b"".join(r if r else bytes(size) for r in q.records)
            masked = _xor(plain, _masks(secrets, self._batch_id, j, size))
            q.key = new_key(rng=self._rng)
            sealed.append(seal(q.key, masked, aad=_aad(self._batch_id, j), rng=self._rng))
            q.records = []
        self._state = "key"
        return Response(self._batch_id, tuple(hits), tuple(points), tuple(tags), tuple(sealed))

    def _slot_secrets(self, j: int, n: int, value: bytes) -> list[bytes]:
        if self._mode is Mode.RSA:
            keys = self._rsa_keys[:n]
            size = keys[0].public.size
            if len(value) != size:
                raise RemoteProtocolError(f"query {j}: RSA ciphertext must be {size} bytes")
            c = int.from_bytes(value, "big")
            if c >= min(k.public.n for k in keys):
                raise RemoteProtocolError(f"query {j}: RSA ciphertext not below every modulus")
            return [int_to_bytes(v, size) for v in decrypt_many(keys, c)]
        assert self._ot is not None
        try:
            return self._ot.keys(value, n, context=self._batch_id + j.to_bytes(4, "big"))
        except CryptoError as exc:
            raise RemoteProtocolError(f"query {j}: {exc}") from None

    def _bucket_answer(self, j: int, q: _ProvQuery, value: bytes) -> tuple[bytes, bytes, bytes]:
        key = self._source.oprf_key
        assert key is not None
        assert self._request is not None
        bits, prefix = self._request.prefixes[j]
        if not is_valid_point(value):
            raise RemoteProtocolError(f"query {j}: invalid blinded point")
        evaluated = point_mul(key, value)
        otags, cts, q.n = self._source.bucket_group(bits, prefix)
        q.m = q.n
        if q.n == 0:
            return evaluated, b"", b""
        q.key = new_key(rng=self._rng)
        return evaluated, otags, seal(q.key, cts, aad=_aad(self._batch_id, j), rng=self._rng)

    # step 6: key release, the billed event
    def _release(self, msg: KeyRequest) -> KeyRelease:
        self._check_batch(msg.batch_id)
        if len(msg.decisions) != len(self._queries):
            raise RemoteProtocolError("KeyRequest: one decision per query is required")
        assert self._request is not None
        keys: list[bytes] = []
        receipts: list[bytes] = []
        for j, (q, wanted) in enumerate(zip(self._queries, msg.decisions, strict=True)):
            if not wanted or q.m == 0 or not q.key:  # nothing to sell: never billed
                keys.append(b"")
                receipts.append(b"")
                self._released.append(False)
                continue
            event = BillingEvent(
                query_id=f"{self._batch_id.hex()}-{j}",
                client=self._request.client,
                mode=self._mode.label,
                amplify=self._amplify.label,
                n=q.n,
                m=q.m,
                key_digest=_key_digest(q.key),
            )
            receipts.append(self._biller(event))
            keys.append(q.key)
            self._billed.append(event)
            self._released.append(True)
        self._state = "done"
        return KeyRelease(self._batch_id, tuple(keys), tuple(receipts))

    def _check_batch(self, batch_id: bytes) -> None:
        _check_batch(batch_id)
        if batch_id != self._batch_id:
            raise RemoteProtocolError("message belongs to another batch")

    def _result(self) -> ProviderOutcome:
        assert self._request is not None
        return ProviderOutcome(
            self._batch_id,
            self._request.client,
            self._mode.label,
            self._amplify.label,
            tuple(q.n for q in self._queries),
            tuple(q.m for q in self._queries),
            tuple(self._released),
            tuple(self._billed),
        )


# --- client --------------------------------------------------------------------------


class AnswerStatus:
    """Outcome of one covert query, as written in the ``status`` output column."""

    HIT = "hit"  # key bought, label opened
    NO_RECORD = "no_record"  # the true slot had no record: nothing bought
    DECLINED = "declined"  # true slot hit but fewer than k_min hits: refused to ask
    REFUSED = "refused"  # asked, but the provider released no key


@dataclass(frozen=True)
class CovertAnswer:
    """The client's result for one queried ID."""

    id: str
    status: str
    values: list[Any] | None
    n: int
    m: int
    receipt: bytes = b""


@dataclass(frozen=True)
class KMinPolicy:
    """When to ask for the result key (seed §9 note 2), documented and configurable.

    Ask only if the true slot is a hit *and* at least ``k_min`` slots hit:
    the provider learns from the request that the true ID is among the ``m``
    hits, so with fewer than ``k_min`` of them the request itself would
    narrow the ID down to too few candidates (with ``m = 1`` it names it).
    """

    k_min: int = DEFAULT_K_MIN

    def __post_init__(self) -> None:
        if self.k_min < 1:
            raise ConfigError(f"k_min must be at least 1, got {self.k_min}")

    def should_request(self, true_hit: bool, m: int) -> bool:
        """The decision for one query."""
        return true_hit and m >= self.k_min


@dataclass
class _ClientQuery:
    id: str
    tag: bytes
    prefix: tuple[int, int] = (0, 0)
    pos: int = 0
    present: bool = True
    n: int = 0
    m: int = 0
    secret: bytes = b""
    rho: bytes = b""
    entry_key: bytes = b""
    requested: bool = False
    status: str = AnswerStatus.NO_RECORD
    sealed: bytes = b""
    values: list[Any] | None = None
    receipt: bytes = b""


class CovertClient(Machine[list[CovertAnswer]]):
    """The client's role: hide each ID among N, open only its own slot.

    ``ids`` are *normalized* identifiers. For ``Amplify.PREFIX`` (and bucket
    mode) pass ``prefix_bits`` (see :func:`~.covert_source.choose_prefix_bits`);
    for ``Amplify.DECOY`` a ``decoys`` source. ``provider_key`` pins the
    provider's receipt-signing key (else it is taken from the offer: trust
    on first use). ``verified_keys`` is a set of RSA key fingerprints already
    checked (shared across batches to skip re-verifying pool keys).
    """

    protocol = "covert-query"

    def __init__(
        self,
        ids: Sequence[str],
        *,
        mode: Mode | str = Mode.EC,
        amplify: Amplify | str = Amplify.PREFIX,
        n: int = 100,
        prefix_bits: int | None = None,
        decoys: DecoySource | None = None,
        policy: KMinPolicy | None = None,
        client: str = "client",
        provider_key: VerifyKey | None = None,
        rsa_min_bits: int = 2048,
        verified_keys: set[bytes] | None = None,
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        self._mode = Mode.parse(mode)
        self._amplify = Amplify.parse(amplify)
        if self._mode is Mode.BUCKET:
            self._amplify = Amplify.PREFIX
        if not ids:
            raise ConfigError("a covert query needs at least one ID")
        if len(ids) > _MAX_QUERIES:
            raise ConfigError(f"at most {_MAX_QUERIES} IDs per batch")
        if self._amplify is Amplify.DECOY:
            if decoys is None:
                raise ConfigError("decoy amplification needs a decoy source (ID master library)")
            if not 1 <= n <= _MAX_GROUP:
                raise ConfigError(f"N must be 1..{_MAX_GROUP}, got {n}")
        elif prefix_bits is None or not 0 <= prefix_bits <= 64:
            raise ConfigError("prefix amplification needs prefix_bits (0..64)")
        self._n = n
        self._bits = prefix_bits or 0
        self._decoys = decoys
        self._policy = policy or KMinPolicy()
        self._client = client
        self._pinned = provider_key
        self._provider_key: VerifyKey | None = provider_key
        self._rsa_min_bits = rsa_min_bits
        self._verified = verified_keys if verified_keys is not None else set()
        self._rng = _rng(rng)
        self._queries = [_ClientQuery(x, id_tag(x)) for x in ids]
        for q in self._queries:
            q.prefix = (self._bits, prefix_of(q.tag, self._bits))
        self._state = "offer"
        self._offer: GroupOffer | None = None
        self._codec: RecordCodec | None = None
        self._ot_choices: list[OtReceiverChoice | None] = []

    @property
    def done(self) -> bool:
        """True once the key release was processed."""
        return self._state == "done"

    @property
    def codec(self) -> RecordCodec | None:
        """The provider's label schema (after the offer)."""
        return self._codec

    @property
    def true_positions(self) -> list[int]:
        """The secret slot of each query (for tests and audits; never sent)."""
        return [q.pos for q in self._queries]

    def _on_start(self) -> list[Message]:
        prefixes = tuple(q.prefix for q in self._queries) if self._amplify is Amplify.PREFIX else ()
        n = self._n if self._amplify is Amplify.DECOY else 0
        return [
            GroupRequest(
                self._client, int(self._mode), int(self._amplify), n, len(self._queries), prefixes
            )
        ]

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._state == "offer" and isinstance(msg, GroupOffer):
            return [self._query(msg)]
        if self._state == "response" and isinstance(msg, Response):
            return [self._decide(msg)]
        if self._state == "release" and isinstance(msg, KeyRelease):
            self._open(msg)
            return []
        expected = {"offer": "GroupOffer", "response": "Response", "release": "KeyRelease"}
        raise self._unexpected(msg, expected.get(self._state, "nothing"))

    # step 3: build the queries
    def _query(self, offer: GroupOffer) -> Query:
        _check_batch(offer.batch_id)
        if offer.mode != self._mode:
            raise RemoteProtocolError("GroupOffer is for another mode")
        try:
            offered_key = VerifyKey(offer.provider_key)
        except CryptoError as exc:
            raise RemoteProtocolError(f"GroupOffer: {exc}") from None
        if self._pinned is not None and offered_key.raw != self._pinned.raw:
            raise RemoteProtocolError("GroupOffer: provider key differs from the pinned key")
        self._provider_key = offered_key
        self._codec = RecordCodec(offer.labels, offer.record_size)
        self._offer = offer
        prefix = self._amplify is Amplify.PREFIX
        if prefix and self._mode is not Mode.BUCKET:
            if len(offer.groups) != len(self._queries):
                raise RemoteProtocolError("GroupOffer: one candidate group per query expected")
            for q, group in zip(self._queries, offer.groups, strict=True):
                self._check_group(q, group)
        elif offer.groups:
            raise RemoteProtocolError("GroupOffer: unexpected candidate groups")
        group_size = self._n if not prefix else max((len(g) for g in offer.groups), default=0)
        if self._mode is Mode.RSA:
            self._check_rsa(offer, group_size)
        elif self._mode is Mode.EC and not is_valid_point(offer.ot_point):
            raise RemoteProtocolError("GroupOffer: invalid OT point")
        groups: list[tuple[str, ...]] = []
        values: list[bytes] = []
        for j, q in enumerate(self._queries):
            if self._mode is Mode.BUCKET:
                q.rho, blinded = oprf_blind(q.id, rng=self._rng)
                values.append(blinded)
                continue
            if prefix:
                group_tags = offer.groups[j]
                q.n = len(group_tags)
                try:
                    q.pos = group_tags.index(q.tag)
                except ValueError:
                    q.present = False
                    q.pos = rng_below(q.n, self._rng) if q.n else 0
            else:
                assert self._decoys is not None
                members = [*self._decoys.sample(self._n - 1, q.id, self._rng), q.id]
                shuffle(members, self._rng)
                q.n, q.pos = len(members), members.index(q.id)
                groups.append(tuple(members))
            values.append(self._select(offer, j, q))
        self._state = "response"
        return Query(offer.batch_id, tuple(groups), tuple(values))

    def _check_group(self, q: _ClientQuery, group: tuple[bytes, ...]) -> None:
        bits, value = q.prefix
        for a, b in itertools.pairwise(group):
            if not a < b:
                raise RemoteProtocolError("GroupOffer: candidate tags not sorted and unique")
        if any(prefix_of(t, bits) != value for t in group):
            raise RemoteProtocolError("GroupOffer: a candidate does not share the query prefix")

    def _check_rsa(self, offer: GroupOffer, group_size: int) -> None:
        if len(offer.rsa_keys) != group_size:
            raise RemoteProtocolError(
                f"GroupOffer: {len(offer.rsa_keys)} RSA keys for a group of {group_size}"
            )
        if len({k.n for k in offer.rsa_keys}) != len(offer.rsa_keys):
            raise RemoteProtocolError("GroupOffer: repeated RSA key in the group")
        for key in offer.rsa_keys:
            fp = key.fingerprint()
            if fp in self._verified:
                continue
            try:
                key.check(min_bits=self._rsa_min_bits)
            except CryptoError as exc:
                raise RemoteProtocolError(f"GroupOffer: {exc}") from None
            self._verified.add(fp)
        if len({k.bits for k in offer.rsa_keys}) > 1:
            raise RemoteProtocolError("GroupOffer: RSA keys of different sizes")

    def _select(self, offer: GroupOffer, j: int, q: _ClientQuery) -> bytes:
        if q.n == 0:
            return b""
        if self._mode is Mode.RSA:
            keys = offer.rsa_keys[: q.n]
            r, c = encrypt_below(keys, q.pos, rng=self._rng)
            size = keys[0].size
            q.secret = int_to_bytes(r, size)
            return int_to_bytes(c, size)
        choice = ot_receiver_choose(offer.ot_point, q.pos, rng=self._rng)
        q.secret = ot_receiver_key(
            offer.ot_point, choice, context=offer.batch_id + j.to_bytes(4, "big")
        )
        return choice.B

    # step 5: decide whether to buy each key
    def _decide(self, msg: Response) -> KeyRequest:
        offer = self._offer
        assert offer is not None
        assert self._codec is not None
        if msg.batch_id != offer.batch_id:
            raise RemoteProtocolError("Response belongs to another batch")
        count = len(self._queries)
        if not len(msg.hits) == len(msg.points) == len(msg.tags) == len(msg.sealed) == count:
            raise RemoteProtocolError(f"Response must carry {count} answers in every field")
        size = self._codec.record_size
        decisions = bytearray()
        for j, q in enumerate(self._queries):
            if self._mode is Mode.BUCKET:
                true_hit = self._bucket_slot(j, q, msg, size)
            else:
                if msg.points[j] or msg.tags[j]:
                    raise RemoteProtocolError(f"Response {j}: unexpected bucket fields")
                flags = _unbitmap(msg.hits[j], q.n)
                q.m = sum(flags)
                expected = _SEAL_OVERHEAD + q.n * size if q.n else 0
                if len(msg.sealed[j]) != expected:
                    raise RemoteProtocolError(f"Response {j}: sealed result has the wrong size")
                true_hit = q.present and q.n > 0 and flags[q.pos]
            q.sealed = msg.sealed[j]
            q.requested = self._policy.should_request(true_hit, q.m)
            if not true_hit:
                q.status = AnswerStatus.NO_RECORD
            elif not q.requested:
                q.status = AnswerStatus.DECLINED
            decisions.append(1 if q.requested else 0)
        self._state = "release"
        return KeyRequest(offer.batch_id, bytes(decisions))

    def _bucket_slot(self, j: int, q: _ClientQuery, msg: Response, size: int) -> bool:
        if msg.hits[j]:
            raise RemoteProtocolError(f"Response {j}: unexpected hit flags in bucket mode")
        if len(msg.tags[j]) % TAG_SIZE:
            raise RemoteProtocolError(f"Response {j}: bucket tags are not {TAG_SIZE}-byte items")
        q.n = q.m = len(msg.tags[j]) // TAG_SIZE
        expected = _SEAL_OVERHEAD + q.n * (AEAD_OVERHEAD + size) if q.n else 0
        if len(msg.sealed[j]) != expected:
            raise RemoteProtocolError(f"Response {j}: sealed bucket has the wrong size")
        try:
            f_point = oprf_finalize(q.rho, msg.points[j])
        except CryptoError as exc:
            raise RemoteProtocolError(f"Response {j}: {exc}") from None
        otag, q.entry_key = oprf_entry_keys(f_point)
        tags = msg.tags[j]
        for i in range(q.n):
            if constant_time_equal(tags[i * TAG_SIZE : (i + 1) * TAG_SIZE], otag):
                q.pos = i
                return True
        q.present = False
        return False

    # step 7: open only the true slot
    def _open(self, msg: KeyRelease) -> None:
        offer = self._offer
        assert offer is not None
        assert self._codec is not None
        if msg.batch_id != offer.batch_id:
            raise RemoteProtocolError("KeyRelease belongs to another batch")
        count = len(self._queries)
        if len(msg.keys) != count or len(msg.receipts) != count:
            raise RemoteProtocolError(f"KeyRelease must carry {count} keys and receipts")
        size = self._codec.record_size
        for j, q in enumerate(self._queries):
            key, receipt = msg.keys[j], msg.receipts[j]
            if not q.requested:
                if key or receipt:
                    raise RemoteProtocolError(f"KeyRelease {j}: a key nobody asked for")
                continue
            if not key:
                q.status = AnswerStatus.REFUSED
                continue
            self._check_receipt(j, q, key, receipt)
            try:
                opened = open_sealed(key, q.sealed, aad=_aad(offer.batch_id, j))
            except (DecryptionError, CryptoError) as exc:
                raise RemoteProtocolError(
                    f"KeyRelease {j}: the key does not open the result"
                ) from exc
            if self._mode is Mode.BUCKET:
                width = AEAD_OVERHEAD + size
                try:
                    record = open_bucket_entry(
                        q.entry_key, opened[q.pos * width : (q.pos + 1) * width]
                    )
                except DecryptionError as exc:
                    raise RemoteProtocolError(f"KeyRelease {j}: own bucket entry fails") from exc
            else:
                slot = opened[q.pos * size : (q.pos + 1) * size]
                mask = _slot_mask(
                    q.secret, context=_slot_context(offer.batch_id, j, q.pos), length=size
                )
                record = _xor(slot, mask)
            q.values = self._codec.decode(record)
            q.status = AnswerStatus.HIT if q.values is not None else AnswerStatus.NO_RECORD
            q.receipt = receipt
        self._state = "done"

    def _check_receipt(self, j: int, q: _ClientQuery, key: bytes, receipt: bytes) -> None:
        if len(key) != 32:
            raise RemoteProtocolError(f"KeyRelease {j}: result key has the wrong size")
        assert self._provider_key is not None
        assert self._offer is not None
        try:
            parsed = UsageReceipt.verify(self._provider_key, receipt)
        except CryptoError as exc:
            raise RemoteProtocolError(f"KeyRelease {j}: usage receipt invalid: {exc}") from None
        expected = (f"{self._offer.batch_id.hex()}-{j}", self._client, q.n, q.m, _key_digest(key))
        got = (parsed.query_id, parsed.client, parsed.n, parsed.m, parsed.key_digest)
        if got != expected or parsed.mode != self._mode.label:
            raise RemoteProtocolError(f"KeyRelease {j}: usage receipt does not match the query")

    def _result(self) -> list[CovertAnswer]:
        return [CovertAnswer(q.id, q.status, q.values, q.n, q.m, q.receipt) for q in self._queries]
