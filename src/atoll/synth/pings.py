"""Points of interest and location pings, with planted visits whose answers are known.

Why: an LBS tag ("visited a brand store on >= 3 days within 200 m in the last
30 days") is only testable if the pings near every POI are exactly the visits
we planted. So the geometry is arranged to make the truth unambiguous:

* POIs of one city are at least :data:`MIN_POI_SEPARATION_M` apart;
* planted pings (home, work, shopping visits) lie within
  :data:`JITTER_MAX_M` of their POI;
* "near-miss" passes (one ping, no dwell) lie 250-450 m from a store or mall
  and at least :data:`CLEARANCE_M` from every other POI;
* background pings (commuting, errands) lie at least ``CLEARANCE_M`` -
  ``JITTER_MAX_M`` from every POI.

Hence, for any radius ``r`` in ``[JITTER_MAX_M, 250 m)``, the pings within
``r`` of a ``brand_store`` / ``competitor_store`` / ``mall`` POI are exactly
the pings of ``truth/lbs_visits`` for that POI; home and work anchors are in
``truth/lbs_anchors``.

Daily rhythm (local time) keeps planted stays from interleaving: home
22:00-07:00, background 07:00-08:50 (and weekend afternoons), work 09:00-11:20
and 14:00-17:50 on weekdays, brand-store visits arrive 11:30-12:30 and stay
20-90 min, competitor-store visits 18:00-18:40 for 20-60 min, mall visits
19:45-20:30 for 20-80 min, near-misses 14:00-17:50. Real trajectories are
messier; this world trades that for exact answers. Brand-store visitors are
more often planted buyers (the LBS tag carries signal for lookalike models).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.synth._columns import (
    LOCAL_OFFSET_US,
    US_PER_DAY,
    US_PER_SECOND,
    local_midnight_us,
    prefixed_numbers,
    take_labels,
    timestamps,
)
from atoll.synth.config import WorldConfig
from atoll.synth.geo import CITIES, POI_KINDS, city_weights, haversine_m
from atoll.synth.universe import Population

__all__ = [
    "CLEARANCE_M",
    "JITTER_MAX_M",
    "MIN_POI_SEPARATION_M",
    "NEAR_MISS_M",
    "LbsData",
    "build_lbs",
]

Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: Minimum distance between two POIs of a city.
MIN_POI_SEPARATION_M: Final = 700.0
#: Planted pings are at most this far from their POI (GPS noise, clipped).
JITTER_MAX_M: Final = 60.0
#: Near-miss passes: distance range from the store or mall they pass.
NEAR_MISS_M: Final = (250.0, 450.0)
#: Background places and near-misses keep this distance from every (other) POI.
CLEARANCE_M: Final = 520.0
_M_PER_DEG_LAT: Final = 110_574.0
_VISIT_KINDS: Final = ("brand_store", "competitor_store", "mall")
# (arrive window start hour, arrive window length h, min dwell min, max dwell min)
_VISIT_SLOTS: Final = {
    "brand_store": (11.5, 1.0, 20, 90),
    "competitor_store": (18.0, 0.66, 20, 60),
    "mall": (19.75, 0.75, 20, 80),
}


@dataclass
class LbsData:
    """``provider/pois``, ``provider/pings``, ``truth/lbs_visits`` and ``truth/lbs_anchors``."""

    pois: pa.Table
    pings: pa.Table
    visits: pa.Table
    anchors: pa.Table


def _offset(lat: Float, lon: Float, dist_m: Float, bearing: Float) -> tuple[Float, Float]:
    """Points ``dist_m`` away from (lat, lon) at ``bearing`` (local flat approximation)."""
    dlat = dist_m * np.cos(bearing) / _M_PER_DEG_LAT
    dlon = dist_m * np.sin(bearing) / (_M_PER_DEG_LAT * np.cos(np.radians(lat)))
    return lat + dlat, lon + dlon


def _jitter(rng: np.random.Generator, lat: Float, lon: Float) -> tuple[Float, Float]:
    dist = np.minimum(np.abs(rng.normal(0.0, 22.0, lat.size)), JITTER_MAX_M - 5.0)
    return _offset(lat, lon, dist, rng.uniform(0.0, 2 * np.pi, lat.size))


def _place_pois(rng: np.random.Generator) -> tuple[Int, Int, Float, Float]:
    """POIs per city (city index, kind index, lat, lon), pairwise >= MIN_POI_SEPARATION_M."""
    weights = city_weights() * len(CITIES)
    cities: list[int] = []
    kinds: list[int] = []
    lats: list[float] = []
    lons: list[float] = []
    for ci, city in enumerate(CITIES):  # loops over cities and POIs: a few thousand, not rows
        want = [max(k.minimum, round(k.per_city * weights[ci])) for k in POI_KINDS]
        sigma = 3_000.0 + 3_000.0 * min(weights[ci], 2.0)
        placed_lat: list[float] = []
        placed_lon: list[float] = []
        for kind, count in enumerate(want):
            got = 0
            while got < count:
                dist = np.abs(rng.normal(0.0, sigma, 64))
                clat, clon = _offset(
                    np.full(64, city.lat),
                    np.full(64, city.lon),
                    dist,
                    rng.uniform(0, 2 * np.pi, 64),
                )
                for la, lo in zip(clat, clon, strict=True):
                    if got == count:
                        break
                    if (
                        placed_lat
                        and haversine_m(la, lo, np.array(placed_lat), np.array(placed_lon)).min()
                        < MIN_POI_SEPARATION_M
                    ):
                        continue
                    placed_lat.append(float(la))
                    placed_lon.append(float(lo))
                    cities.append(ci)
                    kinds.append(kind)
                    got += 1
        lats.extend(placed_lat)
        lons.extend(placed_lon)
    return np.array(cities), np.array(kinds), np.array(lats), np.array(lons)


def _clear_points(
    rng: np.random.Generator,
    city_lat: float,
    city_lon: float,
    poi_lat: Float,
    poi_lon: Float,
    count: int,
    sigma: float,
) -> tuple[Float, Float]:
    """``count`` random places in a city, each >= CLEARANCE_M from every POI of that city."""
    out_lat: list[Float] = []
    out_lon: list[Float] = []
    have = 0
    while have < count:
        k = 4 * count
        la, lo = _offset(
            np.full(k, city_lat),
            np.full(k, city_lon),
            np.abs(rng.normal(0, sigma, k)),
            rng.uniform(0, 2 * np.pi, k),
        )
        d = haversine_m(la[:, None], lo[:, None], poi_lat[None, :], poi_lon[None, :]).min(axis=1)
        ok = d >= CLEARANCE_M
        out_lat.append(la[ok])
        out_lon.append(lo[ok])
        have += int(ok.sum())
    return np.concatenate(out_lat)[:count], np.concatenate(out_lon)[:count]


def _rows_per_key(key: Int, n_keys: int) -> tuple[Int, Int]:
    """For rows sorted by ``key``: start offset and count per key value."""
    counts = np.bincount(key, minlength=n_keys)
    starts = np.zeros(n_keys, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts, counts


def _pick_in_group(rng: np.random.Generator, group: Int, starts: Int, counts: Int) -> Int:
    """One random member index per row, from the group ``group[i]`` (groups must be non-empty)."""
    return np.asarray(starts[group] + (rng.random(group.size) * counts[group]).astype(np.int64))


def build_lbs(config: WorldConfig, pop: Population, rng: np.random.Generator) -> LbsData:
    """Generate POIs, pings and the visit/anchor truth."""
    poi_city, poi_kind, poi_lat, poi_lon = _place_pois(rng)
    n_poi = poi_city.size
    kind_names = [k.category for k in POI_KINDS]
    kind_of = {name: i for i, name in enumerate(kind_names)}
    # POIs sorted by (kind, city) so that "a random POI of kind k in city c" is a slice.
    order = np.lexsort((poi_city, poi_kind))
    poi_city, poi_kind, poi_lat, poi_lon = (
        poi_city[order],
        poi_kind[order],
        poi_lat[order],
        poi_lon[order],
    )
    n_city = len(CITIES)
    group = poi_kind * n_city + poi_city
    g_start, g_count = _rows_per_key(group, len(POI_KINDS) * n_city)
    names = [
        f"{CITIES[c].name} {POI_KINDS[k].name_stem} {i:02d}"
        for i, (c, k) in enumerate(zip(poi_city, poi_kind, strict=True))
    ]
    pois = pa.table(
        {
            "poi_id": prefixed_numbers("poi_", np.arange(1, n_poi + 1), 6),
            "name": pa.array(names, pa.string()),
            "category": take_labels(kind_names, poi_kind),
            "lat": pa.array(np.round(poi_lat, 6), pa.float64()),
            "lon": pa.array(np.round(poi_lon, 6), pa.float64()),
        }
    )
    poi_lat, poi_lon = pois["lat"].to_numpy(), pois["lon"].to_numpy()

    # --- who is pinged, and their anchors -----------------------------------------------
    human_dev = ~pop.is_bot[pop.person_of_device]
    dev = np.nonzero(human_dev & (rng.random(pop.n_devices) < config.ping_device_share))[0]
    person = pop.person_of_device[dev]
    city = pop.city[person]
    nd = dev.size
    home = _pick_in_group(rng, kind_of["residential"] * n_city + city, g_start, g_count)
    works = (pop.occupation[person] != 0) & (pop.occupation[person] != 8) & (rng.random(nd) < 0.8)
    work = np.where(
        works, _pick_in_group(rng, kind_of["office"] * n_city + city, g_start, g_count), -1
    )

    days = config.ping_days
    first_day = config.campaign_start - timedelta(days=days)
    day0_us = local_midnight_us(first_day)
    weekday = np.array([(first_day + timedelta(days=i)).weekday() < 5 for i in range(days)])
    hour_us = 3600 * US_PER_SECOND

    lat_parts: list[Float] = []
    lon_parts: list[Float] = []
    t_parts: list[Int] = []
    d_parts: list[Int] = []

    def emit(devrow: Int, t_us: Int, lat: Float, lon: Float) -> None:
        d_parts.append(devrow)
        t_parts.append(t_us)
        lat_parts.append(lat)
        lon_parts.append(lon)

    # Home: nights (22:00-07:00, folded into the same calendar day), ~0.7 pings a day.
    k = rng.poisson(0.7 * days, nd)
    row = np.repeat(np.arange(nd), k)
    day = rng.integers(0, days, row.size)
    night = (22 * hour_us + (rng.random(row.size) * 9 * hour_us).astype(np.int64)) % US_PER_DAY
    t = day0_us + day * US_PER_DAY + night
    emit(row, t, *_jitter(rng, poi_lat[home[row]], poi_lon[home[row]]))

    # Work: weekdays 09:00-11:20 and 14:00-17:50, ~1.2 pings a working day.
    workdays = np.nonzero(weekday)[0]
    k = np.where(work >= 0, rng.poisson(1.2 * workdays.size, nd), 0)
    row = np.repeat(np.arange(nd), k)
    day = workdays[rng.integers(0, workdays.size, row.size)]
    morning = rng.random(row.size) < 0.4
    offset = np.where(
        morning,
        9 * hour_us + rng.random(row.size) * (2 + 1 / 3) * hour_us,
        14 * hour_us + rng.random(row.size) * (3 + 5 / 6) * hour_us,
    )
    t = day0_us + day * US_PER_DAY + offset.astype(np.int64)
    emit(row, t, *_jitter(rng, poi_lat[work[row]], poi_lon[work[row]]))

    # Background: a few personal places per device (cleared of POIs), commute hours and
    # weekend afternoons.
    per_city_pool = 200
    pool_lat = np.empty((n_city, per_city_pool))
    pool_lon = np.empty((n_city, per_city_pool))
    for ci, c in enumerate(CITIES):
        in_city = poi_city == ci
        pool_lat[ci], pool_lon[ci] = _clear_points(
            rng, c.lat, c.lon, poi_lat[in_city], poi_lon[in_city], per_city_pool, 6_000.0
        )
    k = rng.poisson(0.35 * days, nd)
    row = np.repeat(np.arange(nd), k)
    place = rng.integers(0, per_city_pool, row.size)
    day = rng.integers(0, days, row.size)
    weekend = ~weekday[day]
    offset = np.where(
        weekend & (rng.random(row.size) < 0.5),
        14 * hour_us + rng.random(row.size) * (3 + 5 / 6) * hour_us,
        7 * hour_us + rng.random(row.size) * (1 + 5 / 6) * hour_us,
    )
    t = day0_us + day * US_PER_DAY + offset.astype(np.int64)
    emit(row, t, *_jitter(rng, pool_lat[city[row], place], pool_lon[city[row], place]))

    # Shopping visits: visitors of one POI of a kind, on k distinct days, several pings per stay.
    buyer = pop.is_buyer[person]
    v_dev: list[Int] = []
    v_poi: list[Int] = []
    v_day: list[Int] = []
    v_arrive: list[Int] = []
    v_leave: list[Int] = []
    v_pings: list[Int] = []
    visit_rules = {
        "brand_store": (0.06 + 0.34 * buyer, 1.8),
        "competitor_store": (np.full(nd, 0.10), 1.2),
        "mall": (np.full(nd, 0.30), 2.0),
    }
    for kind in _VISIT_KINDS:
        p_visit, mean_extra = visit_rules[kind]
        who = np.nonzero(rng.random(nd) < p_visit)[0]
        target = _pick_in_group(rng, kind_of[kind] * n_city + city[who], g_start, g_count)
        visits = np.minimum(1 + rng.poisson(mean_extra, who.size), min(12, days))
        # k distinct days per visitor: the k smallest of random keys.
        keys = rng.random((who.size, days))
        ranks = np.argsort(keys, axis=1)
        take = np.arange(days)[None, :] < visits[:, None]
        vrow = np.repeat(who, visits)
        vday = ranks[take]
        vpoi = np.repeat(target, visits)
        start_h, span_h, dmin, dmax = _VISIT_SLOTS[kind]
        arrive = (
            day0_us
            + vday * US_PER_DAY
            + (start_h * hour_us + rng.random(vrow.size) * span_h * hour_us).astype(np.int64)
        )
        dwell = (rng.uniform(dmin, dmax, vrow.size) * 60 * US_PER_SECOND).astype(np.int64)
        n_ping = 2 + rng.poisson(1.5, vrow.size)
        prow = np.repeat(np.arange(vrow.size), n_ping)
        # first and last ping at arrival/departure, the others in between
        first = np.zeros(prow.size, dtype=bool)
        starts = np.zeros(vrow.size, dtype=np.int64)
        np.cumsum(n_ping[:-1], out=starts[1:])
        first[starts] = True
        last = np.zeros(prow.size, dtype=bool)
        last[starts + n_ping - 1] = True
        frac = np.where(first, 0.0, np.where(last, 1.0, rng.random(prow.size)))
        t = arrive[prow] + (frac * dwell[prow]).astype(np.int64)
        emit(vrow[prow], t, *_jitter(rng, poi_lat[vpoi[prow]], poi_lon[vpoi[prow]]))
        v_dev.append(vrow)
        v_poi.append(vpoi)
        v_day.append(vday)
        v_arrive.append(arrive)
        v_leave.append(arrive + dwell)
        v_pings.append(n_ping)

    # Near-misses: single pings 250-450 m from a store or mall, clear of every other POI.
    who = np.nonzero(rng.random(nd) < 0.15)[0]
    passes = 1 + rng.poisson(1.0, who.size)
    row = np.repeat(who, passes)
    near_kind = np.array([kind_of[k] for k in _VISIT_KINDS])[
        rng.integers(0, len(_VISIT_KINDS), row.size)
    ]
    target = _pick_in_group(rng, near_kind * n_city + city[row], g_start, g_count)
    lat, lon = _offset(
        poi_lat[target],
        poi_lon[target],
        rng.uniform(*NEAR_MISS_M, row.size),
        rng.uniform(0, 2 * np.pi, row.size),
    )
    ok = _clear_of_others(lat, lon, target, poi_city, poi_lat, poi_lon)
    row, lat, lon = row[ok], lat[ok], lon[ok]
    day = rng.integers(0, days, row.size)
    t = (
        day0_us
        + day * US_PER_DAY
        + (14 * hour_us + rng.random(row.size) * (3 + 5 / 6) * hour_us).astype(np.int64)
    )
    emit(row, t, lat, lon)

    # --- tables ------------------------------------------------------------------------------
    d = np.concatenate(d_parts)
    t = np.concatenate(t_parts)
    la = np.round(np.concatenate(lat_parts), 6)
    lo = np.round(np.concatenate(lon_parts), 6)
    order = np.lexsort((t, d))
    d, t, la, lo = d[order], t[order], la[order], lo[order]
    pings = pa.table(
        {
            "device_id": pop.device_id.take(pa.array(dev[d])),
            "ts": timestamps(t),
            "lat": pa.array(la, pa.float64()),
            "lon": pa.array(lo, pa.float64()),
        }
    )
    vd, vp, vday, va, vl, vn = (
        np.concatenate(x) for x in (v_dev, v_poi, v_day, v_arrive, v_leave, v_pings)
    )
    order = np.lexsort((va, vd))
    vd, vp, vday, va, vl, vn = (x[order] for x in (vd, vp, vday, va, vl, vn))
    visit_date = ((day0_us + LOCAL_OFFSET_US) // US_PER_DAY + vday).astype(np.int32)
    visits = pa.table(
        {
            "device_id": pop.device_id.take(pa.array(dev[vd])),
            "poi_id": pois["poi_id"].take(pa.array(vp)),
            "category": take_labels(kind_names, poi_kind[vp]),
            "visit_date": pa.array(visit_date, pa.int32()).cast(pa.date32()),
            "arrive": timestamps(va),
            "depart": timestamps(vl),
            "pings": pa.array(vn.astype(np.int32), pa.int32()),
        }
    )
    has_work = work >= 0
    anchors = pa.table(
        {
            "device_id": pop.device_id.take(pa.array(dev)),
            "home_poi_id": pois["poi_id"].take(pa.array(home)),
            "work_poi_id": pois["poi_id"].take(
                pa.array(np.where(has_work, work, 0), mask=~has_work)
            ),
        }
    )
    return LbsData(pois=pois, pings=pings, visits=visits, anchors=anchors)


def _clear_of_others(
    lat: Float, lon: Float, target: Int, poi_city: Int, poi_lat: Float, poi_lon: Float
) -> Bool:
    """Whether each point is >= CLEARANCE_M from every POI of its city except its own target."""
    ok = np.ones(lat.size, dtype=bool)
    city = poi_city[target]
    for ci in np.unique(city):  # a loop over cities (<= 100), vectorised within
        rows = np.nonzero(city == ci)[0]
        pois = np.nonzero(poi_city == ci)[0]
        dist = haversine_m(
            lat[rows, None], lon[rows, None], poi_lat[None, pois], poi_lon[None, pois]
        )
        dist[target[rows, None] == pois[None, :]] = np.inf
        ok[rows] = dist.min(axis=1) >= CLEARANCE_M
    return ok
