"""Intel TDX quote (v4 with TD report 1.0; v5 with TD report 1.0 or 1.5) verification.

Why: a TDX confidential VM's identity is its MRTD (initial TD memory and
firmware), the runtime measurement registers RTMR0..3 (boot chain, kernel,
command line, application), MRCONFIGID/MROWNER (host-supplied identity), and
the TDX module that enforces isolation (MRSEAM / MRSIGNERSEAM, TEE_TCB_SVN).
This module runs the shared DCAP appraisal -- which for TDX also matches the
TEE_TCB_SVN against the TCB info ``tdxtcbcomponents`` and the TDX module
identity -- and lifts the TD fields into a :class:`Verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from atoll.crypto.x509 import Certificate
from atoll.island.evidence.dcap import (
    TEE_TYPE_TDX,
    DcapAppraisal,
    DcapCollateral,
    TdReportBody,
    appraise_quote,
    parse_quote,
)
from atoll.island.evidence.sgx import _details
from atoll.island.verdict import EvidenceFormatError, Verdict

__all__ = ["tdx_verdict", "verify_tdx_quote"]


def verify_tdx_quote(
    quote: bytes,
    collateral: DcapCollateral | bytes | str,
    *,
    at: datetime | None = None,
    roots: Sequence[Certificate] | None = None,
) -> Verdict:
    """Verify a TDX quote (v4/v5) against its collateral at ``at`` (default: now, UTC)."""
    parsed = parse_quote(quote)
    if parsed.tee_type != TEE_TYPE_TDX:
        raise EvidenceFormatError(
            "not a TDX quote (TEE type is SGX)", stage="parse", field="header.tee_type"
        )
    if not isinstance(collateral, DcapCollateral):
        collateral = DcapCollateral.from_json(collateral)
    when = datetime.now(UTC) if at is None else at
    return tdx_verdict(appraise_quote(parsed, collateral, at=when, roots=roots))


def tdx_verdict(appraisal: DcapAppraisal) -> Verdict:
    """Turn a successful TDX appraisal into a :class:`Verdict`."""
    quote = appraisal.quote
    td = quote.body
    if not isinstance(td, TdReportBody):
        raise EvidenceFormatError("quote body is not a TD report", stage="parse")
    measurements = {
        "mrtd": td.mr_td.hex(),
        "rtmr0": td.rtmrs[0].hex(),
        "rtmr1": td.rtmrs[1].hex(),
        "rtmr2": td.rtmrs[2].hex(),
        "rtmr3": td.rtmrs[3].hex(),
        "mrconfigid": td.mr_config_id.hex(),
        "mrowner": td.mr_owner.hex(),
        "mrownerconfig": td.mr_owner_config.hex(),
        "mrseam": td.mr_seam.hex(),
        "mrsignerseam": td.mr_signer_seam.hex(),
    }
    details = _details(appraisal) | {
        "td_report": "1.5" if td.mr_service_td is not None else "1.0",
        "body_type": quote.body_type,
        "tee_tcb_svn": td.tee_tcb_svn.hex(),
        "td_attributes": td.td_attributes.hex(),
        "seam_attributes": td.seam_attributes.hex(),
        "xfam": td.xfam.hex(),
        "sept_ve_disable": td.sept_ve_disable,
        "tdx_module_tcb_status": appraisal.tdx_module_status,
    }
    if td.mr_service_td is not None and td.tee_tcb_svn2 is not None:
        measurements["mrservicetd"] = td.mr_service_td.hex()
        details["tee_tcb_svn2"] = td.tee_tcb_svn2.hex()
    return Verdict(
        tee="tdx",
        measurements=measurements,
        report_data=td.report_data,
        tcb_status=appraisal.status,
        advisories=appraisal.advisories,
        debug=td.debug,
        svn={
            "tdx_module_svn": td.tee_tcb_svn[0],
            "tdx_module_version": td.tee_tcb_svn[1],
            "qe_svn": quote.qe_svn,
            "pce_svn": quote.pce_svn,
            "qe_isv_svn": quote.qe_report.isv_svn,
        },
        verified_at=appraisal.verified_at,
        collateral_expires=appraisal.collateral_expires,
        simulated=False,
        details=details,
    )
