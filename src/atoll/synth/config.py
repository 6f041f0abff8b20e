"""Configuration of the synthetic world: sizes, dates, channels, planted effects, noise.

Why: every later report is tested against effects planted here (per-channel
causal lift, invalid-traffic shares, buyer propensity), so the knobs must be
explicit, validated once (a wrong value is a :class:`~atoll.errors.ConfigError`
naming the field, not a strange world), and recorded next to the data
(``world.json``) so that a reader knows what was planted.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from datetime import date, timedelta
from typing import Final

from atoll.errors import ConfigError

__all__ = [
    "DEFAULT_CHANNELS",
    "MAX_DEVICES",
    "MIN_DEVICES",
    "ChannelSpec",
    "IvtConfig",
    "WorldConfig",
]

#: Smallest universe the generator accepts (below it the planted parts are too thin).
MIN_DEVICES: Final = 200
#: Largest universe the generator accepts in one process.
MAX_DEVICES: Final = 20_000_000
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _share(owner: str, name: str, value: object, *, upper: float = 1.0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= upper:
        raise ConfigError(f"{owner}.{name} must be a number in [0, {upper}], got {value!r}")


def _count(owner: str, name: str, value: object, *, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{owner}.{name} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One media channel of the campaign: prices, delivery and the planted causal lift.

    ``cpm`` is CNY per thousand impressions and ``cpc`` CNY per click (a channel
    may bill either or both). ``reach`` is the expected share of human devices
    that see at least one impression; ``ctr`` the average click-through rate
    per impression; ``target_share`` the share of delivery weight aimed at the
    target audience (0 = untargeted, 1 = only TA-weighted). ``view_lift`` and
    ``click_lift`` are the planted *absolute* increases in the probability
    that a person places one extra order caused by this channel: a person with
    a valid impression but no genuine click gets ``view_lift``, a person with a
    genuine click gets ``click_lift``.
    """

    name: str
    cpm: float
    cpc: float
    ctr: float
    reach: float
    view_lift: float
    click_lift: float
    target_share: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"ChannelSpec.name must match {_NAME.pattern} (lowercase id), got {self.name!r}"
            )
        owner = f"ChannelSpec[{self.name}]"
        for name in ("cpm", "cpc"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= 10_000
            ):
                raise ConfigError(
                    f"{owner}.{name} must be a price in CNY in [0, 10000], got {value!r}"
                )
        if self.cpm == 0 and self.cpc == 0:
            raise ConfigError(f"{owner}: at least one of cpm and cpc must be positive")
        _share(owner, "ctr", self.ctr, upper=0.5)
        _share(owner, "reach", self.reach, upper=0.9)
        _share(owner, "view_lift", self.view_lift, upper=0.5)
        _share(owner, "click_lift", self.click_lift, upper=0.9)
        _share(owner, "target_share", self.target_share)
        if self.click_lift < self.view_lift:
            raise ConfigError(f"{owner}: click_lift must be >= view_lift (clicks are stronger)")


#: The default campaign: short-video, long-video and social channels. Prices are in the
#: range of published Chinese in-feed / pre-roll rate cards (CNY); the planted lifts make
#: incremental ROI land around 1.5-4 (positive, not miraculous).
DEFAULT_CHANNELS: Final[tuple[ChannelSpec, ...]] = (
    ChannelSpec(
        "douyin",
        cpm=45.0,
        cpc=0.0,
        ctr=0.018,
        reach=0.20,
        view_lift=0.004,
        click_lift=0.045,
        target_share=0.6,
    ),
    ChannelSpec(
        "tencent_video",
        cpm=80.0,
        cpc=0.0,
        ctr=0.008,
        reach=0.15,
        view_lift=0.005,
        click_lift=0.035,
        target_share=0.4,
    ),
    ChannelSpec(
        "weibo",
        cpm=0.0,
        cpc=1.5,
        ctr=0.012,
        reach=0.08,
        view_lift=0.001,
        click_lift=0.020,
        target_share=0.5,
    ),
    ChannelSpec(
        "iqiyi",
        cpm=65.0,
        cpc=0.0,
        ctr=0.007,
        reach=0.10,
        view_lift=0.003,
        click_lift=0.030,
        target_share=0.3,
    ),
    ChannelSpec(
        "kuaishou",
        cpm=30.0,
        cpc=0.3,
        ctr=0.022,
        reach=0.14,
        view_lift=0.002,
        click_lift=0.025,
        target_share=0.5,
    ),
)


