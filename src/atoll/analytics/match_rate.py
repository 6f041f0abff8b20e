"""Match-rate report: how much of a brand's member base the provider universe covers.

Why: before trusting a persona or an attribution built on matched IDs, a
brand checks the match ("撞库验证", seed §3): per identifier type (phone,
OAID, IDFA, IMEI…), per source of its members (channel, level, region), how
many members carry a valid ID of that type, and how many of those are found
in the provider's universe. The same report reads either a plain join on
normalized IDs (each party's own data, or inside the island) or the matched
set a PSI run produced (a table ``id_type, id``) — the computation after the
match is identical.

Definitions (``docs/methods.md``):

* ``with_id`` — members whose ID of that type is present and valid after
  normalization; ``invalid`` — present but failing normalization; missing
  values are neither;
* ``matched`` — members whose normalized ID is in the universe (or in the
  PSI matched set);
* ``match_rate = matched / with_id`` (the protocol's hit rate) and
  ``match_rate_of_members = matched / members`` (coverage of the base);
* the ``any`` row counts members matched by at least one ID type.

Counts pass through the output guard (threshold on ``matched``); rates are
computed from the guarded counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.data.io import iter_batches
from atoll.errors import ConfigError, SchemaError
from atoll.ids.normalize import IdKind, normalize_array
from atoll.privacy import Guard, GuardedTable

__all__ = ["ALL_SOURCES", "ANY_TYPE", "MatchRateReport", "match_rate"]

#: ``source`` value of the rows over all members.
ALL_SOURCES = "(all)"
#: ``id_type`` value of the rows "matched by any ID type".
ANY_TYPE = "any"

_Flags = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class MatchRateReport:
    """Guarded match-rate rows (``id_type, source, members, with_id, invalid, matched,
    match_rate, match_rate_of_members, flag``) and the guard's summary."""

    table: pa.Table
    guarded: GuardedTable

    def row(self, id_type: str, source: str = ALL_SOURCES) -> dict[str, Any]:
        """One row as a dict (``KeyError`` if absent)."""
        for r in self.table.to_pylist():
            if r["id_type"] == id_type and r["source"] == source:
                return dict(r)
        raise KeyError((id_type, source))


