"""An oblivious PRF over ristretto255: ``F_k(x) = Finalize(x, k*H(x))`` by blind evaluation.

Why: labeled PSI (tag augmentation) and the covert query's bucket mode need
the receiver to learn a keyed function of *its own* items only -- phone
numbers have so little entropy that a plain or salted hash is reversible by
enumeration, so the key must stay with the sender and each evaluation must go
through the sender, blindly. This is the 2HashDH construction (Jarecki,
Kiayias, Krawczyk 2014) in the shape of RFC 9497's base mode:

* client: ``P = H(x)`` (RFC 9496 ``from_hash`` on a domain-separated
  SHA-512), blind ``B = r*P``;
* server: ``Z = k*B`` (every point validated);
* client: unblind ``N = r^-1 * Z = k*H(x)``, then
  ``F_k(x) = HKDF-SHA256(ikm=N, salt=len(x)||x, info=domain||"finalize")``,
  64 bytes.

Batching: one blinding scalar ``r`` per batch (not per item). A semi-honest
server sees ``r*H(x_i)``, which is indistinguishable from random points under
DDH; one ``r`` only lets it see which requested items are *equal*, and the
callers de-duplicate first. It saves a scalar inversion per item. RFC 9497's
finalization hashes with SHA-512 and a fixed layout; ours uses HKDF so that
the output length is a parameter -- it is therefore *not* interoperable
with RFC 9497 test vectors, and does not claim to be.

The messages (0x0201, 0x0202) are reused by :mod:`atoll.protocols.labeled_psi`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from atoll.crypto import Rng, hkdf
from atoll.crypto.group import (
    POINT_SIZE,
    hash_to_group_many,
    point_mul_many,
    scalar_invert,
    scalar_random,
)
from atoll.errors import ConfigError, CryptoError, RemoteProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, Reader, Writer, register
from atoll.protocols.psi import MAX_ITEMS, pack, read_packed, split, write_packed

__all__ = [
    "OPRF_OUTPUT_SIZE",
    "OPRF_VERSION",
    "OprfClient",
    "OprfRequest",
    "OprfResponse",
    "OprfServer",
    "blind",
    "check_request",
    "check_response",
    "evaluate",
    "finalize",
    "finalize_many",
    "oprf_direct",
    "unblind",
]

#: Version of the OPRF (carried in :class:`OprfRequest`).
OPRF_VERSION = 1
#: Bytes of one OPRF output.
OPRF_OUTPUT_SIZE = 64


def _domain(domain: bytes) -> bytes:
    if not 1 <= len(domain) <= 200:
        raise ConfigError("OPRF domain must be 1..200 bytes")
    return b"atoll/oprf/v1/" + domain


def blind(
    items: Sequence[bytes], *, domain: bytes, rng: Rng | None = None
) -> tuple[bytes, list[bytes]]:
    """Hash ``items`` to the group and blind them with one fresh scalar ``r``.

    Returns ``(r, [r*H(x) ...])``; keep ``r`` secret for :func:`unblind`.
    """
    r = scalar_random(rng=rng)
    return r, point_mul_many(r, hash_to_group_many(items, domain=_domain(domain)))


def evaluate(key: bytes, blinded: Sequence[bytes]) -> list[bytes]:
    """The server's step ``k*B`` for every blinded point (RemoteProtocolError if invalid)."""
    try:
        return point_mul_many(key, blinded)
    except CryptoError as exc:
        raise RemoteProtocolError(f"oprf: client sent {exc}") from exc


def unblind(r: bytes, evaluated: Sequence[bytes]) -> list[bytes]:
    """The client's step ``r^-1 * Z`` (RemoteProtocolError if a point is invalid)."""
    try:
        return point_mul_many(scalar_invert(r), evaluated)
    except CryptoError as exc:
        raise RemoteProtocolError(f"oprf: server sent {exc}") from exc


def finalize(item: bytes, element: bytes, *, domain: bytes) -> bytes:
    """``HKDF(ikm=k*H(x), salt=len(x)||x, info=domain||"finalize")``, 64 bytes."""
    salt = len(item).to_bytes(4, "big") + item
    return hkdf(element, salt=salt, info=_domain(domain) + b"/finalize", length=OPRF_OUTPUT_SIZE)


