"""X.509 chains, CRLs and raw ECDSA for verifying TEE attestation evidence.

Why: Intel DCAP quotes and AMD SEV-SNP reports are trusted only through
certificate chains to a vendor root (Intel SGX Root CA; AMD ARK), CRLs, and
raw (r, s) ECDSA signatures over binary structures. Only ``atoll.crypto`` may
import ``cryptography``, so this module offers exactly what the verifiers in
:mod:`atoll.island.evidence` need, on top of ``cryptography`` (OpenSSL) --
no primitive is re-implemented here:

* :func:`load_certificates` / :func:`load_crl` -- PEM or DER input;
* :func:`verify_chain` -- path from a leaf to a *pinned* root at a *pinned*
  time: issuer signatures (ECDSA, RSA PKCS#1 v1.5 and RSA-PSS as used by
  AMD), validity windows, CA basic constraints / key usage / path length,
  unknown critical extensions, and CRLs (signature by the issuing CA, issuer
  name, ``thisUpdate <= t <= nextUpdate``, serial not revoked);
* :func:`verify_ecdsa_raw` / :func:`verify_ecdsa_ints` -- P-256/SHA-256 and
  P-384/SHA-384 signatures given as ``r || s`` or as integers;
* :func:`ec_public_key_from_xy` -- an uncompressed point, validated on the curve;
* a minimal DER reader (:func:`der_decode`, :func:`der_children`,
  :func:`der_oid`, :func:`der_int`) for vendor extensions ``cryptography``
  leaves opaque (Intel's SGX extension, AMD's VCEK TCB extensions).

Failures raise :class:`X509Error` with a reason; the island maps it to its
attestation error with the stage that failed.

Note: AMD's ARK/ASK/VCEK certificates carry a non-positive serial number;
``cryptography`` 50 loads them with a deprecation warning (a future release
may refuse them). The warning is silenced here for those loads only, and
``docs/attestation.md`` records the risk.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from atoll.errors import CryptoError

__all__ = [
    "Certificate",
    "CertificateRevocationList",
    "EcPublicKey",
    "X509Error",
    "certificate_der",
    "certificate_summary",
    "crl_next_update",
    "der_children",
    "der_decode",
    "der_int",
    "der_oid",
    "ec_public_key_from_xy",
    "extension_value",
    "fingerprint_sha256",
    "load_certificates",
    "load_crl",
    "not_after",
    "subject_common_name",
    "verify_chain",
    "verify_ecdsa_ints",
    "verify_ecdsa_raw",
]

Certificate = x509.Certificate
CertificateRevocationList = x509.CertificateRevocationList
EcPublicKey = ec.EllipticCurvePublicKey

_MAX_DEPTH = 8
# Extensions this verifier understands; any other *critical* extension rejects the cert.
_KNOWN_CRITICAL = {
    x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
    x509.oid.ExtensionOID.KEY_USAGE,
    x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
    x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    x509.oid.ExtensionOID.CRL_DISTRIBUTION_POINTS,
    x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
}


class X509Error(CryptoError):
    """A certificate, CRL or signature check failed; ``reason`` says which and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def load_certificates(data: bytes, *, what: str = "certificate") -> list[x509.Certificate]:
    """Load one DER certificate or one or more PEM certificates (in order)."""
    if not isinstance(data, bytes | bytearray):
        raise X509Error(f"{what}: expected bytes")
    data = bytes(data).strip(b"\x00")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise X509Error(f"{what}: cannot parse ({exc})") from None
    if not certs:
        raise X509Error(f"{what}: no certificate found")
    return certs


def load_crl(data: bytes, *, what: str = "CRL") -> x509.CertificateRevocationList:
    """Load a CRL from DER or PEM bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise X509Error(f"{what}: cannot parse ({exc})") from None


def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER encoding of ``cert``."""
    return cert.public_bytes(serialization.Encoding.DER)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(certificate_der(cert)).hexdigest()


def subject_common_name(cert: x509.Certificate) -> str:
    """The subject's CN (or the whole RFC 4514 name if it has none)."""
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cert.subject.rfc4514_string()


def not_after(cert: x509.Certificate) -> datetime:
    """End of the certificate's validity window (UTC)."""
    return cert.not_valid_after_utc


def crl_next_update(crl: x509.CertificateRevocationList) -> datetime | None:
    """The CRL's ``nextUpdate`` (UTC), if it has one."""
    return crl.next_update_utc


