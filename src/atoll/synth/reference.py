"""Non-geographic reference data: tag vocabularies, phone brands, user agents, products, IPs.

Why: every part of the generator must agree on the same vocabularies (an
interest named ``hair_care`` in the universe is the one the propensity model
rewards and the media platform's behaviour reflects), and reports later print
these labels. Keeping them in one module makes the world's vocabulary
reviewable at a glance.

Shares are approximate market figures for China in the mid-2020s (installed
base of phone brands, Android version spread, carrier IP blocks); they make
the world plausible, not a market study. Data-centre ranges are styled after
published cloud-provider ranges and are the world's GIVT IP list: the
generator writes them to ``truth/datacenter_ranges`` so that an IVT filter can
be configured with exactly the list the world used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "AGE_BANDS",
    "ANDROID_BRANDS",
    "ANDROID_VERSIONS",
    "APP_CATEGORIES",
    "BOT_USER_AGENTS",
    "CARRIER_FIRST_OCTETS",
    "CONSUMPTION_LEVELS",
    "DATACENTER_RANGES",
    "EMAIL_DOMAINS",
    "GENDERS",
    "HUB_TEST_PHONES",
    "INTERESTS",
    "IOS_VERSIONS",
    "ITEM_CATEGORIES",
    "MARITAL_STATUSES",
    "MEDIA_ACTIONS",
    "MEMBER_LEVELS",
    "OCCUPATIONS",
    "ORDER_CHANNELS",
    "PARENTING_STATUSES",
    "PHONE_PREFIXES",
    "PRODUCTS",
    "AndroidBrand",
    "Product",
]

GENDERS: Final = ("male", "female")
AGE_BANDS: Final = ("18-24", "25-34", "35-44", "45-54", "55+")
#: Share of mobile-internet users per age band (adults).
AGE_SHARES: Final = (0.17, 0.27, 0.23, 0.18, 0.15)
CONSUMPTION_LEVELS: Final = ("low", "mid", "high", "premium")
MARITAL_STATUSES: Final = ("single", "in_relationship", "married")
PARENTING_STATUSES: Final = (
    "not_parent",
    "expecting",
    "parent_infant_0_3",
    "parent_child_4_12",
    "parent_teen_13_18",
)
OCCUPATIONS: Final = (
    "student",
    "white_collar",
    "blue_collar",
    "self_employed",
    "civil_servant",
    "healthcare",
    "teacher",
    "freelancer",
    "retired",
)
#: Lifestyle interests (the deck's list, snake_case).
INTERESTS: Final = (
    "beauty",
    "hair_care",
    "finance",
    "travel",
    "auto",
    "mother_baby",
    "sports_health",
    "gaming",
    "reading",
    "video",
    "social",
    "shopping",
)
#: App categories installed on a device.
APP_CATEGORIES: Final = (
    "social",
    "short_video",
    "long_video",
    "shopping",
    "news",
    "finance",
    "games",
    "education",
    "travel",
    "health_fitness",
    "food_delivery",
    "music",
    "photography",
    "parenting",
    "auto",
    "beauty",
    "reading",
    "navigation",
    "office",
)


@dataclass(frozen=True, slots=True)
class AndroidBrand:
    """An Android phone brand: installed-base share, OAID format and model codes."""

    name: str
    share: float
    oaid_format: str  # "uuid" | "hex16" | "hex32" | "hex64"
    models: tuple[str, ...]


#: Android brands and their share *among Android devices*.
ANDROID_BRANDS: Final[tuple[AndroidBrand, ...]] = (
    AndroidBrand("Huawei", 0.24, "uuid", ("NOH-AN00", "ALN-AL00", "BRA-AL00", "JAD-AL50")),
    AndroidBrand("vivo", 0.21, "hex64", ("V2145A", "V2309A", "V2241A", "V2229A")),
    AndroidBrand("OPPO", 0.20, "hex32", ("PHB110", "PGX110", "PJH110", "PHM110")),
    AndroidBrand("Xiaomi", 0.17, "hex16", ("2211133C", "23127PN0CC", "22081212C", "2304FPN6DC")),
    AndroidBrand("Honor", 0.12, "uuid", ("ALI-AN00", "PGT-AN10", "FNE-AN00", "REA-AN00")),
    AndroidBrand("Samsung", 0.025, "uuid", ("SM-S9180", "SM-S9110", "SM-F9460")),
    AndroidBrand("OnePlus", 0.015, "hex32", ("PJD110", "PHB110")),
    AndroidBrand("realme", 0.01, "hex32", ("RMX3706", "RMX3820")),
)
#: Android versions and their shares; versions <= 9 still expose the IMEI,
#: versions >= 10 expose the OAID (Mobile Security Alliance identifier).
ANDROID_VERSIONS: Final = (
    (14, 0.24),
    (13, 0.22),
    (12, 0.18),
    (11, 0.12),
    (10, 0.10),
    (9, 0.08),
    (8, 0.06),
)
_BUILD_IDS: Final = {
    14: "UP1A.231005.007",
    13: "TP1A.220624.014",
    12: "SP1A.210812.016",
    11: "RP1A.200720.011",
    10: "QP1A.190711.020",
    9: "PPR1.180610.011",
    8: "OPM1.171019.011",
}
IOS_VERSIONS: Final = (("17_5", 0.35), ("17_4", 0.2), ("16_7", 0.2), ("18_1", 0.15), ("15_8", 0.1))


def android_user_agent(version: int, model: str) -> str:
    """The in-app WebView user agent of an Android device."""
    return (
        f"Mozilla/5.0 (Linux; Android {version}; {model} Build/{_BUILD_IDS[version]}; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36"
    )


def ios_user_agent(version: str) -> str:
    """The in-app WebView user agent of an iPhone."""
    return (
        f"Mozilla/5.0 (iPhone; CPU iPhone OS {version} like Mac OS X) "
        "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
    )


#: User agents of declared or obvious non-browser traffic (bots, scripts, crawlers).
BOT_USER_AGENTS: Final = (
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "curl/8.4.0",
    "okhttp/3.12.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/118.0.5993.70 Safari/537.36",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Mozilla/5.0 (Linux; Android 9; SM-G960F Build/PPR1.180610.011; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/74.0.3729.136 Mobile "
    "Safari/537.36 AutoClicker/1.4",
)

#: Mainland mobile number prefixes (first three digits) in use.
PHONE_PREFIXES: Final = (
    *range(130, 140),
    145,
    147,
    150,
    151,
    152,
    153,
    155,
    156,
    157,
    158,
    159,
    166,
    172,
    173,
    175,
    176,
    177,
    178,
    *range(180, 190),
    191,
    193,
    195,
    196,
    197,
    198,
    199,
)
#: Well-known test numbers typed into forms by testers; they become hubs in the ID graph.
HUB_TEST_PHONES: Final = ("13800138000", "13900139000", "18888888888", "13312345678")

#: First octets of the (synthetic) residential carrier address space.
CARRIER_FIRST_OCTETS: Final = (
    36,
    39,
    42,
    49,
    58,
    60,
    61,
    101,
    106,
    111,
    112,
    113,
    114,
    115,
    116,
    117,
    120,
    123,
    125,
    171,
    175,
    180,
    183,
    211,
    218,
    220,
    221,
    222,
    223,
)
#: Data-centre ranges (CIDR, operator). Disjoint from the carrier space above.
DATACENTER_RANGES: Final = (
    ("47.92.0.0/14", "Alibaba Cloud"),
    ("8.129.0.0/16", "Alibaba Cloud"),
    ("119.29.0.0/16", "Tencent Cloud"),
    ("129.204.0.0/16", "Tencent Cloud"),
    ("182.61.0.0/16", "Baidu AI Cloud"),
    ("52.80.0.0/14", "AWS China"),
    ("54.222.0.0/15", "AWS China"),
)

EMAIL_DOMAINS: Final = (
    ("qq.com", 0.45),
    ("163.com", 0.25),
    ("126.com", 0.1),
    ("sina.com", 0.05),
    ("gmail.com", 0.05),
    ("outlook.com", 0.1),
)
MEMBER_LEVELS: Final = ("regular", "silver", "gold", "platinum")
ORDER_CHANNELS: Final = ("tmall", "jd", "mini_program", "offline_store")


@dataclass(frozen=True, slots=True)
class Product:
    """A product line of the advertiser (a hair-care brand) and its list price range (CNY)."""

    name: str
    min_price: float
    max_price: float


#: Product lines, from entry to premium; a person's consumption level drives the line.
PRODUCTS: Final[tuple[Product, ...]] = (
    Product("essentials_shampoo", 39.0, 69.0),
    Product("repair_conditioner", 89.0, 139.0),
    Product("scalp_care_serum", 199.0, 299.0),
    Product("premium_gift_set", 499.0, 899.0),
)
#: P(product line | consumption level); rows follow CONSUMPTION_LEVELS.
PRODUCT_BY_LEVEL: Final = (
    (0.70, 0.25, 0.05, 0.00),
    (0.35, 0.45, 0.17, 0.03),
    (0.15, 0.35, 0.38, 0.12),
    (0.05, 0.20, 0.40, 0.35),
)

MEDIA_ACTIONS: Final = ("add_to_cart", "favourite", "ad_click")
#: Item categories on the media (e-commerce) platform.
ITEM_CATEGORIES: Final = (
    "hair_care",
    "skincare",
    "makeup",
    "personal_care",
    "baby",
    "electronics",
    "apparel",
    "sports",
    "books",
    "food",
    "home",
)
