"""The PSI speed paths in the matching layer: packed bucket inputs and the engine's streaming.

Each path must give exactly what the plain path gives: the packed form of a
bucket equals its list of IDs, the process pool equals the inline run, and
the traffic counts equal the bytes the codec produced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.execution import make_executor
from atoll.ids.buckets import BucketFunction
from atoll.matching import BuiltinEngine, PsiOptions, psi_party, run_local
from atoll.matching.engine import run_bucket_pair
from atoll.matching.prepare import prepare_ids
from atoll.protocols.psi import PackedItems, PsiReceiver

PHONES = [f"138{(i * 7919) % 10**8:08d}" for i in range(400)]


def _jobs(left: list[str], right: list[str], opts: PsiOptions) -> tuple[Any, Any]:
    a = psi_party(pa.table({"phone": left}), "phone", role="receiver", options=opts)
    b = psi_party(pa.table({"phone": right}), "phone", role="sender", options=opts)
    return a, b


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=8), st.sampled_from(["13800138000", "a" * 16, "ü" * 3])),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=9),
)
def test_property_bucket_packed_equals_bucket_items(values: list[str], buckets: int) -> None:
    table = pa.table({"id": pa.array(values, type=pa.string())})
    prepared = prepare_ids(table, "id", "member_id", BucketFunction(buckets, b"salt"))
    total = 0
    for b in range(buckets):
        packed = prepared.bucket_packed(b)
        assert isinstance(packed, PackedItems)
        assert list(packed) == prepared.bucket_items(b)
        total += len(packed)
    assert total == prepared.unique


def test_machines_get_packed_inputs_and_match_the_plain_intersection() -> None:
    opts = PsiOptions(buckets=5)
    a, b = _jobs(PHONES[:300], PHONES[150:], opts)
    a.agree(b.params())
    b.agree(a.params())
    sa, sb = next(a.sessions()), next(b.sessions())
    found = 0
    for k in sa.buckets():
        ma = sa.machine(k)
        assert isinstance(ma, PsiReceiver)
        assert isinstance(ma._items, PackedItems)
        out = run_bucket_pair((k, ma, sb.machine(k)))
        assert out.bucket == k
        assert out.a_traffic.bytes_sent == out.b_traffic.bytes_received > 0
        sa.accept(k, out.a_result, out.a_traffic)
        sb.accept(k, out.b_result, out.b_traffic)
        found += out.a_result.cardinality
    assert found == 150
    report = sa.finish()
    assert report.matched_ids == 150
    # Default truncation (12 bytes): the sender sends 44 bytes per item plus framing.
    assert 44 * 250 <= report.bytes_received < 44 * 250 + 5 * 300


def test_process_pool_equals_inline_with_small_windows() -> None:
    opts = PsiOptions(buckets=7, reveal="both")
    a, b = _jobs(PHONES[:250], PHONES[100:], opts)
    inline_r, inline_s = run_local(a, b, engine=BuiltinEngine(window=3))
    a, b = _jobs(PHONES[:250], PHONES[100:], opts)
    with make_executor("local", workers=2) as ex:
        pool_r, pool_s = run_local(a, b, engine=BuiltinEngine(window=3), executor=ex)
    assert pool_r.cardinality == inline_r.cardinality == 150
    assert np.array_equal(pool_r.matched_rows, inline_r.matched_rows)
    assert np.array_equal(pool_s.matched_rows, inline_s.matched_rows)
    assert pool_r.table["phone"].to_pylist() == PHONES[100:250]
    # Same sizes on the wire whichever process ran the bucket.
    assert pool_r.bytes_sent == inline_r.bytes_sent
    assert pool_r.bytes_received == inline_r.bytes_received
