"""Tests of the OneID graph: components against a plain BFS, stable names, the hub guard."""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.crypto import keyed_hash
from atoll.errors import ConfigError, IdentityGraphError, SchemaError
from atoll.ids import mapping
from atoll.ids.mapping import (
    IdGraph,
    MappingConfig,
    SplitRecord,
    build_id_graph,
    group_by_tail,
    required_edge_columns,
    tail_partition,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Raw values that are already in normalized form, so the expected node key
# is simply "<type>:<value>".
KINDS = ("phone", "oaid", "idfa")


def node(i: int) -> tuple[str, str]:
    kind = KINDS[i % 3]
    if kind == "phone":
        return kind, f"1380{i:07d}"
    if kind == "oaid":
        return kind, f"{i + 1:016x}"
    return kind, f"{i + 1:08X}-0000-4000-8000-{i + 7:012X}"


def key(i: int) -> str:
    kind, value = node(i)
    return f"{kind}:{value}"


def edge_table(pairs: Sequence[tuple[int, int]]) -> pa.Table:
    a = [node(i) for i, _ in pairs]
    b = [node(j) for _, j in pairs]
    return pa.table(
        {
            "id_type_a": pa.array([k for k, _ in a], pa.string()),
            "id_a": pa.array([v for _, v in a], pa.string()),
            "id_type_b": pa.array([k for k, _ in b], pa.string()),
            "id_b": pa.array([v for _, v in b], pa.string()),
        }
    )


def reference_components(pairs: Iterable[tuple[int, int]]) -> set[frozenset[str]]:
    """Slow, obviously correct: breadth-first search over an adjacency dict."""
    adjacency: dict[str, set[str]] = {}
    for i, j in pairs:
        adjacency.setdefault(key(i), set()).add(key(j))
        adjacency.setdefault(key(j), set()).add(key(i))
    seen: set[str] = set()
    components: set[frozenset[str]] = set()
    for start in adjacency:
        if start in seen:
            continue
        seen.add(start)
        members = {start}
        queue = deque([start])
        while queue:
            for neighbour in adjacency[queue.popleft()]:
                if neighbour not in seen:
                    seen.add(neighbour)
                    members.add(neighbour)
                    queue.append(neighbour)
        components.add(frozenset(members))
    return components


def components_of(graph: IdGraph) -> dict[str, frozenset[str]]:
    rows = graph.nodes.to_pylist()
    groups: dict[str, set[str]] = {}
    for row in rows:
        groups.setdefault(row["one_id"], set()).add(f"{row['id_type']}:{row['id']}")
    return {one_id: frozenset(members) for one_id, members in groups.items()}


def expected_one_id(members: Iterable[str], salt: bytes = mapping.DEFAULT_ONEID_SALT) -> str:
    kind, ident = min(
        (kind.encode(), ident.encode()) for kind, _, ident in (m.partition(":") for m in members)
    )
    name = kind + b":" + ident
    return "oid_" + keyed_hash(salt, name, size=10, person=b"atoll-oneid-v1").hex()


graphs = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=0, max_size=60)


@SETTINGS
@given(pairs=graphs)
def test_components_equal_reference_bfs(pairs: list[tuple[int, int]]) -> None:
    graph = build_id_graph(edge_table(pairs), MappingConfig(max_component_size=10_000))
    found = components_of(graph)
    assert set(found.values()) == reference_components(pairs)
    for one_id, members in found.items():
        assert one_id == expected_one_id(members)
    sizes = {(row["one_id"], row["component_size"]) for row in graph.nodes.to_pylist()}
    assert sizes == {(one_id, len(members)) for one_id, members in found.items()}
    report = graph.report
    assert report.edges_in == report.edges_used == len(pairs)
    assert report.nodes == graph.nodes.num_rows == len({key(i) for p in pairs for i in p})
    assert report.components == len(found) == sum(report.size_histogram.values())
    assert report.splits == []


