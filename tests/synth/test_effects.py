"""The planted effects are visible with plain computations, and the truth tables are exact."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from atoll.synth import World
from atoll.synth.geo import haversine_m
from atoll.synth.reference import BOT_USER_AGENTS


@pytest.fixture(scope="module")
def frames(effects_world: World) -> dict[str, pd.DataFrame]:
    t, tr = effects_world.tables, effects_world.truth
    persons = tr["persons"].to_pandas()
    events = (
        t["provider/exposures"]
        .to_pandas()
        .merge(tr["ivt_labels"].to_pandas(), on="event_id", how="left")
    )
    events = events.merge(persons[["device_id", "person_id"]], on="device_id")
    return {
        "persons": persons,
        "events": events,
        "causes": tr["order_causes"].to_pandas(),
        "orders": t["brand/orders"].to_pandas(),
        "propensity": tr["propensity"].to_pandas(),
        "universe": t["provider/universe"].to_pandas(),
    }


def _rate(people: set[str], buyers: set[str]) -> float:
    return len(people & buyers) / max(len(people), 1)


def test_clicked_and_exposed_people_buy_more(frames: dict[str, pd.DataFrame]) -> None:
    ev, causes, persons = frames["events"], frames["causes"], frames["persons"]
    valid = ev[ev["ivt_type"].isna()]
    clicked = set(valid.loc[valid["event_type"] == "click", "person_id"])
    exposed = set(valid["person_id"])
    humans = set(persons.loc[~persons["is_bot"], "person_id"])
    buyers = set(causes.loc[causes["in_window"], "person_id"])
    r_click, r_view, r_none = (
        _rate(clicked, buyers),
        _rate(exposed - clicked, buyers),
        _rate(humans - exposed, buyers),
    )
    assert len(clicked) > 200
    assert r_click > 3 * r_none
    assert r_view > r_none
    assert r_click > r_view


def test_high_propensity_buys_more(frames: dict[str, pd.DataFrame]) -> None:
    prop = frames["propensity"].drop_duplicates("person_id")
    prop = prop[prop["propensity"] > 0]
    buyers = set(frames["causes"]["person_id"])
    quintile = pd.qcut(prop["propensity"], 5, labels=False)
    rates = prop["person_id"].isin(buyers).groupby(quintile).mean()
    assert rates.is_monotonic_increasing
    assert rates.iloc[-1] > 5 * rates.iloc[0]
    # organic orders come exactly from the planted buyers
    organic = frames["causes"][frames["causes"]["caused_by_channel"].isna()]
    planted = set(prop.loc[prop["is_planted_buyer"], "person_id"])
    assert set(organic["person_id"]) == planted
    assert abs(prop["propensity"].mean() - 0.04) < 0.005


def test_caused_orders_follow_a_valid_touch_in_their_channel(
    frames: dict[str, pd.DataFrame],
) -> None:
    ev, causes, orders = frames["events"], frames["causes"], frames["orders"]
    caused = causes.dropna(subset=["caused_by_channel"]).merge(
        orders[["order_id", "order_time"]], on="order_id"
    )
    assert len(caused) > 0
    assert caused["in_window"].all()
    valid = ev[ev["ivt_type"].isna()]
    first = valid.groupby(["person_id", "channel"])["event_time"].min().rename("first_touch")
    joined = caused.join(first, on=["person_id", "caused_by_channel"])
    assert joined["first_touch"].notna().all()
    assert (joined["order_time"] > joined["first_touch"]).all()
    clicks = valid[valid["event_type"] == "click"].groupby(["person_id", "channel"]).size()
    by_click = caused[caused["cause_touch"] == "click"]
    keys = list(zip(by_click["person_id"], by_click["caused_by_channel"], strict=True))
    assert all(k in clicks.index for k in keys)


def test_channel_lift_truth_matches_the_orders(effects_world: World) -> None:
    lift = effects_world.truth["channel_lift"].to_pandas().set_index("channel")
    causes = effects_world.truth["order_causes"].to_pandas()
    counted = causes["caused_by_channel"].value_counts()
    for channel, row in lift.iterrows():
        assert row["caused_orders"] == counted.get(channel, 0)
        expected = row["expected_caused_orders"]
        assert abs(row["caused_orders"] - expected) <= 4 * np.sqrt(expected) + 1
        assert row["cost"] >= row["valid_cost"] > 0
        assert row["clicked_persons"] < row["exposed_persons"]
    ev = effects_world.tables["provider/exposures"]
    total = pc.sum(ev["cost"]).as_py()
    assert np.isclose(lift["cost"].sum(), total, rtol=1e-6)


def test_exposure_is_targeted_and_heavy_tailed(frames: dict[str, pd.DataFrame]) -> None:
    ev, prop = frames["events"], frames["propensity"]
    valid_imps = ev[ev["ivt_type"].isna() & (ev["event_type"] == "impression")]
    exposed = set(valid_imps["device_id"])
    prop = prop.assign(exposed=prop["device_id"].isin(exposed))
    ta_share_exposed = prop.loc[prop["exposed"], "in_target_audience"].mean()
    assert ta_share_exposed > 1.3 * prop["in_target_audience"].mean()
    freq = valid_imps.groupby(["device_id", "channel"]).size()
    assert freq.median() <= 3
    assert freq.quantile(0.99) >= 5 * freq.median()
    ctr = (
        ev[ev["ivt_type"].isna()]
        .groupby("channel")["event_type"]
        .apply(lambda s: (s == "click").sum() / (s == "impression").sum())
    )
    assert ((ctr > 0.003) & (ctr < 0.06)).all()


def test_ivt_signatures(frames: dict[str, pd.DataFrame], effects_world: World) -> None:
    ev = frames["events"]
    per_device = ev.groupby("device_id").size()
    bots = set(ev.loc[ev["ivt_type"] == "bot", "device_id"])
    humans = per_device.index.difference(list(bots))
    assert per_device[list(bots)].median() > 20 * per_device[humans].median()
    assert set(ev.loc[ev["ivt_type"] == "bot", "user_agent"]) <= set(BOT_USER_AGENTS)
    assert not set(ev.loc[ev["ivt_type"].isna(), "user_agent"]) & set(BOT_USER_AGENTS)
    ranges = [
        ipaddress.ip_network(c)
        for c in effects_world.truth["datacenter_ranges"]["cidr"].to_pylist()
    ]

    def in_dc(ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in ranges)

    assert ev.loc[ev["ivt_type"] == "datacenter", "ip"].map(in_dc).all()
    assert not ev.loc[ev["ivt_type"].isna(), "ip"].head(5000).map(in_dc).any()
    labels = effects_world.truth["ivt_labels"].to_pandas()
    assert set(labels.groupby("ivt_type")["ivt_class"].first().items()) == {
        ("bot", "GIVT"),
        ("datacenter", "GIVT"),
        ("click_injection", "SIVT"),
        ("abnormal_frequency", "SIVT"),
    }

    # Click gaps: injected clicks sit within ~1 s after (or before) an impression of the same
    # device and channel; genuine clicks lag their impression by at least 2 s.
    imps = ev[ev["event_type"] == "impression"][["device_id", "channel", "event_time"]]
    clicks = ev[ev["event_type"] == "click"][["device_id", "channel", "event_time", "ivt_type"]]
    imps = imps.sort_values("event_time")
    clicks = clicks.sort_values("event_time")
    back = pd.merge_asof(
        clicks, imps.rename(columns={"event_time": "imp_time"}), left_on="event_time",
        right_on="imp_time", by=["device_id", "channel"], direction="nearest",
    )  # fmt: skip
    gap = (back["event_time"] - back["imp_time"]).dt.total_seconds().abs()
    injected = gap[back["ivt_type"] == "click_injection"]
    genuine = gap[back["ivt_type"].isna()]
    assert len(injected) > 10
    assert injected.max() <= 30.0
    assert (injected <= 1.0).mean() > 0.7
    assert (genuine >= 2.0).mean() > 0.95
    before = back[(back["ivt_type"] == "click_injection") & (back["event_time"] < back["imp_time"])]
    assert len(before) > 0

    # Abnormal frequency: >= 100 impressions of one device within two hours.
    abn = ev[ev["ivt_type"] == "abnormal_frequency"]
    for _, burst in abn.groupby("device_id"):
        assert len(burst) >= 100
        span = burst["event_time"].max() - burst["event_time"].min()
        assert span <= pd.Timedelta(hours=2)


def test_buyers_over_index_on_planted_tags(frames: dict[str, pd.DataFrame]) -> None:
    u = frames["universe"].merge(frames["propensity"], on="device_id")
    u = u[u["propensity"] > 0]
    has_hair = u["interests"].map(lambda v: v is not None and "hair_care" in v)
    known = u["interests"].notna()
    buyers = u["is_planted_buyer"]
    share_buyers = has_hair[buyers & known].mean()
    share_all = has_hair[known].mean()
    tgi = 100 * share_buyers / share_all
    assert tgi > 130
    female = u["gender"] == "female"
    assert female[buyers].mean() > female.mean()


def test_lbs_visits_are_exactly_the_pings_near_stores(small_world: World) -> None:
    pois = small_world.tables["provider/pois"].to_pandas()
    pings = small_world.tables["provider/pings"].to_pandas()
    visits = small_world.truth["lbs_visits"].to_pandas()
    shops = pois[pois["category"].isin(["brand_store", "competitor_store", "mall"])]
    plat, plon = pings["lat"].to_numpy(), pings["lon"].to_numpy()
    nearest = np.full(len(pings), np.inf)
    which = np.full(len(pings), -1)
    for start in range(0, len(shops), 200):  # chunks of POIs, vectorised over all pings
        chunk = shops.iloc[start : start + 200]
        d = haversine_m(
            plat[:, None],
            plon[:, None],
            chunk["lat"].to_numpy()[None, :],
            chunk["lon"].to_numpy()[None, :],
        )
        j = d.argmin(axis=1)
        dmin = d[np.arange(len(pings)), j]
        better = dmin < nearest
        nearest[better] = dmin[better]
        which[better] = start + j[better]
    for radius in (100.0, 200.0):
        near = pings[nearest <= radius].assign(
            poi_id=shops["poi_id"].to_numpy()[which[nearest <= radius]]
        )
        near = near.assign(visit_date=near["ts"].dt.tz_convert("Asia/Shanghai").dt.date)
        found = near.groupby(["device_id", "poi_id", "visit_date"]).size()
        truth = visits.set_index(["device_id", "poi_id", "visit_date"])["pings"]
        assert found.sort_index().equals(truth.sort_index().astype(found.dtype))
    # near-misses exist just outside the exclusion zone, so the radius matters
    assert ((nearest > 250.0) & (nearest < 450.0)).sum() > 0
    assert not ((nearest > 60.0) & (nearest < 250.0)).any()
    # a tag with a known answer: devices with >= 3 brand-store visit days
    brand = visits[visits["category"] == "brand_store"].groupby("device_id")["visit_date"].nunique()
    assert (brand >= 3).sum() > 0
    assert (brand < 3).sum() > 0


def test_home_anchor_explains_night_pings(small_world: World) -> None:
    pois = small_world.tables["provider/pois"].to_pandas().set_index("poi_id")
    pings = small_world.tables["provider/pings"].to_pandas()
    anchors = small_world.truth["lbs_anchors"].to_pandas()
    local = pings["ts"].dt.tz_convert("Asia/Shanghai")
    night = pings[(local.dt.hour >= 23) | (local.dt.hour < 6)].merge(anchors, on="device_id")
    home = pois.loc[night["home_poi_id"]]
    d = haversine_m(night["lat"], night["lon"], home["lat"].to_numpy(), home["lon"].to_numpy())
    assert len(night) > 100
    assert (d <= 60.0).all()


def test_media_behaviour_carries_the_propensity_signal(effects_world: World) -> None:
    users = effects_world.tables["media/users"].to_pandas()
    beh = effects_world.tables["media/behaviour"].to_pandas()
    prop = effects_world.truth["propensity"].to_pandas()[["device_id", "is_planted_buyer"]]
    buyer_of_user = (
        users.merge(prop, on="device_id").groupby("media_user_id")["is_planted_buyer"].max()
    )
    beh = beh.join(buyer_of_user, on="media_user_id")
    hair = beh["item_category"] == "hair_care"
    assert hair[beh["is_planted_buyer"]].mean() > 2 * hair[~beh["is_planted_buyer"]].mean()
    assert set(beh["action"]) == {"add_to_cart", "favourite", "ad_click"}
