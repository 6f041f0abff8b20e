"""Known-answer and property tests for the crypto seam (vectors: tests/vectors/crypto.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll import crypto
from atoll.errors import CryptoError, DecryptionError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "crypto.json").read_text())


@pytest.mark.parametrize("v", VECTORS["hkdf_sha256"], ids=lambda v: v["source"])
def test_hkdf_rfc5869(v: dict[str, str]) -> None:
    out = crypto.hkdf(
        bytes.fromhex(v["ikm"]),
        salt=bytes.fromhex(v["salt"]) or None,
        info=bytes.fromhex(v["info"]),
        length=int(v["length"]),
    )
    assert out.hex() == v["okm"]


@pytest.mark.parametrize("v", VECTORS["blake2b_keyed"], ids=lambda v: v["source"])
def test_keyed_blake2b_reference_kat(v: dict[str, str]) -> None:
    out = crypto.keyed_hash(bytes.fromhex(v["key"]), bytes.fromhex(v["in"]), size=int(v["size"]))
    assert out.hex() == v["hash"]


@pytest.mark.parametrize("v", VECTORS["chacha20poly1305"], ids=lambda v: v["source"])
def test_aead_rfc8439(v: dict[str, str]) -> None:
    key, nonce, aad = (bytes.fromhex(v[k]) for k in ("key", "nonce", "aad"))
    pt = v["plaintext_utf8"].encode()
    out = crypto.aead_encrypt(key, nonce, pt, aad)
    assert out.hex() == v["ciphertext"] + v["tag"]
    assert crypto.aead_decrypt(key, nonce, out, aad) == pt


@pytest.mark.parametrize(("name", "fn"), [("md5", crypto.md5_hex), ("sha256", crypto.sha256_hex)])
def test_digest_kats(name: str, fn: object) -> None:
    for v in VECTORS[name]:
        assert callable(fn)
        assert fn(v["in_utf8"].encode()) == v["hex"], v["source"]


def test_keyed_hash64_many_matches_single() -> None:
    key = b"k" * 16
    values = [b"", b"a", b"13800138000", "中文".encode()]
    many = crypto.keyed_hash64_many(key, values, person=b"p")
    single = [int.from_bytes(crypto.keyed_hash(key, v, size=8, person=b"p"), "big") for v in values]
    assert [int(x) for x in many] == single
    assert len(crypto.keyed_hash64_many(key, [])) == 0


@settings(max_examples=100, deadline=None)
@given(pt=st.binary(max_size=512), aad=st.binary(max_size=64))
def test_seal_roundtrip_and_tamper(pt: bytes, aad: bytes) -> None:
    key = crypto.new_key()
    env = crypto.seal(key, pt, aad=aad)
    assert env[0] == crypto.SEAL_VERSION
    assert crypto.open_sealed(key, env, aad=aad) == pt
    for i in (0, 1, len(env) - 1):
        bad = bytearray(env)
        bad[i] ^= 1
        with pytest.raises(DecryptionError):
            crypto.open_sealed(key, bytes(bad), aad=aad)
    with pytest.raises(DecryptionError):
        crypto.open_sealed(key, env, aad=aad + b"x")


def test_seal_is_deterministic_with_injected_rng() -> None:
    key = bytes(32)
    nonce = bytes(range(12))
    env = crypto.seal(key, b"hello", rng=lambda n: nonce[:n])
    assert env[:13] == b"\x01" + nonce
    assert crypto.open_sealed(key, env) == b"hello"


def test_decryption_error_is_opaque() -> None:
    key = crypto.new_key()
    with pytest.raises(DecryptionError) as info:
        crypto.open_sealed(key, b"\x02" + bytes(40))
    assert str(info.value) == "decryption failed"
    with pytest.raises(DecryptionError):
        crypto.open_sealed(key, b"\x01")


@pytest.mark.parametrize(
    "call",
    [
        lambda: crypto.seal(b"short", b"x"),
        lambda: crypto.new_key(8),
        lambda: crypto.keyed_hash(b"", b"x"),
        lambda: crypto.keyed_hash(b"k" * 65, b"x"),
        lambda: crypto.hkdf(b"short", info=b""),
        lambda: crypto.aead_encrypt(bytes(32), b"short", b"x"),
    ],
)
def test_misuse_raises_crypto_error(call: object) -> None:
    assert callable(call)
    with pytest.raises(CryptoError):
        call()


def test_constant_time_equal() -> None:
    assert crypto.constant_time_equal(b"abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")
    assert not crypto.constant_time_equal(b"abc", b"ab")


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert crypto.sha256_file(p, chunk=1) == VECTORS["sha256"][0]["hex"]
