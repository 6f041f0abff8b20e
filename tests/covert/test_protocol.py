"""The covert query end to end in memory: correctness, k_min, masking, hostile input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto import open_sealed
from atoll.crypto.group import scalar_random
from atoll.crypto.ot import slot_mask
from atoll.crypto.sign import SigningKey
from atoll.errors import DecryptionError, LocalProtocolError, RemoteProtocolError
from atoll.protocols.covert import (
    AnswerStatus,
    CovertClient,
    CovertProvider,
    GroupOffer,
    GroupRequest,
    KeyRelease,
    KMinPolicy,
    Query,
    Response,
    UsageReceipt,
    _slot_context,
)
from atoll.protocols.covert_source import (
    AEAD_OVERHEAD,
    ArrayLabelSource,
    LibraryDecoys,
    PhoneDecoys,
    RecordCodec,
    choose_prefix_bits,
    open_bucket_entry,
)
from atoll.protocols.messages import decode, encode
from atoll.transport.memory import run_pair

from .conftest import DB_SIZE, phone

MODES = [
    ("rsa", "prefix"),
    ("rsa", "decoy"),
    ("ec", "prefix"),
    ("ec", "decoy"),
    ("bucket", "prefix"),
]


def client_for(
    ids: list[str], mode: str, amplify: str, source: ArrayLabelSource, **kw: Any
) -> CovertClient:
    bits = 3 if mode == "bucket" else choose_prefix_bits(source.stats(), 8)
    library = LibraryDecoys(tuple(phone(i) for i in range(DB_SIZE)))
    options: dict[str, Any] = {"n": 8, "prefix_bits": bits, "decoys": library, "rsa_min_bits": 1024}
    options.update(kw)
    return CovertClient(ids, mode=mode, amplify=amplify, **options)


@pytest.mark.parametrize(("mode", "amplify"), MODES)
def test_client_gets_exactly_its_label_or_no_record(
    mode: str,
    amplify: str,
    source: ArrayLabelSource,
    db_rows: Any,
    make_provider: Callable[..., Any],
) -> None:
    ids, values = db_rows
    asked = [ids[5], ids[123], "13800000000", ids[399]]
    provider, biller = make_provider()
    run = run_pair(client_for(asked, mode, amplify, source), provider)
    answers = run.a_result
    assert [a.id for a in answers] == asked
    assert answers[0].status == AnswerStatus.HIT
    assert answers[0].values == values[5]
    assert answers[1].values == values[123]
    assert answers[3].values == values[399]
    assert answers[2].status == AnswerStatus.NO_RECORD
    assert answers[2].values is None
    # billed exactly the three bought keys, each receipt matching its answer
    assert len(biller.events) == 3
    outcome = run.b_result
    assert outcome.released == (True, True, False, True)
    for a in (answers[0], answers[1], answers[3]):
        receipt = UsageReceipt.verify(provider._signing_key.verify_key, a.receipt)
        assert (receipt.n, receipt.m, receipt.mode) == (a.n, a.m, mode)


@settings(max_examples=15, deadline=None)
@given(
    picks=st.lists(st.integers(min_value=0, max_value=DB_SIZE + 50), min_size=1, max_size=6),
    mode=st.sampled_from(["ec", "bucket"]),
)
def test_result_equals_the_plain_lookup(
    picks: list[int], mode: str, source: ArrayLabelSource, db_rows: Any, signing_key: SigningKey
) -> None:
    ids, values = db_rows
    plain = dict(zip(ids, values, strict=True))
    asked = [phone(i) for i in picks]
    from .conftest import MemoryBiller

    provider = CovertProvider(source, signing_key=signing_key, biller=MemoryBiller(signing_key))
    answers = run_pair(
        client_for(asked, mode, "prefix", source, policy=KMinPolicy(1)), provider
    ).a_result
    assert [a.values for a in answers] == [plain.get(x) for x in asked]


def test_k_min_rule_refuses_to_buy_when_few_slots_hit(
    source: ArrayLabelSource, db_rows: Any, make_provider: Callable[..., Any]
) -> None:
    ids, values = db_rows
    # random valid phone decoys almost never hit this small DB: m == 1 (the true ID)
    provider, biller = make_provider()
    client = client_for([ids[7]], "ec", "decoy", source, decoys=PhoneDecoys())
    answer = run_pair(client, provider).a_result[0]
    assert answer.status == AnswerStatus.DECLINED
    assert answer.values is None
    assert answer.m < 3
    assert biller.events == []  # nothing released, nothing billed
    # with k_min = 1 the same query is bought
    provider, biller = make_provider()
    client = client_for([ids[7]], "ec", "decoy", source, decoys=PhoneDecoys(), policy=KMinPolicy(1))
    answer = run_pair(client, provider).a_result[0]
    assert answer.status == AnswerStatus.HIT
    assert answer.values == values[7]
    assert len(biller.events) == 1


def test_k_min_policy_is_validated() -> None:
    assert KMinPolicy(3).should_request(True, 3)
    assert not KMinPolicy(3).should_request(True, 2)
    assert not KMinPolicy(1).should_request(False, 10)
    with pytest.raises(Exception, match="k_min"):
        KMinPolicy(0)


def _run_manually(client: CovertClient, provider: CovertProvider) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    msgs = client.start()
    provider.start()
    while msgs:
        reply: list[Any] = []
        for m in msgs:
            m = decode(encode(m))
            seen[type(m).__name__] = m
            out = (
                provider.receive(m) if not isinstance(m, GroupOffer | Response | KeyRelease) else []
            )
            if isinstance(m, GroupOffer | Response | KeyRelease):
                out = client.receive(m)
            reply.extend(out)
        msgs = reply
    return seen


@pytest.mark.parametrize("mode", ["rsa", "ec"])
def test_masked_slots_do_not_decrypt_to_the_providers_records(
    mode: str, source: ArrayLabelSource, db_rows: Any, make_provider: Callable[..., Any]
) -> None:
    ids, values = db_rows
    codec = source.codec
    provider, _ = make_provider()
    client = client_for([ids[42]], mode, "prefix", source)
    seen = _run_manually(client, provider)
    assert client.result()[0].values == values[42]
    offer, response, release = seen["GroupOffer"], seen["Response"], seen["KeyRelease"]
    key = release.keys[0]
    from atoll.protocols.covert import _aad

    opened = open_sealed(key, response.sealed[0], aad=_aad(offer.batch_id, 0))
    size = codec.record_size
    pos = client.true_positions[0]
    secret = client._queries[0].secret
    group_tags, group_records = source.prefix_group(*client._queries[0].prefix)
    all_records = {source.records[i].tobytes() for i in range(len(source))}
    opened_other = 0
    for i in range(len(group_tags)):
        if i == pos:
            continue
        slot = opened[i * size : (i + 1) * size]
        assert slot != group_records[i]  # masked on the wire
        for ctx_slot in (pos, i):  # the client's only secret, under either slot context
            mask = slot_mask(
                secret, context=_slot_context(offer.batch_id, 0, ctx_slot), length=size
            )
            guess = bytes(a ^ b for a, b in zip(slot, mask, strict=True))
            assert guess not in all_records
            with pytest.raises(RemoteProtocolError):
                codec.decode(guess)
        opened_other += 1
    assert opened_other >= 2


def test_bucket_mode_other_entries_do_not_open(
    source: ArrayLabelSource, db_rows: Any, make_provider: Callable[..., Any]
) -> None:
    ids, values = db_rows
    provider, _ = make_provider()
    client = client_for([ids[9]], "bucket", "prefix", source)
    seen = _run_manually(client, provider)
    assert client.result()[0].values == values[9]
    from atoll.protocols.covert import _aad

    offer, response, release = seen["GroupOffer"], seen["Response"], seen["KeyRelease"]
    opened = open_sealed(release.keys[0], response.sealed[0], aad=_aad(offer.batch_id, 0))
    width = AEAD_OVERHEAD + source.codec.record_size
    q = client._queries[0]
    for i in range(len(opened) // width):
        entry = opened[i * width : (i + 1) * width]
        if i == q.pos:
            assert source.codec.decode(open_bucket_entry(q.entry_key, entry)) == values[9]
        else:
            with pytest.raises(DecryptionError):
                open_bucket_entry(q.entry_key, entry)


def test_micro_batch_shares_one_group_and_round_trips(
    source: ArrayLabelSource, db_rows: Any, make_provider: Callable[..., Any]
) -> None:
    ids, values = db_rows
    asked = ids[:30]
    provider, _ = make_provider()
    run = run_pair(client_for(asked, "ec", "decoy", source), provider)
    assert [a.values for a in run.a_result] == values[:30]
    assert run.messages_a_to_b == 3
    assert run.messages_b_to_a == 3


# --- hostile input ----------------------------------------------------------------------


def _tamper(target: int, fn: Callable[[bytes], bytes]) -> Callable[[str, bytes], bytes]:
    counter = {"n": 0}

    def tap(sender: str, data: bytes) -> bytes:
        counter["n"] += 1
        return fn(data) if counter["n"] == target else data

    return tap


@pytest.mark.parametrize(
    ("target", "fn", "match"),
    [
        (1, lambda d: b"\x09" + d[1:], "wire version"),
        (2, lambda d: d[:-3], "truncated|trailing|wrong"),
        (3, lambda d: d + b"\x00", "trailing"),
        (4, lambda d: d[:-1] + bytes([d[-1] ^ 1]), "open the result|size|invalid"),
        (1, lambda d: d[:1] + b"\x04\x99" + d[3:], "unknown message type"),
    ],
)
def test_tampered_messages_are_rejected(
    target: int, fn: Callable[[bytes], bytes], match: str, source: ArrayLabelSource,
    db_rows: Any, make_provider: Callable[..., Any],
) -> None:  # fmt: skip
    ids, _ = db_rows
    provider, _biller = make_provider()
    client = client_for([ids[1]], "ec", "prefix", source)
    with pytest.raises(RemoteProtocolError, match=match):
        run_pair(client, provider, tap=_tamper(target, fn))
    # codec-level damage is refused before any machine sees it; a machine that
    # raised stays failed for good
    if target == 4:
        assert client.failed
        with pytest.raises(LocalProtocolError):
            client.receive(GroupRequest("x", 2, 1, 1, 1))


def test_tampered_sealed_result_is_rejected_after_release(
    source: ArrayLabelSource, db_rows: Any, make_provider: Callable[..., Any]
) -> None:
    ids, _ = db_rows
    provider, _ = make_provider()
    client = client_for([ids[1]], "ec", "prefix", source)
    provider.start()
    offer = provider.receive(client.start()[0])[0]
    query = client.receive(offer)[0]
    response = provider.receive(query)[0]
    sealed = bytearray(response.sealed[0])
    sealed[40] ^= 1
    key_request = client.receive(replace(response, sealed=(bytes(sealed),)))[0]
    release = provider.receive(key_request)[0]
    with pytest.raises(RemoteProtocolError, match="does not open"):
        client.receive(release)


def test_oversized_and_invalid_requests_are_refused(
    source: ArrayLabelSource, make_provider: Callable[..., Any], db_rows: Any
) -> None:
    ids, _ = db_rows
    provider, _ = make_provider(max_n=16)
    provider.start()
    with pytest.raises(RemoteProtocolError, match="decoy group size"):
        provider.receive(GroupRequest("c", 2, 1, 17, 1))
    provider, _ = make_provider(max_batch=2)
    provider.start()
    with pytest.raises(RemoteProtocolError, match="batch of 3"):
        provider.receive(GroupRequest("c", 2, 1, 4, 3))
    provider, _ = make_provider()
    provider.start()
    with pytest.raises(RemoteProtocolError, match="unknown mode"):
        provider.receive(GroupRequest("c", 9, 1, 4, 1))
    provider, _ = make_provider(max_n=4)
    provider.start()
    with pytest.raises(RemoteProtocolError, match="use a longer prefix"):
        provider.receive(GroupRequest("c", 2, 2, 0, 1, ((1, 0),)))
    # a Query whose group size differs from N, or repeats an ID, or carries a bad point
    for groups, value, match in [
        ((tuple(ids[:3]),), None, "expected N"),
        (((ids[0],) * 4,), None, "repeats"),
        ((tuple(ids[:4]),), bytes(32), "invalid OT point"),
    ]:
        provider, _ = make_provider()
        provider.start()
        offer = provider.receive(GroupRequest("c", 2, 1, 4, 1))[0]
        b_point = value if value is not None else offer.ot_point
        with pytest.raises(RemoteProtocolError, match=match):
            provider.receive(Query(offer.batch_id, groups, (b_point,)))


def test_rsa_ciphertext_above_the_group_minimum_is_refused(
    make_provider: Callable[..., Any], db_rows: Any
) -> None:
    ids, _ = db_rows
    provider, _ = make_provider()
    provider.start()
    offer = provider.receive(GroupRequest("c", 1, 1, 4, 1))[0]
    top = max(k.n for k in offer.rsa_keys) - 1
    with pytest.raises(RemoteProtocolError, match="below every modulus"):
        provider.receive(Query(offer.batch_id, (tuple(ids[:4]),), (top.to_bytes(128, "big"),)))


def test_client_rejects_a_forged_offer(
    source: ArrayLabelSource, make_provider: Callable[..., Any], db_rows: Any
) -> None:
    ids, _ = db_rows
    # RSA key with a broken certificate
    provider, _ = make_provider()
    client = client_for([ids[0]], "rsa", "decoy", source)
    provider.start()
    offer = provider.receive(client.start()[0])[0]
    bad = replace(offer.rsa_keys[0], certificate=(2, 3, 4, 5))
    with pytest.raises(RemoteProtocolError, match="certificate"):
        client.receive(replace(offer, rsa_keys=(bad, *offer.rsa_keys[1:])))
    # prefix group containing a tag outside the requested prefix
    provider, _ = make_provider()
    client = client_for([ids[0]], "ec", "prefix", source)
    provider.start()
    offer = provider.receive(client.start()[0])[0]
    group = sorted({*offer.groups[0], b"\xff" * 16, b"\x00" * 16})
    with pytest.raises(RemoteProtocolError, match="share the query prefix"):
        client.receive(replace(offer, groups=(tuple(group),)))
    # a different provider key than the pinned one
    client = CovertClient(
        [ids[0]], mode="ec", prefix_bits=4, provider_key=SigningKey.generate().verify_key
    )
    provider, _ = make_provider()
    provider.start()
    offer = provider.receive(client.start()[0])[0]
    with pytest.raises(RemoteProtocolError, match="pinned"):
        client.receive(offer)


def test_forged_receipt_is_rejected(
    source: ArrayLabelSource, db_rows: Any, make_provider: Callable[..., Any]
) -> None:
    ids, _ = db_rows
    provider, _ = make_provider()
    client = client_for([ids[2]], "ec", "prefix", source)
    provider.start()
    offer = provider.receive(client.start()[0])[0]
    response = provider.receive(client.receive(offer)[0])[0]
    release = provider.receive(client.receive(response)[0])[0]
    forged = release.receipts[0][:-1] + bytes([release.receipts[0][-1] ^ 1])
    with pytest.raises(RemoteProtocolError, match="receipt"):
        client.receive(replace(release, receipts=(forged,)))


def test_record_codec_round_trip_and_strictness() -> None:
    codec = RecordCodec(("a", "b"), 32)
    rec = codec.encode([1, "x"])
    assert len(rec) == 32
    assert codec.decode(rec) == [1, "x"]
    assert codec.decode(codec.empty()) is None
    for bad in (rec[:-1], b"\x02" + rec[1:], rec[:-1] + b"\x01", b"\x00" + rec[1:]):
        with pytest.raises(RemoteProtocolError):
            codec.decode(bad)


def test_duplicate_ids_in_the_database_are_an_input_error() -> None:
    from atoll.errors import InputError

    with pytest.raises(InputError, match="more than once"):
        ArrayLabelSource.from_rows(["1", "1"], [[1], [2]], ["a"])


def test_bucket_arrays_need_a_key() -> None:
    from atoll.errors import ConfigError

    with pytest.raises(ConfigError):
        ArrayLabelSource.from_rows(["1"], [[1]], ["a"], bucket_bits=2)
    src = ArrayLabelSource.from_rows(
        ["1", "2"], [[1], [2]], ["a"], bucket_bits=2, oprf_key=scalar_random()
    )
    assert src.bucket_bits == 2
