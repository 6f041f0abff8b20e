"""LBS tags: stay points from location pings, POI visits within a radius, visit-frequency tags.

Why: "visited a brand store on >= 3 distinct days in the last 30 days" and
"frequent mall visitor" are some of the strongest targeting and lookalike
signals a data provider sells (``docs/methods.md``, "LBS tags"). They must be
computed the same way on a laptop and over 100M pings, and end up as
*ordinary tag columns* (``device_id`` + text / number / ``list<string>``
columns) that persona, targeting and lookalike read like any other tag.

How (every step vectorised with NumPy over one device bucket):

1. **Stay points** (Li et al. 2008, distance threshold ``D`` and dwell
   threshold ``T``): a device's time-ordered pings are cut into candidate
   segments wherever the device changes, the time gap exceeds ``max_gap``
   or a ping lies more than ``D`` from its predecessor (leaving). Segments
   whose pings all lie within ``D`` of the segment's first ping (the common
   case, checked with one ``maximum.reduceat``) are Li's stays as they
   stand; the few that drift are re-cut by Li's anchor rule in a short loop
   per segment. A stay lasts ``>= T`` and has ``>= min_pings`` pings; its
   point is the mean of its pings.
2. **Visits**: stay points within ``radius_m`` (haversine, mean Earth radius
   6371.0088 km) of a POI. Candidates come from a uniform lat/lon **grid
   index** whose cells are at least ``radius_m`` wide everywhere in the data's
   latitude band, so every POI within the radius is in the 3×3 cells around
   the stay (proof in docs/methods.md); the exact haversine then decides.
   One visit per device, POI and local calendar day (arrive = first arrival,
   depart = last departure, pings summed).
3. **Tags** over the window ``[as_of - days, as_of)`` of local dates:
   ``lbs_visited_pois`` (POIs visited at least once), ``lbs_frequent_pois``
   (POIs visited on ``>= min_days`` distinct days), ``lbs_frequent_categories``
   (categories visited on ``>= min_days`` distinct days), and one
   ``lbs_days_<category>`` count per POI category. Every pinged device gets a
   row (empty lists and zeros when it visited nothing), so "no visit" is
   known, not missing.

:func:`run_lbs` streams a pings file into device buckets and maps them over an
:class:`~atoll.execution.Executor`; :func:`lbs_tags` does the same in memory.
Why a grid rather than H3: h3-py's API converts one point per call, while
the grid is a few NumPy operations over millions of stays; H3 cell sizes
(methods.md §7.3) would work the same way through ``grid_disk``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.analytics.ivt import spill_by_key
from atoll.data.io import iter_batches, read_table, write_table
from atoll.data.schema import DEFAULT_TIMEZONE, PINGS, POIS, TIMESTAMP, validate
from atoll.errors import ConfigError, SchemaError
from atoll.execution import Executor, make_executor

__all__ = [
    "EARTH_RADIUS_M",
    "LbsConfig",
    "LbsResult",
    "LbsRunResult",
    "PoiIndex",
    "StayConfig",
    "detect_stays",
    "haversine_m",
    "lbs_tags",
    "run_lbs",
    "tags_from_visits",
    "visits_from_stays",
]

Bool = npt.NDArray[np.bool_]
Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]

#: Mean Earth radius (IUGG), the ``haversine`` package's constant (methods.md §7.1).
EARTH_RADIUS_M: Final = 6_371_008.8
_M_PER_DEG: Final = EARTH_RADIUS_M * math.pi / 180.0
_US: Final = 1_000_000
_US_PER_DAY: Final = 86_400 * _US

_STAY_SCHEMA: Final = pa.schema(
    [
        pa.field("device_id", pa.string()),
        pa.field("arrive", TIMESTAMP),
        pa.field("depart", TIMESTAMP),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("pings", pa.int32()),
    ]
)
_VISIT_SCHEMA: Final = pa.schema(
    [
        pa.field("device_id", pa.string()),
        pa.field("poi_id", pa.string()),
        pa.field("category", pa.string()),
        pa.field("visit_date", pa.date32()),
        pa.field("arrive", TIMESTAMP),
        pa.field("depart", TIMESTAMP),
        pa.field("pings", pa.int32()),
        pa.field("distance_m", pa.float64()),
    ]
)


def haversine_m(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Float:
    """Great-circle distance in metres (haversine, mean Earth radius), element-wise."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StayConfig:
    """Stay-point thresholds (defaults: Li et al. 2008's 200 m; methods.md §7.2 and §7.4)."""

    #: Distance threshold D: a stay's pings lie within D of its first ping.
    distance_m: float = 200.0
    #: Dwell threshold T: a stay lasts at least this long (first to last ping).
    min_dwell_s: float = 600.0
    #: A longer silence between two pings ends a stay (sparse SDK pings: generous).
    max_gap_s: float = 7200.0
    #: A stay has at least this many pings.
    min_pings: int = 2

    def __post_init__(self) -> None:
        for name in ("distance_m", "min_dwell_s", "max_gap_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"StayConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.min_pings, int) or self.min_pings < 1:
            raise ConfigError(f"StayConfig.min_pings must be >= 1, got {self.min_pings!r}")


