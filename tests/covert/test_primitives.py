"""Known answers and properties of the covert query's primitives: RSA, OT, signatures."""

from __future__ import annotations

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto.ot import OtSender, ot_receiver_choose, ot_receiver_key, slot_mask
from atoll.crypto.rsa import (
    RsaKeyPool,
    RsaPrivateKey,
    RsaPublicKey,
    decrypt_many,
    encrypt_below,
    generate_key,
)
from atoll.crypto.sign import SigningKey, VerifyKey, open_signed, sign, verify
from atoll.errors import CryptoError

# --- RSA ----------------------------------------------------------------------------


def test_textbook_rsa_known_answer() -> None:
    # Provenance: the worked example of the RSA article on Wikipedia ("RSA
    # (cryptosystem)", section "Example"): p=61, q=53, n=3233, e=17, d=2753,
    # m=65 -> c=2790, and 2790^2753 mod 3233 = 65.
    key = RsaPrivateKey(61, 53, 17)
    assert key.public.n == 3233
    assert key.public.encrypt_raw(65) == 2790
    assert key.decrypt_raw(2790) == 65


def test_rsa_crt_matches_plain_pow(rsa_pool: RsaKeyPool) -> None:
    key = rsa_pool.keys[0]
    n, e = key.public.n, key.public.e
    d = pow(e, -1, (key.p - 1) * (key.q - 1))  # independent: Python's built-in pow
    for m in (0, 1, 2, n - 1, 123456789):
        c = pow(m, e, n)
        assert key.public.encrypt_raw(m) == c
        assert key.decrypt_raw(c) == pow(c, d, n) == m


def test_generated_keys_carry_a_valid_certificate(rsa_pool: RsaKeyPool) -> None:
    for key in rsa_pool.keys[:3]:
        key.public.check(min_bits=1024)


def test_certificate_rejects_forged_roots_and_bad_moduli(rsa_pool: RsaKeyPool) -> None:
    pub = rsa_pool.keys[0].public
    forged = RsaPublicKey(pub.n, pub.e, (2, 3, 5, 7))
    with pytest.raises(CryptoError, match="certificate"):
        forged.check(min_bits=1024)
    with pytest.raises(CryptoError, match="certificate"):
        RsaPublicKey(pub.n, pub.e, ()).check(min_bits=1024)
    with pytest.raises(CryptoError, match="exponent"):
        RsaPublicKey(pub.n, 3, pub.certificate).check(min_bits=1024)
    with pytest.raises(CryptoError, match="outside"):
        pub.check(min_bits=2048)
    small_factor = 3 * int(gmpy2.next_prime(2**1030))
    with pytest.raises(CryptoError, match="small prime"):
        RsaPublicKey(small_factor, pub.e, pub.certificate).check(min_bits=1024)


def test_non_permutation_key_cannot_be_certified() -> None:
    # A modulus with e | p-1: x -> x^e is not a permutation, so most certificate
    # challenges have no e-th root and the provider cannot answer them.
    e = 65537
    k = 2**480 // e
    while not gmpy2.is_prime(2 * k * e + 1):
        k += 1
    p = 2 * k * e + 1
    q = int(gmpy2.next_prime(2**520))
    n = p * q
    # The best a cheater can do is send the e-th power map's preimages it can compute:
    # none exist for a non-residue mod p, so any roots it sends fail.
    with pytest.raises(CryptoError):
        RsaPublicKey(n, e, (1, 1, 1, 1)).check(min_bits=1000)


@settings(max_examples=20, deadline=None)
@given(index=st.integers(min_value=0, max_value=5), seed=st.binary(min_size=8, max_size=8))
def test_encrypt_below_decrypts_to_r_only_at_index(
    rsa_pool: RsaKeyPool, index: int, seed: bytes
) -> None:
    keys = rsa_pool.keys[:6]
    pubs = [k.public for k in keys]
    r, c = encrypt_below(pubs, index)
    assert c < min(p.n for p in pubs)
    values = decrypt_many(keys, c)
    assert values[index] == r
    assert all(v != r for i, v in enumerate(values) if i != index)


