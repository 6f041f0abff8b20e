"""WorldConfig, ChannelSpec and IvtConfig validation: a bad value is a ConfigError naming it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from atoll.errors import ConfigError
from atoll.synth import DEFAULT_CHANNELS, ChannelSpec, IvtConfig, WorldConfig, generate_world


def test_defaults_are_valid_and_serialisable() -> None:
    config = WorldConfig()
    data = config.to_dict()
    json.dumps(data)
    assert data["window_end"] == "2026-06-29"
    channels = data["channels"]
    assert isinstance(channels, list)
    assert [c["name"] for c in channels] == [c.name for c in DEFAULT_CHANNELS]
    assert config.order_start == date(2026, 4, 2)
    assert config.order_end == date(2026, 7, 13)
    assert config.campaign_id("douyin") == "summer_hair_2026-douyin"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"devices": 10}, "devices"),
        ({"devices": True}, "devices"),
        ({"devices": 1000.0}, "devices"),
        ({"seed": -1}, "seed"),
        ({"members_share": 1.5}, "members_share"),
        ({"phone_share": -0.1}, "phone_share"),
        ({"campaign_end": date(2026, 5, 1)}, "campaign_end"),
        ({"campaign_start": "2026-06-01"}, "campaign_start"),
        ({"conversion_window_days": -1}, "conversion_window_days"),
        ({"history_days": 0}, "history_days"),
        ({"campaign_name": "Summer Sale"}, "campaign_name"),
        ({"channels": ()}, "channels"),
        ({"channels": [DEFAULT_CHANNELS[0]]}, "channels"),
        ({"channels": (DEFAULT_CHANNELS[0], DEFAULT_CHANNELS[0])}, "duplicate"),
        ({"ivt": {"bot_device_share": 0.1}}, "ivt"),
        ({"base_buyer_rate": 0.0}, "base_buyer_rate"),
        ({"ping_days": 3}, "ping_days"),
        ({"hub_phones": 9}, "hub_phones"),
        ({"invalid_id_share": 0.9}, "invalid_id_share"),
    ],
)
def test_bad_world_config_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        WorldConfig(**changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "Douyin"}, "name"),
        ({"cpm": -1.0}, "cpm"),
        ({"cpm": 0.0, "cpc": 0.0}, "cpm and cpc"),
        ({"ctr": 0.9}, "ctr"),
        ({"reach": 1.0}, "reach"),
        ({"view_lift": 0.05, "click_lift": 0.01}, "click_lift"),
        ({"target_share": 2.0}, "target_share"),
    ],
)
def test_bad_channel_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        replace(DEFAULT_CHANNELS[0], **changes)


def test_bad_ivt_config() -> None:
    with pytest.raises(ConfigError, match="click_injection_share"):
        IvtConfig(click_injection_share=0.5)
    with pytest.raises(ConfigError, match="bot_mean_impressions"):
        IvtConfig(bot_mean_impressions=1)


def test_generate_world_rejects_non_config() -> None:
    with pytest.raises(ConfigError, match="WorldConfig"):
        generate_world({"devices": 1000})  # type: ignore[arg-type]


def test_custom_channels_and_no_ivt_are_honoured() -> None:
    channels = (
        ChannelSpec("ott", cpm=60.0, cpc=0.0, ctr=0.01, reach=0.3, view_lift=0.01, click_lift=0.1),
    )
    ivt = IvtConfig(
        bot_device_share=0.0,
        datacenter_share=0.0,
        click_injection_share=0.0,
        abnormal_frequency_share=0.0,
    )
    world = generate_world(WorldConfig(devices=500, seed=1, channels=channels, ivt=ivt))
    exposures = world.tables["provider/exposures"]
    assert set(exposures["channel"].to_pylist()) == {"ott"}
    assert world.truth["ivt_labels"].num_rows == 0
    assert not any(world.truth["persons"]["is_bot"].to_pylist())
    assert world.truth["channel_lift"]["channel"].to_pylist() == ["ott"]
