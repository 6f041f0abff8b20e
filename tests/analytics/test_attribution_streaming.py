"""The streaming machinery of attribution gives the same answer however the work is cut.

The exposure scan encodes the log in groups of batches (one device
dictionary per group, merged progressively), keeps the usable touches in
chunks, and the bucket map gathers one bucket — or one wave of buckets for an
executor — at a time. None of that may change a number: these tests shrink
the batch, group, merge and wave sizes so a small campaign crosses every
boundary, and compare with the one-group run and with counts written directly
from the generated events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.analytics import attribution, paths
from atoll.analytics.attribution import (
    ALL_MODELS,
    AttributionConfig,
    AttributionResult,
    attribute,
)
from atoll.analytics.paths import Prepared, prepare
from atoll.errors import SchemaError
from atoll.execution import make_executor
from atoll.ids.mapping import IdGraph, build_id_graph
from tests.analytics.test_attribution_kat import WINDOW, Order, Touch, at, exposures, orders

INVALID = ("", "null", "0", "x" * 200)
WINDOW_TZ = at(1).tzinfo
KINDS = ("impression", "impression", "impression", "click", "hover")


def campaign(seed: int) -> tuple[list[Touch], list[Order], list[str]]:
    """Random touches (with invalid devices, unknown types, late events), orders, exclusions."""
    rng = np.random.default_rng(seed)
    devices = [f"d{i}" for i in range(120)]
    touches: list[Touch] = []
    for _ in range(3000):
        r = rng.random()
        if r < 0.03:
            device = INVALID[int(rng.integers(0, len(INVALID)))]
        elif r < 0.06:
            device = f"  d{int(rng.integers(0, 120))} "  # trims to an existing device
        else:
            device = devices[int(rng.integers(0, 120))]
        channel = "ABCDE"[int(rng.integers(0, 5))]
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        day = int(rng.integers(1, 31))  # some after the conversion window (June 29)
        touches.append((device, channel, kind, at(day, float(rng.uniform(0, 24)))))
    order_rows: list[Order] = [
        (f"o{i}", devices[int(rng.integers(0, 130)) % 120], at(int(rng.integers(2, 30))), "19.90")
        for i in range(200)
    ]
    excluded = [f"e{i}" for i in rng.choice(3000, size=150, replace=False)]
    return touches, order_rows, excluded


def expected_counts(touches: list[Touch], excluded: list[str]) -> Counter[str]:
    """The event accounting written from the rules, event by event."""
    out: Counter[str] = Counter()
    gone = set(excluded)
    end = datetime(2026, 6, 30, tzinfo=WINDOW_TZ)
    for i, (device, _, kind, when) in enumerate(touches):
        if f"e{i}" in gone:
            out["excluded_invalid_traffic"] += 1
        elif device.strip() in INVALID:
            out["invalid_device_id"] += 1
        elif kind not in ("impression", "click"):
            out["unknown_event_type"] += 1
        elif when >= end:
            out["after_conversion_window"] += 1
        else:
            out["events_used"] += 1
    return out


Run = tuple[Prepared, AttributionResult, AttributionResult, list[tuple[int, ...]]]


Source = pa.Table | str | Callable[[], pa.RecordBatchReader]


def linked_graph() -> IdGraph:
    """Devices ``d2k`` and ``d2k+1`` (k < 40) share a phone; 50 graph devices never show up."""
    pairs = [(f"1380000{k:04d}", f"d{2 * k + j}") for k in range(40) for j in (0, 1)]
    pairs += [(f"1390000{k:04d}", f"g{k}") for k in range(50)]
    return build_id_graph(
        pa.table(
            {
                "id_type_a": ["phone"] * len(pairs),
                "id_a": [p for p, _ in pairs],
                "id_type_b": ["device_id"] * len(pairs),
                "id_b": [d for _, d in pairs],
            }
        )
    )


def results(
    ex: Source, order_table: pa.Table, excluded: list[str], graph: IdGraph | None = None
) -> Run:
    """Prepare once; attribute inline and through an executor; the touches as one sorted key."""
    source = ex() if callable(ex) else ex  # a reader is consumed: a fresh one per call
    prepared = prepare(
        source, order_table, WINDOW, exclude_event_ids=pa.array(excluded), graph=graph
    )
    config = AttributionConfig(window=WINDOW, buckets=3)
    inline = attribute(prepared, config)
    with make_executor("inline") as executor:
        mapped = attribute(prepared, config, executor=executor)
    # Person numbers are labels (the shards change them): compare each
    # person's sorted touches, as a sorted list over persons.
    key = (prepared.t_ms - WINDOW.start_ms + (1 << 40)) * 16
    key += prepared.t_channel * 2 + prepared.t_click
    by_person: dict[int, list[int]] = {}
    for person, k in zip(prepared.t_person.tolist(), key.tolist(), strict=True):
        by_person.setdefault(person, []).append(k)
    touches = sorted(tuple(sorted(ks)) for ks in by_person.values())
    return prepared, inline, mapped, touches


@pytest.mark.parametrize("with_graph", [False, True], ids=["devices", "graph"])
@pytest.mark.parametrize("source", ["table", "parquet", "reader"])
def test_groups_merges_and_waves_change_nothing(
    source: str, with_graph: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 128 rows, groups of 384, merges after 40 waiting ids, waves of 300 touches.

    The device-id shards change too (one, or four, against the default), and
    every group's ids are encoded in three hash partitions (the small default
    run encodes them in one piece).

    With the graph, the scan's last merge takes the graph's device ids too:
    80 devices are 40 linked pairs, and 50 graph devices are not in the log.
    """
    graph = linked_graph() if with_graph else None
    touches, order_rows, excluded = campaign(3)
    table = exposures(touches, cost=0.25)
    ex: Source = table
    if source == "parquet":
        path = f"{tmp_path}/exposures.parquet"
        pq.write_table(table, path, row_group_size=100)
        ex = path
    elif source == "reader":  # batches of uneven sizes, some larger than a scan batch
        cuts = [0, 1, 300, 301, 1000, 2600, table.num_rows]
        parts = [table.slice(a, b - a).combine_chunks() for a, b in pairwise(cuts)]

        def ex() -> pa.RecordBatchReader:
            batches = [b for part in parts for b in part.to_batches()]
            return pa.RecordBatchReader.from_batches(table.schema, batches)

    order_table = orders(order_rows)
    one = results(ex, order_table, excluded, graph)
    monkeypatch.setattr(paths, "_BATCH_ROWS", 128)
    monkeypatch.setattr(paths, "_GROUP_ROWS", 384)
    monkeypatch.setattr(paths, "_MERGE_FLOOR", 40)
    monkeypatch.setattr(paths, "_SHARDS", 1 if paths._SHARDS > 1 else 4)  # the other layout
    monkeypatch.setattr(paths, "_PARTITIONED_MIN", 0)  # every group's ids hash-partitioned
    monkeypatch.setattr(paths, "_PARTITION_DISTINCT", 0.0)
    monkeypatch.setattr(paths, "_ROW_PARTS", 3)  # (not a power of two)
    monkeypatch.setattr(attribution, "_WAVE_TOUCHES", 300)
    many = results(ex, order_table, excluded, graph)
    assert len(many[0].t_key_chunks) > 10  # the small sizes did cut the work
    prepared, inline, _, touch_set = one
    # Persons: 120 devices, of which 80 are 40 linked pairs (the graph's others unused).
    assert prepared.n_persons == (80 if with_graph else 120)
    want = expected_counts(touches, excluded)
    for key in ("excluded_invalid_traffic", "invalid_device_id", "unknown_event_type"):
        assert prepared.event_counts[key] == want[key], key
    assert prepared.event_counts["after_conversion_window"] == want["after_conversion_window"]
    assert prepared.event_counts["events_used"] == want["events_used"]
    assert prepared.n_touches == want["events_used"]
    # Every way of cutting the work holds the same touches and gives the same numbers.
    other_prepared, other_inline, other_mapped, other_touches = many
    assert other_prepared.event_counts == prepared.event_counts
    assert other_prepared.n_persons == prepared.n_persons
    assert other_touches == touch_set
    np.testing.assert_allclose(other_prepared.billed_cost, prepared.billed_cost, rtol=1e-12)
    np.testing.assert_allclose(other_prepared.valid_cost, prepared.valid_cost, rtol=1e-12)
    for result in (other_inline, other_mapped, one[2]):
        for status, value in inline.order_status.items():
            assert result.order_status[status]["orders"] == value["orders"]
            assert result.order_status[status]["sales"] == pytest.approx(value["sales"], rel=1e-12)
        for model in ALL_MODELS:
            for got, exp in zip(result.credits[model], inline.credits[model], strict=True):
                # Other person numbers put persons in other buckets: sums in
                # another order, equal to rounding.
                np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-9)
        assert (
            result.delivery["overall"]["exposure_uv"] == inline.delivery["overall"]["exposure_uv"]
        )
    # The cost: 0.25 per event of the campaign period billed; the usable ones are valid.
    start, end = at(1, 0), at(15, 0)
    gone = set(excluded)
    period = [i for i, t in enumerate(touches) if start <= t[3] < end]
    usable = [
        i
        for i in period
        if f"e{i}" not in gone
        and touches[i][0].strip() not in INVALID
        and touches[i][2] in ("impression", "click")
    ]
    assert prepared.billed_cost.sum() == pytest.approx(0.25 * len(period))
    assert prepared.valid_cost.sum() == pytest.approx(0.25 * len(usable))


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.sampled_from(["", "a", "ab", "é", "dev1"]), st.text(max_size=5)),
        max_size=60,
    ),
    parts=st.sampled_from([1, 2, 3, 16, 64, 300]),
    start=st.integers(0, 4),
    large=st.booleans(),
)
def test_partitioned_encode_is_a_dictionary_encode(
    values: list[str | None], parts: int, start: int, large: bool
) -> None:
    """Per row the same value as the input, distinct dictionary entries, -1 for a null."""
    array = pa.array(["pad", *values], pa.large_string() if large else pa.string())
    array = array.slice(min(start, len(array)))
    old = paths._PARTITIONED_MIN, paths._PARTITION_DISTINCT
    try:
        paths._PARTITIONED_MIN, paths._PARTITION_DISTINCT = 0, 0.0
        dictionary, index = paths._partitioned_encode(array, parts)
    finally:
        paths._PARTITIONED_MIN, paths._PARTITION_DISTINCT = old
    assert index.dtype == np.int32
    assert len(index) == len(array)
    entries = dictionary.to_pylist()
    assert len(set(entries)) == len(entries)
    want = array.to_pylist()
    got = [entries[i] if i >= 0 else None for i in index.tolist()]
    assert got == want
    assert set(entries) == {v for v in want if v is not None}