@dataclass(frozen=True)
class LbsConfig:
    """POI radius, tag window and thresholds (CLI: ``--radius-m --min-days --days``)."""

    stay: StayConfig = field(default_factory=StayConfig)
    #: A stay within this distance (haversine) of a POI is a visit.
    radius_m: float = 500.0
    #: "Frequent": visited on at least this many distinct local days in the window.
    min_days: int = 3
    #: Window length in days, ending (exclusive) at ``as_of``.
    days: int = 30
    #: First local date *after* the window; default: the day after the last ping.
    as_of: date | None = None
    #: Zone of local dates (visit days, the window).
    timezone: str = DEFAULT_TIMEZONE
    #: Add one ``lbs_days_<category>`` count column per POI category.
    category_columns: bool = True

    def __post_init__(self) -> None:
        r = self.radius_m
        if not isinstance(r, int | float) or not math.isfinite(r) or not 1.0 <= r <= 50_000.0:
            raise ConfigError(f"radius_m must be between 1 and 50000 metres, got {r!r}")
        if not isinstance(self.min_days, int) or self.min_days < 1:
            raise ConfigError(f"min_days must be a positive integer, got {self.min_days!r}")
        if not isinstance(self.days, int) or self.days < 1:
            raise ConfigError(f"days must be a positive integer, got {self.days!r}")
        if self.min_days > self.days:
            raise ConfigError(f"min_days ({self.min_days}) cannot exceed days ({self.days})")
        if self.as_of is not None and not isinstance(self.as_of, date):
            raise ConfigError("as_of must be a date")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        out = asdict(self)
        out["as_of"] = None if self.as_of is None else self.as_of.isoformat()
        return out


# ---------------------------------------------------------------------------------------------
# Stay points
# ---------------------------------------------------------------------------------------------


