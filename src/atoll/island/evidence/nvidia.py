"""NVIDIA H100 (Hopper) GPU attestation evidence: SPDM GET_MEASUREMENTS, offline checks only.

Why: a GPU in confidential-computing mode proves its firmware state with an
SPDM 1.1 GET_MEASUREMENTS exchange signed by a per-device key whose
certificate chains to the *NVIDIA Device Identity CA*. A relying party that
wants to know which GPU sits next to an island -- as an **add-on claim**,
never instead of CPU TEE evidence (see :func:`atoll.island.policy.evaluate`)
-- must be able to check that evidence itself, offline, at a pinned time.

Evidence = the concatenation ``request || response`` as NVIDIA's tools emit
it (hex text, e.g. nvtrust ``hopperAttestationReport.txt``; raw bytes are
accepted too); collateral = the device certificate chain as PEM, leaf first
(``hopperCertChain.txt``). This module verifies:

1. **parsing** (DMTF DSP0274 SPDM 1.1, tables "GET_MEASUREMENTS request" and
   "MEASUREMENTS response"): request = version 0x11, code 0xE0, Param1 bit 0
   (signature requested), Param2, 32-byte nonce, SlotIDParam (37 bytes);
   response = version (equal to the request's), code 0x60, Param1, Param2,
   NumberOfBlocks, MeasurementRecordLength (24-bit LE), the measurement
   blocks (Index, MeasurementSpecification = 1 (DMTF), MeasurementSize, then
   DMTF value type and size), the responder nonce, OpaqueLength + NVIDIA's
   opaque TLVs (type, size, value; 16-bit LE each), and exactly a 96-byte
   ECDSA P-384 signature ``r || s`` -- nothing may follow it;
2. **the certificate chain** (:func:`atoll.crypto.x509.verify_chain`): given in
   order (each certificate issued by the next), every issuer signature,
   validity at the pinned time, CA basic constraints / key usage / path
   length, unknown critical extensions, ending at a certificate byte-identical
   to the pinned NVIDIA Device Identity CA shipped in ``atoll/island/roots/``;
3. **the signature**: ECDSA P-384 / SHA-384 by the leaf's key over
   ``request || response`` minus the trailing 96 signature bytes (SPDM 1.1
   signs the L1/L2 transcript of the GET_MEASUREMENTS exchange);
4. **firmware identity binding**: the FWID in the report's opaque data
   (type 20) equals the FWID in the leaf certificate's TCG DICE extension
   (OID 2.23.133.5.4.1), when the report carries one;
5. **nonce binding**: with ``expected_nonce``, the request nonce equals it
   (constant-time); the verdict always carries the nonce as its report data.

Not verified (needs NVIDIA's online services, never claimed): appraisal of
the measurements against NVIDIA's signed Reference Integrity Manifests (RIM
service) and certificate revocation via NVIDIA's OCSP responder. The verdict
therefore says ``tcb_status = "not-appraised"``. Cross-read with
NVIDIA/nvtrust ``local_gpu_verifier`` and confidential-containers/trustee
``deps/verifier/src/nvidia`` (layouts only; no code copied).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from atoll.crypto import constant_time_equal
from atoll.crypto.x509 import (
    Certificate,
    EcPublicKey,
    X509Error,
    certificate_der,
    certificate_summary,
    der_decode,
    der_oid,
    extension_value,
    fingerprint_sha256,
    load_certificates,
    not_after,
    subject_common_name,
    verify_chain,
    verify_ecdsa_raw,
)
from atoll.island.verdict import (
    GPU_NONCE_SIZE,
    CertificateChainError,
    EvidenceFormatError,
    EvidenceSignatureError,
    NonceMismatchError,
    Verdict,
)

__all__ = [
    "NVIDIA_ROOT_FILE",
    "NVIDIA_ROOT_SHA256",
    "MeasurementBlock",
    "NvidiaReport",
    "decode_report_text",
    "looks_like_nvidia_report",
    "nvidia_root",
    "parse_nvidia_report",
    "verify_nvidia_report",
]

SPDM_VERSION_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_SIZE = 37
RESPONSE_HEADER_SIZE = 8
SIGNATURE_SIZE = 96
DMTF_SPEC = 0x01
DICE_TCB_INFO_OID = "2.23.133.5.4.1"
_SHA384_OID = "2.16.840.1.101.3.4.2.2"
#: Largest evidence accepted (hex text or binary): 64 KiB is 10x the Hopper report.
MAX_REPORT_BYTES = 65536

NVIDIA_ROOT_FILE = "nvidia_device_identity_ca.pem"
#: SHA-256 of the NVIDIA Device Identity CA certificate DER (nvtrust verifier_device_root.pem).
NVIDIA_ROOT_SHA256 = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"

#: NVIDIA opaque-data TLV types (nvtrust ``OpaqueDataType``); unknown types are kept as hex.
OPAQUE_TYPES: Mapping[int, str] = {
    1: "cert_issuer_name",
    2: "cert_authority_key_identifier",
    3: "driver_version",
    4: "gpu_info",
    5: "id_sku",
    6: "vbios_version",
    7: "manufacturer_id",
    8: "tamper_detection",
    9: "smc",
    10: "vpr",
    11: "nvdec0_status",
    12: "measurement_count",
    13: "cpr_info",
    14: "board_id",
    15: "chip_sku",
    16: "chip_sku_mod",
    17: "project",
    18: "project_sku",
    19: "project_sku_mod",
    20: "fwid",
    21: "protected_pcie_status",
    22: "switch_pdi",
    23: "floorswept_ports",
    24: "position_id",
    25: "lock_switch_status",
    32: "gpu_link_conn",
    33: "sys_enable_status",
    34: "opaque_data_version",
    35: "chip_info",
    36: "feature_flag",
}
_TEXT_TYPES = frozenset({3, 15, 16, 17, 18, 35})
_HEXDIGITS = frozenset(string.hexdigits.encode() + string.whitespace.encode())


@cache
def nvidia_root() -> Certificate:
    """The pinned NVIDIA Device Identity CA (shipped in ``atoll/island/roots/``)."""
    data = resources.files("atoll.island").joinpath("roots", NVIDIA_ROOT_FILE).read_bytes()
    (cert,) = load_certificates(data, what=NVIDIA_ROOT_FILE)
    if fingerprint_sha256(cert) != NVIDIA_ROOT_SHA256:
        raise CertificateChainError(
            "shipped NVIDIA root does not have the pinned fingerprint", stage="roots"
        )
    return cert


@dataclass(frozen=True)
class MeasurementBlock:
    """One SPDM measurement block in the DMTF format (``digest`` is the raw value)."""

    index: int
    value_type: int
    digest: bytes

    @property
    def is_digest(self) -> bool:
        """DMTF value type bit 7 clear: the value is a digest, not a raw bit stream."""
        return not self.value_type & 0x80


@dataclass(frozen=True)
class NvidiaReport:
    """A parsed GET_MEASUREMENTS request + response (see the module docstring)."""

    raw: bytes
    spdm_version: int
    request_param1: int
    request_param2: int
    nonce: bytes
    slot_id: int
    response_param1: int
    response_param2: int
    blocks: tuple[MeasurementBlock, ...]
    response_nonce: bytes
    opaque: Mapping[int, bytes]
    signature: bytes

    @property
    def signed_bytes(self) -> bytes:
        """``request || response`` without the trailing signature: what the GPU signed."""
        return self.raw[:-SIGNATURE_SIZE]


def looks_like_nvidia_report(evidence: bytes) -> bool:
    """Whether ``evidence`` (hex text or binary) starts like an SPDM 1.1 GET_MEASUREMENTS."""
    head = evidence[:16].strip()
    if head[:4].lower() == b"11e0":
        return True
    return evidence[:2] == bytes([SPDM_VERSION_11, GET_MEASUREMENTS])


def decode_report_text(evidence: bytes) -> bytes:
    """Binary report from NVIDIA's hex text form (whitespace ignored); anything else is binary."""
    if not isinstance(evidence, bytes | bytearray):
        raise EvidenceFormatError("NVIDIA report must be bytes", stage="parse")
    evidence = bytes(evidence)
    if len(evidence) > 2 * MAX_REPORT_BYTES + 64:
        raise EvidenceFormatError(
            f"NVIDIA report is too large ({len(evidence)} bytes)", stage="parse", field="length"
        )
    if not evidence or not set(evidence) <= _HEXDIGITS:
        # Not hex text: binary (its first byte, SPDM version 0x11, is never a hex digit).
        return evidence
    text = b"".join(evidence.split())
    if len(text) % 2:
        raise EvidenceFormatError(
            "NVIDIA report hex text has an odd number of digits (truncated?)",
            stage="parse",
            field="length",
        )
    return bytes.fromhex(text.decode("ascii"))


