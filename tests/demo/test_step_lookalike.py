"""Demo step 9 (TA scoring) on the 2,000-device world: artefacts, invariants, printed numbers.

The lift and feedback numbers are printed (``pytest -s``). At 2,000 devices
only ~40 seeds exist (8 hidden) and group 1 holds 19 devices, so hidden-seed
lifts and the group-1 comparison swing from world seed to world seed (checked
over seeds 1-7: lift@5 % from 1.8 to 7.5; the retrained group 1 was better in
6 of 7 worlds). What is asserted here holds in every one of those worlds;
the done-means thresholds (lift@5 % >= 3, GBM beats logistic, the loop
improves group 1) are asserted on the 50,000-device world in
``tests/models/test_world.py`` and ``tests/models/test_loop.py``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from atoll.demo import DemoContext
from atoll.demo.step_lookalike import GROUP_BOUNDS, MIN_CELL, run
from atoll.ids.normalize import normalize_array
from atoll.models.registry import lineage, load_model_dir

#: Package file → (universe column, identifier type, hash function of the canonical form).
PACKAGE_FILES = {
    "imei_md5": ("imei", "imei", lambda v: hashlib.md5(v.lower().encode()).hexdigest()),
    "oaid_md5": ("oaid", "oaid", lambda v: hashlib.md5(v.lower().encode()).hexdigest()),
    "idfa_md5": ("idfa", "idfa", lambda v: hashlib.md5(v.upper().encode()).hexdigest()),
    "phone_md5": ("phone", "phone", lambda v: hashlib.md5(v.encode()).hexdigest()),
    "phone_sha256": ("phone", "phone", lambda v: hashlib.sha256(v.encode()).hexdigest()),
}


@pytest.fixture(scope="module")
def step(
    demo_ctx: DemoContext, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DemoContext, dict[str, dict[str, Any]]]:
    """Run the step once for the module (a private context, its own output folder)."""
    import dataclasses

    out = tmp_path_factory.mktemp("lookalike")
    ctx = dataclasses.replace(
        demo_ctx,
        config=dataclasses.replace(demo_ctx.config, out=out),
        artifacts=dict(demo_ctx.artifacts),
        timings={},
    )
    sections = run(ctx)
    for title, rows in sections.items():
        print(f"\n## {title}")
        for k, v in rows.items():
            print(f"  {k}: {v}")
    return ctx, sections


def _plain_seed_devices(ctx: DemoContext) -> set[str]:
    """Universe devices whose phone is a member buyer's phone (the plain join the PSIs replace)."""
    members, orders = ctx.tables["brand/members"], ctx.tables["brand/orders"]
    universe = ctx.tables["provider/universe"]
    order_members = set(orders["member_id"].drop_null().to_pylist())
    order_phones = set(orders["phone"].drop_null().to_pylist())
    known = set(universe["phone"].drop_null().to_pylist())
    phones = {
        r["phone"]
        for r in members.select(["member_id", "phone"]).to_pylist()
        if r["phone"] in known and (r["member_id"] in order_members or r["phone"] in order_phones)
    }
    return {
        r["device_id"]
        for r in universe.select(["device_id", "phone"]).to_pylist()
        if r["phone"] in phones
    }


def test_artefacts_are_written(step: tuple[DemoContext, dict[str, dict[str, Any]]]) -> None:
    ctx, sections = step
    folder = ctx.out / "lookalike"
    for rel in (
        "seeds.parquet",
        "provider_features.parquet",
        "metrics.json",
        "report.html",
        "models/v1/model.json",
        "models/v1/manifest.json",
        "models/v1/metrics.json",
        "models/v1/report.html",
        "models/v1/exclusions.parquet",
        "models/v2/model.json",
        "models/v2/outcomes.parquet",
        "models/v2/report.html",
        "scoring/scores.parquet",
        "scoring/packages/manifest.json",
        "scoring/packages/group_1/persona.parquet",
        "scoring/packages/group_1/persona.html",
        "delivery/results_period_1.csv",
    ):
        assert (folder / rel).is_file(), rel
    assert list(sections) == [
        "9 · TA scoring: lift table (hidden seeds)",
        "9 · TA scoring: groups and packages",
        "9 · TA scoring: closed loop",
    ]
    lift = sections["9 · TA scoring: lift table (hidden seeds)"]
    for k in (1, 5, 10, 20):
        assert f"top {k}% bagging" in lift
        assert f"top {k}% logistic" in lift
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert "Hidden-seed evaluation" in report
    assert "Closed loop" in report
    # The model registry: v2's parent is v1, by SHA-256.
    v1, v2 = load_model_dir(folder / "models/v1"), load_model_dir(folder / "models/v2")
    assert v2.version == 2
    assert v2.manifest["parent"]["model_sha256"] == v1.manifest["model_sha256"]
    assert [e["version"] for e in lineage(folder / "models/v2")] == [2, 1]
    assert "results_period_1" in v2.manifest["training_data"]


