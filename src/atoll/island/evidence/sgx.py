"""Intel SGX DCAP quote (v3, and v4/v5 with an SGX body) verification into a :class:`Verdict`.

Why: an SGX enclave's identity is its MRENCLAVE (exact code) and MRSIGNER +
ISVPRODID + ISVSVN (who built it, which product, which version); its debug
flag says whether the host can read its memory. This module runs the shared
DCAP appraisal (:mod:`atoll.island.evidence.dcap`) and lifts those fields into
the typed verdict every relying party decides on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from atoll.crypto.x509 import Certificate
from atoll.island.evidence.dcap import (
    TEE_TYPE_SGX,
    DcapAppraisal,
    DcapCollateral,
    SgxReportBody,
    appraise_quote,
    parse_quote,
)
from atoll.island.verdict import EvidenceFormatError, Verdict

__all__ = ["sgx_verdict", "verify_sgx_quote"]


def verify_sgx_quote(
    quote: bytes,
    collateral: DcapCollateral | bytes | str,
    *,
    at: datetime | None = None,
    roots: Sequence[Certificate] | None = None,
) -> Verdict:
    """Verify an SGX ECDSA quote against its collateral at ``at`` (default: now, UTC).

    ``roots`` replaces the pinned Intel SGX Root CA (tests with a private PKI
    only). Raises a subclass of :class:`~atoll.island.verdict.AttestationError`
    naming the failed stage.
    """
    parsed = parse_quote(quote)
    if parsed.tee_type != TEE_TYPE_SGX:
        raise EvidenceFormatError(
            "not an SGX quote (TEE type is TDX)", stage="parse", field="header.tee_type"
        )
    if not isinstance(collateral, DcapCollateral):
        collateral = DcapCollateral.from_json(collateral)
    when = datetime.now(UTC) if at is None else at
    return sgx_verdict(appraise_quote(parsed, collateral, at=when, roots=roots))


def sgx_verdict(appraisal: DcapAppraisal) -> Verdict:
    """Turn a successful SGX appraisal into a :class:`Verdict`."""
    quote = appraisal.quote
    body = quote.body
    if not isinstance(body, SgxReportBody):
        raise EvidenceFormatError("quote body is not an SGX report", stage="parse")
    return Verdict(
        tee="sgx",
        measurements={
            "mrenclave": body.mr_enclave.hex(),
            "mrsigner": body.mr_signer.hex(),
            "config_id": body.config_id.hex(),
            "isv_family_id": body.isv_family_id.hex(),
            "isv_ext_prod_id": body.isv_ext_prod_id.hex(),
        },
        report_data=body.report_data,
        tcb_status=appraisal.status,
        advisories=appraisal.advisories,
        debug=body.debug,
        svn={
            "isv_svn": body.isv_svn,
            "isv_prod_id": body.isv_prod_id,
            "config_svn": body.config_svn,
            "qe_svn": quote.qe_svn,
            "pce_svn": quote.pce_svn,
            "qe_isv_svn": quote.qe_report.isv_svn,
        },
        verified_at=appraisal.verified_at,
        collateral_expires=appraisal.collateral_expires,
        simulated=False,
        details=_details(appraisal)
        | {
            "attributes": body.attributes.hex(),
            "misc_select": f"{body.misc_select:08x}",
            "cpu_svn": body.cpu_svn.hex(),
        },
    )


def _details(appraisal: DcapAppraisal) -> dict[str, object]:
    pck = appraisal.pck
    return {
        "quote_version": appraisal.quote.version,
        "fmspc": pck.fmspc.hex(),
        "pce_id": pck.pce_id.hex(),
        "sgx_type": pck.sgx_type,
        "pck_tcb_components": list(pck.tcb_components),
        "pck_pce_svn": pck.pce_svn,
        "platform_configuration": dict(pck.extras),
        "platform_tcb_status": appraisal.platform_status,
        "platform_advisories": list(appraisal.platform_advisories),
        "qe_tcb_status": appraisal.qe_status,
        "qe_advisories": list(appraisal.qe_advisories),
        "tcb_date": appraisal.tcb_date,
        "trailing_bytes": appraisal.quote.trailing_bytes,
        "certificates": dict(appraisal.certificates),
    }