def certificate_summary(cert: x509.Certificate) -> dict[str, str]:
    """Subject, issuer, validity and fingerprint, for verdict details and logs."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": fingerprint_sha256(cert),
    }


def extension_value(cert: x509.Certificate, oid: str) -> bytes | None:
    """The raw DER value of extension ``oid`` (dotted string), or ``None`` if absent."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value
    return value.public_bytes()


def _same(a: x509.Certificate, b: x509.Certificate) -> bool:
    return certificate_der(a) == certificate_der(b)


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise X509Error(
            f"certificate {cert.subject.rfc4514_string()} is not yet valid at {at.isoformat()} "
            f"(valid from {cert.not_valid_before_utc.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise X509Error(
            f"certificate {cert.subject.rfc4514_string()} expired at "
            f"{cert.not_valid_after_utc.isoformat()} (checked at {at.isoformat()})"
        )


def _check_extensions(cert: x509.Certificate) -> None:
    try:
        extensions = cert.extensions
    except ValueError as exc:
        raise X509Error(
            f"certificate {cert.subject.rfc4514_string()}: bad extensions ({exc})"
        ) from None
    for ext in extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            raise X509Error(
                f"certificate {cert.subject.rfc4514_string()} has an unknown critical "
                f"extension {ext.oid.dotted_string}"
            )


def _check_ca(cert: x509.Certificate, below: int) -> None:
    name = cert.subject.rfc4514_string()
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise X509Error(f"issuer {name} has no basicConstraints; it is not a CA") from None
    if not bc.ca:
        raise X509Error(f"issuer {name} is not a CA (basicConstraints cA=false)")
    if bc.path_length is not None and below > bc.path_length:
        raise X509Error(f"issuer {name} path length {bc.path_length} exceeded")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise X509Error(f"issuer {name} key usage does not allow certificate signing")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _check_crls(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime,
    *,
    required: bool,
) -> None:
    matching = [crl for crl in crls if crl.issuer == issuer.subject]
    if not matching:
        if required:
            raise X509Error(
                f"no CRL from {issuer.subject.rfc4514_string()} to check "
                f"{cert.subject.rfc4514_string()} against"
            )
        return
    for crl in matching:
        issuer_name = issuer.subject.rfc4514_string()
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise X509Error(f"CRL signature of {issuer_name} does not verify")
        if at < crl.last_update_utc:
            raise X509Error(
                f"CRL of {issuer_name} is not yet valid at {at.isoformat()} "
                f"(thisUpdate {crl.last_update_utc.isoformat()})"
            )
        next_update = crl.next_update_utc
        if next_update is None or at > next_update:
            raise X509Error(
                f"CRL of {issuer_name} expired (nextUpdate "
                f"{next_update.isoformat() if next_update else 'missing'}, "
                f"checked at {at.isoformat()})"
            )
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise X509Error(
                f"certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) "
                f"is revoked by the CRL of {issuer_name}"
            )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Iterable[x509.Certificate],
    *,
    roots: Sequence[x509.Certificate],
    at: datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
    require_crls: bool = False,
) -> list[x509.Certificate]:
    """Verify ``leaf`` up to one of the pinned ``roots`` at time ``at``; return the path.

    The path is built by issuer name and confirmed by signature; it must end
    at a certificate byte-identical to a pinned root (a self-signed look-alike
    in ``intermediates`` does not count). Every certificate on it must be
    valid at ``at``; issuers must be CAs allowed to sign certificates; with
    ``crls``, each certificate is checked against the CRLs of its issuer (and
    the root against its own CRL); with ``require_crls``, a missing CRL for
    any issuer on the path is an error.
    """
    if at.tzinfo is None:
        raise X509Error("verification time must be timezone-aware")
    if not roots:
        raise X509Error("no pinned root certificate")
    pool = [c for c in intermediates if not any(_same(c, r) for r in roots)]
    path = [leaf]
    while True:
        current = path[-1]
        _check_validity(current, at)
        _check_extensions(current)
        if any(_same(current, root) for root in roots):
            break
        if len(path) > _MAX_DEPTH:
            raise X509Error("certificate chain is too long")
        candidates = [c for c in (*roots, *pool) if c.subject == current.issuer and c not in path]
        issuer = next((c for c in candidates if _issued_by(current, c)), None)
        if issuer is None:
            name = current.subject.rfc4514_string()
            if not candidates:
                raise X509Error(
                    f"certificate {name} does not chain to a pinned root: issuer "
                    f"{current.issuer.rfc4514_string()} not found"
                )
            raise X509Error(
                f"signature on certificate {name} does not verify under its issuer "
                f"{current.issuer.rfc4514_string()} (or the issuer is not the pinned root)"
            )
        _check_ca(issuer, below=len(path) - 1)
        _check_crls(current, issuer, crls, at, required=require_crls)
        path.append(issuer)
    root = path[-1]
    if not _issued_by(root, root):
        raise X509Error(f"pinned root {root.subject.rfc4514_string()} self-signature is invalid")
    own = [crl for crl in crls if crl.issuer == root.subject]
    if own:
        _check_crls(root, root, own, at, required=False)
    return path