def _li_segment(
    lat: Float, lon: Float, t: Int, s: int, e: int, cfg: StayConfig
) -> list[tuple[int, int]]:
    """Li et al.'s anchor rule on pings ``[s, e)`` of one device: list of stays ``[i, j)``."""
    out: list[tuple[int, int]] = []
    i = s
    dwell = cfg.min_dwell_s * _US
    while i < e - 1:
        d = haversine_m(lat[i], lon[i], lat[i + 1 : e], lon[i + 1 : e])
        beyond = np.flatnonzero(d > cfg.distance_m)
        j = i + 1 + int(beyond[0]) if beyond.size else e
        if t[j - 1] - t[i] >= dwell and j - i >= cfg.min_pings:
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def _stays_sorted(dev: Int, t: Int, lat: Float, lon: Float, cfg: StayConfig) -> tuple[Int, Int]:
    """Stay segments ``[start, end)`` over pings sorted by (device, time)."""
    n = dev.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.ones(n, dtype=bool)
    if n > 1:
        step = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
        brk[1:] = (
            (dev[1:] != dev[:-1]) | (t[1:] - t[:-1] > cfg.max_gap_s * _US) | (step > cfg.distance_m)
        )
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], n)
    first = np.repeat(starts, ends - starts)
    from_first = haversine_m(lat[first], lon[first], lat, lon)
    far = np.maximum.reduceat(from_first, starts) > cfg.distance_m
    long_enough = (t[ends - 1] - t[starts] >= cfg.min_dwell_s * _US) & (
        ends - starts >= cfg.min_pings
    )
    good = ~far & long_enough
    s_out = [starts[good]]
    e_out = [ends[good]]
    # Drifting segments that could hold a stay: re-cut with Li's anchor rule.
    for s, e in zip(starts[far & long_enough], ends[far & long_enough], strict=True):
        pieces = _li_segment(lat, lon, t, int(s), int(e), cfg)
        if pieces:
            s_out.append(np.array([p[0] for p in pieces], dtype=np.int64))
            e_out.append(np.array([p[1] for p in pieces], dtype=np.int64))
    s_all = np.concatenate(s_out)
    e_all = np.concatenate(e_out)
    order = np.argsort(s_all, kind="stable")
    return s_all[order], e_all[order]


def _sorted_pings(pings: pa.Table) -> tuple[pa.Table, Int, Int, Float, Float]:
    """Pings sorted by (device, time) with integer device codes."""
    encoded = pc.dictionary_encode(pings["device_id"].combine_chunks())
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # sort by the device *text* order so outputs are deterministic across buckets
    by_text = pc.sort_indices(encoded.dictionary).to_numpy().astype(np.int64)
    rank = np.empty_like(by_text)
    rank[by_text] = np.arange(by_text.size, dtype=np.int64)
    key = rank[codes] if codes.size else codes
    t = pc.cast(pings["ts"], pa.int64()).to_numpy()
    order = np.lexsort((t, key))
    table = pings.take(pa.array(order))
    return (
        table,
        key[order],
        t[order],
        table["lat"].to_numpy(),
        table["lon"].to_numpy(),
    )


def detect_stays(pings: pa.Table, config: StayConfig | None = None) -> pa.Table:
    """Stay points of validated pings: ``device_id, arrive, depart, lat, lon, pings``."""
    cfg = config or StayConfig()
    if pings.num_rows == 0:
        return _STAY_SCHEMA.empty_table()
    table, dev, t, lat, lon = _sorted_pings(pings)
    s, e = _stays_sorted(dev, t, lat, lon, cfg)
    if s.size == 0:
        return _STAY_SCHEMA.empty_table()
    counts = e - s
    mean_lat = _segment_mean(lat, s, e)
    mean_lon = _segment_mean(lon, s, e)
    return pa.table(
        {
            "device_id": table["device_id"].take(pa.array(s)),
            "arrive": pa.array(t[s], TIMESTAMP),
            "depart": pa.array(t[e - 1], TIMESTAMP),
            "lat": pa.array(mean_lat, pa.float64()),
            "lon": pa.array(mean_lon, pa.float64()),
            "pings": pa.array(counts.astype(np.int32), pa.int32()),
        },
        schema=_STAY_SCHEMA,
    )


def _segment_mean(values: Float, s: Int, e: Int) -> Float:
    csum = np.concatenate(([0.0], np.cumsum(values)))
    return np.asarray((csum[e] - csum[s]) / (e - s))


