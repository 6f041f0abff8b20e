"""Verifiers of real hardware attestation evidence: one entry point, typed verdicts.

Why: a relying party holds bytes (a quote or report, plus collateral) and
needs one answer -- a :class:`~atoll.island.verdict.Verdict` or a specific
:class:`~atoll.island.verdict.AttestationError`. :func:`detect_type` tells
the evidence families apart from their headers and :func:`verify_evidence`
dispatches to the verifier:

* ``sgx`` -- Intel SGX DCAP ECDSA quote v3 (:mod:`.sgx`), collateral in the
  dcap-qvl JSON layout;
* ``tdx`` -- Intel TDX quote v4/v5 (:mod:`.tdx`), same collateral layout;
* ``sev-snp`` -- AMD SEV-SNP report (:mod:`.snp`), "collateral" = the VCEK
  certificate (DER or PEM; a PEM may also carry ASK/ARK);
* ``nvidia-h100`` -- NVIDIA H100 SPDM GET_MEASUREMENTS evidence (:mod:`.nvidia`,
  hex text or binary), "collateral" = the device certificate chain (PEM, leaf
  first). A GPU verdict is an add-on claim only: the policy layer never
  accepts it as the island's TEE.

The shared DCAP envelope and appraisal live in :mod:`.dcap`. Simulated
evidence is *not* handled here: it is produced and checked by the island's
simulated backend and never passes as hardware evidence.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from atoll.crypto.x509 import Certificate
from atoll.island.evidence.dcap import TEE_TYPE_SGX, TEE_TYPE_TDX
from atoll.island.evidence.nvidia import looks_like_nvidia_report, verify_nvidia_report
from atoll.island.evidence.sgx import verify_sgx_quote
from atoll.island.evidence.snp import SNP_REPORT_SIZE, verify_snp_report
from atoll.island.evidence.tdx import verify_tdx_quote
from atoll.island.verdict import EvidenceFormatError, Verdict

__all__ = ["EvidenceType", "detect_type", "verify_evidence"]

EvidenceType = Literal["sgx", "tdx", "sev-snp", "nvidia-h100"]


def detect_type(evidence: bytes) -> EvidenceType:
    """Tell DCAP SGX/TDX quotes, SEV-SNP reports and NVIDIA SPDM evidence apart by their headers."""
    if len(evidence) >= 8:
        version, key_type, tee_type = struct.unpack_from("<HHI", evidence, 0)
        if version in (3, 4, 5) and key_type == 2:
            if tee_type == TEE_TYPE_SGX:
                return "sgx"
            if tee_type == TEE_TYPE_TDX:
                return "tdx"
    if len(evidence) == SNP_REPORT_SIZE:
        (snp_version,) = struct.unpack_from("<I", evidence, 0)
        (algo,) = struct.unpack_from("<I", evidence, 0x34)
        if snp_version in (2, 3, 4, 5) and algo == 1:
            return "sev-snp"
    if looks_like_nvidia_report(evidence):
        return "nvidia-h100"
    raise EvidenceFormatError(
        "cannot recognise the evidence: not a DCAP quote v3-v5 (SGX/TDX, ECDSA P-256), "
        "a 1184-byte SEV-SNP report nor NVIDIA SPDM 1.1 GET_MEASUREMENTS evidence",
        stage="detect",
    )


def verify_evidence(
    evidence: bytes,
    collateral: bytes | None,
    *,
    at: datetime | None = None,
    tee: EvidenceType | None = None,
    cert_chain: bytes | None = None,
    roots: Sequence[Certificate] | None = None,
    expected_nonce: bytes | None = None,
) -> Verdict:
    """Verify ``evidence`` with its ``collateral`` at ``at`` (default: now) into a verdict.

    ``tee`` forces the evidence type (otherwise :func:`detect_type`);
    ``cert_chain`` is the optional ASK/ARK PEM for SEV-SNP; ``roots``
    replaces the pinned vendor roots (tests with a private PKI only);
    ``expected_nonce`` is the 32-byte SPDM nonce NVIDIA evidence must carry
    (other evidence binds its nonce in report data, checked by the policy).
    """
    kind = detect_type(evidence) if tee is None else tee
    if collateral is None:
        what = {
            "sev-snp": "the VCEK certificate",
            "nvidia-h100": "the device certificate chain (PEM)",
        }.get(kind, "DCAP collateral JSON")
        raise EvidenceFormatError(f"{kind} evidence needs {what}", stage="collateral")
    if expected_nonce is not None and kind != "nvidia-h100":
        raise EvidenceFormatError(
            f"an SPDM nonce applies to NVIDIA evidence only, not {kind}; "
            "bind nonces through the report data instead",
            stage="nonce",
        )
    if kind == "sgx":
        return verify_sgx_quote(evidence, collateral, at=at, roots=roots)
    if kind == "tdx":
        return verify_tdx_quote(evidence, collateral, at=at, roots=roots)
    if kind == "sev-snp":
        return verify_snp_report(evidence, collateral, cert_chain, at=at, roots=roots)
    if kind == "nvidia-h100":
        return verify_nvidia_report(
            evidence, collateral, at=at, expected_nonce=expected_nonce, roots=roots
        )
    raise EvidenceFormatError(f"unknown evidence type {kind!r}", stage="detect")
