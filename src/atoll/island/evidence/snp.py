"""AMD SEV-SNP attestation report verification (report v2..v5, VCEK, Milan/Genoa).

Why: an SEV-SNP confidential VM proves its launch MEASUREMENT, HOST_DATA and
the 64 bytes of REPORT_DATA it asked for with a report signed by the chip's
VCEK (ECDSA P-384), whose certificate chains VCEK <- ASK <- ARK (RSA-PSS,
SHA-384) to AMD's per-product root. This module verifies that at a pinned time:

1. the report is exactly 1184 bytes (the unsigned reserved tail after the
   signature all zero), version 2..5, signature algorithm 1
   (ECDSA P-384 / SHA-384), signed by a VCEK (VLEK-signed reports are refused);
2. the VCEK chains to a pinned ARK (Milan or Genoa, shipped in
   ``atoll/island/roots/``) through an ASK (supplied, or the shipped one),
   every certificate valid at that time; optional AMD CRLs are checked if given;
3. the signature -- ``r`` and ``s`` little-endian, 72 bytes each at 0x2A0 --
   verifies over bytes 0x000..0x29F under the VCEK's public key;
4. the VCEK's TCB extensions (blSPL, teeSPL, snpSPL, ucodeSPL;
   OIDs 1.3.6.1.4.1.3704.1.3.x) equal the report's REPORTED_TCB, and its hwID
   (1.3.6.1.4.1.3704.1.4) equals CHIP_ID (unless the chip ID is masked, all zeros).

The verdict's ``tcb_status`` spells the reported TCB
(``"bootloader=2 tee=0 snp=5 microcode=68"``): AMD publishes no status
equivalent to Intel's, so policies judge SNP TCB with ``min_svn``
(``bootloader``, ``tee``, ``snp``, ``microcode``). Layout: AMD SEV-SNP ABI
specification (pub. 56860), table "ATTESTATION_REPORT structure"; chain and
extensions: AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS
Interface Specification" (pub. 57230); cross-read with google/go-sev-guest.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources

from atoll.crypto.x509 import (
    Certificate,
    CertificateRevocationList,
    X509Error,
    certificate_summary,
    der_decode,
    der_int,
    extension_value,
    load_certificates,
    not_after,
    subject_common_name,
    verify_chain,
    verify_ecdsa_ints,
)
from atoll.island.verdict import (
    CertificateChainError,
    EvidenceFormatError,
    EvidenceSignatureError,
    TcbError,
    Verdict,
)

__all__ = [
    "SNP_REPORT_SIZE",
    "SnpReport",
    "amd_roots",
    "parse_snp_report",
    "verify_snp_report",
]

SNP_REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
_POLICY_DEBUG_BIT = 19
_AMD_OID = "1.3.6.1.4.1.3704.1"
_TCB_OIDS = {
    "bootloader": f"{_AMD_OID}.3.1",
    "tee": f"{_AMD_OID}.3.2",
    "snp": f"{_AMD_OID}.3.3",
    "microcode": f"{_AMD_OID}.3.8",
}
ROOT_FILES = ("amd_ask_ark_milan.pem", "amd_ask_ark_genoa.pem")


@cache
def amd_roots() -> tuple[tuple[Certificate, ...], tuple[Certificate, ...]]:
    """The shipped AMD chains: ``(ARKs, ASKs)`` for Milan and Genoa."""
    arks: list[Certificate] = []
    asks: list[Certificate] = []
    for name in ROOT_FILES:
        data = resources.files("atoll.island").joinpath("roots", name).read_bytes()
        for cert in load_certificates(data, what=name):
            (arks if cert.subject == cert.issuer else asks).append(cert)
    return tuple(arks), tuple(asks)


@dataclass(frozen=True)
class SnpReport:
    """The fields of an SEV-SNP ATTESTATION_REPORT this verifier uses."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    reported_tcb: bytes
    chip_id: bytes
    committed_tcb: bytes
    launch_tcb: bytes
    signature_r: int
    signature_s: int

    @property
    def debug(self) -> bool:
        """Guest POLICY bit 19: debugging allowed (the host can read guest memory)."""
        return bool(self.policy >> _POLICY_DEBUG_BIT & 1)

    @property
    def signing_key(self) -> int:
        """Bits 2..4 of the key-info word: 0 = VCEK, 1 = VLEK, 7 = none."""
        return self.key_info >> 2 & 0x7

    def tcb(self, which: bytes | None = None) -> dict[str, int]:
        """Milan/Genoa TCB_VERSION fields of ``which`` (default: REPORTED_TCB)."""
        raw = self.reported_tcb if which is None else which
        return {"bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


def parse_snp_report(raw: bytes) -> SnpReport:
    """Parse an SEV-SNP report (exactly 1184 bytes, version 2..5)."""
    if not isinstance(raw, bytes | bytearray):
        raise EvidenceFormatError("SNP report must be bytes", stage="parse")
    raw = bytes(raw)
    if len(raw) != SNP_REPORT_SIZE:
        raise EvidenceFormatError(
            f"SNP report must be {SNP_REPORT_SIZE} bytes, got {len(raw)}",
            stage="parse",
            field="length",
        )
    version, guest_svn, policy = struct.unpack_from("<IIQ", raw, 0x00)
    if version not in (2, 3, 4, 5):
        raise EvidenceFormatError(
            f"unsupported SNP report version {version} (2..5 supported)",
            stage="parse",
            field="version",
        )
    if any(raw[0x330:SNP_REPORT_SIZE]):
        raise EvidenceFormatError(
            "reserved bytes after the signature (0x330..0x49F) must be zero",
            stage="parse",
            field="signature",
        )
    vmpl, algo = struct.unpack_from("<II", raw, 0x30)
    (platform_info,) = struct.unpack_from("<Q", raw, 0x40)
    (key_info,) = struct.unpack_from("<I", raw, 0x48)
    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=raw[0x10:0x20],
        image_id=raw[0x20:0x30],
        vmpl=vmpl,
        signature_algo=algo,
        current_tcb=raw[0x38:0x40],
        platform_info=platform_info,
        key_info=key_info,
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        reported_tcb=raw[0x180:0x188],
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=raw[0x1E0:0x1E8],
        launch_tcb=raw[0x1F0:0x1F8],
        signature_r=int.from_bytes(raw[0x2A0:0x2E8], "little"),
        signature_s=int.from_bytes(raw[0x2E8:0x330], "little"),
    )


