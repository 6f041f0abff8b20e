"""Persona on the synthetic world: planted buyers look like the causal model says; the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from atoll.analytics.match_rate import match_rate
from atoll.analytics.persona import CSV_COLUMNS, persona
from atoll.cli import app
from atoll.data import write_table
from atoll.ids.normalize import normalize_array
from atoll.synth import World, WorldConfig, generate_world, write_world


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldConfig(devices=12_000, seed=7))


def _cell(report: object, dim: str, value: str) -> dict[str, object]:
    return next(r for r in report.dimension(dim) if r["value"] == value)  # type: ignore[attr-defined]


def test_planted_buyers_are_female_beauty_hair_care(world: World) -> None:
    prop = world.truth["propensity"]
    buyers = prop.filter(prop["is_planted_buyer"])["device_id"]
    report = persona(buyers, world.tables["provider/universe"], id_column="device_id")
    for dim, value in (
        ("gender", "female"),
        ("interests", "beauty"),
        ("interests", "hair_care"),
        ("consumption_level", "premium"),
    ):
        cell = _cell(report, dim, value)
        assert cell["tgi"] is not None, (dim, value, cell)
        assert cell["tgi"] > 100, (dim, value, cell)  # type: ignore[operator]
        assert cell["significant"], (dim, value, cell)
        assert cell["ci_low"] > 100  # type: ignore[operator]
    assert _cell(report, "gender", "male")["tgi"] < 100  # type: ignore[operator]
    top = {(t["dimension"], t["value"]) for t in report.top_tags}
    assert {("interests", "hair_care"), ("interests", "beauty")} <= top
    assert report.channels
    assert report.channels[0]["score"] > 0
    lines = {p["consumption_level"]: p["recommendation"] for p in report.product_lines}
    assert lines["premium"] == "lead with this line"


def test_persona_recovers_true_female_share(world: World) -> None:
    # 撞库验证: provider gender tags against the true gender of the same devices.
    persons = world.truth["persons"]
    humans = persons.filter(pc.invert(persons["is_bot"]))
    true_female = pc.mean(pc.cast(pc.equal(humans["gender"], "female"), pa.float64())).as_py()
    everyone = humans["device_id"]
    report = persona(everyone, world.tables["provider/universe"], id_column="device_id")
    share = _cell(report, "gender", "female")["target_share"]
    assert abs(share - true_female) < 0.03  # type: ignore[operator]


def test_match_rate_on_world(world: World) -> None:
    members = world.tables["brand/members"]
    universe = world.tables["provider/universe"]
    report = match_rate(
        members, id_columns={"phone": "phone"}, universe=universe, source_column="member_level"
    )
    overall = report.row("phone")
    # Reference: a plain Python set join of the normalized phones, member by member.
    uni = set(normalize_array(universe["phone"], "phone").values.to_pylist()) - {None}
    mem = normalize_array(members["phone"], "phone").values.to_pylist()
    expected = sum(p in uni for p in mem if p is not None)
    assert overall["matched"] == expected
    assert overall["with_id"] == sum(p is not None for p in mem)
    assert 0.4 < overall["match_rate"] < 0.8  # type: ignore[operator]
    sources = {r["source"] for r in report.table.to_pylist()}
    assert {"(all)", "regular", "gold"} <= sources
    # The PSI result fed as a matched-ID table gives the same numbers.
    matched = pa.table({"id_type": ["phone"] * len(uni), "id": sorted(uni)})
    again = match_rate(members, id_columns={"phone": "phone"}, matched=matched)
    assert again.row("phone")["matched"] == expected


def test_cli_report_persona(world: World, tmp_path: Path) -> None:
    paths = write_world(world, tmp_path / "world")
    del paths
    contract = tmp_path / "contract.toml"
    contract.write_text(
        '[privacy]\ncollaboration = "demo"\n'
        "[privacy.parties.brand]\nmin_cell_size = 50\n"
        "[privacy.parties.provider]\nmin_cell_size = 60\n",
        encoding="utf-8",
    )
    members = tmp_path / "world" / "brand" / "members.parquet"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "report", "persona",
            "--audience", str(members),
            "--id-column", "phone",
            "--universe", str(tmp_path / "world" / "provider" / "universe.parquet"),
            "--id-type", "phone",
            "--dimensions", "gender,age_band",
            "--dimensions", "province",
            "--dimensions", "interests",
            "--contract", str(contract),
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with (out / "persona.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["dimension"] for r in rows} == {"gender", "age_band", "province", "interests"}
    withheld = [r for r in rows if r["flag"].startswith("suppressed")]
    assert withheld
    assert all(r["target_count"] == "" for r in withheld)
    assert "k set by provider" in withheld[0]["flag"] or "complementary" in withheld[0]["flag"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["guard"]["policy"]["min_cell_size"] == 60
    assert metrics["audience"]["match_rate"] > 0.4
    html = (out / "persona.html").read_text(encoding="utf-8")
    assert html.count('class="atoll-chart"') >= 5
    assert "÷" in html  # formulas next to numbers


def test_cli_report_persona_errors(world: World, tmp_path: Path) -> None:
    universe = tmp_path / "u.parquet"
    write_table(world.tables["provider/universe"].slice(0, 100), universe)
    audience = tmp_path / "a.csv"
    audience.write_text("phone\n13800001111\n", encoding="utf-8")
    runner = CliRunner()
    base = ["report", "persona", "--audience", str(audience), "--universe", str(universe)]
    result = runner.invoke(app, [*base, "--id-column", "mobile", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no column 'mobile'" in result.output
    result = runner.invoke(
        app, [*base, "--id-column", "phone", "--dimensions", "nope", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no dimension column 'nope'" in result.output


def test_cli_report_match_rate(world: World, tmp_path: Path) -> None:
    write_world(world, tmp_path / "w")
    result = CliRunner().invoke(
        app,
        [
            "report", "match-rate",
            "--members", str(tmp_path / "w" / "brand" / "members.parquet"),
            "--id-columns", "phone=phone",
            "--universe", str(tmp_path / "w" / "provider" / "universe.parquet"),
            "--source-column", "member_level",
            "--out", str(tmp_path / "mr"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mr" / "match_rate.csv").exists()