@SETTINGS
@given(
    pairs=graphs,
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_one_id_stable_under_shuffle_and_batching(
    pairs: list[tuple[int, int]], seed: int, cuts: list[int]
) -> None:
    table = edge_table(pairs)
    baseline = build_id_graph(table)
    order = np.random.default_rng(seed).permutation(len(pairs))
    shuffled = table.take(pa.array(order, type=pa.int64()))
    bounds = sorted({0, len(pairs), *(c for c in cuts if c < len(pairs))})
    batches = [
        batch
        for lo, hi in itertools.pairwise(bounds)
        for batch in shuffled.slice(lo, hi - lo).to_batches()
    ]
    streamed = build_id_graph(iter(batches))
    assert streamed.nodes.equals(baseline.nodes)
    assert streamed.report.to_dict() == baseline.report.to_dict()


@SETTINGS
@given(pairs=graphs, extra=graphs)
def test_unrelated_components_do_not_rename_others(
    pairs: list[tuple[int, int]], extra: list[tuple[int, int]]
) -> None:
    before = build_id_graph(edge_table(pairs))
    # Node indices >= 100 are disjoint from the first graph's (0..40).
    unrelated = [(i + 100, j + 100) for i, j in extra]
    after = build_id_graph(edge_table(pairs + unrelated))
    old = {(r["id_type"], r["id"]): r["one_id"] for r in before.nodes.to_pylist()}
    new = {(r["id_type"], r["id"]): r["one_id"] for r in after.nodes.to_pylist()}
    assert {k: new[k] for k in old} == old


@SETTINGS
@given(pairs=graphs, limit=st.integers(2, 6))
def test_split_pieces_within_limit_and_refine_true_components(
    pairs: list[tuple[int, int]], limit: int
) -> None:
    graph = build_id_graph(edge_table(pairs), MappingConfig(max_component_size=limit))
    found = components_of(graph)
    truth = reference_components(pairs)
    assert all(len(members) <= limit for members in found.values())
    # Every piece lies inside one true component; no node is lost or duplicated.
    owner = {member: comp for comp in truth for member in comp}
    for members in found.values():
        assert len({owner[m] for m in members}) == 1
    assert sorted(m for ms in found.values() for m in ms) == sorted(owner)
    oversized = [comp for comp in truth if len(comp) > limit]
    assert sorted(s.component_size for s in graph.report.splits) == sorted(
        len(c) for c in oversized
    )
    for split in graph.report.splits:
        assert split.hubs
        assert split.largest_piece <= limit
        assert all(degree >= 1 for _, degree in split.hubs)


def test_star_of_5000_spokes_is_split_at_its_hub() -> None:
    spokes = 5000
    table = pa.table(
        {
            "id_type_a": ["phone"] * spokes,
            "id_a": ["13800000000"] * spokes,
            "id_type_b": ["oaid"] * spokes,
            "id_b": [f"{i + 1:016x}" for i in range(spokes)],
        }
    )
    graph = build_id_graph(table, MappingConfig(max_component_size=1000))
    assert graph.report.splits == [
        SplitRecord(
            component_size=spokes + 1,
            hubs=[("phone:138****0000", spokes)],
            pieces=spokes + 1,
            largest_piece=1,
        )
    ]
    assert graph.report.components == spokes + 1
    assert graph.report.size_histogram["1"] == spokes + 1
    sizes = graph.nodes.column("component_size").to_pylist()
    assert set(sizes) == {1}
    hub = graph.lookup("phone", pa.array(["13800000000"]))[0].as_py()
    assert hub == expected_one_id(["phone:13800000000"])
    assert "13800000000" not in json.dumps(graph.report.to_dict())


def test_hub_cut_leaves_people_as_if_hub_were_absent() -> None:
    # 500 people (a phone, an OAID, an IDFA), every phone also seen with one
    # factory-default OAID: a 1501-node component glued by one hub.
    people = [(3 * p, 3 * p + 1) for p in range(500)] + [(3 * p, 3 * p + 2) for p in range(500)]
    hub = 3 * 10_000 + 1  # an OAID node outside the people's range
    glued = build_id_graph(edge_table(people + [(3 * p, hub) for p in range(500)]))
    clean = build_id_graph(edge_table(people))
    hub_value = node(hub)[1]
    assert glued.report.splits == [
        SplitRecord(
            component_size=1501,
            hubs=[(f"oaid:{hub_value[:3]}****{hub_value[-2:]}", 500)],
            pieces=501,
            largest_piece=3,
        )
    ]
    without_hub = glued.nodes.filter(pc.not_equal(glued.nodes["id"], hub_value))
    assert without_hub.equals(clean.nodes)
    assert glued.lookup("oaid", pa.array([hub_value])).to_pylist() == [expected_one_id([key(hub)])]


def test_chain_without_hubs_terminates_with_doubling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping, "_SINGLE_CUT_ROUNDS", 1)
    pairs = [(i, i + 1) for i in range(299)]
    graph = build_id_graph(edge_table(pairs), MappingConfig(max_component_size=10))
    found = components_of(graph)
    assert all(len(members) <= 10 for members in found.values())
    assert sum(len(members) for members in found.values()) == 300
    (split,) = graph.report.splits
    assert split.component_size == 300
    assert split.pieces == len(found)


