"""ECDH private set intersection over ristretto255 (receiver and sender roles).

Why: the brand wants to know which of its members the provider also knows
without either side revealing the rest of its list. The classic
Diffie-Hellman PSI (Meadows 1986; Huberman-Franklin-Hogg 1999; the protocol
behind Google's and OpenMined's PSI) does it in one round trip with
hash-to-group plus two scalar multiplications per item and party, which makes
it the portable default engine. See ``docs/protocols/ecdh-psi.md``.

Flow (receiver R holds ``X``, sender S holds ``Y``; keys ``a``, ``b``)::

    R -> S  PsiHello(params, context, |X|)
    R -> S  PsiBlinded(shuffled a*H(x))
    S -> R  PsiReply(params, b*a*H(x) in R's order -- or shuffled if
                     cardinality-only -- truncated, and shuffled b*H(y))
    R -> S  PsiReveal(matched sender positions | count)   only if reveal=both

``H`` is RFC 9496 ``from_hash`` over a domain-separated SHA-512
(:func:`atoll.crypto.group.hash_to_group`), the domain binding the protocol
version and the ID kind. The receiver compares ``a*(b*H(y))`` with the
doubly blinded values it got back, truncated to ``truncate`` bytes.

Semi-honest security; every peer value is still validated (sizes, counts,
points, parameters) so that a buggy or hostile peer produces a specific
:class:`~atoll.errors.RemoteProtocolError`, never a wrong answer silently.

The packed-array helpers here (:func:`pack`, :func:`split`, :func:`shuffle_order`)
are shared by the other group-based protocols.

Speed (issue 3): points travel as joined buffers from the hash through the
multiplications to the codec (:func:`~atoll.crypto.group.point_mul_packed`:
no Python object per point, each point decoded -- and so validated -- once
by libsodium); inputs may be a :class:`PackedItems` (one buffer plus end
offsets), which pickles to a worker process as two flat arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self, overload

import numpy as np
import numpy.typing as npt

from atoll.crypto import Rng, keyed_hash64_many, new_key
from atoll.crypto.group import (
    POINT_SIZE,
    hash_to_group_packed,
    point_mul_packed,
    scalar_random,
)
from atoll.errors import ConfigError, CryptoError, LocalProtocolError, RemoteProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, Reader, Writer, register

__all__ = [
    "DEFAULT_TRUNCATE",
    "MAX_ITEMS",
    "PSI_VERSION",
    "IndexArray",
    "PackedItems",
    "PsiBlinded",
    "PsiHello",
    "PsiParams",
    "PsiReceiver",
    "PsiReply",
    "PsiResult",
    "PsiReveal",
    "PsiSender",
    "pack",
    "read_packed",
    "shuffle_order",
    "split",
    "write_packed",
]

#: Version of the ECDH PSI protocol (in PsiHello / PsiReply; mismatches are refused).
PSI_VERSION = 1
#: Most items one bucket may hold on either side (bounds every peer-sent array).
MAX_ITEMS = 1 << 24
#: Default bytes compared per doubly blinded value (see :class:`PsiParams`).
DEFAULT_TRUNCATE = 12
_DOMAIN = b"atoll/ecdh-psi/v1"
_MAX_CONTEXT = 256

IndexArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------
# Packed arrays and shuffling (shared with labeled PSI and intersection-sum)
# ---------------------------------------------------------------------------


def pack(items: Sequence[bytes], size: int) -> bytes:
    """Concatenate fixed-size items; ValueError if any has another size."""
    data = b"".join(items)
    if len(data) != size * len(items):
        raise ValueError(f"every item must be {size} bytes")
    return data


def split(data: bytes, size: int) -> list[bytes]:
    """The inverse of :func:`pack`."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def write_packed(w: Writer, data: bytes, size: int) -> None:
    """Write ``data`` (joined ``size``-byte items) in the codec's packed form."""
    w.packed_bytes(data, size)


def read_packed(r: Reader, size: int, *, max_count: int = MAX_ITEMS) -> bytes:
    """Read a packed array kept joined, refusing more than ``max_count`` items (a bucket's cap)."""
    return r.packed_bytes(size, max_count=max_count)


