"""Exponential ElGamal and the intersection-sum machines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto.elgamal import (
    add_rows,
    decode_small,
    decrypt_row,
    encrypt_rows,
    keygen,
    rerandomize,
)
from atoll.crypto.group import base_mul, scalar_from_int
from atoll.errors import CryptoError, LocalProtocolError, RemoteProtocolError
from atoll.protocols.intersection_sum import (
    SumEncrypted,
    SumIdsParty,
    SumParams,
    SumReply,
    SumValuesParty,
)
from atoll.protocols.messages import decode, encode
from atoll.transport.memory import run_pair


def test_elgamal_is_additively_homomorphic() -> None:
    keys = [keygen(), keygen()]
    rows = [[1, 10], [2, 20], [0, 0], [40, 7]]
    cts = encrypt_rows(keys, rows)
    size = 96
    parts = [cts[i * size : (i + 1) * size] for i in range(len(rows))]
    total = rerandomize(add_rows(parts, 2), [k.public for k in keys])
    assert decrypt_row(keys, total, 1000) == [43, 37]
    assert decrypt_row(keys, add_rows([], 2), 10) == [0, 0]
    with pytest.raises(CryptoError, match=r"not in 0\.\.5"):
        decrypt_row(keys, parts[0], 5)


def test_decode_range_is_enforced() -> None:
    assert decode_small(base_mul(scalar_from_int(123_457)), 200_000, baby_steps=512) == 123_457
    with pytest.raises(CryptoError, match=r"not in 0\.\.100"):
        decode_small(base_mul(scalar_from_int(101)), 100, baby_steps=16)
    with pytest.raises(CryptoError):
        encrypt_rows([keygen()], [[-1]])


X = [f"u{i}".encode() for i in range(40)]
W = [f"u{i}".encode() for i in range(30, 70)]
VALUES = [[i, 3 * i + 1] for i in range(len(W))]


def _expected() -> tuple[int, tuple[int, int]]:
    xs = set(X)
    hit = [v for w, v in zip(W, VALUES, strict=True) if w in xs]
    return len(hit), (sum(v[0] for v in hit), sum(v[1] for v in hit))


def test_pair_both_learn_size_and_sums() -> None:
    p = SumParams(columns=2)
    run = run_pair(SumIdsParty(X, params=p), SumValuesParty(W, VALUES, params=p, max_sum=10_000))
    n, sums = _expected()
    for res in (run.a_result, run.b_result):
        assert (res.cardinality, res.sums) == (n, sums)
    assert run.a_result.peer_size == len(W)
    assert run.b_result.peer_size == len(X)


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.text(max_size=6), max_size=15, unique=True),
    st.lists(
        st.tuples(st.text(max_size=6), st.integers(0, 500)), max_size=15, unique_by=lambda t: t[0]
    ),
)
def test_property_equals_plain_sum(x: list[str], w: list[tuple[str, int]]) -> None:
    ids = [v.encode() for v in x]
    items = [k.encode() for k, _ in w]
    values = [[v] for _, v in w]
    run = run_pair(SumIdsParty(ids), SumValuesParty(items, values, max_sum=500 * 15))
    xs = set(x)
    assert run.a_result.cardinality == sum(1 for k, _ in w if k in xs)
    assert run.a_result.sums == (sum(v for k, v in w if k in xs),)


def test_values_out_of_the_decoding_range_fail_locally() -> None:
    with pytest.raises(LocalProtocolError, match="raise the decoding range"):
        run_pair(SumIdsParty(X), SumValuesParty(W, [[v[1]] for v in VALUES], max_sum=50))


def test_hostile_ids_party_and_values_party() -> None:
    def overclaim(who: str, data: bytes) -> bytes:
        msg = decode(data)
        return encode(SumEncrypted(10_000, msg.row)) if isinstance(msg, SumEncrypted) else data

    with pytest.raises(RemoteProtocolError, match="exceeds"):
        run_pair(SumIdsParty(X), SumValuesParty(W, [[1]] * len(W), max_sum=100), tap=overclaim)

    def short(who: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, SumReply):
            return encode(SumReply(msg.publics, msg.doubly[:-32], msg.points, msg.ciphertexts))
        return data

    with pytest.raises(RemoteProtocolError, match="39 doubly blinded values for our 40"):
        run_pair(SumIdsParty(X), SumValuesParty(W, [[1]] * len(W), max_sum=100), tap=short)

    with pytest.raises(RemoteProtocolError, match="parameter mismatch"):
        run_pair(
            SumIdsParty(X, params=SumParams(columns=2)),
            SumValuesParty(W, [[1]] * len(W), max_sum=100),
        )
