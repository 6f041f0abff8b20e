"""The brand's members and orders, with the causal effect of the campaign planted.

Why: the attribution report (15-day window, MTA, CPO, ROI) and the lookalike
seeds both come from the brand's first-party data. To test them, the world
must know *why* each order exists: organically (the buyer propensity) or
because of a genuine ad exposure (the planted per-channel lift). That reason is
kept in ``truth/order_causes``; the brand's tables carry only what a brand has.

The order model:

* **organic**: each planted buyer (``Bernoulli(propensity)``, see
  :mod:`atoll.synth.universe`) places ``1 + Poisson(0.35)`` orders spread
  over the whole order period (``history_days`` before the campaign to
  ``post_window_days`` after the conversion window), more on the 618 and
  Double-11 shopping-festival days, in the afternoon and evening;
* **caused**: for each person and channel with a genuine impression, one
  extra order with probability ``click_lift`` (genuine click) or
  ``view_lift`` (impressions only), placed after the touch (the first click,
  else the first impression) with a truncated-exponential delay (mean 1.5
  days after a click, 3 days after a view) that ends inside the conversion
  window. Invalid traffic never causes an order.

Members: a ``members_share`` of persons (more among high-propensity persons)
were members before the order period; every buyer becomes a member at their
first order if not one already, so every order's phone or member id is in the
member table. 5 % of members registered with a secondary phone the provider
does not know. Online orders (Tmall, JD) carry the phone, mini-program orders
the phone and member id, offline store orders only the member id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.synth import reference as ref
from atoll.synth._columns import (
    LOCAL_OFFSET_US,
    US_PER_DAY,
    US_PER_SECOND,
    categorical,
    chars_to_strings,
    decimal_from_cents,
    digit_chars,
    local_midnight_us,
    prefixed_numbers,
    take_labels,
    timestamps,
    with_nulls,
)
from atoll.synth.config import WorldConfig
from atoll.synth.exposures import ExposureTruth
from atoll.synth.noise import format_phones
from atoll.synth.universe import Population, unique_phones

__all__ = ["MEMBER_COLUMNS", "ORDER_COLUMNS", "BrandData", "build_brand"]

Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

MEMBER_COLUMNS: Final = (
    "member_id",
    "phone",
    "email",
    "member_level",
    "join_date",
    "gender",
    "age_band",
)
ORDER_COLUMNS: Final = (
    "order_id",
    "order_time",
    "amount",
    "product",
    "channel",
    "phone",
    "member_id",
)

#: Relative order volume by local hour.
ORDER_HOURLY: Final = (
    0.3, 0.15, 0.08, 0.05, 0.04, 0.05, 0.1, 0.25, 0.45, 0.7, 0.95, 1.0,
    0.9, 0.85, 0.9, 0.95, 0.95, 0.9, 0.9, 1.0, 1.3, 1.45, 1.35, 0.8,
)  # fmt: skip
_FESTIVALS: Final = ((6, 18), (11, 11))
_ORGANIC_CHANNEL: Final = np.array([[0.38, 0.22, 0.18, 0.22], [0.25, 0.20, 0.12, 0.43]])
_CAUSED_CHANNEL: Final = np.array([0.45, 0.25, 0.25, 0.05])
_SURNAMES: Final = tuple(
    [
        "wang",
        "li",
        "zhang",
        "liu",
        "chen",
        "yang",
        "huang",
        "zhao",
        "wu",
        "zhou",
        "xu",
        "sun",
        "ma",
        "zhu",
        "hu",
        "guo",
        "he",
        "lin",
        "luo",
        "gao",
    ]
)
_GIVEN: Final = tuple(
    [
        "wei",
        "fang",
        "na",
        "min",
        "jing",
        "li",
        "qiang",
        "lei",
        "jun",
        "yang",
        "yan",
        "jie",
        "tao",
        "ming",
        "chao",
        "xiu",
        "hua",
        "ping",
        "gang",
        "hui",
    ]
)


@dataclass
class BrandData:
    """The brand's tables, the order truth, and per-person member links for other parts."""

    members: pa.Table
    orders: pa.Table
    order_causes: pa.Table
    channel_lift: pa.Table
    member_of_person: Int  # row in ``members`` per person, -1 if not a member
    member_phone: Int  # the phone a member registered with (0 if not a member)


