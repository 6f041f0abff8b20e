"""Intel DCAP ECDSA quotes (v3, v4, v5) and their collateral: parsing and appraisal.

Why: SGX and TDX quotes share one envelope (header, signed body, ECDSA
signature data with the QE report and the PCK certificate chain) and one
collateral set (PCK CRLs, TCB info, QE identity, all signed under the Intel
SGX Root CA). This module parses that envelope with every length checked
before use, and runs the shared DCAP appraisal at a pinned time:

1. TCB info: issuer chain to the pinned Intel root (with the root CRL), ECDSA
   signature over the exact ``tcbInfo`` JSON text, ``issueDate <= t <= nextUpdate``;
2. QE identity: the same checks for the ``enclaveIdentity`` JSON;
3. PCK chain from the quote: PCK leaf -> PCK Platform/Processor CA -> Intel
   root, validity windows, root CRL and PCK CRL (both required);
4. QE report signature by the PCK key;
5. QE report binding: ``QE.REPORTDATA == SHA-256(attestation key || QE auth data) || 0^32``;
6. QE identity match (MRSIGNER, ISVPRODID, masked MISCSELECT / ATTRIBUTES)
   and QE TCB level from its ISVSVN;
7. quote signature by the attestation key over header + body (+ the v5 body
   descriptor);
8. platform TCB: the PCK certificate's SGX extension (FMSPC, PCE-ID, 16 CPU SVN
   components, PCESVN) against TCB info levels (plus TEE_TCB_SVN and the TDX
   module identity for TDX) -> status and advisories; no match is a rejection;
9. status convergence of platform, TDX module and QE (Intel QVL rules).

The result is a :class:`DcapAppraisal`; :mod:`~atoll.island.evidence.sgx` and
:mod:`~atoll.island.evidence.tdx` turn it into a :class:`Verdict`. Sources:
Intel SGX DCAP ``sgx_quote_3.h`` / ``_4.h`` / ``_5.h``, Intel PCS API v4 (TCB
info v3, enclave identity v2), Intel SGX PCK Certificate and CRL profile
(OID 1.2.840.113741.1.13.1), and Phala-Network/dcap-qvl as cross-check.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from atoll.crypto import constant_time_equal, sha256_digest
from atoll.crypto.x509 import (
    Certificate,
    CertificateRevocationList,
    X509Error,
    certificate_summary,
    crl_next_update,
    der_children,
    der_decode,
    der_int,
    der_oid,
    ec_public_key_from_xy,
    extension_value,
    load_certificates,
    load_crl,
    not_after,
    subject_common_name,
    verify_chain,
    verify_ecdsa_raw,
)
from atoll.island.verdict import (
    CertificateChainError,
    CollateralError,
    EvidenceFormatError,
    EvidenceSignatureError,
    TcbError,
)

__all__ = [
    "INTEL_QE_VENDOR_ID",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "DcapAppraisal",
    "DcapCollateral",
    "PckExtension",
    "Quote",
    "SgxReportBody",
    "TdReportBody",
    "appraise_quote",
    "check_quote_integrity",
    "intel_root",
    "parse_quote",
]

TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATTESTATION_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
_BODY_SIZES = {1: SGX_REPORT_SIZE, 2: TD_REPORT10_SIZE, 3: TD_REPORT15_SIZE}
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
INTEL_ROOT_FILE = "intel_sgx_root_ca.der"
#: SHA-256 of the Intel SGX Root CA (production) certificate DER.
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


@cache
def intel_root() -> Certificate:
    """The pinned Intel SGX Root CA (shipped in ``atoll/island/roots/``)."""
    data = resources.files("atoll.island").joinpath("roots", INTEL_ROOT_FILE).read_bytes()
    (cert,) = load_certificates(data, what=INTEL_ROOT_FILE)
    from atoll.crypto.x509 import fingerprint_sha256

    if fingerprint_sha256(cert) != INTEL_ROOT_SHA256:
        raise CertificateChainError(
            "shipped Intel root does not have the pinned fingerprint", stage="roots"
        )
    return cert


# --- parsing ----------------------------------------------------------------------------


class _Reader:
    """Bounds-checked little-endian reader over the quote bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise EvidenceFormatError(
                f"quote is truncated: {what} needs {size} bytes at offset {self.pos}, "
                f"{max(len(self.data) - self.pos, 0)} left",
                stage="parse",
                field=what,
            )
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