def finalize_many(
    items: Sequence[bytes], elements: Sequence[bytes], *, domain: bytes
) -> list[bytes]:
    """:func:`finalize` pairwise."""
    if len(items) != len(elements):
        raise ConfigError("finalize_many needs as many elements as items")
    return [finalize(x, e, domain=domain) for x, e in zip(items, elements, strict=True)]


def oprf_direct(key: bytes, items: Sequence[bytes], *, domain: bytes) -> list[bytes]:
    """The server's own evaluation ``F_k(y)`` of its items (no blinding needed)."""
    elements = point_mul_many(key, hash_to_group_many(items, domain=_domain(domain)))
    return finalize_many(items, elements, domain=domain)


# ---------------------------------------------------------------------------
# Messages and a stand-alone client/server pair
# ---------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class OprfRequest(Message):
    """Client to server: OPRF version and blinded points (packed)."""

    TYPE = 0x0201
    points: bytes
    version: int = OPRF_VERSION

    def encode_body(self, w: Writer) -> None:
        """Version then packed points."""
        w.u8(self.version)
        write_packed(w, self.points, POINT_SIZE)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        version = r.u8()
        return cls(read_packed(r, POINT_SIZE), version)


@register
@dataclass(frozen=True)
class OprfResponse(Message):
    """Server to client: the evaluated points, in request order (packed)."""

    TYPE = 0x0202
    points: bytes

    def encode_body(self, w: Writer) -> None:
        """Packed points."""
        write_packed(w, self.points, POINT_SIZE)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        return cls(read_packed(r, POINT_SIZE))


def check_request(msg: OprfRequest) -> list[bytes]:
    """Version-check a request and split its points."""
    if msg.version != OPRF_VERSION:
        raise RemoteProtocolError(
            f"oprf: client speaks version {msg.version}, we speak {OPRF_VERSION}"
        )
    return split(msg.points, POINT_SIZE)


def check_response(msg: OprfResponse, expected: int) -> list[bytes]:
    """Split a response's points, refusing a count other than ``expected``."""
    points = split(msg.points, POINT_SIZE)
    if len(points) != expected:
        raise RemoteProtocolError(f"oprf: server evaluated {len(points)} points for our {expected}")
    return points


class OprfClient(Machine[list[bytes]]):
    """Obtain ``F_k(x)`` for each of our items; the server learns nothing about them."""

    protocol = "oprf"

    def __init__(self, items: Sequence[bytes], *, domain: bytes, rng: Rng | None = None) -> None:
        super().__init__()
        if len(items) > MAX_ITEMS:
            raise ConfigError(f"at most {MAX_ITEMS} items per OPRF batch")
        self._items = list(items)
        self._domain = domain
        self._rng = rng
        self._r = b""
        self._out: list[bytes] | None = None

    @property
    def done(self) -> bool:
        """True once the outputs are known."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        self._r, blinded = blind(self._items, domain=self._domain, rng=self._rng)
        return [OprfRequest(pack(blinded, POINT_SIZE))]

    def _on_receive(self, msg: Message) -> list[Message]:
        if not isinstance(msg, OprfResponse):
            raise self._unexpected(msg, "OprfResponse")
        elements = unblind(self._r, check_response(msg, len(self._items)))
        self._out = finalize_many(self._items, elements, domain=self._domain)
        return []

    def _result(self) -> list[bytes]:
        assert self._out is not None
        return self._out


class OprfServer(Machine[int]):
    """Evaluate one batch of blinded points under ``key``; the result is the batch size."""

    protocol = "oprf"

    def __init__(self, key: bytes, *, max_items: int = MAX_ITEMS) -> None:
        super().__init__()
        self._key = key
        self._max = max_items
        self._count: int | None = None

    @property
    def done(self) -> bool:
        """True once one batch was answered."""
        return self._count is not None

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        if not isinstance(msg, OprfRequest):
            raise self._unexpected(msg, "OprfRequest")
        points = check_request(msg)
        if len(points) > self._max:
            raise RemoteProtocolError(f"oprf: {len(points)} points exceed the limit {self._max}")
        out = evaluate(self._key, points)
        self._count = len(out)
        return [OprfResponse(pack(out, POINT_SIZE))]

    def _result(self) -> int:
        assert self._count is not None
        return self._count
