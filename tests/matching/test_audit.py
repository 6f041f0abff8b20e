"""The hash-chained audit log (atoll.control.audit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atoll.control.audit import AuditLog, verify_log
from atoll.errors import IntegrityError


def test_chain_appends_continues_and_detects_edits(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("start", {"protocol": "ecdh-psi"})
    log("finish", {"cardinality": 3})
    assert verify_log(path) == 2
    AuditLog(path).append("again", {})  # continues the chain
    assert verify_log(path) == 3
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["fields"]["cardinality"] = 4
    path.write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n")
    with pytest.raises(IntegrityError, match="line 2: hash"):
        verify_log(path)
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(IntegrityError, match="line 2: chain broken"):
        verify_log(path)
    with pytest.raises(IntegrityError):
        AuditLog(path)
