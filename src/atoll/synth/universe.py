"""Persons, devices and the provider's tags: the population every other part builds on.

Why: the world is generated from people outward. A *person* (truth only) has
demographics, interests, a phone number and a planted buyer propensity; a
person owns one to three *devices* (the provider's rows), each with an OS,
brand, advertising identifiers and installed app categories. The provider sees
devices, not persons, and sees tags the way a data provider has them:
predicted (sometimes wrong) and incomplete. Keeping true attributes apart from
observed tags is what lets later tests compare a report with the truth.

Causal notes (see ``docs/synthetic-world.md``):

* Interests depend on gender, age, parenting status and consumption level;
  OS depends on consumption level and city tier; app categories follow
  interests. So tags are correlated the way real ones are.
* ``propensity`` = P(person buys organically in the order period) =
  ``sigmoid(b0 + effects(gender, age, interests beauty/hair_care,
  consumption level, city tier) + N(0, 0.5))``, with ``b0`` calibrated so the
  mean over human persons is ``WorldConfig.base_buyer_rate``; planted buyers
  are drawn ``Bernoulli(propensity)``.
* Bot devices (emulator farms) are persons of their own with ``is_bot``: no
  phone, no propensity, junk tags (many app categories, unknown demographics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.synth import reference as ref
from atoll.synth._columns import (
    assemble,
    categorical,
    chars_to_strings,
    digit_chars,
    hex_chars,
    list_from_mask,
    luhn_check_digit,
    prefixed_numbers,
    take_labels,
    with_nulls,
)
from atoll.synth.config import WorldConfig
from atoll.synth.geo import CITIES, CITY_TIERS, city_weights

__all__ = ["UNIVERSE_COLUMNS", "Population", "build_population", "unique_phones"]

Bool = npt.NDArray[np.bool_]
Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]

#: Column order of ``provider/universe``.
UNIVERSE_COLUMNS: Final = (
    "device_id",
    "os",
    "phone",
    "oaid",
    "idfa",
    "imei",
    "gender",
    "age_band",
    "province",
    "city",
    "city_tier",
    "phone_brand",
    "app_categories",
    "consumption_level",
    "interests",
    "parenting_status",
    "marital_status",
    "occupation",
)

_BRANDS: Final = (*(b.name for b in ref.ANDROID_BRANDS), "Apple")
_APPLE: Final = len(_BRANDS) - 1
_N_INT: Final = len(ref.INTERESTS)
_I = {name: i for i, name in enumerate(ref.INTERESTS)}

# P(devices per person = 1, 2, 3).
_DEVICES_PER_PERSON: Final = (0.80, 0.16, 0.04)
_CONSUMPTION_BY_TIER: Final = np.array(
    [
        [0.15, 0.38, 0.32, 0.15],
        [0.22, 0.42, 0.26, 0.10],
        [0.30, 0.42, 0.21, 0.07],
        [0.40, 0.40, 0.16, 0.04],
        [0.50, 0.36, 0.11, 0.03],
    ]
)
_MARITAL_BY_AGE: Final = np.array(
    [
        [0.70, 0.22, 0.08],
        [0.25, 0.20, 0.55],
        [0.10, 0.07, 0.83],
        [0.07, 0.05, 0.88],
        [0.08, 0.04, 0.88],
    ]
)
_PARENTING_MARRIED_BY_AGE: Final = np.array(
    [
        [0.55, 0.15, 0.25, 0.05, 0.00],
        [0.25, 0.10, 0.35, 0.28, 0.02],
        [0.10, 0.02, 0.10, 0.50, 0.28],
        [0.15, 0.00, 0.01, 0.14, 0.70],
        [0.85, 0.00, 0.00, 0.02, 0.13],
    ]
)
_PARENTING_UNMARRIED: Final = np.array([0.95, 0.02, 0.02, 0.01, 0.00])
_OCCUPATION_BY_AGE: Final = np.array(
    [
        [0.45, 0.20, 0.15, 0.04, 0.02, 0.03, 0.02, 0.09, 0.00],
        [0.02, 0.42, 0.20, 0.10, 0.05, 0.06, 0.05, 0.10, 0.00],
        [0.00, 0.36, 0.24, 0.14, 0.06, 0.06, 0.06, 0.08, 0.00],
        [0.00, 0.26, 0.30, 0.16, 0.07, 0.06, 0.06, 0.06, 0.03],
        [0.00, 0.08, 0.12, 0.08, 0.03, 0.03, 0.03, 0.03, 0.60],
    ]
)
_INTEREST_BASE: Final = np.array(
    [0.18, 0.14, 0.20, 0.22, 0.15, 0.08, 0.25, 0.22, 0.18, 0.55, 0.50, 0.45]
)
_IOS_BY_CONSUMPTION: Final = np.array([0.12, 0.22, 0.38, 0.55])
_IOS_TIER_FACTOR: Final = np.array([1.25, 1.1, 1.0, 0.8, 0.7])
_APP_BASE: Final = np.array(
    [
        0.92,
        0.85,
        0.60,
        0.80,
        0.50,
        0.35,
        0.35,
        0.20,
        0.25,
        0.20,
        0.55,
        0.50,
        0.30,
        0.08,
        0.10,
        0.12,
        0.25,
        0.60,
        0.30,
    ]
)
# interest -> app category it drives
_APP_OF_INTEREST: Final = {
    "beauty": "beauty",
    "hair_care": "beauty",
    "finance": "finance",
    "travel": "travel",
    "auto": "auto",
    "mother_baby": "parenting",
    "sports_health": "health_fitness",
    "gaming": "games",
    "reading": "reading",
    "video": "long_video",
    "social": "social",
    "shopping": "shopping",
}


def _logit(p: npt.ArrayLike) -> Float:
    q = np.asarray(p, dtype=np.float64)
    return np.asarray(np.log(q / (1.0 - q)))


def _sigmoid(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _calibrate(score: Float, mask: Bool, target: float) -> float:
    """The intercept ``b`` with ``mean(sigmoid(b + score[mask])) == target`` (Newton's method)."""
    s = score[mask]
    b = float(_logit(target)) - float(s.mean())
    for _ in range(50):  # converges in a handful of steps; the cap only guards pathologies
        q = _sigmoid(b + s)
        gap = float(q.mean()) - target
        if abs(gap) < 1e-12:
            break
        b -= gap / max(float((q * (1.0 - q)).mean()), 1e-12)
    return b


def _interest_effects() -> tuple[Float, Float, Float, Float]:
    """Logit shifts of interests by gender, age band, parenting status and consumption level."""
    g = np.zeros((2, _N_INT))
    g[
        1,
        [
            _I["beauty"],
            _I["hair_care"],
            _I["auto"],
            _I["gaming"],
            _I["mother_baby"],
            _I["shopping"],
        ],
    ] = (
        1.6,
        1.2,
        -0.9,
        -0.7,
        0.4,
        0.4,
    )
    a = np.zeros((5, _N_INT))
    a[0, [_I["gaming"], _I["beauty"], _I["finance"], _I["mother_baby"]]] = (0.8, 0.3, -0.6, -1.5)
    a[1, [_I["mother_baby"], _I["travel"]]] = (0.4, 0.2)
    a[2, [_I["finance"], _I["auto"], _I["mother_baby"]]] = (0.4, 0.4, 0.3)
    a[3, [_I["finance"], _I["gaming"], _I["reading"]]] = (0.4, -0.6, 0.2)
    a[4, [_I["gaming"], _I["beauty"], _I["finance"], _I["reading"], _I["sports_health"]]] = (
        -1.2,
        -0.6,
        0.3,
        0.4,
        0.3,
    )
    p = np.zeros((5, _N_INT))
    p[1, _I["mother_baby"]] = 2.2
    p[2, _I["mother_baby"]] = 2.2
    p[3, _I["mother_baby"]] = 1.2
    c = np.zeros((4, _N_INT))
    for level in (2, 3):
        c[level, [_I["travel"], _I["finance"], _I["auto"], _I["beauty"]]] = (0.5, 0.4, 0.4, 0.3)
    return g, a, p, c


@dataclass
class Population:
    """The generated persons and devices (numpy arrays; internal to ``atoll.synth``).

    Person-level arrays have one entry per person; device-level arrays one per
    universe row, in universe row order. Categorical values are indices into
    the vocabularies of :mod:`atoll.synth.reference` and :mod:`atoll.synth.geo`.
    """

    n_persons: int
    person_of_device: Int
    device_id: pa.Array
    person_id: pa.Array
    is_bot: Bool
    gender: Int
    age: Int
    city: Int
    consumption: Int
    marital: Int
    parenting: Int
    occupation: Int
    interests: Bool
    phone: Int
    logit: Float
    propensity: Float
    is_buyer: Bool
    os_ios: Bool
    brand: Int
    ua_index: Int
    ua_labels: list[str]
    activity: Float
    phone_known: Bool
    oaid: pa.Array
    idfa: pa.Array
    imei: pa.Array
    in_ta: Bool
    universe: pa.Table

    @property
    def n_devices(self) -> int:
        """Number of devices (universe rows)."""
        return int(self.person_of_device.size)


def unique_phones(rng: np.random.Generator, n: int, taken: Int | None = None) -> Int:
    """``n`` distinct mainland mobile numbers (int64), none in ``taken`` or the hub test numbers."""
    prefixes = np.array(ref.PHONE_PREFIXES, dtype=np.int64)
    reserved = np.array([int(p) for p in ref.HUB_TEST_PHONES], dtype=np.int64)
    if taken is not None:
        reserved = np.concatenate([reserved, taken])
    out = prefixes[rng.integers(0, prefixes.size, n)] * 100_000_000 + rng.integers(
        0, 100_000_000, n
    )
    # Redraw duplicates and reserved numbers until none is left (a handful of rounds).
    while True:
        order = np.argsort(out, kind="stable")
        s = out[order]
        dup = np.zeros(n, dtype=bool)
        dup[order[1:]] = s[1:] == s[:-1]
        dup |= np.isin(out, reserved)
        k = int(dup.sum())
        if k == 0:
            return np.asarray(out, dtype=np.int64)
        out[dup] = prefixes[rng.integers(0, prefixes.size, k)] * 100_000_000 + rng.integers(
            0, 100_000_000, k
        )


def _uuid_chars(rng: np.random.Generator, n: int, *, upper: bool) -> npt.NDArray[np.uint8]:
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = hex_chars(raw, upper=upper)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = 8 if src == 0 else (12 if src == 20 else 4)
        out[:, dst : dst + width] = h[:, src : src + width]
    return out


def _imei_chars(rng: np.random.Generator, n: int) -> npt.NDArray[np.uint8]:
    """Valid 15-digit IMEIs: TAC ``86xxxxxx`` (China-made), serial, Luhn check digit."""
    digits = np.empty((n, 15), dtype=np.int64)
    digits[:, 0] = 8
    digits[:, 1] = 6
    digits[:, 2:14] = rng.integers(0, 10, (n, 12))
    digits[:, 14] = luhn_check_digit(digits[:, :14])
    return (digits + 48).astype(np.uint8)


def _user_agent_labels() -> tuple[list[str], dict[tuple[int, int, int], int], int]:
    """All device UA strings; index of (brand, model, android version) and of the first iOS UA."""
    labels: list[str] = []
    index: dict[tuple[int, int, int], int] = {}
    for b, brand in enumerate(ref.ANDROID_BRANDS):
        for m, model in enumerate(brand.models):
            for version, _ in ref.ANDROID_VERSIONS:
                index[(b, m, version)] = len(labels)
                labels.append(ref.android_user_agent(version, model))
    first_ios = len(labels)
    labels.extend(ref.ios_user_agent(v) for v, _ in ref.IOS_VERSIONS)
    return labels, index, first_ios


def _persons(rng: np.random.Generator, n_human_devices: int) -> Int:
    """Devices per person (1..3) for persons owning exactly ``n_human_devices`` devices."""
    mean = float(np.dot(_DEVICES_PER_PERSON, (1, 2, 3)))
    guess = int(n_human_devices / mean * 1.1) + 10
    k = categorical(rng, _DEVICES_PER_PERSON, guess) + 1
    total = np.cumsum(k)
    while total[-1] < n_human_devices:  # practically never: the guess has a 10 % margin
        k = np.concatenate([k, categorical(rng, _DEVICES_PER_PERSON, guess) + 1])
        total = np.cumsum(k)
    last = int(np.searchsorted(total, n_human_devices))
    k = k[: last + 1].copy()
    k[-1] -= int(total[last] - n_human_devices)
    return k


def build_population(config: WorldConfig, rng: np.random.Generator) -> Population:
    """Generate persons, devices, identifiers, true attributes, tags and the universe table."""
    n = config.devices
    n_bot = (
        0 if config.ivt.bot_device_share == 0 else max(2, round(n * config.ivt.bot_device_share))
    )
    per_person = _persons(rng, n - n_bot)
    n_human = per_person.size
    p = n_human + n_bot
    is_bot = np.zeros(p, dtype=bool)
    is_bot[n_human:] = True
    counts = np.concatenate([per_person, np.ones(n_bot, dtype=np.int64)])
    person_of_device = rng.permutation(np.repeat(np.arange(p, dtype=np.int64), counts))

    # --- true person attributes -------------------------------------------------------
    gender = (rng.random(p) < 0.51).astype(np.int64)  # 1 = female
    age = categorical(rng, ref.AGE_SHARES, p)
    city = categorical(rng, city_weights(), p)
    tier_index = {t: i for i, t in enumerate(CITY_TIERS)}
    city_tier_of = np.array([tier_index[c.tier] for c in CITIES], dtype=np.int64)
    tier = city_tier_of[city]
    cons_p = _CONSUMPTION_BY_TIER[tier]
    young = age == 0
    cons_p[young] = 0.7 * cons_p[young] + 0.3 * np.array([0.5, 0.35, 0.12, 0.03])
    consumption = categorical(rng, cons_p)
    marital = categorical(rng, _MARITAL_BY_AGE[age])
    married = marital == 2
    par_p = np.where(
        married[:, None], _PARENTING_MARRIED_BY_AGE[age], _PARENTING_UNMARRIED[None, :]
    )
    parenting = categorical(rng, par_p)
    occupation = categorical(rng, _OCCUPATION_BY_AGE[age])
    g_eff, a_eff, p_eff, c_eff = _interest_effects()
    int_logit = (
        _logit(_INTEREST_BASE)[None, :]
        + g_eff[gender]
        + a_eff[age]
        + p_eff[parenting]
        + c_eff[consumption]
    )
    interests = rng.random((p, _N_INT), dtype=np.float32) < _sigmoid(int_logit.astype(np.float32))
    empty = ~interests.any(axis=1)
    interests[empty, _I["video"]] = True

    # --- planted buyer propensity ------------------------------------------------------
    age_eff = np.array([0.3, 0.8, 0.5, 0.0, -0.6])
    cons_eff = np.array([-0.6, 0.0, 0.5, 0.8])
    tier_eff = np.array([0.3, 0.25, 0.1, 0.0, -0.1])
    score = (
        1.1 * gender
        + age_eff[age]
        + 0.9 * interests[:, _I["beauty"]]
        + 1.0 * interests[:, _I["hair_care"]]
        + cons_eff[consumption]
        + tier_eff[tier]
        + rng.normal(0.0, 0.5, p)
    )
    human = ~is_bot
    logit = _calibrate(score, human, config.base_buyer_rate) + score
    propensity = np.where(human, _sigmoid(logit), 0.0)
    is_buyer = rng.random(p) < propensity

    phone = np.zeros(p, dtype=np.int64)
    phone[human] = unique_phones(rng, n_human)

    # --- devices ---------------------------------------------------------------------
    pd = person_of_device
    dev_bot = is_bot[pd]
    p_ios = np.clip(_IOS_BY_CONSUMPTION[consumption[pd]] * _IOS_TIER_FACTOR[tier[pd]], 0.02, 0.9)
    os_ios = (rng.random(n) < p_ios) & ~dev_bot
    shares = np.array([b.share for b in ref.ANDROID_BRANDS])
    brand = np.where(os_ios, _APPLE, categorical(rng, shares, n))
    versions = np.array([v for v, _ in ref.ANDROID_VERSIONS], dtype=np.int64)
    android_version = versions[categorical(rng, [s for _, s in ref.ANDROID_VERSIONS], n)]
    android_version[dev_bot] = versions[rng.integers(2, versions.size, int(dev_bot.sum()))]
    ios_version = categorical(rng, [s for _, s in ref.IOS_VERSIONS], n)
    n_models = np.array([len(b.models) for b in ref.ANDROID_BRANDS] + [1], dtype=np.int64)
    model = (rng.random(n) * n_models[brand]).astype(np.int64)
    ua_labels, ua_of, first_ios = _user_agent_labels()
    ua_table = np.zeros((len(ref.ANDROID_BRANDS), int(n_models.max()), 15), dtype=np.int64)
    for (b, m, v), i in ua_of.items():
        ua_table[b, m, v] = i
    safe_brand = np.minimum(brand, len(ref.ANDROID_BRANDS) - 1)
    ua_index = np.where(
        os_ios, first_ios + ios_version, ua_table[safe_brand, np.minimum(model, 3), android_version]
    )
    activity = rng.lognormal(0.0, 0.6, n)

    device_id = chars_to_strings(hex_chars(rng.integers(0, 256, (n, 16), dtype=np.uint8)))

    # Identifiers: OAID on Android >= 10 (format by brand), IMEI on Android <= 9, IDFA on iOS.
    android = ~os_ios
    u = rng.random(n)
    has_oaid = android & (
        ((android_version >= 10) & (u < 0.9)) | ((android_version == 9) & (u < 0.3))
    )
    has_oaid |= dev_bot & (u < 0.9)
    has_imei = android & (android_version <= 9) & (rng.random(n) < 0.95) & ~dev_bot
    has_idfa = os_ios & (rng.random(n) < config.idfa_share)
    fmt_of_brand = np.array([b.oaid_format for b in ref.ANDROID_BRANDS] + ["none"])
    oaid_fmt = fmt_of_brand[brand]
    parts: list[tuple[Int, pa.Array]] = []
    for fmt, nbytes in (("hex16", 8), ("hex32", 16), ("hex64", 32)):
        pos = np.nonzero(has_oaid & (oaid_fmt == fmt))[0]
        parts.append(
            (
                pos,
                chars_to_strings(
                    hex_chars(rng.integers(0, 256, (pos.size, nbytes), dtype=np.uint8))
                ),
            )
        )
    pos = np.nonzero(has_oaid & (oaid_fmt == "uuid"))[0]
    parts.append((pos, chars_to_strings(_uuid_chars(rng, pos.size, upper=False))))
    oaid = assemble(n, parts, pa.string())
    pos = np.nonzero(has_idfa)[0]
    idfa = assemble(
        n, [(pos, chars_to_strings(_uuid_chars(rng, pos.size, upper=True)))], pa.string()
    )
    pos = np.nonzero(has_imei)[0]
    imei = assemble(n, [(pos, chars_to_strings(_imei_chars(rng, pos.size)))], pa.string())
    phone_known = (rng.random(n) < config.phone_share) & ~dev_bot
    phone_col = with_nulls(chars_to_strings(digit_chars(phone[pd], 11)), ~phone_known)

    # App categories follow interests (bots: almost everything installed).
    app_index = {name: i for i, name in enumerate(ref.APP_CATEGORIES)}
    app_logit = np.broadcast_to(
        _logit(_APP_BASE).astype(np.float32), (n, len(ref.APP_CATEGORIES))
    ).copy()
    dev_interests = interests[pd]
    for interest, app in _APP_OF_INTEREST.items():
        app_logit[:, app_index[app]] += 2.0 * dev_interests[:, _I[interest]]
    app_logit[age[pd] == 4] -= 0.7
    apps = rng.random(app_logit.shape, dtype=np.float32) < _sigmoid(app_logit.astype(np.float32))
    apps[dev_bot] = rng.random((int(dev_bot.sum()), len(ref.APP_CATEGORIES))) < 0.85
    apps[~apps.any(axis=1), app_index["social"]] = True

    # --- the provider's observed tags (predicted, incomplete) ------------------------
    tags, in_ta = _observed_tags(
        rng, pd, dev_bot, gender, age, city, consumption, interests, parenting, marital, occupation
    )
    brand_null = rng.random(n) < 0.015
    universe = pa.table(
        {
            "device_id": device_id,
            "os": take_labels(("android", "ios"), os_ios.astype(np.int64)),
            "phone": phone_col,
            "oaid": oaid,
            "idfa": idfa,
            "imei": imei,
            **{
                k: v
                for k, v in tags.items()
                if k in ("gender", "age_band", "province", "city", "city_tier")
            },
            "phone_brand": take_labels(_BRANDS, brand, brand_null),
            "app_categories": list_from_mask(apps, ref.APP_CATEGORIES, rng.random(n) < 0.02),
            **{
                k: v
                for k, v in tags.items()
                if k not in ("gender", "age_band", "province", "city", "city_tier")
            },
        }
    ).select(list(UNIVERSE_COLUMNS))

    return Population(
        n_persons=p,
        person_of_device=person_of_device,
        device_id=device_id,
        person_id=prefixed_numbers("p", np.arange(p), 9),
        is_bot=is_bot,
        gender=gender,
        age=age,
        city=city,
        consumption=consumption,
        marital=marital,
        parenting=parenting,
        occupation=occupation,
        interests=interests,
        phone=phone,
        logit=logit,
        propensity=propensity,
        is_buyer=is_buyer,
        os_ios=os_ios,
        brand=brand,
        ua_index=ua_index,
        ua_labels=ua_labels,
        activity=activity,
        phone_known=phone_known,
        oaid=oaid,
        idfa=idfa,
        imei=imei,
        in_ta=in_ta,
        universe=universe,
    )


def _shift(rng: np.random.Generator, values: Int, share: float, top: int) -> Int:
    """Move a ``share`` of ordinal values one step up or down (prediction error)."""
    move = rng.random(values.size) < share
    step = np.where(rng.random(values.size) < 0.5, -1, 1)
    return np.clip(np.where(move, values + step, values), 0, top)


def _observed_tags(
    rng: np.random.Generator,
    pd: Int,
    dev_bot: Bool,
    gender: Int,
    age: Int,
    city: Int,
    consumption: Int,
    interests: Bool,
    parenting: Int,
    marital: Int,
    occupation: Int,
) -> tuple[dict[str, pa.Array], Bool]:
    """Device-level tags as the provider has them (predicted, with unknowns) and the TA flag.

    The target audience (TA) is defined on these *observed* tags, since that is
    what delivery can target: predicted female, predicted age 18-44, with a
    known ``beauty`` or ``hair_care`` interest.
    """
    n = pd.size
    # Bots: demographics mostly unknown.
    unknown_boost = np.where(dev_bot, 0.85, 0.0)

    g = gender[pd]
    g = np.where(rng.random(n) < 0.04, 1 - g, g)
    g_unknown = rng.random(n) < np.maximum(0.07, unknown_boost)
    gender_obs = np.where(g_unknown, 2, g)
    gender_tag = take_labels(("male", "female", "unknown"), gender_obs)

    a = _shift(rng, age[pd], 0.12, len(ref.AGE_BANDS) - 1)
    a_unknown = rng.random(n) < np.maximum(0.10, unknown_boost)
    age_obs = np.where(a_unknown, len(ref.AGE_BANDS), a)
    age_tag = take_labels((*ref.AGE_BANDS, "unknown"), age_obs)

    c = city[pd]
    c_null = rng.random(n) < np.maximum(0.04, np.where(dev_bot, 0.7, 0.0))
    province_tag = take_labels([x.province for x in CITIES], c, c_null)
    city_tag = take_labels([x.name for x in CITIES], c, c_null)
    tier_tag = take_labels([x.tier for x in CITIES], c, c_null)

    cons = _shift(rng, consumption[pd], 0.08, len(ref.CONSUMPTION_LEVELS) - 1)
    cons_tag = take_labels(
        ref.CONSUMPTION_LEVELS, cons, rng.random(n) < np.maximum(0.12, unknown_boost)
    )

    true_int = interests[pd]
    u = rng.random(true_int.shape)
    obs_int = (true_int & (u >= 0.15)) | (~true_int & (u < 0.03))
    obs_int[dev_bot] = rng.random((int(dev_bot.sum()), _N_INT)) < 0.6
    int_null = (rng.random(n) < np.maximum(0.18, np.where(dev_bot, 0.5, 0.0))) | ~obs_int.any(
        axis=1
    )
    interests_tag = list_from_mask(obs_int, ref.INTERESTS, int_null)

    parenting_tag = take_labels(
        ref.PARENTING_STATUSES, parenting[pd], rng.random(n) < np.maximum(0.40, unknown_boost)
    )
    marital_tag = take_labels(
        ref.MARITAL_STATUSES, marital[pd], rng.random(n) < np.maximum(0.35, unknown_boost)
    )
    occupation_tag = take_labels(
        ref.OCCUPATIONS, occupation[pd], rng.random(n) < np.maximum(0.45, unknown_boost)
    )

    known_int = obs_int & ~int_null[:, None]
    in_ta = (
        (gender_obs == 1)
        & (age_obs <= 2)
        & (known_int[:, _I["beauty"]] | known_int[:, _I["hair_care"]])
    )
    tags = {
        "gender": gender_tag,
        "age_band": age_tag,
        "province": province_tag,
        "city": city_tag,
        "city_tier": tier_tag,
        "consumption_level": cons_tag,
        "interests": interests_tag,
        "parenting_status": parenting_tag,
        "marital_status": marital_tag,
        "occupation": occupation_tag,
    }
    return tags, np.asarray(in_ta, dtype=bool)