class PackedItems(Sequence[bytes]):
    """Variable-length items kept in one buffer: item ``i`` is ``data[ends[i-1]:ends[i]]``.

    A protocol input that costs no Python object per item until the
    protocol reads it, and pickles (to a worker process) as one bytes object
    and one array of 4-byte offsets. Build from Arrow string buffers or with
    :meth:`from_items`.
    """

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: npt.NDArray[np.integer[Any]]) -> None:
        e: npt.NDArray[np.int64] = np.asarray(ends, dtype=np.int64)
        if e.ndim != 1 or (len(e) and (int(e[-1]) != len(data) or e[0] < 0)):
            raise ValueError("PackedItems: ends must be a 1-D array ending at len(data)")
        if len(e) > 1 and bool(np.any(np.diff(e) < 0)):
            raise ValueError("PackedItems: ends must be non-decreasing")
        if not len(e) and data:
            raise ValueError("PackedItems: data without items")
        self.data = bytes(data)
        self.ends = e

    @classmethod
    def from_items(cls, items: Sequence[bytes]) -> PackedItems:
        """Pack a list of byte strings."""
        lengths = np.fromiter((len(x) for x in items), dtype=np.int64, count=len(items))
        return cls(b"".join(items), np.cumsum(lengths, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("PackedItems index out of range")
        start = int(self.ends[index - 1]) if index else 0
        return self.data[start : int(self.ends[index])]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.take(np.arange(len(self))))

    def take(self, order: npt.NDArray[np.int64]) -> list[bytes]:
        """The items at positions ``order``, in that order."""
        ends = self.ends
        starts = np.empty_like(ends)
        if len(ends):
            starts[0] = 0
            starts[1:] = ends[:-1]
        data = self.data
        return [
            data[a:b] for a, b in zip(starts[order].tolist(), ends[order].tolist(), strict=True)
        ]

    def __reduce__(self) -> tuple[type[PackedItems], tuple[bytes, npt.NDArray[np.integer[Any]]]]:
        # Offsets travel as 4-byte integers when they fit (they do below 4 GiB of IDs).
        small = len(self.data) < 2**32
        return (PackedItems, (self.data, self.ends.astype(np.uint32) if small else self.ends))


def shuffle_order(n: int, rng: Rng | None) -> IndexArray:
    """A uniformly random permutation of ``range(n)`` from a keyed PRF.

    Sorting by ``BLAKE2b-64_k(i)`` for a fresh random key ``k`` gives a
    permutation that is computationally indistinguishable from uniform (ties
    have probability ~n^2/2^65); no global RNG is touched.
    """
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    key = new_key(32, rng=rng)
    prf = keyed_hash64_many(key, (i.to_bytes(4, "big") for i in range(n)), person=b"atoll-shuffle")
    return np.argsort(prf, kind="stable").astype(np.int64)


def _peer_points(scalar: bytes, points: bytes, what: str) -> bytes:
    """``scalar * p`` for every joined peer point; a bad point is the peer's error."""
    try:
        return point_mul_packed(scalar, points)
    except CryptoError as exc:
        raise RemoteProtocolError(f"{what}: {exc}") from exc


def _blind_own(
    items: PackedItems | list[bytes], order: IndexArray, key: bytes, domain: bytes
) -> bytes:
    """``key * H(items[i])`` for ``i`` in ``order``, joined (our own points)."""
    ordered = items.take(order) if isinstance(items, PackedItems) else [items[i] for i in order]
    return point_mul_packed(key, hash_to_group_packed(ordered, domain=domain))


def _rows(data: bytes, width: int) -> npt.NDArray[np.uint8]:
    """A joined buffer of ``width``-byte values as an ``(n, width)`` uint8 view."""
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width)


# ---------------------------------------------------------------------------
# Parameters and messages (types 0x0101..0x0104)
# ---------------------------------------------------------------------------

_REVEALS = ("receiver", "both")


