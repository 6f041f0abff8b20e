"""Private intersection-sum-with-cardinality (Ion et al. 2020), over ristretto255.

Why: the brand wants to know how much its exposed-and-matched customers spent
without either side learning who matched: the parties learn the
intersection size and the sum of values over the intersection, nothing per
record. This is the protocol Google deployed for ad conversion measurement
("On Deploying Secure Computing: Private Intersection-Sum-with-Cardinality",
EuroS&P 2020), with exponential ElGamal (:mod:`atoll.crypto.elgamal`) as the
additively homomorphic scheme instead of Paillier -- see
``docs/protocols/intersection-sum.md`` for the measurement and the choice.

Roles: the *ids* party I holds identifiers only; the *values* party V holds
(identifier, values) pairs, one ElGamal key per value column, and decrypts::

    I -> V  SumHello(version, kind, context, |X|, columns)
    I -> V  SumBlinded(shuffled k1*H(x))
    V -> I  SumReply(public keys, shuffled k2*k1*H(x),
                     shuffled pairs (k2*H(w), Enc(t_w)))
    I -> V  SumEncrypted(|X ∩ W|, rerandomized sum of the matched Enc(t_w))
    V -> I  SumOutcome(|X ∩ W|, decrypted sums)        so both learn the sums

I compares ``k1*(k2*H(w))`` with the doubly blinded set it got back (both
shuffled: I learns only the count), adds the matched ciphertexts and
re-randomizes the sum so V cannot tell which ciphertexts were chosen. V
decodes each sum by baby-step giant-step within ``max_sum``.

A bucketed job runs many such runs, and decrypting each one would hand both
parties one partial sum per bucket (with small buckets, a single member's
value). With ``SumParams(deferred=True)`` a run stops after ``SumReply``: I
keeps the run's added ciphertexts (:class:`SumPartial`), V encrypts every run
under the same job keys, and one final exchange decrypts the total::

    I -> V  SumTotal(version, context, runs, sum of |X ∩ W|, rerandomized sum of all runs)
    V -> I  SumOutcome(|X ∩ W|, decrypted sums)

(:class:`SumTotalIdsParty`, :class:`SumTotalValuesParty`). V then learns only
the totals; I also knows how many of its own items matched in each run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from atoll.crypto import Rng, constant_time_equal
from atoll.crypto.elgamal import (
    MAX_PLAINTEXT,
    ElGamalKey,
    add_rows,
    decrypt_row,
    encrypt_rows,
    keygen,
    rerandomize,
    row_size,
)
from atoll.crypto.group import (
    POINT_SIZE,
    hash_to_group_many,
    is_valid_point,
    point_mul_many,
    scalar_random,
)
from atoll.errors import ConfigError, CryptoError, LocalProtocolError, RemoteProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, Reader, Writer, register
from atoll.protocols.psi import (
    MAX_ITEMS,
    pack,
    read_packed,
    shuffle_order,
    split,
    write_packed,
)

__all__ = [
    "MAX_COLUMNS",
    "SUM_VERSION",
    "SumBlinded",
    "SumEncrypted",
    "SumHello",
    "SumIdsParty",
    "SumOutcome",
    "SumParams",
    "SumPartial",
    "SumReply",
    "SumResult",
    "SumTotal",
    "SumTotalIdsParty",
    "SumTotalValuesParty",
    "SumValuesParty",
]

#: Version of the intersection-sum protocol (2: deferred runs and ``SumTotal``).
SUM_VERSION = 2
#: Most runs one total may cover (a job's buckets).
MAX_RUNS = 1 << 16
#: Most value columns per run.
MAX_COLUMNS = 64
_DOMAIN = b"atoll/intersection-sum/v1"


def _read_version(r: Reader) -> int:
    """The leading version byte; anything but ours is refused before later fields are read."""
    version = r.u8()
    if version != SUM_VERSION:
        raise RemoteProtocolError(
            f"intersection-sum: ids party speaks version {version}, we speak {SUM_VERSION}"
        )
    return version


def _added(rows: Sequence[bytes], columns: int) -> bytes:
    """The point-wise sum of encrypted rows (the peer's ciphertexts: errors are theirs)."""
    try:
        return add_rows(list(rows), columns)
    except CryptoError as exc:
        raise RemoteProtocolError(f"intersection-sum: bad ciphertext: {exc}") from exc


def _encrypted_sum(
    rows: Sequence[bytes], publics: Sequence[bytes], columns: int, rng: Rng | None
) -> bytes:
    """Rows added and re-randomized, so the decryptor cannot tell which were added."""
    total = _added(rows, columns)
    try:
        return rerandomize(total, list(publics), rng=rng)
    except CryptoError as exc:
        raise RemoteProtocolError(f"intersection-sum: bad ciphertext: {exc}") from exc


def _check_outcome(msg: SumOutcome, cardinality: int, columns: int) -> None:
    if msg.cardinality != cardinality or len(msg.sums) != columns:
        raise RemoteProtocolError(
            "intersection-sum: the values party's outcome does not match what we sent"
        )


def _peer_points(scalar: bytes, points: list[bytes], what: str) -> list[bytes]:
    try:
        return point_mul_many(scalar, points)
    except CryptoError as exc:
        raise RemoteProtocolError(f"intersection-sum: {what}: {exc}") from exc


@dataclass(frozen=True)
class SumParams:
    """What both roles agree on: ID kind, number of value columns, deferred decryption.

    ``deferred``: the run ends after ``SumReply`` and its sums are decrypted
    only as part of a :class:`SumTotal` over all runs of the job.
    """

    kind: str = "opaque"
    columns: int = 1
    deferred: bool = False

    def __post_init__(self) -> None:
        if not self.kind or len(self.kind.encode()) > 64:
            raise ConfigError("kind must be 1..64 bytes")
        if not isinstance(self.columns, int) or not 1 <= self.columns <= MAX_COLUMNS:
            raise ConfigError(f"1..{MAX_COLUMNS} value columns, got {self.columns!r}")

    @property
    def domain(self) -> bytes:
        """Hash-to-group domain."""
        return _DOMAIN + b"/" + self.kind.encode()


@dataclass(frozen=True)
class SumResult:
    """Both parties' output: intersection size, per-column sums, the peer's set size."""

    cardinality: int
    sums: tuple[int, ...]
    peer_size: int


@dataclass(frozen=True)
class SumPartial:
    """A deferred run's share of the total.

    The ids party: ``cardinality`` (its matches in this run), ``row`` (the
    sum of the matched ciphertext rows, not yet re-randomized) and
    ``publics`` (the keys they are under). The values party: ``None``,
    ``b""`` and its own public keys -- it is told nothing about the run's
    intersection. ``peer_size``: the other party's item count in the run.
    """

    cardinality: int | None
    row: bytes
    publics: bytes
    peer_size: int


@register
@dataclass(frozen=True)
class SumHello(Message):
    """Ids party's opening."""

    TYPE = 0x0301
    params: SumParams
    context: bytes
    count: int
    version: int = SUM_VERSION

    def encode_body(self, w: Writer) -> None:
        """Version, kind, columns, mode (0 decrypt this run, 1 deferred), context, count."""
        w.u8(self.version)
        w.text(self.params.kind)
        w.u16(self.params.columns)
        w.u8(1 if self.params.deferred else 0)
        w.blob(self.context)
        w.u32(self.count)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        version = _read_version(r)
        kind = r.text(max_len=64)
        columns = r.u16()
        mode = r.u8()
        if mode > 1:
            raise RemoteProtocolError(f"intersection-sum: unknown mode {mode}")
        context = r.blob(max_len=256)
        count = r.u32()
        try:
            params = SumParams(kind, columns, deferred=mode == 1)
        except ConfigError as exc:
            raise RemoteProtocolError(f"intersection-sum: invalid parameters: {exc}") from exc
        return cls(params, context, count, version)


@register
@dataclass(frozen=True)
class SumBlinded(Message):
    """Ids party's blinded identifiers (packed)."""

    TYPE = 0x0302
    points: bytes

    def encode_body(self, w: Writer) -> None:
        """Packed points."""
        write_packed(w, self.points, POINT_SIZE)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        return cls(read_packed(r, POINT_SIZE))


@register
@dataclass(frozen=True)
class SumReply(Message):
    """Values party's reply: public keys, doubly blinded ids, blinded own ids + ciphertexts."""

    TYPE = 0x0303
    publics: bytes
    doubly: bytes
    points: bytes
    ciphertexts: bytes

    def encode_body(self, w: Writer) -> None:
        """Packed keys, doubly blinded points, own points, ciphertext rows."""
        columns = len(self.publics) // POINT_SIZE
        write_packed(w, self.publics, POINT_SIZE)
        write_packed(w, self.doubly, POINT_SIZE)
        write_packed(w, self.points, POINT_SIZE)
        write_packed(w, self.ciphertexts, row_size(columns))

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        publics = read_packed(r, POINT_SIZE, max_count=MAX_COLUMNS)
        if not publics:
            raise RemoteProtocolError("intersection-sum: no public keys")
        doubly = read_packed(r, POINT_SIZE)
        points = read_packed(r, POINT_SIZE)
        cts = read_packed(r, row_size(len(publics) // POINT_SIZE))
        return cls(publics, doubly, points, cts)


@register
@dataclass(frozen=True)
class SumEncrypted(Message):
    """Ids party's intersection size and the re-randomized encrypted sums."""

    TYPE = 0x0304
    cardinality: int
    row: bytes

    def encode_body(self, w: Writer) -> None:
        """Count and the encrypted row."""
        w.u32(self.cardinality)
        w.blob(self.row)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        count = r.u32()
        return cls(count, r.blob(max_len=row_size(MAX_COLUMNS)))


@register
@dataclass(frozen=True)
class SumOutcome(Message):
    """Values party's decrypted sums, so that both parties learn them."""

    TYPE = 0x0305
    cardinality: int
    sums: tuple[int, ...]

    def encode_body(self, w: Writer) -> None:
        """Count and sums (u64 each)."""
        w.u64(self.cardinality)
        w.u16(len(self.sums))
        for s in self.sums:
            w.u64(s)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        count = r.u64()
        n = r.u16()
        if n > MAX_COLUMNS:
            raise RemoteProtocolError(f"intersection-sum: {n} sums exceed {MAX_COLUMNS}")
        return cls(count, tuple(r.u64() for _ in range(n)))


@register
@dataclass(frozen=True)
class SumTotal(Message):
    """Ids party's total over a job's deferred runs: matches and the re-randomized sum."""

    TYPE = 0x0306
    context: bytes
    runs: int
    cardinality: int
    row: bytes
    version: int = SUM_VERSION

    def encode_body(self, w: Writer) -> None:
        """Version, context, runs, count, the encrypted row."""
        w.u8(self.version)
        w.blob(self.context)
        w.u32(self.runs)
        w.u64(self.cardinality)
        w.blob(self.row)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        version = _read_version(r)
        context = r.blob(max_len=256)
        runs = r.u32()
        count = r.u64()
        return cls(context, runs, count, r.blob(max_len=row_size(MAX_COLUMNS)), version)


class SumIdsParty(Machine[SumResult | SumPartial]):
    """The party holding identifiers only: it matches and adds ciphertexts blindly."""

    protocol = "intersection-sum"

    def __init__(
        self,
        items: Sequence[bytes],
        *,
        params: SumParams | None = None,
        context: bytes = b"",
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        if len(items) > MAX_ITEMS:
            raise LocalProtocolError(f"at most {MAX_ITEMS} items per bucket")
        if len(context) > 256:
            raise ConfigError("context must be at most 256 bytes")
        self._items = list(items)
        self._params = params or SumParams()
        self._context = context
        self._rng = rng
        self._key = b""
        self._count = len(self._items)
        self._sent: SumEncrypted | None = None
        self._peer_size = 0
        self._out: SumResult | None = None
        self._partial: SumPartial | None = None

    @property
    def done(self) -> bool:
        """True once the sums are known (deferred: once the run's row is added up)."""
        return self._out is not None or self._partial is not None

    def _on_start(self) -> list[Message]:
        p = self._params
        self._key = scalar_random(rng=self._rng)
        order = shuffle_order(len(self._items), self._rng)
        hashed = hash_to_group_many((self._items[i] for i in order), domain=p.domain)
        self._items = []
        blinded = point_mul_many(self._key, hashed)
        return [SumHello(p, self._context, self._count), SumBlinded(pack(blinded, POINT_SIZE))]

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._sent is None:
            if not isinstance(msg, SumReply):
                raise self._unexpected(msg, "SumReply")
            hits, rows, publics = self._matched(msg)
            if self._params.deferred:  # the rows are added in the total, never sent alone
                row = _added(rows, self._params.columns)
                self._partial = SumPartial(hits, row, msg.publics, self._peer_size)
                return []
            row = _encrypted_sum(rows, publics, self._params.columns, self._rng)
            self._sent = SumEncrypted(hits, row)
            return [self._sent]
        if not isinstance(msg, SumOutcome):
            raise self._unexpected(msg, "SumOutcome")
        _check_outcome(msg, self._sent.cardinality, self._params.columns)
        self._out = SumResult(msg.cardinality, msg.sums, self._peer_size)
        return []

    def _matched(self, msg: SumReply) -> tuple[int, list[bytes], list[bytes]]:
        """Check the reply; the match count, the matched ciphertext rows and the public keys."""
        c = self._params.columns
        publics = split(msg.publics, POINT_SIZE)
        if len(publics) != c:
            raise RemoteProtocolError(
                f"intersection-sum: {len(publics)} public keys for {c} value columns"
            )
        if not all(is_valid_point(k) for k in publics):
            raise RemoteProtocolError("intersection-sum: invalid public key")
        doubly = split(msg.doubly, POINT_SIZE)
        if len(doubly) != self._count:
            raise RemoteProtocolError(
                f"intersection-sum: {len(doubly)} doubly blinded values for our {self._count} items"
            )
        theirs = split(msg.points, POINT_SIZE)
        size = row_size(c)
        if len(msg.ciphertexts) != len(theirs) * size:
            raise RemoteProtocolError(
                f"intersection-sum: {len(theirs)} identifiers but "
                f"{len(msg.ciphertexts) // size} ciphertext rows"
            )
        self._peer_size = len(theirs)
        mine = set(doubly)
        again = _peer_points(self._key, theirs, "values party's set")
        hits = [j for j, point in enumerate(again) if point in mine]
        rows = [msg.ciphertexts[j * size : (j + 1) * size] for j in hits]
        return len(hits), rows, publics

    def _result(self) -> SumResult | SumPartial:
        if self._partial is not None:
            return self._partial
        assert self._out is not None
        return self._out


class SumValuesParty(Machine[SumResult | SumPartial]):
    """The party holding ``(identifier, values)``: it encrypts and finally decrypts the sums.

    ``values[i]`` holds one non-negative integer per value column for
    ``items[i]``; ``max_sum`` bounds each decrypted sum (decoding range).
    ``keys``: one ElGamal key per value column, shared by every run of a job
    (required when ``params.deferred``; otherwise fresh keys per run).
    """

    protocol = "intersection-sum"

    def __init__(
        self,
        items: Sequence[bytes],
        values: Sequence[Sequence[int]],
        *,
        params: SumParams | None = None,
        context: bytes = b"",
        max_sum: int = 1 << 40,
        keys: Sequence[ElGamalKey] | None = None,
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        self._params = params or SumParams()
        if keys is not None and len(keys) != self._params.columns:
            raise ConfigError(f"{len(keys)} keys for {self._params.columns} value columns")
        if keys is None and self._params.deferred:
            raise ConfigError("deferred runs need the job's keys (one per value column)")
        if len(items) != len(values):
            raise ConfigError(f"{len(items)} items but {len(values)} value rows")
        if len(items) > MAX_ITEMS:
            raise LocalProtocolError(f"at most {MAX_ITEMS} items per bucket")
        if not isinstance(max_sum, int) or not 0 <= max_sum <= MAX_PLAINTEXT:
            raise ConfigError(f"max_sum must be in 0..2**62, got {max_sum!r}")
        for row in values:
            if len(row) != self._params.columns:
                raise ConfigError(f"a value row has {len(row)} values for {self._params.columns}")
        self._items = list(items)
        self._values = [list(v) for v in values]
        self._context = context
        self._max = max_sum
        self._rng = rng
        self._given_keys = list(keys) if keys is not None else None
        self._keys: list[ElGamalKey] = []
        self._peer_count: int | None = None
        self._replied = False
        self._out: SumResult | None = None
        self._partial: SumPartial | None = None

    @property
    def done(self) -> bool:
        """True once the sums are decrypted and sent back (deferred: once replied)."""
        return self._out is not None or self._partial is not None

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._peer_count is None:
            if not isinstance(msg, SumHello):
                raise self._unexpected(msg, "SumHello")
            self._check_hello(msg)
            self._peer_count = msg.count
            return []
        if not self._replied:
            if not isinstance(msg, SumBlinded):
                raise self._unexpected(msg, "SumBlinded")
            reply = self._reply(msg, self._peer_count)
            if self._params.deferred:
                self._partial = SumPartial(None, b"", reply.publics, self._peer_count)
            return [reply]
        if not isinstance(msg, SumEncrypted):
            raise self._unexpected(msg, "SumEncrypted")
        return [self._decrypt(msg, self._peer_count)]

    def _check_hello(self, msg: SumHello) -> None:
        if msg.version != SUM_VERSION:
            raise RemoteProtocolError(
                f"intersection-sum: ids party speaks version {msg.version}, we speak {SUM_VERSION}"
            )
        if msg.params != self._params:
            raise RemoteProtocolError(
                f"intersection-sum: parameter mismatch: ids party has {msg.params}, "
                f"we have {self._params}"
            )
        if msg.context != self._context:
            raise RemoteProtocolError(
                f"intersection-sum: context mismatch: {msg.context!r} vs {self._context!r}"
            )
        if msg.count > MAX_ITEMS:
            raise RemoteProtocolError(f"intersection-sum: peer announces {msg.count} items")

    def _reply(self, msg: SumBlinded, count: int) -> SumReply:
        p = self._params
        received = split(msg.points, POINT_SIZE)
        if len(received) != count:
            raise RemoteProtocolError(
                f"intersection-sum: ids party announced {count} items but sent {len(received)}"
            )
        key = scalar_random(rng=self._rng)
        doubly = _peer_points(key, received, "ids party's set")
        perm = shuffle_order(len(doubly), self._rng)
        doubly = [doubly[i] for i in perm]
        if self._given_keys is not None:
            self._keys = self._given_keys
        else:
            self._keys = [keygen(rng=self._rng) for _ in range(p.columns)]
        order = shuffle_order(len(self._items), self._rng)
        hashed = hash_to_group_many((self._items[i] for i in order), domain=p.domain)
        own = point_mul_many(key, hashed)
        try:
            cts = encrypt_rows(self._keys, [self._values[i] for i in order], rng=self._rng)
        except CryptoError as exc:
            raise LocalProtocolError(f"intersection-sum: cannot encrypt our values: {exc}") from exc
        self._items, self._values = [], []
        self._replied = True
        return SumReply(
            b"".join(k.public for k in self._keys),
            pack(doubly, POINT_SIZE),
            pack(own, POINT_SIZE),
            cts,
        )

    def _decrypt(self, msg: SumEncrypted, count: int) -> SumOutcome:
        if msg.cardinality > count:
            raise RemoteProtocolError(
                f"intersection-sum: claimed intersection {msg.cardinality} exceeds {count} items"
            )
        sums = _decrypt_sums(self._keys, msg.row, self._max)
        self._out = SumResult(msg.cardinality, sums, count)
        return SumOutcome(msg.cardinality, sums)

    def _result(self) -> SumResult | SumPartial:
        if self._partial is not None:
            return self._partial
        assert self._out is not None
        return self._out


def _decrypt_sums(keys: Sequence[ElGamalKey], row: bytes, max_sum: int) -> tuple[int, ...]:
    if len(row) != row_size(len(keys)):
        raise RemoteProtocolError("intersection-sum: encrypted sum has the wrong size")
    try:
        return tuple(decrypt_row(list(keys), row, max_sum))
    except CryptoError as exc:
        raise LocalProtocolError(
            f"intersection-sum: a sum could not be decoded within 0..{max_sum} "
            f"({exc}); raise the decoding range (max_sum)"
        ) from exc


class SumTotalIdsParty(Machine[SumResult]):
    """The ids party's final run: adds every deferred run's row and asks for the total.

    ``partials``: the :class:`SumPartial` of every run, from
    :class:`SumIdsParty` with ``deferred`` params. Every run must have used
    the same public keys (a values party that switched keys would only
    spoil its own total, but it is refused as a protocol error).
    """

    protocol = "intersection-sum"

    def __init__(
        self,
        partials: Sequence[SumPartial],
        *,
        params: SumParams | None = None,
        context: bytes = b"",
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        self._params = params or SumParams(deferred=True)
        if not partials or len(partials) > MAX_RUNS:
            raise LocalProtocolError(f"a total covers 1..{MAX_RUNS} runs, got {len(partials)}")
        if any(p.cardinality is None for p in partials):
            raise LocalProtocolError("a total needs the ids party's partials")
        if len(context) > 256:
            raise ConfigError("context must be at most 256 bytes")
        self._partials = list(partials)
        self._context = context
        self._rng = rng
        self._sent: SumTotal | None = None
        self._out: SumResult | None = None

    @property
    def done(self) -> bool:
        """True once the total sums are known."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        c = self._params.columns
        publics = self._partials[0].publics
        if any(not constant_time_equal(p.publics, publics) for p in self._partials):
            raise RemoteProtocolError(
                "intersection-sum: the values party used different keys in different runs"
            )
        rows = [p.row for p in self._partials]
        row = _encrypted_sum(rows, split(publics, POINT_SIZE), c, self._rng)
        count = sum(int(p.cardinality or 0) for p in self._partials)
        self._sent = SumTotal(self._context, len(self._partials), count, row)
        return [self._sent]

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._sent is None or not isinstance(msg, SumOutcome):
            raise self._unexpected(msg, "SumOutcome")
        _check_outcome(msg, self._sent.cardinality, self._params.columns)
        peer = sum(p.peer_size for p in self._partials)
        self._out = SumResult(msg.cardinality, msg.sums, peer)
        return []

    def _result(self) -> SumResult:
        assert self._out is not None
        return self._out


class SumTotalValuesParty(Machine[SumResult]):
    """The values party's final run: decrypts the total once, for both parties.

    ``keys``: the job keys every deferred run used; ``partials``: this
    party's :class:`SumPartial` of every run (for the peer's item counts and
    the number of runs); ``own_items``: its items over all runs; ``max_sum``
    bounds each total (decoding range).
    """

    protocol = "intersection-sum"

    def __init__(
        self,
        keys: Sequence[ElGamalKey],
        partials: Sequence[SumPartial],
        *,
        own_items: int,
        params: SumParams | None = None,
        context: bytes = b"",
        max_sum: int = 1 << 40,
    ) -> None:
        super().__init__()
        self._params = params or SumParams(deferred=True)
        if len(keys) != self._params.columns:
            raise ConfigError(f"{len(keys)} keys for {self._params.columns} value columns")
        if not partials or len(partials) > MAX_RUNS:
            raise LocalProtocolError(f"a total covers 1..{MAX_RUNS} runs, got {len(partials)}")
        if not isinstance(max_sum, int) or not 0 <= max_sum <= MAX_PLAINTEXT:
            raise ConfigError(f"max_sum must be in 0..2**62, got {max_sum!r}")
        self._keys = list(keys)
        self._runs = len(partials)
        self._peer = sum(p.peer_size for p in partials)
        self._own = own_items
        self._context = context
        self._max = max_sum
        self._out: SumResult | None = None

    @property
    def done(self) -> bool:
        """True once the total is decrypted and sent back."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._out is not None or not isinstance(msg, SumTotal):
            raise self._unexpected(msg, "SumTotal")
        if msg.context != self._context:
            raise RemoteProtocolError(
                f"intersection-sum: context mismatch: {msg.context!r} vs {self._context!r}"
            )
        if msg.runs != self._runs:
            raise RemoteProtocolError(
                f"intersection-sum: the total covers {msg.runs} runs, we ran {self._runs}"
            )
        if msg.cardinality > min(self._peer, self._own):
            raise RemoteProtocolError(
                f"intersection-sum: claimed intersection {msg.cardinality} exceeds "
                f"{min(self._peer, self._own)} items"
            )
        sums = _decrypt_sums(self._keys, msg.row, self._max)
        self._out = SumResult(msg.cardinality, sums, self._peer)
        return [SumOutcome(msg.cardinality, sums)]

    def _result(self) -> SumResult:
        assert self._out is not None
        return self._out