def test_invalid_endpoints_are_counted_with_rows() -> None:
    first = pa.table(
        {
            "id_type_a": ["phone", "phone", "fax", None],
            "id_a": ["13800138000", "12345", "13800138001", "13800138002"],
            "id_type_b": ["oaid", "oaid", "oaid", "oaid"],
            "id_b": ["00000000000000a1", "00000000000000a2", "00000000000000a3", None],
        }
    )
    second = pa.table(
        {
            "id_type_a": ["PHONE", "phone"],
            "id_a": ["+86 139-0000-0000", "13900000001"],
            "id_type_b": ["idfa", "oaid"],
            "id_b": ["00000000-0000-0000-0000-000000000000", "00000000000000a1"],
        }
    )
    graph = build_id_graph([*first.to_batches(), *second.to_batches()], source="edges.csv")
    report = graph.report
    assert report.edges_in == 6
    assert report.edges_used == 2  # rows 1 and 6
    invalid = report.invalid
    assert invalid.total == 12
    assert invalid.by_reason == {
        "bad_length": 1,
        "idfa_zero": 1,
        "empty": 1,
        "unknown_id_type": 2,
    }
    rows = {(s.row, s.reason) for s in invalid.samples}
    assert rows == {
        (2, "bad_length"),
        (3, "unknown_id_type"),
        (4, "unknown_id_type"),
        (4, "empty"),
        (5, "idfa_zero"),
    }
    assert [s.row for s in invalid.samples] == sorted(s.row for s in invalid.samples)
    assert {s.value for s in invalid.samples if s.reason == "unknown_id_type"} == {
        "fax",
        "<null>",
    }
    text = json.dumps(report.to_dict())
    assert "13800138000" not in text
    assert "12345" not in text
    keys = {(r["id_type"], r["id"]) for r in graph.nodes.to_pylist()}
    assert keys == {
        ("phone", "13800138000"),
        ("phone", "13900000001"),
        ("oaid", "00000000000000a1"),
    }
    assert report.components == 1


def test_same_string_of_two_kinds_is_two_nodes() -> None:
    table = pa.table(
        {
            "id_type_a": ["oaid", "member_id"],
            "id_a": ["00000000000000a1", "00000000000000a1"],
            "id_type_b": ["phone", "phone"],
            "id_b": ["13800138000", "13900139000"],
        }
    )
    graph = build_id_graph(table)
    assert graph.report.nodes == 4
    assert graph.report.components == 2


