"""The bucket function: ``bucket = BLAKE2b-64_salt(normalized_id) mod B``.

Why: every dataset keyed by a person or device is hash-partitioned by the
same function (ARCHITECTURE idea 2), so that two parties who agree on ``B``
and the salt put the same identifier in the same bucket and can join bucket
by bucket. The function is fully specified here so that any party can
re-implement it in any language:

* input: the UTF-8 bytes of the *normalized* identifier (see
  :mod:`atoll.ids.normalize`), prefixed with nothing;
* ``h = BLAKE2b(input, digest_size=8, key=salt, person=b"atoll-bucket-v1")``
  (RFC 7693; ``person`` is zero-padded to 16 bytes by BLAKE2b itself);
* ``bucket = int.from_bytes(h, "big") mod B``.

The salt keeps bucket assignment from being predictable by third parties; it
is *not* a secret that protects identifiers (a bucket number leaks ~log2(B)
bits of the identifier's hash to whoever sees it — documented in the
protocol pages as "bucketed execution leaks per-bucket sizes").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.crypto import keyed_hash64_many
from atoll.errors import ConfigError, InputError

__all__ = ["BUCKET_FUNCTION_NAME", "MAX_BUCKETS", "BucketFunction"]

#: The name recorded in dataset manifests for this function.
BUCKET_FUNCTION_NAME = "blake2b64-mod-v1"
#: Upper bound on the bucket count (buckets are folders; keep them manageable).
MAX_BUCKETS = 1 << 16
_PERSON = b"atoll-bucket-v1"
_DEFAULT_SALT = b"atoll-default-bucket-salt-v1"


@dataclass(frozen=True, slots=True)
class BucketFunction:
    """A bucket function with ``buckets`` buckets and a ``salt`` (1..64 bytes)."""

    buckets: int
    salt: bytes = _DEFAULT_SALT

    def __post_init__(self) -> None:
        if not isinstance(self.buckets, int) or not 1 <= self.buckets <= MAX_BUCKETS:
            raise ConfigError(
                f"bucket count must be an integer in 1..{MAX_BUCKETS}, got {self.buckets!r}"
            )
        if not isinstance(self.salt, bytes) or not 1 <= len(self.salt) <= 64:
            raise ConfigError("bucket salt must be 1..64 bytes")

    @property
    def name(self) -> str:
        """The function's name as written into manifests."""
        return BUCKET_FUNCTION_NAME

    def bucket_of(self, value: str) -> int:
        """The bucket of one normalized identifier."""
        return int(self.assign([value])[0])

    def assign(self, values: Sequence[str] | Iterable[str]) -> npt.NDArray[np.uint32]:
        """Buckets of many normalized identifiers (no nulls), as ``uint32``."""
        hashes = keyed_hash64_many(self.salt, (v.encode("utf-8") for v in values), person=_PERSON)
        return (hashes % np.uint64(self.buckets)).astype(np.uint32)

    def assign_arrow(
        self,
        column: pa.Array | pa.ChunkedArray,
        *,
        source: str | None = None,
        column_name: str | None = None,
    ) -> npt.NDArray[np.uint32]:
        """Buckets of an Arrow string column; a null is an error naming its row."""
        if column.null_count:
            mask = column.is_null()
            if isinstance(mask, pa.ChunkedArray):
                mask = mask.combine_chunks()
            first = int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])
            raise InputError(
                "null identifier cannot be bucketed (normalize and report invalid IDs first)",
                source=source,
                row=first + 1,
                column=column_name,
            )
        return self.assign(column.to_pylist())
