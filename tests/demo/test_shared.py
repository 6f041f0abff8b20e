"""The matched audience the demo steps share comes from labeled PSI and equals the plain join."""

from __future__ import annotations

import pyarrow.compute as pc

from atoll.demo import DemoContext
from atoll.demo.shared import TAG_COLUMNS, matched_members


def test_matched_members_equals_plain_join(fresh_ctx: DemoContext) -> None:
    matched = matched_members(fresh_ctx)
    members = fresh_ctx.tables["brand/members"]
    universe = fresh_ctx.tables["provider/universe"]
    known = set(universe["phone"].drop_null().to_pylist())
    expected = {p for p in members["phone"].drop_null().to_pylist() if p in known}
    assert set(matched["phone"].to_pylist()) == expected
    assert matched.num_rows == len(expected) > 0
    # A phone shared by several provider devices carries the first row's tags (documented).
    by_phone: dict[str, dict[str, object]] = {}
    for r in universe.select(["phone", *TAG_COLUMNS]).to_pylist():
        by_phone.setdefault(r["phone"], r)
    for row in matched.to_pylist():
        for tag in TAG_COLUMNS:
            assert row[tag] == by_phone[row["phone"]][tag]
    assert pc.all(pc.equal(matched["matched_by"], "phone")).as_py()
    assert matched_members(fresh_ctx) is matched  # cached
