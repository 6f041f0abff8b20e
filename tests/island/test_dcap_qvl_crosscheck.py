"""Cross-check our DCAP verdicts against an independent verifier, dcap-qvl (Phala, Rust).

For each public SGX/TDX sample the TCB status, advisories and measurements
must agree with ``dcap_qvl.verify`` at the same pinned time; tampered and
outdated inputs must be rejected by both. Skips when dcap-qvl is missing.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from atoll.island.evidence import verify_evidence
from atoll.island.verdict import AttestationError
from tests.island.test_verdicts import (
    COMPOSITE_AT,
    DCAP,
    OUTDATED_AT,
    SGX_AT,
    TDX_AT,
    TDXG,
    VECTORS,
    composite_v5_collateral,
)

dcap_qvl = pytest.importorskip("dcap_qvl")
pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="TEE test vectors not present")


def _cases() -> list[tuple[str, bytes, str, datetime]]:
    if not VECTORS.is_dir():
        return []
    return [
        (
            "sgx-v3",
            (DCAP / "sgx_quote").read_bytes(),
            (DCAP / "sgx_quote_collateral.json").read_text(),
            SGX_AT,
        ),
        (
            "tdx-v4",
            (DCAP / "tdx_quote").read_bytes(),
            (DCAP / "tdx_quote_collateral.json").read_text(),
            TDX_AT,
        ),
        (
            "tdx-v5-composite",
            (TDXG / "quote_v5_sample.dat").read_bytes(),
            composite_v5_collateral(),
            COMPOSITE_AT,
        ),
    ]


def _qvl(quote: bytes, collateral: str, at: datetime) -> dict[str, object]:
    report = dcap_qvl.verify(
        quote, dcap_qvl.QuoteCollateralV3.from_json(collateral), int(at.timestamp())
    )
    return dict(json.loads(report.to_json()))


@pytest.mark.parametrize(
    ("name", "quote", "collateral", "at"),
    _cases(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "",
)
def test_status_advisories_and_measurements_agree(
    name: str, quote: bytes, collateral: str, at: datetime
) -> None:
    ours = verify_evidence(quote, collateral.encode(), at=at)
    theirs = _qvl(quote, collateral, at)
    assert ours.tcb_status == theirs["status"]
    assert sorted(ours.advisories) == sorted(theirs["advisory_ids"])  # type: ignore[arg-type]
    report = theirs["report"]
    assert isinstance(report, dict)
    ((kind, body),) = report.items()
    if kind == "SgxEnclave":
        assert ours.measurements["mrenclave"] == body["mr_enclave"]
        assert ours.measurements["mrsigner"] == body["mr_signer"]
        assert ours.svn["isv_svn"] == body["isv_svn"]
        assert ours.svn["isv_prod_id"] == body["isv_prod_id"]
    else:
        assert kind in ("TD10", "TD15")
        base = body.get("base", body)
        assert ours.measurements["mrtd"] == base["mr_td"]
        for i in range(4):
            assert ours.measurements[f"rtmr{i}"] == base[f"rt_mr{i}"]
        assert ours.measurements["mrconfigid"] == base["mr_config_id"]
    assert ours.report_data.hex() == (body.get("base", body))["report_data"]


def test_outdated_vector_rejected_by_both() -> None:
    quote = (DCAP / "tdx_quote_outdated").read_bytes()
    collateral = (DCAP / "tdx_quote_outdated_collateral.json").read_text()
    with pytest.raises(ValueError, match="No matching TCB level"):
        _qvl(quote, collateral, OUTDATED_AT)
    with pytest.raises(AttestationError, match="No matching TCB level"):
        verify_evidence(quote, collateral.encode(), at=OUTDATED_AT)


@pytest.mark.parametrize("offset", [8, 112, 440, 520, 600, 960, 1016])
def test_tampered_sgx_quote_rejected_by_both(offset: int) -> None:
    quote = bytearray((DCAP / "sgx_quote").read_bytes())
    quote[offset] ^= 0x01
    collateral = (DCAP / "sgx_quote_collateral.json").read_text()
    with pytest.raises(ValueError):  # noqa: PT011 - dcap-qvl raises a bare ValueError
        _qvl(bytes(quote), collateral, SGX_AT)
    with pytest.raises(AttestationError):
        verify_evidence(bytes(quote), collateral.encode(), at=SGX_AT)


def test_expired_collateral_rejected_by_both() -> None:
    quote = (DCAP / "sgx_quote").read_bytes()
    collateral = (DCAP / "sgx_quote_collateral.json").read_text()
    late = datetime.fromisoformat("2025-08-01T00:00:00+00:00")
    with pytest.raises(ValueError):  # noqa: PT011
        _qvl(quote, collateral, late)
    with pytest.raises(AttestationError, match="expired"):
        verify_evidence(quote, collateral.encode(), at=late)
