"""Tampered, truncated, mis-rooted and expired evidence is rejected with a specific reason.

Every region of the real samples (header, body, each signature, attestation
key, QE report, QE auth data, certificate chain, every collateral member) is
flipped and must be refused at the stage that protects it; Hypothesis flips
random bytes of the binary quote; a private test PKI exercises revocation and
the other chain rules of :mod:`atoll.crypto.x509`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.crypto.x509 import (
    X509Error,
    ec_public_key_from_xy,
    load_certificates,
    verify_chain,
    verify_ecdsa_raw,
)
from atoll.island.evidence.dcap import intel_root, parse_quote
from atoll.island.evidence.sgx import verify_sgx_quote
from atoll.island.evidence.snp import amd_roots, verify_snp_report
from atoll.island.evidence.tdx import verify_tdx_quote
from atoll.island.verdict import (
    AttestationError,
    CertificateChainError,
    CollateralError,
    EvidenceFormatError,
    EvidenceSignatureError,
)
from tests.island.test_verdicts import DCAP, SEV, SGX_AT, SNP_AT, TDX_AT, VECTORS

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="TEE test vectors not present")

SGX_QUOTE = (DCAP / "sgx_quote").read_bytes() if VECTORS.is_dir() else b""
SGX_COLLATERAL = (DCAP / "sgx_quote_collateral.json").read_text() if VECTORS.is_dir() else "{}"
AUTH_LEN = int.from_bytes(SGX_QUOTE[1012:1014], "little") if SGX_QUOTE else 0
PEM_START = 1014 + AUTH_LEN + 6


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def sgx(quote: bytes = SGX_QUOTE, collateral: str = SGX_COLLATERAL, at: datetime = SGX_AT) -> None:
    verify_sgx_quote(quote, collateral, at=at)


# --- the SGX quote, region by region ---------------------------------------------------

REGIONS = [
    ("header.qe_svn", 8, EvidenceSignatureError, "quote-signature"),
    ("header.user_data", 40, EvidenceSignatureError, "quote-signature"),
    ("body.cpusvn", 48, EvidenceSignatureError, "quote-signature"),
    ("body.mrenclave", 112, EvidenceSignatureError, "quote-signature"),
    ("body.mrsigner", 176, EvidenceSignatureError, "quote-signature"),
    ("body.report_data", 368, EvidenceSignatureError, "quote-signature"),
    ("signature", 440, EvidenceSignatureError, "quote-signature"),
    ("attestation_key", 520, EvidenceSignatureError, "qe-report-binding"),
    ("qe_report.mrenclave", 564 + 64, EvidenceSignatureError, "qe-report-signature"),
    ("qe_report.report_data", 564 + 320, EvidenceSignatureError, "qe-report-signature"),
    ("qe_report_signature", 960, EvidenceSignatureError, "qe-report-signature"),
    ("qe_auth_data", 1016, EvidenceSignatureError, "qe-report-binding"),
    ("header.version", 0, EvidenceFormatError, "parse"),
    ("header.key_type", 2, EvidenceFormatError, "parse"),
    ("signature_data_len", 432, EvidenceFormatError, "parse"),
    ("qe_auth_data_len", 1012, EvidenceFormatError, "parse"),
]


@pytest.mark.parametrize(
    ("region", "offset", "error", "stage"), REGIONS, ids=[r[0] for r in REGIONS]
)
def test_sgx_flipped_region_is_rejected(
    region: str, offset: int, error: type[AttestationError], stage: str
) -> None:
    with pytest.raises(error) as info:
        sgx(flip(SGX_QUOTE, offset))
    assert info.value.stage == stage, info.value


def test_sgx_flipped_pck_certificate_is_rejected() -> None:
    pem = SGX_QUOTE[PEM_START:]
    # A base64 character in the middle of the PCK leaf (its TBS or signature).
    offset = PEM_START + pem.index(b"-----END CERTIFICATE-----") - 40
    char = SGX_QUOTE[offset : offset + 1]
    swapped = b"B" if char != b"B" else b"C"
    tampered = SGX_QUOTE[:offset] + swapped + SGX_QUOTE[offset + 1 :]
    with pytest.raises(CertificateChainError) as info:
        sgx(tampered)
    assert info.value.stage == "pck-chain"


def test_sgx_truncated_everywhere_is_rejected() -> None:
    for cut in (0, 1, 7, 47, 48, 200, 431, 432, 435, 436, 563, 947, 1011, 1013, 1100):
        with pytest.raises(EvidenceFormatError, match="truncated"):
            parse_quote(SGX_QUOTE[:cut])
    with pytest.raises(EvidenceFormatError):
        sgx(SGX_QUOTE[:-1])


def test_sgx_appended_garbage_is_rejected_zero_padding_tolerated() -> None:
    with pytest.raises(EvidenceFormatError, match="not zero padding"):
        sgx(SGX_QUOTE + b"\x01")
    sgx(SGX_QUOTE + bytes(16))


def _collateral(**changes: str) -> str:
    doc = json.loads(SGX_COLLATERAL)
    doc.update(changes)
    return json.dumps(doc)


def _flip_hex(text: str, index: int) -> str:
    return text[:index] + ("1" if text[index] != "1" else "2") + text[index + 1 :]


def _flip_pem(text: str) -> str:
    index = text.index("-----END CERTIFICATE-----") - 40
    return text[:index] + ("B" if text[index] != "B" else "C") + text[index + 1 :]


def _flip_json(text: str) -> str:
    index = text.index('"tcbLevels"') + 40
    while not text[index].isdigit():
        index += 1
    return text[:index] + str((int(text[index]) + 1) % 10) + text[index + 1 :]


def _collateral_cases() -> list[tuple[str, str, type[AttestationError], str]]:
    doc = json.loads(SGX_COLLATERAL) if VECTORS.is_dir() else {}
    if not doc:
        return []
    return [
        ("tcb_info", _flip_json(doc["tcb_info"]), EvidenceSignatureError, "tcb-info"),
        (
            "tcb_info_signature",
            _flip_hex(doc["tcb_info_signature"], 5),
            EvidenceSignatureError,
            "tcb-info",
        ),
        (
            "qe_identity",
            doc["qe_identity"].replace('"isvprodid":1', '"isvprodid":2'),
            EvidenceSignatureError,
            "qe-identity",
        ),
        (
            "qe_identity_signature",
            _flip_hex(doc["qe_identity_signature"], 70),
            EvidenceSignatureError,
            "qe-identity",
        ),
        (
            "tcb_info_issuer_chain",
            _flip_pem(doc["tcb_info_issuer_chain"]),
            CertificateChainError,
            "tcb-info",
        ),
        (
            "qe_identity_issuer_chain",
            _flip_pem(doc["qe_identity_issuer_chain"]),
            CertificateChainError,
            "qe-identity",
        ),
        (
            "pck_crl_issuer_chain",
            _flip_pem(doc["pck_crl_issuer_chain"]),
            CertificateChainError,
            "pck-crl",
        ),
        (
            "root_ca_crl",
            _flip_hex(doc["root_ca_crl"], len(doc["root_ca_crl"]) - 3),
            CertificateChainError,
            "tcb-info",
        ),
        (
            "pck_crl",
            _flip_hex(doc["pck_crl"], len(doc["pck_crl"]) - 3),
            CertificateChainError,
            "pck-chain",
        ),
    ]


@pytest.mark.parametrize(
    ("member", "value", "error", "stage"),
    _collateral_cases(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_sgx_tampered_collateral_member_is_rejected(
    member: str, value: str, error: type[AttestationError], stage: str
) -> None:
    assert value != json.loads(SGX_COLLATERAL)[member]
    with pytest.raises(error) as info:
        sgx(collateral=_collateral(**{member: value}))
    assert info.value.stage == stage, info.value


def test_sgx_malformed_collateral_is_rejected() -> None:
    with pytest.raises(EvidenceFormatError, match="not JSON"):
        sgx(collateral="{")
    doc = json.loads(SGX_COLLATERAL)
    del doc["pck_crl"]
    with pytest.raises(EvidenceFormatError, match="lacks"):
        sgx(collateral=json.dumps(doc))
    with pytest.raises(EvidenceFormatError, match="unknown member"):
        sgx(collateral=_collateral(extra="1"))


def test_sgx_quote_with_another_platforms_collateral_is_rejected() -> None:
    with pytest.raises(AttestationError):
        sgx(collateral=(DCAP / "tdx_quote_collateral.json").read_text())


def test_tdx_quote_is_not_an_sgx_quote() -> None:
    with pytest.raises(EvidenceFormatError, match="not an SGX quote"):
        verify_sgx_quote((DCAP / "tdx_quote").read_bytes(), SGX_COLLATERAL, at=SGX_AT)


# --- time ------------------------------------------------------------------------------


def test_sgx_now_is_rejected_collateral_expired() -> None:
    with pytest.raises(AttestationError, match="expired"):
        verify_sgx_quote(SGX_QUOTE, SGX_COLLATERAL)


def test_sgx_after_tcb_info_next_update_is_rejected() -> None:
    with pytest.raises(CollateralError, match="TCB info expired") as info:
        sgx(at=datetime(2025, 8, 1, tzinfo=UTC))
    assert info.value.field == "nextUpdate"


def test_sgx_before_collateral_issue_is_rejected() -> None:
    with pytest.raises(AttestationError, match="not yet valid"):
        sgx(at=datetime(2025, 6, 1, tzinfo=UTC))


def test_naive_time_is_refused() -> None:
    with pytest.raises(CollateralError, match="timezone"):
        sgx(at=datetime(2025, 7, 1))


# --- wrong roots ----------------------------------------------------------------------


def _self_signed(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2020, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=365 * 40))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_sgx_with_a_look_alike_root_is_rejected() -> None:
    fake = _self_signed(intel_root().subject)  # same name, different key
    with pytest.raises(CertificateChainError, match="does not verify"):
        verify_sgx_quote(SGX_QUOTE, SGX_COLLATERAL, at=SGX_AT, roots=[fake])


def test_snp_with_the_wrong_product_root_is_rejected() -> None:
    arks, _ = amd_roots()
    genoa = [a for a in arks if "Genoa" in a.subject.rfc4514_string()]
    with pytest.raises(CertificateChainError, match=r"does not chain|not found|not verify"):
        verify_snp_report(
            (SEV / "attestation.bin").read_bytes(),
            (SEV / "vcek.der").read_bytes(),
            (VECTORS / "go-sev-guest" / "ask_ark_genoa.pem").read_bytes(),
            at=SNP_AT,
            roots=genoa,
        )


# --- TDX ------------------------------------------------------------------------------

TDX_QUOTE = (DCAP / "tdx_quote").read_bytes() if VECTORS.is_dir() else b""
TDX_COLLATERAL = (DCAP / "tdx_quote_collateral.json").read_text() if VECTORS.is_dir() else ""


@pytest.mark.parametrize(
    ("offset", "stage"),
    [
        (48, "quote-signature"),
        (48 + 136, "quote-signature"),
        (48 + 520, "quote-signature"),
        (640, "quote-signature"),
        (6, "parse"),
    ],
    ids=["tee_tcb_svn", "mrtd", "report_data", "signature", "tee_type"],
)
def test_tdx_flipped_region_is_rejected(offset: int, stage: str) -> None:
    with pytest.raises(AttestationError) as info:
        verify_tdx_quote(flip(TDX_QUOTE, offset), TDX_COLLATERAL, at=TDX_AT)
    assert info.value.stage == stage


def test_tdx_v5_body_descriptor_is_checked() -> None:
    raw = (DCAP / "tdx_quote_outdated").read_bytes()
    with pytest.raises(EvidenceFormatError, match="body type"):
        parse_quote(flip(raw, 48, 0x07))
    with pytest.raises(EvidenceFormatError):
        parse_quote(flip(raw, 50, 0x10))


def test_tdx_now_is_rejected() -> None:
    with pytest.raises(AttestationError, match="expired"):
        verify_tdx_quote(TDX_QUOTE, TDX_COLLATERAL)


# --- SEV-SNP --------------------------------------------------------------------------

SNP_REPORT = (SEV / "attestation.bin").read_bytes() if VECTORS.is_dir() else b""
VCEK = (SEV / "vcek.der").read_bytes() if VECTORS.is_dir() else b""


@pytest.mark.parametrize(
    ("offset", "error", "stage"),
    [
        (0x04, EvidenceSignatureError, "report-signature"),  # guest svn
        (0x08 + 2, EvidenceSignatureError, "report-signature"),  # policy (debug bit lives here)
        (0x50, EvidenceSignatureError, "report-signature"),  # report data
        (0x90, EvidenceSignatureError, "report-signature"),  # measurement
        (0xC0, EvidenceSignatureError, "report-signature"),  # host data
        (0x180, EvidenceSignatureError, "report-signature"),  # reported TCB
        (0x1A0, EvidenceSignatureError, "report-signature"),  # chip id
        (0x2A0, EvidenceSignatureError, "report-signature"),  # r
        (0x2E8, EvidenceSignatureError, "report-signature"),  # s
        (0x2E0, EvidenceSignatureError, "report-signature"),  # r high (zero) bytes
        (0x400, EvidenceFormatError, "parse"),  # reserved tail
        (0x00, EvidenceFormatError, "parse"),  # version
        (0x34, EvidenceFormatError, "parse"),  # signature algorithm
    ],
)
def test_snp_flipped_region_is_rejected(
    offset: int, error: type[AttestationError], stage: str
) -> None:
    with pytest.raises(error) as info:
        verify_snp_report(flip(SNP_REPORT, offset, 0x40), VCEK, at=SNP_AT)
    assert info.value.stage == stage


def test_snp_truncated_and_tampered_vcek_are_rejected() -> None:
    with pytest.raises(EvidenceFormatError, match="1184"):
        verify_snp_report(SNP_REPORT[:-1], VCEK, at=SNP_AT)
    with pytest.raises(CertificateChainError):
        verify_snp_report(SNP_REPORT, flip(VCEK, len(VCEK) - 10), at=SNP_AT)
    with pytest.raises(EvidenceFormatError):
        verify_snp_report(SNP_REPORT, VCEK[:100], at=SNP_AT)


def test_snp_after_vcek_expiry_is_rejected() -> None:
    with pytest.raises(CertificateChainError, match="expired"):
        verify_snp_report(SNP_REPORT, VCEK, at=datetime(2030, 1, 1, tzinfo=UTC))


def test_snp_report_signed_by_another_vcek_is_rejected() -> None:
    # A VCEK for another chip: the Milan ASK itself is not an EC key -> the leaf check fails.
    _, asks = amd_roots()
    with pytest.raises(AttestationError):
        verify_snp_report(SNP_REPORT, asks[0].public_bytes(_der()), at=SNP_AT)


def _der() -> Encoding:
    return Encoding.DER


# --- Hypothesis: any byte flip of the binary SGX quote is rejected ----------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(min_value=0, max_value=PEM_START - 1), mask=st.integers(1, 255))
def test_any_flip_in_the_binary_quote_is_rejected(offset: int, mask: int) -> None:
    with pytest.raises(AttestationError):
        sgx(flip(SGX_QUOTE, offset, mask))


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=4599))
def test_any_truncation_is_rejected(cut: int) -> None:
    with pytest.raises(AttestationError):
        sgx(SGX_QUOTE[:cut])


@settings(max_examples=30, deadline=None)
@given(message=st.binary(max_size=200), curve=st.sampled_from(["P-256", "P-384"]))
def test_raw_ecdsa_matches_cryptography_der_verification(message: bytes, curve: str) -> None:
    crv = ec.SECP256R1() if curve == "P-256" else ec.SECP384R1()
    algo = hashes.SHA256() if curve == "P-256" else hashes.SHA384()
    size = 32 if curve == "P-256" else 48
    key = ec.generate_private_key(crv)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(algo)))
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    numbers = key.public_key().public_numbers()
    xy = numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")
    public = ec_public_key_from_xy(xy, curve=curve)
    assert verify_ecdsa_raw(public, raw, message)
    assert not verify_ecdsa_raw(public, raw, message + b"x")
    assert not verify_ecdsa_raw(public, flip(raw, 3), message)
    assert not verify_ecdsa_raw(public, raw[:-1], message)


def test_off_curve_attestation_key_is_refused() -> None:
    with pytest.raises(X509Error, match="not a point"):
        ec_public_key_from_xy(bytes(63) + b"\x01", curve="P-256")


# --- a private PKI for the chain rules: revocation, CRL freshness, CA flags -----------


class PKI:
    """root -> ca -> leaf, all P-256, with CRLs; times around 2025-01-01."""

    T0 = datetime(2024, 1, 1, tzinfo=UTC)
    AT = datetime(2025, 1, 1, tzinfo=UTC)

    def __init__(self, *, ca_is_ca: bool = True, critical_unknown: bool = False) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._cert("Test Root", "Test Root", self.root_key, self.root_key, ca=True)
        self.ca = self._cert("Test CA", "Test Root", self.ca_key, self.root_key, ca=ca_is_ca)
        self.leaf = self._cert(
            "Test Leaf", "Test CA", self.leaf_key, self.ca_key, ca=False, critical=critical_unknown
        )

    def _cert(
        self,
        subject: str,
        issuer: str,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
        critical: bool = False,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.T0)
            .not_valid_after(self.T0 + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if critical:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"),
                critical=True,
            )
        return builder.sign(signer, hashes.SHA256())

    def crl(
        self,
        issuer: str,
        key: ec.EllipticCurvePrivateKey,
        revoked: list[x509.Certificate] = [],  # noqa: B006
        *,
        next_update: datetime | None = None,
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .last_update(self.T0)
            .next_update(next_update or self.T0 + timedelta(days=800))
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(self.T0)
                .build()
            )
        return builder.sign(key, hashes.SHA256())

    def verify(self, **kwargs: object) -> list[x509.Certificate]:
        return verify_chain(self.leaf, [self.ca], roots=[self.root], at=self.AT, **kwargs)  # type: ignore[arg-type]


def test_private_pki_chain_verifies_with_crls() -> None:
    pki = PKI()
    crls = [pki.crl("Test Root", pki.root_key), pki.crl("Test CA", pki.ca_key)]
    path = pki.verify(crls=crls, require_crls=True)
    assert path == [pki.leaf, pki.ca, pki.root]


def test_revoked_leaf_is_rejected() -> None:
    pki = PKI()
    crls = [pki.crl("Test Root", pki.root_key), pki.crl("Test CA", pki.ca_key, [pki.leaf])]
    with pytest.raises(X509Error, match="revoked"):
        pki.verify(crls=crls, require_crls=True)


def test_revoked_intermediate_is_rejected() -> None:
    pki = PKI()
    crls = [pki.crl("Test Root", pki.root_key, [pki.ca]), pki.crl("Test CA", pki.ca_key)]
    with pytest.raises(X509Error, match="revoked"):
        pki.verify(crls=crls)


def test_crl_with_a_forged_signature_is_rejected() -> None:
    pki = PKI()
    forged = pki.crl("Test CA", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(X509Error, match="CRL signature"):
        pki.verify(crls=[pki.crl("Test Root", pki.root_key), forged])


def test_stale_crl_is_rejected() -> None:
    pki = PKI()
    stale = pki.crl("Test CA", pki.ca_key, next_update=PKI.AT - timedelta(days=1))
    with pytest.raises(X509Error, match=r"CRL of .* expired"):
        pki.verify(crls=[stale])


def test_missing_required_crl_is_rejected() -> None:
    pki = PKI()
    with pytest.raises(X509Error, match="no CRL"):
        pki.verify(crls=[pki.crl("Test Root", pki.root_key)], require_crls=True)


def test_non_ca_issuer_is_rejected() -> None:
    pki = PKI(ca_is_ca=False)
    with pytest.raises(X509Error, match="not a CA"):
        pki.verify()


def test_unknown_critical_extension_is_rejected() -> None:
    pki = PKI(critical_unknown=True)
    with pytest.raises(X509Error, match="unknown critical"):
        pki.verify()


def test_chain_to_an_unpinned_root_is_rejected() -> None:
    pki = PKI()
    other = PKI()
    with pytest.raises(X509Error):
        verify_chain(pki.leaf, [pki.ca, pki.root], roots=[other.root], at=PKI.AT)


def test_expired_leaf_is_rejected() -> None:
    pki = PKI()
    with pytest.raises(X509Error, match="expired"):
        verify_chain(pki.leaf, [pki.ca], roots=[pki.root], at=PKI.T0 + timedelta(days=4000))


def test_load_certificates_reports_garbage() -> None:
    with pytest.raises(X509Error, match="cannot parse"):
        load_certificates(b"not a certificate")