def test_typed_columns_phone_integers_dictionary_and_large_strings() -> None:
    table = pa.table(
        {
            "id_type_a": pa.array(["phone", "phone"]).dictionary_encode(),
            "id_a": pa.array([13800138000, 13900139000], pa.int64()),
            "id_type_b": pa.array(["oaid", "oaid"], pa.large_string()),
            "id_b": pa.array(["00000000000000a1", "00000000000000a1"], pa.large_string()),
            "source": ["crm", "crm"],
        }
    )
    graph = build_id_graph(table)
    assert graph.report.components == 1
    assert graph.nodes.schema == pa.schema(
        [
            ("id_type", pa.string()),
            ("id", pa.string()),
            ("one_id", pa.string()),
            ("component_size", pa.int32()),
        ]
    )


def test_all_null_columns_are_counted_not_refused() -> None:
    table = pa.table(
        {
            "id_type_a": pa.array(["phone", "phone"]),
            "id_a": pa.array(["13800138000", "13900139000"]),
            "id_type_b": pa.array([None, None], pa.null()),
            "id_b": pa.array([None, None], pa.null()),
        }
    )
    graph = build_id_graph(table, source="sparse.csv")
    assert graph.report.edges_used == 0
    assert graph.report.invalid.by_reason == {"unknown_id_type": 2}
    assert graph.nodes.num_rows == 0


def test_missing_columns_raise_schema_error_naming_source_and_columns() -> None:
    table = pa.table({"id_type_a": ["phone"], "id_a": ["13800138000"], "id_b": ["x"]})
    with pytest.raises(SchemaError) as info:
        build_id_graph(table, source="edges.parquet")
    assert info.value.source == "edges.parquet"
    assert str(info.value).startswith(
        "edges.parquet: edge table lacks required column(s) id_type_b ("
    )


def test_missing_column_in_later_batch_is_caught() -> None:
    good = edge_table([(0, 1)]).to_batches()[0]
    bad = good.drop_columns(["id_b"])
    with pytest.raises(SchemaError, match="id_b"):
        build_id_graph([good, bad], source="stream")


@pytest.mark.parametrize(
    ("column", "values"),
    [("id_a", pa.array([1.5])), ("id_type_a", pa.array([1], pa.int64()))],
)
def test_wrong_column_type_raises_schema_error(column: str, values: pa.Array) -> None:
    table = edge_table([(0, 1)])
    table = table.set_column(table.schema.get_field_index(column), column, values)
    with pytest.raises(SchemaError) as info:
        build_id_graph(table, source="edges.csv")
    assert info.value.column == column


def test_integer_device_ids_are_refused_by_the_normalizer() -> None:
    table = pa.table(
        {
            "id_type_a": ["imei"],
            "id_a": pa.array([86012345678901], pa.int64()),
            "id_type_b": ["phone"],
            "id_b": ["13800138000"],
        }
    )
    with pytest.raises(SchemaError) as info:
        build_id_graph(table, source="edges.csv")
    assert info.value.column == "id_a"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_component_size": 1},
        {"max_component_size": True},
        {"max_component_size": "1000"},
        {"salt": b""},
        {"salt": b"x" * 65},
        {"salt": "text"},
    ],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MappingConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_edges_argument_raises_config_error() -> None:
    with pytest.raises(ConfigError):
        build_id_graph("edges.csv")
    with pytest.raises(ConfigError):
        build_id_graph([{"id_a": 1}])


def test_salt_changes_every_name() -> None:
    table = edge_table([(0, 1), (2, 3)])
    one = components_of(build_id_graph(table))
    two = components_of(build_id_graph(table, MappingConfig(salt=b"another salt")))
    assert set(one.values()) == set(two.values())
    assert not set(one) & set(two)
    for one_id, members in two.items():
        assert one_id == expected_one_id(members, b"another salt")


