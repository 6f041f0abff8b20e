"""Every public TEE test vector gives its documented verdict at its pinned time.

Vectors: /work/shared/tee-test-vectors (README there: upstream repos, commits,
licences, expected results). Pinned times lie inside each collateral's window:
SGX 2025-06-19T10:56:11Z..2025-07-19T10:01:18Z, TDX 2025-06-19T10:32:27Z..
2025-07-19T10:00:35Z (PCK CRL), TDX "outdated" 2026-02-18..2026-03-20, the
SEV-SNP VCEK 2022-09-24..2029-09-24.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atoll.cli import app
from atoll.island.evidence import detect_type, verify_evidence
from atoll.island.evidence.dcap import (
    INTEL_ROOT_SHA256,
    check_quote_integrity,
    intel_root,
    parse_quote,
)
from atoll.island.evidence.sgx import verify_sgx_quote
from atoll.island.evidence.snp import amd_roots, verify_snp_report
from atoll.island.evidence.tdx import verify_tdx_quote
from atoll.island.verdict import EvidenceFormatError, TcbError, Verdict

VECTORS = Path("/work/shared/tee-test-vectors")
DCAP = VECTORS / "dcap-qvl"
TDXG = VECTORS / "go-tdx-guest"
SEV = VECTORS / "go-sev-guest"

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="TEE test vectors not present")

SGX_AT = datetime(2025, 7, 1, tzinfo=UTC)
TDX_AT = datetime(2025, 7, 1, tzinfo=UTC)
OUTDATED_AT = datetime(2026, 3, 1, tzinfo=UTC)
COMPOSITE_AT = datetime(2026, 2, 20, tzinfo=UTC)
SNP_AT = datetime(2025, 1, 1, tzinfo=UTC)


def read(path: Path) -> bytes:
    return path.read_bytes()


def composite_v5_collateral() -> str:
    """go-tdx-guest's signed TCB info v5 response + the other members of dcap-qvl's 2026 set.

    All members are Intel-signed upstream data; the TCB info text is cut out of
    the PCS response byte for byte (its signature covers exactly that text).
    Common window: 2026-02-18T10:58:51Z..2026-03-03T14:49:26Z.
    """
    col = json.loads(read(DCAP / "tdx_quote_outdated_collateral.json"))
    raw = read(TDXG / "sample_tcbinfo_response_v5").decode()
    start = raw.index("{", raw.index('"tcbInfo"'))
    end = raw.rindex(',"signature"')
    col["tcb_info"] = raw[start:end]
    col["tcb_info_signature"] = json.loads(raw)["signature"]
    return json.dumps(col)


def test_sgx_v3_sample_verdict() -> None:
    verdict = verify_sgx_quote(
        read(DCAP / "sgx_quote"), read(DCAP / "sgx_quote_collateral.json"), at=SGX_AT
    )
    assert verdict.tee == "sgx"
    assert not verdict.simulated
    assert verdict.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert verdict.advisories == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert verdict.measurements["mrenclave"].startswith("33d8736d")
    assert verdict.measurements["mrsigner"].startswith("815f42f1")
    assert verdict.report_data == b"Hello, world!".ljust(64, b"\0")
    assert verdict.debug is False
    assert verdict.svn["isv_svn"] == 0
    assert verdict.svn["isv_prod_id"] == 0
    assert verdict.details["fmspc"] == "00a067110000"
    assert verdict.details["qe_tcb_status"] == "UpToDate"
    assert verdict.verified_at == SGX_AT
    assert verdict.collateral_expires == datetime(2025, 7, 19, 10, 1, 18, tzinfo=UTC)


def test_tdx_v4_sample_verdict() -> None:
    verdict = verify_tdx_quote(
        read(DCAP / "tdx_quote"), read(DCAP / "tdx_quote_collateral.json"), at=TDX_AT
    )
    assert verdict.tee == "tdx"
    assert verdict.tcb_status == "UpToDate"
    assert verdict.advisories == ()
    assert verdict.measurements["mrtd"].startswith("91eb2b44")
    assert set(verdict.measurements) >= {"rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid"}
    assert "mrservicetd" not in verdict.measurements
    assert verdict.details["td_report"] == "1.0"
    assert verdict.details["tdx_module_tcb_status"] == "UpToDate"
    assert verdict.svn["tdx_module_version"] == 1
    assert verdict.debug is False
    assert len(verdict.report_data) == 64


def test_tdx_v5_outdated_sample_is_rejected_no_matching_tcb_level() -> None:
    with pytest.raises(TcbError, match="No matching TCB level") as info:
        verify_tdx_quote(
            read(DCAP / "tdx_quote_outdated"),
            read(DCAP / "tdx_quote_outdated_collateral.json"),
            at=OUTDATED_AT,
        )
    assert info.value.stage == "tcb-level"


def test_tdx_v5_outdated_sample_signatures_are_valid() -> None:
    quote = parse_quote(read(DCAP / "tdx_quote_outdated"))
    assert (quote.version, quote.body_type) == (5, 3)
    check_quote_integrity(quote, at=OUTDATED_AT)


def test_tdx_v5_go_tdx_guest_sample_with_composite_collateral() -> None:
    verdict = verify_tdx_quote(
        read(TDXG / "quote_v5_sample.dat"), composite_v5_collateral(), at=COMPOSITE_AT
    )
    assert verdict.tcb_status == "UpToDate"
    assert verdict.details["td_report"] == "1.5"
    assert "mrservicetd" in verdict.measurements


@pytest.mark.parametrize(
    ("name", "at", "fmspc", "version"),
    [
        ("quote_v5_sample.dat", datetime(2026, 2, 3, tzinfo=UTC), "90c06f000000", 5),
        ("tdx_prod_quote_SPR_E4.dat", datetime(2023, 7, 1, tzinfo=UTC), "50806f000000", 4),
    ],
)
def test_go_tdx_guest_quotes_chain_and_signatures(
    name: str, at: datetime, fmspc: str, version: int
) -> None:
    raw = read(TDXG / name)
    if name == "tdx_prod_quote_SPR_E4.dat":
        # Upstream appended 39 bytes of text after the signature data; the strict
        # parser refuses unsigned non-zero trailing bytes, so cut them off first.
        with pytest.raises(EvidenceFormatError, match="not zero padding"):
            parse_quote(raw)
        raw = raw[:-39]
    quote = parse_quote(raw)
    path, pck = check_quote_integrity(quote, at=at)
    assert quote.version == version
    assert pck.fmspc.hex() == fmspc
    assert path[-1] == intel_root()


def test_snp_milan_sample_verdict() -> None:
    verdict = verify_snp_report(read(SEV / "attestation.bin"), read(SEV / "vcek.der"), at=SNP_AT)
    assert verdict.tee == "sev-snp"
    assert verdict.report_data == bytes([1, 2, 3, 4, 5]).ljust(64, b"\0")
    assert verdict.measurements["measurement"].startswith("b07af962")
    assert verdict.debug is True  # guest policy 0xb0000 has the DEBUG bit (19) set
    assert verdict.details["product"] == "Milan-B0"
    assert verdict.tcb_status == "bootloader=2 tee=0 snp=5 microcode=68"
    assert verdict.svn["snp"] == 5
    assert verdict.svn["microcode"] == 68
    assert verdict.svn["report_version"] == 2


def test_snp_with_explicit_ask_ark_chain() -> None:
    verdict = verify_snp_report(
        read(SEV / "attestation.bin"),
        read(SEV / "vcek.der"),
        read(SEV / "ask_ark_milan.pem"),
        at=SNP_AT,
    )
    assert verdict.details["certificates"][-1]["subject"].startswith("CN=ARK-Milan")


def test_detect_type_and_dispatch() -> None:
    assert detect_type(read(DCAP / "sgx_quote")) == "sgx"
    assert detect_type(read(DCAP / "tdx_quote")) == "tdx"
    assert detect_type(read(DCAP / "tdx_quote_outdated")) == "tdx"
    assert detect_type(read(SEV / "attestation.bin")) == "sev-snp"
    verdict = verify_evidence(
        read(DCAP / "sgx_quote"), read(DCAP / "sgx_quote_collateral.json"), at=SGX_AT
    )
    assert verdict.tee == "sgx"
    snp = verify_evidence(read(SEV / "attestation.bin"), read(SEV / "vcek.der"), at=SNP_AT)
    assert snp.tee == "sev-snp"


def test_shipped_roots_are_the_pinned_ones() -> None:
    from atoll.crypto.x509 import fingerprint_sha256, load_certificates

    assert fingerprint_sha256(intel_root()) == INTEL_ROOT_SHA256
    upstream = load_certificates(read(DCAP / "TrustedRootCA.der"))[0]
    assert upstream == intel_root()
    arks, asks = amd_roots()
    assert {a.subject.rfc4514_string().split(",")[0] for a in arks} == {
        "CN=ARK-Milan",
        "CN=ARK-Genoa",
    }
    assert len(asks) == 2


def test_verdict_json_roundtrip() -> None:
    verdict = verify_sgx_quote(
        read(DCAP / "sgx_quote"), read(DCAP / "sgx_quote_collateral.json"), at=SGX_AT
    )
    doc = json.loads(verdict.to_json())
    assert doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert doc["verified_at"] == "2025-07-01T00:00:00Z"
    again = Verdict.from_dict(doc)
    assert again.measurements == verdict.measurements
    assert again.report_data == verdict.report_data
    assert again.collateral_expires == verdict.collateral_expires


def test_verdict_validates_its_fields() -> None:
    base = dict(
        tee="sgx",
        measurements={"mrenclave": "ab"},
        report_data=bytes(64),
        tcb_status="UpToDate",
        advisories=(),
        debug=False,
        svn={},
        verified_at=SGX_AT,
        collateral_expires=None,
        simulated=False,
    )
    Verdict(**base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 bytes"):
        Verdict(**{**base, "report_data": bytes(32)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="simulated"):
        Verdict(**{**base, "simulated": True})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lowercase hex"):
        Verdict(**{**base, "measurements": {"mrenclave": "AB"}})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        Verdict(**{**base, "verified_at": datetime(2025, 1, 1)})  # type: ignore[arg-type]


# --- the CLI -----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_verify_accepts_at_pinned_time() -> None:
    result = runner.invoke(
        app,
        [
            "attest",
            "verify",
            "--evidence",
            str(DCAP / "sgx_quote"),
            "--collateral",
            str(DCAP / "sgx_quote_collateral.json"),
            "--at",
            "2025-07-01T00:00:00Z",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["accepted"] is True
    assert doc["verdict"]["tcb_status"] == "ConfigurationAndSWHardeningNeeded"


def test_cli_verify_rejects_now_with_expired_collateral() -> None:
    result = runner.invoke(
        app,
        [
            "attest",
            "verify",
            "--evidence",
            str(DCAP / "tdx_quote"),
            "--collateral",
            str(DCAP / "tdx_quote_collateral.json"),
        ],
    )
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["accepted"] is False
    assert "expired" in doc["reason"]


def test_cli_verify_policy_rejection_names_the_rule(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    measurement = (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
        "6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    policy.write_text(
        'version = 1\ntee_types = ["sev-snp"]\nrequire_report_data = false\n'
        f'[measurements]\nmeasurement = ["{measurement}"]\n'
        "[min_svn]\nsnp = 5\n",
        encoding="utf-8",
    )
    args = [
        "attest",
        "verify",
        "--evidence",
        str(SEV / "attestation.bin"),
        "--collateral",
        str(SEV / "vcek.der"),
        "--at",
        "2025-01-01",
        "--policy",
        str(policy),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["stage"] == "policy"
    assert doc["field"] == "allow_debug"
    assert doc["verdict"]["debug"] is True
    policy.write_text("allow_debug = true\n" + policy.read_text(), encoding="utf-8")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"] is True


def test_cli_verify_bad_inputs_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["attest", "verify", "--evidence", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    bad_type = runner.invoke(
        app,
        ["attest", "verify", "--evidence", str(DCAP / "sgx_quote"), "--type", "sgx2"],
    )
    assert bad_type.exit_code == 2
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x01" * 100)
    result = runner.invoke(app, ["attest", "verify", "--evidence", str(garbage)])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["stage"] == "detect"
