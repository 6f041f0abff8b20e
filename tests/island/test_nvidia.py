"""NVIDIA H100 SPDM evidence: the nvtrust sample's documented verdict, and every rejection.

Vector: /work/shared/tee-test-vectors/nvtrust (NVIDIA/nvtrust @ 02817309,
``local_gpu_verifier/src/verifier/{samples,certs}``; README there: "chain valid
to root; ECDSA P-384 signature over request||response (minus 96-byte
signature) valid; nonce 931d8dd0...64dfcb"). Every certificate of the sample
chain is valid from 2022-03-01 (the provisioner ICA) to 9999-12-31, so the
pinned time is any instant in between; before 2022-03-01 the chain is "not yet
valid". A private P-384 PKI builds synthetic reports for the checks a real
sample cannot reach (FWID mismatch, property tests).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from atoll.cli import app
from atoll.crypto.x509 import fingerprint_sha256, load_certificates
from atoll.errors import ConfigError
from atoll.island.evidence import detect_type, verify_evidence
from atoll.island.evidence.nvidia import (
    NVIDIA_ROOT_SHA256,
    decode_report_text,
    nvidia_root,
    parse_nvidia_report,
    verify_nvidia_report,
)
from atoll.island.policy import AttestationPolicy, evaluate, evaluate_gpu_addon, parse_policy
from atoll.island.verdict import (
    AttestationError,
    CertificateChainError,
    EvidenceFormatError,
    EvidenceSignatureError,
    NonceMismatchError,
    PolicyRejected,
    Verdict,
)

NV = Path("/work/shared/tee-test-vectors/nvtrust")
pytestmark = pytest.mark.skipif(not NV.is_dir(), reason="TEE test vectors not present")

REPORT_TEXT = (NV / "hopperAttestationReport.txt").read_bytes() if NV.is_dir() else b""
CHAIN = (NV / "hopperCertChain.txt").read_bytes() if NV.is_dir() else b""
REPORT = decode_report_text(REPORT_TEXT) if NV.is_dir() else b""
NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
AT = datetime(2025, 1, 1, tzinfo=UTC)

# Offsets in the binary sample: request 0..36, response header 37..44, 64 blocks of 55
# bytes from 45, responder nonce, opaque length + 422 bytes of opaque data, signature.
BLOCKS_AT = 45
RESP_NONCE_AT = BLOCKS_AT + 64 * 55
OPAQUE_AT = RESP_NONCE_AT + 32 + 2
SIG_AT = len(REPORT) - 96


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def verify(report: bytes = REPORT, chain: bytes = CHAIN, **kw: object) -> Verdict:
    kw.setdefault("at", AT)
    return verify_nvidia_report(report, chain, **kw)  # type: ignore[arg-type]


# --- the documented verdict -------------------------------------------------------------


def test_nvtrust_sample_gives_documented_verdict() -> None:
    assert detect_type(REPORT_TEXT) == "nvidia-h100"
    verdict = verify_evidence(REPORT_TEXT, CHAIN, at=AT, expected_nonce=NONCE)
    assert verdict.tee == "nvidia-h100"
    assert verdict.report_data == NONCE
    assert verdict.report_data.hex().startswith("931d8dd0")
    assert verdict.report_data.hex().endswith("64dfcb")
    assert verdict.simulated is False
    assert verdict.tcb_status == "not-appraised"
    assert len(verdict.measurements) == 64
    assert sorted(verdict.measurements) == [f"{i:03d}" for i in range(1, 65)]
    assert verdict.measurements["002"] == (
        "8048dfd18fe229bf16eb9d30cca0f11a24dafe6eb731de1462984645a0b189b7"
        "7c4e4e17de727a5e19e3d07de51da338"
    )
    assert all(len(v) == 96 for v in verdict.measurements.values())
    details = verdict.details
    assert details["nonce_checked"] is True
    assert details["leaf"]["common_name"] == "GH100 A01 GSP FMC LF"
    assert details["leaf"]["serial_number"] == "53C22BA15E5D68088282DA074ED9FB37AA585771"
    assert details["device_serial"] == "41431D480FE5E87274"
    assert details["fwid_bound"] is True
    assert details["opaque"]["driver_version"] == "550.90.07"
    assert details["opaque"]["vbios_version"] == "96.00.9f.00.01"
    assert details["certificates"][-1]["sha256"] == NVIDIA_ROOT_SHA256
    assert [c["subject"].split(",")[0] for c in details["certificates"]] == [
        "CN=GH100 A01 GSP FMC LF",
        "CN=GH100 A01 GSP BROM",
        "C=US",
        "O=NVIDIA Corporation",
        "O=NVIDIA",
    ]
    assert verdict.collateral_expires == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    again = Verdict.from_dict(json.loads(verdict.to_json()))
    assert again.report_data == NONCE
    assert again.measurements == verdict.measurements


def test_binary_form_and_no_nonce_check() -> None:
    verdict = verify(REPORT)
    assert verdict.report_data == NONCE
    assert verdict.details["nonce_checked"] is False
    parsed = parse_nvidia_report(REPORT_TEXT)
    assert parsed.raw == REPORT
    assert parsed.nonce == NONCE
    assert len(parsed.signature) == 96
    assert parsed.signed_bytes == REPORT[:-96]


def test_shipped_root_is_nvtrusts_device_identity_ca() -> None:
    upstream = load_certificates((NV / "verifier_device_root.pem").read_bytes())[0]
    assert nvidia_root() == upstream
    assert fingerprint_sha256(nvidia_root()) == NVIDIA_ROOT_SHA256
    assert load_certificates(CHAIN)[-1] == upstream


# --- tampering: every signed region fails the signature, every length field the parser ---

SIGNED_REGIONS = [
    ("signature.r", SIG_AT),
    ("signature.s", len(REPORT) - 1),
    ("request.nonce", 4),
    ("request.nonce_last", 35),
    ("request.slot_id", 36),
    ("response.param1", 39),
    ("measurement[1].digest", BLOCKS_AT + 7),
    ("measurement[2].digest", BLOCKS_AT + 55 + 7 + 20),
    ("measurement[64].digest", BLOCKS_AT + 63 * 55 + 54),
    ("measurement.type", BLOCKS_AT + 4),
    ("response.nonce", RESP_NONCE_AT + 3),
    ("opaque.vbios", OPAQUE_AT + 4),
]


@pytest.mark.parametrize(("region", "offset"), SIGNED_REGIONS, ids=[r[0] for r in SIGNED_REGIONS])
def test_flipped_signed_region_fails_the_signature(region: str, offset: int) -> None:
    with pytest.raises(EvidenceSignatureError) as info:
        verify(flip(REPORT, offset), expected_nonce=NONCE)
    assert info.value.stage == "report-signature", region


STRUCTURE = [
    ("request.version", 0, "request.version"),
    ("request.code", 1, "request.code"),
    ("request.param1", 2, "request.param1"),
    ("response.version", 37, "response.version"),
    ("response.code", 38, "response.code"),
    ("number_of_blocks", 41, "measurement.index"),
    ("record_length", 42, None),
    ("measurement.index", BLOCKS_AT + 55, "measurement.index"),
    ("measurement.spec", BLOCKS_AT + 1, "measurement.specification"),
    ("measurement.size", BLOCKS_AT + 2, None),
    ("opaque.length", OPAQUE_AT - 2, None),
]


@pytest.mark.parametrize(("region", "offset", "field"), STRUCTURE, ids=[s[0] for s in STRUCTURE])
def test_flipped_structure_is_a_format_error(region: str, offset: int, field: str | None) -> None:
    with pytest.raises(EvidenceFormatError) as info:
        verify(flip(REPORT, offset))
    assert info.value.stage == "parse", region
    if field is not None:
        assert info.value.field == field


def test_truncated_and_padded_reports_are_rejected() -> None:
    for cut in (0, 1, 4, 36, 37, 44, 45, 100, RESP_NONCE_AT, OPAQUE_AT, SIG_AT, len(REPORT) - 1):
        with pytest.raises(EvidenceFormatError):
            verify(REPORT[:cut])
    with pytest.raises(EvidenceFormatError, match="truncated"):
        verify(REPORT[:-1])
    with pytest.raises(EvidenceFormatError, match="after the 96-byte signature"):
        verify(REPORT + b"\x00")
    with pytest.raises(EvidenceFormatError, match="odd number"):
        verify(REPORT_TEXT.strip()[:-1])
    with pytest.raises(EvidenceFormatError) as info:
        verify(b"zz" + REPORT_TEXT)
    assert info.value.field == "request.version"


def test_wrong_expected_nonce_is_rejected() -> None:
    with pytest.raises(NonceMismatchError) as info:
        verify(expected_nonce=bytes(32))
    assert info.value.stage == "nonce"
    with pytest.raises(NonceMismatchError):
        verify(expected_nonce=flip(NONCE, 31))
    with pytest.raises(EvidenceFormatError, match="32 bytes"):
        verify(expected_nonce=NONCE[:16])


# --- the certificate chain ---------------------------------------------------------------

SAMPLE = load_certificates(CHAIN) if NV.is_dir() else []


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def test_chain_out_of_order_is_rejected() -> None:
    leaf, brom, ica, identity, root = SAMPLE
    with pytest.raises(CertificateChainError) as info:
        verify(chain=pem(leaf, ica, brom, identity, root))
    assert info.value.stage == "gpu-chain"
    assert info.value.field == "order"
    with pytest.raises(CertificateChainError, match=r"order|issued by"):
        verify(chain=pem(root, identity, ica, brom, leaf))


def test_chain_without_root_is_completed_by_the_pinned_root() -> None:
    leaf, brom, ica, identity, _root = SAMPLE
    verdict = verify(chain=pem(leaf, brom, ica, identity))
    assert verdict.details["certificates"][-1]["sha256"] == NVIDIA_ROOT_SHA256


def test_missing_intermediate_or_leaf_is_rejected() -> None:
    leaf, brom, ica, identity, root = SAMPLE
    with pytest.raises(CertificateChainError):
        verify(chain=pem(leaf, ica, identity, root))
    with pytest.raises((EvidenceSignatureError, CertificateChainError)):
        verify(chain=pem(brom, ica, identity, root))


def test_time_outside_validity_is_rejected() -> None:
    with pytest.raises(CertificateChainError, match="not yet valid") as info:
        verify(at=datetime(2021, 6, 1, tzinfo=UTC))
    assert info.value.stage == "gpu-chain"
    verify(at=datetime(2022, 3, 1, 0, 0, 1, tzinfo=UTC))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _name(cn: str, org: str = "Atoll test") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


def test_look_alike_root_and_wrong_pinned_root_are_rejected() -> None:
    leaf, brom, ica, identity, root = SAMPLE
    fake_key = _key()
    fake_root = _cert(root.subject, fake_key, root.subject, fake_key, ca=True)
    with pytest.raises(CertificateChainError) as info:
        verify(chain=pem(leaf, brom, ica, identity, fake_root))
    assert info.value.stage == "gpu-chain"
    other_key = _key()
    other_root = _cert(_name("Other root"), other_key, _name("Other root"), other_key, ca=True)
    with pytest.raises(CertificateChainError, match="pinned root"):
        verify(roots=[other_root])


# --- a private PKI: synthetic reports ----------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


SHA384_OID = bytes.fromhex("0609608648016503040202")


def _dice(issuer_key: ec.EllipticCurvePrivateKey, fwid: bytes) -> x509.UnrecognizedExtension:
    spki = issuer_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    value = _tlv(0x30, _tlv(0x02, b"\x01") + spki + _tlv(0x30, SHA384_OID + _tlv(0x04, fwid)))
    return x509.UnrecognizedExtension(x509.ObjectIdentifier("2.23.133.5.4.1"), value)


class PrivatePki:
    """Root CA -> device CA -> attestation leaf (with a DICE FWID), all P-384."""

    def __init__(self, fwid: bytes) -> None:
        self.root_key, ca_key, self.leaf_key = _key(), _key(), _key()
        self.root = _cert(
            _name("Test root"), self.root_key, _name("Test root"), self.root_key, ca=True
        )
        self.ca = _cert(_name("Test device CA"), ca_key, self.root.subject, self.root_key, ca=True)
        self.leaf = _cert(
            _name("Test GPU leaf"),
            self.leaf_key,
            self.ca.subject,
            ca_key,
            ca=False,
            extra=_dice(ca_key, fwid),
        )

    def chain(self) -> bytes:
        return pem(self.leaf, self.ca, self.root)

    def report(self, nonce: bytes, digests: list[bytes], opaque: dict[int, bytes]) -> bytes:
        request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\x00"
        record = b"".join(
            bytes([i + 1, 0x01])
            + (3 + len(d)).to_bytes(2, "little")
            + b"\x01"
            + len(d).to_bytes(2, "little")
            + d
            for i, d in enumerate(digests)
        )
        opaque_bytes = b"".join(
            k.to_bytes(2, "little") + len(v).to_bytes(2, "little") + v for k, v in opaque.items()
        )
        response = (
            bytes([0x11, 0x60, 0x00, 0x00, len(digests)])
            + len(record).to_bytes(3, "little")
            + record
            + bytes(range(32))
            + len(opaque_bytes).to_bytes(2, "little")
            + opaque_bytes
        )
        signed = request + response
        der = self.leaf_key.sign(signed, ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        return signed + r.to_bytes(48, "big") + s.to_bytes(48, "big")


FWID = bytes(range(48))
PKI = PrivatePki(FWID)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nonce=st.binary(min_size=32, max_size=32),
    digests=st.lists(st.binary(min_size=48, max_size=48), min_size=1, max_size=8),
)
def test_synthetic_report_verdict_equals_its_inputs(nonce: bytes, digests: list[bytes]) -> None:
    report = PKI.report(nonce, digests, {3: b"1.2.3\x00", 20: FWID})
    verdict = verify_nvidia_report(
        report.hex().encode(), PKI.chain(), at=AT, expected_nonce=nonce, roots=[PKI.root]
    )
    assert verdict.report_data == nonce
    assert dict(verdict.measurements) == {f"{i + 1:03d}": d.hex() for i, d in enumerate(digests)}
    assert verdict.details["opaque"]["driver_version"] == "1.2.3"
    assert verdict.details["fwid_bound"] is True


def test_synthetic_fwid_mismatch_and_foreign_signer_are_rejected() -> None:
    nonce = bytes(32)
    report = PKI.report(nonce, [bytes(48)], {20: bytes(48)})
    with pytest.raises(CertificateChainError) as info:
        verify_nvidia_report(report, PKI.chain(), at=AT, roots=[PKI.root])
    assert info.value.stage == "gpu-fwid"
    other = PrivatePki(FWID).report(nonce, [bytes(48)], {20: FWID})
    with pytest.raises(EvidenceSignatureError):
        verify_nvidia_report(other, PKI.chain(), at=AT, roots=[PKI.root])
    with pytest.raises(CertificateChainError, match="pinned root"):
        verify_nvidia_report(PKI.report(nonce, [bytes(48)], {}), PKI.chain(), at=AT)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(min_value=0, max_value=4116), mask=st.integers(1, 255))
def test_any_flipped_byte_of_the_sample_is_rejected(offset: int, mask: int) -> None:
    with pytest.raises(AttestationError):
        verify(flip(REPORT, offset, mask), expected_nonce=NONCE)


# --- policy: a GPU verdict is an add-on claim only ---------------------------------------


def test_gpu_verdict_never_qualifies_as_island_tee() -> None:
    verdict = verify(expected_nonce=NONCE)
    lax = AttestationPolicy(allow_any_measurement=True, require_report_data=False)
    with pytest.raises(PolicyRejected) as info:
        evaluate(verdict, lax, expected_report_data=None, now=AT)
    assert info.value.rule == "gpu_evidence"
    with pytest.raises(ConfigError, match="allow_gpu_addon"):
        parse_policy({"version": 1, "tee_types": ["sgx", "nvidia-h100"]})


def test_gpu_addon_needs_explicit_policy_and_the_nonce() -> None:
    verdict = verify(expected_nonce=NONCE)
    with pytest.raises(PolicyRejected) as info:
        evaluate_gpu_addon(verdict, AttestationPolicy(), expected_nonce=NONCE, now=AT)
    assert info.value.rule == "allow_gpu_addon"
    policy = parse_policy({"version": 1, "allow_gpu_addon": True})
    evaluate_gpu_addon(verdict, policy, expected_nonce=NONCE, now=AT)
    with pytest.raises(PolicyRejected) as info:
        evaluate_gpu_addon(verdict, policy, expected_nonce=bytes(32), now=AT)
    assert info.value.rule == "gpu_nonce"
    with pytest.raises(PolicyRejected) as info:
        evaluate_gpu_addon(verdict, policy, expected_nonce=None, now=AT)
    assert info.value.rule == "require_report_data"
    cpu = Verdict(
        tee="sgx",
        measurements={},
        report_data=bytes(64),
        tcb_status="UpToDate",
        advisories=(),
        debug=False,
        svn={},
        verified_at=AT,
        collateral_expires=None,
        simulated=False,
    )
    with pytest.raises(PolicyRejected, match="not GPU evidence"):
        evaluate_gpu_addon(cpu, policy, expected_nonce=NONCE, now=AT)


# --- the CLI ------------------------------------------------------------------------------

runner = CliRunner()
BASE = [
    "attest",
    "verify",
    "--evidence",
    str(NV / "hopperAttestationReport.txt"),
    "--collateral",
    str(NV / "hopperCertChain.txt"),
    "--at",
    "2025-01-01T00:00:00Z",
]


def test_cli_prints_the_gpu_verdict() -> None:
    result = runner.invoke(app, [*BASE, "--nonce", NONCE.hex()])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["accepted"] is True
    assert doc["claim"] == "gpu-add-on"
    assert doc["verdict"]["tee"] == "nvidia-h100"
    assert doc["verdict"]["report_data"] == NONCE.hex()
    assert doc["verdict"]["details"]["leaf"]["common_name"] == "GH100 A01 GSP FMC LF"


def test_cli_rejections(tmp_path: Path) -> None:
    wrong = runner.invoke(app, [*BASE, "--nonce", "00" * 32])
    assert wrong.exit_code == 1
    assert json.loads(wrong.stdout)["stage"] == "nonce"
    early = runner.invoke(app, [*BASE[:-1], "2021-01-01"])
    assert early.exit_code == 1
    assert json.loads(early.stdout)["stage"] == "gpu-chain"
    assert runner.invoke(app, [*BASE, "--nonce", "xyz"]).exit_code == 2
    assert runner.invoke(app, [*BASE, "--nonce", "00"]).exit_code == 2
    policy = tmp_path / "policy.toml"
    policy.write_text("version = 1\n", encoding="utf-8")
    refused = runner.invoke(app, [*BASE, "--nonce", NONCE.hex(), "--policy", str(policy)])
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["field"] == "allow_gpu_addon"
    policy.write_text("version = 1\nallow_gpu_addon = true\n", encoding="utf-8")
    ok = runner.invoke(app, [*BASE, "--nonce", NONCE.hex(), "--policy", str(policy)])
    assert ok.exit_code == 0, ok.output
    no_chain = runner.invoke(app, BASE[:4])
    assert no_chain.exit_code == 1
    assert json.loads(no_chain.stdout)["stage"] == "collateral"
