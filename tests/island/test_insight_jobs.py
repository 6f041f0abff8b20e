"""The island's persona and attribution jobs equal the plain computations under the same guard."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest

from atoll.analytics.attribution import (
    AttributionConfig,
    release,
    release_table,
    run_attribution,
)
from atoll.analytics.ivt import IvtConfig, default_lists, detect_ivt
from atoll.analytics.lbs import LbsConfig, lbs_tags
from atoll.analytics.paths import CampaignWindow
from atoll.analytics.persona import persona, persona_statistics
from atoll.ids.buckets import BucketFunction
from atoll.ids.mapping import build_id_graph
from atoll.island import insight_jobs
from atoll.island.evidence.simulated import SimulatedBackend
from atoll.island.runner import Island, open_result
from atoll.privacy import Guard, PrivacyPolicy
from atoll.synth import WorldConfig, generate_world
from tests.island.island_helpers import Party, job_toml, sim_policy, submit

K = 5


def _universe() -> pa.Table:
    rng = np.random.default_rng(3)
    n = 600
    phones = [f"1390000{i:04d}" for i in range(n)]
    gender = rng.choice(np.array(["female", "male", "unknown"]), n, p=[0.5, 0.4, 0.1])
    age = rng.choice(np.array(["18-24", "25-34", "35-44", "45+"]), n)
    city = rng.choice(np.array([f"city{i}" for i in range(60)]), n)  # small cells
    interests = [
        list(rng.choice(np.array(["beauty", "travel", "games", "baby"]), rng.integers(0, 3)))
        for _ in range(n)
    ]
    return pa.table(
        {
            "phone": phones,
            "gender": gender.tolist(),
            "age_band": age.tolist(),
            "city": city.tolist(),
            "interests": pa.array(interests, pa.list_(pa.string())),
        }
    )


def _members() -> pa.Table:
    # 150 members of the universe (skewed to the first rows), 50 outsiders.
    ids = [f"1390000{i:04d}" for i in range(0, 300, 2)] + [f"1370000{i:04d}" for i in range(50)]
    return pa.table({"member_id": [f"m{i}" for i in range(len(ids))], "phone": ids})


@pytest.mark.parametrize("buckets", [1, 4])
def test_island_persona_equals_the_plain_persona(tmp_path: Path, buckets: int) -> None:
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    brand, provider = Party("brand", tmp_path), Party("provider", tmp_path)
    fn = BucketFunction(buckets)
    universe = _universe()
    brand.upload(island, brand.seal("brand-members", _members(), "phone", fn))
    provider.upload(island, provider.seal("provider-tags", universe, "phone", fn))
    text = job_toml(brand, provider, computation="persona", params="", min_cell_size=K)
    job = submit(island, text)
    policy = sim_policy(island.backend.measurement)
    brand.release(island, job, policy)
    provider.release(island, job, policy)
    outcome = island.run(job.job_id)
    assert outcome.status == "done", outcome.error
    (result,) = outcome.results
    released = open_result(result, brand.hpke, job_digest=job.digest)

    plain = persona(
        _members()["phone"],
        universe,
        id_column="phone",
        guard=Guard(PrivacyPolicy(min_cell_size=K)),
    )
    cols = ["dimension", "value", "kind", "target_count", "base_count", "suppressed"]
    assert released.select(cols).to_pylist() == plain.guarded.table.select(cols).to_pylist()
    assert released.column("target_count")[0].as_py() == 150  # the total row: matched rows
    assert any(released.column("suppressed").to_pylist())  # small city cells are withheld
    # The recipient's statistics from the released table are the plain report's.
    cells, _ = persona_statistics(released, plain.config)
    assert (
        cells.select(["dimension", "value", "tgi", "z"]).to_pylist()
        == plain.cells.select(["dimension", "value", "tgi", "z"]).to_pylist()
    )
    assert not list(island.burn.root.iterdir())


def _campaign() -> tuple[pa.Table, pa.Table, pa.Table]:
    """A small campaign: exposures (media), orders (brand), phone ↔ device edges (provider)."""
    rng = np.random.default_rng(5)
    persons, n = 300, 4000
    start_us = int(datetime(2026, 6, 1, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp() * 1e6)
    day_us = 86_400_000_000
    person = rng.integers(0, persons, n)
    click = rng.random(n) < 0.05
    exposures = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": pa.array(
                start_us + rng.integers(0, 14 * day_us, n), pa.timestamp("us", tz="UTC")
            ),
            "event_type": np.where(click, "click", "impression").tolist(),
            "campaign_id": ["c1"] * n,
            "channel": rng.choice(np.array(["douyin", "weibo", "iqiyi"]), n).tolist(),
            "device_id": [f"dev{p:05d}" for p in person],
            "cost": np.where(click, 0.5, 0.05).tolist(),
        }
    )
    m = 400
    buyer = rng.integers(0, persons + 100, m)  # some buyers were never exposed
    orders = pa.table(
        {
            "order_id": [f"o{i}" for i in range(m)],
            "order_time": pa.array(
                start_us + rng.integers(-3 * day_us, 30 * day_us, m), pa.timestamp("us", tz="UTC")
            ),
            "amount": pa.array(rng.integers(1000, 30000, m) / 100).cast(pa.decimal128(18, 2)),
            "phone": [f"139{b:08d}" for b in buyer],
        }
    )
    edges = pa.table(
        {
            "id_type_a": ["phone"] * persons,
            "id_a": [f"139{p:08d}" for p in range(persons)],
            "id_type_b": ["device_id"] * persons,
            "id_b": [f"dev{p:05d}" for p in range(persons)],
        }
    )
    return exposures, orders, edges


def test_island_attribution_equals_the_plain_release(tmp_path: Path) -> None:
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    media, brand, provider = (Party(n, tmp_path) for n in ("media", "brand", "provider"))
    exposures, orders, edges = _campaign()
    fn = BucketFunction(2)
    media.upload(island, media.seal("exposures", exposures, "device_id", fn))
    brand.upload(island, brand.seal("orders", orders, "phone", fn))
    provider.upload(island, provider.seal("edges", edges, "id_a", fn))
    parties = "".join(
        f'[parties.{p.name}]\nsigning_key = "{p.signing_text}"\n' for p in (media, brand, provider)
    )
    inputs = "".join(
        f'[[inputs]]\nname = "{d}"\nparty = "{p.name}"\ndataset = "{d}"\nversion = 1\n'
        for d, p in (("exposures", media), ("orders", brand), ("edges", provider))
    )
    text = (
        'version = 1\njob = "campaign"\ncomputation = "attribution"\n'
        f"{parties}{inputs}"
        '[params]\ncampaign_start = "2026-06-01"\ncampaign_end = "2026-06-14"\n'
        'edges = "edges"\n'
        f'[[outputs]]\nname = "brand-result"\nrecipient = "brand"\n'
        f'public_key = "{brand.public_text}"\nrow_level = false\n'
        f"[guards]\nmin_cell_size = {K}\n"
    ).encode()
    job = submit(island, text)
    policy = sim_policy(island.backend.measurement)
    for party in (media, brand, provider):
        party.release(island, job, policy)
    outcome = island.run(job.job_id)
    assert outcome.status == "done", outcome.error
    (result,) = outcome.results
    released = open_result(result, brand.hpke, job_digest=job.digest).to_pylist()

    config = AttributionConfig(window=CampaignWindow(date(2026, 6, 1), date(2026, 6, 14)))
    plain = run_attribution(exposures, orders, config, graph=build_id_graph(edges))
    expected = release_table(release(plain, Guard(PrivacyPolicy(min_cell_size=K)))).to_pylist()
    assert len(released) == len(expected)
    for got, want in zip(released, expected, strict=True):
        assert {k: v for k, v in got.items() if k != "value"} == {
            k: v for k, v in want.items() if k != "value"
        }
        if want["value"] is None:
            assert got["value"] is None
        else:  # the island reads the logs bucket by bucket: sums may round differently
            assert got["value"] == pytest.approx(want["value"], rel=1e-9, abs=1e-9)
    sections = {r["section"] for r in released}
    assert sections == {"attribution", "delivery", "orders"}
    total = [
        r["value"]
        for r in released
        if (r["section"], r["channel"], r["model"], r["metric"])
        == ("attribution", "(all)", "linear", "orders")
    ]
    assert len(total) == 1
    assert total[0] > 100  # orders really were attributed through the ID graph
    models = {r["model"] for r in released if r["section"] == "attribution"}
    assert {"linear", "markov_1", "shapley"} <= models
    assert not list(island.burn.root.iterdir())


def _three_party_job(
    parties: list[Party],
    inputs: list[tuple[str, Party]],
    computation: str,
    params: str,
    *,
    row_level: bool = False,
) -> bytes:
    recipient = parties[1]
    head = "".join(f'[parties.{p.name}]\nsigning_key = "{p.signing_text}"\n' for p in parties)
    body = "".join(
        f'[[inputs]]\nname = "{d}"\nparty = "{p.name}"\ndataset = "{d}"\nversion = 1\n'
        for d, p in inputs
    )
    return (
        f'version = 1\njob = "{computation}"\ncomputation = "{computation}"\n{head}{body}'
        f"[params]\n{params}"
        f'[[outputs]]\nname = "result"\nrecipient = "{recipient.name}"\n'
        f'public_key = "{recipient.public_text}"\nrow_level = {str(row_level).lower()}\n'
        f"[guards]\nmin_cell_size = {K}\n"
    ).encode()


def test_island_ivt_and_filtered_attribution_equal_the_plain_ones(tmp_path: Path) -> None:
    world = generate_world(WorldConfig(devices=3000, seed=11))
    exposures = world.tables["provider/exposures"]
    orders = world.tables["brand/orders"]
    edges = world.tables["provider/edges"]
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    media, brand, provider = (Party(n, tmp_path) for n in ("media", "brand", "provider"))
    fn = BucketFunction(2)
    media.upload(island, media.seal("exposures", exposures, "device_id", fn))
    brand.upload(island, brand.seal("orders", orders, "order_id", fn))
    provider.upload(island, provider.seal("edges", edges, "id_a", fn))
    policy = sim_policy(island.backend.measurement)
    start, end = world.config.campaign_start, world.config.campaign_end
    window = f'campaign_start = "{start}"\ncampaign_end = "{end}"\n'
    runs = {
        "ivt": _three_party_job([media, brand], [("exposures", media)], "ivt", ""),
        "attribution": _three_party_job(
            [media, brand, provider],
            [("exposures", media), ("orders", brand), ("edges", provider)],
            "attribution",
            window + 'edges = "edges"\nivt = true\nmodels = ["last_touch", "linear"]\n',
        ),
    }
    released = {}
    for name, text in runs.items():
        job = submit(island, text)
        for party in (media, brand, provider):
            party.release(island, job, policy)
        outcome = island.run(job.job_id)
        assert outcome.status == "done", outcome.error
        (result,) = outcome.results
        released[name] = open_result(result, brand.hpke, job_digest=job.digest)

    guard = Guard(PrivacyPolicy(min_cell_size=K))
    plain_ivt = detect_ivt(exposures, IvtConfig(), default_lists())
    by_rule = {r["rule"]: r for r in released["ivt"].to_pylist()}
    for rule in plain_ivt.report.rules:
        stats = plain_ivt.report.per_rule[rule]
        row = by_rule[rule]
        if row["suppressed"]:
            assert stats["devices"] < K
            assert row["cost"] is None
        else:
            assert (row["devices"], row["events"]) == (stats["devices"], stats["events"])
    assert by_rule["any"]["events"] == plain_ivt.report.any["events"] > 0

    config = AttributionConfig(
        window=CampaignWindow(start, end),
        models=("last_touch", "linear"),
    )
    plain = run_attribution(
        exposures,
        orders,
        config,
        graph=build_id_graph(edges),
        exclude_event_ids=plain_ivt.flags["event_id"],
    )
    assert plain.event_counts["excluded_invalid_traffic"] > 0
    expected = release_table(release(plain, guard)).to_pylist()
    got = released["attribution"].to_pylist()
    assert [{k: v for k, v in r.items() if k != "value"} for r in got] == [
        {k: v for k, v in r.items() if k != "value"} for r in expected
    ]
    for a, b in zip(got, expected, strict=True):
        if b["value"] is None:
            assert a["value"] is None
        else:
            assert a["value"] == pytest.approx(b["value"], rel=1e-9, abs=1e-9)


def test_island_lbs_tags_equal_the_plain_ones(tmp_path: Path) -> None:
    world = generate_world(WorldConfig(devices=2000, seed=5))
    pings, pois = world.tables["provider/pings"], world.tables["provider/pois"]
    island, provider, brand = _lbs_island(tmp_path, pings, pois, buckets=2)
    policy = sim_policy(island.backend.measurement)
    released = {}
    for row_level in (True, False):
        text = _three_party_job(
            [provider, brand],
            [("pings", provider), ("pois", provider)],
            "lbs_tags",
            "radius_m = 500\nmin_days = 3\n",
            row_level=row_level,
        )
        job = submit(island, text.replace(b'job = "lbs_tags"', f'job = "lbs-{row_level}"'.encode()))
        provider.release(island, job, policy)
        outcome = island.run(job.job_id)
        assert outcome.status == "done", outcome.error
        (result,) = outcome.results
        released[row_level] = open_result(result, brand.hpke, job_digest=job.digest)

    plain = lbs_tags(pings, pois).tags.sort_by("device_id")
    rows = released[True].sort_by("device_id")
    assert rows.column_names == plain.column_names
    assert rows.to_pylist() == plain.to_pylist()
    assert plain.num_rows > 100

    cells = {(r["dimension"], r["value"]): r for r in released[False].to_pylist()}
    assert cells[("(all)", "(all)")]["devices"] == plain.num_rows
    lists = [f.name for f in plain.schema if pa.types.is_list(f.type)]
    assert lists
    checked = 0
    for column in lists:
        holders: dict[str, int] = {}
        for items in plain[column].to_pylist():
            for value in set(items or []):
                holders[value] = holders.get(value, 0) + 1
        for value, n in holders.items():
            cell = cells[(column, value)]
            if cell["suppressed"]:
                assert n < K or cell["suppression_reason"]
            else:
                assert cell["devices"] == n
                checked += 1
    assert checked > 0


def _lbs_island(
    tmp_path: Path, pings: pa.Table, pois: pa.Table, *, buckets: int
) -> tuple[Island, Party, Party]:
    """An island holding the provider's pings (by device id) and POIs, and the two parties."""
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    provider, brand = Party("provider", tmp_path), Party("brand", tmp_path)
    fn = BucketFunction(buckets)
    provider.upload(island, provider.seal("pings", pings, "device_id", fn))
    provider.upload(island, provider.seal("pois", pois, "poi_id", fn))
    return island, provider, brand


