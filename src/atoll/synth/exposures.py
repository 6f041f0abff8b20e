"""The provider's ad exposure log, with invalid traffic injected and labelled aside.

Why: attribution, reach/frequency and IVT filtering all read one log of
impressions and clicks. The log must look like a real one (heavy-tailed
frequency, a diurnal rhythm, per-channel CTR, delivery skewed to the target
audience) and hide its invalid traffic among the valid events, the way a real
log does; only ``truth/ivt_labels`` says which events are invalid.

Genuine delivery, per channel: a human device is reached with probability
``reach x w / mean(w)`` where ``w`` mixes the target-audience flag (weight
``target_share``) and a per-device activity level (heavy users are reached by
more channels, which gives multi-touch journeys); frequency is ``1 +
floor(LogNormal(0.35, 0.9) x activity)`` capped at 60; each impression is
clicked with probability ``ctr x m`` where ``m`` grows with the person's
buyer propensity (normalised so the channel's CTR is kept). Genuine clicks
follow their impression by 2 s + LogNormal(median 4 s).

Invalid traffic (``IvtConfig``), labelled ``bot`` / ``datacenter`` (GIVT) and
``click_injection`` / ``abnormal_frequency`` (SIVT):

* ``bot``: every event of a bot device: abnormal user agent, hundreds of
  impressions at any hour (flat diurnal curve), ~6 % clicked within 0.3-3 s;
  40 % of bots send from data-centre IPs.
* ``datacenter``: extra impressions (and their clicks) on real devices' IDs
  sent from data-centre IP ranges with the device's normal user agent.
* ``click_injection``: a click on a genuine impression's device and channel
  stamped 0.05-1.0 s after it (80 %) or 1-30 s *before* it (20 %).
* ``abnormal_frequency``: a burst of 100-400 impressions within 0.5-2 hours on
  one human device, normal user agent and carrier IP.

Invalid events never cause orders (the causal model only reads genuine
events), but they do land on real devices whose owners may buy organically:
attribution without IVT filtering over-credits the channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.synth import reference as ref
from atoll.synth._columns import (
    US_PER_DAY,
    US_PER_SECOND,
    categorical,
    local_midnight_us,
    prefixed_numbers,
    take_labels,
    timestamps,
)
from atoll.synth.config import WorldConfig
from atoll.synth.universe import Population

__all__ = [
    "EXPOSURE_COLUMNS",
    "HOURLY_WEIGHTS",
    "IVT_CLASSES",
    "IVT_TYPES",
    "ExposureTruth",
    "build_exposures",
    "datacenter_ranges_table",
    "diurnal_times",
]

Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

EXPOSURE_COLUMNS: Final = (
    "event_id",
    "event_time",
    "event_type",
    "campaign_id",
    "channel",
    "device_id",
    "ip",
    "user_agent",
    "cost",
)
#: IVT type labels (index 1..4 in the internal code; 0 = valid).
IVT_TYPES: Final = ("bot", "datacenter", "click_injection", "abnormal_frequency")
#: MRC class of each IVT type.
IVT_CLASSES: Final = {
    "bot": "GIVT",
    "datacenter": "GIVT",
    "click_injection": "SIVT",
    "abnormal_frequency": "SIVT",
}
_VALID, _BOT, _DC, _INJ, _ABN = 0, 1, 2, 3, 4

#: Relative activity by local hour (0..23): quiet nights, lunch and evening peaks.
HOURLY_WEIGHTS: Final = (
    0.25, 0.15, 0.08, 0.05, 0.05, 0.08, 0.2, 0.45, 0.7, 0.8, 0.85, 0.95,
    1.1, 1.05, 0.85, 0.8, 0.8, 0.85, 0.95, 1.1, 1.3, 1.4, 1.25, 0.7,
)  # fmt: skip


@dataclass
class ExposureTruth:
    """Genuine (valid) exposure per person and channel, for the causal order model.

    One row per (person, channel) with at least one genuine impression:
    ``first_impression_us`` is the earliest genuine impression (any of the
    person's devices), ``first_click_us`` the earliest genuine click or -1.
    ``cost_total`` / ``cost_valid`` are per-channel spend (CNY) over all
    events / over valid events only.
    """

    person: Int
    channel: Int
    first_impression_us: Int
    first_click_us: Int
    cost_total: Float
    cost_valid: Float

    @property
    def clicked(self) -> Bool:
        """Whether the person genuinely clicked in that channel."""
        return np.asarray(self.first_click_us >= 0)


def diurnal_times(
    rng: np.random.Generator,
    n: int,
    start_us: int,
    days: int,
    weights: npt.ArrayLike = HOURLY_WEIGHTS,
) -> Int:
    """``n`` timestamps (UTC us) on local days ``[start, start+days)`` with hourly ``weights``."""
    day = rng.integers(0, days, n)
    hour = categorical(rng, weights, n)
    within = rng.integers(0, 3600 * US_PER_SECOND, n)
    return np.asarray(
        start_us + day * US_PER_DAY + hour * 3600 * US_PER_SECOND + within, dtype=np.int64
    )


def _parse_cidr(cidr: str) -> tuple[int, int]:
    addr, bits = cidr.split("/")
    a, b, c, d = (int(x) for x in addr.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d, 1 << (32 - int(bits))


def _datacenter_ips(rng: np.random.Generator, n: int) -> Int:
    ranges = [_parse_cidr(c) for c, _ in ref.DATACENTER_RANGES]
    sizes = np.array([s for _, s in ranges], dtype=np.float64)
    which = categorical(rng, np.sqrt(sizes), n)
    base = np.array([b for b, _ in ranges], dtype=np.int64)[which]
    return np.asarray(base + (rng.random(n) * sizes[which]).astype(np.int64), dtype=np.int64)


def _carrier_ips(rng: np.random.Generator, first_octet: Int) -> Int:
    return np.asarray(
        (first_octet << 24) + rng.integers(1 << 16, 1 << 24, first_octet.size), dtype=np.int64
    )


def _ip_strings(ips: Int) -> pa.Array:
    octets = [pc.cast(pa.array((ips >> s) & 0xFF), pa.string()) for s in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, ".")


def datacenter_ranges_table() -> pa.Table:
    """The data-centre IP ranges of the world (the GIVT IP list), as ``truth/datacenter_ranges``."""
    return pa.table(
        {
            "cidr": pa.array([c for c, _ in ref.DATACENTER_RANGES], pa.string()),
            "operator": pa.array([o for _, o in ref.DATACENTER_RANGES], pa.string()),
        }
    )


@dataclass
class _Events:
    device: list[Int]
    channel: list[Int]
    is_click: list[Bool]
    time: list[Int]
    ip: list[Int]
    ua: list[Int]
    ivt: list[Int]

    def add(
        self, device: Int, channel: Int, is_click: Bool, time: Int, ip: Int, ua: Int, ivt: int
    ) -> None:
        self.device.append(device)
        self.channel.append(channel)
        self.is_click.append(is_click)
        self.time.append(time)
        self.ip.append(ip)
        self.ua.append(ua)
        self.ivt.append(np.full(device.size, ivt, dtype=np.int64))


def build_exposures(
    config: WorldConfig, pop: Population, rng: np.random.Generator
) -> tuple[pa.Table, pa.Table, ExposureTruth]:
    """Generate ``provider/exposures``, ``truth/ivt_labels`` and the genuine exposure truth."""
    n = pop.n_devices
    channels = config.channels
    n_ch = len(channels)
    dev_bot = pop.is_bot[pop.person_of_device]
    human = ~dev_bot
    start_us = local_midnight_us(config.campaign_start)
    days = (config.campaign_end - config.campaign_start).days + 1
    end_us = start_us + days * US_PER_DAY
    octets = np.array(ref.CARRIER_FIRST_OCTETS, dtype=np.int64)
    dev_octet = octets[rng.integers(0, octets.size, n)]
    ev = _Events([], [], [], [], [], [], [])
    genuine: list[tuple[Int, Int, Int, Int]] = []  # impressions: device, channel, time, ip

    # --- genuine delivery, channel by channel --------------------------------------
    ta_share = max(float(pop.in_ta[human].mean()), 1e-9)
    z = pop.logit[pop.person_of_device]
    z = (z - z[human].mean()) / max(float(z[human].std()), 1e-9)
    click_mult = np.exp(0.5 * z)
    activity = pop.activity / pop.activity[human].mean()
    for c, spec in enumerate(channels):
        w = ((1.0 - spec.target_share) + spec.target_share * pop.in_ta / ta_share) * activity
        p = np.clip(spec.reach * w / w[human].mean(), 0.0, 0.97)
        reached = np.nonzero(human & (rng.random(n) < p))[0]
        freq = 1 + np.floor(rng.lognormal(0.35, 0.9, reached.size) * activity[reached]).astype(
            np.int64
        )
        freq = np.minimum(freq, 60)
        dev = np.repeat(reached, freq)
        t_imp = diurnal_times(rng, dev.size, start_us, days)
        ip = np.where(
            rng.random(dev.size) < 0.7,
            dev_octet[dev],
            octets[rng.integers(0, octets.size, dev.size)],
        )
        ip = _carrier_ips(rng, ip)
        ev.add(
            dev,
            np.full(dev.size, c),
            np.zeros(dev.size, bool),
            t_imp,
            ip,
            pop.ua_index[dev],
            _VALID,
        )
        genuine.append((dev, np.full(dev.size, c), t_imp, ip))
        m = click_mult[dev]
        clicked = rng.random(dev.size) < np.clip(
            spec.ctr * m / max(float(m.mean()), 1e-9), 0.0, 0.5
        )
        k = int(clicked.sum())
        lag = (2.0 + rng.lognormal(np.log(4.0), 0.9, k)) * US_PER_SECOND
        ev.add(
            dev[clicked], np.full(k, c), np.ones(k, bool), t_imp[clicked] + lag.astype(np.int64),
            ip[clicked], pop.ua_index[dev[clicked]], _VALID,
        )  # fmt: skip
    genuine_imps = sum(g[0].size for g in genuine)

    # --- invalid traffic ------------------------------------------------------------
    ua_bot0 = len(pop.ua_labels)
    bots = np.nonzero(dev_bot)[0]
    if bots.size:
        per_bot = np.maximum(20, rng.poisson(config.ivt.bot_mean_impressions, bots.size))
        dev = np.repeat(bots, per_bot)
        bot_ua = ua_bot0 + rng.integers(0, len(ref.BOT_USER_AGENTS), bots.size)
        bot_dc = rng.random(bots.size) < 0.4
        rank = np.repeat(np.arange(bots.size), per_bot)
        t_imp = start_us + rng.integers(0, end_us - start_us, dev.size)
        ch = rng.integers(0, n_ch, dev.size)
        ip = np.where(
            bot_dc[rank], _datacenter_ips(rng, dev.size), _carrier_ips(rng, dev_octet[dev])
        )
        ua = bot_ua[rank]
        ev.add(dev, ch, np.zeros(dev.size, bool), t_imp, ip, ua, _BOT)
        clicked = rng.random(dev.size) < 0.06
        lag = (rng.uniform(0.3, 3.0, int(clicked.sum())) * US_PER_SECOND).astype(np.int64)
        ev.add(
            dev[clicked],
            ch[clicked],
            np.ones(lag.size, bool),
            np.asarray(t_imp[clicked] + lag, dtype=np.int64),
            ip[clicked],
            ua[clicked],
            _BOT,
        )

    humans = np.nonzero(human)[0]
    n_dc = round(config.ivt.datacenter_share * genuine_imps)
    if n_dc:
        dev = humans[rng.integers(0, humans.size, n_dc)]
        ch = categorical(rng, [s.reach for s in channels], n_dc)
        t_imp = diurnal_times(rng, n_dc, start_us, days)
        ip = _datacenter_ips(rng, n_dc)
        ev.add(dev, ch, np.zeros(n_dc, bool), t_imp, ip, pop.ua_index[dev], _DC)
        ctr = np.array([s.ctr for s in channels])[ch]
        clicked = rng.random(n_dc) < ctr
        lag = ((2.0 + rng.lognormal(np.log(4.0), 0.9, int(clicked.sum()))) * US_PER_SECOND).astype(
            np.int64
        )
        ev.add(
            dev[clicked],
            ch[clicked],
            np.ones(lag.size, bool),
            np.asarray(t_imp[clicked] + lag, dtype=np.int64),
            ip[clicked],
            pop.ua_index[dev[clicked]],
            _DC,
        )

    # Click injection on genuine impressions.
    g_dev, g_ch, g_t, g_ip = (np.concatenate([g[i] for g in genuine]) for i in range(4))
    pick = np.nonzero(rng.random(g_dev.size) < config.ivt.click_injection_share)[0]
    before = rng.random(pick.size) < 0.2
    shift = np.where(
        before,
        -rng.uniform(1.0, 30.0, pick.size) * US_PER_SECOND,
        rng.uniform(0.05, 1.0, pick.size) * US_PER_SECOND,
    ).astype(np.int64)
    ev.add(
        g_dev[pick],
        g_ch[pick],
        np.ones(pick.size, bool),
        g_t[pick] + shift,
        g_ip[pick],
        pop.ua_index[g_dev[pick]],
        _INJ,
    )

    n_abn = (
        0
        if config.ivt.abnormal_frequency_share == 0
        else max(2, round(config.ivt.abnormal_frequency_share * humans.size))
    )
    if n_abn:
        who = rng.choice(humans, size=min(n_abn, humans.size), replace=False)
        burst = rng.integers(100, 401, who.size)
        dev = np.repeat(who, burst)
        rank = np.repeat(np.arange(who.size), burst)
        begin = diurnal_times(rng, who.size, start_us, days)
        length = (rng.uniform(0.5, 2.0, who.size) * 3600 * US_PER_SECOND).astype(np.int64)
        t_imp = begin[rank] + (rng.random(dev.size) * length[rank]).astype(np.int64)
        ch = rng.integers(0, n_ch, who.size)[rank]
        ip = _carrier_ips(rng, dev_octet[dev])
        ev.add(dev, ch, np.zeros(dev.size, bool), t_imp, ip, pop.ua_index[dev], _ABN)

    # --- assemble, order by time, number the events ----------------------------------
    device = np.concatenate(ev.device)
    channel = np.concatenate(ev.channel)
    is_click = np.concatenate(ev.is_click)
    t = np.concatenate(ev.time)
    ip = np.concatenate(ev.ip)
    ua = np.concatenate(ev.ua)
    ivt = np.concatenate(ev.ivt)
    order = np.lexsort((is_click, device, t))
    device, channel, t, ip, ua, ivt = (a[order] for a in (device, channel, t, ip, ua, ivt))
    is_click = is_click[order]
    cpm = np.array([s.cpm for s in channels]) / 1000.0
    cpc = np.array([s.cpc for s in channels])
    cost = np.round(np.where(is_click, cpc[channel], cpm[channel]), 6)
    event_id = prefixed_numbers("ev", np.arange(1, t.size + 1), 12)
    ch_names = [s.name for s in channels]
    table = pa.table(
        {
            "event_id": event_id,
            "event_time": timestamps(t),
            "event_type": take_labels(("impression", "click"), is_click.astype(np.int64)),
            "campaign_id": take_labels([config.campaign_id(s.name) for s in channels], channel),
            "channel": take_labels(ch_names, channel),
            "device_id": pop.device_id.take(pa.array(device)),
            "ip": _ip_strings(ip),
            "user_agent": take_labels([*pop.ua_labels, *ref.BOT_USER_AGENTS], ua),
            "cost": pa.array(cost, pa.float64()),
        }
    )
    bad = np.nonzero(ivt > 0)[0]
    labels = pa.table(
        {
            "event_id": event_id.take(pa.array(bad)),
            "ivt_type": take_labels(IVT_TYPES, ivt[bad] - 1),
            "ivt_class": take_labels([IVT_CLASSES[k] for k in IVT_TYPES], ivt[bad] - 1),
        }
    )

    # --- genuine exposure per (person, channel) ----------------------------------------
    valid = ivt == 0
    person = pop.person_of_device[device]
    key = person * n_ch + channel
    imp = valid & ~is_click
    clk = valid & is_click
    keys_imp, first_imp = np.unique(key[imp], return_index=True)  # rows are time-ordered
    t_first_imp = t[imp][first_imp]
    keys_clk, first_clk = np.unique(key[clk], return_index=True)
    t_first_clk = np.full(keys_imp.size, -1, dtype=np.int64)
    where = np.searchsorted(keys_imp, keys_clk)
    t_first_clk[where] = t[clk][first_clk]
    truth = ExposureTruth(
        person=keys_imp // n_ch,
        channel=keys_imp % n_ch,
        first_impression_us=t_first_imp,
        first_click_us=t_first_clk,
        cost_total=np.asarray(np.bincount(channel, weights=cost, minlength=n_ch), dtype=np.float64),
        cost_valid=np.asarray(
            np.bincount(channel[valid], weights=cost[valid], minlength=n_ch), dtype=np.float64
        ),
    )
    return table, labels, truth
