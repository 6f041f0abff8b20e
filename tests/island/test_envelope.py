"""Encrypted bucketed datasets: sealing, opening, and every way a chunk can be misplaced.

Chunk-cipher provenance: AES-256-GCM is OpenSSL's through ``cryptography``;
the known-answer check below is NIST SP 800-38D / GCM spec test case 14
(256-bit zero key, zero IV, one zero block), reproduced through our
sealed-chunk layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.crypto.chunks import (
    CHUNK_OVERHEAD,
    CHUNK_VERSION,
    ChunkSealer,
    derive_chunk_key,
    open_chunk,
    seal_chunk,
)
from atoll.crypto.sign import SigningKey
from atoll.data.datasets import bucket_table
from atoll.data.envelope import (
    EnvelopeManifest,
    EnvelopeReader,
    IdFilter,
    SealedDataset,
    SealedStore,
    chunk_aad,
    parse_manifest,
    seal_dataset,
)
from atoll.errors import ConfigError, DecryptionError, IntegrityError, ManifestError
from atoll.ids.buckets import BucketFunction


def test_gcm_known_answer_through_the_chunk_layout() -> None:
    # GCM spec (McGrew & Viega) test case 14: K = 0^256, IV = 0^96, P = 0^128.
    key, iv = bytes(32), bytes(12)
    expected_ct = bytes.fromhex("cea7403d4d606b6e074ec5d3baf39d18")
    expected_tag = bytes.fromhex("d0d1c8a799996bf0265b98b5d48ab919")
    assert AESGCM(key).encrypt(iv, bytes(16), None) == expected_ct + expected_tag
    sealed = seal_chunk(key, bytes(16), aad=b"", rng=lambda n: bytes(n))
    assert sealed[0] == CHUNK_VERSION
    assert sealed[1:13] == iv
    assert len(sealed) == 16 + CHUNK_OVERHEAD
    # The version byte is authenticated as aad, so the ciphertext equals case 14's, the tag not.
    assert sealed[13:29] == expected_ct
    assert open_chunk(key, sealed, aad=b"") == bytes(16)


def test_chunk_aad_binds_position() -> None:
    key = os.urandom(32)
    sealer = ChunkSealer(key)
    aad = chunk_aad("brand", 1, 3, 0, 2)
    sealed = sealer.seal(b"rows", aad=aad)
    assert sealer.open(sealed, aad=aad) == b"rows"
    for other in (
        chunk_aad("brand", 2, 3, 0, 2),  # another version
        chunk_aad("brand", 1, 4, 0, 2),  # another bucket
        chunk_aad("brand", 1, 3, 1, 2),  # another index
        chunk_aad("brand", 1, 3, 0, 1),  # truncated count
        chunk_aad("brandx", 1, 3, 0, 2),  # another dataset
    ):
        with pytest.raises(DecryptionError):
            sealer.open(sealed, aad=other)


def test_version_keys_differ() -> None:
    key = os.urandom(32)
    assert derive_chunk_key(key, dataset_id="d", version=1) != derive_chunk_key(
        key, dataset_id="d", version=2
    )


def _table(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    phones = [f"13{int(x):09d}" for x in rng.integers(0, 10**9, size=n)]
    return pa.table(
        {"phone": phones, "score": rng.random(n), "tag": [f"t{i % 7}" for i in range(n)]}
    )


def _seal(
    store: SealedStore,
    table: pa.Table,
    key: bytes,
    sk: SigningKey,
    *,
    fn: BucketFunction | None = None,
    version: int = 1,
    previous: tuple[EnvelopeManifest, bytes] | None = None,
    strategy: str = "bucketed",
    id_filter: IdFilter | None = None,
) -> SealedDataset:
    fn = BucketFunction(8) if fn is None else fn
    return seal_dataset(
        sorted(bucket_table(table, "phone", fn).items()),
        dataset_id="brand",
        version=version,
        dataset_key=key,
        signing_key=sk,
        schema=table.schema,
        id_column="phone",
        bucket_function=fn,
        store=store,
        chunk_bytes=1024,
        previous=previous,
        strategy=strategy,
        id_filter=id_filter,
    )


def _all(reader: EnvelopeReader, store: SealedStore) -> pa.Table:
    return pa.concat_tables([t for _, t in reader.iter_buckets(store)])


def test_round_trip_and_manifest_signature(tmp_path: Path) -> None:
    store, key, sk = SealedStore(tmp_path), os.urandom(32), SigningKey.generate()
    table = _table(600)
    sealed = _seal(store, table, key, sk)
    manifest = store.put_manifest(sealed.signed, expected_signer=sk.verify_key)
    assert manifest.rows == 600
    assert store.missing_chunks(manifest) == []
    assert any(len(b.chunks) > 1 for b in manifest.buckets)
    out = _all(EnvelopeReader(manifest, key), store).sort_by("phone")
    assert out.equals(table.sort_by("phone"))
    with pytest.raises(IntegrityError, match="job expects"):
        parse_manifest(sealed.signed, expected_signer=SigningKey.generate().verify_key)
    flipped = bytearray(sealed.signed)
    flipped[-5] ^= 1
    with pytest.raises((IntegrityError, ManifestError)):
        parse_manifest(bytes(flipped))
    forged = bytearray(sealed.signed)
    forged[20] ^= 1  # inside the signature
    with pytest.raises(IntegrityError, match="signature"):
        parse_manifest(bytes(forged))


def test_wrong_dataset_key_is_refused(tmp_path: Path) -> None:
    store, sk = SealedStore(tmp_path), SigningKey.generate()
    sealed = _seal(store, _table(100), os.urandom(32), sk)
    reader = EnvelopeReader(sealed.manifest, os.urandom(32))
    with pytest.raises(IntegrityError, match="authentication failed"):
        _all(reader, store)


def test_tampered_reordered_truncated_and_replayed_chunks(tmp_path: Path) -> None:
    store, key, sk = SealedStore(tmp_path), os.urandom(32), SigningKey.generate()
    v1 = _seal(store, _table(600), key, sk)
    manifest = v1.manifest
    reader = EnvelopeReader(manifest, key)
    entry = next(b for b in manifest.buckets if len(b.chunks) >= 2)
    chunks = [store.get_chunk(c.sha256) for c in entry.chunks]
    assert reader.open_bucket(entry.bucket, chunks).num_rows == entry.rows
    tampered = bytearray(chunks[0])
    tampered[40] ^= 1
    with pytest.raises(IntegrityError, match="tampered"):
        reader.open_bucket(entry.bucket, [bytes(tampered), *chunks[1:]])
    with pytest.raises(IntegrityError, match="reordered or spliced"):
        reader.open_bucket(entry.bucket, [chunks[1], chunks[0], *chunks[2:]])
    with pytest.raises(IntegrityError, match="truncated"):
        reader.open_bucket(entry.bucket, chunks[:-1])
    other = next(b for b in manifest.buckets if b.bucket != entry.bucket)
    spliced = [store.get_chunk(other.chunks[0].sha256), *chunks[1:]]
    with pytest.raises(IntegrityError, match=f"chunk 1 of bucket {other.bucket}"):
        reader.open_bucket(entry.bucket, spliced)
    # A chunk of the same bucket from another version (re-sealed): hash differs from the manifest.
    v2 = _seal(store, _table(600, seed=2), key, sk, version=2, previous=(manifest, v1.signed))
    new_entry = v2.manifest.bucket(entry.bucket)
    assert new_entry is not None
    assert new_entry.sealed_in == 2
    replay = [store.get_chunk(new_entry.chunks[0].sha256), *chunks[1:]]
    with pytest.raises(IntegrityError, match="replayed from another version"):
        reader.open_bucket(entry.bucket, replay)


def test_incremental_version_reseals_only_changed_buckets(tmp_path: Path) -> None:
    store, key, sk = SealedStore(tmp_path), os.urandom(32), SigningKey.generate()
    fn = BucketFunction(16)
    base = _table(400)
    v1 = _seal(store, base, key, sk, fn=fn)
    store.put_manifest(v1.signed)
    extra = pa.table({"phone": ["13900000001"], "score": [0.5], "tag": ["new"]})
    changed_bucket = fn.bucket_of("13900000001")
    v2 = _seal(
        store,
        pa.concat_tables([base, extra]),
        key,
        sk,
        fn=fn,
        version=2,
        previous=(v1.manifest, v1.signed),
    )
    store.put_manifest(v2.signed)
    sealed_in = {b.bucket: b.sealed_in for b in v2.manifest.buckets}
    assert sealed_in[changed_bucket] == 2
    assert all(v == 1 for b, v in sealed_in.items() if b != changed_bucket)
    changed = v2.manifest.bucket(changed_bucket)
    assert changed is not None
    assert set(v2.new_chunks) == {c.sha256 for c in changed.chunks}
    assert v2.manifest.previous == v1.digest
    out = _all(EnvelopeReader(v2.manifest, key), store)
    assert out.num_rows == 401
    with pytest.raises(IntegrityError, match="versions are immutable"):
        store.put_manifest(_seal(store, base, key, sk, fn=fn).signed)
    with pytest.raises(ConfigError, match="must be brand v3"):
        _seal(store, base, key, sk, fn=fn, version=5, previous=(v2.manifest, v2.signed))


def test_store_refuses_corrupted_upload(tmp_path: Path) -> None:
    store = SealedStore(tmp_path)
    data = b"sealed bytes"
    with pytest.raises(IntegrityError, match="tampered in transit"):
        store.put_chunk("0" * 64, data)


def test_id_filter_amplification() -> None:
    salt = os.urandom(32)
    brand_ids = [f"1380000{i:04d}" for i in range(50)]
    request = IdFilter.from_ids(brand_ids, bits=10, salt=salt)
    assert 0 < request.coverage <= 50 / 1024
    provider = pa.array(brand_ids + [f"1390000{i:04d}" for i in range(5000)])
    keep = request.mask(provider)
    assert keep[:50].all()  # every brand ID survives the filter
    assert 0 < keep[50:].mean() < 0.2  # most of the provider's other IDs are not uploaded
    again = IdFilter.from_json(request.to_json())
    assert again == request
    assert again.digest() == request.digest()
    with pytest.raises(ConfigError):
        IdFilter.from_json(
            {"atoll_id_filter": 1, "bits": 99, "salt_hex": salt.hex(), "prefixes": []}
        )


def test_filter_strategy_records_the_request(tmp_path: Path) -> None:
    store, key, sk = SealedStore(tmp_path), os.urandom(32), SigningKey.generate()
    request = IdFilter.from_ids(["13800000001"], bits=8, salt=os.urandom(16))
    sealed = _seal(store, _table(50), key, sk, strategy="filter", id_filter=request)
    assert parse_manifest(sealed.signed).filter_digest == request.digest()
    with pytest.raises(ConfigError, match="filter"):
        _seal(store, _table(50), key, sk, strategy="filter")


@settings(max_examples=15, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), st.integers(-5, 5)),
        min_size=1,
        max_size=80,
    ),
    buckets=st.integers(1, 6),
)
def test_property_open_returns_exactly_what_was_sealed(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int]], buckets: int
) -> None:
    store = SealedStore(tmp_path_factory.mktemp("env"))
    key, sk = os.urandom(32), SigningKey.generate()
    table = pa.table(
        {"phone": [r[0] for r in rows], "v": pa.array([r[1] for r in rows], pa.int64())}
    )
    fn = BucketFunction(buckets)
    sealed = seal_dataset(
        sorted(bucket_table(table, "phone", fn).items()),
        dataset_id="p",
        version=1,
        dataset_key=key,
        signing_key=sk,
        schema=table.schema,
        id_column="phone",
        bucket_function=fn,
        store=store,
        chunk_bytes=1024,
    )
    out = pa.concat_tables(
        [t for _, t in EnvelopeReader(parse_manifest(sealed.signed), key).iter_buckets(store)]
    )
    assert sorted(zip(out["phone"].to_pylist(), out["v"].to_pylist(), strict=True)) == sorted(rows)
