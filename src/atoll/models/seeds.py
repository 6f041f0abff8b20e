"""Seeds: which universe rows are the brand's known buyers.

Why: every lookalike entry point (the CLI, the demo, the island's joint job)
starts by marking the universe rows that match the seed list, and they must
agree on how: both sides normalized as the same identifier kind, nulls and
repeats ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import SchemaError
from atoll.ids.normalize import IdKind, normalize_array

__all__ = ["KNOWN_KINDS", "match_seeds"]

#: Column names that are also identifier kinds: seeds in such a column are normalized as it.
KNOWN_KINDS = frozenset(
    {"phone", "imei", "oaid", "idfa", "device_id", "member_id", "email", "android_id"}
)


def match_seeds(
    universe: pa.Table,
    seeds: pa.Array,
    *,
    universe_column: str,
    kind: str | None,
    source: str | None = None,
) -> tuple[np.ndarray[Any, np.dtype[np.bool_]], pa.Array | None]:
    """Mark universe rows whose ``universe_column`` equals a seed (both normalized as ``kind``).

    Returns the mask and, for phone seeds, the normalized seed phones.
    """
    if universe_column not in universe.column_names:
        raise SchemaError(
            f"the universe has no column {universe_column!r} to match seeds on",
            column=universe_column,
        )
    col = universe[universe_column].combine_chunks().cast(pa.string())
    if kind is not None:
        seeds = normalize_array(seeds, kind, source=source).values
        col = normalize_array(col, kind).values
    seeds = pc.unique(pc.drop_null(seeds.cast(pa.string())))
    mask = np.asarray(
        pc.fill_null(pc.is_in(col, value_set=seeds), False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    phones = seeds if kind is not None and IdKind.parse(kind).label == "phone" else None
    return mask, phones
