"""Encrypted bucketed datasets: sealed chunks plus a manifest signed by the uploader.

Why: a party hands its data to the secure island only in encrypted form
(seed §7-8, "数据加密上传"). The island's storage operator, the network and
anyone who copies the files must learn nothing but sizes, and must not be
able to change, drop, reorder, splice or replay a single chunk unnoticed.
The envelope does that on top of the bucketed data plane (ARCHITECTURE idea
2), so the island can open only the buckets a job needs, and a new version of
a dataset re-seals and re-uploads only the buckets whose content changed.

Format (version :data:`ENVELOPE_VERSION`):

* Every non-empty bucket is serialized as one Arrow IPC stream (zstd), cut
  into chunks of ``chunk_bytes`` and each chunk sealed with AES-256-GCM
  (:mod:`atoll.crypto.chunks`) under the key of the dataset version it was
  sealed in, ``derive_chunk_key(dataset_key, dataset_id, version)``.
  The associated data pins a chunk to its place (:func:`chunk_aad`)::

      "atoll-chunk-aad-v1" || u16 len || dataset_id || u64 version
                           || u32 bucket || u32 chunk_index || u32 chunk_count

* Chunks are content-addressed: the manifest lists, per bucket, the SHA-256
  and size of each sealed chunk in order. A store keeps them under that hash.
* The manifest (canonical JSON, :class:`EnvelopeManifest`) names the dataset
  id and version, schema, id column, bucket function, upload strategy (and
  the digest of the ID-amplification filter request), per-bucket row count,
  the version the bucket was sealed in, a keyed MAC of the bucket plaintext
  (key derived from the dataset key, so equality of content is visible only
  to key holders -- used to skip unchanged buckets in incremental versions)
  and the hash of the previous version's signed manifest. It is signed with
  the uploader's Ed25519 key (:mod:`atoll.crypto.sign`, context
  ``atoll/dataset-manifest/v1``).

Reading (:class:`EnvelopeReader`) checks, in this order, and raises
:class:`~atoll.errors.IntegrityError` naming dataset, version, bucket and
chunk: the chunk count (truncation), each chunk's hash against the signed
manifest (tampering; a chunk found elsewhere in the manifest is reported as
reordered/replayed), then AES-GCM authentication with the positional AAD,
then the row count and schema of the decrypted bucket.

What the envelope leaks to whoever stores it: dataset id, version, schema,
bucket numbers, per-bucket row counts and byte sizes, and which buckets
changed between versions. Bucket numbers leak ~log2(B) bits of each
identifier's keyed hash to nobody who lacks the rows (see ``docs/island.md``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.crypto import (
    constant_time_equal,
    hkdf,
    keyed_hash,
    keyed_hash64_many,
    sha256_digest,
)
from atoll.crypto.chunks import ChunkSealer, derive_chunk_key
from atoll.crypto.sign import SigningKey, VerifyKey, open_signed, sign, verify
from atoll.errors import (
    ConfigError,
    CryptoError,
    DecryptionError,
    IntegrityError,
    ManifestError,
    SchemaError,
)
from atoll.ids.buckets import BUCKET_FUNCTION_NAME, BucketFunction

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ENVELOPE_VERSION",
    "MANIFEST_CONTEXT",
    "STRATEGIES",
    "ChunkRef",
    "ChunkStore",
    "EnvelopeManifest",
    "EnvelopeReader",
    "IdFilter",
    "SealedBucket",
    "SealedDataset",
    "SealedStore",
    "Strategy",
    "check_dataset_id",
    "chunk_aad",
    "manifest_digest",
    "parse_manifest",
    "seal_dataset",
]

#: Version of the envelope format (manifest key ``atoll_envelope_version``).
ENVELOPE_VERSION = 1
#: Signature context of dataset manifests.
MANIFEST_CONTEXT = b"atoll/dataset-manifest/v1"
#: Default plaintext bytes per chunk.
DEFAULT_CHUNK_BYTES = 4 << 20
#: Upload strategies (seed §8): whole table, all buckets, or ID-amplification filter.
Strategy = Literal["full", "bucketed", "filter"]
STRATEGIES: tuple[str, ...] = ("full", "bucketed", "filter")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AAD_LABEL = b"atoll-chunk-aad-v1"
_FILTER_PERSON = b"atoll-idfilter-1"
_MAX_CHUNKS = 1 << 20


def check_dataset_id(dataset_id: str) -> str:
    """Return ``dataset_id`` if it is a safe name (letters, digits, ``._-``; ≤128)."""
    if not isinstance(dataset_id, str) or not _ID_RE.match(dataset_id):
        raise ConfigError(
            f"dataset id {dataset_id!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
            " and start with a letter or digit"
        )
    return dataset_id


def chunk_aad(dataset_id: str, version: int, bucket: int, index: int, count: int) -> bytes:
    """The associated data that pins a sealed chunk to its place (module docstring)."""
    name = dataset_id.encode("utf-8")
    return (
        _AAD_LABEL
        + len(name).to_bytes(2, "big")
        + name
        + version.to_bytes(8, "big")
        + bucket.to_bytes(4, "big")
        + index.to_bytes(4, "big")
        + count.to_bytes(4, "big")
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# --------------------------------------------------------------------------- ID filter


@dataclass(frozen=True)
class IdFilter:
    """An ID-amplification filter request (seed §8, "ID放大过滤策略").

    The brand sends the ``bits``-bit prefixes of the keyed 64-bit hashes
    (``BLAKE2b-64(key=salt, person="atoll-idfilter-1")``) of its normalized
    IDs; the provider uploads only records whose ID hash has one of those
    prefixes. Each prefix covers about ``N / 2**bits`` of the provider's
    ``N`` IDs, so the provider learns the brand's set only up to that
    amplification factor, and uploads a fraction ``len(prefixes) / 2**bits``
    of its data instead of all of it.
    """

    bits: int
    prefixes: frozenset[int]
    salt: bytes
    id_kind: str | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.bits, bool)
            or not isinstance(self.bits, int)
            or not 1 <= self.bits <= 32
        ):
            raise ConfigError(f"filter bits must be 1..32, got {self.bits!r}")
        if not isinstance(self.salt, bytes) or not 16 <= len(self.salt) <= 64:
            raise ConfigError("filter salt must be 16..64 bytes")
        limit = 1 << self.bits
        if any(not 0 <= p < limit for p in self.prefixes):
            raise ConfigError(f"filter prefixes must be in 0..{limit - 1}")
        object.__setattr__(self, "prefixes", frozenset(int(p) for p in self.prefixes))

    def prefixes_of(self, ids: Iterable[str]) -> npt.NDArray[np.uint64]:
        """The ``bits``-bit prefix of each identifier's keyed hash."""
        hashes = keyed_hash64_many(
            self.salt, (v.encode("utf-8") for v in ids), person=_FILTER_PERSON
        )
        return hashes >> np.uint64(64 - self.bits)

    @classmethod
    def from_ids(
        cls, ids: Iterable[str], *, bits: int, salt: bytes, id_kind: str | None = None
    ) -> IdFilter:
        """The request covering every identifier in ``ids`` (brand side)."""
        probe = cls(bits, frozenset(), salt, id_kind)
        found = np.unique(probe.prefixes_of(ids))
        return cls(bits, frozenset(int(p) for p in found), salt, id_kind)

    def mask(self, column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
        """True where a row's (non-null) identifier is covered by the request (provider side)."""
        values = column.to_pylist()
        keep = np.zeros(len(values), dtype=np.bool_)
        present = [i for i, v in enumerate(values) if v is not None]
        if present:
            wanted = np.fromiter(sorted(self.prefixes), dtype=np.uint64, count=len(self.prefixes))
            got = self.prefixes_of(str(values[i]) for i in present)
            keep[np.asarray(present, dtype=np.int64)] = np.isin(got, wanted)
        return keep

    @property
    def coverage(self) -> float:
        """Fraction of the hash space the request covers (expected upload fraction)."""
        return len(self.prefixes) / float(1 << self.bits)

    def to_json(self) -> dict[str, Any]:
        """JSON form (the request file a brand sends to a provider)."""
        return {
            "atoll_id_filter": 1,
            "bits": self.bits,
            "salt_hex": self.salt.hex(),
            "id_kind": self.id_kind,
            "prefixes": sorted(self.prefixes),
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON form; manifests record it."""
        return sha256_digest(_canonical(self.to_json())).hex()

    @classmethod
    def from_json(cls, obj: object, *, where: str = "filter request") -> IdFilter:
        """Parse :meth:`to_json` output; ConfigError naming ``where`` on any problem."""
        if not isinstance(obj, dict) or obj.get("atoll_id_filter") != 1:
            raise ConfigError(f"{where}: not an Atoll ID filter request (version 1)")
        try:
            prefixes = obj["prefixes"]
            if not isinstance(prefixes, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) for p in prefixes
            ):
                raise ConfigError(f"{where}: 'prefixes' must be a list of integers")
            kind = obj.get("id_kind")
            return cls(
                int(obj["bits"]),
                frozenset(prefixes),
                bytes.fromhex(str(obj["salt_hex"])),
                None if kind is None else str(kind),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: malformed filter request ({exc})") from None


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One sealed chunk: SHA-256 (hex) and size of the sealed bytes."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class SealedBucket:
    """A sealed bucket: rows, the version it was sealed in, its chunks, a keyed content MAC."""

    bucket: int
    rows: int
    sealed_in: int
    chunks: tuple[ChunkRef, ...]
    content_mac: str

    def to_json(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "bucket": self.bucket,
            "rows": self.rows,
            "sealed_in": self.sealed_in,
            "content_mac": self.content_mac,
            "chunks": [{"sha256": c.sha256, "size": c.size} for c in self.chunks],
        }


@dataclass(frozen=True)
class EnvelopeManifest:
    """The signed description of one version of an encrypted dataset (module docstring)."""

    dataset_id: str
    version: int
    schema: pa.Schema
    id_column: str
    id_kind: str | None
    bucket_function: BucketFunction
    strategy: str
    filter_digest: str | None
    buckets: tuple[SealedBucket, ...]
    created_at: datetime
    previous: str | None
    signer: bytes
    chunk_bytes: int

    @property
    def rows(self) -> int:
        """Rows in this version."""
        return sum(b.rows for b in self.buckets)

    @property
    def sealed_bytes(self) -> int:
        """Total size of the sealed chunks this version references."""
        return sum(c.size for b in self.buckets for c in b.chunks)

    def bucket(self, number: int) -> SealedBucket | None:
        """The entry of ``number``, or None for an empty bucket."""
        for entry in self.buckets:
            if entry.bucket == number:
                return entry
        return None

    def chunk_hashes(self) -> list[str]:
        """Every chunk hash, in manifest order."""
        return [c.sha256 for b in self.buckets for c in b.chunks]

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (version first)."""
        fn = self.bucket_function
        return {
            "atoll_envelope_version": ENVELOPE_VERSION,
            "dataset_id": self.dataset_id,
            "version": self.version,
            "created_at": _iso(self.created_at),
            "previous": self.previous,
            "signer": self.signer.hex(),
            "id_column": self.id_column,
            "id_kind": self.id_kind,
            "strategy": self.strategy,
            "filter_digest": self.filter_digest,
            "chunk_bytes": self.chunk_bytes,
            "cipher": "AES-256-GCM, key HKDF-SHA256(dataset key, id, sealed_in)",
            "bucket_function": {"name": fn.name, "buckets": fn.buckets, "salt_hex": fn.salt.hex()},
            "schema_ipc_base64": base64.b64encode(self.schema.serialize().to_pybytes()).decode(),
            "rows": self.rows,
            "buckets": [b.to_json() for b in self.buckets],
        }

    def canonical(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces): what the uploader signs."""
        return _canonical(self.to_json())


def _need(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}: field {key!r}: missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ManifestError(f"{where}: field {key!r}: wrong type {type(value).__name__}")
    return value


def _nonneg(obj: Mapping[str, Any], key: str, where: str) -> int:
    value: int = _need(obj, key, int, where)
    if value < 0:
        raise ManifestError(f"{where}: field {key!r}: must be >= 0")
    return value


def _manifest_from_json(obj: object, where: str) -> EnvelopeManifest:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: not a JSON object")
    version = _need(obj, "atoll_envelope_version", int, where)
    if version != ENVELOPE_VERSION:
        raise ManifestError(f"{where}: unknown envelope version {version}")
    dataset_id = _need(obj, "dataset_id", str, where)
    try:
        check_dataset_id(dataset_id)
    except ConfigError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    dataset_version = _need(obj, "version", int, where)
    if dataset_version < 1:
        raise ManifestError(f"{where}: field 'version' must be >= 1")
    try:
        schema = pa.ipc.read_schema(
            pa.py_buffer(
                base64.b64decode(_need(obj, "schema_ipc_base64", str, where), validate=True)
            )
        )
    except (binascii.Error, ValueError, pa.ArrowException) as exc:
        raise ManifestError(f"{where}: field 'schema_ipc_base64': not an Arrow schema") from exc
    id_column = _need(obj, "id_column", str, where)
    if id_column not in schema.names:
        raise ManifestError(f"{where}: id column {id_column!r} is not in the schema")
    fn_obj = _need(obj, "bucket_function", dict, where)
    if fn_obj.get("name") != BUCKET_FUNCTION_NAME:
        raise ManifestError(f"{where}: unknown bucket function {fn_obj.get('name')!r}")
    try:
        fn = BucketFunction(
            _need(fn_obj, "buckets", int, where),
            bytes.fromhex(_need(fn_obj, "salt_hex", str, where)),
        )
    except (ValueError, ConfigError) as exc:
        raise ManifestError(f"{where}: field 'bucket_function': {exc}") from None
    strategy = _need(obj, "strategy", str, where)
    if strategy not in STRATEGIES:
        raise ManifestError(f"{where}: unknown strategy {strategy!r}")
    filter_digest = _need(obj, "filter_digest", (str, type(None)), where)
    if (strategy == "filter") != (filter_digest is not None):
        raise ManifestError(f"{where}: a filter digest goes with strategy 'filter' only")
    previous = _need(obj, "previous", (str, type(None)), where)
    if previous is not None and not _HEX64.match(previous):
        raise ManifestError(f"{where}: field 'previous' must be 64 hex digits")
    try:
        signer = bytes.fromhex(_need(obj, "signer", str, where))
        VerifyKey(signer)
    except (ValueError, CryptoError) as exc:
        raise ManifestError(f"{where}: field 'signer': not an Ed25519 public key") from exc
    chunk_bytes = _nonneg(obj, "chunk_bytes", where)
    entries: list[SealedBucket] = []
    total_chunks = 0
    for i, raw in enumerate(_need(obj, "buckets", list, where)):
        at = f"{where} buckets[{i}]"
        if not isinstance(raw, dict):
            raise ManifestError(f"{at}: must be an object")
        number = _nonneg(raw, "bucket", at)
        if number >= fn.buckets:
            raise ManifestError(f"{at}: bucket {number} is not below {fn.buckets}")
        sealed_in = _need(raw, "sealed_in", int, at)
        if not 1 <= sealed_in <= dataset_version:
            raise ManifestError(f"{at}: sealed_in {sealed_in} not in 1..{dataset_version}")
        chunks = []
        for j, c in enumerate(_need(raw, "chunks", list, at)):
            if not isinstance(c, dict):
                raise ManifestError(f"{at} chunks[{j}]: must be an object")
            digest = _need(c, "sha256", str, f"{at} chunks[{j}]")
            if not _HEX64.match(digest):
                raise ManifestError(f"{at} chunks[{j}]: sha256 must be 64 hex digits")
            chunks.append(ChunkRef(digest, _nonneg(c, "size", f"{at} chunks[{j}]")))
        if not chunks:
            raise ManifestError(f"{at}: a listed bucket needs chunks")
        total_chunks += len(chunks)
        if total_chunks > _MAX_CHUNKS:
            raise ManifestError(f"{where}: more than {_MAX_CHUNKS} chunks")
        mac = _need(raw, "content_mac", str, at)
        if not _HEX64.match(mac):
            raise ManifestError(f"{at}: content_mac must be 64 hex digits")
        entries.append(
            SealedBucket(number, _nonneg(raw, "rows", at), sealed_in, tuple(chunks), mac)
        )
    numbers = [e.bucket for e in entries]
    if numbers != sorted(set(numbers)):
        raise ManifestError(f"{where}: bucket numbers must be unique and increasing")
    manifest = EnvelopeManifest(
        dataset_id=dataset_id,
        version=dataset_version,
        schema=schema,
        id_column=id_column,
        id_kind=_need(obj, "id_kind", (str, type(None)), where),
        bucket_function=fn,
        strategy=strategy,
        filter_digest=filter_digest,
        buckets=tuple(entries),
        created_at=_parse_time(_need(obj, "created_at", str, where), where),
        previous=previous,
        signer=signer,
        chunk_bytes=chunk_bytes,
    )
    if _nonneg(obj, "rows", where) != manifest.rows:
        raise ManifestError(f"{where}: field 'rows' does not equal the sum of bucket rows")
    return manifest


def _parse_time(text: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ManifestError(f"{where}: field 'created_at': not ISO 8601") from None
    if moment.tzinfo is None:
        raise ManifestError(f"{where}: field 'created_at': no timezone")
    return moment


def manifest_digest(signed: bytes) -> str:
    """SHA-256 (hex) of a signed manifest blob: how jobs and receipts name a version."""
    return sha256_digest(signed).hex()


def parse_manifest(
    signed: bytes, *, expected_signer: VerifyKey | None = None, where: str = "manifest"
) -> EnvelopeManifest:
    """Verify a signed manifest blob and parse it.

    The signature is checked with the key named inside the manifest, and
    that key must equal ``expected_signer`` when one is given (the job
    manifest pins each party's key). Any failure raises
    :class:`~atoll.errors.IntegrityError` (signature, signer) or
    :class:`~atoll.errors.ManifestError` (content).
    """
    try:
        _, _, payload = open_signed(signed)
    except CryptoError as exc:
        raise IntegrityError(f"{where}: not a signed manifest ({exc})") from None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: payload is not JSON ({exc})") from None
    manifest = _manifest_from_json(obj, where)
    if _canonical(obj) != payload:
        raise ManifestError(f"{where}: payload is not in canonical form")
    key = VerifyKey(manifest.signer)
    if expected_signer is not None and not constant_time_equal(key.raw, expected_signer.raw):
        raise IntegrityError(
            f"{where}: signed by key {key.to_text()}, "
            f"but the job expects {expected_signer.to_text()}"
        )
    try:
        verify(key, signed, context=MANIFEST_CONTEXT)
    except CryptoError as exc:
        raise IntegrityError(f"{where}: manifest signature does not verify ({exc})") from None
    return manifest


# --------------------------------------------------------------------------- sealing


class ChunkStore(Protocol):
    """Where sealed chunks live, addressed by SHA-256 (hex)."""

    def put_chunk(self, sha256: str, data: bytes) -> None:
        """Store a sealed chunk."""

    def get_chunk(self, sha256: str) -> bytes:
        """Return a sealed chunk; IntegrityError if it is missing."""


@dataclass(frozen=True)
class SealedDataset:
    """What :func:`seal_dataset` produced: the manifest, its signed blob, new chunk hashes."""

    manifest: EnvelopeManifest
    signed: bytes
    new_chunks: tuple[str, ...]

    @property
    def digest(self) -> str:
        """:func:`manifest_digest` of the signed blob."""
        return manifest_digest(self.signed)


def _mac_key(dataset_key: bytes, dataset_id: str) -> bytes:
    return hkdf(dataset_key, info=b"atoll-bucket-mac-v1|" + dataset_id.encode("utf-8"))


def _serialize(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return cast(bytes, sink.getvalue().to_pybytes())


def seal_dataset(
    buckets: Iterable[tuple[int, pa.Table]],
    *,
    dataset_id: str,
    version: int,
    dataset_key: bytes,
    signing_key: SigningKey,
    schema: pa.Schema,
    id_column: str,
    bucket_function: BucketFunction,
    store: ChunkStore,
    id_kind: str | None = None,
    strategy: str = "bucketed",
    id_filter: IdFilter | None = None,
    previous: tuple[EnvelopeManifest, bytes] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    now: datetime | None = None,
) -> SealedDataset:
    """Seal ``(bucket, rows)`` pairs into ``store`` and sign the manifest.

    ``buckets`` streams one bucket at a time (from
    :func:`atoll.data.datasets.bucket_table` or
    :meth:`~atoll.data.datasets.BucketedDataset.iter_buckets`); a bucket
    number may appear once. With ``previous`` (the last version's manifest
    and signed blob), ``version`` must be the next number, and buckets whose
    content MAC is unchanged keep their old chunks (nothing re-sealed or
    re-uploaded); only changed or new buckets are sealed.
    """
    check_dataset_id(dataset_id)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"dataset version must be a positive integer, got {version!r}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if (strategy == "filter") != (id_filter is not None):
        raise ConfigError("strategy 'filter' needs an ID filter request, and only it takes one")
    if strategy == "full" and bucket_function.buckets != 1:
        raise ConfigError("strategy 'full' uploads the whole table as one bucket (buckets = 1)")
    if not 1024 <= chunk_bytes <= 256 << 20:
        raise ConfigError("chunk_bytes must be between 1 KiB and 256 MiB")
    if id_column not in schema.names:
        raise SchemaError(
            f"id column not found (columns: {', '.join(schema.names)})", column=id_column
        )
    old: dict[int, SealedBucket] = {}
    previous_digest = None
    if previous is not None:
        prev_manifest, prev_blob = previous
        if prev_manifest.dataset_id != dataset_id or version != prev_manifest.version + 1:
            raise ConfigError(
                f"an update of {prev_manifest.dataset_id} v{prev_manifest.version} "
                f"must be {prev_manifest.dataset_id} v{prev_manifest.version + 1}"
            )
        if prev_manifest.bucket_function != bucket_function or not prev_manifest.schema.equals(
            schema
        ):
            raise ConfigError("an update must keep the bucket function and the schema")
        old = {b.bucket: b for b in prev_manifest.buckets}
        previous_digest = manifest_digest(prev_blob)
    sealer = ChunkSealer(derive_chunk_key(dataset_key, dataset_id=dataset_id, version=version))
    mac_key = _mac_key(dataset_key, dataset_id)
    entries: dict[int, SealedBucket] = {}
    new_chunks: list[str] = []
    for number, table in buckets:
        if number in entries:
            raise ConfigError(f"bucket {number} given twice")
        if not 0 <= number < bucket_function.buckets:
            raise ConfigError(f"bucket {number} out of range 0..{bucket_function.buckets - 1}")
        if table.num_rows == 0:
            continue
        if not table.schema.remove_metadata().equals(schema.remove_metadata()):
            raise SchemaError(
                f"bucket {number} has schema {table.schema} but the dataset has {schema}"
            )
        payload = _serialize(table.replace_schema_metadata(None).cast(schema))
        mac = keyed_hash(mac_key, payload).hex()
        before = old.get(number)
        if (
            before is not None
            and before.rows == table.num_rows
            and constant_time_equal(before.content_mac.encode(), mac.encode())
        ):
            entries[number] = before
            continue
        count = max(1, -(-len(payload) // chunk_bytes))
        refs = []
        for index in range(count):
            piece = payload[index * chunk_bytes : (index + 1) * chunk_bytes]
            aad = chunk_aad(dataset_id, version, number, index, count)
            sealed = sealer.seal(piece, aad=aad)
            digest = sha256_digest(sealed).hex()
            store.put_chunk(digest, sealed)
            new_chunks.append(digest)
            refs.append(ChunkRef(digest, len(sealed)))
        entries[number] = SealedBucket(number, table.num_rows, version, tuple(refs), mac)
    manifest = EnvelopeManifest(
        dataset_id=dataset_id,
        version=version,
        schema=schema.remove_metadata(),
        id_column=id_column,
        id_kind=id_kind,
        bucket_function=bucket_function,
        strategy=strategy,
        filter_digest=id_filter.digest() if id_filter is not None else None,
        buckets=tuple(entries[k] for k in sorted(entries)),
        created_at=now if now is not None else datetime.now(UTC),
        previous=previous_digest,
        signer=signing_key.verify_key.raw,
        chunk_bytes=chunk_bytes,
    )
    signed = sign(signing_key, manifest.canonical(), context=MANIFEST_CONTEXT)
    return SealedDataset(manifest, signed, tuple(new_chunks))


# --------------------------------------------------------------------------- opening


class EnvelopeReader:
    """Opens the buckets of one manifest with the dataset key (island side)."""

    def __init__(self, manifest: EnvelopeManifest, dataset_key: bytes) -> None:
        self.manifest = manifest
        self._key = bytearray(dataset_key)
        self._sealers: dict[int, ChunkSealer] = {}
        self._positions = {
            c.sha256: (b.bucket, i) for b in manifest.buckets for i, c in enumerate(b.chunks)
        }

    def _sealer(self, version: int) -> ChunkSealer:
        if not self._key:
            raise CryptoError("this reader's key has been destroyed")
        if version not in self._sealers:
            key = derive_chunk_key(
                bytes(self._key), dataset_id=self.manifest.dataset_id, version=version
            )
            self._sealers[version] = ChunkSealer(key)
        return self._sealers[version]

    def destroy(self) -> None:
        """Zero the dataset key and forget derived ciphers (burn after use)."""
        for i in range(len(self._key)):
            self._key[i] = 0
        self._key = bytearray()
        self._sealers.clear()

    def _where(self, bucket: int, index: int | None = None, count: int | None = None) -> str:
        m = self.manifest
        text = f"dataset {m.dataset_id} v{m.version} bucket {bucket}"
        return text if index is None else f"{text} chunk {index + 1}/{count}"

    def open_bucket(self, bucket: int, chunks: Sequence[bytes]) -> pa.Table:
        """Check and decrypt the sealed chunks of ``bucket`` (module docstring order)."""
        entry = self.manifest.bucket(bucket)
        if entry is None:
            return self.manifest.schema.empty_table()
        count = len(entry.chunks)
        if len(chunks) != count:
            raise IntegrityError(
                f"{self._where(bucket)}: {len(chunks)} chunks given, the signed manifest lists "
                f"{count} (truncated or padded)"
            )
        sealer = self._sealer(entry.sealed_in)
        parts: list[bytes] = []
        for index, (ref, data) in enumerate(zip(entry.chunks, chunks, strict=True)):
            where = self._where(bucket, index, count)
            digest = sha256_digest(data).hex()
            if not constant_time_equal(digest.encode(), ref.sha256.encode()):
                elsewhere = self._positions.get(digest)
                if elsewhere is not None:
                    raise IntegrityError(
                        f"{where}: holds chunk {elsewhere[1] + 1} of bucket {elsewhere[0]} "
                        "(reordered or spliced)"
                    )
                raise IntegrityError(
                    f"{where}: content hash {digest[:16]}... is not the {ref.sha256[:16]}... the "
                    "signed manifest lists (tampered, or replayed from another version)"
                )
            aad = chunk_aad(self.manifest.dataset_id, entry.sealed_in, bucket, index, count)
            try:
                parts.append(sealer.open(data, aad=aad))
            except DecryptionError:
                raise IntegrityError(
                    f"{where}: authentication failed (wrong key, or a chunk sealed for another "
                    "dataset, version, bucket or position)"
                ) from None
        try:
            table = pa.ipc.open_stream(pa.py_buffer(b"".join(parts))).read_all()
        except pa.ArrowException as exc:
            raise IntegrityError(
                f"{self._where(bucket)}: decrypted bytes are not Arrow IPC"
            ) from exc
        if table.num_rows != entry.rows:
            raise IntegrityError(
                f"{self._where(bucket)}: {table.num_rows} rows, the manifest says {entry.rows}"
            )
        if not table.schema.remove_metadata().equals(self.manifest.schema):
            raise IntegrityError(f"{self._where(bucket)}: schema differs from the manifest")
        return table

    def iter_buckets(
        self, store: ChunkStore, buckets: Iterable[int] | None = None
    ) -> Iterator[tuple[int, pa.Table]]:
        """Stream ``(bucket, rows)`` for ``buckets`` (default: all listed), one at a time."""
        wanted = [b.bucket for b in self.manifest.buckets] if buckets is None else list(buckets)
        for number in wanted:
            entry = self.manifest.bucket(number)
            if entry is None:
                continue
            data = [store.get_chunk(c.sha256) for c in entry.chunks]
            yield number, self.open_bucket(number, data)


# --------------------------------------------------------------------------- storage


class SealedStore:
    """A directory of signed manifests and content-addressed sealed chunks.

    Layout::

        root/manifests/<dataset_id>/v<version>.sig
        root/chunks/<sha256[:2]>/<sha256>

    Used by the island (what parties upload) and by parties (what they
    sealed, for incremental updates). Nothing here is plaintext.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        (self.root / "manifests").mkdir(parents=True, exist_ok=True)
        (self.root / "chunks").mkdir(parents=True, exist_ok=True)

    def _chunk_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ConfigError(f"chunk name {sha256!r} is not 64 lowercase hex digits")
        return self.root / "chunks" / sha256[:2] / sha256

    def put_chunk(self, sha256: str, data: bytes) -> None:
        """Store a chunk after checking that its SHA-256 is ``sha256``."""
        path = self._chunk_path(sha256)
        actual = sha256_digest(data).hex()
        if not constant_time_equal(actual.encode(), sha256.encode()):
            raise IntegrityError(
                f"chunk {sha256[:16]}...: received bytes hash to {actual[:16]}... (corrupted or "
                "tampered in transit)"
            )
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_chunk(self, sha256: str) -> bytes:
        """Read a chunk; IntegrityError when it is missing."""
        try:
            return self._chunk_path(sha256).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"chunk {sha256[:16]}... is missing from the store") from None

    def has_chunk(self, sha256: str) -> bool:
        """True if the chunk is stored."""
        return self._chunk_path(sha256).is_file()

    def missing_chunks(self, manifest: EnvelopeManifest) -> list[str]:
        """Hashes the manifest lists that are not stored yet (what still has to be uploaded)."""
        return [h for h in manifest.chunk_hashes() if not self.has_chunk(h)]

    def _manifest_path(self, dataset_id: str, version: int) -> Path:
        check_dataset_id(dataset_id)
        return self.root / "manifests" / dataset_id / f"v{version}.sig"

    def put_manifest(
        self, signed: bytes, *, expected_signer: VerifyKey | None = None
    ) -> EnvelopeManifest:
        """Verify and store a signed manifest; a different blob for a stored version is refused."""
        manifest = parse_manifest(signed, expected_signer=expected_signer)
        path = self._manifest_path(manifest.dataset_id, manifest.version)
        if path.exists():
            if not constant_time_equal(path.read_bytes(), signed):
                raise IntegrityError(
                    f"dataset {manifest.dataset_id} v{manifest.version} already exists with "
                    "another manifest (versions are immutable; upload the next version)"
                )
            return manifest
        if manifest.version > 1:
            stored = self.versions(manifest.dataset_id)
            if stored and manifest.previous is not None:
                prev = self._manifest_path(manifest.dataset_id, manifest.version - 1)
                if prev.exists() and manifest_digest(prev.read_bytes()) != manifest.previous:
                    raise IntegrityError(
                        f"dataset {manifest.dataset_id} v{manifest.version}: 'previous' does not "
                        f"name the stored v{manifest.version - 1}"
                    )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(signed)
        return manifest

    def manifest(
        self, dataset_id: str, version: int, *, expected_signer: VerifyKey | None = None
    ) -> tuple[EnvelopeManifest, bytes]:
        """Load, verify and return a stored manifest and its signed blob."""
        path = self._manifest_path(dataset_id, version)
        try:
            signed = path.read_bytes()
        except FileNotFoundError:
            raise ManifestError(f"dataset {dataset_id} v{version} has not been uploaded") from None
        manifest = parse_manifest(signed, expected_signer=expected_signer, where=str(path))
        if manifest.dataset_id != dataset_id or manifest.version != version:
            raise IntegrityError(f"{path}: holds {manifest.dataset_id} v{manifest.version}")
        return manifest, signed

    def versions(self, dataset_id: str) -> list[int]:
        """Stored versions of a dataset, ascending."""
        folder = self.root / "manifests" / check_dataset_id(dataset_id)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.glob("v*.sig"):
            digits = path.stem[1:]
            if digits.isdigit():
                found.append(int(digits))
        return sorted(found)

    def datasets(self) -> dict[str, list[int]]:
        """Every stored dataset id and its versions."""
        folder = self.root / "manifests"
        return {p.name: self.versions(p.name) for p in sorted(folder.iterdir()) if p.is_dir()}
