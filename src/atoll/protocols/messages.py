"""Protocol messages and their versioned binary codec.

Why: messages cross trust boundaries, so their encoding must be unambiguous,
compact (millions of 32-byte points) and strict -- every length checked
before use, nothing trailing, unknown versions and types refused with a
specific error. One codec for all protocols keeps that discipline in one
place.

Wire form of one message::

    version (u8, = WIRE_VERSION) || type (u16, big-endian) || body

A body is written and read with :class:`Writer` / :class:`Reader`: fixed-width
big-endian integers, length-prefixed byte strings and UTF-8 text, and *packed*
arrays of fixed-size elements (``u32 count || count * size bytes``) for points
and ciphertexts. A list of messages travels as a *frame list*
(:func:`encode_frames`): ``version || u32 n || n * (u32 len || message)``.

Define a message by subclassing :class:`Message` as a frozen dataclass with a
unique ``TYPE`` (protocols take disjoint ranges: PSI 0x01xx, labeled PSI
0x02xx, intersection-sum 0x03xx, covert query 0x04xx, island 0x05xx), the
two body hooks, and the :func:`register` decorator.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import ClassVar, Self, TypeVar

from atoll.errors import RemoteProtocolError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "WIRE_VERSION",
    "Message",
    "Reader",
    "Writer",
    "decode",
    "decode_frames",
    "encode",
    "encode_frames",
    "register",
]

#: First byte of every encoded message and frame list; bump on any change.
WIRE_VERSION = 1
#: Default ceiling on one encoded message (a bucket's worth of points fits easily).
MAX_MESSAGE_BYTES = 512 * 1024 * 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


class Message:
    """Base of all protocol messages (subclass as a frozen dataclass and register)."""

    #: Unique message type id (u16).
    TYPE: ClassVar[int] = -1

    def encode_body(self, w: Writer) -> None:
        """Write this message's fields."""
        raise NotImplementedError

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read this message's fields (the inverse of :meth:`encode_body`)."""
        raise NotImplementedError


_REGISTRY: dict[int, type[Message]] = {}


_M = TypeVar("_M", bound=type["Message"])


def register(cls: _M) -> _M:
    """Class decorator: make a message type decodable; its TYPE must be unique."""
    if not 0 <= cls.TYPE <= 0xFFFF:
        raise TypeError(f"{cls.__name__}.TYPE must be a u16, got {cls.TYPE}")
    other = _REGISTRY.get(cls.TYPE)
    if other is not None and other is not cls:
        raise TypeError(
            f"message type 0x{cls.TYPE:04x} used by {other.__name__} and {cls.__name__}"
        )
    _REGISTRY[cls.TYPE] = cls
    return cls


