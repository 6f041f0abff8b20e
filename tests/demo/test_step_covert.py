"""Demo step 8 (covert query): right answers in every mode, the k_min rule, a verified bill."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from atoll.control.metering import verify_ledger
from atoll.crypto.sign import VerifyKey
from atoll.demo import DemoContext
from atoll.demo.step_covert import K_MIN, LABELS, ROUNDS, run


@pytest.fixture(scope="module")
def covert(
    demo_ctx: DemoContext, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DemoContext, dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Run the step once (it starts a server and makes RSA keys) for every test here."""
    out: Path = tmp_path_factory.mktemp("covert-step")
    config = dataclasses.replace(demo_ctx.config, out=out)
    ctx = dataclasses.replace(
        demo_ctx, config=config, artifacts=dict(demo_ctx.artifacts), timings={}
    )
    sections = run(ctx)
    with open(out / "covert" / "answers.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return ctx, sections, rows


def _plain_lookup(ctx: DemoContext) -> dict[str, list[Any]]:
    """The provider's labels per phone (first device row per phone), computed independently."""
    out: dict[str, list[Any]] = {}
    for r in ctx.tables["provider/universe"].select(["phone", *LABELS]).to_pylist():
        if r["phone"] is not None:
            out.setdefault(r["phone"], [r[c] for c in LABELS])
    return out


def test_every_answer_equals_the_plain_lookup(covert: Any) -> None:
    ctx, _, rows = covert
    plain = _plain_lookup(ctx)
    members = {
        r["member_id"]: r["phone"] for r in ctx.tables["brand/members"].to_pylist() if r["phone"]
    }
    assert len(rows) == 6 * len(ROUNDS)
    assert {r["round"] for r in rows} == {rnd.name for rnd in ROUNDS}
    for r in rows:
        expected = plain.get(members[r["member_id"]])
        values = json.loads(r["labels"])
        assert r["correct"] == "True", r
        assert (r["known_per_psi"] == "True") == (expected is not None)
        if r["status"] == "hit":
            assert values == expected
            assert int(r["m"]) >= K_MIN
        else:
            assert values is None


def test_modes_answer_as_expected_and_the_k_min_rule_holds(covert: Any) -> None:
    _, _, rows = covert
    for r in rows:
        known = r["known_per_psi"] == "True"
        requested = r["key_requested"] == "True"
        if r["amplify"] == "prefix":  # every candidate of a hash group is a provider ID
            assert r["status"] == ("hit" if known else "no_record"), r
            assert int(r["m"]) == int(r["n"]) > 0
        elif r["amplify"] == "decoy-random":  # random numbers miss: m = 1 < k_min
            assert r["status"] == ("declined" if known else "no_record"), r
            assert int(r["m"]) == (1 if known else 0)
        else:
            assert int(r["n"]) == 10
        # the key is requested exactly when the true slot hits and m >= k_min
        assert requested == (r["status"] == "hit")
        if known and int(r["m"]) >= K_MIN:
            assert r["status"] == "hit"
    modes = {r["mode"] for r in rows}
    batches = {r["batch"] for r in rows}
    assert modes == {"rsa", "ec", "bucket"}
    assert batches == {"single", "micro", "async"}


def test_the_billing_statement_matches_the_keys_bought(covert: Any) -> None:
    ctx, sections, rows = covert
    hits = [r for r in rows if r["status"] == "hit"]
    state = ctx.out / "covert" / "provider"
    key = VerifyKey.from_text((state / "provider.pub").read_text(encoding="utf-8"))
    report = verify_ledger(state / "ledger.jsonl", key)
    assert report.key_pinned
    assert set(report.bills) == {"brand"}
    bill = report.bills["brand"]
    assert bill.queries == len(hits) == report.lines - 1 > 0
    for mode in ("rsa", "ec", "bucket"):
        assert bill.by_mode.get(mode, 0) == sum(r["mode"] == mode for r in hits)
    assert bill.total_m == sum(int(r["m"]) for r in hits)
    assert bill.total_n == sum(int(r["n"]) for r in hits)
    billing = next(v for k, v in sections.items() if "billing statement" in k)
    assert billing["tampered ledger copy"].startswith("rejected")
    assert f"{len(hits)} held" in billing["brand's receipts"]
    assert f"{len(hits)} keys bought" in billing["client brand"]


def test_summary_sections(covert: Any) -> None:
    _, sections, rows = covert
    assert all(title.startswith("8 · covert query") for title in sections)
    overview = sections["8 · covert query"]
    assert overview["graded"].startswith(f"{len(rows)}/{len(rows)} answers")
    assert "mutual TLS" in overview["transport"]
    for rnd in ROUNDS:
        assert "6/6 correct" in overview[rnd.name]
        if rnd.batch != "single" and not rnd.decoys:
            assert "same answers as single" in overview[rnd.name]
    per_member = next(v for k, v in sections.items() if "per member" in k)
    assert len(per_member) == 6
    assert all("✗" not in v for v in per_member.values())