@dataclass(frozen=True)
class PsiParams:
    """What both roles must agree on.

    ``reveal``: ``"receiver"`` (only the receiver learns the intersection) or
    ``"both"``. ``cardinality_only``: output only the intersection size.
    ``truncate``: bytes of each doubly blinded value sent and compared (8..32;
    the false-match probability is at most ``|X|*|Y| / 2**(8*truncate - 1)``).
    The default :data:`DEFAULT_TRUNCATE` (12 bytes, 95 bits) keeps that below
    2^-47 even for a bucket of 2^24 x 2^24 items and cuts the sender's reply
    from 64 to 44 bytes per item.
    ``kind``: the ID kind label, bound into the hash-to-group domain.
    """

    reveal: str = "receiver"
    cardinality_only: bool = False
    truncate: int = DEFAULT_TRUNCATE
    kind: str = "opaque"

    def __post_init__(self) -> None:
        if self.reveal not in _REVEALS:
            raise ConfigError(f"reveal must be 'receiver' or 'both', got {self.reveal!r}")
        if not isinstance(self.truncate, int) or not 8 <= self.truncate <= POINT_SIZE:
            raise ConfigError(f"truncate must be 8..{POINT_SIZE} bytes, got {self.truncate!r}")
        if not self.kind or len(self.kind.encode()) > 64:
            raise ConfigError("kind must be 1..64 bytes")

    @property
    def domain(self) -> bytes:
        """The hash-to-group domain: protocol, version and ID kind."""
        return _DOMAIN + b"/" + self.kind.encode()

    def write(self, w: Writer) -> None:
        """Encode (version first)."""
        w.u8(PSI_VERSION)
        w.u8(_REVEALS.index(self.reveal))
        w.u8(int(self.cardinality_only))
        w.u8(self.truncate)
        w.text(self.kind)

    @classmethod
    def read(cls, r: Reader) -> tuple[int, Self]:
        """Decode; returns ``(version, params)`` (the caller checks the version)."""
        version = r.u8()
        reveal = r.u8()
        card = r.u8()
        truncate = r.u8()
        kind = r.text(max_len=64)
        if reveal >= len(_REVEALS) or card > 1:
            raise RemoteProtocolError("PSI parameters out of range")
        try:
            return version, cls(_REVEALS[reveal], bool(card), truncate, kind)
        except ConfigError as exc:
            raise RemoteProtocolError(f"peer's PSI parameters are invalid: {exc}") from exc


def _check_peer(version: int, theirs: PsiParams, mine: PsiParams, who: str) -> None:
    if version != PSI_VERSION:
        raise RemoteProtocolError(
            f"ecdh-psi: {who} speaks protocol version {version}, we speak {PSI_VERSION}"
        )
    for field in ("reveal", "cardinality_only", "truncate", "kind"):
        a, b = getattr(theirs, field), getattr(mine, field)
        if a != b:
            raise RemoteProtocolError(
                f"ecdh-psi: parameter mismatch: {who}'s {field} is {a!r}, ours is {b!r}"
            )


@register
@dataclass(frozen=True)
class PsiHello(Message):
    """Receiver's opening: protocol version, parameters, context and set size."""

    TYPE = 0x0101
    params: PsiParams
    context: bytes
    count: int
    version: int = PSI_VERSION

    def encode_body(self, w: Writer) -> None:
        """Version, params, context, count."""
        w.u8(self.version)
        self.params.write(w)
        w.blob(self.context)
        w.u32(self.count)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        outer = r.u8()
        version, params = PsiParams.read(r)
        if outer != version:
            raise RemoteProtocolError("PsiHello: inconsistent version fields")
        context = r.blob(max_len=_MAX_CONTEXT)
        count = r.u32()
        return cls(params, context, count, version)


