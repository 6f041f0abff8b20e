"""Known-answer and property tests of LBS: haversine, stay points, the POI grid index, tags."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.analytics.lbs import (
    LbsConfig,
    PoiIndex,
    StayConfig,
    _stays_sorted,
    detect_stays,
    haversine_m,
    lbs_tags,
)
from atoll.errors import ConfigError, InputError

T0 = datetime(2026, 5, 10, 2, 0, tzinfo=UTC)  # 10:00 Shanghai
M_PER_DEG = 6_371_008.8 * math.pi / 180


def pings(rows: list[tuple[str, datetime, float, float]]) -> pa.Table:
    return pa.table(
        {
            "device_id": pa.array([r[0] for r in rows], pa.string()),
            "ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "lat": pa.array([r[2] for r in rows], pa.float64()),
            "lon": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


def pois(rows: list[tuple[str, str, float, float]]) -> pa.Table:
    return pa.table(
        {
            "poi_id": [r[0] for r in rows],
            "name": [f"{r[0]} name" for r in rows],
            "category": [r[1] for r in rows],
            "lat": pa.array([r[2] for r in rows], pa.float64()),
            "lon": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


def north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / M_PER_DEG, lon


def test_haversine_vectors() -> None:
    # methods.md §7.1: haversine 2.9.0 (MIT) with R = 6371.0088 km
    assert haversine_m(45.7597, 4.8422, 48.8567, 2.3508) / 1000 == pytest.approx(
        392.2172595594006, rel=1e-12
    )
    assert haversine_m(39.9042, 116.4074, 31.2304, 121.4737) / 1000 == pytest.approx(
        1067.311645158726, rel=1e-12
    )
    assert haversine_m(10.0, 20.0, 10.0, 20.0) == 0.0


def test_stay_points_known_answer() -> None:
    lat0, lon0 = 31.2304, 121.4737
    a = north(lat0, lon0, 30)
    b = north(lat0, lon0, 5_000)
    rows = [
        # 0-40 min around (lat0, lon0): a stay of 3 pings, centroid = mean
        ("d1", T0, lat0, lon0),
        ("d1", T0 + timedelta(minutes=20), a[0], a[1]),
        ("d1", T0 + timedelta(minutes=40), lat0, lon0),
        # moved 5 km: a 5-minute stop is shorter than T = 10 min
        ("d1", T0 + timedelta(minutes=60), b[0], b[1]),
        ("d1", T0 + timedelta(minutes=65), b[0], b[1]),
        # back at the first place after a 3 h silence: gap > 2 h, so a new stay of 15 min
        ("d1", T0 + timedelta(hours=4), lat0, lon0),
        ("d1", T0 + timedelta(hours=4, minutes=15), lat0, lon0),
        # another device at the same place, one ping: no stay
        ("d2", T0, lat0, lon0),
    ]
    stays = detect_stays(pings(rows), StayConfig())
    assert stays["device_id"].to_pylist() == ["d1", "d1"]
    assert stays["pings"].to_pylist() == [3, 2]
    assert stays["arrive"].to_pylist()[0] == T0
    assert stays["depart"].to_pylist()[0] == T0 + timedelta(minutes=40)
    assert stays["lat"].to_pylist()[0] == pytest.approx((2 * lat0 + a[0]) / 3)


def test_drifting_segment_is_recut_by_the_anchor_rule() -> None:
    # A slow walk north, 80 m every 5 minutes: consecutive pings are within D = 200 m, but
    # Li's anchor rule ends a stay once a ping is > 200 m from the stay's first ping.
    lat0, lon0 = 30.0, 120.0
    rows = [("d", T0 + timedelta(minutes=5 * i), *north(lat0, lon0, 80 * i)) for i in range(7)]
    stays = detect_stays(pings(rows), StayConfig(min_dwell_s=600))
    # anchor 0: pings 0,1,2 (0, 80, 160 m), ping 3 at 240 m ends it → stay [0,3), 10 min
    # anchor 3: pings 3,4,5 → stay [3,6); anchor 6: alone
    assert stays["pings"].to_pylist() == [3, 3]
    assert stays["arrive"].to_pylist() == [T0, T0 + timedelta(minutes=15)]


def _reference_stays(
    dev: list[int], t: list[int], lat: list[float], lon: list[float], cfg: StayConfig
) -> list[tuple[int, int]]:
    """Li et al. with the documented breaks, one ping at a time (slow, obviously right)."""
    out = []
    n = len(t)
    i = 0
    while i < n:
        j = i + 1
        while (
            j < n
            and dev[j] == dev[i]
            and t[j] - t[j - 1] <= cfg.max_gap_s * 1e6
            and haversine_m(lat[j - 1], lon[j - 1], lat[j], lon[j]) <= cfg.distance_m
            and haversine_m(lat[i], lon[i], lat[j], lon[j]) <= cfg.distance_m
        ):
            j += 1
        if t[j - 1] - t[i] >= cfg.min_dwell_s * 1e6 and j - i >= cfg.min_pings:
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # device
            st.integers(0, 90),  # minutes since the previous ping of the list
            st.floats(-150, 150),  # metres north of the base
            st.floats(-150, 150),  # metres east of the base
        ),
        min_size=1,
        max_size=40,
    )
)
def test_vectorised_stays_equal_the_reference(steps: list[tuple[int, int, float, float]]) -> None:
    cfg = StayConfig(distance_m=120, min_dwell_s=600, max_gap_s=3600, min_pings=2)
    rows = sorted(
        (d, sum(s[1] for s in steps[: k + 1]), n, e) for k, (d, _, n, e) in enumerate(steps)
    )
    dev = [r[0] for r in rows]
    t = [r[1] * 60_000_000 for r in rows]
    lat = [30.0 + r[2] / M_PER_DEG for r in rows]
    lon = [120.0 + r[3] / (M_PER_DEG * math.cos(math.radians(30.0))) for r in rows]
    s, e = _stays_sorted(
        np.array(dev, np.int64), np.array(t, np.int64), np.array(lat), np.array(lon), cfg
    )
    got = list(zip(s.tolist(), e.tolist(), strict=True))
    assert got == _reference_stays(dev, t, lat, lon, cfg)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31),
    st.floats(10, 3000),
    st.floats(-70, 70),
)
def test_grid_index_finds_exactly_the_pois_within_the_radius(
    seed: int, radius: float, lat0: float
) -> None:
    rng = np.random.default_rng(seed)
    span = 4 * radius / M_PER_DEG
    n_poi, n_pt = 40, 200
    plat = lat0 + rng.uniform(-span, span, n_poi)
    plon = 100.0 + rng.uniform(-span, span, n_poi) / math.cos(math.radians(lat0))
    table = pois(
        [
            (f"p{i}", "c", float(a), float(b))
            for i, (a, b) in enumerate(zip(plat, plon, strict=True))
        ]
    )
    index = PoiIndex.build(table, radius)
    lat = lat0 + rng.uniform(-span, span, n_pt)
    lon = 100.0 + rng.uniform(-span, span, n_pt) / math.cos(math.radians(lat0))
    pts, poi, dist = index.within(lat, lon)
    got = set(zip(pts.tolist(), poi.tolist(), strict=True))
    d = haversine_m(lat[:, None], lon[:, None], plat[None, :], plon[None, :])
    want = {(int(i), int(j)) for i, j in zip(*np.nonzero(d <= radius), strict=True)}
    assert got == want
    assert np.all(dist <= radius)


def test_visits_tags_and_window() -> None:
    lat0, lon0 = 31.2304, 121.4737
    store = north(lat0, lon0, 0)
    mall = north(lat0, lon0, 3000)
    near = north(store[0], store[1], 40)
    rows = []
    # d1 visits the store on 3 days (May 10, 12, 14) and the mall once; each stay 30 min
    for day, where in ((0, store), (2, store), (4, store), (1, mall)):
        start = T0 + timedelta(days=day)
        rows.append(("d1", start, *where))
        rows.append(("d1", start + timedelta(minutes=30), *(near if where == store else where)))
    # d1 also visited the store long before the window (April 1): not counted
    old = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    rows += [("d1", old, *store), ("d1", old + timedelta(minutes=30), *store)]
    # d1 stops twice on the same day (May 10, evening): still one visit that day
    rows += [
        ("d1", T0 + timedelta(hours=8), *store),
        ("d1", T0 + timedelta(hours=8, minutes=20), *store),
    ]
    # d2 only passes by (a single ping)
    rows.append(("d2", T0, *store))
    # d3: a stay at 23:50-00:20 UTC on May 10 = 07:50-08:20 May 11 in Shanghai
    late = datetime(2026, 5, 10, 23, 50, tzinfo=UTC)
    rows += [("d3", late, *mall), ("d3", late + timedelta(minutes=30), *mall)]
    p = pois([("store", "brand_store", *store), ("mall", "mall", *mall)])
    cfg = LbsConfig(radius_m=100, min_days=3, days=30, as_of=date(2026, 5, 20))
    res = lbs_tags(pings(rows), p, cfg)
    v = res.visits
    d1_store = v.filter(pa.compute.and_(pa.compute.equal(v["device_id"], "d1"),
                                        pa.compute.equal(v["poi_id"], "store")))  # fmt: skip
    assert [d.isoformat() for d in d1_store["visit_date"].to_pylist()] == [
        "2026-04-01", "2026-05-10", "2026-05-12", "2026-05-14",
    ]  # fmt: skip
    may10 = d1_store.slice(1, 1).to_pylist()[0]
    assert may10["pings"] == 4  # the morning and evening stays merged into one daily visit
    assert may10["depart"] == T0 + timedelta(hours=8, minutes=20)
    d3 = v.filter(pa.compute.equal(v["device_id"], "d3")).to_pylist()
    assert d3[0]["visit_date"] == date(2026, 5, 11)
    tags = {r["device_id"]: r for r in res.tags.to_pylist()}
    assert set(tags) == {"d1", "d2", "d3"}
    assert tags["d1"]["lbs_visited_pois"] == ["mall", "store"]
    assert tags["d1"]["lbs_frequent_pois"] == ["store"]
    assert tags["d1"]["lbs_frequent_categories"] == ["brand_store"]
    assert tags["d1"]["lbs_days_brand_store"] == 3  # April 1 is outside [Apr 20, May 20)
    assert tags["d1"]["lbs_days_mall"] == 1
    assert tags["d2"]["lbs_visited_pois"] == []
    assert tags["d2"]["lbs_days_mall"] == 0
    assert tags["d3"]["lbs_visited_pois"] == ["mall"]
    # the default window ends the day after the last ping (May 14, local)
    assert lbs_tags(pings(rows), p, LbsConfig(radius_m=100)).as_of == date(2026, 5, 15)


def test_config_and_input_errors() -> None:
    with pytest.raises(ConfigError, match="radius_m"):
        LbsConfig(radius_m=0)
    with pytest.raises(ConfigError, match="min_days"):
        LbsConfig(min_days=40, days=30)
    with pytest.raises(ConfigError, match="distance_m"):
        StayConfig(distance_m=-1)
    bad = pings([("d", T0, 95.0, 120.0)])
    with pytest.raises(InputError, match="lat"):
        lbs_tags(bad, pois([("p", "c", 30.0, 120.0)]))
    dup = pois([("p", "c", 30.0, 120.0), ("p", "c", 31.0, 120.0)])
    with pytest.raises(Exception, match="unique"):
        lbs_tags(pings([("d", T0, 30.0, 120.0)]), dup)