def _day_weights(start: date, days: int) -> Float:
    w = np.ones(days)
    for i in range(days):  # a loop over calendar days (at most a few hundred), not rows
        d = start + timedelta(days=i)
        for month, day in _FESTIVALS:
            if d.month == month and abs(d.day - day) <= 2:
                w[i] = 2.0
    return w


def _order_times(rng: np.random.Generator, n: int, start: date, days: int) -> Int:
    day = categorical(rng, _day_weights(start, days), n)
    hour = categorical(rng, ORDER_HOURLY, n)
    within = rng.integers(0, 3600 * US_PER_SECOND, n)
    return np.asarray(
        local_midnight_us(start) + day * US_PER_DAY + hour * 3600 * US_PER_SECOND + within
    )


def _local_days(us: Int) -> Int:
    """Local (UTC+8) calendar day numbers since 1970-01-01."""
    return np.asarray((us + LOCAL_OFFSET_US) // US_PER_DAY, dtype=np.int64)


def _emails(rng: np.random.Generator, n: int) -> pa.Array:
    domains = [d for d, _ in ref.EMAIL_DOMAINS]
    dom = categorical(rng, [w for _, w in ref.EMAIL_DOMAINS], n)
    qq = dom == 0
    qq_number = pc.cast(pa.array(rng.integers(100_000, 3_000_000_000, n)), pa.string())
    year = pc.cast(pa.array(rng.integers(1965, 2007, n)), pa.string())
    name = pc.binary_join_element_wise(
        take_labels(_SURNAMES, rng.integers(0, len(_SURNAMES), n)),
        take_labels(_GIVEN, rng.integers(0, len(_GIVEN), n)),
        year,
        "",
    )
    local = pc.if_else(pa.array(qq), qq_number, name)
    return pc.binary_join_element_wise(local, take_labels(domains, dom), "@")


def build_brand(
    config: WorldConfig, pop: Population, exposure: ExposureTruth, rng: np.random.Generator
) -> BrandData:
    """Generate the brand's members and orders, the order causes and the channel lift truth."""
    channels = config.channels
    n_ch = len(channels)
    human = ~pop.is_bot
    period_days = (config.order_end - config.order_start).days + 1
    window_start_us = local_midnight_us(config.campaign_start)
    window_end_us = local_midnight_us(config.window_end + timedelta(days=1))  # exclusive

    # --- organic orders ------------------------------------------------------------------
    buyers = np.nonzero(pop.is_buyer)[0]
    per_buyer = 1 + rng.poisson(0.35, buyers.size)
    org_person = np.repeat(buyers, per_buyer)
    org_time = _order_times(rng, org_person.size, config.order_start, period_days)

    # --- orders caused by genuine exposure ---------------------------------------------------
    view_lift = np.array([c.view_lift for c in channels])
    click_lift = np.array([c.click_lift for c in channels])
    clicked = exposure.clicked
    p_cause = np.where(clicked, click_lift[exposure.channel], view_lift[exposure.channel])
    hit = rng.random(p_cause.size) < p_cause
    anchor = np.where(clicked, exposure.first_click_us, exposure.first_impression_us)[hit]
    mean_delay = np.where(clicked[hit], 1.5, 3.0) * US_PER_DAY
    min_delay = 600 * US_PER_SECOND
    room = np.maximum(window_end_us - 1 - anchor - min_delay, 1).astype(np.float64)
    u = rng.random(anchor.size)
    delay = -mean_delay * np.log1p(-u * (1.0 - np.exp(-room / mean_delay)))  # truncated exponential
    cau_person = exposure.person[hit]
    cau_time = anchor + min_delay + np.minimum(delay, room - 1).astype(np.int64)
    cau_channel = exposure.channel[hit]
    cau_touch = np.where(clicked[hit], 2, 1)

    person = np.concatenate([org_person, cau_person])
    t = np.concatenate([org_time, cau_time])
    cause = np.concatenate([np.full(org_person.size, -1), cau_channel])
    touch = np.concatenate([np.zeros(org_person.size, dtype=np.int64), cau_touch])
    order = np.lexsort((person, t))
    person, t, cause, touch = person[order], t[order], cause[order], touch[order]
    n_orders = person.size

    # --- members ---------------------------------------------------------------------------
    prop = pop.propensity
    mean_prop = max(float(prop[human].mean()), 1e-12)
    p_member = np.clip(config.members_share * (0.3 + 0.7 * prop / mean_prop), 0.0, 0.9)
    pre_member = human & (rng.random(pop.n_persons) < p_member)
    has_order = np.zeros(pop.n_persons, dtype=bool)
    has_order[person] = True
    is_member = pre_member | has_order
    first_order_day = np.full(pop.n_persons, np.iinfo(np.int64).max)
    np.minimum.at(first_order_day, person, _local_days(t))
    start_day = _local_days(np.array([local_midnight_us(config.order_start)]))[0]
    join_day = np.where(
        pre_member, start_day - rng.integers(1, 5 * 365, pop.n_persons), first_order_day
    )
    members = np.nonzero(is_member)[0]
    m = members.size
    # Member numbers grow with the join date (gaps between them), zero-padded to 10 digits.
    by_join = np.lexsort((rng.random(m), join_day[members]))
    members = members[by_join]
    numbers = 1_000_000 + np.cumsum(rng.integers(1, 40, m))
    member_of_person = np.full(pop.n_persons, -1, dtype=np.int64)
    member_of_person[members] = np.arange(m)
    secondary = rng.random(m) < 0.05
    member_phone_num = pop.phone[members].copy()
    member_phone_num[secondary] = unique_phones(rng, int(secondary.sum()), taken=pop.phone)
    member_phone = np.zeros(pop.n_persons, dtype=np.int64)
    member_phone[members] = member_phone_num
    member_id = prefixed_numbers("", numbers, 10)

    hist = np.bincount(person[t < window_start_us], minlength=pop.n_persons)[members]
    level_score = pop.consumption[members] + 0.6 * hist + rng.normal(0.0, 0.7, m)
    level = np.digitize(level_score, [1.0, 2.0, 3.0])
    g = pop.gender[members]
    g = np.where(rng.random(m) < 0.03, 1 - g, g)
    a = pop.age[members]
    a = np.clip(np.where(rng.random(m) < 0.08, a + np.where(rng.random(m) < 0.5, -1, 1), a), 0, 4)
    has_email = rng.random(m) < 0.35
    members_table = pa.table(
        {
            "member_id": member_id,
            "phone": format_phones(rng, member_phone_num, config.noisy_id_share),
            "email": with_nulls(_emails(rng, m), ~has_email),
            "member_level": take_labels(ref.MEMBER_LEVELS, level),
            "join_date": pa.array(join_day[members].astype(np.int32), pa.int32()).cast(pa.date32()),
            "gender": take_labels(ref.GENDERS, g, rng.random(m) < 0.15),
            "age_band": take_labels(ref.AGE_BANDS, a, rng.random(m) < 0.25),
        }
    )

    # --- order attributes ------------------------------------------------------------------
    older = (pop.age[person] >= 3).astype(np.int64)
    channel = np.where(
        cause >= 0,
        categorical(rng, _CAUSED_CHANNEL, n_orders),
        categorical(rng, _ORGANIC_CHANNEL[older]),
    )
    product = categorical(rng, np.array(ref.PRODUCT_BY_LEVEL)[pop.consumption[person]])
    lo = np.array([p.min_price for p in ref.PRODUCTS])[product]
    hi = np.array([p.max_price for p in ref.PRODUCTS])[product]
    list_price = np.floor(rng.uniform(lo, hi) / 10.0) * 10.0 + 9.0  # prices end in 9
    qty = categorical(rng, (0.75, 0.20, 0.05), n_orders) + 1
    in_window = (t >= window_start_us) & (t < window_end_us)
    discount = np.where(
        in_window, rng.uniform(0.80, 0.90, n_orders), rng.uniform(0.92, 1.0, n_orders)
    )
    cents = np.round(list_price * qty * discount * 100.0).astype(np.int64)
    mrow = member_of_person[person]
    phone_on_order = channel != 3  # offline store orders carry only the member id
    member_on_order = channel >= 2  # mini-program and offline orders carry the member id
    seq = np.arange(1, n_orders + 1)
    day_digits = _yyyymmdd(_local_days(t))
    oid = np.empty((n_orders, 2 + 8 + 8), dtype=np.uint8)
    oid[:, :2] = np.frombuffer(b"SO", dtype=np.uint8)
    oid[:, 2:10] = digit_chars(day_digits, 8)
    oid[:, 10:] = digit_chars(seq, 8)
    order_id = chars_to_strings(oid)
    orders_table = pa.table(
        {
            "order_id": order_id,
            "order_time": timestamps(t),
            "amount": decimal_from_cents(cents),
            "product": take_labels([p.name for p in ref.PRODUCTS], product),
            "channel": take_labels(ref.ORDER_CHANNELS, channel),
            "phone": with_nulls(
                format_phones(rng, member_phone[person], config.noisy_id_share / 2), ~phone_on_order
            ),
            "member_id": with_nulls(member_id.take(pa.array(mrow)), ~member_on_order),
        }
    )

    ch_names = [c.name for c in channels]
    causes = pa.table(
        {
            "order_id": order_id,
            "person_id": pop.person_id.take(pa.array(person)),
            "caused_by_channel": take_labels(ch_names, np.maximum(cause, 0), cause < 0),
            "cause_touch": take_labels(("none", "impression", "click"), touch, touch == 0),
            "in_window": pa.array(in_window),
        }
    )

    # --- the planted lift per channel, and what it produced ------------------------------------
    caused = cause >= 0
    caused_orders = np.bincount(cause[caused], minlength=n_ch)
    caused_cents = np.bincount(cause[caused], weights=cents[caused], minlength=n_ch)
    exposed = np.bincount(exposure.channel, minlength=n_ch)
    clickers = np.bincount(exposure.channel[clicked], minlength=n_ch)
    expected = np.bincount(exposure.channel, weights=p_cause, minlength=n_ch)
    sales = caused_cents / 100.0
    cost = exposure.cost_total
    with np.errstate(divide="ignore", invalid="ignore"):
        cpo = np.where(caused_orders > 0, cost / np.maximum(caused_orders, 1), np.nan)
        roi = np.where(cost > 0, (sales - cost) / np.where(cost > 0, cost, 1.0), np.nan)
    lift = pa.table(
        {
            "channel": pa.array(ch_names, pa.string()),
            "campaign_id": pa.array([config.campaign_id(c) for c in ch_names], pa.string()),
            "cpm": pa.array([c.cpm for c in channels], pa.float64()),
            "cpc": pa.array([c.cpc for c in channels], pa.float64()),
            "view_lift": pa.array(view_lift, pa.float64()),
            "click_lift": pa.array(click_lift, pa.float64()),
            "exposed_persons": pa.array(exposed, pa.int64()),
            "clicked_persons": pa.array(clickers, pa.int64()),
            "expected_caused_orders": pa.array(np.round(expected, 6), pa.float64()),
            "caused_orders": pa.array(caused_orders, pa.int64()),
            "caused_sales": decimal_from_cents(np.round(caused_cents).astype(np.int64)),
            "cost": pa.array(np.round(cost, 6), pa.float64()),
            "valid_cost": pa.array(np.round(exposure.cost_valid, 6), pa.float64()),
            "incremental_cpo": pa.array(np.round(cpo, 6), pa.float64(), from_pandas=True),
            "incremental_roi": pa.array(np.round(roi, 6), pa.float64(), from_pandas=True),
        }
    )
    return BrandData(
        members=members_table,
        orders=orders_table,
        order_causes=causes,
        channel_lift=lift,
        member_of_person=member_of_person,
        member_phone=member_phone,
    )


def _yyyymmdd(days: Int) -> Int:
    """``YYYYMMDD`` integers of day numbers since 1970-01-01 (vectorised civil calendar)."""
    d = days.astype("datetime64[D]")
    y = d.astype("datetime64[Y]").astype(np.int64) + 1970
    mth = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dd = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    return np.asarray(y * 10000 + mth * 100 + dd, dtype=np.int64)
