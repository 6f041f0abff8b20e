"""The metering ledger: hash chain, signed receipts, tamper detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atoll.control.metering import Ledger, verify_ledger
from atoll.crypto.sign import SigningKey
from atoll.errors import IntegrityError
from atoll.protocols.covert import BillingEvent, UsageReceipt


def _event(i: int, client: str = "brand") -> BillingEvent:
    return BillingEvent(f"q-{i}", client, "ec", "prefix", 100, 7, "ab" * 8)


def _ledger(tmp_path: Path) -> tuple[Ledger, SigningKey]:
    key = SigningKey.generate()
    ticks = iter(f"2025-01-01T00:00:{s:02d}Z" for s in range(60))
    return Ledger(tmp_path / "ledger.jsonl", key, provider="p", clock=lambda: next(ticks)), key


def test_receipts_verify_and_bills_add_up(tmp_path: Path) -> None:
    ledger, key = _ledger(tmp_path)
    receipts = [ledger.record(_event(i, "brand" if i % 3 else "other")) for i in range(6)]
    parsed = UsageReceipt.verify(key.verify_key, receipts[1])
    assert (parsed.query_id, parsed.n, parsed.m, parsed.seq) == ("q-1", 100, 7, 2)
    report = verify_ledger(ledger.path, key.verify_key)
    assert report.key_pinned
    assert report.lines == 7
    assert report.bills["brand"].queries == 4
    assert report.bills["other"].queries == 2
    assert report.bills["brand"].by_mode == {"ec": 4}
    # reopening continues the chain
    again = Ledger(ledger.path, key, provider="p")
    again.record(_event(99))
    assert verify_ledger(ledger.path).last_seq == 7


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda lines: lines.__setitem__(2, lines[2].replace('"m":7', '"m":1')), "hash"),
        (lambda lines: lines.pop(2), "chain broken"),
        (lambda lines: lines.insert(3, lines[2]), "chain broken"),
        (lambda lines: lines.__setitem__(1, "{not json"), "not valid JSON"),
    ],
)
def test_tampered_ledger_is_detected(tmp_path: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    ledger, key = _ledger(tmp_path)
    for i in range(4):
        ledger.record(_event(i))
    lines = ledger.path.read_text(encoding="utf-8").splitlines()
    edit(lines)
    ledger.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(IntegrityError, match=match):
        verify_ledger(ledger.path, key.verify_key)
    with pytest.raises(IntegrityError):
        Ledger(ledger.path, key)  # never appends to a broken ledger


def test_rehashed_edit_is_caught_by_the_receipt_signature(tmp_path: Path) -> None:
    from atoll.control.metering import _seal_line

    ledger, key = _ledger(tmp_path)
    for i in range(3):
        ledger.record(_event(i))
    lines = [json.loads(x) for x in ledger.path.read_text(encoding="utf-8").splitlines()]
    lines[-1]["m"] = 1  # a forger who also recomputes the hash of the last line
    lines[-1] = _seal_line(lines[-1])
    ledger.path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    with pytest.raises(IntegrityError, match="differs from the signed receipt"):
        verify_ledger(ledger.path, key.verify_key)


def test_other_key_is_rejected(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path)
    ledger.record(_event(1))
    with pytest.raises(IntegrityError, match="another provider key"):
        verify_ledger(ledger.path, SigningKey.generate().verify_key)