def test_seeds_come_from_the_psi_and_equal_the_plain_join(
    step: tuple[DemoContext, dict[str, dict[str, Any]]],
) -> None:
    ctx, _ = step
    folder = ctx.out / "lookalike"
    seeds = set(pq.read_table(folder / "seeds.parquet")["device_id"].to_pylist())
    assert seeds == _plain_seed_devices(ctx)
    assert len(seeds) >= 10
    v1 = load_model_dir(folder / "models/v1")
    assert v1.manifest["seeds_matched"] == len(seeds)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["seeds"]["seed devices (provider, PSI)"] == len(seeds)
    assert metrics["seeds"]["hidden seeds"] == round(0.2 * len(seeds))


def test_groups_are_the_quantiles_and_exclusions_hold(
    step: tuple[DemoContext, dict[str, dict[str, Any]]],
) -> None:
    ctx, _ = step
    folder = ctx.out / "lookalike"
    scores = pq.read_table(folder / "scoring/scores.parquet")
    universe = ctx.tables["provider/universe"]
    assert scores.num_rows == universe.num_rows
    assert set(scores["device_id"].to_pylist()) == set(universe["device_id"].to_pylist())
    seeds = set(pq.read_table(folder / "seeds.parquet")["device_id"].to_pylist())
    events = ctx.tables["provider/exposures"]
    clickers = set(
        events.filter(pc.equal(events["event_type"], "click"))["device_id"].to_pylist()
    ) & set(universe["device_id"].to_pylist())
    rows = scores.to_pylist()
    excluded = {r["device_id"] for r in rows if r["excluded"] is not None}
    assert excluded == seeds | clickers
    assert all(r["excluded"] == "seed" for r in rows if r["device_id"] in seeds)
    packaged = {r["device_id"] for r in rows if r["group"] > 0}
    assert not packaged & excluded
    # Group sizes: the top shares of the eligible devices (rows tied with a cut join the group).
    eligible = np.array([r["score"] for r in rows if r["excluded"] is None])
    ranked = np.sort(eligible)[::-1]
    group = np.array([r["group"] for r in rows])
    cumulative = 0
    for g, bound in enumerate(GROUP_BOUNDS, start=1):
        cumulative += int((group == g).sum())
        top = math.ceil(bound * eligible.size)
        ties_below = int((ranked[top:] == ranked[top - 1]).sum())
        assert cumulative == top + ties_below, (g, cumulative, top)
    manifest = json.loads((folder / "scoring/packages/manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert [m["devices"] for m in manifest["groups"]] == [
        int((group == g).sum()) for g in (1, 2, 3)
    ]


def test_packages_hash_the_group_devices_with_the_documented_conventions(
    step: tuple[DemoContext, dict[str, dict[str, Any]]],
) -> None:
    ctx, _ = step
    folder = ctx.out / "lookalike"
    scores = pq.read_table(folder / "scoring/scores.parquet", columns=["device_id", "group"])
    universe = pq.read_table(folder / "provider_features.parquet")
    idx = pc.index_in(universe["device_id"], value_set=scores["device_id"].combine_chunks())
    group = np.asarray(scores["group"].combine_chunks().take(idx).to_numpy(), dtype=np.int8)
    seed_phones = set(pq.read_table(folder / "seeds.parquet")["phone"].to_pylist())
    seed_phone_hashes = {hashlib.md5(p.encode()).hexdigest() for p in seed_phones}
    for g in (1, 2, 3):
        rows = universe.filter(pa.array(group == g))
        for name, (column, kind, digest) in PACKAGE_FILES.items():
            norm = normalize_array(rows[column], kind).values.drop_null().to_pylist()
            expected = sorted({digest(v) for v in norm})
            path = folder / f"scoring/packages/group_{g}/{name}.txt"
            got = path.read_text(encoding="ascii").split()
            assert got == expected, (g, name)
            if name == "phone_md5":
                assert not set(got) & seed_phone_hashes


def test_group_persona_is_guarded(step: tuple[DemoContext, dict[str, dict[str, Any]]]) -> None:
    ctx, sections = step
    cells = pq.read_table(ctx.out / "lookalike/scoring/packages/group_1/persona.parquet")
    released = pc.drop_null(cells["target_count"]).to_pylist()
    assert all(c >= MIN_CELL for c in released)
    metrics = json.loads((ctx.out / "lookalike/metrics.json").read_text(encoding="utf-8"))
    persona = metrics["group_1_persona"]
    assert persona["guard_k"] == MIN_CELL
    if metrics["groups"][0]["devices"] < MIN_CELL:  # 2,000 devices: group 1 has 19, all withheld
        assert released == []
        assert persona["suppressed_cells"] >= cells.num_rows > 0
        assert persona["devices"] is None  # even the group's size is withheld by the guard
        assert (
            "all cells withheld"
            in sections["9 · TA scoring: groups and packages"]["group 1 persona (guarded, k=50)"]
        )


def test_scores_grade_above_the_base_rate(
    step: tuple[DemoContext, dict[str, dict[str, Any]]],
) -> None:
    ctx, _ = step
    metrics = json.loads((ctx.out / "lookalike/metrics.json").read_text(encoding="utf-8"))
    groups = metrics["groups"]
    buyers = sum(g["planted_buyer_rate"] * g["devices"] for g in groups)
    devices = sum(g["devices"] for g in groups)
    base = metrics["eligible_planted_buyer_rate"]
    print(f"\ngroups 1-3 planted-buyer rate {buyers / devices:.4f} vs eligible base {base:.4f}")
    assert buyers / devices > 1.3 * base
    bagging = metrics["evaluation"]["bagging"]["at_k"]
    for row in bagging:
        assert row["lift"] == pytest.approx(row["recall"] / (row["k"] / 100))
    assert next(r for r in bagging if r["k"] == 20)["lift"] > 1.0


def test_closed_loop(step: tuple[DemoContext, dict[str, dict[str, Any]]]) -> None:
    ctx, sections = step
    folder = ctx.out / "lookalike"
    scores = pq.read_table(folder / "scoring/scores.parquet")
    packaged = {r["device_id"] for r in scores.to_pylist() if r["group"] > 0}
    with (folder / "delivery/results_period_1.csv").open(encoding="utf-8") as fh:
        results = list(csv.DictReader(fh))
    delivered = {r["device_id"] for r in results}
    assert delivered == packaged  # groups 1-3 were delivered
    bought = {r["device_id"] for r in results if r["purchased"] == "true"}
    assert all(r["exposed"] == "true" for r in results if r["device_id"] in bought)
    seeds = set(pq.read_table(folder / "seeds.parquet")["device_id"].to_pylist())
    v2 = load_model_dir(folder / "models/v2")
    v2_seeds = v2.exclusions.filter(pc.equal(v2.exclusions["reason"], "seed"))["device_id"]
    assert set(pc.drop_null(v2_seeds).to_pylist()) == seeds | bought
    assert v2.outcomes is not None
    assert v2.outcomes.num_rows == len(results)
    fb = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["feedback"]
    exp = fb["expected"]
    print(
        f"\nclosed loop: group 1 next-period true buyer rate {exp['previous']['rate']:.4f} → "
        f"{exp['new']['rate']:.4f} (base {exp['base_rate']:.4f}); realised "
        f"{fb['realised']['previous']['rate']:.4f} → {fb['realised']['new']['rate']:.4f}"
    )
    assert exp["previous"]["devices"] == exp["new"]["devices"] == math.ceil(0.01 * exp["eligible"])
    # Both models' group 1 is far above the base rate (the improvement itself is asserted at 50k).
    assert exp["previous"]["rate"] > 1.5 * exp["base_rate"]
    assert exp["new"]["rate"] > 1.5 * exp["base_rate"]
    line = sections["9 · TA scoring: closed loop"]["group 1 next-period true buyer rate, v1 → v2"]
    assert f"{exp['previous']['rate']:.4f} → {exp['new']['rate']:.4f}" in line
