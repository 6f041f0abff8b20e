"""Match-rate report: hand-computed counts per ID type, per source, and 'any'."""

from __future__ import annotations

import pyarrow as pa
import pytest

from atoll.analytics.match_rate import match_rate
from atoll.errors import ConfigError, SchemaError
from atoll.privacy import Guard, PartyRule, PrivacyPolicy

OPEN = Guard(PrivacyPolicy.strictest([PartyRule("test", 1)]))

# member  phone               oaid          source   in universe
# m1      138 0000 1111       (none)        app      phone yes
# m2      13900002222         OAID-A        app      phone no,  oaid yes
# m3      12345 (invalid)     OAID-B        store    oaid no
# m4      (none)              (none)        store    —
# m5      +86 13700003333     oaid-c        store    phone yes, oaid yes (lower/upper case)
MEMBERS = pa.table(
    {
        "member_id": ["m1", "m2", "m3", "m4", "m5"],
        "phone": ["138 0000 1111", "13900002222", "12345", None, "+86 13700003333"],
        "oaid": [
            None,
            "a1b2c3d4-0000-4000-8000-00000000000a",
            "a1b2c3d4-0000-4000-8000-00000000000b",
            None,
            "A1B2C3D4-0000-4000-8000-00000000000C",
        ],
        "source": ["app", "app", "store", "store", "store"],
    }
)
UNIVERSE = pa.table(
    {
        "device_id": ["d1", "d2", "d3"],
        "phone": ["13800001111", "13700003333", None],
        "oaid": [
            None,
            "a1b2c3d4-0000-4000-8000-00000000000c",
            "a1b2c3d4-0000-4000-8000-00000000000a",
        ],
    }
)


def test_hand_computed_match_rates() -> None:
    report = match_rate(
        MEMBERS,
        id_columns={"phone": "phone", "oaid": "oaid"},
        universe=UNIVERSE,
        source_column="source",
        guard=OPEN,
    )
    phone = report.row("phone")
    assert (phone["members"], phone["with_id"], phone["invalid"], phone["matched"]) == (5, 3, 1, 2)
    assert phone["match_rate"] == pytest.approx(2 / 3)
    assert phone["match_rate_of_members"] == pytest.approx(2 / 5)
    oaid = report.row("oaid")
    assert (oaid["with_id"], oaid["invalid"], oaid["matched"]) == (3, 0, 2)
    anyone = report.row("any")
    assert (anyone["with_id"], anyone["matched"]) == (4, 3)  # m1, m2, m5
    store = report.row("phone", "store")
    assert (store["members"], store["with_id"], store["invalid"], store["matched"]) == (3, 1, 1, 1)
    assert report.row("any", "app")["matched"] == 2


def test_matched_table_input_and_guard() -> None:
    matched = pa.table({"id_type": ["phone", "phone"], "id": ["13800001111", "13700003333"]})
    report = match_rate(MEMBERS, id_columns={"phone": "phone"}, matched=matched, guard=OPEN)
    assert report.row("phone")["matched"] == 2
    guarded = match_rate(MEMBERS, id_columns={"phone": "phone"}, matched=matched)  # k = 50
    row = guarded.row("phone")
    assert row["matched"] is None
    assert row["match_rate"] is None
    assert row["flag"].startswith("suppressed: fewer than 50")


def test_match_rate_errors() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        match_rate(MEMBERS, id_columns={"phone": "phone"})
    with pytest.raises(SchemaError, match="no column 'imei'"):
        match_rate(MEMBERS, id_columns={"imei": "imei"}, universe=UNIVERSE)
    with pytest.raises(SchemaError, match="id_type, id"):
        match_rate(MEMBERS, id_columns={"phone": "phone"}, matched=pa.table({"x": [1]}))