def test_rsa_key_serialization_round_trip(rsa_pool: RsaKeyPool) -> None:
    small = RsaKeyPool(rsa_pool.keys[:2])
    again = RsaKeyPool.from_bytes(small.to_bytes())
    assert [k.public for k in again.keys] == [k.public for k in small.keys]
    with pytest.raises(CryptoError):
        RsaKeyPool.from_bytes(b"\x02" + small.to_bytes()[1:])
    with pytest.raises(CryptoError):
        RsaPrivateKey.from_bytes(small.keys[0].to_bytes()[:-1])


def test_generate_key_refuses_small_sizes() -> None:
    with pytest.raises(CryptoError):
        generate_key(512)


# --- OT ---------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=40), data=st.data())
def test_ot_receiver_gets_exactly_the_chosen_key(n: int, data: st.DataObject) -> None:
    choice = data.draw(st.integers(min_value=0, max_value=n - 1))
    sender = OtSender.new()
    chosen = ot_receiver_choose(sender.A, choice)
    keys = sender.keys(chosen.B, n, context=b"ctx")
    mine = ot_receiver_key(sender.A, chosen, context=b"ctx")
    assert [i for i, k in enumerate(keys) if k == mine] == [choice]
    assert len(set(keys)) == n
    assert ot_receiver_key(sender.A, chosen, context=b"other") != mine


def test_ot_rejects_invalid_points() -> None:
    sender = OtSender.new()
    with pytest.raises(CryptoError):
        sender.keys(bytes(32), 4, context=b"")
    with pytest.raises(CryptoError):
        sender.keys(b"\xff" * 32, 4, context=b"")
    with pytest.raises(CryptoError):
        ot_receiver_choose(bytes(32), 1)


def test_ot_is_deterministic_under_an_injected_rng() -> None:
    def rng_from(seed: int):  # type: ignore[no-untyped-def]
        state = {"i": seed}

        def rng(k: int) -> bytes:
            state["i"] += 1
            return bytes((state["i"] * 7 + j) % 256 for j in range(k))

        return rng

    a = OtSender.new(rng=rng_from(1))
    b = OtSender.new(rng=rng_from(1))
    assert a == b


def test_slot_mask_lengths_and_separation() -> None:
    m1 = slot_mask(b"s" * 32, context=b"a", length=200)
    assert len(m1) == 200
    assert slot_mask(b"s" * 32, context=b"a", length=10) == m1[:10]
    assert slot_mask(b"s" * 32, context=b"b", length=200) != m1
    assert slot_mask(b"t" * 32, context=b"a", length=200) != m1


# --- signatures -------------------------------------------------------------------------


def test_ed25519_rfc8032_test_vector_1() -> None:
    # Provenance: RFC 8032 section 7.1, TEST 1 (empty message).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = SigningKey(seed)
    assert key.verify_key.raw.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert key.sign_raw(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_signed_envelope_round_trip_and_tampering() -> None:
    key = SigningKey.generate()
    env = sign(key, b"payload", context=b"atoll/test")
    assert env[0] == 1
    assert verify(key.verify_key, env, context=b"atoll/test") == b"payload"
    with pytest.raises(CryptoError):
        verify(key.verify_key, env, context=b"atoll/other")
    with pytest.raises(CryptoError):
        verify(key.verify_key, env[:-1] + b"X", context=b"atoll/test")
    with pytest.raises(CryptoError):
        verify(SigningKey.generate().verify_key, env, context=b"atoll/test")
    with pytest.raises(CryptoError, match="version"):
        open_signed(b"\x02" + env[1:])
    with pytest.raises(CryptoError):
        open_signed(env[:20])
    assert VerifyKey.from_text(key.verify_key.to_text()) == key.verify_key