def ec_public_key_from_xy(xy: bytes, *, curve: str) -> ec.EllipticCurvePublicKey:
    """Load an uncompressed EC point ``x || y`` on ``curve`` ("P-256" or "P-384")."""
    crv: ec.EllipticCurve
    if curve == "P-256":
        crv, size = ec.SECP256R1(), 32
    elif curve == "P-384":
        crv, size = ec.SECP384R1(), 48
    else:
        raise X509Error(f"unsupported curve {curve}")
    if len(xy) != 2 * size:
        raise X509Error(f"{curve} public key must be {2 * size} bytes, got {len(xy)}")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(crv, b"\x04" + xy)
    except ValueError:
        raise X509Error(f"{curve} public key is not a point on the curve") from None


def _ec_key(key: x509.Certificate | ec.EllipticCurvePublicKey) -> ec.EllipticCurvePublicKey:
    public = key.public_key() if isinstance(key, x509.Certificate) else key
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise X509Error("expected an EC public key")
    return public


def _hash_for(public: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    if isinstance(public.curve, ec.SECP256R1):
        return hashes.SHA256()
    if isinstance(public.curve, ec.SECP384R1):
        return hashes.SHA384()
    raise X509Error(f"unsupported curve {public.curve.name}")


def verify_ecdsa_ints(
    key: x509.Certificate | ec.EllipticCurvePublicKey, r: int, s: int, data: bytes
) -> bool:
    """ECDSA-verify ``(r, s)`` over ``data`` (SHA-256 on P-256, SHA-384 on P-384)."""
    public = _ec_key(key)
    if r <= 0 or s <= 0:
        return False
    try:
        public.verify(encode_dss_signature(r, s), data, ec.ECDSA(_hash_for(public)))
    except InvalidSignature:
        return False
    return True


def verify_ecdsa_raw(
    key: x509.Certificate | ec.EllipticCurvePublicKey, signature: bytes, data: bytes
) -> bool:
    """ECDSA-verify a raw big-endian ``r || s`` signature over ``data``."""
    public = _ec_key(key)
    size = (public.curve.key_size + 7) // 8
    if len(signature) != 2 * size:
        return False
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    return verify_ecdsa_ints(public, r, s, data)


# --- a minimal DER reader for vendor extensions ------------------------------------------


def der_decode(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """Read one TLV at ``offset``: ``(tag, content, next_offset)``; definite lengths only."""
    if offset + 2 > len(data):
        raise X509Error("DER: truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise X509Error("DER: multi-byte tags are not supported")
    length = data[offset + 1]
    pos = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise X509Error("DER: bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise X509Error("DER: element runs past the end")
    return tag, data[pos : pos + length], pos + length


def der_children(content: bytes) -> list[tuple[int, bytes]]:
    """The ``(tag, content)`` elements inside a constructed element's ``content``."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(content):
        tag, value, pos = der_decode(content, pos)
        out.append((tag, value))
    return out


def der_oid(content: bytes) -> str:
    """Dotted string of an OBJECT IDENTIFIER's content octets."""
    if not content:
        raise X509Error("DER: empty OID")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise X509Error("DER: truncated OID")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in (*head, *arcs[1:]))


def der_int(content: bytes) -> int:
    """Value of an INTEGER / ENUMERATED content (two's complement, big-endian)."""
    if not content:
        raise X509Error("DER: empty INTEGER")
    return int.from_bytes(content, "big", signed=True)