def _text(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return arr


def _present(arr: pa.Array) -> npt.NDArray[np.bool_]:
    trimmed = pc.utf8_trim_whitespace(arr)
    present = pc.and_(pc.is_valid(trimmed), pc.not_equal(trimmed, ""))
    return np.asarray(pc.fill_null(present, False).to_numpy(zero_copy_only=False), dtype=bool)


def _universe_matches(
    universe: pa.Table | str | os.PathLike[str],
    columns: Mapping[str, str],
    kinds: Mapping[str, IdKind],
    wanted: Mapping[str, pa.Array],
) -> dict[str, pa.Array]:
    """Per member column, the normalized member IDs found in the universe (streamed)."""
    found: dict[str, list[pa.Array]] = {c: [] for c in columns}
    if isinstance(universe, pa.Table):
        batches: Any = universe.to_batches(max_chunksize=1 << 20)
        names = universe.schema.names
    else:
        batches = iter_batches(universe)
        names = None
    for batch in batches:
        names = names or batch.schema.names
        for member_col, uni_col in columns.items():
            if uni_col not in batch.schema.names:
                raise SchemaError(
                    f"no identifier column {uni_col!r} in the universe "
                    f"(columns: {', '.join(batch.schema.names)})",
                    column=uni_col,
                )
            ids = normalize_array(batch.column(uni_col), kinds[member_col]).values
            hit = pc.filter(ids, pc.fill_null(pc.is_in(ids, value_set=wanted[member_col]), False))
            found[member_col].append(hit)
    return {
        c: pc.unique(pa.concat_arrays(parts)) if parts else pa.array([], pa.string())
        for c, parts in found.items()
    }


def match_rate(
    members: pa.Table,
    *,
    id_columns: Mapping[str, IdKind | str],
    universe: pa.Table | str | os.PathLike[str] | None = None,
    universe_columns: Mapping[str, str] | None = None,
    matched: pa.Table | None = None,
    source_column: str | None = None,
    guard: Guard | None = None,
    source: str | None = None,
) -> MatchRateReport:
    """Match rates of ``members`` per ID type and per source, guarded.

    ``id_columns`` maps member columns to their ID kind (``{"phone":
    "phone", "oaid": "oaid"}``). Give either ``universe`` (a table or file;
    ``universe_columns`` maps member columns to its columns, default the same
    names) or ``matched`` (a PSI result: columns ``id_type`` — the kind label
    — and ``id``, normalized). ``source_column`` splits the rows by member
    source.
    """
    if (universe is None) == (matched is None):
        raise ConfigError("give exactly one of universe= (plain join) or matched= (PSI result)")
    if not id_columns:
        raise ConfigError("id_columns must name at least one member ID column")
    guard = guard or Guard()
    kinds = {c: IdKind.parse(k) for c, k in id_columns.items()}
    for col in [*kinds, *([source_column] if source_column else [])]:
        if col not in members.column_names:
            raise SchemaError(
                f"no column {col!r} in the member table "
                f"(columns: {', '.join(members.column_names)})",
                source=source,
                column=col,
            )
    n = members.num_rows
    normalized: dict[str, pa.Array] = {}
    present: dict[str, npt.NDArray[np.bool_]] = {}
    valid: dict[str, npt.NDArray[np.bool_]] = {}
    for col, kind in kinds.items():
        raw = _text(members[col])
        result = normalize_array(raw, kind, source=source, column=col)
        normalized[col] = result.values
        present[col] = _present(raw)
        valid[col] = np.asarray(result.valid.to_numpy(zero_copy_only=False), dtype=bool)
    if matched is not None:
        for col in ("id_type", "id"):
            if col not in matched.column_names:
                raise SchemaError(f"the matched-ID table needs columns id_type, id (no {col!r})")
        found = {
            col: pc.filter(matched["id"], pc.equal(matched["id_type"], kind.label))
            .combine_chunks()
            .cast(pa.string())
            for col, kind in kinds.items()
        }
    else:
        assert universe is not None
        cols = {c: (universe_columns or {}).get(c, c) for c in kinds}
        wanted = {c: pc.unique(pc.drop_null(normalized[c])) for c in kinds}
        found = _universe_matches(universe, cols, kinds, wanted)
    hit: dict[str, npt.NDArray[np.bool_]] = {}
    for col in kinds:
        is_hit = pc.fill_null(pc.is_in(normalized[col], value_set=found[col]), False)
        hit[col] = np.asarray(is_hit.to_numpy(zero_copy_only=False), dtype=bool)
    any_hit = np.zeros(n, dtype=bool)
    any_valid = np.zeros(n, dtype=bool)
    any_present = np.zeros(n, dtype=bool)
    for col in kinds:
        any_hit |= hit[col]
        any_valid |= valid[col]
        any_present |= present[col]

    groups: list[tuple[str, npt.NDArray[np.bool_]]] = [(ALL_SOURCES, np.ones(n, dtype=bool))]
    if source_column is not None:
        labels = pc.fill_null(_text(members[source_column]), "(missing)")
        for value in sorted(set(labels.to_pylist())):
            mask = np.asarray(pc.equal(labels, value).to_numpy(zero_copy_only=False), dtype=bool)
            groups.append((str(value), mask))
    rows: dict[str, list[Any]] = {
        k: [] for k in ("id_type", "source", "members", "with_id", "invalid", "matched")
    }
    types: list[tuple[str, _Flags, _Flags, _Flags]] = [
        (kinds[c].label, present[c], valid[c], hit[c]) for c in kinds
    ]
    types.append((ANY_TYPE, any_present, any_valid, any_hit))
    for label, pres, val, h in types:
        for group, mask in groups:
            rows["id_type"].append(label)
            rows["source"].append(group)
            rows["members"].append(int(mask.sum()))
            rows["with_id"].append(int((val & mask).sum()))
            rows["invalid"].append(int((pres & ~val & mask).sum()))
            rows["matched"].append(int((h & mask).sum()))
    table = pa.table(
        {
            "id_type": pa.array(rows["id_type"], pa.string()),
            "source": pa.array(rows["source"], pa.string()),
            "members": pa.array(rows["members"], pa.int64()),
            "with_id": pa.array(rows["with_id"], pa.int64()),
            "invalid": pa.array(rows["invalid"], pa.int64()),
            "matched": pa.array(rows["matched"], pa.int64()),
        }
    )
    # One member is in its source's row and the (all) row, once per ID type and "any".
    sensitivity = 2 * len(types) * 4
    guarded = guard.apply(
        table,
        counts=["members", "with_id", "invalid", "matched"],
        threshold="matched",
        key=["id_type", "source"],
        sensitivity=sensitivity,
        what="match rate",
    )
    g = guarded.table
    matched_c = g["matched"].to_pylist()
    with_c = g["with_id"].to_pylist()
    members_c = g["members"].to_pylist()
    rate = [m / w if m is not None and w else None for m, w in zip(matched_c, with_c, strict=True)]
    rate_all = [
        m / t if m is not None and t else None for m, t in zip(matched_c, members_c, strict=True)
    ]
    out = g.select(["id_type", "source", "members", "with_id", "invalid", "matched"])
    out = out.append_column("match_rate", pa.array(rate, pa.float64()))
    out = out.append_column("match_rate_of_members", pa.array(rate_all, pa.float64()))
    out = out.append_column("flag", pc.fill_null(g["suppression_reason"], ""))
    return MatchRateReport(out, guarded)
