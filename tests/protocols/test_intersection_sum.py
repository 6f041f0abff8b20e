"""Exponential ElGamal and the intersection-sum machines."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto.elgamal import (
    ElGamalKey,
    add_rows,
    decode_small,
    decrypt_row,
    encrypt_rows,
    keygen,
    rerandomize,
)
from atoll.crypto.group import base_mul, scalar_from_int
from atoll.errors import ConfigError, CryptoError, LocalProtocolError, RemoteProtocolError
from atoll.protocols.intersection_sum import (
    SumEncrypted,
    SumHello,
    SumIdsParty,
    SumParams,
    SumPartial,
    SumReply,
    SumResult,
    SumTotal,
    SumTotalIdsParty,
    SumTotalValuesParty,
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


# -- deferred runs and the total (what a bucketed job does) -------------------

DEFERRED = SumParams(columns=2, deferred=True)


def _deferred_runs(
    runs: list[tuple[list[bytes], list[bytes], list[list[int]]]],
    keys: list[ElGamalKey],
    params: SumParams = DEFERRED,
) -> tuple[list[SumPartial], list[SumPartial], list[str]]:
    """Run each ``(ids, items, values)`` deferred; the partials and every message type sent."""
    ids_parts, values_parts, sent = [], [], []
    for k, (ids, items, values) in enumerate(runs):
        ctx = f"run/{k}".encode()

        def tap(who: str, data: bytes) -> bytes:
            sent.append(type(decode(data)).__name__)
            return data

        run = run_pair(
            SumIdsParty(ids, params=params, context=ctx),
            SumValuesParty(items, values, params=params, context=ctx, keys=keys),
            tap=tap,
        )
        ids_parts.append(run.a_result)
        values_parts.append(run.b_result)
    return ids_parts, values_parts, sent


def _total(
    ids_parts: list[SumPartial], values_parts: list[SumPartial], keys: list[ElGamalKey]
) -> tuple[SumResult, SumResult]:
    own = sum(p.peer_size for p in ids_parts)
    run = run_pair(
        SumTotalIdsParty(ids_parts, params=DEFERRED, context=b"total"),
        SumTotalValuesParty(
            keys, values_parts, own_items=own, params=DEFERRED, context=b"total", max_sum=10_000
        ),
    )
    return run.a_result, run.b_result


def test_deferred_runs_reveal_only_the_total() -> None:
    keys = [keygen(), keygen()]
    # The same sets as the one-run test, split into three runs by a toy "bucket".
    runs = []
    for b in range(3):
        ids = [x for x in X if x[-1] % 3 == b]
        pairs = [(w, v) for w, v in zip(W, VALUES, strict=True) if w[-1] % 3 == b]
        runs.append((ids, [w for w, _ in pairs], [v for _, v in pairs]))
    ids_parts, values_parts, sent = _deferred_runs(runs, keys)
    # No run's sum travels, encrypted or not: only hello, blinded ids and the reply.
    assert set(sent) == {"SumHello", "SumBlinded", "SumReply"}
    # The values party is told nothing about any run's intersection.
    assert all(p.cardinality is None and p.row == b"" for p in values_parts)
    a, b = _total(ids_parts, values_parts, keys)
    n, sums = _expected()
    assert (a.cardinality, a.sums) == (b.cardinality, b.sums) == (n, sums)
    assert a.peer_size == len(W)
    assert b.peer_size == len(X)
    # The ids party knows its own matches per run (it did the matching), no sums.
    assert sum(int(p.cardinality or 0) for p in ids_parts) == n


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.text(max_size=5), max_size=12, unique=True),
    st.lists(
        st.tuples(st.text(max_size=5), st.integers(0, 300)), max_size=12, unique_by=lambda t: t[0]
    ),
    st.integers(1, 4),
)
def test_property_deferred_total_equals_plain_sum(
    x: list[str], w: list[tuple[str, int]], buckets: int
) -> None:
    def bucket(v: str) -> int:
        return len(v) % buckets

    keys = [keygen(), keygen()]
    runs = [
        (
            [v.encode() for v in x if bucket(v) == b],
            [k.encode() for k, _ in w if bucket(k) == b],
            [[v, 2 * v] for k, v in w if bucket(k) == b],
        )
        for b in range(buckets)
    ]
    ids_parts, values_parts, _ = _deferred_runs(runs, keys)
    a, b = _total(ids_parts, values_parts, keys)
    xs = set(x)
    plain = sum(v for k, v in w if k in xs)
    assert a.cardinality == b.cardinality == sum(1 for k, _ in w if k in xs)
    assert a.sums == b.sums == (plain, 2 * plain)


def test_deferred_runs_refuse_what_would_leak_or_spoil_the_total() -> None:
    keys = [keygen(), keygen()]
    with pytest.raises(ConfigError, match="need the job's keys"):
        SumValuesParty(W, VALUES, params=DEFERRED)
    runs = [(X[:20], W[:20], VALUES[:20]), (X[20:], W[20:], VALUES[20:])]
    ids_parts, values_parts, _ = _deferred_runs(runs, keys)
    # A values party that switches keys between runs.
    _, other, _ = _deferred_runs(runs[1:], [keygen(), keygen()])
    swapped = [ids_parts[0], replace(ids_parts[1], publics=other[0].publics)]
    with pytest.raises(RemoteProtocolError, match="different keys"):
        _total(swapped, values_parts, keys)

    # An ids party that claims more matches than either side has items.
    def overclaim(who: str, data: bytes) -> bytes:
        msg = decode(data)
        return encode(replace(msg, cardinality=10_000)) if isinstance(msg, SumTotal) else data

    own = sum(p.peer_size for p in ids_parts)
    values = SumTotalValuesParty(
        keys, values_parts, own_items=own, params=DEFERRED, context=b"t", max_sum=10_000
    )
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        run_pair(SumTotalIdsParty(ids_parts, params=DEFERRED, context=b"t"), values, tap=overclaim)

    # A total over fewer runs than were run, or for another job (context).
    for ids_side, ctx, match in [
        (ids_parts[:1], b"t", "covers 1 runs, we ran 2"),
        (ids_parts, b"other", "context mismatch"),
    ]:
        values = SumTotalValuesParty(
            keys, values_parts, own_items=own, params=DEFERRED, context=b"t", max_sum=10_000
        )
        with pytest.raises(RemoteProtocolError, match=match):
            run_pair(SumTotalIdsParty(ids_side, params=DEFERRED, context=ctx), values)

    # Deferred and one-run parties do not talk to each other.
    with pytest.raises(RemoteProtocolError, match="parameter mismatch"):
        run_pair(
            SumIdsParty(X, params=SumParams(columns=2)),
            SumValuesParty(W, VALUES, params=DEFERRED, keys=keys),
        )


def test_wire_formats_start_with_the_version() -> None:
    total = SumTotal(b"ctx", 3, 7, b"\x01" * 64)
    assert decode(encode(total)) == total
    hello = SumHello(DEFERRED, b"ctx", 5)
    assert decode(encode(hello)) == hello
    for msg in (total, hello):
        data = bytearray(encode(msg))
        body = data.index(bytes([2]), 2)  # the version byte opens the body
        data[body] = 1
        with pytest.raises(RemoteProtocolError, match="version 1, we speak 2"):
            decode(bytes(data))
