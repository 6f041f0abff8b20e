"""Signed deletion and usage receipts: what the island burned, and what it metered.

Why: "burn after use" and "count rows for billing" (seed §8) are promises a
party cannot watch being kept. The island therefore signs two receipts per
job with its receipt key -- an Ed25519 key whose public half is bound into
the attested report data (:mod:`atoll.island.keyrelease`), so a receipt is
attributable to the very island whose measurement the party verified:

* :class:`DeletionReceipt` -- job id and hash, dataset versions (with the
  digests of their signed manifests), what was deleted (temp files, bytes,
  directories, keys dropped), when;
* :class:`UsageReceipt` -- rows read per party and dataset, buckets opened,
  rows output per output and recipient, the SHA-256 of each sealed result
  (HPKE base mode does not authenticate the sender, so this signed digest is
  what proves a result came from the attested island), computation, start
  and end time.

Both carry the island's TEE type and measurement, and under the simulated
backend the stamp "simulated — no hardware protection": a simulated receipt
is a record of what the software says it did, nothing more.

Wire form: :func:`atoll.crypto.sign.sign` over canonical JSON, context
``atoll/island-receipt/v1``; the JSON's ``kind`` says which receipt it is.
:func:`verify_receipt` raises :class:`~atoll.errors.IntegrityError` on any
failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from atoll.crypto.sign import SigningKey, VerifyKey, sign, verify
from atoll.errors import CryptoError, IntegrityError

__all__ = [
    "RECEIPT_CONTEXT",
    "RECEIPT_VERSION",
    "DatasetUse",
    "DeletionReceipt",
    "Receipt",
    "UsageReceipt",
    "sign_receipt",
    "verify_receipt",
]

#: ``atoll_receipt_version`` of every receipt.
RECEIPT_VERSION = 1
#: Signature context of receipts.
RECEIPT_CONTEXT = b"atoll/island-receipt/v1"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise IntegrityError("receipt time is not a string")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise IntegrityError(f"receipt time {text!r} is not ISO 8601") from None


@dataclass(frozen=True)
class DatasetUse:
    """One dataset version a job used: who owns it, its manifest digest, what was read."""

    party: str
    dataset_id: str
    version: int
    manifest_digest: str
    rows_read: int = 0
    buckets_opened: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "party": self.party,
            "dataset_id": self.dataset_id,
            "version": self.version,
            "manifest_digest": self.manifest_digest,
            "rows_read": self.rows_read,
            "buckets_opened": self.buckets_opened,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DatasetUse:
        """Inverse of :meth:`to_json`."""
        return cls(
            party=str(obj["party"]),
            dataset_id=str(obj["dataset_id"]),
            version=int(obj["version"]),
            manifest_digest=str(obj["manifest_digest"]),
            rows_read=int(obj["rows_read"]),
            buckets_opened=int(obj["buckets_opened"]),
        )


@dataclass(frozen=True)
class _Common:
    job_id: str
    job_hash: str
    tee: str
    measurement: str
    simulated: bool
    stamp: str | None

    def _common(self) -> dict[str, Any]:
        return {
            "atoll_receipt_version": RECEIPT_VERSION,
            "job_id": self.job_id,
            "job_hash": self.job_hash,
            "tee": self.tee,
            "measurement": self.measurement,
            "simulated": self.simulated,
            "stamp": self.stamp,
        }

    @staticmethod
    def _common_from(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "job_id": str(obj["job_id"]),
            "job_hash": str(obj["job_hash"]),
            "tee": str(obj["tee"]),
            "measurement": str(obj["measurement"]),
            "simulated": bool(obj["simulated"]),
            "stamp": None if obj.get("stamp") is None else str(obj["stamp"]),
        }


@dataclass(frozen=True)
class DeletionReceipt(_Common):
    """What the island deleted at the end of a job (see the module docstring)."""

    datasets: tuple[DatasetUse, ...] = ()
    files_deleted: int = 0
    bytes_deleted: int = 0
    directories_deleted: int = 0
    keys_dropped: tuple[str, ...] = ()
    temp_area_empty: bool = True
    outcome: str = "completed"
    deleted_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        """JSON form (what is signed)."""
        return {
            **self._common(),
            "kind": "deletion",
            "datasets": [d.to_json() for d in self.datasets],
            "deleted": {
                "files": self.files_deleted,
                "bytes": self.bytes_deleted,
                "directories": self.directories_deleted,
                "keys_dropped": list(self.keys_dropped),
                "temp_area_empty": self.temp_area_empty,
            },
            "outcome": self.outcome,
            "deleted_at": _iso(self.deleted_at),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DeletionReceipt:
        """Inverse of :meth:`to_json`."""
        deleted = obj["deleted"]
        return cls(
            **cls._common_from(obj),
            datasets=tuple(DatasetUse.from_json(d) for d in obj["datasets"]),
            files_deleted=int(deleted["files"]),
            bytes_deleted=int(deleted["bytes"]),
            directories_deleted=int(deleted["directories"]),
            keys_dropped=tuple(str(k) for k in deleted["keys_dropped"]),
            temp_area_empty=bool(deleted["temp_area_empty"]),
            outcome=str(obj["outcome"]),
            deleted_at=_time(obj["deleted_at"]),
        )


@dataclass(frozen=True)
class UsageReceipt(_Common):
    """Rows read per party and rows output per output, for billing (module docstring)."""

    computation: str = ""
    datasets: tuple[DatasetUse, ...] = ()
    rows_out: Mapping[str, int] = field(default_factory=dict)
    recipients: Mapping[str, str] = field(default_factory=dict)
    result_digests: Mapping[str, str] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def rows_read(self) -> dict[str, int]:
        """Rows read per party (sum over that party's datasets)."""
        out: dict[str, int] = {}
        for use in self.datasets:
            out[use.party] = out.get(use.party, 0) + use.rows_read
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON form (what is signed)."""
        return {
            **self._common(),
            "kind": "usage",
            "computation": self.computation,
            "datasets": [d.to_json() for d in self.datasets],
            "rows_read": dict(sorted(self.rows_read.items())),
            "rows_out": dict(sorted(self.rows_out.items())),
            "recipients": dict(sorted(self.recipients.items())),
            "result_digests": dict(sorted(self.result_digests.items())),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> UsageReceipt:
        """Inverse of :meth:`to_json` (``rows_read`` is recomputed and cross-checked)."""
        receipt = cls(
            **cls._common_from(obj),
            computation=str(obj["computation"]),
            datasets=tuple(DatasetUse.from_json(d) for d in obj["datasets"]),
            rows_out={str(k): int(v) for k, v in obj["rows_out"].items()},
            recipients={str(k): str(v) for k, v in obj["recipients"].items()},
            result_digests={str(k): str(v) for k, v in obj["result_digests"].items()},
            started_at=_time(obj["started_at"]),
            finished_at=_time(obj["finished_at"]),
        )
        stated = {str(k): int(v) for k, v in obj["rows_read"].items()}
        if stated != receipt.rows_read:
            raise IntegrityError("usage receipt: rows_read does not add up over its datasets")
        return receipt


Receipt = DeletionReceipt | UsageReceipt


def sign_receipt(receipt: Receipt, key: SigningKey) -> bytes:
    """Sign a receipt with the island's receipt key; returns the signed envelope."""
    payload = json.dumps(receipt.to_json(), sort_keys=True, separators=(",", ":"))
    return sign(key, payload.encode("utf-8"), context=RECEIPT_CONTEXT)


def verify_receipt(signed: bytes, key: VerifyKey) -> Receipt:
    """Verify a receipt against the attested receipt key and parse it.

    Raises :class:`~atoll.errors.IntegrityError` if the signature, the key,
    the version or the content is wrong.
    """
    try:
        payload = verify(key, signed, context=RECEIPT_CONTEXT)
    except CryptoError as exc:
        raise IntegrityError(
            f"receipt does not verify with the island's receipt key ({exc})"
        ) from None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"receipt payload is not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("atoll_receipt_version") != RECEIPT_VERSION:
        raise IntegrityError("receipt has an unknown version")
    try:
        if obj.get("kind") == "deletion":
            return DeletionReceipt.from_json(obj)
        if obj.get("kind") == "usage":
            return UsageReceipt.from_json(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"receipt is malformed ({exc!r})") from None
    raise IntegrityError(f"unknown receipt kind {obj.get('kind')!r}")
