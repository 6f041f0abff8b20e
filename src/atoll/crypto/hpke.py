"""HPKE (RFC 9180) base mode: sealing keys and results to an X25519 public key.

Why: the island receives each party's dataset key only after that party has
verified the island's attestation evidence, and the island returns results
only to the recipients named in the job manifest. Both are "encrypt to a
public key, bound to a context" -- exactly HPKE's single-shot base mode. We
use the maintained implementation in ``cryptography`` (OpenSSL-backed,
``cryptography.hazmat.primitives.hpke``, new in cryptography 46+) and never
re-implement the key schedule; this module only fixes the suite, adds a
version byte and validates sizes before use.

Suite (fixed): ``DHKEM(X25519, HKDF-SHA256)`` (KEM 0x0020), ``HKDF-SHA256``
(KDF 0x0001), ``ChaCha20Poly1305`` (AEAD 0x0003), mode_base. Known-answer
provenance: RFC 9180 Appendix A.2.1 (``tests/island/test_hpke.py``).

Sealed form::

    HPKE_VERSION (1 byte) || enc (32 bytes, the encapsulated key) || ciphertext || tag (16)

``info`` is the caller's context (what is being sealed, for which job): the
version byte is appended to it, so a changed format can never open an old
ciphertext. The library's public API has no ``aad`` for single-shot seal;
everything that must be bound goes into ``info`` (which enters the key
schedule, so a wrong ``info`` fails authentication exactly like a wrong aad).

:func:`transcript_hash` is the SHA-512 of a domain label and length-prefixed
parts: the island's 64-byte report data and the HPKE ``info`` strings are
built with it, so no two different part lists can hash the same.

Private keys are held in :class:`HpkePrivateKey`, whose :meth:`~HpkePrivateKey.destroy`
drops the key object and overwrites our copy of the raw bytes (burn after
use; CPython cannot promise that no other copy exists -- see docs/island.md).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from atoll.crypto import Rng
from atoll.errors import CryptoError, DecryptionError

__all__ = [
    "HPKE_OVERHEAD",
    "HPKE_SUITE",
    "HPKE_VERSION",
    "PUBLIC_KEY_SIZE",
    "HpkePrivateKey",
    "hpke_open",
    "hpke_seal",
    "public_key_from_bytes",
    "transcript_hash",
]

#: First byte of every sealed blob; bump on any change of suite or layout.
HPKE_VERSION = 1
#: Human-readable name of the fixed suite (written into manifests and docs).
HPKE_SUITE = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/ChaCha20Poly1305/base"
#: Size of an X25519 public key and of the encapsulated key ``enc``.
PUBLIC_KEY_SIZE = 32
_TAG_SIZE = 16
#: Bytes added to a plaintext by :func:`hpke_seal`.
HPKE_OVERHEAD = 1 + PUBLIC_KEY_SIZE + _TAG_SIZE

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _info(info: bytes) -> bytes:
    if not isinstance(info, bytes | bytearray):
        raise CryptoError("HPKE info must be bytes")
    return bytes(info) + b"|hpke-v" + bytes([HPKE_VERSION])


def public_key_from_bytes(raw: bytes) -> x25519.X25519PublicKey:
    """Parse a 32-byte X25519 public key; CryptoError on a wrong size."""
    if not isinstance(raw, bytes | bytearray) or len(raw) != PUBLIC_KEY_SIZE:
        raise CryptoError(f"an X25519 public key is {PUBLIC_KEY_SIZE} bytes")
    return x25519.X25519PublicKey.from_public_bytes(bytes(raw))


class HpkePrivateKey:
    """An X25519 HPKE private key; :attr:`public_bytes` is safe to publish.

    Build with :meth:`generate` or :meth:`from_bytes`. After :meth:`destroy`
    every use raises :class:`~atoll.errors.CryptoError`.
    """

    def __init__(self, key: x25519.X25519PrivateKey) -> None:
        self._key: x25519.X25519PrivateKey | None = key
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._raw = bytearray(raw)
        self.public_bytes: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls, *, rng: Rng | None = None) -> HpkePrivateKey:
        """A fresh key pair (from ``rng`` when given, for reproducible tests)."""
        if rng is None:
            return cls(x25519.X25519PrivateKey.generate())
        seed = rng(32)
        if len(seed) != 32:
            raise CryptoError("rng returned the wrong number of bytes")
        return cls.from_bytes(seed)

    @classmethod
    def from_bytes(cls, raw: bytes) -> HpkePrivateKey:
        """Load a 32-byte raw X25519 private key."""
        if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
            raise CryptoError("an X25519 private key is 32 bytes")
        return cls(x25519.X25519PrivateKey.from_private_bytes(bytes(raw)))

    def private_bytes(self) -> bytes:
        """The raw private key (to persist it; store it with 0600 permissions)."""
        self._live()
        return bytes(self._raw)

    def _live(self) -> x25519.X25519PrivateKey:
        if self._key is None:
            raise CryptoError("this HPKE private key has been destroyed")
        return self._key

    @property
    def destroyed(self) -> bool:
        """True once :meth:`destroy` ran."""
        return self._key is None

    def destroy(self) -> None:
        """Drop the key: zero our copy of its bytes and release the key object."""
        for i in range(len(self._raw)):
            self._raw[i] = 0
        self._key = None

    def open(self, sealed: bytes, *, info: bytes) -> bytes:
        """Decrypt a blob made by :func:`hpke_seal` for this key (see :func:`hpke_open`)."""
        return hpke_open(self, sealed, info=info)


def hpke_seal(public_key: bytes, plaintext: bytes, *, info: bytes) -> bytes:
    """Seal ``plaintext`` to the holder of ``public_key`` (32 raw bytes), bound to ``info``.

    The ephemeral key comes from OpenSSL's CSPRNG (the library offers no way
    to inject it; known-answer tests therefore check decryption of the RFC
    vector and a reference key schedule, see the test module).
    """
    key = public_key_from_bytes(public_key)
    try:
        body = _SUITE.encrypt(bytes(plaintext), key, info=_info(info))
    except ValueError as exc:  # e.g. a low-order point giving an all-zero shared secret
        raise CryptoError(f"HPKE seal failed: {exc}") from exc
    return bytes([HPKE_VERSION]) + body


def hpke_open(private_key: HpkePrivateKey, sealed: bytes, *, info: bytes) -> bytes:
    """Open a blob made by :func:`hpke_seal`; :class:`DecryptionError` on any failure."""
    key = private_key._live()
    if (
        not isinstance(sealed, bytes | bytearray)
        or len(sealed) < HPKE_OVERHEAD
        or sealed[0] != HPKE_VERSION
    ):
        raise DecryptionError()
    try:
        return _SUITE.decrypt(bytes(sealed[1:]), key, info=_info(info))
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError() from exc


def transcript_hash(domain: bytes, *parts: bytes) -> bytes:
    """SHA-512 of ``u32 len || domain`` and ``u32 len || part`` for each part (64 bytes).

    The length prefixes make the encoding injective: ``("ab", "c")`` and
    ``("a", "bc")`` never collide. Used for the attestation report-data
    binding (exactly 64 bytes, the size SGX/TDX/SEV-SNP sign).
    """
    if not domain:
        raise CryptoError("transcript_hash needs a non-empty domain label")
    digest = hashes.Hash(hashes.SHA512())
    for part in (domain, *parts):
        if not isinstance(part, bytes | bytearray):
            raise CryptoError("transcript parts must be bytes")
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(bytes(part))
    return digest.finalize()