def _ext_int(cert: Certificate, oid: str, name: str) -> int:
    raw = extension_value(cert, oid)
    if raw is None:
        raise CertificateChainError(f"VCEK lacks the {name} extension ({oid})", stage="vcek-tcb")
    try:
        tag, content, end = der_decode(raw)
        if tag != 0x02 or end != len(raw):
            raise X509Error("not an INTEGER")
        return der_int(content)
    except X509Error as exc:
        raise CertificateChainError(
            f"VCEK {name} extension is malformed ({exc.reason})", stage="vcek-tcb"
        ) from None


def _hwid(cert: Certificate) -> bytes | None:
    """The VCEK hwID: 64 raw bytes (as AMD KDS issues it) or a DER OCTET STRING of them."""
    raw = extension_value(cert, f"{_AMD_OID}.4")
    if raw is None or len(raw) == 64:
        return raw
    try:
        tag, content, end = der_decode(raw)
    except X509Error:
        return raw
    return content if tag == 0x04 and end == len(raw) else raw


def _product(cert: Certificate) -> str | None:
    raw = extension_value(cert, f"{_AMD_OID}.2")
    if raw is None:
        return None
    try:
        _tag, content, _end = der_decode(raw)
    except X509Error:
        return None
    return content.decode("ascii", "replace")


