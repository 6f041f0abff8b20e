"""The metering ledger: billed events, hash-chained, with signed usage receipts.

Why: the covert query's provider is paid per released result key (seed §9
step ⑦, "this is the billed event"). Both sides need evidence they can check
later: the provider keeps an append-only ledger in which every line carries
the SHA-256 of the previous one (editing, dropping or reordering a line
breaks the chain at that line), and the client receives, for every key it
bought, a usage receipt signed with the provider's Ed25519 key
(:mod:`atoll.crypto.sign`). The ledger holds metadata only -- query id,
client, time, mode, N, m -- never an identifier or a label.

File format (JSON Lines, UTF-8, one object per line, ``"v": 1`` first)::

    {"v":1,"kind":"genesis","seq":0,"provider":…,"public_key":…,"prev":"00…","hash":…}
    {"v":1,"kind":"usage","seq":1,"time":…,"query_id":…,"client":…,"mode":…,
     "amplify":…,"n":…,"m":…,"key_digest":…,"receipt":"<base64>","prev":…,"hash":…}

``hash`` is SHA-256 (hex) of the line's canonical JSON (sorted keys, no
spaces) without the ``hash`` field; ``prev`` is the previous line's hash.
:func:`verify_ledger` re-checks every hash, link and receipt signature and
raises :class:`~atoll.errors.IntegrityError` naming the first bad line.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atoll.crypto import sha256_hex
from atoll.crypto.sign import SigningKey, VerifyKey
from atoll.errors import ConfigError, CryptoError, IntegrityError
from atoll.protocols.covert import BillingEvent, UsageReceipt, sign_receipt

__all__ = [
    "LEDGER_VERSION",
    "ClientBill",
    "Ledger",
    "LedgerReport",
    "verify_ledger",
]

#: Version of every ledger line.
LEDGER_VERSION = 1
_GENESIS_PREV = "0" * 64


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _seal_line(obj: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in obj.items() if k != "hash"}
    return {**body, "hash": sha256_hex(_canonical(body))}


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Ledger:
    """An append-only, hash-chained ledger of billed events (one file).

    Opening an existing file verifies its whole chain first (a ledger that
    was tampered with is not appended to). Use the instance as the covert
    provider's ``biller``: calling it records the event and returns the signed
    receipt. Appends are serialized by a lock and flushed with ``fsync``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key: SigningKey,
        *,
        provider: str = "provider",
        clock: Callable[[], str] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self._key = signing_key
        self._provider = provider
        self._clock = clock
        self._lock = threading.Lock()
        if self.path.exists() and self.path.stat().st_size:
            report = verify_ledger(self.path, signing_key.verify_key)
            self._seq, self._prev = report.last_seq, report.last_hash
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            genesis = _seal_line(
                {
                    "v": LEDGER_VERSION,
                    "kind": "genesis",
                    "seq": 0,
                    "provider": provider,
                    "public_key": signing_key.verify_key.to_text(),
                    "prev": _GENESIS_PREV,
                }
            )
            self._write(genesis, mode="w")
            self._seq, self._prev = 0, genesis["hash"]

    def _write(self, line: dict[str, Any], *, mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as handle:
            handle.write(_canonical(line).decode("utf-8") + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def record(self, event: BillingEvent) -> bytes:
        """Append the billed event and return its signed usage receipt."""
        with self._lock:
            seq = self._seq + 1
            time = self._clock()
            receipt = sign_receipt(self._key, event, time=time, seq=seq, provider=self._provider)
            line = _seal_line(
                {
                    "v": LEDGER_VERSION,
                    "kind": "usage",
                    "seq": seq,
                    "time": time,
                    "query_id": event.query_id,
                    "client": event.client,
                    "mode": event.mode,
                    "amplify": event.amplify,
                    "n": event.n,
                    "m": event.m,
                    "key_digest": event.key_digest,
                    "receipt": base64.b64encode(receipt).decode("ascii"),
                    "prev": self._prev,
                }
            )
            self._write(line)
            self._seq, self._prev = seq, line["hash"]
            return receipt

    __call__ = record

    @property
    def last_seq(self) -> int:
        """Sequence number of the last line."""
        return self._seq


@dataclass
class ClientBill:
    """Billing of one client: released keys per mode, total N and hits."""

    client: str
    queries: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    total_n: int = 0
    total_m: int = 0
    first: str = ""
    last: str = ""


@dataclass
class LedgerReport:
    """What :func:`verify_ledger` found: a valid chain and the bills in it."""

    provider: str
    public_key: VerifyKey
    key_pinned: bool
    lines: int
    last_seq: int
    last_hash: str
    bills: dict[str, ClientBill]


def _fail(path: Path, lineno: int, reason: str) -> IntegrityError:
    return IntegrityError(f"{path} line {lineno}: {reason}")


def verify_ledger(
    path: str | os.PathLike[str], public_key: VerifyKey | None = None
) -> LedgerReport:
    """Verify the chain and every receipt; return per-client bills.

    ``public_key`` pins the provider's key; without it the key written in
    the genesis line is used (self-asserted: ``key_pinned`` is then False).
    Raises IntegrityError naming the first line that does not verify.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such ledger file")
    prev = _GENESIS_PREV
    bills: dict[str, ClientBill] = {}
    key: VerifyKey | None = public_key
    provider = ""
    lineno = 0
    last_seq = 0
    with open(p, encoding="utf-8") as handle:
        for lineno, text in enumerate(handle, start=1):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                raise _fail(p, lineno, "not valid JSON") from None
            if not isinstance(obj, dict) or obj.get("v") != LEDGER_VERSION:
                raise _fail(p, lineno, "not a version-1 ledger line")
            if _seal_line(obj).get("hash") != obj.get("hash"):
                raise _fail(p, lineno, "content does not match its hash (edited line)")
            if obj.get("prev") != prev:
                raise _fail(p, lineno, "chain broken: prev does not match the line before")
            if obj.get("seq") != lineno - 1:
                raise _fail(p, lineno, f"sequence number {obj.get('seq')} out of order")
            if lineno == 1:
                if obj.get("kind") != "genesis":
                    raise _fail(p, lineno, "the first line must be the genesis line")
                provider = str(obj.get("provider", ""))
                try:
                    written = VerifyKey.from_text(str(obj.get("public_key", "")))
                except CryptoError as exc:
                    raise _fail(p, lineno, f"bad public key: {exc}") from None
                if key is None:
                    key = written
                elif written.raw != key.raw:
                    raise _fail(p, lineno, "ledger was started with another provider key")
            else:
                assert key is not None
                _check_usage(p, lineno, obj, key, bills)
            prev = str(obj["hash"])
            last_seq = int(obj["seq"])
    if lineno == 0 or key is None:
        raise IntegrityError(f"{p}: empty ledger (no genesis line)")
    return LedgerReport(provider, key, public_key is not None, lineno, last_seq, prev, bills)


def _check_usage(
    p: Path, lineno: int, obj: dict[str, Any], key: VerifyKey, bills: dict[str, ClientBill]
) -> None:
    if obj.get("kind") != "usage":
        raise _fail(p, lineno, f"unknown line kind {obj.get('kind')!r}")
    try:
        receipt = UsageReceipt.verify(key, base64.b64decode(str(obj["receipt"]), validate=True))
    except (CryptoError, KeyError, ValueError) as exc:
        raise _fail(p, lineno, f"usage receipt does not verify: {exc}") from None
    fields = ("query_id", "client", "mode", "n", "m", "key_digest", "time", "seq")
    for name in fields:
        if getattr(receipt, name) != obj.get(name):
            raise _fail(p, lineno, f"field {name!r} differs from the signed receipt")
    bill = bills.setdefault(receipt.client, ClientBill(receipt.client))
    bill.queries += 1
    bill.by_mode[receipt.mode] = bill.by_mode.get(receipt.mode, 0) + 1
    bill.total_n += receipt.n
    bill.total_m += receipt.m
    bill.first = bill.first or receipt.time
    bill.last = receipt.time
