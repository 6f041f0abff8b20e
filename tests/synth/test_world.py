"""Structure of the generated world: determinism, schemas, integrity, consistency, files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from atoll.data.io import read_table
from atoll.data.schema import SPECS, validate
from atoll.errors import ConfigError, ManifestError
from atoll.ids.normalize import normalize_array
from atoll.synth import (
    TABLE_NAMES,
    TRUTH_NAMES,
    World,
    WorldConfig,
    generate_world,
    load_world_tables,
    write_world,
)
from tests.synth.test_columns import luhn_valid

TS = pa.timestamp("us", tz="UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
STR_LIST = pa.list_(pa.string())

EXPECTED_COLUMNS = {
    "provider/universe": [
        "device_id", "os", "phone", "oaid", "idfa", "imei", "gender", "age_band", "province",
        "city", "city_tier", "phone_brand", "app_categories", "consumption_level", "interests",
        "parenting_status", "marital_status", "occupation",
    ],
    "provider/edges": ["id_type_a", "id_a", "id_type_b", "id_b", "source", "seen_at"],
    "provider/exposures": [
        "event_id", "event_time", "event_type", "campaign_id", "channel", "device_id", "ip",
        "user_agent", "cost",
    ],
    "provider/pois": ["poi_id", "name", "category", "lat", "lon"],
    "provider/pings": ["device_id", "ts", "lat", "lon"],
    "brand/members": [
        "member_id", "phone", "email", "member_level", "join_date", "gender", "age_band",
    ],
    "brand/orders": [
        "order_id", "order_time", "amount", "product", "channel", "phone", "member_id",
    ],
    "media/users": ["media_user_id", "device_id"],
    "media/behaviour": ["media_user_id", "event_time", "action", "item_category"],
    "truth/persons": [
        "person_id", "device_id", "phone", "phone_known", "member_id", "member_phone", "is_bot",
        "gender", "age_band", "province", "city",
    ],
    "truth/propensity": [
        "device_id", "person_id", "propensity", "is_planted_buyer", "in_target_audience",
    ],
    "truth/order_causes": [
        "order_id", "person_id", "caused_by_channel", "cause_touch", "in_window",
    ],
    "truth/channel_lift": [
        "channel", "campaign_id", "cpm", "cpc", "view_lift", "click_lift", "exposed_persons",
        "clicked_persons", "expected_caused_orders", "caused_orders", "caused_sales", "cost",
        "valid_cost", "incremental_cpo", "incremental_roi",
    ],
    "truth/ivt_labels": ["event_id", "ivt_type", "ivt_class"],
    "truth/lbs_visits": [
        "device_id", "poi_id", "category", "visit_date", "arrive", "depart", "pings",
    ],
    "truth/lbs_anchors": ["device_id", "home_poi_id", "work_poi_id"],
    "truth/edge_anomalies": ["id_type", "id", "linked_devices", "kind"],
    "truth/datacenter_ranges": ["cidr", "operator"],
}  # fmt: skip

EXPECTED_TYPES = {
    ("provider/universe", "app_categories"): STR_LIST,
    ("provider/universe", "interests"): STR_LIST,
    ("provider/edges", "seen_at"): TS,
    ("provider/exposures", "event_time"): TS,
    ("provider/exposures", "cost"): pa.float64(),
    ("provider/pings", "ts"): TS,
    ("provider/pings", "lat"): pa.float64(),
    ("brand/orders", "order_time"): TS,
    ("brand/orders", "amount"): pa.decimal128(18, 2),
    ("brand/members", "join_date"): pa.date32(),
    ("media/behaviour", "event_time"): TS,
    ("truth/propensity", "propensity"): pa.float64(),
    ("truth/order_causes", "in_window"): pa.bool_(),
}
ID_COLUMNS = {"device_id", "phone", "oaid", "idfa", "imei", "member_id", "order_id", "event_id",
              "id_a", "id_b", "poi_id", "media_user_id", "person_id"}  # fmt: skip


def _all(world: World) -> dict[str, pa.Table]:
    return {**world.tables, **{f"truth/{k}": v for k, v in world.truth.items()}}


def _set(column: pa.ChunkedArray | pa.Array) -> set[object]:
    return set(pc.unique(column.drop_null()).to_pylist())


def _digits(column: pa.ChunkedArray) -> set[str]:
    """Phone values reduced to their last 11 digits (a deliberately naive normalization)."""
    return {re.sub(r"\D", "", v)[-11:] for v in column.drop_null().to_pylist()}


def test_table_names_and_columns(small_world: World) -> None:
    assert tuple(small_world.tables) == TABLE_NAMES
    assert tuple(small_world.truth) == TRUTH_NAMES
    for name, table in _all(small_world).items():
        assert table.column_names == EXPECTED_COLUMNS[name], name
        assert table.num_rows > 0, name
        for field in table.schema:
            if field.name in ID_COLUMNS:
                assert field.type == pa.string(), (name, field.name)
    tables = _all(small_world)
    for (name, column), typ in EXPECTED_TYPES.items():
        assert tables[name].schema.field(column).type == typ, (name, column)


def test_tables_validate_against_the_data_plane_specs(small_world: World) -> None:
    kinds = {
        "provider/universe": "universe",
        "provider/edges": "edges",
        "provider/exposures": "exposures",
        "provider/pois": "pois",
        "provider/pings": "pings",
        "brand/members": "members",
        "brand/orders": "orders",
    }
    for name, kind in kinds.items():
        validate(small_world.tables[name], SPECS[kind], source=name)


def test_same_seed_same_world_different_seed_different_world(small_world: World) -> None:
    again = generate_world(WorldConfig(devices=3000, seed=11))
    for name, table in _all(small_world).items():
        other = _all(again)[name]
        assert table.equals(other), name
    other_seed = generate_world(WorldConfig(devices=3000, seed=12))
    assert not small_world.tables["provider/universe"].equals(
        other_seed.tables["provider/universe"]
    )
    assert not small_world.tables["provider/exposures"].equals(
        other_seed.tables["provider/exposures"]
    )
    assert not set(small_world.tables["provider/universe"]["device_id"].to_pylist()) & set(
        other_seed.tables["provider/universe"]["device_id"].to_pylist()
    )


def test_parts_draw_from_independent_streams(small_world: World) -> None:
    # Changing a knob of one part leaves every part before it (and unrelated ones) unchanged.
    changed = generate_world(
        replace(small_world.config, media_user_share=0.5, ping_device_share=0.2)
    )
    for name in ("provider/universe", "provider/exposures", "provider/edges", "brand/orders"):
        assert changed.tables[name].equals(small_world.tables[name]), name
    assert not changed.tables["media/users"].equals(small_world.tables["media/users"])
    assert not changed.tables["provider/pings"].equals(small_world.tables["provider/pings"])


def test_keys_are_unique(small_world: World) -> None:
    t = small_world.tables
    for name, column in (
        ("provider/universe", "device_id"),
        ("provider/exposures", "event_id"),
        ("provider/pois", "poi_id"),
        ("brand/members", "member_id"),
        ("brand/orders", "order_id"),
    ):
        assert pc.count_distinct(t[name][column]).as_py() == t[name].num_rows, (name, column)
    users = t["media/users"]
    pairs = pc.binary_join_element_wise(users["media_user_id"], users["device_id"], "|")
    assert pc.count_distinct(pairs).as_py() == users.num_rows


def test_referential_integrity(small_world: World) -> None:
    t, tr = small_world.tables, small_world.truth
    devices = _set(t["provider/universe"]["device_id"])
    assert _set(t["provider/exposures"]["device_id"]) <= devices
    assert _set(t["provider/pings"]["device_id"]) <= devices
    assert _set(t["media/users"]["device_id"]) <= devices
    assert _set(t["media/behaviour"]["media_user_id"]) <= _set(t["media/users"]["media_user_id"])
    edges = t["provider/edges"]
    for side in ("a", "b"):
        is_dev = pc.equal(edges[f"id_type_{side}"], "device_id")
        assert _set(edges.filter(is_dev)[f"id_{side}"]) <= devices
    assert _set(edges["id_type_a"]) == {"phone", "device_id"}
    assert _set(edges["id_type_b"]) == {"device_id", "oaid", "idfa", "imei"}
    members, orders = t["brand/members"], t["brand/orders"]
    assert _digits(orders["phone"]) <= _digits(members["phone"])
    assert _set(orders["member_id"]) <= _set(members["member_id"])
    neither = pc.and_(pc.is_null(orders["phone"]), pc.is_null(orders["member_id"]))
    assert not pc.any(neither).as_py()
    assert _set(tr["ivt_labels"]["event_id"]) <= _set(t["provider/exposures"]["event_id"])
    assert tr["order_causes"]["order_id"].equals(orders["order_id"])
    assert _set(tr["lbs_visits"]["poi_id"]) <= _set(t["provider/pois"]["poi_id"])
    assert _set(tr["persons"]["device_id"]) == devices
    assert tr["propensity"]["device_id"].equals(t["provider/universe"]["device_id"])
    assert _set(tr["persons"]["member_id"]) <= _set(members["member_id"])


def test_os_consistency_and_identifier_formats(small_world: World) -> None:
    u = small_world.tables["provider/universe"].to_pandas()
    ios = u["os"] == "ios"
    assert set(u["os"]) == {"android", "ios"}
    assert 0.15 < ios.mean() < 0.4
    assert u.loc[~ios, "idfa"].isna().all()
    assert u.loc[ios, "oaid"].isna().all()
    assert u.loc[ios, "imei"].isna().all()
    assert set(u.loc[ios, "phone_brand"].dropna()) == {"Apple"}
    assert "Apple" not in set(u.loc[~ios, "phone_brand"].dropna())
    # some iOS users limit ad tracking: IDFA coverage strictly between 0 and 1
    assert 0.2 < u.loc[ios, "idfa"].notna().mean() < 0.8
    imeis = u["imei"].dropna()
    assert len(imeis) > 0
    assert all(len(x) == 15 and x.isdigit() and luhn_valid(x) for x in imeis)
    assert all(
        re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", x) for x in u["idfa"].dropna()
    )
    assert all(re.fullmatch(r"[0-9a-f-]+", x) for x in u["oaid"].dropna())
    assert all(re.fullmatch(r"1[3-9]\d{9}", x) for x in u["phone"].dropna())
    assert 0.5 < u["phone"].notna().mean() < 0.7  # phone_share 0.6 of devices (bots never)


def test_tag_coverage_is_realistic(small_world: World) -> None:
    u = small_world.tables["provider/universe"]
    for column in (
        "gender", "age_band", "province", "city", "city_tier", "phone_brand", "app_categories",
        "consumption_level", "interests", "parenting_status", "marital_status", "occupation",
    ):  # fmt: skip
        values = u[column]
        known = pc.invert(pc.is_null(values))
        if pa.types.is_string(values.type):
            known = pc.and_(known, pc.not_equal(pc.fill_null(values, ""), "unknown"))
        coverage = pc.mean(pc.cast(known, pa.int8())).as_py()
        assert 0.3 < coverage < 1.0, (column, coverage)
    top = pc.value_counts(u["province"]).to_pylist()
    ranked = [r["values"] for r in sorted(top, key=lambda r: -r["counts"]) if r["values"]]
    assert "Guangdong" in ranked[:3]


def test_edges_carry_noise_invalid_ids_and_hubs(small_world: World) -> None:
    edges = small_world.tables["provider/edges"]
    phones = edges.filter(pc.equal(edges["id_type_a"], "phone"))["id_a"].combine_chunks()
    report = normalize_array(phones, "phone", source="edges", column="id_a").report
    assert report.by_reason.get("bad_length", 0) > 0
    assert report.invalid < 0.05 * report.total
    assert any("+86" in p or " " in p or "-" in p for p in phones.to_pylist())
    for kind, reason in (
        ("imei", "imei_bad_check_digit"),
        ("oaid", "oaid_zero"),
        ("idfa", "idfa_zero"),
    ):
        ids = edges.filter(pc.equal(edges["id_type_b"], kind))["id_b"].combine_chunks()
        rep = normalize_array(ids, kind).report
        assert rep.by_reason.get(reason, 0) >= small_world.injected[reason] > 0, kind
    assert any(
        x != x.lower()
        for x in edges.filter(pc.equal(edges["id_type_b"], "oaid"))["id_b"].to_pylist()
    )
    anomalies = small_world.truth["edge_anomalies"].to_pylist()
    assert {a["kind"] for a in anomalies} == {"test_phone", "cloned_imei"}
    for a in anomalies:
        side = "a" if a["id_type"] == "phone" else "b"
        hits = edges.filter(pc.equal(edges[f"id_{side}"], a["id"]))
        assert len(_set(hits["id_a" if side == "b" else "id_b"])) == a["linked_devices"] >= 2
    # multi-device persons: some phones link two or more devices
    truth = small_world.truth["persons"].to_pandas()
    per_person = truth.groupby("person_id").size()
    assert (per_person >= 2).mean() > 0.1


def _local(day: date, extra: timedelta = timedelta(0)) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI) + extra


def test_times_fall_in_their_periods(small_world: World) -> None:
    cfg = small_world.config
    t = small_world.tables
    one_day = timedelta(days=1)

    def bounds(table: str, column: str) -> tuple[datetime, datetime]:
        return pc.min(t[table][column]).as_py(), pc.max(t[table][column]).as_py()

    lo, hi = bounds("provider/exposures", "event_time")
    # injected clicks may be stamped up to 30 s before an impression, clicks lag impressions
    assert _local(cfg.campaign_start, -timedelta(seconds=30)) <= lo
    assert hi < _local(cfg.campaign_end, one_day + timedelta(minutes=10))
    lo, hi = bounds("brand/orders", "order_time")
    assert _local(cfg.order_start) <= lo
    assert hi < _local(cfg.order_end, one_day)
    lo, hi = bounds("provider/pings", "ts")
    assert _local(cfg.campaign_start, -timedelta(days=cfg.ping_days)) <= lo
    assert hi < _local(cfg.campaign_start)
    _, hi = bounds("provider/edges", "seen_at")
    assert hi < _local(cfg.campaign_start)
    assert pc.min(t["brand/orders"]["amount"]).as_py() > 0
    # members joined on or before their first order (local calendar day)
    orders = t["brand/orders"].to_pandas()
    members = t["brand/members"].to_pandas().set_index("member_id")
    with_member = orders.dropna(subset=["member_id"])
    first = with_member.groupby("member_id")["order_time"].min().dt.tz_convert(SHANGHAI).dt.date
    assert (members.loc[first.index, "join_date"] <= first).all()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_and_read_back(small_world: World, tmp_path: Path, fmt: str) -> None:
    paths = write_world(small_world, tmp_path / "w", fmt=fmt)  # type: ignore[arg-type]
    expected = {*TABLE_NAMES, *(f"truth/{n}" for n in TRUTH_NAMES)}
    assert set(paths) == expected
    for name, path in paths.items():
        assert path == tmp_path / "w" / f"{name}.{fmt}"
        assert path.is_file()
    meta = json.loads((tmp_path / "w" / "world.json").read_text(encoding="utf-8"))
    assert meta["atoll_world_version"] == 1
    assert meta["format"] == fmt
    assert meta["config"]["devices"] == 3000
    assert meta["summary"]["devices"] == 3000
    back = load_world_tables(tmp_path / "w")
    for name, table in _all(small_world).items():
        assert back[name].equals(table), name


def test_csv_keeps_identifiers_intact(small_world: World, tmp_path: Path) -> None:
    paths = write_world(small_world, tmp_path / "w", fmt="csv")
    members = read_table(paths["brand/members"], SPECS["members"])
    original = small_world.tables["brand/members"]["member_id"].to_pylist()
    assert members["member_id"].to_pylist() == original
    assert all(m.startswith("000") and len(m) == 10 for m in original)
    orders = read_table(paths["brand/orders"], SPECS["orders"])
    assert orders["phone"].to_pylist() == small_world.tables["brand/orders"]["phone"].to_pylist()
    assert orders["amount"].equals(small_world.tables["brand/orders"]["amount"])
    universe = read_table(
        paths["provider/universe"],
        SPECS["universe"],
        column_types={"interests": STR_LIST, "app_categories": STR_LIST},
    )
    for column in ("device_id", "imei", "oaid", "interests"):
        assert (
            universe[column].to_pylist()
            == small_world.tables["provider/universe"][column].to_pylist()
        )


def test_parquet_output_is_byte_identical(small_world: World, tmp_path: Path) -> None:
    again = generate_world(WorldConfig(devices=3000, seed=11))
    a = write_world(small_world, tmp_path / "a")
    b = write_world(again, tmp_path / "b")
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
    assert (tmp_path / "a" / "world.json").read_bytes() == (
        tmp_path / "b" / "world.json"
    ).read_bytes()


def test_write_and_load_errors(small_world: World, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fmt"):
        write_world(small_world, tmp_path, fmt="xlsx")  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=r"world\.json"):
        load_world_tables(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "world.json").write_text('{"atoll_world_version": 99}', encoding="utf-8")
    with pytest.raises(ManifestError, match="atoll_world_version"):
        load_world_tables(tmp_path / "bad")


def test_progress_is_reported() -> None:
    calls: list[tuple[str, int, int]] = []
    generate_world(
        WorldConfig(devices=300, seed=1), progress=lambda s, d, n: calls.append((s, d, n))
    )
    assert calls[0] == ("universe", 0, 7)
    assert calls[-1] == ("done", 7, 7)
    assert [d for _, d, _ in calls] == sorted(d for _, d, _ in calls)


def test_summary_is_consistent(small_world: World) -> None:
    s = small_world.summary()
    json.dumps(s)
    orders = s["orders"]
    assert isinstance(orders, dict)
    assert (
        orders["total"] == orders["before_campaign"] + orders["in_window"] + orders["after_window"]
    )
    assert min(orders["before_campaign"], orders["in_window"], orders["after_window"]) > 0
    exposures = s["exposures"]
    assert isinstance(exposures, dict)
    assert set(exposures["invalid_by_type"]) == {
        "bot",
        "datacenter",
        "click_injection",
        "abnormal_frequency",
    }
    assert np.isclose(
        sum(exposures["invalid_by_type"].values()), small_world.truth["ivt_labels"].num_rows
    )