# ---------------------------------------------------------------------------------------------
# POI index and visits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoiIndex:
    """POIs in a uniform lat/lon grid whose cells are >= ``radius_m`` wide (see module doc).

    Cell height is ``radius_m`` of latitude; cell width is ``radius_m`` of
    longitude at the band's highest latitude ``lat_bound`` (POIs' max |lat| +
    the radius + 1°), widened by 1 %. Any point within ``radius_m`` of a POI
    then differs from it by at most one cell in each direction, so the 3×3
    neighbourhood holds every candidate. Longitudes are not wrapped at ±180°
    (no POI set we know of straddles the antimeridian).
    """

    poi_id: pa.Array
    category: pa.Array
    lat: Float
    lon: Float
    radius_m: float
    cell_lat: float
    cell_lon: float
    keys: Int  # sorted cell keys
    order: Int  # POI index of each sorted key

    @classmethod
    def build(cls, pois: pa.Table, radius_m: float) -> PoiIndex:
        """Index validated POIs (``poi_id, category, lat, lon``) for ``radius_m``."""
        lat = np.asarray(pois["lat"].to_numpy(), dtype=np.float64)
        lon = np.asarray(pois["lon"].to_numpy(), dtype=np.float64)
        cell_lat = radius_m / _M_PER_DEG
        bound = min(89.0, (float(np.abs(lat).max()) if lat.size else 0.0) + cell_lat + 1.0)
        cell_lon = min(360.0, 1.01 * radius_m / (_M_PER_DEG * math.cos(math.radians(bound))))
        keys = _cell_keys(lat, lon, cell_lat, cell_lon, 0, 0)
        order = np.argsort(keys, kind="stable")
        return cls(
            pois["poi_id"].combine_chunks(),
            pois["category"].combine_chunks(),
            lat,
            lon,
            float(radius_m),
            cell_lat,
            cell_lon,
            keys[order],
            order.astype(np.int64),
        )

    def within(self, lat: Float, lon: Float) -> tuple[Int, Int, Float]:
        """Pairs ``(point index, POI index, distance_m)`` with distance <= ``radius_m``."""
        pts: list[Int] = []
        poi: list[Int] = []
        dist: list[Float] = []
        if lat.size == 0 or self.keys.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                k = _cell_keys(lat, lon, self.cell_lat, self.cell_lon, dy, dx)
                lo = np.searchsorted(self.keys, k, side="left")
                hi = np.searchsorted(self.keys, k, side="right")
                count = hi - lo
                hit = np.flatnonzero(count)
                if hit.size == 0:
                    continue
                reps = count[hit]
                p_idx = np.repeat(hit, reps)
                offsets = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
                c_idx = self.order[np.repeat(lo[hit], reps) + offsets]
                d = haversine_m(lat[p_idx], lon[p_idx], self.lat[c_idx], self.lon[c_idx])
                ok = d <= self.radius_m
                pts.append(p_idx[ok])
                poi.append(c_idx[ok])
                dist.append(d[ok])
        if not pts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(pts), np.concatenate(poi), np.concatenate(dist)


def _cell_keys(lat: Float, lon: Float, cell_lat: float, cell_lon: float, dy: int, dx: int) -> Int:
    cy = np.floor(lat / cell_lat).astype(np.int64) + dy + (1 << 30)
    cx = np.floor(lon / cell_lon).astype(np.int64) + dx + (1 << 30)
    return np.asarray((cy << 32) | cx, dtype=np.int64)


def _local_dates(t_us: Int, timezone: str) -> pa.Array:
    zoned = pc.cast(pa.array(t_us, TIMESTAMP), pa.timestamp("us", tz=timezone))
    return pc.cast(pc.local_timestamp(zoned), pa.date32())