@dataclass(frozen=True)
class SgxReportBody:
    """An SGX REPORT body (384 bytes): the ISV enclave's or the QE's."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @classmethod
    def parse(cls, raw: bytes) -> SgxReportBody:
        """Parse a 384-byte SGX report body."""
        if len(raw) != SGX_REPORT_SIZE:
            raise EvidenceFormatError("SGX report body must be 384 bytes", stage="parse")
        return cls(
            raw=raw,
            cpu_svn=raw[0:16],
            misc_select=int.from_bytes(raw[16:20], "little"),
            isv_ext_prod_id=raw[32:48],
            attributes=raw[48:64],
            mr_enclave=raw[64:96],
            mr_signer=raw[128:160],
            config_id=raw[192:256],
            isv_prod_id=int.from_bytes(raw[256:258], "little"),
            isv_svn=int.from_bytes(raw[258:260], "little"),
            config_svn=int.from_bytes(raw[260:262], "little"),
            isv_family_id=raw[304:320],
            report_data=raw[320:384],
        )

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.FLAGS bit 1 (DEBUG)."""
        return bool(self.attributes[0] & 0x02)


@dataclass(frozen=True)
class TdReportBody:
    """A TD report body: 1.0 (584 bytes) or 1.5 (648 bytes, quote v5 type 3)."""

    raw: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mr_service_td: bytes | None

    @classmethod
    def parse(cls, raw: bytes) -> TdReportBody:
        """Parse a TD report 1.0 or 1.5 body."""
        if len(raw) not in (TD_REPORT10_SIZE, TD_REPORT15_SIZE):
            raise EvidenceFormatError("TD report body must be 584 or 648 bytes", stage="parse")
        v15 = len(raw) == TD_REPORT15_SIZE
        return cls(
            raw=raw,
            tee_tcb_svn=raw[0:16],
            mr_seam=raw[16:64],
            mr_signer_seam=raw[64:112],
            seam_attributes=raw[112:120],
            td_attributes=raw[120:128],
            xfam=raw[128:136],
            mr_td=raw[136:184],
            mr_config_id=raw[184:232],
            mr_owner=raw[232:280],
            mr_owner_config=raw[280:328],
            rtmrs=(raw[328:376], raw[376:424], raw[424:472], raw[472:520]),
            report_data=raw[520:584],
            tee_tcb_svn2=raw[584:600] if v15 else None,
            mr_service_td=raw[600:648] if v15 else None,
        )

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES.TUD.DEBUG (bit 0)."""
        return bool(self.td_attributes[0] & 0x01)

    @property
    def sept_ve_disable(self) -> bool:
        """TDATTRIBUTES bit 28 (SEPT_VE_DISABLE)."""
        return bool(int.from_bytes(self.td_attributes, "little") >> 28 & 1)


@dataclass(frozen=True)
class Quote:
    """A parsed DCAP quote. ``signed`` is the exact byte range the attestation key signed."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int
    body: SgxReportBody | TdReportBody
    signed: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing_bytes: int


