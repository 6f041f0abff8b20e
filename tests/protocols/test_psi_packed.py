"""PSI's fast path: packed inputs, the default truncation, the lightweight pair runner."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import LocalProtocolError
from atoll.protocols.pair import run_machine_pair, run_machines
from atoll.protocols.psi import (
    DEFAULT_TRUNCATE,
    PackedItems,
    PsiParams,
    PsiReceiver,
    PsiSender,
)
from atoll.transport.memory import run_pair
from tests.protocols._rng import CounterRng

X = [f"1380013{i:04d}".encode() for i in range(60)]
Y = [f"1380013{i:04d}".encode() for i in range(40, 100)]


def test_packed_items_behave_like_the_list() -> None:
    items = [b"", b"a", "ü".encode(), b"13800138000", b""]
    packed = PackedItems.from_items(items)
    assert len(packed) == 5
    assert list(packed) == items
    assert [packed[i] for i in range(5)] == items
    assert packed[-1] == b""
    assert packed[-3] == "ü".encode()
    assert packed[1:4] == items[1:4]
    assert packed.take(np.array([3, 0, 2], dtype=np.int64)) == [items[3], items[0], items[2]]
    with pytest.raises(IndexError):
        packed[5]
    again = pickle.loads(pickle.dumps(packed))
    assert list(again) == items
    empty = PackedItems.from_items([])
    assert len(empty) == 0
    assert list(empty) == []


def test_packed_items_refuse_inconsistent_offsets() -> None:
    with pytest.raises(ValueError, match="ending at len"):
        PackedItems(b"abc", np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        PackedItems(b"abc", np.array([2, 1, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="without items"):
        PackedItems(b"abc", np.zeros(0, dtype=np.int64))


def test_default_truncation_is_12_bytes_and_sets_the_reply_size() -> None:
    assert PsiParams().truncate == DEFAULT_TRUNCATE == 12
    run = run_pair(PsiReceiver(X), PsiSender(Y))
    assert run.a_result.indices.tolist() == list(range(40, 60))
    # receiver -> sender: 32 bytes per item; sender -> receiver: 12 + 32 per item (+ framing)
    assert 60 * 32 <= run.bytes_a_to_b < 60 * 32 + 200
    assert 60 * 44 <= run.bytes_b_to_a < 60 * 44 + 200


def test_packed_input_gives_the_same_transcript_as_the_list() -> None:
    params = PsiParams(reveal="both", kind="phone")
    plain = run_pair(
        PsiReceiver(X, params=params, rng=CounterRng(b"r")),
        PsiSender(Y, params=params, rng=CounterRng(b"s")),
        keep_transcript=True,
    )
    packed = run_pair(
        PsiReceiver(PackedItems.from_items(X), params=params, rng=CounterRng(b"r")),
        PsiSender(PackedItems.from_items(Y), params=params, rng=CounterRng(b"s")),
        keep_transcript=True,
    )
    assert plain.transcript == packed.transcript
    assert plain.a_result.indices.tolist() == packed.a_result.indices.tolist()
    assert plain.b_result.indices.tolist() == packed.b_result.indices.tolist() == list(range(20))


def test_pair_runner_counts_like_the_memory_transport() -> None:
    params = PsiParams(reveal="both")
    ref = run_pair(
        PsiReceiver(X, params=params, rng=CounterRng(b"1")),
        PsiSender(Y, params=params, rng=CounterRng(b"2")),
    )
    label, got = run_machine_pair(
        (
            7,
            PsiReceiver(PackedItems.from_items(X), params=params, rng=CounterRng(b"1")),
            PsiSender(PackedItems.from_items(Y), params=params, rng=CounterRng(b"2")),
        )
    )
    assert label == 7
    assert (got.a_bytes, got.b_bytes) == (ref.bytes_a_to_b, ref.bytes_b_to_a)
    assert (got.a_messages, got.b_messages) == (ref.messages_a_to_b, ref.messages_b_to_a)
    assert got.a_result.indices.tolist() == ref.a_result.indices.tolist()


def test_pair_runner_reports_a_stall() -> None:
    # Two senders: nobody speaks first, neither is done.
    with pytest.raises(LocalProtocolError, match="stalled"):
        run_machines(PsiSender(X), PsiSender(Y))


def test_a_worker_running_a_bucket_imports_only_the_protocol_layer() -> None:
    # What a process-pool worker unpickles for one bucket: the executor's chunk
    # runner, the pair task and two machines. None of it may pull in the
    # matching package or the data plane (DuckDB, pandas), which used to
    # triple every worker's start-up time.
    from atoll.execution.base import run_chunk

    task = (
        run_chunk,
        run_machine_pair,
        0,
        [(3, PsiReceiver(PackedItems.from_items(X)), PsiSender(PackedItems.from_items(Y)))],
    )
    code = (
        "import pickle, sys\n"
        "chunk, fn, start, items = pickle.loads(sys.stdin.buffer.read())\n"
        "res = chunk(fn, start, items)\n"
        "label, run = res.values[0]\n"
        "names = ('duckdb', 'pandas', 'atoll.matching', 'atoll.data')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(label, run.a_result.cardinality, ','.join(heavy) or '-')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(task),
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.decode().split() == ["3", "20", "-"]


_ids = st.lists(st.binary(min_size=0, max_size=12), max_size=30, unique=True)


@settings(max_examples=25, deadline=None)
@given(_ids, _ids, st.sampled_from([8, 12, 32]), st.booleans())
def test_property_packed_psi_equals_plain_intersection(
    x: list[bytes], y: list[bytes], truncate: int, card: bool
) -> None:
    params = PsiParams(reveal="both", truncate=truncate, cardinality_only=card)
    run = run_pair(
        PsiReceiver(PackedItems.from_items(x), params=params),
        PsiSender(PackedItems.from_items(y), params=params),
    )
    common = set(x) & set(y)
    r, s = run.a_result, run.b_result
    assert r.cardinality == s.cardinality == len(common)
    if card:
        assert r.indices is None
        assert s.indices is None
    else:
        assert sorted(x[i] for i in r.indices.tolist()) == sorted(common)
        assert sorted(y[i] for i in s.indices.tolist()) == sorted(common)
