"""What a matching job returns and how it is written: outcomes, stage reports, guards.

Why: users (and auditors) need the same account of every run whatever the
engine or transport -- how many rows were read, invalid, duplicated and
matched per ID type, what the peer's set size was, how many bytes crossed in
each direction, how long it took -- and the output must be written only when
complete, atomically, and only past the output guard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.data.io import write_table
from atoll.errors import AtollError, ConfigError, InputError
from atoll.ids.normalize import InvalidReport

__all__ = [
    "MATCHED_BY_COLUMN",
    "MatchOutcome",
    "OutputGuard",
    "OutputGuardError",
    "StageReport",
    "min_cardinality_guard",
    "write_outcome",
]

#: Column added to a receiver's output naming the ID type that matched the row.
MATCHED_BY_COLUMN = "matched_by"

IntArray = npt.NDArray[np.int64]


class OutputGuardError(AtollError):
    """An output guard refused to release a result (e.g. too few matches)."""


@dataclass
class StageReport:
    """One stage (one ID type) of a job, seen from one party."""

    column: str
    kind: str
    rows: int
    eligible_rows: int
    invalid: InvalidReport
    duplicates: int
    unique: int
    peer_unique: int | None = None
    matched_ids: int | None = None
    matched_rows: int | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    buckets: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "column": self.column,
            "kind": self.kind,
            "rows": self.rows,
            "eligible_rows": self.eligible_rows,
            "invalid": self.invalid.invalid,
            "invalid_by_reason": dict(self.invalid.by_reason),
            "invalid_samples": self.invalid.to_dict()["samples"],
            "duplicates": self.duplicates,
            "unique": self.unique,
            "peer_unique": self.peer_unique,
            "matched_ids": self.matched_ids,
            "matched_rows": self.matched_rows,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "buckets": self.buckets,
            "seconds": round(self.seconds, 6),
        }


@dataclass
class MatchOutcome:
    """One party's result of a PSI job (all stages).

    ``table``: this party's matched rows (with :data:`MATCHED_BY_COLUMN`
    and any label columns) when it learns them, else ``None``.
    ``cardinality``: total matched unique IDs over all stages, when learned.
    """

    role: str
    protocol: str
    engine: str
    stages: list[StageReport]
    table: pa.Table | None
    matched_rows: IntArray | None
    cardinality: int | None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bytes_sent(self) -> int:
        """Bytes this party sent, all stages."""
        return sum(s.bytes_sent for s in self.stages)

    @property
    def bytes_received(self) -> int:
        """Bytes this party received, all stages."""
        return sum(s.bytes_received for s in self.stages)

    def per_id_type(self) -> dict[str, int | None]:
        """Matched rows (or IDs when rows are unknown) per ID type, in priority order."""
        return {
            s.kind: s.matched_rows if s.matched_rows is not None else s.matched_ids
            for s in self.stages
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no row-level data)."""
        return {
            "role": self.role,
            "protocol": self.protocol,
            "engine": self.engine,
            "cardinality": self.cardinality,
            "matched_rows": None if self.matched_rows is None else len(self.matched_rows),
            "per_id_type": self.per_id_type(),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 6),
            "params": self.params,
            "stages": [s.to_dict() for s in self.stages],
        }


#: A guard inspects an outcome before release and raises OutputGuardError to refuse it.
OutputGuard = Callable[[MatchOutcome], None]


def min_cardinality_guard(minimum: int) -> OutputGuard:
    """A guard refusing outcomes whose intersection is smaller than ``minimum``.

    A small intersection singles out individuals (a match of 3 people tells
    each side that those 3 are customers of the other); 0 disables the guard.
    """
    if not isinstance(minimum, int) or minimum < 0:
        raise ConfigError(f"minimum cardinality must be a non-negative integer, got {minimum!r}")

    def guard(outcome: MatchOutcome) -> None:
        size = outcome.cardinality
        if minimum and size is not None and size < minimum:
            raise OutputGuardError(
                f"output withheld: {size} matches is below the minimum of {minimum}"
            )

    return guard


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write JSON: {exc}", source=str(path)) from exc


def write_outcome(outcome: MatchOutcome | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write an outcome atomically: rows as Parquet/CSV (by extension) or a JSON summary.

    A ``.json`` path gets :meth:`MatchOutcome.to_dict` (or the dict given);
    a table path needs an outcome that has rows (not cardinality-only).
    """
    p = Path(path)
    if isinstance(outcome, dict):
        _write_json(outcome, p)
        return p
    if p.suffix.lower() == ".json":
        _write_json(outcome.to_dict(), p)
        return p
    if outcome.table is None:
        raise ConfigError(
            f"{p.name}: this run yields no rows for the {outcome.role} "
            "(cardinality-only, or the peer gets the output); write to a .json file instead"
        )
    return write_table(outcome.table, p)