def parse_quote(raw: bytes) -> Quote:
    """Parse a DCAP ECDSA quote v3/v4/v5; raise :class:`EvidenceFormatError` on any defect.

    Every length is checked before use; the nested certification data must be
    consumed exactly. Bytes after the declared signature data (quote buffers
    are often padded) are tolerated only if they are all zero.
    """
    if not isinstance(raw, bytes | bytearray):
        raise EvidenceFormatError("quote must be bytes", stage="parse")
    raw = bytes(raw)
    r = _Reader(raw)
    version = r.u16("header.version")
    key_type = r.u16("header.attestation_key_type")
    tee_type = r.u32("header.tee_type")
    qe_svn = r.u16("header.qe_svn")
    pce_svn = r.u16("header.pce_svn")
    vendor = r.take(16, "header.qe_vendor_id")
    user_data = r.take(20, "header.user_data")
    if version not in (3, 4, 5):
        raise EvidenceFormatError(
            f"unsupported quote version {version} (3, 4, 5 supported)",
            stage="parse",
            field="header.version",
        )
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise EvidenceFormatError(
            f"unsupported attestation key type {key_type} (2 = ECDSA P-256 supported)",
            stage="parse",
            field="header.attestation_key_type",
        )
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX) or (version == 3 and tee_type != TEE_TYPE_SGX):
        raise EvidenceFormatError(
            f"unsupported TEE type 0x{tee_type:x} for quote v{version}",
            stage="parse",
            field="header.tee_type",
        )
    if version == 5:
        body_type = r.u16("body_descriptor.type")
        body_size = r.u32("body_descriptor.size")
        if body_type not in _BODY_SIZES or _BODY_SIZES[body_type] != body_size:
            raise EvidenceFormatError(
                f"unsupported v5 body type {body_type} / size {body_size}",
                stage="parse",
                field="body_descriptor",
            )
        if (body_type == 1) != (tee_type == TEE_TYPE_SGX):
            raise EvidenceFormatError(
                f"v5 body type {body_type} does not match TEE type 0x{tee_type:x}",
                stage="parse",
                field="body_descriptor.type",
            )
    else:
        body_type = 1 if tee_type == TEE_TYPE_SGX else 2
        body_size = _BODY_SIZES[body_type]
    body_raw = r.take(body_size, "body")
    body: SgxReportBody | TdReportBody = (
        SgxReportBody.parse(body_raw) if body_type == 1 else TdReportBody.parse(body_raw)
    )
    signed = raw[: r.pos]
    sig_len = r.u32("signature_data_len")
    sig = _Reader(r.take(sig_len, "signature_data"))
    trailing = len(raw) - r.pos
    if any(raw[r.pos :]):
        raise EvidenceFormatError(
            f"{trailing} bytes after the signature data are not zero padding",
            stage="parse",
            field="trailing",
        )
    signature = sig.take(64, "signature_data.signature")
    attestation_key = sig.take(64, "signature_data.attestation_key")
    if version == 3:
        qe_raw, qe_sig, auth, pem = _qe_section(sig, "signature_data")
    else:
        cert_type = sig.u16("signature_data.cert_type")
        cert_size = sig.u32("signature_data.cert_size")
        if cert_type != CERT_TYPE_QE_REPORT:
            raise EvidenceFormatError(
                f"certification data type {cert_type} not supported (need 6 = QE report)",
                stage="parse",
                field="signature_data.cert_type",
            )
        inner = _Reader(sig.take(cert_size, "signature_data.cert_data"))
        qe_raw, qe_sig, auth, pem = _qe_section(inner, "qe_report_cert_data")
        _expect_end(inner, "qe_report_cert_data")
    _expect_end(sig, "signature_data")
    return Quote(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=vendor,
        user_data=user_data,
        body_type=body_type,
        body=body,
        signed=signed,
        signature=signature,
        attestation_key=attestation_key,
        qe_report=SgxReportBody.parse(qe_raw),
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_pem=pem,
        trailing_bytes=trailing,
    )


def _qe_section(r: _Reader, where: str) -> tuple[bytes, bytes, bytes, bytes]:
    qe_raw = r.take(SGX_REPORT_SIZE, f"{where}.qe_report")
    qe_sig = r.take(64, f"{where}.qe_report_signature")
    auth = r.take(r.u16(f"{where}.qe_auth_data_len"), f"{where}.qe_auth_data")
    cert_type = r.u16(f"{where}.pck_cert_type")
    cert_size = r.u32(f"{where}.pck_cert_size")
    if cert_type != CERT_TYPE_PCK_CHAIN:
        raise EvidenceFormatError(
            f"certification data type {cert_type} not supported (need 5 = PEM PCK chain)",
            stage="parse",
            field=f"{where}.pck_cert_type",
        )
    pem = r.take(cert_size, f"{where}.pck_cert_chain")
    return qe_raw, qe_sig, auth, pem


def _expect_end(r: _Reader, where: str) -> None:
    if r.pos != len(r.data):
        raise EvidenceFormatError(
            f"{len(r.data) - r.pos} unexpected bytes at the end of {where}",
            stage="parse",
            field=where,
        )


# --- collateral -------------------------------------------------------------------------

_COLLATERAL_KEYS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
_OPTIONAL_COLLATERAL_KEYS = frozenset({"pck_certificate_chain"})