class _Cursor:
    """Bounds-checked little-endian reader; every overrun is a 'truncated' format error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise EvidenceFormatError(
                f"report truncated: {what} needs {size} bytes at offset {self.pos}, "
                f"{len(self.data) - self.pos} left",
                stage="parse",
                field=what,
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "little")


def _bad(reason: str, field: str) -> EvidenceFormatError:
    return EvidenceFormatError(reason, stage="parse", field=field)


def _parse_blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    cur = _Cursor(record)
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    for _ in range(count):
        index = cur.u8("measurement.index")
        spec = cur.u8("measurement.specification")
        size = cur.u16("measurement.size")
        if index in seen or not 1 <= index <= 0xFE:
            raise _bad(f"measurement index {index} is invalid or repeated", "measurement.index")
        seen.add(index)
        if spec != DMTF_SPEC:
            raise _bad(
                f"measurement {index} uses specification {spec:#x}; only DMTF (0x01) is supported",
                "measurement.specification",
            )
        body = _Cursor(cur.take(size, f"measurement[{index}]"))
        value_type = body.u8(f"measurement[{index}].type")
        value_size = body.u16(f"measurement[{index}].value_size")
        value = body.take(value_size, f"measurement[{index}].value")
        if body.pos != size:
            raise _bad(
                f"measurement {index}: MeasurementSize {size} != 3 + value size {value_size}",
                "measurement.size",
            )
        blocks.append(MeasurementBlock(index=index, value_type=value_type, digest=value))
    if cur.pos != len(record):
        raise _bad(
            f"MeasurementRecordLength {len(record)} does not match the {count} blocks "
            f"({cur.pos} bytes)",
            "measurement_record_length",
        )
    return tuple(blocks)


def _parse_opaque(data: bytes) -> dict[int, bytes]:
    cur = _Cursor(data)
    out: dict[int, bytes] = {}
    while cur.pos < len(data):
        kind = cur.u16("opaque.type")
        size = cur.u16("opaque.size")
        value = cur.take(size, f"opaque[{kind}]")
        if kind in out:
            raise _bad(f"opaque data type {kind} appears twice", "opaque")
        out[kind] = value
    return out


def parse_nvidia_report(evidence: bytes) -> NvidiaReport:
    """Parse an H100 GET_MEASUREMENTS request + response (hex text or binary), strictly."""
    raw = decode_report_text(evidence)
    cur = _Cursor(raw)
    version = cur.u8("request.version")
    if version != SPDM_VERSION_11:
        raise _bad(f"SPDM version {version:#04x} is not supported (0x11)", "request.version")
    code = cur.u8("request.code")
    if code != GET_MEASUREMENTS:
        raise _bad(f"request code {code:#04x} is not GET_MEASUREMENTS (0xe0)", "request.code")
    param1 = cur.u8("request.param1")
    if not param1 & 0x01:
        raise _bad("the request did not ask for a signature (Param1 bit 0)", "request.param1")
    param2 = cur.u8("request.param2")
    nonce = cur.take(GPU_NONCE_SIZE, "request.nonce")
    slot_id = cur.u8("request.slot_id")
    resp_version = cur.u8("response.version")
    if resp_version != version:
        raise _bad(
            f"response SPDM version {resp_version:#04x} differs from the request's",
            "response.version",
        )
    resp_code = cur.u8("response.code")
    if resp_code != MEASUREMENTS:
        raise _bad(f"response code {resp_code:#04x} is not MEASUREMENTS (0x60)", "response.code")
    resp_param1 = cur.u8("response.param1")
    resp_param2 = cur.u8("response.param2")
    count = cur.u8("response.number_of_blocks")
    record_len = cur.u24("response.measurement_record_length")
    blocks = _parse_blocks(cur.take(record_len, "measurement_record"), count)
    if param2 == 0xFF and not blocks:
        raise _bad("all measurements were requested but none were returned", "response")
    if param2 not in (0x00, 0xFF) and [b.index for b in blocks] != [param2]:
        raise _bad(f"measurement {param2} was requested but not returned", "response")
    response_nonce = cur.take(GPU_NONCE_SIZE, "response.nonce")
    opaque_len = cur.u16("response.opaque_length")
    opaque = _parse_opaque(cur.take(opaque_len, "response.opaque_data"))
    signature = cur.take(SIGNATURE_SIZE, "signature")
    if cur.pos != len(raw):
        raise _bad(
            f"{len(raw) - cur.pos} unexpected bytes after the 96-byte signature", "signature"
        )
    return NvidiaReport(
        raw=raw,
        spdm_version=version,
        request_param1=param1,
        request_param2=param2,
        nonce=nonce,
        slot_id=slot_id,
        response_param1=resp_param1,
        response_param2=resp_param2,
        blocks=blocks,
        response_nonce=response_nonce,
        opaque=opaque,
        signature=signature,
    )


def _vbios(value: bytes) -> str:
    """nvtrust's rendering: first half reversed, then the first byte of the second half."""
    half = len(value) // 2
    if half == 0:
        return value.hex()
    return ".".join(f"{b:02x}" for b in reversed(value[:half])) + f".{value[half]:02x}"