def test_lookup() -> None:
    graph = build_id_graph(edge_table([(0, 1), (3, 4), (6, 6)]))
    phone0, phone3, phone6 = node(0)[1], node(3)[1], node(6)[1]
    found = graph.lookup("PHONE", pa.chunked_array([[phone0, "13999999999"], [None, phone3]]))
    assert found.to_pylist() == [
        expected_one_id([key(0), key(1)]),
        None,
        None,
        expected_one_id([key(3), key(4)]),
    ]
    assert graph.lookup("phone", pa.array([phone6])).to_pylist() == [expected_one_id([key(6)])]
    # An OAID string asked for as a phone is not found.
    assert graph.lookup("phone", pa.array([node(1)[1]])).to_pylist() == [None]
    with pytest.raises(ConfigError):
        graph.lookup("fax", pa.array([phone0]))
    with pytest.raises(SchemaError):
        graph.lookup("phone", pa.array([13800000000]))


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=25),
    asked=st.lists(st.integers(0, 40), max_size=30),
)
def test_components_number_the_one_ids(pairs: list[tuple[int, int]], asked: list[int]) -> None:
    """Component numbers are the integer form of lookup: same number iff same one_id."""
    graph = build_id_graph(edge_table(pairs))
    assert graph.n_components == len(set(graph.nodes["one_id"].to_pylist()))
    for kind in KINDS:
        assert graph.count(kind) == graph.nodes["id_type"].to_pylist().count(kind)
        values = pa.array([node(i)[1] for i in asked if node(i)[0] == kind] + [None], pa.string())
        numbers = graph.components(kind, values)
        one_ids = graph.lookup(kind, values).to_pylist()
        assert numbers.dtype == np.int64
        assert all((n == -1) == (o is None) for n, o in zip(numbers, one_ids, strict=True))
        assert all(0 <= n < graph.n_components for n in numbers if n >= 0)
        for (n1, o1), (n2, o2) in itertools.combinations(zip(numbers, one_ids, strict=True), 2):
            if o1 is not None and o2 is not None:
                assert (n1 == n2) == (o1 == o2)
    # Across kinds too: every node's number is its component's.
    by_one_id: dict[str, set[int]] = {}
    for kind, value, one_id in zip(
        *(graph.nodes[c].to_pylist() for c in ("id_type", "id", "one_id")), strict=True
    ):
        (number,) = graph.components(kind, pa.array([value]))
        by_one_id.setdefault(one_id, set()).add(int(number))
    assert all(len(numbers) == 1 for numbers in by_one_id.values())
    assert len({n for numbers in by_one_id.values() for n in numbers}) == len(by_one_id)
    # members: every id of a kind once, with the number components gives it.
    for kind in KINDS:
        ids, numbers = graph.members(kind)
        listed = ids.to_pylist()
        assert sorted(listed) == sorted(
            v
            for k, v in zip(*(graph.nodes[c].to_pylist() for c in ("id_type", "id")), strict=True)
            if k == kind
        )
        assert len(set(listed)) == len(listed)
        assert numbers.tolist() == graph.components(kind, ids).tolist()


def test_components_checks_its_input() -> None:
    graph = build_id_graph(edge_table([(0, 1)]))
    assert graph.components("idfa", pa.array(["x"])).tolist() == [-1]  # a kind with no node
    empty_ids, empty_numbers = graph.members("idfa")
    assert len(empty_ids) == 0
    assert empty_numbers.size == 0
    with pytest.raises(ConfigError):
        graph.components("fax", pa.array(["x"]))
    with pytest.raises(SchemaError):
        graph.components("phone", pa.array([13800000000]))


def test_empty_inputs() -> None:
    empty = edge_table([])
    for edges in (empty, iter(())):
        graph = build_id_graph(edges)
        assert graph.nodes.num_rows == 0
        assert graph.nodes.column_names == ["id_type", "id", "one_id", "component_size"]
        assert graph.report.to_dict()["components"] == 0
        assert graph.lookup("phone", pa.array(["13800138000"])).to_pylist() == [None]


