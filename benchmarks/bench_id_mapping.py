"""Benchmark: build the OneID graph from N identifier edges (default 10M).

Why: ID-mapping runs over a data provider's whole edge table before any match
or measurement; it must stay linear and fit in a few GiB at 10M edges. The run
generates edges of a realistic shape, streams them into
``atoll.ids.mapping.build_id_graph`` in record batches, and prints seconds,
edges/s and peak RSS, side by side (same run, same edges) with a named
baseline: ``networkx.connected_components`` on the same graph, which is what
a first version would write. networkx only gets the graph core (no
normalization, no hub guard, no names), so the comparison favours it; it runs
on at most ``--baseline-max`` edges (default 1M) because it is slow and
memory-hungry, and Atoll is timed again on that same prefix.

Shape of the generated edges: people with one phone and 1-5 devices (OAID,
IMEI with a valid Luhn digit, IDFA), so components of 2-6 nodes; 2% of
devices also seen with a second person's phone (family sharing, components
up to ~12); 0.2% malformed phones; 10% of phones written ``+86 ...``; 3%
duplicate edges (the same link from two sources); and a few hub phones (test
phones, one per 500k edges) each seen with 2000 random devices, which glue
thousands of people together and must be cut by the giant-component guard.

    .venv/bin/python benchmarks/bench_id_mapping.py                  # 10M edges
    .venv/bin/python benchmarks/bench_id_mapping.py --edges 1000000
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import networkx as nx
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from atoll.ids.mapping import MappingConfig, MappingReport, build_id_graph

KIND_NAMES = ["phone", "oaid", "imei", "idfa"]
PHONE, OAID, IMEI, IDFA = range(4)
DEVICES_PER_PERSON = np.array([1, 2, 3, 4, 5])
DEVICE_WEIGHTS = np.array([0.35, 0.30, 0.20, 0.10, 0.05])
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
GIB = 1 << 30


# ------------------------------------------------------------------ generation


def fixed_width(chars: np.ndarray) -> pa.Array:
    """A string array from an ``(n, width)`` uint8 matrix of ASCII bytes."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(
        pa.large_string(),
        n,
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars).tobytes())],
    ).cast(pa.string())


def digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative ints, as an ``(n, width)`` int matrix."""
    out = np.empty((values.size, width), dtype=np.int64)
    rest = values.astype(np.int64)
    for column in range(width - 1, -1, -1):  # loop over digit positions, not rows
        out[:, column] = rest % 10
        rest //= 10
    return out


def luhn(body: np.ndarray) -> np.ndarray:
    """Luhn check digit of each row of a digit matrix (rightmost body digit doubled)."""
    doubled = body[:, ::-1][:, 0::2] * 2
    doubled -= 9 * (doubled > 9)
    total = doubled.sum(axis=1) + body[:, ::-1][:, 1::2].sum(axis=1)
    return np.asarray((10 - total % 10) % 10)


def phones(person: np.ndarray) -> pa.Array:
    """Valid mainland mobile numbers 13x..19x, one per person id."""
    second = 3 + person % 7
    rest = (person * 2_654_435_761) % 1_000_000_000  # a bijection-ish spread of ids
    digits = np.concatenate(
        [np.ones((person.size, 1), np.int64), second[:, None], digit_matrix(rest, 9)], axis=1
    )
    return fixed_width((digits + ord("0")).astype(np.uint8))


def hex_chars(rng: np.random.Generator, n: int, nbytes: int, table: np.ndarray) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    out = np.empty((n, 2 * nbytes), dtype=np.uint8)
    out[:, 0::2] = table[raw >> 4]
    out[:, 1::2] = table[raw & 0x0F]
    return out


def uuids(rng: np.random.Generator, n: int, table: np.ndarray) -> pa.Array:
    body = hex_chars(rng, n, 16, table)
    dash = np.full((n, 1), ord("-"), dtype=np.uint8)
    parts = [body[:, :8], dash, body[:, 8:12], dash, body[:, 12:16], dash]
    parts += [body[:, 16:20], dash, body[:, 20:]]
    return fixed_width(np.concatenate(parts, axis=1))


def imeis(rng: np.random.Generator, n: int) -> pa.Array:
    body = np.concatenate(
        [np.tile([8, 6], (n, 1)), rng.integers(0, 10, size=(n, 12))], axis=1
    ).astype(np.int64)
    full = np.concatenate([body, luhn(body)[:, None]], axis=1)
    return fixed_width((full + ord("0")).astype(np.uint8))


def devices(rng: np.random.Generator, kinds: np.ndarray) -> pa.Array:
    """One fresh device ID per row, of the row's kind (OAID, IMEI or IDFA)."""
    parts, rows = [], []
    for kind in (OAID, IMEI, IDFA):  # loop over three kinds, not rows
        index = np.flatnonzero(kinds == kind)
        n = index.size
        if kind == OAID:
            parts.append(uuids(rng, n, HEX))
        elif kind == IMEI:
            parts.append(imeis(rng, n))
        else:
            parts.append(uuids(rng, n, HEX_UPPER))
        rows.append(index)
    position = np.empty(kinds.size, dtype=np.int64)
    position[np.concatenate(rows)] = np.arange(kinds.size)
    return pa.concat_arrays(parts).take(pa.array(position))


