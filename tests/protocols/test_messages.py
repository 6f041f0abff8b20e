"""The versioned message codec, the Machine base and the in-memory pair driver.

Why: every protocol trusts this codec to refuse hostile bytes (truncated,
trailing, wrong version, unknown type, oversized) with RemoteProtocolError
before any field reaches protocol logic, and trusts Machine's sticky error.
These tests pin that behaviour independently of any real protocol.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import LocalProtocolError, RemoteProtocolError
from atoll.protocols._machine import Machine
from atoll.protocols.messages import (
    WIRE_VERSION,
    Message,
    Reader,
    Writer,
    decode,
    decode_frames,
    encode,
    encode_frames,
    register,
)
from atoll.transport.memory import run_pair
from tests.transport.toy import Ack, Hello, Match, Offer, ToyClient, ToyServer


@register
@dataclass(frozen=True)
class Everything(Message):
    """One field of every kind the codec offers."""

    TYPE = 0xFE10
    a: int  # u8
    b: int  # u16
    c: int  # u32
    d: int  # u64
    e: int  # i64
    f: float  # f64
    fixed: bytes  # raw(4)
    blob: bytes
    text: str
    big: int
    points: tuple[bytes, ...]  # packed(3)
    blobs: tuple[bytes, ...]

    def encode_body(self, w: Writer) -> None:
        w.u8(self.a)
        w.u16(self.b)
        w.u32(self.c)
        w.u64(self.d)
        w.i64(self.e)
        w.f64(self.f)
        w.raw(self.fixed)
        w.blob(self.blob)
        w.text(self.text)
        w.bigint(self.big)
        w.packed(list(self.points), 3)
        w.blobs(list(self.blobs))

    @classmethod
    def decode_body(cls, r: Reader) -> Everything:
        return cls(
            r.u8(),
            r.u16(),
            r.u32(),
            r.u64(),
            r.i64(),
            r.f64(),
            r.raw(4),
            r.blob(max_len=64),
            r.text(max_len=64),
            r.bigint(max_bits=256),
            tuple(r.packed(3, max_count=8)),
            tuple(r.blobs(max_count=8, max_len=16)),
        )


@register
@dataclass(frozen=True)
class Empty(Message):
    """A message with no body."""

    TYPE = 0xFE11

    def encode_body(self, w: Writer) -> None:
        pass

    @classmethod
    def decode_body(cls, r: Reader) -> Empty:
        return cls()


@register
@dataclass(frozen=True)
class Picky(Message):
    """decode_body raises ValueError for odd values (the codec must map it)."""

    TYPE = 0xFE12
    v: int

    def encode_body(self, w: Writer) -> None:
        w.u32(self.v)

    @classmethod
    def decode_body(cls, r: Reader) -> Picky:
        v = r.u32()
        if v % 2:
            raise ValueError("odd value")
        return cls(v)


SAMPLE = Everything(
    a=255,
    b=65535,
    c=2**32 - 1,
    d=2**64 - 1,
    e=-(2**63),
    f=-1.5,
    fixed=b"\x00\x01\x02\x03",
    blob=b"hello",
    text="héllo 世界",
    big=2**200 + 12345,
    points=(b"abc", b"def"),
    blobs=(b"", b"x", b"yz"),
)


# -- single messages ----------------------------------------------------------


def test_round_trip_every_field_kind() -> None:
    data = encode(SAMPLE)
    assert data[0] == WIRE_VERSION
    assert struct.unpack(">H", data[1:3])[0] == Everything.TYPE
    assert decode(data) == SAMPLE


def test_known_encoding_of_a_small_message() -> None:
    # Written out by hand from the format in atoll.protocols.messages' docstring:
    # version 01, type fe04, u32 7.
    assert encode(Ack(7)) == bytes.fromhex("01fe0400000007")
    assert encode(Empty()) == bytes.fromhex("01fe11")
    assert decode(bytes.fromhex("01fe11")) == Empty()


def test_every_truncation_is_refused() -> None:
    data = encode(SAMPLE)
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode(data[:cut])


def test_trailing_bytes_are_refused() -> None:
    data = encode(SAMPLE)
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode(data + b"\x00")
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode(encode(Empty()) + b"junk")


def test_wrong_version_is_refused() -> None:
    data = bytearray(encode(Ack(1)))
    for version in (0, 2, 255):
        data[0] = version
        with pytest.raises(RemoteProtocolError, match="unsupported wire version"):
            decode(bytes(data))


def test_unknown_type_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown message type 0xfeff"):
        decode(bytes([WIRE_VERSION]) + b"\xfe\xff")


def test_oversize_is_refused_before_parsing() -> None:
    data = encode(SAMPLE)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decode(data, max_size=len(data) - 1)
    assert decode(data, max_size=len(data)) == SAMPLE


def test_field_limits_are_enforced() -> None:
    big_blob = Everything(**{**SAMPLE.__dict__, "blob": b"x" * 65})
    with pytest.raises(RemoteProtocolError, match="exceeds the limit 64"):
        decode(encode(big_blob))
    many_points = Everything(**{**SAMPLE.__dict__, "points": (b"abc",) * 9})
    with pytest.raises(RemoteProtocolError, match="9 items exceed the limit 8"):
        decode(encode(many_points))
    many_blobs = Everything(**{**SAMPLE.__dict__, "blobs": (b"a",) * 9})
    with pytest.raises(RemoteProtocolError, match="9 items exceed the limit 8"):
        decode(encode(many_blobs))
    huge_int = Everything(**{**SAMPLE.__dict__, "big": 2**300})
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decode(encode(huge_int))


def test_a_length_prefix_larger_than_the_input_is_truncation() -> None:
    # Offer with one blob whose u32 length claims 1000 bytes but carries 3.
    body = struct.pack(">I", 1) + struct.pack(">I", 1000) + b"abc"
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode(bytes([WIRE_VERSION]) + struct.pack(">H", Offer.TYPE) + body)
    # A packed count whose bytes are missing.
    r = Reader(struct.pack(">I", 5) + b"x" * 10)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        r.packed(3)


def test_text_must_be_utf8() -> None:
    w = Writer()
    w.blob(b"\xff\xfe")
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        Reader(w.getvalue()).text()


def test_body_value_errors_become_remote_protocol_errors() -> None:
    assert decode(encode(Picky(2))) == Picky(2)
    with pytest.raises(RemoteProtocolError, match="Picky: malformed body: odd value"):
        decode(encode(Picky(3)))


def test_writer_refuses_local_misuse() -> None:
    w = Writer()
    with pytest.raises(ValueError, match="must all be 2 bytes"):
        w.packed([b"ab", b"abc"], 2)
    with pytest.raises(ValueError, match="non-negative"):
        w.bigint(-1)


def test_registry_refuses_unregistered_and_duplicate_types() -> None:
    @dataclass(frozen=True)
    class Stray(Message):
        TYPE = 0xFE20

        def encode_body(self, w: Writer) -> None:
            pass

    with pytest.raises(TypeError, match="not a registered"):
        encode(Stray())

    @dataclass(frozen=True)
    class Clash(Message):
        TYPE = Ack.TYPE

    with pytest.raises(TypeError, match="used by Ack and Clash"):
        register(Clash)

    @dataclass(frozen=True)
    class TooBig(Message):
        TYPE = 0x10000

    with pytest.raises(TypeError, match="must be a u16"):
        register(TooBig)
    assert register(Ack) is Ack  # re-registering the same class is harmless


# -- frame lists ----------------------------------------------------------------


def test_frames_round_trip_and_empty_list() -> None:
    msgs: list[Message] = [Hello(3), Match((b"a", b"b")), Empty(), SAMPLE]
    assert decode_frames(encode_frames(msgs)) == msgs
    assert decode_frames(encode_frames([])) == []
    assert encode_frames([]) == bytes([WIRE_VERSION]) + b"\x00\x00\x00\x00"


def test_frames_every_truncation_and_trailing_bytes() -> None:
    data = encode_frames([Hello(3), Ack(2)])
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_frames(data[:cut])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode_frames(data + b"\x00")


def test_frames_wrong_version_and_bad_inner_message() -> None:
    data = bytearray(encode_frames([Ack(2)]))
    data[0] = WIRE_VERSION + 1
    with pytest.raises(RemoteProtocolError, match="unsupported wire version"):
        decode_frames(bytes(data))
    # Inner message with a bad version byte.
    inner = bytearray(encode(Ack(2)))
    inner[0] = 9
    w = Writer()
    w.u8(WIRE_VERSION)
    w.blobs([bytes(inner)])
    with pytest.raises(RemoteProtocolError, match="unsupported wire version 9"):
        decode_frames(w.getvalue())


def test_frames_oversize() -> None:
    data = encode_frames([Match((b"x" * 100,))])
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decode_frames(data, max_size=50)


# -- property ------------------------------------------------------------------

_u = st.integers
everything = st.builds(
    Everything,
    a=_u(0, 255),
    b=_u(0, 2**16 - 1),
    c=_u(0, 2**32 - 1),
    d=_u(0, 2**64 - 1),
    e=_u(-(2**63), 2**63 - 1),
    f=st.floats(allow_nan=False),
    fixed=st.binary(min_size=4, max_size=4),
    blob=st.binary(max_size=64),
    text=st.text(max_size=16),
    big=_u(0, 2**256 - 1),
    points=st.lists(st.binary(min_size=3, max_size=3), max_size=8).map(tuple),
    blobs=st.lists(st.binary(max_size=16), max_size=8).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(everything)
def test_property_round_trip(msg: Everything) -> None:
    assert decode(encode(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(everything, st.builds(Ack, _u(0, 2**32 - 1))), max_size=5))
def test_property_frames_round_trip(msgs: list[Message]) -> None:
    assert decode_frames(encode_frames(msgs)) == msgs


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_property_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    for fn in (decode, decode_frames):
        with contextlib.suppress(RemoteProtocolError):
            fn(data)


# -- Machine and run_pair -------------------------------------------------------


def test_run_pair_toy_protocol_and_byte_counts() -> None:
    client, server = ToyClient([b"a", b"b", b"c"]), ToyServer([b"b", b"c", b"d"])
    run = run_pair(client, server, keep_transcript=True)
    assert run.a_result == [b"b", b"c"]
    assert run.b_result == 2
    assert client.peer_count == 3
    sent_a = [m for who, m in run.transcript if who == "a"]
    sent_b = [m for who, m in run.transcript if who == "b"]
    assert run.bytes_a_to_b == sum(len(encode(m)) for m in sent_a)
    assert run.bytes_b_to_a == sum(len(encode(m)) for m in sent_b)
    assert (run.messages_a_to_b, run.messages_b_to_a) == (2, 2)


def test_run_pair_tap_tampering_surfaces_as_remote_error() -> None:
    def tap(sender: str, data: bytes) -> bytes:
        return data[:-1] if sender == "b" and data[1:3] == b"\xfe\x03" else data

    with pytest.raises(RemoteProtocolError):
        run_pair(ToyClient([b"a"]), ToyServer([b"a"]), tap=tap)


class Silent(Machine[int]):
    """Never sends anything and never finishes."""

    protocol = "silent"

    @property
    def done(self) -> bool:
        return False

    def _on_start(self) -> list[Message]:
        return []

    def _on_receive(self, msg: Message) -> list[Message]:
        return []

    def _result(self) -> int:
        return 0


class Chatty(Machine[int]):
    """Answers every message with another, forever."""

    protocol = "chatty"

    @property
    def done(self) -> bool:
        return False

    def _on_start(self) -> list[Message]:
        return [Ack(0)]

    def _on_receive(self, msg: Message) -> list[Message]:
        return [Ack(0)]

    def _result(self) -> int:
        return 0


def test_run_pair_detects_stall_and_endless_chatter() -> None:
    with pytest.raises(LocalProtocolError, match="stalled"):
        run_pair(Silent(), Silent())
    with pytest.raises(LocalProtocolError, match="no end after 50"):
        run_pair(Chatty(), Chatty(), max_rounds=50)


def test_machine_order_rules() -> None:
    m = ToyClient([b"a"])
    with pytest.raises(LocalProtocolError, match="receive\\(\\) before start\\(\\)"):
        m.receive(Hello(1))
    m2 = ToyClient([b"a"])
    m2.start()
    with pytest.raises(LocalProtocolError, match="result\\(\\) before"):
        m2.result()
    with pytest.raises(LocalProtocolError, match="start\\(\\) called twice"):
        m2.start()
    assert m2.failed  # start twice is a local error, and errors are sticky


def test_machine_error_is_sticky() -> None:
    m = ToyClient([b"a"])
    m.start()
    with pytest.raises(RemoteProtocolError, match="got Ack, expected Hello or Match"):
        m.receive(Ack(1))
    assert m.failed
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        m.receive(Hello(1))
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        m.result()


def test_message_after_done_is_a_remote_error() -> None:
    client, server = ToyClient([b"a"]), ToyServer([b"a"])
    run_pair(client, server)
    assert client.done
    with pytest.raises(RemoteProtocolError, match="after the protocol ended"):
        client.receive(Hello(1))
    assert client.failed