@register
@dataclass(frozen=True)
class PsiBlinded(Message):
    """Receiver's blinded items ``a*H(x)``, shuffled, packed 32 bytes each."""

    TYPE = 0x0102
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
class PsiReply(Message):
    """Sender's reply: its params, the doubly blinded values and its own blinded set."""

    TYPE = 0x0103
    params: PsiParams
    doubly: bytes
    sender_points: bytes

    def encode_body(self, w: Writer) -> None:
        """Params, packed truncated doubly blinded values, packed sender points."""
        self.params.write(w)
        write_packed(w, self.doubly, self.params.truncate)
        write_packed(w, self.sender_points, POINT_SIZE)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body` (the version is checked by the receiver)."""
        version, params = PsiParams.read(r)
        if version != PSI_VERSION:
            raise RemoteProtocolError(
                f"ecdh-psi: sender speaks protocol version {version}, we speak {PSI_VERSION}"
            )
        doubly = read_packed(r, params.truncate)
        return cls(params, doubly, read_packed(r, POINT_SIZE))


@register
@dataclass(frozen=True)
class PsiReveal(Message):
    """Receiver to sender (reveal=both): matched positions in the sender's list, or a count."""

    TYPE = 0x0104
    count: int
    positions: bytes  # packed u32 big-endian, ascending; empty when cardinality-only

    def encode_body(self, w: Writer) -> None:
        """Count, then packed positions."""
        w.u32(self.count)
        write_packed(w, self.positions, 4)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        count = r.u32()
        return cls(count, read_packed(r, 4))


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PsiResult:
    """One party's output for one run.

    ``indices``: sorted positions (into this party's own item list) of the
    matched items, or ``None`` when this party learns only the size (or,
    for the sender with reveal=receiver, nothing about the intersection).
    ``cardinality``: the intersection size, or ``None`` if not learned.
    ``peer_size``: the other party's set size (both sides learn it).
    """

    indices: IndexArray | None
    cardinality: int | None
    peer_size: int


# ---------------------------------------------------------------------------
# The two roles
# ---------------------------------------------------------------------------


def _as_items(items: Sequence[bytes]) -> PackedItems | list[bytes]:
    if len(items) > MAX_ITEMS:
        raise LocalProtocolError(f"a bucket may hold at most {MAX_ITEMS} items, got {len(items)}")
    return items if isinstance(items, PackedItems) else list(items)


def _check_context(context: bytes) -> bytes:
    if len(context) > _MAX_CONTEXT:
        raise ConfigError(f"context must be at most {_MAX_CONTEXT} bytes")
    return context


class PsiReceiver(Machine[PsiResult]):
    """The receiver: sends its blinded set first and learns the intersection."""

    protocol = "ecdh-psi"

    def __init__(
        self,
        items: Sequence[bytes],
        *,
        params: PsiParams | None = None,
        context: bytes = b"",
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        self._items = _as_items(items)
        self._params = params or PsiParams()
        self._context = _check_context(context)
        self._rng = rng
        self._key = b""
        self._order: IndexArray = np.zeros(0, dtype=np.int64)
        self._out: PsiResult | None = None

    @property
    def done(self) -> bool:
        """True once the intersection is known (and revealed, if asked)."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        p = self._params
        self._key = scalar_random(rng=self._rng)
        n = len(self._items)
        self._order = shuffle_order(n, self._rng)
        blinded = _blind_own(self._items, self._order, self._key, p.domain)
        self._items = []  # not needed any more
        return [PsiHello(p, self._context, n), PsiBlinded(blinded)]

    def _on_receive(self, msg: Message) -> list[Message]:
        if not isinstance(msg, PsiReply):
            raise self._unexpected(msg, "PsiReply")
        p = self._params
        _check_peer(PSI_VERSION, msg.params, p, "sender")
        n = len(self._order)
        t = p.truncate
        if len(msg.doubly) != n * t:
            raise RemoteProtocolError(
                f"ecdh-psi: sender returned {len(msg.doubly) // t} doubly blinded values "
                f"for our {n} items"
            )
        mine = _peer_points(self._key, msg.sender_points, "sender's set")
        peer_size = len(mine) // POINT_SIZE
        short = _rows(mine, POINT_SIZE)[:, :t].tobytes()
        theirs = {short[j : j + t]: pos for pos, j in enumerate(range(0, len(short), t))}
        doubly = msg.doubly
        hits = [i for i, j in enumerate(range(0, len(doubly), t)) if doubly[j : j + t] in theirs]
        count = len(hits)
        out: list[Message] = []
        if p.cardinality_only:
            self._out = PsiResult(None, count, peer_size)
            if p.reveal == "both":
                out.append(PsiReveal(count, b""))
            return out
        indices = np.sort(self._order[np.asarray(hits, dtype=np.int64)])
        self._out = PsiResult(indices, count, peer_size)
        if p.reveal == "both":
            positions = sorted(theirs[doubly[i * t : (i + 1) * t]] for i in hits)
            out.append(PsiReveal(count, np.asarray(positions, dtype=">u4").tobytes()))
        return out

    def _result(self) -> PsiResult:
        assert self._out is not None
        return self._out


class PsiSender(Machine[PsiResult]):
    """The sender: answers the receiver's blinded set with its own."""

    protocol = "ecdh-psi"

    def __init__(
        self,
        items: Sequence[bytes],
        *,
        params: PsiParams | None = None,
        context: bytes = b"",
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        self._items = _as_items(items)
        self._params = params or PsiParams()
        self._context = _check_context(context)
        self._rng = rng
        self._key = b""
        self._order: IndexArray = np.zeros(0, dtype=np.int64)
        self._peer_count: int | None = None
        self._replied = False
        self._out: PsiResult | None = None

    @property
    def done(self) -> bool:
        """True once the sender's part (and the reveal, if any) is over."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._peer_count is None:
            if not isinstance(msg, PsiHello):
                raise self._unexpected(msg, "PsiHello")
            _check_peer(msg.version, msg.params, self._params, "receiver")
            if msg.context != self._context:
                raise RemoteProtocolError(
                    f"ecdh-psi: context mismatch: receiver is in {msg.context!r}, "
                    f"we are in {self._context!r}"
                )
            if msg.count > MAX_ITEMS:
                raise RemoteProtocolError(f"ecdh-psi: receiver announces {msg.count} items")
            self._peer_count = msg.count
            return []
        if not self._replied:
            if not isinstance(msg, PsiBlinded):
                raise self._unexpected(msg, "PsiBlinded")
            return self._reply(msg, self._peer_count)
        if not isinstance(msg, PsiReveal):
            raise self._unexpected(msg, "PsiReveal")
        self._take_reveal(msg)
        return []

    def _reply(self, msg: PsiBlinded, count: int) -> list[Message]:
        p = self._params
        sent = len(msg.points) // POINT_SIZE
        if sent != count:
            raise RemoteProtocolError(f"ecdh-psi: receiver announced {count} items but sent {sent}")
        self._key = scalar_random(rng=self._rng)
        rows = _rows(_peer_points(self._key, msg.points, "receiver's set"), POINT_SIZE)
        t = p.truncate
        if p.cardinality_only:
            rows = rows[shuffle_order(len(rows), self._rng)]
        doubly = rows[:, :t].tobytes()
        n = len(self._items)
        self._order = shuffle_order(n, self._rng)
        own = _blind_own(self._items, self._order, self._key, p.domain)
        self._items = []
        self._replied = True
        reply = PsiReply(p, doubly, own)
        if p.reveal == "receiver":
            self._out = PsiResult(None, None, count)
        return [reply]

    def _take_reveal(self, msg: PsiReveal) -> None:
        p = self._params
        n = len(self._order)
        peer = self._peer_count or 0
        if msg.count > min(n, peer):
            raise RemoteProtocolError(
                f"ecdh-psi: revealed count {msg.count} exceeds the set sizes ({peer}, {n})"
            )
        if p.cardinality_only:
            if msg.positions:
                raise RemoteProtocolError("ecdh-psi: positions revealed in cardinality-only mode")
            self._out = PsiResult(None, msg.count, peer)
            return
        positions = np.frombuffer(msg.positions, dtype=">u4").astype(np.int64)
        if len(positions) != msg.count:
            raise RemoteProtocolError(
                f"ecdh-psi: reveal says {msg.count} matches but lists {len(positions)}"
            )
        if len(positions) and (
            positions[-1] >= n or (len(positions) > 1 and bool(np.any(np.diff(positions) <= 0)))
        ):
            raise RemoteProtocolError(
                "ecdh-psi: revealed positions must be ascending, unique and in range"
            )
        indices = np.sort(self._order[positions])
        self._out = PsiResult(indices, msg.count, peer)

    def _result(self) -> PsiResult:
        assert self._out is not None
        return self._out
