"""The typed result of verifying attestation evidence, and the errors that replace it.

Why: every party that releases a key to an island (brand, data provider,
requester) decides on the same facts -- which TEE, which code (measurements),
what platform patch level (TCB status, advisories), debug or not, what the
enclave bound into its 64-byte report data. Verifiers for very different
evidence (Intel SGX/TDX DCAP quotes, AMD SEV-SNP reports, the simulated
backend, and NVIDIA H100 GPU evidence -- an add-on claim only) all reduce
to this one frozen :class:`Verdict`, so the policy layer
(:mod:`atoll.island.policy`) and the key-release code never look at raw
evidence. A verifier either returns a verdict -- every signature, chain, CRL
and collateral check passed at the pinned time -- or raises a specific
:class:`AttestationError` naming the stage that failed; there is no
"verified with warnings" state.

Conventions: measurement values are lowercase hex strings; SVNs are ints;
``verified_at`` and ``collateral_expires`` are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, cast, get_args

from atoll.errors import AtollError

__all__ = [
    "GPU_NONCE_SIZE",
    "GPU_TEE_TYPES",
    "INTEL_TCB_STATUSES",
    "KNOWN_MEASUREMENTS",
    "KNOWN_SVNS",
    "REPORT_DATA_SIZE",
    "AttestationError",
    "CertificateChainError",
    "CollateralError",
    "EvidenceFormatError",
    "EvidenceSignatureError",
    "NonceMismatchError",
    "PolicyRejected",
    "TcbError",
    "TeeType",
    "Verdict",
]

#: The TEE families a verdict can describe.
TeeType = Literal["sgx", "tdx", "sev-snp", "simulated", "nvidia-h100"]
TEE_TYPES: tuple[str, ...] = get_args(TeeType)

#: GPU evidence: an add-on claim next to CPU TEE evidence, never an island TEE by itself.
GPU_TEE_TYPES: frozenset[str] = frozenset({"nvidia-h100"})

#: Size of the report-data field every supported CPU TEE signs (SGX, TDX, SNP).
REPORT_DATA_SIZE = 64

#: Size of the SPDM requester nonce a GPU verdict carries as its report data.
GPU_NONCE_SIZE = 32

#: TCB statuses Intel's TCB info can assign to a platform (Intel PCS API v4 spec).
INTEL_TCB_STATUSES: tuple[str, ...] = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)

#: Measurement keys each TEE's verdict carries (policy keys are checked against these).
KNOWN_MEASUREMENTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "sgx": frozenset(
            {"mrenclave", "mrsigner", "config_id", "isv_family_id", "isv_ext_prod_id"}
        ),
        "tdx": frozenset(
            {
                "mrtd",
                "rtmr0",
                "rtmr1",
                "rtmr2",
                "rtmr3",
                "mrconfigid",
                "mrowner",
                "mrownerconfig",
                "mrseam",
                "mrsignerseam",
                "mrservicetd",
            }
        ),
        "sev-snp": frozenset(
            {
                "measurement",
                "host_data",
                "id_key_digest",
                "author_key_digest",
                "family_id",
                "image_id",
            }
        ),
        "simulated": frozenset({"measurement", "code_hash", "config_hash"}),
    }
)

#: SVN / version keys each TEE's verdict carries in :attr:`Verdict.svn`.
KNOWN_SVNS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "sgx": frozenset(
            {"isv_svn", "isv_prod_id", "config_svn", "qe_svn", "pce_svn", "qe_isv_svn"}
        ),
        "tdx": frozenset(
            {"tdx_module_svn", "tdx_module_version", "qe_svn", "pce_svn", "qe_isv_svn"}
        ),
        "sev-snp": frozenset(
            {
                "guest_svn",
                "vmpl",
                "bootloader",
                "tee",
                "snp",
                "microcode",
                "abi_major",
                "abi_minor",
                "report_version",
            }
        ),
        "simulated": frozenset({"version"}),
    }
)


class AttestationError(AtollError):
    """Evidence did not verify; ``stage`` names the check that failed.

    ``reason`` is a sentence a person can act on ("PCK certificate is revoked
    by the PCK CRL"); ``stage`` is a short machine-readable name of the step
    (``"parse"``, ``"quote-signature"``, ``"pck-chain"``, ``"tcb-info"``,
    ``"qe-identity"``, ``"tcb-level"``, ``"policy"`` …) and ``field`` the
    evidence field or collateral member involved, when there is one.
    """

    def __init__(self, reason: str, *, stage: str, field: str | None = None) -> None:
        self.reason = reason
        self.stage = stage
        self.field = field
        where = f"{stage}" + (f" ({field})" if field else "")
        super().__init__(f"attestation rejected at {where}: {reason}")


class EvidenceFormatError(AttestationError):
    """The evidence or collateral is truncated, malformed or of an unsupported version."""


class EvidenceSignatureError(AttestationError):
    """A signature over evidence or collateral does not verify."""


class CertificateChainError(AttestationError):
    """A certificate chain does not lead to the pinned root, is expired or revoked."""


class CollateralError(AttestationError):
    """Collateral is expired, not yet valid, or does not belong to this evidence."""


class TcbError(AttestationError):
    """The platform or QE TCB cannot be appraised (no matching TCB level, mismatch)."""


class NonceMismatchError(AttestationError):
    """Signed evidence does not carry the relying party's fresh nonce (stale or replayed)."""


class PolicyRejected(AttestationError):  # noqa: N818 (name fixed by the island contract)
    """Verified evidence is refused by the relying party's policy; ``rule`` names it."""

    def __init__(self, reason: str, *, rule: str) -> None:
        self.rule = rule
        super().__init__(reason, stage="policy", field=rule)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"Verdict.{name} must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Verdict:
    """Facts established by a successful verification (see the module docstring).

    ``tcb_status`` is Intel's converged status (platform, QE and TDX module;
    one of :data:`INTEL_TCB_STATUSES`) for SGX/TDX; for SEV-SNP it spells the
    reported TCB that matched the VCEK (``"bootloader=2 tee=0 snp=5
    microcode=68"``; the numbers are also in ``svn``); the simulated backend
    chooses its own label (policies ignore it: ``allow_simulated`` decides).
    GPU verdicts (``tee = "nvidia-h100"``) carry the 32-byte SPDM requester
    nonce as ``report_data``, one measurement per SPDM block index (key =
    the index as three decimal digits, ``"001"``…) and ``tcb_status =
    "not-appraised"`` (RIM appraisal needs NVIDIA's services).
    ``details`` holds the verifier's supporting facts (FMSPC, QE status,
    certificate subjects,
    raw attributes) for audit logs; policy decisions use the typed fields.
    """

    tee: TeeType
    measurements: Mapping[str, str]
    report_data: bytes
    tcb_status: str
    advisories: tuple[str, ...]
    debug: bool
    svn: Mapping[str, int]
    verified_at: datetime
    collateral_expires: datetime | None
    simulated: bool
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tee not in TEE_TYPES:
            raise ValueError(f"unknown TEE type {self.tee!r}")
        size = GPU_NONCE_SIZE if self.tee in GPU_TEE_TYPES else REPORT_DATA_SIZE
        if len(self.report_data) != size:
            raise ValueError(f"report_data must be {size} bytes for {self.tee} evidence")
        if self.simulated != (self.tee == "simulated"):
            raise ValueError("simulated must be True exactly when tee == 'simulated'")
        for key, value in self.measurements.items():
            if value != value.lower() or any(c not in "0123456789abcdef" for c in value):
                raise ValueError(f"measurement {key!r} must be lowercase hex")
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))
        object.__setattr__(self, "svn", MappingProxyType(dict(self.svn)))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
        object.__setattr__(self, "advisories", tuple(self.advisories))
        object.__setattr__(self, "report_data", bytes(self.report_data))
        object.__setattr__(self, "verified_at", _utc(self.verified_at, "verified_at"))
        if self.collateral_expires is not None:
            expires = _utc(self.collateral_expires, "collateral_expires")
            object.__setattr__(self, "collateral_expires", expires)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as hex, datetimes as ISO-8601 UTC)."""
        return {
            "tee": self.tee,
            "simulated": self.simulated,
            "measurements": dict(sorted(self.measurements.items())),
            "report_data": self.report_data.hex(),
            "tcb_status": self.tcb_status,
            "advisories": list(self.advisories),
            "debug": self.debug,
            "svn": dict(sorted(self.svn.items())),
            "verified_at": _iso(self.verified_at),
            "collateral_expires": (
                _iso(self.collateral_expires) if self.collateral_expires is not None else None
            ),
            "details": _jsonable(dict(self.details)),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The verdict as a JSON document (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Rebuild a verdict from :meth:`to_dict` output (for logs and tests, not trust)."""
        expires = data.get("collateral_expires")
        return cls(
            tee=cast(TeeType, data["tee"]),
            measurements=dict(data["measurements"]),
            report_data=bytes.fromhex(data["report_data"]),
            tcb_status=str(data["tcb_status"]),
            advisories=tuple(data["advisories"]),
            debug=bool(data["debug"]),
            svn={k: int(v) for k, v in data["svn"].items()},
            verified_at=_parse_time(data["verified_at"]),
            collateral_expires=_parse_time(expires) if expires else None,
            simulated=bool(data["simulated"]),
            details=dict(data.get("details", {})),
        )


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return _iso(value)
    return value
