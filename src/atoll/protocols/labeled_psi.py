"""Labeled PSI (tag augmentation): the receiver learns the labels of its matched IDs only.

Why: the brand wants the provider's third-party tags ("三方标签增补") for the
members both know, and nothing about the provider's other records. Built on
the OPRF of :mod:`atoll.protocols.oprf`, never on plain hashes (phone numbers
are low-entropy; a hash is reversible by enumeration). See
``docs/protocols/labeled-psi.md``.

Flow (receiver R holds ``X``; sender S holds ``Y`` with a label record per
item and a fresh OPRF key ``k`` per run)::

    R -> S  LabeledHello(version, tag size, kind, context, |X|)
    R -> S  OprfRequest(r*H(x), shuffled)
    S -> R  OprfResponse(k*r*H(x))          count checked by R
    S -> R  LabeledTable(columns, width, shuffled (T_y, C_y) for every y)

with ``F = F_k(y)`` (64 bytes), ``T_y = F[0:tag_size]`` and
``C_y = ChaCha20-Poly1305(key=F[32:64], nonce=0, record_y padded to width,
aad=domain||context)``. Each key encrypts exactly one record (``k`` is fresh
per run), so the fixed nonce is never reused under a key. Records are padded
to one width per run so ciphertext lengths say nothing about which records
have longer labels. R computes ``F_k(x)`` for its items, looks each tag up
and decrypts only its matches; other ciphertexts stay pseudorandom to it.

A label record is a versioned serialization of several columns
(:func:`encode_labels`): ``version || u16 n || n * (u8 present || u32 len ||
utf8)`` then zero padding.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from atoll.crypto import Rng, aead_decrypt, aead_encrypt
from atoll.crypto.group import POINT_SIZE, scalar_random
from atoll.errors import ConfigError, DecryptionError, LocalProtocolError, RemoteProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import Message, Reader, Writer, register
from atoll.protocols.oprf import (
    OprfRequest,
    OprfResponse,
    blind,
    check_request,
    check_response,
    evaluate,
    finalize_many,
    oprf_direct,
    unblind,
)
from atoll.protocols.psi import (
    MAX_ITEMS,
    IndexArray,
    pack,
    read_packed,
    shuffle_order,
    split,
    write_packed,
)

__all__ = [
    "LABELED_VERSION",
    "LABEL_RECORD_VERSION",
    "LabeledHello",
    "LabeledParams",
    "LabeledPsiReceiver",
    "LabeledPsiSender",
    "LabeledResult",
    "LabeledTable",
    "decode_labels",
    "encode_labels",
    "label_record_size",
]

#: Version of the labeled PSI protocol.
LABELED_VERSION = 1
#: First byte of every label record.
LABEL_RECORD_VERSION = 1
_DOMAIN = b"atoll/labeled-psi/v1"
_TAG_OVERHEAD = 16
_NONCE = bytes(12)
_MAX_WIDTH = 1 << 20
_MAX_COLUMNS = 1024
_U32 = struct.Struct(">I")


# ---------------------------------------------------------------------------
# Label records
# ---------------------------------------------------------------------------


def label_record_size(value_lengths: Sequence[int | None]) -> int:
    """Encoded size of a record whose values have these UTF-8 lengths (None = null)."""
    return 3 + sum(1 + (0 if n is None else 4 + n) for n in value_lengths)


def encode_labels(values: Sequence[str | None], *, width: int | None = None) -> bytes:
    """Serialize one label record, zero-padded to ``width`` bytes if given."""
    if len(values) > _MAX_COLUMNS:
        raise ConfigError(f"at most {_MAX_COLUMNS} label columns")
    parts = [bytes([LABEL_RECORD_VERSION]), len(values).to_bytes(2, "big")]
    for v in values:
        if v is None:
            parts.append(b"\x00")
        else:
            data = v.encode("utf-8")
            parts.append(b"\x01" + _U32.pack(len(data)) + data)
    out = b"".join(parts)
    if width is not None:
        if len(out) > width:
            raise ConfigError(f"label record of {len(out)} bytes exceeds the width {width}")
        out += bytes(width - len(out))
    return out


def decode_labels(data: bytes) -> tuple[str | None, ...]:
    """Parse a record written by :func:`encode_labels` (padding must be zeros)."""
    r = Reader(data, what="label record")
    if r.u8() != LABEL_RECORD_VERSION:
        raise RemoteProtocolError("label record: unknown version")
    n = r.u16()
    values: list[str | None] = []
    for _ in range(n):
        flag = r.u8()
        if flag == 0:
            values.append(None)
        elif flag == 1:
            values.append(r.text(max_len=_MAX_WIDTH))
        else:
            raise RemoteProtocolError("label record: bad presence flag")
    rest = r.raw(len(data) - r._pos)
    if rest.strip(b"\x00"):
        raise RemoteProtocolError("label record: non-zero padding")
    return tuple(values)


# ---------------------------------------------------------------------------
# Parameters and messages (0x0203, 0x0204; OPRF messages are 0x0201/0x0202)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledParams:
    """What both roles agree on: tag size in bytes (8..32) and the ID kind.

    The chance that a receiver item wrongly matches some sender tag is at most
    ``|X|*|Y| / 2**(8*tag_size)``; a wrong match would also fail AEAD
    authentication and is reported, never returned as a label.
    """

    tag_size: int = 16
    kind: str = "opaque"

    def __post_init__(self) -> None:
        if not isinstance(self.tag_size, int) or not 8 <= self.tag_size <= 32:
            raise ConfigError(f"tag size must be 8..32 bytes, got {self.tag_size!r}")
        if not self.kind or len(self.kind.encode()) > 64:
            raise ConfigError("kind must be 1..64 bytes")

    @property
    def domain(self) -> bytes:
        """OPRF domain: protocol, version and ID kind."""
        return _DOMAIN + b"/" + self.kind.encode()


@register
@dataclass(frozen=True)
class LabeledHello(Message):
    """Receiver's opening: version, parameters, context, set size."""

    TYPE = 0x0203
    params: LabeledParams
    context: bytes
    count: int
    version: int = LABELED_VERSION

    def encode_body(self, w: Writer) -> None:
        """Version, tag size, kind, context, count."""
        w.u8(self.version)
        w.u8(self.params.tag_size)
        w.text(self.params.kind)
        w.blob(self.context)
        w.u32(self.count)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`."""
        version = r.u8()
        tag_size = r.u8()
        kind = r.text(max_len=64)
        context = r.blob(max_len=256)
        count = r.u32()
        try:
            params = LabeledParams(tag_size, kind)
        except ConfigError as exc:
            raise RemoteProtocolError(f"labeled-psi: invalid parameters: {exc}") from exc
        return cls(params, context, count, version)


@register
@dataclass(frozen=True)
class LabeledTable(Message):
    """Sender's encrypted table: label column names, record width, tags, ciphertexts."""

    TYPE = 0x0204
    columns: tuple[str, ...]
    width: int
    tag_size: int
    tags: bytes
    ciphertexts: bytes

    def encode_body(self, w: Writer) -> None:
        """Columns, width, tag size, packed tags, packed ciphertexts."""
        w.u16(len(self.columns))
        for c in self.columns:
            w.text(c)
        w.u32(self.width)
        w.u8(self.tag_size)
        write_packed(w, self.tags, self.tag_size)
        write_packed(w, self.ciphertexts, self.width + _TAG_OVERHEAD)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Inverse of :meth:`encode_body`, bounds-checked."""
        n = r.u16()
        if n > _MAX_COLUMNS:
            raise RemoteProtocolError(f"labeled-psi: {n} label columns exceed {_MAX_COLUMNS}")
        columns = tuple(r.text(max_len=1024) for _ in range(n))
        width = r.u32()
        if not 3 <= width <= _MAX_WIDTH:
            raise RemoteProtocolError(f"labeled-psi: record width {width} out of range")
        tag_size = r.u8()
        if not 8 <= tag_size <= 32:
            raise RemoteProtocolError(f"labeled-psi: tag size {tag_size} out of range")
        tags = read_packed(r, tag_size)
        cts = read_packed(r, width + _TAG_OVERHEAD)
        return cls(columns, width, tag_size, tags, cts)


# ---------------------------------------------------------------------------
# Results and roles
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledResult:
    """Receiver: sorted matched ``indices`` and their decoded ``labels`` (aligned).

    Sender: ``indices``/``labels`` are ``None``; both learn ``peer_size``.
    ``columns`` names the label fields.
    """

    indices: IndexArray | None
    labels: list[tuple[str | None, ...]] | None
    columns: tuple[str, ...]
    peer_size: int

    @property
    def cardinality(self) -> int | None:
        """Number of matches, if known."""
        return None if self.indices is None else len(self.indices)


def _aad(context: bytes) -> bytes:
    return _DOMAIN + b"/label/" + context


class LabeledPsiReceiver(Machine[LabeledResult]):
    """Learns which of its items the sender has, and those items' label records."""

    protocol = "labeled-psi"

    def __init__(
        self,
        items: Sequence[bytes],
        *,
        params: LabeledParams | None = None,
        context: bytes = b"",
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        if len(items) > MAX_ITEMS:
            raise LocalProtocolError(f"at most {MAX_ITEMS} items per bucket")
        self._items = list(items)
        self._params = params or LabeledParams()
        if len(context) > 256:
            raise ConfigError("context must be at most 256 bytes")
        self._context = context
        self._rng = rng
        self._r = b""
        self._order: IndexArray = np.zeros(0, dtype=np.int64)
        self._outputs: list[bytes] | None = None
        self._out: LabeledResult | None = None

    @property
    def done(self) -> bool:
        """True once the labels are decrypted."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        self._order = shuffle_order(len(self._items), self._rng)
        self._items = [self._items[i] for i in self._order]
        self._r, blinded = blind(self._items, domain=self._params.domain, rng=self._rng)
        return [
            LabeledHello(self._params, self._context, len(self._items)),
            OprfRequest(pack(blinded, POINT_SIZE)),
        ]

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._outputs is None:
            if not isinstance(msg, OprfResponse):
                raise self._unexpected(msg, "OprfResponse")
            elements = unblind(self._r, check_response(msg, len(self._items)))
            self._outputs = finalize_many(self._items, elements, domain=self._params.domain)
            return []
        if not isinstance(msg, LabeledTable):
            raise self._unexpected(msg, "LabeledTable")
        self._out = self._match(msg, self._outputs)
        return []

    def _match(self, msg: LabeledTable, outputs: list[bytes]) -> LabeledResult:
        t = self._params.tag_size
        if msg.tag_size != t:
            raise RemoteProtocolError(f"labeled-psi: sender used {msg.tag_size}-byte tags, not {t}")
        tags = split(msg.tags, t)
        size = msg.width + _TAG_OVERHEAD
        if len(msg.ciphertexts) != len(tags) * size:
            raise RemoteProtocolError(
                f"labeled-psi: {len(tags)} tags but {len(msg.ciphertexts) // size} ciphertexts"
            )
        position = {tag: i for i, tag in enumerate(tags)}
        if len(position) != len(tags):
            raise RemoteProtocolError("labeled-psi: the sender's table has duplicate tags")
        aad = _aad(self._context)
        found: list[tuple[int, tuple[str | None, ...]]] = []
        for i, out in enumerate(outputs):
            j = position.get(out[:t])
            if j is None:
                continue
            ct = msg.ciphertexts[j * size : (j + 1) * size]
            try:
                record = aead_decrypt(out[32:64], _NONCE, ct, aad)
            except DecryptionError as exc:
                raise RemoteProtocolError(
                    "labeled-psi: a matched label ciphertext failed authentication"
                ) from exc
            values = decode_labels(record)
            if len(values) != len(msg.columns):
                raise RemoteProtocolError(
                    f"labeled-psi: a record has {len(values)} values for {len(msg.columns)} columns"
                )
            found.append((int(self._order[i]), values))
        found.sort(key=lambda pair: pair[0])
        indices = np.asarray([f[0] for f in found], dtype=np.int64)
        return LabeledResult(indices, [f[1] for f in found], msg.columns, len(tags))

    def _result(self) -> LabeledResult:
        assert self._out is not None
        return self._out


class LabeledPsiSender(Machine[LabeledResult]):
    """Answers the receiver's OPRF queries and publishes its encrypted label table.

    ``records[i]`` is item ``i``'s label record from :func:`encode_labels`
    (unpadded); ``width`` pads every record to one size (default: the
    largest record here -- pass a job-wide width to leak even less).
    """

    protocol = "labeled-psi"

    def __init__(
        self,
        items: Sequence[bytes],
        records: Sequence[bytes],
        *,
        columns: Sequence[str],
        params: LabeledParams | None = None,
        context: bytes = b"",
        width: int | None = None,
        rng: Rng | None = None,
    ) -> None:
        super().__init__()
        if len(items) != len(records):
            raise ConfigError(f"{len(items)} items but {len(records)} label records")
        if len(items) > MAX_ITEMS:
            raise LocalProtocolError(f"at most {MAX_ITEMS} items per bucket")
        longest = max((len(r) for r in records), default=3)
        self._width = longest if width is None else width
        if self._width < longest or self._width > _MAX_WIDTH:
            raise ConfigError(f"record width {self._width} does not fit the records ({longest})")
        self._items = list(items)
        self._records = list(records)
        self._columns = tuple(columns)
        self._params = params or LabeledParams()
        self._context = context
        self._rng = rng
        self._peer_count: int | None = None
        self._out: LabeledResult | None = None

    @property
    def done(self) -> bool:
        """True once the table was sent."""
        return self._out is not None

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        if self._peer_count is None:
            if not isinstance(msg, LabeledHello):
                raise self._unexpected(msg, "LabeledHello")
            self._check_hello(msg)
            self._peer_count = msg.count
            return []
        if not isinstance(msg, OprfRequest):
            raise self._unexpected(msg, "OprfRequest")
        points = check_request(msg)
        if len(points) != self._peer_count:
            raise RemoteProtocolError(
                f"labeled-psi: receiver announced {self._peer_count} items but sent {len(points)}"
            )
        key = scalar_random(rng=self._rng)
        evaluated = evaluate(key, points)
        table = self._table(key)
        self._out = LabeledResult(None, None, self._columns, len(points))
        return [OprfResponse(pack(evaluated, POINT_SIZE)), table]

    def _check_hello(self, msg: LabeledHello) -> None:
        if msg.version != LABELED_VERSION:
            raise RemoteProtocolError(
                f"labeled-psi: receiver speaks version {msg.version}, we speak {LABELED_VERSION}"
            )
        if msg.params != self._params:
            raise RemoteProtocolError(
                f"labeled-psi: parameter mismatch: receiver has {msg.params}, "
                f"we have {self._params}"
            )
        if msg.context != self._context:
            raise RemoteProtocolError(
                f"labeled-psi: context mismatch: receiver is in {msg.context!r}, "
                f"we are in {self._context!r}"
            )
        if msg.count > MAX_ITEMS:
            raise RemoteProtocolError(f"labeled-psi: receiver announces {msg.count} items")

    def _table(self, key: bytes) -> LabeledTable:
        p = self._params
        order = shuffle_order(len(self._items), self._rng)
        items = [self._items[i] for i in order]
        outputs = oprf_direct(key, items, domain=p.domain)
        aad = _aad(self._context)
        width = self._width
        pad = bytes(width)
        tags: list[bytes] = []
        cts: list[bytes] = []
        for out, i in zip(outputs, order, strict=True):
            record = self._records[i]
            tags.append(out[: p.tag_size])
            cts.append(aead_encrypt(out[32:64], _NONCE, record + pad[len(record) :], aad))
        self._items = []
        self._records = []
        return LabeledTable(self._columns, width, p.tag_size, b"".join(tags), b"".join(cts))

    def _result(self) -> LabeledResult:
        assert self._out is not None
        return self._out
