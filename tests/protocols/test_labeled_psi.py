"""OPRF and labeled PSI: blind evaluation, matched labels only, hostile peers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto.group import scalar_random
from atoll.errors import ConfigError, RemoteProtocolError
from atoll.protocols.labeled_psi import (
    LabeledHello,
    LabeledParams,
    LabeledPsiReceiver,
    LabeledPsiSender,
    LabeledTable,
    decode_labels,
    encode_labels,
)
from atoll.protocols.messages import decode, encode
from atoll.protocols.oprf import OprfClient, OprfResponse, OprfServer, oprf_direct
from atoll.transport.memory import run_pair

X = [f"u{i}".encode() for i in range(30)]
Y = [f"u{i}".encode() for i in range(20, 60)]
COLUMNS = ("gender", "age_band", "interest")


def _records(items: list[bytes]) -> list[bytes]:
    return [
        encode_labels([f"g{i % 2}", None if i % 3 else f"a{i}", "运动|旅游"])
        for i in range(len(items))
    ]


def test_oprf_blind_evaluation_equals_direct_evaluation() -> None:
    key = scalar_random()
    run = run_pair(OprfClient(X, domain=b"test"), OprfServer(key))
    assert run.a_result == oprf_direct(key, X, domain=b"test")
    assert run.b_result == len(X)
    other = oprf_direct(scalar_random(), X, domain=b"test")
    assert run.a_result[0] != other[0]
    assert oprf_direct(key, X[:1], domain=b"other") != run.a_result[:1]


def test_oprf_refuses_a_short_response() -> None:
    def tap(who: str, data: bytes) -> bytes:
        msg = decode(data)
        return encode(OprfResponse(msg.points[:-32])) if isinstance(msg, OprfResponse) else data

    with pytest.raises(RemoteProtocolError, match="evaluated 29 points for our 30"):
        run_pair(OprfClient(X, domain=b"t"), OprfServer(scalar_random()), tap=tap)


def test_label_records_round_trip_and_are_strict() -> None:
    rec = encode_labels(["a", None, "中文", ""], width=40)
    assert len(rec) == 40
    assert decode_labels(rec) == ("a", None, "中文", "")
    with pytest.raises(RemoteProtocolError, match="padding"):
        decode_labels(rec[:-1] + b"\x01")
    with pytest.raises(RemoteProtocolError, match="version"):
        decode_labels(b"\x07" + rec[1:])
    with pytest.raises(ConfigError, match="exceeds the width"):
        encode_labels(["x" * 50], width=20)


def test_receiver_gets_exactly_the_matched_labels() -> None:
    records = _records(Y)
    run = run_pair(LabeledPsiReceiver(X), LabeledPsiSender(Y, records, columns=COLUMNS))
    res = run.a_result
    assert res.indices.tolist() == list(range(20, 30))
    assert res.labels == [decode_labels(records[i - 20]) for i in range(20, 30)]
    assert res.columns == COLUMNS
    assert res.peer_size == len(Y)
    assert run.b_result.indices is None
    assert run.b_result.peer_size == len(X)


def test_ciphertexts_have_one_width() -> None:
    records = [encode_labels(["x" * (i % 7)]) for i in range(len(Y))]
    seen: list[LabeledTable] = []

    def tap(who: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, LabeledTable):
            seen.append(msg)
        return data

    run_pair(LabeledPsiReceiver(X), LabeledPsiSender(Y, records, columns=["c"], width=64), tap=tap)
    assert seen[0].width == 64
    assert len(seen[0].ciphertexts) == len(Y) * (64 + 16)


_ids = st.lists(st.text(max_size=8), max_size=20, unique=True)


@settings(max_examples=15, deadline=None)
@given(_ids, _ids)
def test_property_labels_of_matched_ids_only(x: list[str], y: list[str]) -> None:
    xs = [v.encode() for v in x]
    ys = [v.encode() for v in y]
    records = [encode_labels([f"label-of-{v}"]) for v in y]
    res = run_pair(LabeledPsiReceiver(xs), LabeledPsiSender(ys, records, columns=["tag"])).a_result
    expected = [(i, (f"label-of-{v}",)) for i, v in enumerate(x) if v in set(y)]
    assert list(zip(res.indices.tolist(), res.labels, strict=True)) == expected


def test_mismatches_and_tampering_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="parameter mismatch"):
        run_pair(
            LabeledPsiReceiver(X, params=LabeledParams(tag_size=12)),
            LabeledPsiSender(Y, _records(Y), columns=COLUMNS),
        )
    with pytest.raises(RemoteProtocolError, match="context mismatch"):
        run_pair(
            LabeledPsiReceiver(X, context=b"a"),
            LabeledPsiSender(Y, _records(Y), columns=COLUMNS, context=b"b"),
        )

    def flip(who: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, LabeledTable):
            cts = bytes(b ^ 1 for b in msg.ciphertexts)
            return encode(LabeledTable(msg.columns, msg.width, msg.tag_size, msg.tags, cts))
        return data

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        run_pair(LabeledPsiReceiver(X), LabeledPsiSender(Y, _records(Y), columns=COLUMNS), tap=flip)

    def dup(who: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, LabeledTable):
            t = msg.tag_size
            tags = msg.tags[:t] + msg.tags[:t] + msg.tags[2 * t :]
            return encode(LabeledTable(msg.columns, msg.width, t, tags, msg.ciphertexts))
        return data

    with pytest.raises(RemoteProtocolError, match="duplicate tags"):
        run_pair(LabeledPsiReceiver(X), LabeledPsiSender(Y, _records(Y), columns=COLUMNS), tap=dup)

    def version(who: str, data: bytes) -> bytes:
        if isinstance(decode(data), LabeledHello):
            return data[:3] + b"\x05" + data[4:]
        return data

    with pytest.raises(RemoteProtocolError, match="version 5"):
        run_pair(
            LabeledPsiReceiver(X), LabeledPsiSender(Y, _records(Y), columns=COLUMNS), tap=version
        )
