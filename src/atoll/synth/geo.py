"""Geographic reference data for the synthetic world: cities, tiers, weights, POI kinds.

Why: a persona report's "geographic distribution" and an LBS tag ("visited a
brand store at least three times within 200 m") only mean something if devices
live where Chinese mobile users live and POIs sit around real city centres.
This module is the one place holding that reference layer, so every part of
the generator (tags, pings, POIs) draws from the same cities.

The numbers are deliberately approximate: city-centre coordinates rounded to
four decimals, populations (millions) rounded from the 2020 census of the
prefecture-level city. They make the world realistic, not a statistic about
China. ``weight`` skews the device distribution towards large, high-tier
cities (mobile-internet users are more urban than the population).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "CITIES",
    "CITY_TIERS",
    "EARTH_RADIUS_M",
    "POI_KINDS",
    "City",
    "PoiKind",
    "city_weights",
    "haversine_m",
]

#: City tiers as the Chinese marketing industry names them (first tier first).
CITY_TIERS: Final = ("tier1", "new_tier1", "tier2", "tier3", "tier4")
_TIER_FACTOR: Final = {"tier1": 1.7, "new_tier1": 1.35, "tier2": 1.0, "tier3": 0.8, "tier4": 0.65}

#: Mean Earth radius in metres (the IUGG value, as ``haversine`` uses it).
EARTH_RADIUS_M: Final = 6_371_008.8


@dataclass(frozen=True, slots=True)
class City:
    """One city: names, tier, centre coordinates and population (millions)."""

    name: str
    province: str
    tier: str
    lat: float
    lon: float
    population_m: float


#: The cities devices live in; every province-level division has at least one.
CITIES: Final[tuple[City, ...]] = (
    City("Beijing", "Beijing", "tier1", 39.9042, 116.4074, 21.9),
    City("Shanghai", "Shanghai", "tier1", 31.2304, 121.4737, 24.9),
    City("Guangzhou", "Guangdong", "tier1", 23.1291, 113.2644, 18.7),
    City("Shenzhen", "Guangdong", "tier1", 22.5431, 114.0579, 17.6),
    City("Chengdu", "Sichuan", "new_tier1", 30.5728, 104.0668, 20.9),
    City("Chongqing", "Chongqing", "new_tier1", 29.5630, 106.5516, 32.0),
    City("Hangzhou", "Zhejiang", "new_tier1", 30.2741, 120.1551, 11.9),
    City("Wuhan", "Hubei", "new_tier1", 30.5928, 114.3055, 12.3),
    City("Xi'an", "Shaanxi", "new_tier1", 34.3416, 108.9398, 12.9),
    City("Suzhou", "Jiangsu", "new_tier1", 31.2989, 120.5853, 12.7),
    City("Tianjin", "Tianjin", "new_tier1", 39.3434, 117.3616, 13.9),
    City("Nanjing", "Jiangsu", "new_tier1", 32.0603, 118.7969, 9.3),
    City("Changsha", "Hunan", "new_tier1", 28.2282, 112.9388, 10.0),
    City("Zhengzhou", "Henan", "new_tier1", 34.7466, 113.6254, 12.6),
    City("Dongguan", "Guangdong", "new_tier1", 23.0207, 113.7518, 10.5),
    City("Qingdao", "Shandong", "new_tier1", 36.0671, 120.3826, 10.1),
    City("Shenyang", "Liaoning", "new_tier1", 41.8057, 123.4315, 9.1),
    City("Ningbo", "Zhejiang", "new_tier1", 29.8683, 121.5440, 9.4),
    City("Kunming", "Yunnan", "new_tier1", 24.8801, 102.8329, 8.5),
    City("Foshan", "Guangdong", "tier2", 23.0215, 113.1214, 9.5),
    City("Jinan", "Shandong", "tier2", 36.6512, 117.1201, 9.2),
    City("Hefei", "Anhui", "tier2", 31.8206, 117.2272, 9.4),
    City("Fuzhou", "Fujian", "tier2", 26.0745, 119.2965, 8.3),
    City("Xiamen", "Fujian", "tier2", 24.4798, 118.0894, 5.2),
    City("Wuxi", "Jiangsu", "tier2", 31.4912, 120.3119, 7.5),
    City("Harbin", "Heilongjiang", "tier2", 45.8038, 126.5350, 10.0),
    City("Changchun", "Jilin", "tier2", 43.8171, 125.3235, 9.1),
    City("Shijiazhuang", "Hebei", "tier2", 38.0428, 114.5149, 11.2),
    City("Nanning", "Guangxi", "tier2", 22.8170, 108.3665, 8.7),
    City("Nanchang", "Jiangxi", "tier2", 28.6820, 115.8579, 6.3),
    City("Guiyang", "Guizhou", "tier2", 26.6470, 106.6302, 6.0),
    City("Taiyuan", "Shanxi", "tier2", 37.8706, 112.5489, 5.3),
    City("Dalian", "Liaoning", "tier2", 38.9140, 121.6147, 7.5),
    City("Wenzhou", "Zhejiang", "tier2", 27.9943, 120.6994, 9.6),
    City("Quanzhou", "Fujian", "tier2", 24.8741, 118.6757, 8.8),
    City("Changzhou", "Jiangsu", "tier2", 31.8112, 119.9740, 5.3),
    City("Nantong", "Jiangsu", "tier2", 31.9802, 120.8943, 7.7),
    City("Huizhou", "Guangdong", "tier2", 23.1115, 114.4152, 6.0),
    City("Zhuhai", "Guangdong", "tier2", 22.2710, 113.5767, 2.4),
    City("Jiaxing", "Zhejiang", "tier2", 30.7460, 120.7555, 5.4),
    City("Shaoxing", "Zhejiang", "tier2", 30.0303, 120.5802, 5.3),
    City("Jinhua", "Zhejiang", "tier2", 29.0790, 119.6474, 7.1),
    City("Yantai", "Shandong", "tier2", 37.4638, 121.4479, 7.1),
    City("Xuzhou", "Jiangsu", "tier2", 34.2058, 117.2841, 9.1),
    City("Lanzhou", "Gansu", "tier2", 36.0611, 103.8343, 4.4),
    City("Urumqi", "Xinjiang", "tier3", 43.8256, 87.6168, 4.1),
    City("Hohhot", "Inner Mongolia", "tier3", 40.8414, 111.7519, 3.4),
    City("Haikou", "Hainan", "tier3", 20.0440, 110.1999, 2.9),
    City("Yinchuan", "Ningxia", "tier3", 38.4872, 106.2309, 2.9),
    City("Xining", "Qinghai", "tier3", 36.6171, 101.7782, 2.5),
    City("Lhasa", "Tibet", "tier4", 29.6520, 91.1721, 0.9),
    City("Luoyang", "Henan", "tier3", 34.6197, 112.4540, 7.1),
    City("Nanyang", "Henan", "tier3", 32.9908, 112.5283, 9.7),
    City("Zhoukou", "Henan", "tier4", 33.6258, 114.6966, 9.0),
    City("Shangqiu", "Henan", "tier4", 34.4143, 115.6564, 7.8),
    City("Linyi", "Shandong", "tier3", 35.1041, 118.3564, 11.0),
    City("Weifang", "Shandong", "tier3", 36.7069, 119.1618, 9.4),
    City("Jining", "Shandong", "tier3", 35.4146, 116.5871, 8.4),
    City("Baoding", "Hebei", "tier3", 38.8740, 115.4646, 11.5),
    City("Handan", "Hebei", "tier3", 36.6256, 114.5391, 9.4),
    City("Tangshan", "Hebei", "tier3", 39.6305, 118.1802, 7.7),
    City("Mianyang", "Sichuan", "tier3", 31.4675, 104.6796, 4.9),
    City("Nanchong", "Sichuan", "tier4", 30.8373, 106.1107, 5.6),
    City("Yibin", "Sichuan", "tier3", 28.7513, 104.6417, 4.6),
    City("Zhanjiang", "Guangdong", "tier3", 21.2707, 110.3594, 7.0),
    City("Shantou", "Guangdong", "tier3", 23.3541, 116.6820, 5.5),
    City("Ganzhou", "Jiangxi", "tier3", 25.8310, 114.9350, 9.0),
    City("Jiujiang", "Jiangxi", "tier3", 29.7050, 116.0019, 4.6),
    City("Yichang", "Hubei", "tier3", 30.6919, 111.2865, 4.0),
    City("Xiangyang", "Hubei", "tier3", 32.0090, 112.1226, 5.3),
    City("Hengyang", "Hunan", "tier3", 26.8968, 112.5719, 6.6),
    City("Zhuzhou", "Hunan", "tier3", 27.8274, 113.1340, 3.9),
    City("Yueyang", "Hunan", "tier3", 29.3570, 113.1289, 5.1),
    City("Liuzhou", "Guangxi", "tier3", 24.3264, 109.4281, 4.2),
    City("Guilin", "Guangxi", "tier3", 25.2736, 110.2900, 4.9),
    City("Zunyi", "Guizhou", "tier3", 27.7254, 106.9273, 6.6),
    City("Qujing", "Yunnan", "tier4", 25.4900, 103.7962, 5.8),
    City("Fuyang", "Anhui", "tier4", 32.8900, 115.8142, 8.2),
    City("Wuhu", "Anhui", "tier3", 31.3525, 118.4331, 3.6),
    City("Daqing", "Heilongjiang", "tier3", 46.5893, 125.1036, 2.8),
    City("Jilin", "Jilin", "tier3", 43.8379, 126.5496, 3.6),
    City("Anshan", "Liaoning", "tier3", 41.1087, 122.9946, 3.3),
    City("Baotou", "Inner Mongolia", "tier3", 40.6574, 109.8403, 2.7),
    City("Datong", "Shanxi", "tier3", 40.0768, 113.3001, 3.1),
    City("Baoji", "Shaanxi", "tier3", 34.3619, 107.2372, 3.3),
    City("Tianshui", "Gansu", "tier4", 34.5809, 105.7249, 3.0),
    City("Sanya", "Hainan", "tier3", 18.2528, 109.5119, 1.0),
)


def city_weights() -> npt.NDArray[np.float64]:
    """Sampling weights of :data:`CITIES` (population x tier factor), summing to 1."""
    raw = np.array([c.population_m * _TIER_FACTOR[c.tier] for c in CITIES], dtype=np.float64)
    return np.asarray(raw / raw.sum(), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class PoiKind:
    """A POI category: its label, the name stem, and how many a big city has.

    ``per_city`` is the count in a city of weight 1/len(CITIES) (average);
    bigger cities get proportionally more, every city at least ``minimum``.
    """

    category: str
    name_stem: str
    per_city: float
    minimum: int


#: POI categories of the world. ``brand_store`` is the advertiser's own store.
POI_KINDS: Final[tuple[PoiKind, ...]] = (
    PoiKind("brand_store", "Brand Flagship Store", 3.0, 1),
    PoiKind("competitor_store", "Competitor Store", 3.0, 1),
    PoiKind("mall", "Shopping Mall", 4.0, 1),
    PoiKind("office", "Office Tower", 8.0, 2),
    PoiKind("residential", "Residential Compound", 14.0, 3),
)


def haversine_m(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Great-circle distance in metres (haversine, mean Earth radius 6371.0088 km)."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dphi / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2.0) ** 2
    return np.asarray(
        2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64
    )