def test_only_groups_of_mostly_distinct_ids_are_partitioned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sample of the first ids decides: a repetitive log keeps one (cache-sized) table."""
    monkeypatch.setattr(paths, "_PARTITIONED_MIN", 100)
    distinct = pa.array([f"d{i}" for i in range(300)])
    repeated = pa.array([f"d{i % 10}" for i in range(300)])
    assert paths._many_distinct(distinct)
    assert not paths._many_distinct(repeated)
    # Only the first 100 ids are sampled: 90 repeats, then new ids.
    assert not paths._many_distinct(pa.concat_arrays([repeated.slice(0, 90), distinct]))
    calls: list[int] = []
    encode = paths.pc.dictionary_encode

    def counted(values: pa.Array) -> pa.Array:
        calls.append(len(values))
        return encode(values)

    monkeypatch.setattr(paths.pc, "dictionary_encode", counted)
    for values, pieces in ((distinct, 16), (repeated, 1)):
        calls.clear()
        dictionary, index = paths._partitioned_encode(values, 16)
        assert len(calls) == pieces
        assert dictionary.take(pa.array(index)).to_pylist() == values.to_pylist()


def test_prepared_decodes_its_touch_keys() -> None:
    touches: list[Touch] = [
        ("d1", "B", "click", at(3, 10.5)),
        ("d2", "A", "impression", at(1, 0.001)),
        ("d1", "C", "impression", at(14, 23.9)),
        ("d3", "A", "click", at(5, 1)),
    ]
    prepared = prepare(exposures(touches), orders([]), WINDOW)
    assert prepared.channels == ["A", "B", "C"]
    got = list(
        zip(
            prepared.t_person.tolist(),
            prepared.t_ms.tolist(),
            prepared.t_channel.tolist(),
            prepared.t_click.tolist(),
            strict=True,
        )
    )
    # Persons are numbered 0..2 in no promised order: one number per device.
    device_of = {ms: d for d, _, _, when in touches for ms in [int(when.timestamp() * 1000)]}
    person_of = {device_of[ms]: person for person, ms, _, _ in got}
    assert sorted(person_of.values()) == [0, 1, 2]
    want = sorted(
        (person_of[d], int(when.timestamp() * 1000), "ABC".index(ch), kind == "click")
        for d, ch, kind, when in touches
    )
    assert sorted(got) == want
    assert prepared.base_ms == WINDOW.start_ms
    assert prepared.t_person_chunks[0].dtype == np.int32


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(
        st.lists(st.integers(-1, 60), max_size=30) | st.lists(st.integers(-1, 10**9), max_size=5),
        min_size=1,
        max_size=4,
    )
)
def test_dense_numbering_ranks_the_used_codes(parts: list[list[int]]) -> None:
    """Both ways of numbering persons (table over the code space, or a sort) rank the codes."""
    arrays = [np.array(p, dtype=np.int64) for p in parts]
    out, n = paths._dense(arrays)
    used = sorted({c for p in parts for c in p if c >= 0})
    assert n == len(used)
    rank = {c: i for i, c in enumerate(used)}
    for p, o in zip(parts, out, strict=True):
        assert o.tolist() == [rank[c] if c >= 0 else -1 for c in p]


def test_reader_missing_a_column_is_named() -> None:
    touches, order_rows, _ = campaign(3)
    table = exposures(touches).drop_columns(["device_id"])
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    with pytest.raises(SchemaError) as info:
        prepare(reader, orders(order_rows), WINDOW)
    assert info.value.column == "device_id"
    assert info.value.source == "exposures"