def _hex_or_bytes(value: Any, key: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise EvidenceFormatError(
        f"collateral member {key!r} must be hex", stage="collateral", field=key
    )


@dataclass(frozen=True)
class DcapCollateral:
    """The dcap-qvl ``QuoteCollateralV3`` JSON layout (Intel PCS v4 responses)."""

    pck_crl_issuer_chain: bytes
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: bytes
    tcb_info: bytes
    tcb_info_signature: bytes
    qe_identity_issuer_chain: bytes
    qe_identity: bytes
    qe_identity_signature: bytes

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any]) -> DcapCollateral:
        """Parse the JSON collateral (bytes, text or an already-decoded mapping)."""
        if isinstance(data, bytes | str):
            try:
                doc = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise EvidenceFormatError(
                    f"collateral is not JSON: {exc}", stage="collateral"
                ) from None
        else:
            doc = data
        if not isinstance(doc, Mapping):
            raise EvidenceFormatError("collateral must be a JSON object", stage="collateral")
        missing = [k for k in _COLLATERAL_KEYS if k not in doc]
        if missing:
            raise EvidenceFormatError(
                f"collateral lacks {missing}", stage="collateral", field=missing[0]
            )
        unknown = sorted(set(doc) - set(_COLLATERAL_KEYS) - _OPTIONAL_COLLATERAL_KEYS)
        if unknown:
            raise EvidenceFormatError(
                f"collateral has unknown member(s) {unknown}", stage="collateral", field=unknown[0]
            )
        text: dict[str, bytes] = {}
        for key in (
            "pck_crl_issuer_chain",
            "tcb_info_issuer_chain",
            "tcb_info",
            "qe_identity_issuer_chain",
            "qe_identity",
        ):
            value = doc[key]
            if not isinstance(value, str):
                raise EvidenceFormatError(
                    f"collateral member {key!r} must be a string", stage="collateral", field=key
                )
            text[key] = value.encode("utf-8")
        return cls(
            root_ca_crl=_hex_or_bytes(doc["root_ca_crl"], "root_ca_crl"),
            pck_crl=_hex_or_bytes(doc["pck_crl"], "pck_crl"),
            tcb_info_signature=_hex_or_bytes(doc["tcb_info_signature"], "tcb_info_signature"),
            qe_identity_signature=_hex_or_bytes(
                doc["qe_identity_signature"], "qe_identity_signature"
            ),
            **text,
        )


# --- the PCK certificate's SGX extension -----------------------------------------------


@dataclass(frozen=True)
class PckExtension:
    """Fields of the Intel SGX extension (OID 1.2.840.113741.1.13.1) of a PCK certificate."""

    ppid: bytes
    tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    extras: Mapping[str, Any] = field(default_factory=dict)


def parse_pck_extension(cert: Certificate) -> PckExtension:
    """Extract FMSPC, PCE-ID, the TCB components and PCESVN from a PCK certificate."""
    raw = extension_value(cert, SGX_EXTENSION_OID)
    if raw is None:
        raise CertificateChainError(
            "PCK certificate has no Intel SGX extension", stage="pck-chain", field="sgx-extension"
        )
    try:
        tag, content, end = der_decode(raw)
        if tag != 0x30 or end != len(raw):
            raise X509Error("SGX extension is not one SEQUENCE")
        items: dict[str, tuple[int, bytes]] = {}
        for seq_tag, seq in der_children(content):
            if seq_tag != 0x30:
                raise X509Error("SGX extension entry is not a SEQUENCE")
            entry = der_children(seq)
            if len(entry) != 2 or entry[0][0] != 0x06:
                raise X509Error("SGX extension entry is not (OID, value)")
            items[der_oid(entry[0][1])] = entry[1]
        base = SGX_EXTENSION_OID
        comps: dict[str, int | bytes] = {}
        for _tag, sub in der_children(_need(items, f"{base}.2", 0x30)):
            (_oid_tag, oid_raw), (comp_tag, comp) = der_children(sub)
            comps[der_oid(oid_raw)] = der_int(comp) if comp_tag == 0x02 else comp
        components = tuple(int(comps[f"{base}.2.{i}"]) for i in range(1, 17))
        pce_svn = int(comps[f"{base}.2.17"])
        cpu_svn = comps[f"{base}.2.18"]
        extras: dict[str, Any] = {}
        if f"{base}.7" in items:
            for _tag, sub in der_children(items[f"{base}.7"][1]):
                (_oid_tag, oid_raw), (_flag_tag, flag) = der_children(sub)
                name = {"1": "dynamic_platform", "2": "cached_keys", "3": "smt_enabled"}.get(
                    der_oid(oid_raw).rsplit(".", 1)[-1], der_oid(oid_raw)
                )
                extras[name] = bool(flag and flag[0])
        return PckExtension(
            ppid=_need(items, f"{base}.1", 0x04),
            tcb_components=components,
            pce_svn=pce_svn,
            cpu_svn=bytes(cpu_svn) if isinstance(cpu_svn, bytes) else b"",
            pce_id=_need(items, f"{base}.3", 0x04),
            fmspc=_need(items, f"{base}.4", 0x04),
            sgx_type=der_int(_need(items, f"{base}.5", 0x0A)),
            extras=extras,
        )
    except (X509Error, KeyError, ValueError, IndexError) as exc:
        raise CertificateChainError(
            f"PCK certificate SGX extension is malformed ({exc})",
            stage="pck-chain",
            field="sgx-extension",
        ) from None


def _need(items: Mapping[str, tuple[int, bytes]], oid: str, tag: int) -> bytes:
    found = items.get(oid)
    if found is None or found[0] != tag:
        raise X509Error(f"SGX extension lacks {oid}")
    return found[1]


