"""Demo step 5 (matching): every protocol's result equals the plain computation on the same data.

The step runs once per module on the 2,000-device world (inline executor)
with the guard's k lowered to 10 so that the small world's cells and the
intersection-sum are released and can be compared; the withheld path is
checked on its own.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from atoll.demo import DemoContext
from atoll.demo import step_matching as sm
from atoll.demo.shared import TAG_COLUMNS
from atoll.ids.normalize import hash_array, normalize_array

SMALL_K = 10

Run = tuple[DemoContext, dict[str, dict[str, Any]], sm.MatchingResult]


@pytest.fixture(scope="module")
def done(demo_ctx: DemoContext, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The step, run once on a private copy of the prepared world."""
    out: Path = tmp_path_factory.mktemp("matching")
    config = dataclasses.replace(demo_ctx.config, out=out)
    ctx = dataclasses.replace(
        demo_ctx, config=config, artifacts=dict(demo_ctx.artifacts), timings={}
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sm, "K", SMALL_K)
        sections = sm.run(ctx)
    result = ctx.artifacts["matching"]
    assert isinstance(result, sm.MatchingResult)
    return ctx, sections, result


def _valid(values: pa.ChunkedArray | pa.Array, kind: str) -> list[str | None]:
    out: list[str | None] = normalize_array(values, kind).values.to_pylist()
    return out


def _section(sections: dict[str, dict[str, Any]], start: str) -> dict[str, Any]:
    found = [rows for title, rows in sections.items() if title.startswith(start)]
    assert len(found) == 1, f"no single section starting with {start!r}"
    return found[0]


def test_sections_are_numbered_and_files_written(done: Run) -> None:
    ctx, sections, _ = done
    assert len(sections) == 7
    assert all(title.startswith("5 · ") for title in sections)
    folder = ctx.out / "matching"
    for name in (
        "brand_matched_members.parquet",
        "brand_members_tagged.parquet",
        "media_matched_devices.parquet",
        "brand_match_rate.csv",
        "brand_match_rate.json",
        "media_match_rate.csv",
        "media_match_rate.json",
        "exposed_spend.json",
        "matching.json",
    ):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "matching.json").read_text(encoding="utf-8"))
    assert set(report["costs"]) == {
        "labeled PSI",
        "campaign reach",
        "ECDH PSI",
        "multi-ID waterfall",
        "intersection-sum",
    }


def _exposed_phones(ctx: DemoContext) -> set[str]:
    exposed = set(ctx.tables["provider/exposures"]["device_id"].to_pylist())
    return {
        r["phone"]
        for r in ctx.tables["provider/universe"].select(["device_id", "phone"]).to_pylist()
        if r["device_id"] in exposed and r["phone"] is not None
    }


def test_brand_match_equals_plain_intersection(done: Run) -> None:
    ctx, sections, result = done
    members = ctx.tables["brand/members"]
    known = set(ctx.tables["provider/universe"]["phone"].drop_null().to_pylist())
    expected = {
        m
        for m, p in zip(members["member_id"].to_pylist(), members["phone"].to_pylist(), strict=True)
        if p is not None and p in known
    }
    assert expected, "the test world should have matches"
    table = result.brand_match.table
    assert table is not None
    assert set(table["member_id"].to_pylist()) == expected
    assert table.num_rows == len(expected)
    match = _section(sections, "5 · matching: brand")
    assert match["matched members"] == f"{len(expected):,}"
    assert match["provider phones, unique (all the brand learns of the provider's list)"] == (
        f"{len(known):,}"
    )


def test_campaign_reach_equals_plain_count(done: Run) -> None:
    ctx, sections, result = done
    exposed = _exposed_phones(ctx)
    reached = {
        p for p in ctx.tables["brand/members"]["phone"].drop_null().to_pylist() if p in exposed
    }
    assert reached, "the test world should have exposed members"
    assert result.reach == len(reached)
    assert result.reach_outcome.table is None  # a count only: no rows for the brand
    assert result.reach_outcome.stages[0].peer_unique == len(exposed)
    reach = _section(sections, "5 · campaign reach")
    assert reach["brand and provider both learned"].startswith(f"{len(reached):,} members ")