def id_types(codes: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int8)), pa.array(KIND_NAMES, pa.string())
    )


def generate(edges: int, seed: int) -> pa.Table:
    """``edges`` rows of ``id_type_a, id_a, id_type_b, id_b`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    hubs = max(1, edges // 500_000)
    hub_edges = min(hubs * 2000, edges // 10)
    family = edges // 50
    dup = edges * 3 // 100
    base = edges - hub_edges - family - dup

    # People: one phone, 1-5 devices each; one edge per device.
    mean = float((DEVICES_PER_PERSON * DEVICE_WEIGHTS).sum())
    people = int(base / mean * 1.05) + 100  # a few spare people; the surplus is cut
    per_person = rng.choice(DEVICES_PER_PERSON, size=people, p=DEVICE_WEIGHTS)
    owner = np.repeat(np.arange(people, dtype=np.int64), per_person)[:base]
    kind = rng.choice([OAID, IMEI, IDFA], size=base, p=[0.5, 0.3, 0.2])
    device = devices(rng, kind)
    phone = phones(owner)
    noisy = pa.array(rng.random(base) < 0.10)
    phone = pc.if_else(noisy, pc.binary_join_element_wise("+86 ", phone, ""), phone)
    broken = pa.array(rng.random(base) < 0.002)
    phone = pc.if_else(broken, pc.utf8_slice_codeunits(phone, 0, 7), phone)

    # Family sharing: a device also seen with another person's phone.
    shared = rng.integers(0, base, size=family)
    other = rng.integers(0, people, size=family)
    # Hubs: test phones seen with thousands of random devices.
    hub_device = rng.integers(0, base, size=hub_edges)
    hub_phone = 19_900_000_000 + rng.integers(0, hubs, size=hub_edges)
    # Duplicates of ordinary edges.
    again = rng.integers(0, base, size=dup)

    id_a = pa.concat_arrays(
        [
            phone,
            phones(other),
            pc.cast(pa.array(hub_phone), pa.string()),
            phone.take(pa.array(again)),
        ]
    )
    id_b = pa.concat_arrays(
        [
            device,
            device.take(pa.array(shared)),
            device.take(pa.array(hub_device)),
            device.take(pa.array(again)),
        ]
    )
    kind_b = np.concatenate([kind, kind[shared], kind[hub_device], kind[again]])
    order = pa.array(rng.permutation(edges))
    table = pa.table(
        {
            "id_type_a": id_types(np.full(edges, PHONE)),
            "id_a": id_a,
            "id_type_b": id_types(kind_b),
            "id_b": id_b,
        }
    )
    return table.take(order)


# ---------------------------------------------------------------- measurement


@dataclass
class Result:
    name: str
    edges: int
    nodes: int
    components: int
    seconds: float
    peak_rss: int
    note: str = ""


@contextmanager
def peak_rss() -> Iterator[Callable[[], int]]:
    """Track this process's peak RSS while the block runs (psutil, sampled every 10 ms)."""
    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0]
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)