def visits_from_stays(
    stays: pa.Table, index: PoiIndex, timezone: str = DEFAULT_TIMEZONE
) -> pa.Table:
    """Stays within the radius of POIs, one visit per (device, POI, local arrival day)."""
    if stays.num_rows == 0:
        return _VISIT_SCHEMA.empty_table()
    lat = stays["lat"].to_numpy()
    lon = stays["lon"].to_numpy()
    s_idx, p_idx, dist = index.within(lat, lon)
    if s_idx.size == 0:
        return _VISIT_SCHEMA.empty_table()
    arrive = pc.cast(stays["arrive"], pa.int64()).to_numpy()[s_idx]
    depart = pc.cast(stays["depart"], pa.int64()).to_numpy()[s_idx]
    n_pings = stays["pings"].to_numpy().astype(np.int64)[s_idx]
    day = pc.cast(_local_dates(arrive, timezone), pa.int32()).to_numpy()
    dev_codes = pc.dictionary_encode(stays["device_id"].combine_chunks())
    dev = dev_codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)[s_idx]
    order = np.lexsort((arrive, day, p_idx, dev))
    dev, p_idx, day = dev[order], p_idx[order], day[order]
    arrive, depart, n_pings = arrive[order], depart[order], n_pings[order]
    dist, s_sorted = dist[order], s_idx[order]
    new = np.ones(dev.size, dtype=bool)
    new[1:] = (dev[1:] != dev[:-1]) | (p_idx[1:] != p_idx[:-1]) | (day[1:] != day[:-1])
    g = np.flatnonzero(new)
    return pa.table(
        {
            "device_id": stays["device_id"].take(pa.array(s_sorted[g])),
            "poi_id": index.poi_id.take(pa.array(p_idx[g])),
            "category": index.category.take(pa.array(p_idx[g])),
            "visit_date": pa.array(day[g], pa.int32()).cast(pa.date32()),
            "arrive": pa.array(arrive[g], TIMESTAMP),
            "depart": pa.array(np.maximum.reduceat(depart, g), TIMESTAMP),
            "pings": pa.array(np.add.reduceat(n_pings, g).astype(np.int32), pa.int32()),
            "distance_m": pa.array(np.minimum.reduceat(dist, g), pa.float64()),
        },
        schema=_VISIT_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------------------------


def _category_column(category: str) -> str:
    slug = re.sub(r"[^0-9a-z]+", "_", category.lower()).strip("_") or "unnamed"
    return f"lbs_days_{slug}"


def _category_columns(categories: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: dict[str, str] = {}
    for c in categories:
        name = _category_column(c)
        if name in used and used[name] != c:
            raise ConfigError(
                f"POI categories {used[name]!r} and {c!r} map to the same tag column {name!r}"
            )
        used[name] = c
        out[c] = name
    return out


def _list_column(devices: Int, n_dev: int, values: pa.Array) -> pa.Array:
    """``list<string>`` per device code from (device, value) pairs sorted by device."""
    counts = np.bincount(devices, minlength=n_dev)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.cast(pa.string()))


def _grouped_days(v: pa.Table, key: str, devs: pa.Array) -> tuple[Int, pa.Array, Int]:
    """(device code, key value, distinct days) per (device, key), sorted by device then key."""
    if v.num_rows == 0:
        return np.zeros(0, np.int64), pa.array([], pa.string()), np.zeros(0, np.int64)
    g = v.group_by(["device_id", key]).aggregate([("visit_date", "count_distinct")])
    g = g.sort_by([("device_id", "ascending"), (key, "ascending")])
    dev = pc.index_in(g["device_id"], devs).to_numpy(zero_copy_only=False).astype(np.int64)
    days = g["visit_date_count_distinct"].to_numpy().astype(np.int64)
    return dev, g[key].combine_chunks(), days


def tags_from_visits(
    visits: pa.Table,
    devices: pa.Array,
    categories: list[str],
    config: LbsConfig,
    as_of: date,
) -> pa.Table:
    """Tag columns for ``devices`` (every pinged device) from their visits in the window.

    Window: local dates ``[as_of - days, as_of)``. Lists are sorted; a device
    with no visit has empty lists and zero counts.
    """
    epoch = date(1970, 1, 1)
    lo = (as_of - timedelta(days=config.days) - epoch).days
    hi = (as_of - epoch).days
    devs = pc.unique(devices.cast(pa.string()))
    devs = devs.take(pc.sort_indices(devs))
    n_dev = len(devs)
    day = pc.cast(visits["visit_date"], pa.int32())
    inside = pc.and_(pc.greater_equal(day, lo), pc.less(day, hi))
    v = visits.filter(inside)
    p_dev, p_poi, p_days = _grouped_days(v, "poi_id", devs)
    c_dev, c_cat, c_days = _grouped_days(v, "category", devs)
    freq_p = p_days >= config.min_days
    freq_c = c_days >= config.min_days
    columns: dict[str, pa.Array] = {
        "device_id": devs,
        "lbs_visited_pois": _list_column(p_dev, n_dev, p_poi),
        "lbs_frequent_pois": _list_column(p_dev[freq_p], n_dev, p_poi.filter(pa.array(freq_p))),
        "lbs_frequent_categories": _list_column(
            c_dev[freq_c], n_dev, c_cat.filter(pa.array(freq_c))
        ),
    }
    if config.category_columns:
        names = _category_columns(categories)
        cat_idx = (
            pc.index_in(c_cat, pa.array(categories, pa.string()))
            .to_numpy(zero_copy_only=False)
            .astype(np.int64)
            if len(c_cat)
            else np.zeros(0, np.int64)
        )
        for ci, c in enumerate(categories):
            counts = np.zeros(n_dev, dtype=np.int32)
            sel = cat_idx == ci
            counts[c_dev[sel]] = c_days[sel]
            columns[names[c]] = pa.array(counts, pa.int32())
    return pa.table(columns)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LbsResult:
    """In-memory result: stays, visits and the tag table."""

    stays: pa.Table
    visits: pa.Table
    tags: pa.Table
    as_of: date


def _prepare_pois(pois: pa.Table, source: str | None) -> pa.Table:
    table = validate(pois, POIS, source=source)
    ids = table["poi_id"]
    if pc.count_distinct(ids).as_py() != table.num_rows:
        raise SchemaError("poi_id values must be unique", source=source, column="poi_id")
    return table


def default_as_of(last_us: int, timezone: str) -> date:
    """The default ``as_of``: the local day after the last ping (``last_us``, epoch µs)."""
    last = _local_dates(np.array([last_us], dtype=np.int64), timezone)[0].as_py()
    assert isinstance(last, date)
    return last + timedelta(days=1)


def lbs_tags(
    pings: pa.Table,
    pois: pa.Table,
    config: LbsConfig | None = None,
    *,
    source: str | None = None,
) -> LbsResult:
    """Stays, visits and tags from in-memory pings and POIs (both validated first)."""
    cfg = config or LbsConfig()
    p = validate(pings, PINGS, source=source, timezone=cfg.timezone)
    poi = _prepare_pois(pois, None)
    index = PoiIndex.build(poi, cfg.radius_m)
    stays = detect_stays(p, cfg.stay)
    visits = visits_from_stays(stays, index, cfg.timezone)
    if p.num_rows:
        as_of = cfg.as_of or default_as_of(
            int(pc.max(pc.cast(p["ts"], pa.int64())).as_py()), cfg.timezone
        )
    else:
        as_of = cfg.as_of or date.today()
    categories = sorted(set(poi["category"].to_pylist()))
    tags = tags_from_visits(visits, p["device_id"].combine_chunks(), categories, cfg, as_of)
    return LbsResult(stays, visits, tags, as_of)


@dataclass(frozen=True)
class _LbsTask:
    paths: tuple[str, ...]
    pois: pa.Table
    config: LbsConfig
    categories: tuple[str, ...]
    as_of: date
    out_dir: str
    bucket: int


def _lbs_bucket(task: _LbsTask) -> dict[str, int]:
    """Executor task: stays → visits → tags of one device bucket, written as part files."""
    pings = pa.concat_tables([pq.read_table(p) for p in task.paths]).combine_chunks()
    index = PoiIndex.build(task.pois, task.config.radius_m)
    stays = detect_stays(pings, task.config.stay)
    visits = visits_from_stays(stays, index, task.config.timezone)
    tags = tags_from_visits(
        visits, pings["device_id"].combine_chunks(), list(task.categories), task.config,
        task.as_of,
    )  # fmt: skip
    out = Path(task.out_dir)
    pq.write_table(visits, out / f"visits-{task.bucket:05d}.parquet", compression="zstd")
    pq.write_table(tags, out / f"tags-{task.bucket:05d}.parquet", compression="zstd")
    return {
        "pings": pings.num_rows,
        "stays": stays.num_rows,
        "visits": visits.num_rows,
        "devices": tags.num_rows,
    }


@dataclass(frozen=True)
class LbsRunResult:
    """What :func:`run_lbs` wrote and counted."""

    tags_path: Path
    visits_path: Path
    as_of: date
    counts: dict[str, int]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "tags": str(self.tags_path),
            "visits": str(self.visits_path),
            "as_of": self.as_of.isoformat(),
            "counts": self.counts,
            "config": self.config,
        }


