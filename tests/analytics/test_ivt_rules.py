"""Known-answer tests of every IVT rule on small hand-made logs, plus the shipped lists.

Each case is written from the rule's definition in docs/methods.md ("Invalid
traffic"); expected flags are worked out by hand in the comments.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.analytics.ivt import (
    RULES,
    IpRanges,
    IvtConfig,
    IvtLists,
    UserAgentPatterns,
    _rule_device_frequency,
    default_lists,
    detect_ivt,
)
from atoll.errors import ConfigError, InputError, SchemaError

DATA = Path(__file__).resolve().parents[2] / "src" / "atoll" / "analytics" / "data"
T0 = datetime(2026, 6, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; PHB110 Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36"
)
DEV = "a9c91687aae9d22e100ac4d911c6315c"


def events(rows: list[dict[str, object]]) -> pa.Table:
    """A canonical exposure table from partial rows (defaults fill the rest)."""
    out = []
    for i, r in enumerate(rows):
        base: dict[str, object] = {
            "event_id": f"e{i:04d}",
            "event_time": T0,
            "event_type": "impression",
            "campaign_id": "c1",
            "channel": "douyin",
            "device_id": DEV,
            "ip": "120.1.2.3",
            "user_agent": PHONE_UA,
            "cost": 0.05,
        }
        base.update(r)
        out.append(base)
    schema = pa.schema(
        [
            ("event_id", pa.string()),
            ("event_time", pa.timestamp("us", tz="UTC")),
            ("event_type", pa.string()),
            ("campaign_id", pa.string()),
            ("channel", pa.string()),
            ("device_id", pa.string()),
            ("ip", pa.string()),
            ("user_agent", pa.string()),
            ("cost", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(out, schema=schema)


def lists(cidrs: tuple[str, ...] = ("47.92.0.0/14",)) -> IvtLists:
    return IvtLists(
        UserAgentPatterns.from_file(DATA / "crawler-user-agents.json"),
        IpRanges.from_cidrs(cidrs, source="test"),
        frozenset({"deadbeefdeadbeefdeadbeefdeadbeef"}),
    )


def flagged(table: pa.Table, rule: str, **config: object) -> list[str]:
    cfg = IvtConfig(rules=(rule,), **config)  # type: ignore[arg-type]
    result = detect_ivt(table, cfg, lists())
    assert set(result.flags["rule"].to_pylist()) <= {rule}
    return sorted(result.flags["event_id"].to_pylist())


# ------------------------------------------------------------------------------------ lists


def test_every_shipped_crawler_pattern_matches_its_example() -> None:
    """Provenance check: each crawler-user-agents pattern matches its upstream instance."""
    doc = json.loads((DATA / "crawler-user-agents.json").read_text(encoding="utf-8"))
    assert doc["licence"].startswith("MIT")
    assert (DATA / "crawler-user-agents.LICENSE").read_text().startswith("The MIT License")
    entries = [e for e in doc["patterns"] if "instance" in e]
    assert len(doc["patterns"]) > 1000
    patterns = default_lists().bot_patterns
    hits = patterns.match(pa.array([e["instance"] for e in entries]))
    missed = [e["pattern"] for e, h in zip(entries, hits, strict=True) if not h]
    assert missed == []


def test_bot_patterns_known_answers() -> None:
    patterns = default_lists().bot_patterns
    uas = [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "python-requests/2.31.0",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        PHONE_UA + " AutoClicker/1.4",  # Atoll's own addition
        PHONE_UA,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
        None,
    ]
    got = patterns.match(pa.array(uas, pa.string())).tolist()
    assert got == [True, True, True, True, False, False, False]


def test_pattern_lists_reject_bad_regex_and_support_ignore_case(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid RE2"):
        UserAgentPatterns(("ok", "(unclosed"), "test")
    text = tmp_path / "iab.txt"
    text.write_text("# comment\nspider\n\n", encoding="utf-8")
    lower = UserAgentPatterns.from_file(text, case_sensitive=False)
    assert lower.match(pa.array(["SomeSPIDER/1", "browser"])).tolist() == [True, False]
    exact = UserAgentPatterns.from_file(text)
    assert exact.match(pa.array(["SomeSPIDER/1"])).tolist() == [False]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        UserAgentPatterns.from_file(empty)


def test_ip_ranges_boundaries_ipv6_and_unparsed() -> None:
    ranges = IpRanges.from_cidrs(
        ["47.92.0.0/14", "8.129.0.0/16", "8.130.0.0/16", "2400:3200::/32", "1.2.3.4"],
        source="t",
    )
    # the two adjacent /16 blocks merge into one interval
    assert ranges.v4_start.size == 3
    ips = [
        "47.92.0.0",  # first address of the /14
        "47.95.255.255",  # last address of the /14
        "47.96.0.0",  # one past it
        "47.91.255.255",  # one before it
        "8.130.255.255",
        "1.2.3.4",
        "2400:3200::1",
        "2401::1",
        "not-an-ip",
        "300.1.1.1",
        "",
        None,
    ]
    inside, bad = ranges.contains(pa.array(ips, pa.string()))
    assert inside.tolist() == [
        True, True, False, False, True, True, True, False, False, False, False, False,
    ]  # fmt: skip
    assert bad.tolist() == [
        False, False, False, False, False, False, False, False, True, True, False, False,
    ]  # fmt: skip
    with pytest.raises(InputError, match="not an IP block"):
        IpRanges.from_cidrs(["10.0.0.0/33"], source="t")


def test_shipped_datacenter_list_loads() -> None:
    ranges = default_lists().datacenter
    assert ranges.blocks > 1000
    inside, _ = ranges.contains(pa.array(["3.5.140.1", "120.1.2.3"]))
    assert inside.tolist() == [True, False]  # 3.5.140.0/22 is AWS in the snapshot


def test_range_file_needs_cidr_column(tmp_path: Path) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("block\n1.2.3.0/24\n", encoding="utf-8")
    with pytest.raises(SchemaError, match="cidr"):
        IpRanges.from_file(bad)
    good = tmp_path / "r.txt"
    good.write_text("1.2.3.0/24\n", encoding="utf-8")
    assert IpRanges.from_file(good).blocks == 1


# ------------------------------------------------------------------------------------ rules


def test_bot_user_agent_and_missing_ua() -> None:
    t = events(
        [
            {"user_agent": "curl/8.4.0"},
            {},
            {"user_agent": None},
        ]
    )
    assert flagged(t, "bot_user_agent") == ["e0000"]
    assert flagged(t, "bot_user_agent", flag_missing_user_agent=True) == ["e0000", "e0002"]


def test_datacenter_ip() -> None:
    t = events([{"ip": "47.93.1.1"}, {"ip": "120.1.2.3"}, {"ip": None}])
    assert flagged(t, "datacenter_ip") == ["e0000"]
    report = detect_ivt(t, IvtConfig(rules=("datacenter_ip",)), lists()).report
    assert report.unparsed_ip == 0


def test_invalid_device_ids() -> None:
    t = events(
        [
            {"device_id": "00000000-0000-0000-0000-000000000000"},  # all-zero IDFA/OAID
            {"device_id": "ffffffffffffffff"},  # one character repeated
            {"device_id": "NULL"},  # placeholder
            {"device_id": "DEADBEEFDEADBEEFDEADBEEFDEADBEEF"},  # blacklisted (case-insensitive)
            {"device_id": "   "},  # empty after trimming
            {},  # a real-looking id
        ]
    )
    assert flagged(t, "invalid_device_id") == ["e0000", "e0001", "e0002", "e0003", "e0004"]


def test_duplicate_event_ids_and_content() -> None:
    t = events(
        [
            {"event_id": "x"},
            {"event_id": "x", "event_time": T0 + timedelta(seconds=5)},  # same id: 2nd is dup
            {"event_id": "y", "event_time": T0 + timedelta(minutes=1)},
            {"event_id": "z", "event_time": T0 + timedelta(minutes=1)},  # same content as y
            {"event_id": "w", "event_time": T0 + timedelta(minutes=1), "channel": "weibo"},
        ]
    )
    result = detect_ivt(t, IvtConfig(rules=("duplicate_event",)), lists())
    # flags name the input row, so the two "x" rows stay distinguishable
    assert sorted(zip(result.flags["event_id"].to_pylist(), result.flags["row"].to_pylist(),
                      strict=True)) == [("x", 1), ("z", 3)]  # fmt: skip
    assert result.filtered["event_id"].to_pylist() == ["x", "y", "w"]


def test_abnormal_frequency_per_device_sliding_window() -> None:
    # 31 events within 30 minutes: one window holds 31 > 30, so all 31 are flagged;
    # 30 events of another device are not; an event 2 h later is outside every window.
    burst = [{"event_time": T0 + timedelta(minutes=i)} for i in range(31)]
    later = [{"event_time": T0 + timedelta(hours=3)}]
    other = [
        {"device_id": "b" * 31 + "c", "event_time": T0 + timedelta(minutes=i)} for i in range(30)
    ]
    t = events(burst + later + other)
    got = flagged(t, "abnormal_frequency")
    assert got == [f"e{i:04d}" for i in range(31)]


def test_abnormal_frequency_per_ip_window() -> None:
    rows = [{"device_id": f"{i:032x}", "ip": "120.9.9.9"} for i in range(1, 6)]
    rows.append({"device_id": f"{99:032x}", "ip": "120.9.9.10"})
    t = events(rows)
    assert flagged(t, "abnormal_frequency", max_events_per_ip=4) == [f"e{i:04d}" for i in range(5)]


def test_click_injection_click_to_impression() -> None:
    t = events(
        [
            {"event_id": "i1"},
            {"event_id": "c_fast", "event_type": "click",
             "event_time": T0 + timedelta(milliseconds=500)},  # 0.5 s after: injected
            {"event_id": "i2", "event_time": T0 + timedelta(hours=1)},
            {"event_id": "c_human", "event_type": "click",
             "event_time": T0 + timedelta(hours=1, seconds=6)},  # 6 s after: human
            {"event_id": "c_before", "event_type": "click",
             "event_time": T0 + timedelta(hours=3)},  # 10 s before i3, none before: injected
            {"event_id": "i3", "event_time": T0 + timedelta(hours=3, seconds=10)},
            {"event_id": "c_orphan", "event_type": "click",
             "event_time": T0 + timedelta(hours=5)},  # no impression near: not this rule
            {"event_id": "c_other_channel", "event_type": "click", "channel": "weibo",
             "event_time": T0 + timedelta(milliseconds=300)},  # no weibo impression before
        ]
    )  # fmt: skip
    assert flagged(t, "click_injection") == ["c_before", "c_fast"]


def test_click_injection_click_to_install() -> None:
    t = events(
        [
            {"event_id": "i1"},
            {"event_id": "c1", "event_type": "click", "event_time": T0 + timedelta(seconds=5)},
            {"event_id": "i2", "event_time": T0 + timedelta(hours=2)},
            {"event_id": "c2", "event_type": "click",
             "event_time": T0 + timedelta(hours=2, seconds=5)},
        ]
    )  # fmt: skip
    installs = pa.table(
        {
            "device_id": [DEV, DEV],
            "install_time": pa.array(
                [T0 + timedelta(seconds=8), T0 + timedelta(hours=3)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    # c1 → install 3 s later: CTIT < 10 s, injected; c2 → install 55 min later: fine
    result = detect_ivt(t, IvtConfig(rules=("click_injection",)), lists(), installs=installs)
    assert result.flags["event_id"].to_pylist() == ["c1"]


def test_click_spamming_flat_time_of_day() -> None:
    rng = np.random.default_rng(1)
    rows: list[dict[str, object]] = []
    # 60 humans with events in the evening (local 19:00-22:00) build the population profile
    for d in range(60):
        for k in range(20):
            hour = 11 + int(rng.integers(0, 3))  # UTC 11-13 = local 19-21
            rows.append({"device_id": f"{d + 1:032x}", "event_time": T0.replace(hour=hour)
                         + timedelta(days=k % 7, minutes=int(rng.integers(0, 60)))})  # fmt: skip
    # one machine: 96 events spread evenly over all 24 hours
    bot = "f0" * 16
    for k in range(96):
        rows.append({"device_id": bot, "event_time": T0 + timedelta(minutes=15 * k + 7)})
    t = events(rows)
    got = set(flagged(t, "click_spamming"))
    bot_ids = {f"e{i:04d}" for i in range(1200, 1296)}
    assert got == bot_ids


def test_device_farm_many_devices_per_ip_and_ua() -> None:
    rows = [{"device_id": f"{i + 1:032x}", "ip": "120.7.7.7"} for i in range(25)]
    rows += [{"device_id": f"{i + 100:032x}", "ip": "120.7.7.8"} for i in range(20)]
    t = events(rows)
    # 25 distinct devices on one IP + UA in a day > 20; 20 on the other IP is not > 20
    assert flagged(t, "device_farm") == [f"e{i:04d}" for i in range(25)]
    assert flagged(t, "device_farm", max_devices_per_ip_ua=100, max_devices_per_ip=24) == [
        f"e{i:04d}" for i in range(25)
    ]


def test_report_counts_overlap_and_classes() -> None:
    t = events(
        [
            {"user_agent": "curl/8.4.0", "ip": "47.92.0.1", "cost": 1.0},  # bot + datacenter
            {"ip": "47.92.0.2", "event_time": T0 + timedelta(minutes=1), "cost": 2.0},
            {"event_time": T0 + timedelta(minutes=2), "cost": 4.0},
        ]
    )
    report = detect_ivt(t, IvtConfig(), lists()).report
    d = report.to_dict()
    assert d["rules"]["bot_user_agent"]["events"] == 1
    assert d["rules"]["datacenter_ip"]["events"] == 2
    assert d["rules"]["datacenter_ip"]["exclusive"] == 1
    assert d["rules"]["datacenter_ip"]["cost"] == pytest.approx(3.0)
    assert d["overlap"]["bot_user_agent"]["datacenter_ip"] == 1
    assert d["givt"]["events"] == 2
    assert d["sivt"]["events"] == 0
    assert d["any"]["events"] == 2
    assert d["kept_events"] == 1
    assert d["total"]["devices"] == 1
    assert d["any"]["devices"] == 1
    assert d["any"]["share_of_events"] == pytest.approx(2 / 3)
    assert set(d["rules"]) == set(RULES)


# ------------------------------------------------------------------------------------ config


def test_config_validation_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown IVT rule"):
        IvtConfig(rules=("bots",))
    with pytest.raises(ConfigError, match="unknown key"):
        IvtConfig.from_mapping({"max_events_per_devic": 3})
    with pytest.raises(ConfigError, match="integer >= 1"):
        IvtConfig(max_events_per_device=0)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": ["datacenter_ip"], "max_events_per_ip": 7}))
    cfg = IvtConfig.from_file(path)
    assert cfg.rules == ("datacenter_ip",)
    assert cfg.max_events_per_ip == 7
    assert IvtConfig.from_mapping(cfg.to_dict()) == cfg
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        IvtConfig.from_file(path)


def test_bad_input_is_a_precise_error() -> None:
    t = events([{}]).drop_columns(["event_time"])
    with pytest.raises(SchemaError, match="event_time"):
        detect_ivt(t, IvtConfig(), lists(), source="log.parquet")


# ------------------------------------------------------------------------------------ property


def _brute_force_frequency(dev: list[int], t: list[int], window_ms: int, limit: int) -> set[int]:
    """Events inside some window [t_i - w, t_i] of one device holding more than ``limit``."""
    out: set[int] = set()
    for i in range(len(t)):
        members = [
            j for j in range(len(t)) if dev[j] == dev[i] and t[i] - window_ms <= t[j] <= t[i]
        ]
        if len(members) > limit:
            out.update(members)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20_000)), min_size=1, max_size=60),
    st.integers(1, 6),
    st.integers(1, 5_000),
)
def test_device_frequency_matches_its_definition(
    events_: list[tuple[int, int]], limit: int, window_ms: int
) -> None:
    dev = [d for d, _ in events_]
    t = [x for _, x in events_]
    cfg = IvtConfig(max_events_per_device=limit, frequency_window_s=window_ms / 1000)
    got = _rule_device_frequency(np.array(dev, np.int64), 4, np.array(t, np.int64), cfg)
    assert set(np.flatnonzero(got).tolist()) == _brute_force_frequency(dev, t, window_ms, limit)