class Writer:
    """Append-only body writer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> None:
        """One unsigned byte."""
        self._parts.append(bytes([v]))

    def u16(self, v: int) -> None:
        """Unsigned 16-bit big-endian."""
        self._parts.append(_U16.pack(v))

    def u32(self, v: int) -> None:
        """Unsigned 32-bit big-endian."""
        self._parts.append(_U32.pack(v))

    def u64(self, v: int) -> None:
        """Unsigned 64-bit big-endian."""
        self._parts.append(_U64.pack(v))

    def i64(self, v: int) -> None:
        """Signed 64-bit big-endian."""
        self._parts.append(_I64.pack(v))

    def f64(self, v: float) -> None:
        """IEEE-754 double, big-endian."""
        self._parts.append(_F64.pack(v))

    def raw(self, data: bytes) -> None:
        """Bytes of a length both sides know (no prefix)."""
        self._parts.append(data)

    def blob(self, data: bytes) -> None:
        """A u32-length-prefixed byte string."""
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(data)

    def text(self, s: str) -> None:
        """A u32-length-prefixed UTF-8 string."""
        self.blob(s.encode("utf-8"))

    def bigint(self, v: int) -> None:
        """A non-negative integer of any size (u32 length, big-endian magnitude)."""
        if v < 0:
            raise ValueError("bigint must be non-negative")
        self.blob(v.to_bytes((v.bit_length() + 7) // 8, "big"))

    def packed(self, items: Sequence[bytes], size: int) -> None:
        """``u32 count`` then the items back to back; each must be ``size`` bytes."""
        joined = b"".join(items)
        if len(joined) != size * len(items):
            raise ValueError(f"packed items must all be {size} bytes")
        self.packed_bytes(joined, size)

    def packed_bytes(self, data: bytes, size: int) -> None:
        """The same wire form as :meth:`packed`, from items already joined into ``data``."""
        if size <= 0 or len(data) % size:
            raise ValueError(f"packed data is not a whole number of {size}-byte items")
        self._parts.append(_U32.pack(len(data) // size))
        self._parts.append(data)

    def blobs(self, items: Sequence[bytes]) -> None:
        """``u32 count`` then each item as a :meth:`blob`."""
        self._parts.append(_U32.pack(len(items)))
        for item in items:
            self.blob(item)

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return b"".join(self._parts)


class Reader:
    """Strict body reader: every read is bounds-checked; errors are RemoteProtocolError."""

    def __init__(self, data: bytes | memoryview, *, what: str = "message") -> None:
        self._buf = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._buf):
            raise RemoteProtocolError(
                f"{self._what} truncated: needed {n} bytes at offset {self._pos}, "
                f"{len(self._buf) - self._pos} left"
            )
        out = self._buf[self._pos : end]
        self._pos = end
        return out

    def u8(self) -> int:
        """One unsigned byte."""
        return self._take(1)[0]

    def u16(self) -> int:
        """Unsigned 16-bit big-endian."""
        return int(_U16.unpack(self._take(2))[0])

    def u32(self) -> int:
        """Unsigned 32-bit big-endian."""
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        """Unsigned 64-bit big-endian."""
        return int(_U64.unpack(self._take(8))[0])

    def i64(self) -> int:
        """Signed 64-bit big-endian."""
        return int(_I64.unpack(self._take(8))[0])

    def f64(self) -> float:
        """IEEE-754 double, big-endian."""
        return float(_F64.unpack(self._take(8))[0])

    def raw(self, n: int) -> bytes:
        """Exactly ``n`` bytes."""
        return bytes(self._take(n))

    def blob(self, *, max_len: int = MAX_MESSAGE_BYTES) -> bytes:
        """A u32-length-prefixed byte string of at most ``max_len`` bytes."""
        n = self.u32()
        if n > max_len:
            raise RemoteProtocolError(
                f"{self._what}: field of {n} bytes exceeds the limit {max_len}"
            )
        return bytes(self._take(n))

    def text(self, *, max_len: int = 4096) -> str:
        """A u32-length-prefixed UTF-8 string."""
        data = self.blob(max_len=max_len)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"{self._what}: text field is not UTF-8") from exc

    def bigint(self, *, max_bits: int = 16384) -> int:
        """A non-negative integer written by :meth:`Writer.bigint`."""
        data = self.blob(max_len=(max_bits + 7) // 8)
        return int.from_bytes(data, "big")

    def packed(self, size: int, *, max_count: int = 1 << 26) -> list[bytes]:
        """A packed array of ``size``-byte items (at most ``max_count``)."""
        data = self.packed_bytes(size, max_count=max_count)
        return [data[i : i + size] for i in range(0, len(data), size)]

    def packed_bytes(self, size: int, *, max_count: int = 1 << 26) -> bytes:
        """A packed array kept joined: ``count * size`` bytes (at most ``max_count`` items)."""
        n = self.u32()
        if n > max_count:
            raise RemoteProtocolError(f"{self._what}: {n} items exceed the limit {max_count}")
        return bytes(self._take(n * size))

    def blobs(self, *, max_count: int = 1 << 26, max_len: int = MAX_MESSAGE_BYTES) -> list[bytes]:
        """A list written by :meth:`Writer.blobs`."""
        n = self.u32()
        if n > max_count:
            raise RemoteProtocolError(f"{self._what}: {n} items exceed the limit {max_count}")
        return [self.blob(max_len=max_len) for _ in range(n)]

    def end(self) -> None:
        """Assert that the whole input was consumed."""
        if self._pos != len(self._buf):
            raise RemoteProtocolError(
                f"{self._what}: {len(self._buf) - self._pos} unexpected trailing bytes"
            )


def encode(msg: Message) -> bytes:
    """Encode one registered message: ``version || type || body``."""
    if _REGISTRY.get(msg.TYPE) is not type(msg):
        raise TypeError(f"{type(msg).__name__} is not a registered message type")
    w = Writer()
    w.u8(WIRE_VERSION)
    w.u16(msg.TYPE)
    msg.encode_body(w)
    return w.getvalue()


def decode(data: bytes | memoryview, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
    """Decode one message; RemoteProtocolError on any version, type, size or body problem."""
    if len(data) > max_size:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds the limit {max_size}")
    r = Reader(data)
    version = r.u8()
    if version != WIRE_VERSION:
        raise RemoteProtocolError(
            f"unsupported wire version {version} (this Atoll speaks {WIRE_VERSION})"
        )
    mtype = r.u16()
    cls = _REGISTRY.get(mtype)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type 0x{mtype:04x}")
    r._what = cls.__name__
    try:
        msg = cls.decode_body(r)
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError) as exc:
        raise RemoteProtocolError(f"{cls.__name__}: malformed body: {exc}") from exc
    r.end()
    return msg


def encode_frames(messages: Sequence[Message]) -> bytes:
    """Encode a list of messages as one frame list."""
    w = Writer()
    w.u8(WIRE_VERSION)
    w.blobs([encode(m) for m in messages])
    return w.getvalue()


def decode_frames(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> list[Message]:
    """Decode a frame list written by :func:`encode_frames`."""
    if len(data) > max_size:
        raise RemoteProtocolError(f"frame list of {len(data)} bytes exceeds the limit {max_size}")
    r = Reader(data, what="frame list")
    version = r.u8()
    if version != WIRE_VERSION:
        raise RemoteProtocolError(
            f"unsupported wire version {version} (this Atoll speaks {WIRE_VERSION})"
        )
    frames = r.blobs(max_len=max_size)
    r.end()
    return [decode(f, max_size=max_size) for f in frames]