# --- appraisal --------------------------------------------------------------------------


@dataclass(frozen=True)
class DcapAppraisal:
    """What the DCAP appraisal established about a quote (input to the verdicts)."""

    quote: Quote
    status: str
    advisories: tuple[str, ...]
    platform_status: str
    platform_advisories: tuple[str, ...]
    qe_status: str
    qe_advisories: tuple[str, ...]
    tdx_module_status: str | None
    pck: PckExtension
    tcb_info: Mapping[str, Any]
    tcb_date: str
    collateral_expires: datetime
    verified_at: datetime
    certificates: Mapping[str, Any]


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise EvidenceFormatError(f"{what} must be an ISO-8601 time", stage="collateral")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EvidenceFormatError(f"{what} is not an ISO-8601 time", stage="collateral") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _chain_error(exc: X509Error, stage: str, what: str) -> CertificateChainError:
    return CertificateChainError(f"{what}: {exc.reason}", stage=stage)


def _signed_json(
    text: bytes,
    signature: bytes,
    chain_pem: bytes,
    *,
    stage: str,
    name: str,
    member: str,
    signer_cn: str,
    roots: Sequence[Certificate],
    root_crl: CertificateRevocationList,
    at: datetime,
) -> tuple[dict[str, Any], datetime, list[Certificate]]:
    try:
        certs = load_certificates(chain_pem, what=f"{stage} issuer chain")
        path = verify_chain(
            certs[0], certs[1:], roots=roots, at=at, crls=[root_crl], require_crls=True
        )
    except X509Error as exc:
        raise _chain_error(exc, stage, f"{name} issuer chain") from None
    if subject_common_name(path[0]) != signer_cn:
        raise CertificateChainError(
            f"{name} is signed by {subject_common_name(path[0])!r}, expected {signer_cn!r}",
            stage=stage,
        )
    if not verify_ecdsa_raw(path[0], signature, text):
        raise EvidenceSignatureError(
            f"{name} signature does not verify", stage=stage, field=f"{member}_signature"
        )
    try:
        doc = json.loads(text)
    except ValueError:
        raise EvidenceFormatError(f"{name} is not JSON", stage=stage, field=member) from None
    if not isinstance(doc, dict):
        raise EvidenceFormatError(f"{name} is not a JSON object", stage=stage, field=member)
    issued = _parse_time(doc.get("issueDate"), f"{name}.issueDate")
    next_update = _parse_time(doc.get("nextUpdate"), f"{name}.nextUpdate")
    if at < issued:
        raise CollateralError(
            f"{name} is not yet valid at {at.isoformat()} (issued {issued.isoformat()})",
            stage=stage,
            field="issueDate",
        )
    if at > next_update:
        raise CollateralError(
            f"{name} expired at {next_update.isoformat()} (checked at {at.isoformat()})",
            stage=stage,
            field="nextUpdate",
        )
    return doc, next_update, path


def _hex_field(doc: Mapping[str, Any], key: str, size: int, stage: str) -> bytes:
    value = doc.get(key)
    try:
        out = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        out = None
    if out is None or len(out) != size:
        raise EvidenceFormatError(f"{key} must be {size} hex bytes", stage=stage, field=key)
    return out


def _masked_equal(actual: bytes, expected: bytes, mask: bytes) -> bool:
    return all((a & m) == (e & m) for a, e, m in zip(actual, expected, mask, strict=True))


def _levels(doc: Mapping[str, Any], stage: str) -> list[Mapping[str, Any]]:
    levels = doc.get("tcbLevels")
    if not isinstance(levels, list) or not all(isinstance(level, dict) for level in levels):
        raise EvidenceFormatError("tcbLevels must be a list of objects", stage=stage)
    return levels


def _status_of(level: Mapping[str, Any], stage: str) -> tuple[str, tuple[str, ...], str]:
    status = level.get("tcbStatus")
    if not isinstance(status, str):
        raise EvidenceFormatError("TCB level lacks tcbStatus", stage=stage)
    advisories = level.get("advisoryIDs", [])
    if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
        raise EvidenceFormatError("advisoryIDs must be a list of strings", stage=stage)
    return status, tuple(advisories), str(level.get("tcbDate", ""))


def _svns(components: Any, stage: str, what: str) -> list[int]:
    if not isinstance(components, list) or len(components) != 16:
        raise EvidenceFormatError(f"{what} must list 16 components", stage=stage)
    out: list[int] = []
    for comp in components:
        svn = comp.get("svn") if isinstance(comp, dict) else None
        if not isinstance(svn, int) or isinstance(svn, bool):
            raise EvidenceFormatError(f"{what} component lacks an integer svn", stage=stage)
        out.append(svn)
    return out


