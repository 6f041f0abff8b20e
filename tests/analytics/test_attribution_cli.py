"""``atoll report attribution`` end to end on a small synthetic world, page checked in Chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from atoll.cli import app
from atoll.synth import WorldConfig, generate_world, write_world
from tests.ui.chromium import check_page


def test_report_attribution_cli(tmp_path: Path) -> None:
    world = generate_world(WorldConfig(devices=8_000, seed=11))
    write_world(world, tmp_path / "world")
    w = tmp_path / "world"
    propensity = world.truth["propensity"]
    pq.write_table(propensity.filter(propensity["in_target_audience"]), tmp_path / "ta.parquet")
    lift = world.truth["channel_lift"]
    spend = pa.table({"campaign_id": lift["campaign_id"], "channel": lift["channel"]})
    spend = spend.append_column("cost", lift["cost"])
    pq.write_table(spend, tmp_path / "spend.parquet")
    out = tmp_path / "report"
    args = [
        "report", "attribution",
        "--exposures", str(w / "provider/exposures.parquet"),
        "--orders", str(w / "brand/orders.parquet"),
        "--edges", str(w / "provider/edges.parquet"),
        "--members", str(w / "brand/members.parquet"),
        "--campaign-start", "2026-06-01", "--campaign-end", "2026-06-14",
        "--spend", str(tmp_path / "spend.parquet"),
        "--ta", str(tmp_path / "ta.parquet"),
        "--exclude-events", str(w / "truth/ivt_labels.parquet"),
        "--k", "5",
        "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with (out / "attribution_channels.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:8] == [
        "channel",
        "model",
        "orders",
        "sales",
        "cost",
        "cpo",
        "roas",
        "roi",
    ]
    assert {r["model"] for r in rows} >= {"last_touch", "markov_3", "shapley"}
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["privacy"]["attribution"]["policy"]["min_cell_size"] == 5
    assert metrics["settings"]["cost_source"] == "spend table"
    statuses = {r["status"]: r for r in metrics["orders"]}
    assert statuses["outside_window"]["orders"] > 0
    assert metrics["events"]["excluded_invalid_traffic"] == world.truth["ivt_labels"].num_rows
    html = (out / "attribution.html").read_text(encoding="utf-8")
    assert "Before → Now" in html
    assert "(attributed sales - cost) / cost" in html
    check_page(out / "attribution.html", tmp_path, min_charts=3)


def test_report_attribution_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text("order_id,order_time,amount,phone\no1,2026-06-03 10:00,12.345,13800138000\n")
    exposures = tmp_path / "ex.csv"
    exposures.write_text(
        "event_id,event_time,event_type,campaign_id,channel,device_id\n"
        "e1,2026-06-02 10:00,impression,c,douyin,d1\n"
    )
    args = [
        "report", "attribution", "--exposures", str(exposures), "--orders", str(bad),
        "--campaign-start", "2026-06-01", "--campaign-end", "2026-06-14", "--out", str(tmp_path),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "amount" in result.output
    assert "row" in result.output
    args[args.index("2026-06-01")] = "June"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output
