"""Ed25519 signatures in a versioned, context-bound envelope.

Why: several Atoll artefacts must be attributable to one party and
tamper-evident to anyone holding its public key -- usage receipts of the
covert query's pay-per-hit billing, signed manifests, audit checkpoints.
Ed25519 (RFC 8032) through ``cryptography`` gives deterministic, small,
fast signatures; this module adds what raw signatures lack:

* a **context string** signed together with the payload, so a signature made
  for one purpose (``b"atoll/usage-receipt/v1"``) can never be replayed as
  another;
* a **key id** (first 8 bytes of SHA-256 of the public key) so a verifier can
  tell which key is expected before checking;
* a **version byte** first, per the project rule for every wire format.

Envelope: ``SIGN_VERSION (1) || key_id (8) || signature (64) || payload``.
The signed message is ``b"atoll-sig-v1" || u8 len(context) || context ||
payload``. :func:`verify` raises :class:`~atoll.errors.CryptoError` on any
failure and returns the payload -- it never returns ``False``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from atoll.crypto import Rng, sha256_digest
from atoll.errors import CryptoError

__all__ = [
    "KEY_ID_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "SIGN_VERSION",
    "SigningKey",
    "VerifyKey",
    "open_signed",
    "sign",
    "verify",
]

#: First byte of every signed envelope.
SIGN_VERSION = 1
#: Ed25519 sizes (RFC 8032).
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: Bytes of the key id (SHA-256 prefix of the raw public key).
KEY_ID_SIZE = 8
_HEADER = 1 + KEY_ID_SIZE + SIGNATURE_SIZE
_DOMAIN = b"atoll-sig-v1"


def _message(context: bytes, payload: bytes) -> bytes:
    if not context or len(context) > 255:
        raise CryptoError("signature context must be 1..255 bytes")
    return _DOMAIN + bytes([len(context)]) + context + payload


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_SIZE:
            raise CryptoError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise CryptoError("not a valid Ed25519 public key") from exc

    @property
    def key_id(self) -> bytes:
        """First 8 bytes of SHA-256 of the raw key."""
        return sha256_digest(self.raw)[:KEY_ID_SIZE]

    def to_text(self) -> str:
        """Base64 (standard alphabet) of the raw key, for JSON and key files."""
        return base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> VerifyKey:
        """Inverse of :meth:`to_text`; CryptoError on malformed input."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError as exc:
            raise CryptoError("public key is not valid base64") from exc
        return cls(raw)


class SigningKey:
    """An Ed25519 private key. Keep it secret; :attr:`verify_key` is public."""

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise CryptoError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._seed = seed
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verify_key = VerifyKey(raw)

    @classmethod
    def generate(cls, *, rng: Rng | None = None) -> SigningKey:
        """A fresh key (from ``rng`` when given, for reproducible tests)."""
        if rng is None:
            key = Ed25519PrivateKey.generate()
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return cls(seed)
        seed = rng(32)
        if len(seed) != 32:
            raise CryptoError("rng returned the wrong number of bytes")
        return cls(seed)

    def seed_bytes(self) -> bytes:
        """The 32-byte private seed (to persist the key; store it with 0600 permissions)."""
        return self._seed

    def sign_raw(self, message: bytes) -> bytes:
        """A bare 64-byte Ed25519 signature of ``message`` (prefer :func:`sign`)."""
        return self._key.sign(message)


def sign(key: SigningKey, payload: bytes, *, context: bytes) -> bytes:
    """Sign ``payload`` for ``context``; returns the versioned envelope."""
    signature = key.sign_raw(_message(context, payload))
    return bytes([SIGN_VERSION]) + key.verify_key.key_id + signature + payload


def open_signed(envelope: bytes) -> tuple[bytes, bytes, bytes]:
    """Split an envelope into ``(key_id, signature, payload)`` WITHOUT verifying it."""
    if not isinstance(envelope, bytes) or len(envelope) < _HEADER:
        raise CryptoError("signed envelope is truncated")
    if envelope[0] != SIGN_VERSION:
        raise CryptoError(f"unsupported signed-envelope version {envelope[0]}")
    key_id = envelope[1 : 1 + KEY_ID_SIZE]
    signature = envelope[1 + KEY_ID_SIZE : _HEADER]
    return key_id, signature, envelope[_HEADER:]


def verify(key: VerifyKey, envelope: bytes, *, context: bytes) -> bytes:
    """Check an envelope made by :func:`sign` and return its payload.

    Raises CryptoError if the version, key id, context or signature does not
    match -- one message for all signature failures.
    """
    key_id, signature, payload = open_signed(envelope)
    if key_id != key.key_id:
        raise CryptoError("signed by another key (key id mismatch)")
    try:
        Ed25519PublicKey.from_public_bytes(key.raw).verify(signature, _message(context, payload))
    except InvalidSignature as exc:
        raise CryptoError("signature verification failed") from exc
    return payload