def _island_lbs_rows(
    tmp_path: Path, pings: pa.Table, pois: pa.Table, before_run: Callable[[], None] = lambda: None
) -> pa.Table:
    island, provider, brand = _lbs_island(tmp_path, pings, pois, buckets=4)
    text = _three_party_job(
        [provider, brand],
        [("pings", provider), ("pois", provider)],
        "lbs_tags",
        "radius_m = 500\nmin_days = 2\n",
        row_level=True,
    )
    job = submit(island, text)
    provider.release(island, job, sim_policy(island.backend.measurement))
    before_run()
    outcome = island.run(job.job_id)
    assert outcome.status == "done", outcome.error
    (result,) = outcome.results
    return open_result(result, brand.hpke, job_digest=job.digest).sort_by("device_id")


def test_island_lbs_tags_stream_only_when_each_device_is_in_one_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pings bucketed by device id stream bucket by bucket; pings whose buckets do not
    follow their normalized device ids (a device could be split) are read whole. Both equal
    the plain computation."""
    world = generate_world(WorldConfig(devices=400, seed=3))
    pings, pois = world.tables["provider/pings"], world.tables["provider/pois"]
    calls: list[int] = []
    real = insight_jobs.lbs_tags

    def spy(table: pa.Table, *args: Any, **kwargs: Any) -> Any:
        calls.append(table.num_rows)
        return real(table, *args, **kwargs)

    monkeypatch.setattr(insight_jobs, "lbs_tags", spy)
    rows = _island_lbs_rows(tmp_path / "normalized", pings, pois)
    config = LbsConfig(radius_m=500, min_days=2)
    plain = lbs_tags(pings, pois, config).tags.sort_by("device_id")
    assert rows.to_pylist() == plain.to_pylist()
    assert len(calls) > 1  # one call per bucket
    assert sum(calls) == pings.num_rows

    calls.clear()
    real_assign = BucketFunction.assign_arrow

    def shifted(self: BucketFunction, column: Any, **kwargs: Any) -> Any:
        return (real_assign(self, column, **kwargs) + 1) % self.buckets

    def misbucket() -> None:  # as if the party had bucketed by another function
        monkeypatch.setattr(BucketFunction, "assign_arrow", shifted)

    rows = _island_lbs_rows(tmp_path / "other", pings, pois, before_run=misbucket)
    assert rows.to_pylist() == plain.to_pylist()
    assert calls == [pings.num_rows]  # read whole