def run_atoll(
    name: str, table: pa.Table, config: MappingConfig, batch_rows: int
) -> tuple[Result, MappingReport]:
    """Atoll, streaming ``batch_rows``-row record batches; the graph is dropped after timing."""
    with peak_rss() as peak:
        start = time.perf_counter()
        graph = build_id_graph(iter(table.to_batches(max_chunksize=batch_rows)), config)
        seconds = time.perf_counter() - start
    report = graph.report
    del graph
    return Result(name, table.num_rows, report.nodes, report.components, seconds, peak()), report


def run_networkx(table: pa.Table) -> Result:
    """Baseline: raw "type:value" strings into networkx, then connected_components."""
    with peak_rss() as peak:
        start = time.perf_counter()
        a = pc.binary_join_element_wise(
            pc.cast(table["id_type_a"], pa.string()), table["id_a"], ":"
        ).to_pylist()
        b = pc.binary_join_element_wise(
            pc.cast(table["id_type_b"], pa.string()), table["id_b"], ":"
        ).to_pylist()
        graph = nx.Graph()
        graph.add_edges_from(zip(a, b, strict=True))
        components = sum(1 for _ in nx.connected_components(graph))
        seconds = time.perf_counter() - start
        nodes = graph.number_of_nodes()
        del graph, a, b
    return Result(
        "networkx.connected_components",
        table.num_rows,
        nodes,
        components,
        seconds,
        peak(),
        "graph only: no normalization, no hub guard, no names",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=10_000_000)
    parser.add_argument("--baseline-max", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--max-component-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    console = Console(width=150)
    config = MappingConfig(max_component_size=args.max_component_size)

    start = time.perf_counter()
    table = generate(args.edges, args.seed)
    console.print(
        f"generated {table.num_rows:,} edges in {time.perf_counter() - start:.1f} s "
        f"({table.nbytes / GIB:.2f} GiB in memory); RSS now "
        f"{psutil.Process().memory_info().rss / GIB:.2f} GiB"
    )

    results: list[Result] = []
    main_result, report = run_atoll("atoll build_id_graph", table, config, args.batch_rows)
    results.append(main_result)
    prefix = table.slice(0, min(args.baseline_max, table.num_rows))
    if prefix.num_rows < table.num_rows:
        results.append(run_atoll("atoll build_id_graph", prefix, config, args.batch_rows)[0])
    results.append(run_networkx(prefix))

    out = Table(title=f"ID-mapping: {args.edges:,} edges (baseline on {prefix.num_rows:,})")
    for column in ("implementation", "edges", "nodes", "components", "seconds", "edges/s"):
        out.add_column(column, justify="left" if column == "implementation" else "right")
    out.add_column("peak RSS", justify="right")
    out.add_column("note")
    for r in results:
        out.add_row(
            r.name,
            f"{r.edges:,}",
            f"{r.nodes:,}",
            f"{r.components:,}",
            f"{r.seconds:.2f}",
            f"{r.edges / r.seconds:,.0f}",
            f"{r.peak_rss / GIB:.2f} GiB",
            r.note,
        )
    console.print(out)

    largest = max((s.component_size for s in report.splits), default=0)
    console.print(
        f"atoll at {report.edges_in:,} edges: {report.edges_used:,} used, "
        f"{report.invalid.invalid:,} invalid endpoints {dict(report.invalid.by_reason)}, "
        f"{len(report.splits)} oversized component(s) split (largest {largest:,} nodes, "
        f"{sum(len(s.hubs) for s in report.splits)} hubs cut); sizes {report.size_histogram}"
    )
    console.print(
        f"process peak RSS (ru_maxrss): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB:.2f} GiB"
    )


if __name__ == "__main__":
    main()