def test_tag_coverage_equals_plain_join(done: Run) -> None:
    ctx, sections, result = done
    universe = ctx.tables["provider/universe"]
    first: dict[str, dict[str, Any]] = {}
    for row in universe.select(["phone", *TAG_COLUMNS]).to_pylist():
        if row["phone"] is not None:
            first.setdefault(row["phone"], row)
    matched = [p for p in ctx.tables["brand/members"]["phone"].to_pylist() if p in first]
    tags = _section(sections, "5 · tag augmentation")
    assert tags["members with tags"].startswith(f"{len(matched):,} ")
    assert "ECDH match: yes" in tags["members with tags"]
    for tag in TAG_COLUMNS:
        known = sum(1 for p in matched if first[p][tag] not in (None, "unknown"))
        assert tags[f"tag {tag}: known"].startswith(f"{known:,} ("), tag
    assert result.tagged.num_rows == len(matched)


def _reference_waterfall(media: pa.Table, provider: pa.Table) -> dict[int, str]:
    """The plain waterfall join: first ID type (in priority) whose value the provider has."""
    matched: dict[int, str] = {}
    for kind in sm.WATERFALL:
        theirs = {v for v in _valid(provider[kind], kind) if v is not None}
        for i, v in enumerate(_valid(media[kind], kind)):
            if i not in matched and v is not None and v in theirs:
                matched[i] = kind
    return matched


def test_media_ids_are_the_linked_devices_ids(done: Run) -> None:
    ctx, _, result = done
    devices = result.media_devices
    links = ctx.world.tables["media/users"]
    assert devices["media_user_id"].to_pylist() == links["media_user_id"].to_pylist()
    assert devices["device_id"].to_pylist() == links["device_id"].to_pylist()
    universe = ctx.world.tables["provider/universe"]
    by_device = {
        r["device_id"]: r for r in universe.select(["device_id", "oaid", "imei"]).to_pylist()
    }
    for row in devices.select(["device_id", "oaid", "imei_md5"]).to_pylist():
        dev = by_device[row["device_id"]]
        assert row["oaid"] == dev["oaid"]
        if dev["imei"] is None:
            assert row["imei_md5"] is None
        else:
            plain = _valid(pa.array([dev["imei"]]), "imei")
            assert row["imei_md5"] == hash_array(pa.array(plain), "imei", "md5")[0].as_py()


def test_waterfall_equals_reference_join(done: Run) -> None:
    ctx, sections, result = done
    provider = sm.provider_device_ids(ctx.tables["provider/universe"])
    expected = _reference_waterfall(result.media_devices, provider)
    w = result.waterfall
    assert w.table is not None
    assert w.matched_rows is not None
    got = dict(zip(w.matched_rows.tolist(), w.table["matched_by"].to_pylist(), strict=True))
    assert got == expected
    counts = {k: sum(1 for v in expected.values() if v == k) for k in sm.WATERFALL}
    assert w.per_id_type() == counts
    assert all(counts[k] > 0 for k in sm.WATERFALL), counts
    # Rows with several ID types exist and were matched once, at the first type they carry.
    assert int(_value(sections, "links with several ID types")) > 0
    wf = _section(sections, "5 · multi-ID waterfall")
    for kind in sm.WATERFALL:
        assert wf[f"stage {kind}: matched / eligible rows"].startswith(f"{counts[kind]:,} / ")


