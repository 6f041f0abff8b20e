"""A tiny private PKI for mutual TLS between Atoll nodes: one CA, per-party certificates.

Why: two parties' nodes talk over HTTPS with *mutual* TLS -- each side proves
its identity with a certificate signed by a CA both trust. Public web PKI is
the wrong tool for that (client certificates, private hostnames, loopback
tests), so ``atoll certs init`` mints a small self-signed CA and, per party,
a server certificate and a client certificate. Only :mod:`atoll.crypto` may
import ``cryptography``, so the X.509 *generation* lives here; file layout,
permissions and :mod:`ssl` contexts live in :mod:`atoll.transport.tls`.

Choices (all through ``cryptography``/OpenSSL; nothing hand-rolled):

* keys: ECDSA P-256 (universally supported by TLS stacks, small, fast);
* signatures: ECDSA with SHA-256;
* the CA: ``BasicConstraints(ca=True, path_length=0)`` (critical), key usage
  ``keyCertSign | cRLSign`` (critical), subject key identifier;
* leaves: ``BasicConstraints(ca=False)`` (critical), key usage
  ``digitalSignature`` (critical), one extended key usage (``serverAuth`` or
  ``clientAuth``), the authority/subject key identifiers and a
  subjectAltName (DNS names and IP addresses) -- what Python 3.13's strict
  X.509 verification (``VERIFY_X509_STRICT``) demands;
* serial numbers: 159 random bits (RFC 5280 §4.1.2.2: positive, ≤ 20 bytes);
* bearer tokens: 256 random bits, URL-safe base64.

Time and randomness are injectable (``now=``, ``rng=``) so that tests can
mint certificates that are not yet valid or already expired.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atoll.crypto import Rng
from atoll.errors import CryptoError

__all__ = [
    "DEFAULT_VALIDITY_DAYS",
    "CertUsage",
    "KeyPair",
    "certificate_info",
    "generate_ca",
    "issue_certificate",
    "new_token",
]

#: Default lifetime of the CA and of issued certificates.
DEFAULT_VALIDITY_DAYS = 825
#: Organisation name written into every subject.
_ORG = "Atoll"


class CertUsage(StrEnum):
    """What a leaf certificate is for (its extended key usage)."""

    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key (PKCS#8, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes


def new_token(*, rng: Rng | None = None) -> str:
    """A fresh bearer token: 32 random bytes as unpadded URL-safe base64 (43 characters)."""
    raw = (rng or os.urandom)(32)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _serial(rng: Rng) -> int:
    value = int.from_bytes(rng(20), "big") >> 1  # 159 bits: positive, fits 20 bytes
    return value or 1


def _name(common_name: str) -> x509.Name:
    if not common_name or len(common_name) > 64:
        raise CryptoError(f"certificate name must be 1..64 characters, got {common_name!r}")
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _window(now: datetime | None, days: int) -> tuple[datetime, datetime]:
    if days < 1:
        raise CryptoError(f"validity must be at least one day, got {days}")
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)  # tolerate small clock skew
    return start, start + timedelta(days=days)


def generate_ca(
    common_name: str = "Atoll private CA",
    *,
    days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime | None = None,
    rng: Rng | None = None,
) -> KeyPair:
    """A self-signed CA certificate (path length 0: it signs leaves only) and its key."""
    rng = rng or os.urandom
    key = _new_key()
    name = _name(common_name)
    not_before, not_after = _window(now, days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial(rng))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load_ca(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem)
        key = serialization.load_pem_private_key(ca.key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"cannot load the CA certificate or key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError("the CA key is not an ECDSA key")
    if cert.public_key() != key.public_key():
        raise CryptoError("the CA key does not belong to the CA certificate")
    return cert, key


def _alt_names(common_name: str, hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in [common_name, *hosts]:
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not all(c.isalnum() or c in "-._*" for c in host):
                raise CryptoError(f"not a valid host name or IP address: {host!r}") from None
            names.append(x509.DNSName(host))
    return names


def issue_certificate(
    ca: KeyPair,
    common_name: str,
    usage: CertUsage,
    *,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime | None = None,
    rng: Rng | None = None,
) -> KeyPair:
    """A leaf certificate for ``common_name`` signed by ``ca``, with a fresh key.

    ``hosts`` (DNS names or IP addresses) go into the subjectAltName next to
    the common name; a server certificate must list every name clients dial
    (``atoll certs init`` adds ``localhost`` and ``127.0.0.1``).
    """
    rng = rng or os.urandom
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key()
    not_before, not_after = _window(now, days)
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    eku = (
        ExtendedKeyUsageOID.SERVER_AUTH
        if usage is CertUsage.SERVER
        else (ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial(rng))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_alt_names(common_name, hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def certificate_info(cert_pem: bytes) -> dict[str, str]:
    """Subject, issuer, validity window, SHA-256 fingerprint and alt names of a PEM certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CryptoError(f"not a PEM certificate: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt = ", ".join(str(v) for v in san.get_values_for_type(x509.DNSName)) + "".join(
            f", {ip}" for ip in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        alt = ""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "alt_names": alt.strip(", "),
    }
