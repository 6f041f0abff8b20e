"""HPKE (RFC 9180) recipe: known-answer vectors, a reference key schedule, properties.

Provenance of the vector: RFC 9180, Appendix A.2.1 ("DHKEM(X25519,
HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305", mode_base), sequence number 0
of A.2.1.1 -- copied from the RFC text (the same values appear in many
independent implementations' test suites, e.g. BoringSSL/Tink, hpke-rs).

``cryptography``'s public HPKE API draws the ephemeral key itself and has no
``aad`` for single-shot seal, so the vector is checked in three ways:

1. the library's (private, test-only) single-shot decrypt with aad opens the
   RFC ciphertext -- the library *is* RFC 9180;
2. a small reference key schedule written here from RFC 9180 §4-§5 with the
   vector's fixed ephemeral key reproduces shared_secret, key, base_nonce,
   exporter_secret and the ciphertext byte for byte;
3. that reference, with our ``info`` convention and empty aad, produces a
   ciphertext our :func:`hpke_open` opens -- so our wrapper is RFC 9180 with a
   documented ``info``.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto.hpke import (
    HPKE_OVERHEAD,
    HPKE_VERSION,
    HpkePrivateKey,
    hpke_open,
    hpke_seal,
    transcript_hash,
)
from atoll.errors import CryptoError, DecryptionError

V = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "skEm": "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
    "pkEm": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
    "skRm": "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
    "pkRm": "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
    "enc": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
    "shared_secret": "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7",
    "key": "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91",
    "base_nonce": "5c4d98150661b848853b547f",
    "exporter_secret": "a3b010d4994890e2c6968a36f64470d3c824c8f5029942feb11e7a74b2921922",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "aad": "436f756e742d30",
    "ct": "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
    "21993c62ce81883d2dd1b51a28",
}
H = {k: bytes.fromhex(v) for k, v in V.items()}
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


# --- reference key schedule (RFC 9180 §4.1, §5.1), test-only ---------------------------------


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return _expand(prk, n.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info, n)


KEM_ID = b"KEM" + (0x0020).to_bytes(2, "big")
HPKE_ID = b"HPKE" + (0x0020).to_bytes(2, "big") + (1).to_bytes(2, "big") + (3).to_bytes(2, "big")


def _raw(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def reference_seal(
    sk_e: bytes, pk_r: bytes, info: bytes, aad: bytes, pt: bytes
) -> dict[str, bytes]:
    """RFC 9180 SetupBaseS + Seal with a fixed ephemeral key (the RFC's DeriveKeyPair output)."""
    eph = x25519.X25519PrivateKey.from_private_bytes(sk_e)
    enc = _raw(eph.public_key())
    dh = eph.exchange(x25519.X25519PublicKey.from_public_bytes(pk_r))
    eae_prk = _labeled_extract(KEM_ID, b"", b"eae_prk", dh)
    shared = _labeled_expand(KEM_ID, eae_prk, b"shared_secret", enc + pk_r, 32)
    psk_id_hash = _labeled_extract(HPKE_ID, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(HPKE_ID, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(HPKE_ID, shared, b"secret", b"")
    key = _labeled_expand(HPKE_ID, secret, b"key", context, 32)
    nonce = _labeled_expand(HPKE_ID, secret, b"base_nonce", context, 12)
    exporter = _labeled_expand(HPKE_ID, secret, b"exp", context, 32)
    ct = ChaCha20Poly1305(key).encrypt(nonce, pt, aad)
    return {
        "enc": enc,
        "shared_secret": shared,
        "key": key,
        "base_nonce": nonce,
        "exporter_secret": exporter,
        "ct": ct,
    }


# --- known answers -------------------------------------------------------------------------


def test_library_opens_the_rfc_9180_a21_ciphertext() -> None:
    sk_r = x25519.X25519PrivateKey.from_private_bytes(H["skRm"])
    assert _raw(sk_r.public_key()) == H["pkRm"]
    pt = rust_openssl.hpke._decrypt_with_aad(
        SUITE, H["enc"] + H["ct"], sk_r, info=H["info"], aad=H["aad"]
    )
    assert pt == H["pt"]


def test_reference_key_schedule_reproduces_the_rfc_vector() -> None:
    got = reference_seal(H["skEm"], H["pkRm"], H["info"], H["aad"], H["pt"])
    for name in ("enc", "shared_secret", "key", "base_nonce", "exporter_secret", "ct"):
        assert got[name] == H[name], name
    assert got["enc"] == H["pkEm"]


def test_our_open_is_rfc_9180_with_the_documented_info() -> None:
    info = b"atoll test context"
    wire_info = info + b"|hpke-v" + bytes([HPKE_VERSION])
    ref = reference_seal(H["skEm"], H["pkRm"], wire_info, b"", H["pt"])
    blob = bytes([HPKE_VERSION]) + ref["enc"] + ref["ct"]
    key = HpkePrivateKey.from_bytes(H["skRm"])
    assert key.public_bytes == H["pkRm"]
    assert hpke_open(key, blob, info=info) == H["pt"]
    with pytest.raises(DecryptionError):
        hpke_open(key, blob, info=b"another context")


# --- behaviour -----------------------------------------------------------------------------


def test_seal_open_round_trip_and_failures() -> None:
    key = HpkePrivateKey.generate()
    blob = hpke_seal(key.public_bytes, b"dataset key bytes", info=b"job-1")
    assert blob[0] == HPKE_VERSION
    assert len(blob) == HPKE_OVERHEAD + len(b"dataset key bytes")
    assert key.open(blob, info=b"job-1") == b"dataset key bytes"
    other = HpkePrivateKey.generate()
    with pytest.raises(DecryptionError):
        other.open(blob, info=b"job-1")
    for bad in (
        blob[:-1],
        bytes([2]) + blob[1:],
        blob[:10],
        blob[:20] + bytes([blob[20] ^ 1]) + blob[21:],
    ):
        with pytest.raises(DecryptionError):
            key.open(bad, info=b"job-1")


def test_bad_public_keys_are_refused() -> None:
    with pytest.raises(CryptoError):
        hpke_seal(b"short", b"x", info=b"")
    with pytest.raises(CryptoError):  # all-zero point: low order, zero shared secret
        hpke_seal(bytes(32), b"x", info=b"")


def test_destroyed_key_cannot_open() -> None:
    key = HpkePrivateKey.generate()
    blob = hpke_seal(key.public_bytes, b"x", info=b"i")
    key.destroy()
    assert key.destroyed
    with pytest.raises(CryptoError):
        key.open(blob, info=b"i")
    with pytest.raises(CryptoError):
        key.private_bytes()


def test_transcript_hash_is_injective_on_framing() -> None:
    assert len(transcript_hash(b"d", b"ab", b"c")) == 64
    assert transcript_hash(b"d", b"ab", b"c") != transcript_hash(b"d", b"a", b"bc")
    assert transcript_hash(b"d", b"x") != transcript_hash(b"e", b"x")
    assert (
        transcript_hash(b"d", b"x")
        == hashlib.sha512((1).to_bytes(4, "big") + b"d" + (1).to_bytes(4, "big") + b"x").digest()
    )


@settings(max_examples=25, deadline=None)
@given(plaintext=st.binary(max_size=2048), info=st.binary(max_size=64))
def test_property_open_inverts_seal(plaintext: bytes, info: bytes) -> None:
    key = HpkePrivateKey.generate()
    assert key.open(hpke_seal(key.public_bytes, plaintext, info=info), info=info) == plaintext