def _value(sections: dict[str, dict[str, Any]], prefix: str) -> str:
    """The value of the first item starting with ``prefix`` (commas removed)."""
    for rows in sections.values():
        for key, value in rows.items():
            if key.startswith(prefix):
                return str(value).replace(",", "")
    raise KeyError(prefix)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_match_rates_equal_plain_counts(done: Run) -> None:
    ctx, _, result = done
    folder = ctx.out / "matching"
    members = ctx.tables["brand/members"]
    known = set(ctx.tables["provider/universe"]["phone"].drop_null().to_pylist())
    rows = _csv_rows(folder / "brand_match_rate.csv")
    levels = members["member_level"].to_pylist()
    phones = members["phone"].to_pylist()
    checked = 0
    for row in rows:
        if row["id_type"] != "phone":
            continue
        keep = [i for i, lv in enumerate(levels) if row["source"] in ("(all)", lv)]
        with_id = sum(1 for i in keep if phones[i] is not None)
        hit = sum(1 for i in keep if phones[i] in known)
        if row["matched"] == "":
            assert hit < SMALL_K or "suppress" in row["flag"]
            continue
        assert (int(row["with_id"]), int(row["matched"])) == (with_id, hit), row
        checked += 1
    assert checked >= 2  # the (all) row and at least one member level
    # The media rates are the waterfall's stages: rows still unmatched, matched at this stage.
    for stage in result.waterfall.stages:
        r = result.media_rates.row(stage.kind)
        if r["matched"] is not None:
            assert (r["with_id"], r["matched"]) == (stage.eligible_rows, stage.matched_rows)
    media_json = json.loads((folder / "media_match_rate.json").read_text(encoding="utf-8"))
    assert media_json["privacy"]["policy"]["min_cell_size"] == SMALL_K
    anyrow = result.media_rates.row("any")
    assert result.waterfall.matched_rows is not None
    assert anyrow["matched"] == len(result.waterfall.matched_rows)


def _plain_spend(ctx: DemoContext) -> tuple[int, Decimal, Decimal]:
    phones = _exposed_phones(ctx)
    cfg = ctx.world.config
    tz = ZoneInfo("Asia/Shanghai")
    start = datetime.combine(cfg.campaign_start, datetime.min.time(), tzinfo=tz)
    end = datetime.combine(
        cfg.campaign_end + timedelta(days=cfg.conversion_window_days + 1),
        datetime.min.time(),
        tzinfo=tz,
    )
    customers: set[str] = set()
    total = Decimal(0)
    in_window = Decimal(0)
    for o in ctx.tables["brand/orders"].select(["phone", "amount", "order_time"]).to_pylist():
        if o["phone"] in phones:
            customers.add(o["phone"])
            total += o["amount"]
            if start <= o["order_time"] < end:
                in_window += o["amount"]
    return len(customers), total, in_window


def test_intersection_sum_equals_plain_sum(done: Run) -> None:
    ctx, sections, result = done
    n, total, in_window = _plain_spend(ctx)
    assert n >= SMALL_K, "the test world should release the sum at k = 10"
    spend = result.spend
    assert spend is not None
    assert result.spend_withheld is None
    assert spend.cardinality == n
    assert Decimal(spend.sums["amount"]).scaleb(-2) == total
    assert Decimal(spend.sums["amount_in_window"]).scaleb(-2) == in_window
    assert 0 < in_window < total
    section = _section(sections, "5 · intersection-sum")
    assert section["exposed-and-matched customers"] == f"{n:,}"
    assert section["their spend, all orders"] == f"CNY {total:,.2f}"
    saved = json.loads((ctx.out / "matching" / "exposed_spend.json").read_text(encoding="utf-8"))
    assert saved["brand"]["cardinality"] == saved["provider"]["cardinality"] == n


def test_withheld_spend_is_reported_not_shown(done: Run) -> None:
    ctx, _, result = done
    n, _, _ = _plain_spend(ctx)
    withheld = dataclasses.replace(
        result,
        spend=None,
        spend_withheld=f"output withheld: {n} matches is below the minimum of 50",
    )
    sections = sm._sections(ctx, withheld, ctx.out / "matching", [])
    section = _section(sections, "5 · intersection-sum")
    assert "exposed-and-matched customers" not in section
    assert section["result"].startswith("withheld by the output guard")
    assert all("CNY" not in str(v) for v in section.values())


def test_costs_are_reported_per_protocol(done: Run) -> None:
    _, sections, result = done
    costs = _section(sections, "5 · matching protocol costs")
    for name, run in result.runs.items():
        assert run.bytes_a_to_b is not None, name
        assert run.bytes_b_to_a is not None, name
        assert run.bytes_a_to_b > 0, name
        assert run.bytes_b_to_a > 0, name
        assert run.seconds >= 0
        assert costs[name].endswith(" s")
    # ECDH PSI: a 32-byte point per brand item one way, per provider item back (plus more).
    match = result.brand_match.stages[0]
    assert result.runs["ECDH PSI"].bytes_a_to_b >= 32 * match.unique
    assert result.runs["ECDH PSI"].bytes_b_to_a >= 32 * match.peer_unique
