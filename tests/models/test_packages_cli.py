"""Packages (hashing KATs, exclusions), the CLI end to end, group personas behind the guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from atoll.cli import app
from atoll.errors import InputError
from atoll.models.feedback import read_results
from atoll.models.packages import PackageBuilder, PackageKind, parse_kinds
from atoll.models.scoring import GroupSpec, assign_groups, cut_points
from atoll.synth import WorldConfig, generate_world, write_world
from tests.models.conftest import buyer_phones

# Published vectors (docs/identifiers.md gives the sources):
#  IDFA  — Tencent Ads: "IDFA设备号保持大写,进行MD5编码", example below (uppercase, dashed).
#  IMEI  — Tencent DataNexus: md5(imei.toLowerCase()), test case 868049039501257.
#  OAID  — Tencent DataNexus: md5(oaid), test case below.
KATS = [
    ("idfa", "ff1999cd-7177-4937-a474-74937a102630", "2c010ed96aef2fc34983e1e7e9176b7e"),
    ("idfa", "FF1999CD-7177-4937-A474-74937A102630", "2c010ed96aef2fc34983e1e7e9176b7e"),
    ("imei", "868049039501257", "8d3ebd3654fb46a2832296669cf1b536"),
    ("oaid", "1FE9A970-EFBB-29E0-0BDD-F5DBBF751AB5", "83e9158a4fb54c0e1ef0b238639a23ae"),
]


@pytest.mark.parametrize(("kind", "raw", "digest"), KATS)
def test_package_hash_kats(kind: str, raw: str, digest: str) -> None:
    builder = PackageBuilder(1, [PackageKind(kind, kind, "md5")])
    builder.add(pa.table({kind: [raw]}), np.array([1], np.int8))
    assert builder.hashed(1, PackageKind(kind, kind, "md5")).to_pylist() == [digest]


def test_phone_hash_is_of_the_11_digits() -> None:
    # Tencent Ads conversion API: hash_phone = md5(13500000000) — the 11-digit string.
    kinds = parse_kinds("phone_md5,phone_sha256")
    builder = PackageBuilder(1, kinds)
    builder.add(pa.table({"phone": ["+86 135-0000-0000"]}), np.array([1], np.int8))
    assert builder.hashed(1, kinds[0]).to_pylist() == [hashlib.md5(b"13500000000").hexdigest()]
    assert builder.hashed(1, kinds[1]).to_pylist() == [hashlib.sha256(b"13500000000").hexdigest()]


def test_groups_are_nested_quantiles() -> None:
    score = np.arange(1000, dtype=np.float64)
    eligible = np.ones(1000, bool)
    eligible[-5:] = False  # the 5 best are seeds
    group = assign_groups(score, eligible, GroupSpec.parse("0.01,0.05,0.2"))
    assert [(group == g).sum() for g in (1, 2, 3)] == [10, 40, 149]
    assert (group[-5:] == 0).all()
    assert cut_points(score[eligible], GroupSpec.thresholds([0.5, 0.2])) == [0.5, 0.2]


def test_results_are_validated() -> None:
    ok = pa.table(
        {"device_id": ["a", "b"], "exposed": [1, 0], "clicked": [0, 0], "purchased": ["yes", "no"]}
    )
    assert read_results(ok)["purchased"].to_pylist() == [True, False]
    bad = pa.table(
        {"device_id": ["a", "b"], "exposed": [1, 0], "clicked": [0, 1], "purchased": [0, 0]}
    )
    with pytest.raises(InputError, match="clicked but not exposed"):
        read_results(bad, source="r.csv")
    dup = pa.table(
        {"device_id": ["a", "a"], "exposed": [1, 1], "clicked": [0, 0], "purchased": [0, 0]}
    )
    with pytest.raises(InputError, match="more than once"):
        read_results(dup)


def test_cli_train_score_feedback(tmp_path: Path) -> None:
    world = generate_world(WorldConfig(devices=20_000, seed=3))
    write_world(world, tmp_path / "world")
    uni = tmp_path / "world" / "provider" / "universe.parquet"
    seeds = tmp_path / "seeds.csv"
    phones = buyer_phones(world)
    seeds.write_text("phone\n" + "\n".join(phones.to_pylist()) + "\n", encoding="utf-8")
    # Some devices were already exposed: exclude them from packages.
    exposed_ids = world.tables["provider/universe"]["device_id"].slice(0, 300)
    exposed = tmp_path / "exposed.csv"
    exposed.write_text("device_id\n" + "\n".join(exposed_ids.to_pylist()) + "\n", encoding="utf-8")
    runner = CliRunner()
    model = tmp_path / "model"
    r = runner.invoke(
        app,
        [
            "lookalike",
            "train",
            "--seeds",
            str(seeds),
            "--seed-id-column",
            "phone",
            "--universe",
            str(uni),
            "--exclude-exposed",
            str(exposed),
            "--out",
            str(model),
            "--truth",
            str(tmp_path / "world" / "truth" / "propensity.parquet"),
        ],
    )
    assert r.exit_code == 0, r.output
    for name in (
        "model.json",
        "manifest.json",
        "metrics.json",
        "report.html",
        "exclusions.parquet",
    ):
        assert (model / name).exists()
    metrics = json.loads((model / "metrics.json").read_text())
    assert [r["k"] for r in metrics["evaluation"]["at_k"]] == [1, 5, 10, 20]
    html = (model / "report.html").read_text()
    assert "Cumulative gain" in html
    assert "Top features" in html

    out = tmp_path / "scored"
    r = runner.invoke(
        app,
        [
            "lookalike",
            "score",
            "--model",
            str(model),
            "--universe",
            str(uni),
            "--groups",
            "0.01,0.05,0.2",
            "--out",
            str(out),
            "--k",
            "50",
        ],
    )
    assert r.exit_code == 0, r.output
    scores = pq.read_table(out / "scores.parquet")
    universe = world.tables["provider/universe"]
    assert scores.num_rows == universe.num_rows
    assert set(scores.column_names) >= {"device_id", "score", "group"}
    # seeds (by phone: every device of a buyer) and exposed devices are never in a group ...
    seed_rows = pc.fill_null(pc.is_in(universe["phone"], value_set=phones), False)
    seed_devices = set(universe["device_id"].filter(seed_rows).to_pylist())
    grouped = scores.filter(pc.greater(scores["group"], 0))
    in_groups = set(grouped["device_id"].to_pylist())
    assert not in_groups & seed_devices
    assert not in_groups & set(exposed_ids.to_pylist())
    # ... nor in a package file, in any hashed form.
    seed_hashes = {hashlib.md5(p.encode()).hexdigest() for p in phones.to_pylist()}
    seed_hashes |= {hashlib.sha256(p.encode()).hexdigest() for p in phones.to_pylist()}
    sd = universe.filter(seed_rows)
    for col, case in (("imei", str.lower), ("oaid", str.lower), ("idfa", str.upper)):
        seed_hashes |= {
            hashlib.md5(case(v).encode()).hexdigest() for v in sd[col].drop_null().to_pylist()
        }
    manifest = json.loads((out / "packages" / "manifest.json").read_text())
    assert [g["devices"] for g in manifest["groups"]] == [
        int(pc.sum(pc.equal(scores["group"], g)).as_py()) for g in (1, 2, 3)
    ]
    packaged = set()
    for g in (1, 2, 3):
        for f in (out / "packages" / f"group_{g}").glob("*.txt"):
            packaged |= set(f.read_text().split())
    assert packaged
    assert not packaged & seed_hashes
    # group personas went through the guard (k = 50): small groups have withheld cells
    scoring = json.loads((out / "scoring.json").read_text())
    personas = scoring["group_personas"]
    assert all(p["guard_k"] == 50 for p in personas)
    assert personas[0]["suppressed_cells"] > 0
    cells = pq.read_table(out / "packages" / "group_1" / "persona.parquet")
    counts = [c for c in cells["target_count"].to_pylist() if c is not None]
    assert counts
    assert min(counts) >= 50

    # Feedback: delivery results for group 1, retrain, compare on next-period outcomes.
    g1 = grouped.filter(pc.equal(grouped["group"], 1))["device_id"]
    prop = world.truth["propensity"]
    rng = np.random.default_rng(0)
    idx = pc.index_in(g1, value_set=prop["device_id"])
    p = np.asarray(prop["propensity"].take(idx).to_numpy(zero_copy_only=False))
    results = tmp_path / "results.csv"
    rows = ["device_id,exposed,clicked,purchased"]
    for d, pp in zip(g1.to_pylist(), p, strict=True):
        rows.append(f"{d},1,0,{int(rng.random() < pp)}")
    results.write_text("\n".join(rows) + "\n", encoding="utf-8")
    nxt = tmp_path / "next.parquet"
    allp = np.asarray(prop["propensity"].to_numpy(zero_copy_only=False))
    pq.write_table(
        pa.table(
            {"device_id": prop["device_id"], "purchased": pa.array(rng.random(allp.size) < allp)}
        ),
        nxt,
    )
    v2 = tmp_path / "model_v2"
    r = runner.invoke(
        app,
        [
            "lookalike",
            "feedback",
            "--model",
            str(model),
            "--results",
            str(results),
            "--out",
            str(v2),
            "--next-outcomes",
            str(nxt),
        ],
    )
    assert r.exit_code == 0, r.output
    m2 = json.loads((v2 / "manifest.json").read_text())
    assert m2["version"] == 2
    assert m2["parent"]["version"] == 1
    assert pq.read_table(v2 / "outcomes.parquet").num_rows == len(g1)
    assert "comparison" in json.loads((v2 / "metrics.json").read_text())
    # a tampered model is refused
    (model / "model.json").write_text((model / "model.json").read_text() + " ")
    r = runner.invoke(
        app,
        [
            "lookalike",
            "score",
            "--model",
            str(model),
            "--universe",
            str(uni),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 2
    assert "SHA-256" in r.output