@dataclass
class _Seen:
    rows: int = 0
    last_us: int | None = None


def run_lbs(
    pings_path: str | os.PathLike[str],
    pois_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    config: LbsConfig | None = None,
    *,
    executor: Executor | None = None,
    buckets: int = 16,
    batch_rows: int = 1_000_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> LbsRunResult:
    """LBS tags from a pings file, streamed bucket by bucket; writes tags and visits.

    ``out_path`` receives the tag table (``.parquet`` or ``.csv``; lists are
    joined with ``|`` in CSV); the visits go next to it as
    ``<stem>.visits.parquet``. Pings are validated while they are spilled
    into ``buckets`` device buckets (a scratch folder, removed at the end).
    """
    cfg = config or LbsConfig()
    if not isinstance(buckets, int) or buckets < 1:
        raise ConfigError(f"buckets must be a positive integer, got {buckets!r}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pois = _prepare_pois(read_table(pois_path), str(pois_path))
    categories = tuple(sorted(set(pois["category"].to_pylist())))
    work = out.parent / f".{out.name}.lbs_work"
    if work.exists():
        shutil.rmtree(work)
    spill_dir = work / "spill"
    parts = work / "parts"
    parts.mkdir(parents=True)
    seen = _Seen()

    def batches() -> Iterator[pa.Table]:
        for batch in iter_batches(pings_path, PINGS, batch_rows=batch_rows, timezone=cfg.timezone):
            table = pa.Table.from_batches([batch])
            seen.rows += table.num_rows
            top = pc.max(pc.cast(table["ts"], pa.int64())).as_py()
            if top is not None and (seen.last_us is None or top > seen.last_us):
                seen.last_us = int(top)
            if progress is not None:
                progress("validating and bucketing pings", seen.rows, 0)
            yield table

    try:
        files = spill_by_key(batches(), spill_dir, "device_id", buckets)
        if cfg.as_of is not None:
            as_of = cfg.as_of
        elif seen.last_us is not None:
            as_of = default_as_of(seen.last_us, cfg.timezone)
        else:
            as_of = date.today()
        tasks = [
            _LbsTask(tuple(str(p) for p in paths), pois, cfg, categories, as_of, str(parts), b)
            for b, paths in sorted(files.items())
        ]
        totals = {"pings": 0, "stays": 0, "visits": 0, "devices": 0}
        ex = executor if executor is not None else make_executor("inline")
        own = executor is None
        if own:
            ex.__enter__()
        try:
            for done, counts in enumerate(ex.map(_lbs_bucket, tasks), start=1):
                for k, v in counts.items():
                    totals[k] += v
                if progress is not None:
                    progress("stays, visits and tags per bucket", done, len(tasks))
        finally:
            if own:
                ex.__exit__(None, None, None)
        tag_files = sorted(parts.glob("tags-*.parquet"))
        visit_files = sorted(parts.glob("visits-*.parquet"))
        tags = (
            pa.concat_tables([pq.read_table(f) for f in tag_files])
            if tag_files
            else tags_from_visits(
                _VISIT_SCHEMA.empty_table(), pa.array([], pa.string()), list(categories), cfg,
                as_of,
            )
        )  # fmt: skip
        tags = tags.take(pc.sort_indices(tags, [("device_id", "ascending")]))
        write_table(tags, out, fmt="csv" if out.suffix.lower() == ".csv" else "parquet")
        visits_path = out.with_name(f"{out.stem}.visits.parquet")
        with pq.ParquetWriter(str(visits_path), _VISIT_SCHEMA, compression="zstd") as writer:
            for f in visit_files:
                writer.write_table(pq.read_table(f))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return LbsRunResult(out, visits_path, as_of, totals, cfg.to_dict())