def _converge_qe(platform: str, qe: str) -> str:
    # Intel QVL convergeTcbStatusWithQeTcbStatus.
    if qe == "Revoked":
        return "Revoked"
    if qe == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform


def _merge(*groups: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return tuple(seen)


def check_quote_integrity(
    quote: Quote,
    *,
    at: datetime,
    roots: Sequence[Certificate] | None = None,
    crls: Sequence[CertificateRevocationList] = (),
    require_crls: bool = False,
) -> tuple[list[Certificate], PckExtension]:
    """Steps 3, 4, 5 and 7: PCK chain, QE report signature and binding, quote signature.

    Returns the verified PCK path (leaf first) and its SGX extension. Without
    CRLs this is the collateral-free check used for quotes whose collateral
    is not available; :func:`appraise_quote` calls it with both CRLs required.
    """
    roots = [intel_root()] if roots is None else list(roots)
    if not constant_time_equal(quote.qe_vendor_id, INTEL_QE_VENDOR_ID):
        raise EvidenceFormatError(
            "QE vendor ID is not Intel's", stage="parse", field="header.qe_vendor_id"
        )
    try:
        certs = load_certificates(quote.pck_chain_pem, what="PCK certificate chain")
        path = verify_chain(
            certs[0], certs[1:], roots=roots, at=at, crls=crls, require_crls=require_crls
        )
    except X509Error as exc:
        raise _chain_error(exc, "pck-chain", "PCK certificate chain") from None
    if subject_common_name(path[0]) != "Intel SGX PCK Certificate":
        raise CertificateChainError(
            f"leaf is {subject_common_name(path[0])!r}, not an Intel SGX PCK Certificate",
            stage="pck-chain",
        )
    pck = parse_pck_extension(path[0])
    if not verify_ecdsa_raw(path[0], quote.qe_report_signature, quote.qe_report.raw):
        raise EvidenceSignatureError(
            "QE report signature does not verify under the PCK key",
            stage="qe-report-signature",
            field="qe_report_signature",
        )
    expected = sha256_digest(quote.attestation_key + quote.qe_auth_data) + bytes(32)
    if not constant_time_equal(quote.qe_report.report_data, expected):
        raise EvidenceSignatureError(
            "QE report data is not SHA-256(attestation key || QE auth data) || zeros",
            stage="qe-report-binding",
            field="qe_report.report_data",
        )
    try:
        key = ec_public_key_from_xy(quote.attestation_key, curve="P-256")
    except X509Error as exc:
        raise EvidenceSignatureError(
            f"attestation key: {exc.reason}", stage="quote-signature", field="attestation_key"
        ) from None
    if not verify_ecdsa_raw(key, quote.signature, quote.signed):
        raise EvidenceSignatureError(
            "quote signature does not verify under the attestation key",
            stage="quote-signature",
            field="signature",
        )
    return path, pck


def appraise_quote(
    raw: bytes | Quote,
    collateral: DcapCollateral,
    *,
    at: datetime,
    roots: Sequence[Certificate] | None = None,
) -> DcapAppraisal:
    """Run the full DCAP appraisal (steps 1–9 of the module docstring) at time ``at``."""
    if at.tzinfo is None:
        raise CollateralError("verification time must be timezone-aware", stage="time")
    at = at.astimezone(UTC)
    quote = raw if isinstance(raw, Quote) else parse_quote(raw)
    roots = [intel_root()] if roots is None else list(roots)
    is_tdx = quote.tee_type == TEE_TYPE_TDX
    try:
        root_crl = load_crl(collateral.root_ca_crl, what="root CA CRL")
        pck_crl = load_crl(collateral.pck_crl, what="PCK CRL")
    except X509Error as exc:
        raise EvidenceFormatError(exc.reason, stage="collateral", field="crl") from None

    # 1. TCB info, 2. QE identity (chains, signatures, windows).
    tcb_info, tcb_next, tcb_path = _signed_json(
        collateral.tcb_info,
        collateral.tcb_info_signature,
        collateral.tcb_info_issuer_chain,
        stage="tcb-info",
        name="TCB info",
        member="tcb_info",
        signer_cn="Intel SGX TCB Signing",
        roots=roots,
        root_crl=root_crl,
        at=at,
    )
    qe_identity, qe_next, qe_path = _signed_json(
        collateral.qe_identity,
        collateral.qe_identity_signature,
        collateral.qe_identity_issuer_chain,
        stage="qe-identity",
        name="QE identity",
        member="qe_identity",
        signer_cn="Intel SGX TCB Signing",
        roots=roots,
        root_crl=root_crl,
        at=at,
    )
    # The PCK CRL's own issuer chain must also lead to the pinned root.
    try:
        crl_chain = load_certificates(collateral.pck_crl_issuer_chain, what="PCK CRL issuer chain")
        verify_chain(
            crl_chain[0], crl_chain[1:], roots=roots, at=at, crls=[root_crl], require_crls=True
        )
    except X509Error as exc:
        raise _chain_error(exc, "pck-crl", "PCK CRL issuer chain") from None
    if pck_crl.issuer != crl_chain[0].subject:
        raise CertificateChainError(
            "PCK CRL is not issued by the first certificate of pck_crl_issuer_chain",
            stage="pck-crl",
        )

    # 3-5, 7: PCK chain with both CRLs, QE report signature and binding, quote signature.
    pck_path, pck = check_quote_integrity(
        quote, at=at, roots=roots, crls=[root_crl, pck_crl], require_crls=True
    )

    # 6. QE identity.
    expected_id = "TD_QE" if is_tdx else "QE"
    if qe_identity.get("id") != expected_id or qe_identity.get("version") != 2:
        raise CollateralError(
            f"QE identity is {qe_identity.get('id')!r} v{qe_identity.get('version')}, "
            f"expected {expected_id!r} v2",
            stage="qe-identity",
            field="id",
        )
    qe = quote.qe_report
    stage = "qe-identity"
    if not constant_time_equal(qe.mr_signer, _hex_field(qe_identity, "mrsigner", 32, stage)):
        raise TcbError("QE MRSIGNER does not match the QE identity", stage=stage, field="mrsigner")
    if qe.isv_prod_id != qe_identity.get("isvprodid"):
        raise TcbError(
            "QE ISVPRODID does not match the QE identity", stage=stage, field="isvprodid"
        )
    misc = qe.misc_select.to_bytes(4, "little")
    misc_expected = _hex_field(qe_identity, "miscselect", 4, stage)[::-1]
    misc_mask = _hex_field(qe_identity, "miscselectMask", 4, stage)[::-1]
    if not _masked_equal(misc, misc_expected, misc_mask):
        raise TcbError(
            "QE MISCSELECT does not match the QE identity", stage=stage, field="miscselect"
        )
    if not _masked_equal(
        qe.attributes,
        _hex_field(qe_identity, "attributes", 16, stage),
        _hex_field(qe_identity, "attributesMask", 16, stage),
    ):
        raise TcbError(
            "QE ATTRIBUTES do not match the QE identity", stage=stage, field="attributes"
        )
    qe_status: tuple[str, tuple[str, ...], str] | None = None
    for level in _levels(qe_identity, stage):
        tcb = level.get("tcb")
        isvsvn = tcb.get("isvsvn") if isinstance(tcb, dict) else None
        if not isinstance(isvsvn, int):
            raise EvidenceFormatError("QE TCB level lacks isvsvn", stage=stage)
        if qe.isv_svn >= isvsvn:
            qe_status = _status_of(level, stage)
            break
    if qe_status is None:
        raise TcbError(
            f"QE ISVSVN {qe.isv_svn} is below every QE identity TCB level (revoked QE)",
            stage=stage,
            field="isvsvn",
        )

    # 8. Platform TCB level.
    stage = "tcb-info"
    expected_tcb_id = "TDX" if is_tdx else "SGX"
    if tcb_info.get("id") != expected_tcb_id or tcb_info.get("version") != 3:
        raise CollateralError(
            f"TCB info is {tcb_info.get('id')!r} v{tcb_info.get('version')}, "
            f"expected {expected_tcb_id!r} v3",
            stage=stage,
            field="id",
        )
    if tcb_info.get("tcbType", 0) != 0:
        raise CollateralError("unsupported TCB info tcbType", stage=stage, field="tcbType")
    if not constant_time_equal(_hex_field(tcb_info, "fmspc", 6, stage), pck.fmspc):
        raise CollateralError(
            f"TCB info FMSPC {tcb_info.get('fmspc')} does not match the PCK certificate's "
            f"{pck.fmspc.hex()}",
            stage=stage,
            field="fmspc",
        )
    if not constant_time_equal(_hex_field(tcb_info, "pceId", 2, stage), pck.pce_id):
        raise CollateralError(
            "TCB info PCE-ID does not match the PCK certificate", stage=stage, field="pceId"
        )
    td = quote.body if isinstance(quote.body, TdReportBody) else None
    module_status: tuple[str, tuple[str, ...]] | None = None
    tdx_start = 0
    if td is not None:
        module_status = _tdx_module(tcb_info, td)
        if td.tee_tcb_svn[1] > 0:
            tdx_start = 2
    platform: tuple[str, tuple[str, ...], str] | None = None
    for level in _levels(tcb_info, stage):
        tcb = level.get("tcb")
        if not isinstance(tcb, dict) or not isinstance(tcb.get("pcesvn"), int):
            raise EvidenceFormatError("TCB level lacks tcb.pcesvn", stage=stage)
        sgx = _svns(tcb.get("sgxtcbcomponents"), stage, "sgxtcbcomponents")
        if any(p < s for p, s in zip(pck.tcb_components, sgx, strict=True)):
            continue
        if pck.pce_svn < tcb["pcesvn"]:
            continue
        if td is not None:
            tdx = _svns(tcb.get("tdxtcbcomponents"), stage, "tdxtcbcomponents")
            if any(td.tee_tcb_svn[i] < tdx[i] for i in range(tdx_start, 16)):
                continue
        platform = _status_of(level, stage)
        break
    if platform is None:
        raise TcbError(
            "No matching TCB level found: the platform TCB is below every level in the TCB info",
            stage="tcb-level",
        )
    status = platform[0]
    advisories: tuple[str, ...] = platform[1]
    if module_status is not None:
        mod, mod_adv = module_status
        if mod == "Revoked":
            status = "Revoked"
        elif mod == "OutOfDate":
            status = _converge_qe(status, "OutOfDate")
        advisories = _merge(advisories, mod_adv)
    status = _converge_qe(status, qe_status[0])
    advisories = _merge(advisories, qe_status[1])

    # Earliest expiry over all collateral and certificates used.
    expiries = [tcb_next, qe_next]
    expiries += [d for d in (crl_next_update(root_crl), crl_next_update(pck_crl)) if d]
    expiries += [not_after(c) for c in (*tcb_path, *qe_path, *pck_path, *crl_chain)]
    return DcapAppraisal(
        quote=quote,
        status=status,
        advisories=advisories,
        platform_status=platform[0],
        platform_advisories=platform[1],
        qe_status=qe_status[0],
        qe_advisories=qe_status[1],
        tdx_module_status=module_status[0] if module_status else None,
        pck=pck,
        tcb_info=tcb_info,
        tcb_date=platform[2],
        collateral_expires=min(expiries),
        verified_at=at,
        certificates={
            "pck": [certificate_summary(c) for c in pck_path],
            "tcb_signing": certificate_summary(tcb_path[0]),
            "tcb_evaluation_data_number": tcb_info.get("tcbEvaluationDataNumber"),
        },
    )


def _tdx_module(tcb_info: Mapping[str, Any], td: TdReportBody) -> tuple[str, tuple[str, ...]]:
    """Check MRSIGNERSEAM / SEAM attributes against the TDX module identity; its TCB status."""
    stage = "tdx-module"
    version = td.tee_tcb_svn[1]
    isvsvn = td.tee_tcb_svn[0]
    if version == 0:
        identity = tcb_info.get("tdxModule")
        name = "tdxModule"
    else:
        name = f"TDX_{version:02X}"
        identities = tcb_info.get("tdxModuleIdentities", [])
        identity = next(
            (i for i in identities if isinstance(i, dict) and i.get("id") == name), None
        )
    if not isinstance(identity, dict):
        raise TcbError(f"TCB info has no TDX module identity {name}", stage=stage, field=name)
    if not constant_time_equal(td.mr_signer_seam, _hex_field(identity, "mrsigner", 48, stage)):
        raise TcbError(
            f"MRSIGNERSEAM does not match TDX module identity {name}", stage=stage, field="mrsigner"
        )
    if not _masked_equal(
        td.seam_attributes,
        _hex_field(identity, "attributes", 8, stage),
        _hex_field(identity, "attributesMask", 8, stage),
    ):
        raise TcbError(
            f"SEAM attributes do not match TDX module identity {name}",
            stage=stage,
            field="attributes",
        )
    if version == 0:
        return "UpToDate", ()
    for level in _levels(identity, stage):
        tcb = level.get("tcb")
        svn = tcb.get("isvsvn") if isinstance(tcb, dict) else None
        if not isinstance(svn, int):
            raise EvidenceFormatError("TDX module TCB level lacks isvsvn", stage=stage)
        if isvsvn >= svn:
            status, advisories, _ = _status_of(level, stage)
            return status, advisories
    raise TcbError(
        f"TDX module SVN {isvsvn} is below every TCB level of {name}", stage=stage, field="isvsvn"
    )
