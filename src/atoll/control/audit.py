"""A hash-chained, append-only JSONL audit log.

Why: each party must be able to show what was run, with which parameters,
and what came out (counts, never rows) -- and to notice if a line was later
edited, dropped or re-ordered. Each line carries the SHA-256 of the previous
line's hash and its own canonical content, so :func:`verify_log` detects any
change short of rewriting the whole tail (anchor the latest hash elsewhere,
e.g. in a report, to detect that too).

Line format (version 1)::

    {"v": 1, "seq": n, "time": "2026-...Z", "event": "...", "fields": {...},
     "prev": "<hex of previous hash or 64 zeros>", "hash": "<hex>"}

``hash = SHA-256(canonical JSON of the line without "hash")``, canonical
meaning sorted keys, no spaces, UTF-8.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atoll.crypto import constant_time_equal, sha256_hex
from atoll.errors import IntegrityError

__all__ = ["AUDIT_VERSION", "AuditLog", "verify_log"]

#: Version of the line format (the ``v`` field).
AUDIT_VERSION = 1
_GENESIS = "0" * 64


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _last(path: Path) -> tuple[int, str]:
    """``(next seq, last hash)`` of an existing log (verified)."""
    entries = verify_log(path) if path.exists() else 0
    if not entries:
        return 0, _GENESIS
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        tail = handle.read().splitlines()
    last = json.loads(tail[-1])
    return int(last["seq"]) + 1, str(last["hash"])


class AuditLog:
    """Append events to ``path``, continuing an existing (verified) chain."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seq, self._prev = _last(self.path)

    def append(self, event: str, fields: dict[str, Any]) -> str:
        """Append one event; returns its hash. ``fields`` must be JSON-able (no row data)."""
        entry: dict[str, Any] = {
            "v": AUDIT_VERSION,
            "seq": self._seq,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event": event,
            "fields": fields,
            "prev": self._prev,
        }
        digest = sha256_hex(_canonical(entry))
        entry["hash"] = digest
        line = json.dumps(
            entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._seq += 1
        self._prev = digest
        return digest

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        """Hook form (``atoll.matching.local.AuditHook``)."""
        self.append(event, fields)


def verify_log(path: str | os.PathLike[str]) -> int:
    """Check every line's version, sequence, link and hash; returns the line count.

    Raises :class:`~atoll.errors.IntegrityError` naming the first bad line.
    """
    p = Path(path)
    prev = _GENESIS
    count = 0
    with p.open("r", encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as exc:
                raise IntegrityError(f"{p} line {number}: not JSON ({exc.msg})") from None
            if not isinstance(entry, dict) or entry.get("v") != AUDIT_VERSION:
                raise IntegrityError(f"{p} line {number}: unknown audit line version")
            claimed = entry.pop("hash", None)
            if entry.get("seq") != count or entry.get("prev") != prev:
                raise IntegrityError(f"{p} line {number}: chain broken (sequence or link)")
            digest = sha256_hex(_canonical(entry))
            if not isinstance(claimed, str) or not constant_time_equal(
                claimed.encode(), digest.encode()
            ):
                raise IntegrityError(f"{p} line {number}: hash does not match the content")
            prev = digest
            count += 1
    return count