@dataclass(frozen=True, slots=True)
class IvtConfig:
    """How much invalid traffic to inject (labelled only in ``truth/ivt_labels``).

    * ``bot_device_share``: share of universe devices that are bots (emulator
      farms): abnormal user agents, hundreds of impressions each, flat diurnal
      pattern, a high click rate, part of it from data-centre IPs.
    * ``bot_mean_impressions``: mean impressions per bot device.
    * ``datacenter_share``: extra impressions (relative to the genuine ones)
      sent from data-centre IPs on real devices' IDs (SDK spoofing / proxies).
    * ``click_injection_share``: share of genuine impressions followed by an
      injected click within ~1 s (80 %) or a click stamped *before* the
      impression (20 %).
    * ``abnormal_frequency_share``: share of human devices with a burst of
      hundreds of impressions within one or two hours (ad stacking, SDK loops).
    """

    bot_device_share: float = 0.0008
    bot_mean_impressions: int = 250
    datacenter_share: float = 0.03
    click_injection_share: float = 0.004
    abnormal_frequency_share: float = 0.0003

    def __post_init__(self) -> None:
        _share("IvtConfig", "bot_device_share", self.bot_device_share, upper=0.05)
        _count("IvtConfig", "bot_mean_impressions", self.bot_mean_impressions, low=20, high=5000)
        _share("IvtConfig", "datacenter_share", self.datacenter_share, upper=0.5)
        _share("IvtConfig", "click_injection_share", self.click_injection_share, upper=0.2)
        _share("IvtConfig", "abnormal_frequency_share", self.abnormal_frequency_share, upper=0.05)


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """Everything that shapes a synthetic world; validated at construction.

    Dates are local calendar days in Asia/Shanghai (UTC+8). The campaign runs
    ``campaign_start``..``campaign_end`` (inclusive); the conversion window
    covers the campaign and the ``conversion_window_days`` days after its end;
    orders are also generated ``history_days`` before the campaign and
    ``post_window_days`` after the window, so that window logic has orders to
    exclude. ``members_share`` is the share of (human) persons who are brand
    members before the order history starts; every buyer also becomes a member
    at their first order. ``phone_share`` is the share of devices whose owner's
    phone the provider knows. ``base_buyer_rate`` is the mean planted buyer
    propensity (share of persons who buy organically during the order period).
    """

    devices: int = 100_000
    seed: int = 7
    members_share: float = 0.06
    phone_share: float = 0.6
    campaign_start: date = date(2026, 6, 1)
    campaign_end: date = date(2026, 6, 14)
    conversion_window_days: int = 15
    history_days: int = 60
    post_window_days: int = 14
    campaign_name: str = "summer_hair_2026"
    channels: tuple[ChannelSpec, ...] = DEFAULT_CHANNELS
    ivt: IvtConfig = field(default_factory=IvtConfig)
    base_buyer_rate: float = 0.04
    idfa_share: float = 0.45
    ping_device_share: float = 0.1
    ping_days: int = 30
    media_user_share: float = 0.3
    hub_phones: int = 2
    hub_imeis: int = 1
    hub_degree: int = 400
    noisy_id_share: float = 0.08
    invalid_id_share: float = 0.01

    def __post_init__(self) -> None:
        _count("WorldConfig", "devices", self.devices, low=MIN_DEVICES, high=MAX_DEVICES)
        _count("WorldConfig", "seed", self.seed, low=0, high=2**63 - 1)
        _share("WorldConfig", "members_share", self.members_share, upper=0.9)
        _share("WorldConfig", "phone_share", self.phone_share)
        for name in ("campaign_start", "campaign_end"):
            if not isinstance(getattr(self, name), date):
                raise ConfigError(
                    f"WorldConfig.{name} must be a datetime.date, got {getattr(self, name)!r}"
                )
        if self.campaign_end < self.campaign_start:
            raise ConfigError("WorldConfig.campaign_end must not be before campaign_start")
        if (self.campaign_end - self.campaign_start).days > 90:
            raise ConfigError("WorldConfig: a campaign may last at most 91 days")
        _count("WorldConfig", "conversion_window_days", self.conversion_window_days, low=0, high=90)
        _count("WorldConfig", "history_days", self.history_days, low=1, high=730)
        _count("WorldConfig", "post_window_days", self.post_window_days, low=1, high=180)
        if not isinstance(self.campaign_name, str) or not _NAME.match(self.campaign_name):
            raise ConfigError(
                f"WorldConfig.campaign_name must match {_NAME.pattern}, got {self.campaign_name!r}"
            )
        if not isinstance(self.channels, tuple) or not self.channels:
            raise ConfigError("WorldConfig.channels must be a non-empty tuple of ChannelSpec")
        if not all(isinstance(c, ChannelSpec) for c in self.channels):
            raise ConfigError("WorldConfig.channels must hold ChannelSpec values only")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ConfigError(f"WorldConfig.channels has duplicate names: {names}")
        if len(names) > 32:
            raise ConfigError("WorldConfig.channels: at most 32 channels")
        if not isinstance(self.ivt, IvtConfig):
            raise ConfigError("WorldConfig.ivt must be an IvtConfig")
        _share("WorldConfig", "base_buyer_rate", self.base_buyer_rate, upper=0.5)
        if self.base_buyer_rate <= 0:
            raise ConfigError("WorldConfig.base_buyer_rate must be positive")
        _share("WorldConfig", "idfa_share", self.idfa_share)
        _share("WorldConfig", "ping_device_share", self.ping_device_share)
        _count("WorldConfig", "ping_days", self.ping_days, low=7, high=90)
        _share("WorldConfig", "media_user_share", self.media_user_share)
        _count("WorldConfig", "hub_phones", self.hub_phones, low=0, high=4)
        _count("WorldConfig", "hub_imeis", self.hub_imeis, low=0, high=4)
        _count("WorldConfig", "hub_degree", self.hub_degree, low=2, high=100_000)
        _share("WorldConfig", "noisy_id_share", self.noisy_id_share, upper=0.5)
        _share("WorldConfig", "invalid_id_share", self.invalid_id_share, upper=0.2)

    @property
    def window_end(self) -> date:
        """Last local day of the conversion window (campaign end + window days)."""
        return self.campaign_end + timedelta(days=self.conversion_window_days)

    @property
    def order_start(self) -> date:
        """First local day with generated orders."""
        return self.campaign_start - timedelta(days=self.history_days)

    @property
    def order_end(self) -> date:
        """Last local day with generated orders."""
        return self.window_end + timedelta(days=self.post_window_days)

    def campaign_id(self, channel: str) -> str:
        """The campaign (line item) id of one channel."""
        return f"{self.campaign_name}-{channel}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field (dates as ISO strings)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, date):
                out[f.name] = value.isoformat()
            elif f.name == "channels":
                out[f.name] = [asdict(c) for c in value]
            elif f.name == "ivt":
                out[f.name] = asdict(value)
            else:
                out[f.name] = value
        out["window_end"] = self.window_end.isoformat()
        out["timezone"] = "Asia/Shanghai (UTC+8)"
        return out