def test_incremental_dictionary_merges_and_wide_offsets_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    pairs = [(int(i), int(j)) for i, j in rng.integers(0, 400, size=(600, 2))]
    table = edge_table(pairs)
    baseline = build_id_graph(table)
    monkeypatch.setattr(mapping, "_COMPACT_BYTES", 1)
    merged = build_id_graph(table.to_batches(max_chunksize=37))
    monkeypatch.setattr(mapping, "_STRING_MAX", 0)
    wide = build_id_graph(table.to_batches(max_chunksize=101))
    assert merged.nodes.equals(baseline.nodes)
    assert wide.nodes.equals(baseline.nodes)
    assert set(components_of(baseline).values()) == reference_components(pairs)


def test_name_collisions_are_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping, "_ONEID_BYTES", 1)  # 8-bit names: 300 components must collide
    with pytest.raises(IdentityGraphError, match="collision"):
        build_id_graph(edge_table([(i, i) for i in range(300)]))


def test_report_is_json_ready() -> None:
    graph = build_id_graph(edge_table([(0, 1), (1, 2), (4, 4)]))
    data = json.loads(json.dumps(graph.report.to_dict()))
    assert data["size_histogram"] == {"1": 1, "2": 0, "3-5": 1, "6-10": 0, "11-100": 0, "101+": 0}
    assert data["edges_used"] == 3
    assert required_edge_columns() == ("id_type_a", "id_a", "id_type_b", "id_b")


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.text(max_size=6), max_size=40),
    start=st.integers(0, 5),
    large=st.booleans(),
    shards=st.sampled_from([1, 2, 3, 4, 8, 64]),
)
def test_tail_partition_depends_on_the_string_alone(
    ids: list[str], start: int, large: bool, shards: int
) -> None:
    """Equal strings share a partition whatever the array (offsets, slicing, string width)."""
    values = pa.array(["pad", *ids, *reversed(ids)], pa.large_string() if large else pa.string())
    sliced = values.slice(min(start, len(values)))
    got = tail_partition(sliced, shards).tolist()
    assert all(0 <= k < shards for k in got)
    alone = [int(tail_partition(pa.array([v]), shards)[0]) for v in sliced.to_pylist()]
    assert got == alone
    if "" in sliced.to_pylist():
        assert alone[sliced.to_pylist().index("")] == 0


def test_tail_partition_known_values() -> None:
    """(last byte * 131 + the byte before) mod parts; one byte counts twice; empty is 0."""
    keys = pa.array(["ab", "x", "", "é"])  # "é" is the bytes C3 A9
    assert tail_partition(keys, 1000).tolist() == [
        (98 * 131 + 97) % 1000,
        (120 * 131 + 120) % 1000,
        0,
        (0xA9 * 131 + 0xC3) % 1000,
    ]
    assert tail_partition(keys, 16).tolist() == [
        (98 * 131 + 97) % 16,
        (120 * 131 + 120) % 16,
        0,
        (0xA9 * 131 + 0xC3) % 16,
    ]
    with pytest.raises(ValueError, match="parts"):
        tail_partition(keys, 0)


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.text(max_size=4), max_size=50),
    parts=st.sampled_from([1, 3, 16, 300]),
    chunked=st.booleans(),
)
def test_group_by_tail_groups_stably(ids: list[str], parts: int, chunked: bool) -> None:
    """Partition k's keys, in input order, at ``order``'s positions of the input."""
    keys = pa.array(ids, pa.string())
    source = pa.chunked_array([keys.slice(0, len(ids) // 2), keys.slice(len(ids) // 2)])
    grouped, order, bounds = group_by_tail(source if chunked else keys, parts)
    assert grouped.to_pylist() == [ids[i] for i in order.tolist()]
    partition = tail_partition(keys, parts).tolist()
    assert len(bounds) == parts + 1
    assert bounds[-1] == len(ids)
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist())):
        where = order[lo:hi].tolist()
        assert where == sorted(where)
        assert all(partition[i] == k for i in where)