def _opaque_claims(opaque: Mapping[int, bytes]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for kind, value in sorted(opaque.items()):
        name = OPAQUE_TYPES.get(kind, f"type_{kind}")
        if kind in _TEXT_TYPES:
            claims[name] = value.rstrip(b"\x00").decode("utf-8", "replace")
        elif kind == 6:
            claims[name] = _vbios(value)
        elif kind == 11 and len(value) == 1:
            claims[name] = {0xAA: "enabled", 0x55: "disabled"}.get(value[0], value.hex())
        elif kind == 12 and len(value) % 4 == 0:
            claims[name] = [
                int.from_bytes(value[i : i + 4], "little") for i in range(0, len(value), 4)
            ]
        else:
            claims[name] = value.hex()
    return claims


def _fwids(ext: bytes) -> list[bytes]:
    """Every ``SEQUENCE { OID hashAlg, OCTET STRING digest }`` inside the DICE extension."""
    found: list[bytes] = []

    def walk(data: bytes, depth: int) -> None:
        pos = 0
        while pos < len(data):
            tag, content, pos = der_decode(data, pos)
            if tag == 0x30 and depth < 6:
                try:
                    t1, c1, p1 = der_decode(content)
                    if t1 == 0x06 and der_oid(c1) == _SHA384_OID:
                        t2, c2, p2 = der_decode(content, p1)
                        if t2 == 0x04 and p2 == len(content):
                            found.append(c2)
                            continue
                except X509Error:
                    pass
                walk(content, depth + 1)
            elif tag in (0xA6, 0x31) and depth < 6:
                walk(content, depth + 1)

    walk(ext, 0)
    return found


def _subject_serial(cert: Certificate) -> str | None:
    for attr in cert.subject:
        if attr.oid.dotted_string == "2.5.4.5":
            value = attr.value
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def _verify_chain(
    chain_pem: bytes, roots: Sequence[Certificate] | None, when: datetime
) -> list[Certificate]:
    try:
        chain = load_certificates(chain_pem, what="NVIDIA device certificate chain")
    except X509Error as exc:
        raise EvidenceFormatError(exc.reason, stage="gpu-chain", field="collateral") from None
    pinned = [nvidia_root()] if roots is None else list(roots)
    for position, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        if cert.issuer != issuer.subject:
            raise CertificateChainError(
                f"certificate {position} ({subject_common_name(cert)}) is not issued by "
                f"certificate {position + 1} ({subject_common_name(issuer)}): the chain must "
                "be given leaf first, each certificate followed by its issuer",
                stage="gpu-chain",
                field="order",
            )
    try:
        path = verify_chain(chain[0], chain[1:], roots=pinned, at=when)
    except X509Error as exc:
        raise CertificateChainError(f"GPU chain: {exc.reason}", stage="gpu-chain") from None
    supplied = [certificate_der(c) for c in chain]
    walked = [certificate_der(c) for c in path]
    if walked[: len(supplied)] != supplied or len(walked) > len(supplied) + 1:
        raise CertificateChainError(
            "the verified path does not use the supplied certificates in order",
            stage="gpu-chain",
            field="order",
        )
    return path


def verify_nvidia_report(
    evidence: bytes,
    cert_chain: bytes,
    *,
    at: datetime | None = None,
    expected_nonce: bytes | None = None,
    roots: Sequence[Certificate] | None = None,
) -> Verdict:
    """Verify H100 SPDM evidence with its PEM device chain at ``at`` (default: now, UTC).

    ``expected_nonce`` (32 bytes) is the relying party's fresh nonce: without
    it the verdict only proves *some* signed exchange, not a fresh one.
    ``roots`` replaces the pinned NVIDIA Device Identity CA (tests with a
    private PKI only). Raises an :class:`~atoll.island.verdict.AttestationError`
    subclass naming the stage on any failure.
    """
    when = (datetime.now(UTC) if at is None else at).astimezone(UTC)
    if expected_nonce is not None and len(expected_nonce) != GPU_NONCE_SIZE:
        raise EvidenceFormatError(
            f"expected nonce must be {GPU_NONCE_SIZE} bytes, got {len(expected_nonce)}",
            stage="nonce",
            field="expected_nonce",
        )
    report = parse_nvidia_report(evidence)
    path = _verify_chain(cert_chain, roots, when)
    leaf = path[0]
    public = leaf.public_key()
    if not isinstance(public, EcPublicKey) or public.curve.name != "secp384r1":
        raise CertificateChainError(
            "the GPU attestation certificate does not hold an ECDSA P-384 key",
            stage="gpu-chain",
            field="leaf",
        )
    try:
        ok = verify_ecdsa_raw(leaf, report.signature, report.signed_bytes)
    except X509Error as exc:
        raise EvidenceSignatureError(exc.reason, stage="report-signature") from None
    if not ok:
        raise EvidenceSignatureError(
            "ECDSA P-384 signature over request || response does not verify under the "
            "GPU attestation certificate",
            stage="report-signature",
            field="signature",
        )
    cert_fwids: list[bytes] = []
    ext = extension_value(leaf, DICE_TCB_INFO_OID)
    if ext is not None:
        try:
            cert_fwids = _fwids(ext)
        except X509Error as exc:
            raise CertificateChainError(
                f"GPU leaf DICE extension is malformed ({exc.reason})",
                stage="gpu-fwid",
                field="fwid",
            ) from None
    report_fwid = report.opaque.get(20)
    if report_fwid is not None and not any(constant_time_equal(report_fwid, f) for f in cert_fwids):
        raise CertificateChainError(
            "the report's FWID does not match the FWID in the GPU leaf certificate",
            stage="gpu-fwid",
            field="fwid",
        )
    if expected_nonce is not None and not constant_time_equal(report.nonce, expected_nonce):
        raise NonceMismatchError(
            "the signed request nonce is not the expected one (stale or replayed evidence)",
            stage="nonce",
            field="nonce",
        )
    return Verdict(
        tee="nvidia-h100",
        measurements={f"{b.index:03d}": b.digest.hex() for b in report.blocks},
        report_data=report.nonce,
        tcb_status="not-appraised",
        advisories=(),
        debug=False,
        svn={},
        verified_at=when,
        collateral_expires=min(not_after(c) for c in path),
        simulated=False,
        details={
            "evidence": "SPDM 1.1 GET_MEASUREMENTS (request || response), ECDSA P-384/SHA-384",
            "nonce": report.nonce.hex(),
            "nonce_checked": expected_nonce is not None,
            "response_nonce": report.response_nonce.hex(),
            "slot_id": report.slot_id,
            "measurement_blocks": len(report.blocks),
            "measurement_value_types": sorted({b.value_type for b in report.blocks}),
            "opaque": _opaque_claims(report.opaque),
            "fwid_bound": report_fwid is not None,
            "leaf": {
                "common_name": subject_common_name(leaf),
                "serial_number": _subject_serial(leaf),
                "sha256": fingerprint_sha256(leaf),
            },
            "device_serial": _subject_serial(path[1]) if len(path) > 1 else None,
            "certificates": [certificate_summary(c) for c in path],
            "not_verified": (
                "RIM appraisal of the measurements and OCSP revocation need NVIDIA's "
                "online services; debug/CC mode is not part of this evidence"
            ),
        },
    )