def verify_snp_report(
    report: bytes,
    vcek: bytes,
    cert_chain: bytes | None = None,
    *,
    at: datetime | None = None,
    roots: Sequence[Certificate] | None = None,
    crls: Sequence[CertificateRevocationList] = (),
) -> Verdict:
    """Verify an SEV-SNP report with its VCEK (DER or PEM) at ``at`` (default: now, UTC).

    ``cert_chain`` optionally supplies ASK/ARK PEM (e.g. from AMD KDS
    ``cert_chain``); only an ARK byte-identical to a pinned one is trusted.
    ``roots`` replaces the pinned ARKs (tests with a private PKI only).
    """
    when = (datetime.now(UTC) if at is None else at).astimezone(UTC)
    parsed = parse_snp_report(report)
    if parsed.signature_algo != 1:
        raise EvidenceFormatError(
            f"unsupported signature algorithm {parsed.signature_algo} (1 = ECDSA P-384)",
            stage="parse",
            field="signature_algo",
        )
    if parsed.signing_key != 0:
        raise EvidenceFormatError(
            f"report is signed by key type {parsed.signing_key}; only VCEK (0) is supported",
            stage="parse",
            field="signing_key",
        )
    try:
        leaf = load_certificates(vcek, what="VCEK")
        extra = load_certificates(cert_chain, what="ASK/ARK chain") if cert_chain else []
    except X509Error as exc:
        raise EvidenceFormatError(exc.reason, stage="vcek-chain", field="vcek") from None
    if roots is None:
        arks, asks = amd_roots()
        pinned: Sequence[Certificate] = arks
        pool = [*leaf[1:], *extra, *asks]
    else:
        pinned = roots
        pool = [*leaf[1:], *extra]
    try:
        path = verify_chain(leaf[0], pool, roots=pinned, at=when, crls=crls)
    except X509Error as exc:
        raise CertificateChainError(f"VCEK chain: {exc.reason}", stage="vcek-chain") from None
    vcek_cert = path[0]
    if subject_common_name(vcek_cert) != "SEV-VCEK":
        raise CertificateChainError(
            f"leaf is {subject_common_name(vcek_cert)!r}, not an SEV-VCEK", stage="vcek-chain"
        )
    try:
        ok = verify_ecdsa_ints(
            vcek_cert, parsed.signature_r, parsed.signature_s, parsed.raw[:SIGNED_SIZE]
        )
    except X509Error as exc:
        raise EvidenceSignatureError(exc.reason, stage="report-signature") from None
    if not ok:
        raise EvidenceSignatureError(
            "report signature does not verify under the VCEK",
            stage="report-signature",
            field="signature",
        )
    reported = parsed.tcb()
    for name, oid in _TCB_OIDS.items():
        cert_value = _ext_int(vcek_cert, oid, name)
        if cert_value != reported[name]:
            raise TcbError(
                f"REPORTED_TCB {name} = {reported[name]} but the VCEK is for {cert_value}",
                stage="vcek-tcb",
                field=name,
            )
    hwid = _hwid(vcek_cert)
    chip_masked = not any(parsed.chip_id)
    if not chip_masked and (hwid is None or hwid != parsed.chip_id):
        raise TcbError("CHIP_ID does not match the VCEK hwID", stage="vcek-tcb", field="chip_id")
    return Verdict(
        tee="sev-snp",
        measurements={
            "measurement": parsed.measurement.hex(),
            "host_data": parsed.host_data.hex(),
            "id_key_digest": parsed.id_key_digest.hex(),
            "author_key_digest": parsed.author_key_digest.hex(),
            "family_id": parsed.family_id.hex(),
            "image_id": parsed.image_id.hex(),
        },
        report_data=parsed.report_data,
        tcb_status=" ".join(f"{k}={v}" for k, v in reported.items()),
        advisories=(),
        debug=parsed.debug,
        svn={
            "guest_svn": parsed.guest_svn,
            "vmpl": parsed.vmpl,
            "abi_major": parsed.policy >> 8 & 0xFF,
            "abi_minor": parsed.policy & 0xFF,
            "report_version": parsed.version,
            **reported,
        },
        verified_at=when,
        collateral_expires=min(not_after(c) for c in path),
        simulated=False,
        details={
            "product": _product(vcek_cert),
            "policy": f"{parsed.policy:016x}",
            "platform_info": f"{parsed.platform_info:016x}",
            "current_tcb": parsed.tcb(parsed.current_tcb),
            "committed_tcb": parsed.tcb(parsed.committed_tcb),
            "launch_tcb": parsed.tcb(parsed.launch_tcb),
            "report_id": parsed.report_id.hex(),
            "chip_id_masked": chip_masked,
            "certificates": [certificate_summary(c) for c in path],
        },
    )
