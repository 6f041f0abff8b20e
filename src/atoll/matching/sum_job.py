"""Intersection-sum party jobs: ``atoll psi sum`` and its two-process form.

Why: "how much did the members we both know spend" is one bucketed run of
:mod:`atoll.protocols.intersection_sum` per bucket, with the same
normalization, bucketing and reporting as PSI. The *values* party (left, the
brand with its orders) holds the values and the decryption keys; the *ids*
party (right, e.g. the provider's exposed devices) holds identifiers only.

Values are decimals (money with ``decimals`` = 2 places becomes integer
cents); a negative, non-numeric, null or over-precise value is refused with
an :class:`~atoll.errors.InputError` naming its row. Rows of the values party
that share an identifier are added up first (a member with three orders
contributes all three once matched). Each bucket's sum is decoded within the
values party's own total for that bucket, so no decoding range needs
configuring.

The per-bucket runs are *deferred* (``SumParams(deferred=True)``): no bucket
is decrypted on its own, which would give both parties one partial sum per
bucket -- with small buckets, single members' values. The values party
encrypts every bucket under one set of job keys; after the last bucket, a
second stage with a single run adds every bucket's matched ciphertexts
(the ids party), decrypts the total once (the values party) and tells both.
The values party learns only the total intersection size and sums; the ids
party also knows how many of its own identifiers matched per bucket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.crypto import Rng, sha256_hex
from atoll.crypto.elgamal import MAX_PLAINTEXT, ElGamalKey, keygen
from atoll.errors import (
    ConfigError,
    InputError,
    LocalProtocolError,
    RemoteProtocolError,
    SchemaError,
)
from atoll.ids.buckets import BucketFunction
from atoll.ids.normalize import IdKind
from atoll.matching.prepare import PreparedIds, prepare_ids
from atoll.matching.report import StageReport, _write_json
from atoll.matching.session import PartyJob, PartySession, Traffic, check_params
from atoll.protocols._machine import Machine
from atoll.protocols.intersection_sum import (
    SUM_VERSION,
    SumIdsParty,
    SumParams,
    SumPartial,
    SumResult,
    SumTotalIdsParty,
    SumTotalValuesParty,
    SumValuesParty,
)

__all__ = ["SumJobOutcome", "SumOptions", "SumPartyJob", "parse_amounts", "sum_party"]

IntArray = npt.NDArray[np.int64]
#: Largest single value accepted, in scaled units (10**15 cents = 10 trillion).
MAX_VALUE = 10**15


@dataclass(frozen=True)
class SumOptions:
    """Job parameters: bucket function, decimal places of the values, guard."""

    buckets: int = 8
    bucket_salt: bytes = b"atoll-psi-bucket-salt-v1"
    decimals: int = 2
    min_cardinality: int = 0

    def __post_init__(self) -> None:
        BucketFunction(self.buckets, self.bucket_salt)
        if not isinstance(self.decimals, int) or not 0 <= self.decimals <= 6:
            raise ConfigError(f"decimals must be 0..6, got {self.decimals!r}")


def parse_amounts(
    column: pa.Array | pa.ChunkedArray,
    *,
    decimals: int,
    source: str | None = None,
    name: str | None = None,
) -> IntArray:
    """Decimal values -> non-negative integers scaled by ``10**decimals`` (exactly).

    Accepts integer, float, decimal and text columns. Raises InputError
    naming the first bad row (null, not a number, negative, more decimal
    places than ``decimals``, or above 10**15 units).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    ):
        raise SchemaError(
            f"value column must be numeric or text, not {t}", source=source, column=name
        )
    scale = Decimal(10) ** decimals
    out = np.zeros(len(column), dtype=np.int64)
    for i, v in enumerate(column.to_pylist()):
        if v is None:
            raise InputError("value is missing", source=source, row=i + 1, column=name)
        try:
            d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v).strip())
        except InvalidOperation:
            raise InputError(
                f"not a number: {str(v)[:40]!r}", source=source, row=i + 1, column=name
            ) from None
        if not d.is_finite():
            raise InputError(f"not a finite number: {v!r}", source=source, row=i + 1, column=name)
        if d < 0:
            raise InputError(
                f"negative value {v!r} (intersection-sum adds non-negative values)",
                source=source,
                row=i + 1,
                column=name,
            )
        scaled = d * scale
        if scaled != scaled.to_integral_value():
            raise InputError(
                f"{v!r} has more than {decimals} decimal places",
                source=source,
                row=i + 1,
                column=name,
            )
        units = int(scaled)
        if units > MAX_VALUE:
            raise InputError(
                f"value {v!r} is out of range (max {MAX_VALUE} units)",
                source=source,
                row=i + 1,
                column=name,
            )
        out[i] = units
    return out


def _format_units(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    q, r = divmod(units, 10**decimals)
    return f"{q}.{r:0{decimals}d}"


@dataclass
class SumJobOutcome:
    """One party's intersection-sum result."""

    role: str
    cardinality: int
    sums: dict[str, int]
    decimals: int
    stage: StageReport
    params: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; sums as exact decimal strings."""
        return {
            "role": self.role,
            "protocol": "intersection-sum",
            "cardinality": self.cardinality,
            "sums": {k: _format_units(v, self.decimals) for k, v in self.sums.items()},
            "sums_units": dict(self.sums),
            "decimals": self.decimals,
            "peer_unique": self.stage.peer_unique,
            "bytes_sent": self.stage.bytes_sent,
            "bytes_received": self.stage.bytes_received,
            "seconds": round(self.seconds, 6),
            "params": self.params,
            "stage": self.stage.to_dict(),
        }

    def write(self, path: str) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        from pathlib import Path

        _write_json(self.to_dict(), Path(path))


class SumSession(PartySession):
    """Stage 0 of an intersection-sum job: one deferred run per bucket."""

    def __init__(self, job: SumPartyJob, prepared: PreparedIds, values: IntArray | None) -> None:
        self.role = job.role
        self.stage = 0
        self._job = job
        self.prepared = prepared
        self.values = values  # (unique, columns) in bucket order, values party only
        self.partials: dict[int, SumPartial] = {}
        self._traffic = Traffic()
        self._started = time.perf_counter()
        self.report: StageReport | None = None

    def params(self) -> dict[str, Any]:
        """Job params plus stage and kind."""
        return {**self._job.params(), "stage": self.stage, "id_kind": self.prepared.kind.label}

    def buckets(self) -> list[int]:
        """All buckets."""
        return list(range(self.prepared.buckets))

    def pending(self) -> list[int]:
        """Buckets not yet accepted."""
        return [b for b in self.buckets() if b not in self.partials]

    def machine(self, bucket: int) -> Machine[Any]:
        """A fresh machine for ``bucket``."""
        if not 0 <= bucket < self.prepared.buckets:
            raise LocalProtocolError(f"no bucket {bucket}")
        job = self._job
        items = self.prepared.bucket_items(bucket)
        ctx = f"atoll-sum/0/{self.prepared.kind.label}/{bucket}".encode()
        params = job.sum_params(self.prepared.kind.label)
        if self.role == "ids":
            return SumIdsParty(items, params=params, context=ctx, rng=job.rng)
        assert self.values is not None
        start, end = self.prepared.bucket_range(bucket)
        block = self.values[start:end]
        rows = [[int(v) for v in row] for row in block.tolist()]
        return SumValuesParty(items, rows, params=params, context=ctx, keys=job.keys, rng=job.rng)

    def accept(self, bucket: int, result: Any, traffic: Traffic | None = None) -> None:
        """Record one bucket's partial (once)."""
        if bucket in self.partials or not 0 <= bucket < self.prepared.buckets:
            raise LocalProtocolError(f"bucket {bucket} accepted twice or out of range")
        if not isinstance(result, SumPartial):
            raise LocalProtocolError(f"bucket {bucket}: unexpected result {type(result).__name__}")
        self.partials[bucket] = result
        if traffic is not None:
            self._traffic = self._traffic + traffic

    def finish(self) -> StageReport:
        """Check completeness and build the stage report (totals come with the next stage)."""
        if self.report is not None:
            return self.report
        missing = self.pending()
        if missing:
            raise LocalProtocolError(
                f"{len(missing)} bucket(s) never finished (first: {missing[0]}); "
                "refusing a partial sum"
            )
        p = self.prepared
        matched = None
        if self.role == "ids":
            matched = sum(int(r.cardinality or 0) for r in self.partials.values())
        self.report = StageReport(
            column=p.column,
            kind=p.kind.label,
            rows=len(p.row_unique),
            eligible_rows=p.eligible_rows,
            invalid=p.report,
            duplicates=p.duplicates,
            unique=p.unique,
            peer_unique=sum(r.peer_size for r in self.partials.values()),
            matched_ids=matched,
            matched_rows=None,
            bytes_sent=self._traffic.bytes_sent,
            bytes_received=self._traffic.bytes_received,
            buckets=p.buckets,
            seconds=time.perf_counter() - self._started,
        )
        return self.report


class SumTotalSession(PartySession):
    """Stage 1: one run that adds up every bucket and decrypts the total once."""

    def __init__(self, job: SumPartyJob, runs: SumSession) -> None:
        self.role = job.role
        self.stage = 1
        self._job = job
        self._runs = runs
        self.result: SumResult | None = None
        self._traffic = Traffic()
        self._started = time.perf_counter()
        self.report: StageReport | None = None

    def params(self) -> dict[str, Any]:
        """Job params plus stage and kind."""
        return {
            **self._job.params(),
            "stage": self.stage,
            "id_kind": self._runs.prepared.kind.label,
        }

    def buckets(self) -> list[int]:
        """The single run."""
        return [0]

    def pending(self) -> list[int]:
        """``[0]`` until the total is accepted."""
        return [] if self.result is not None else [0]

    def machine(self, bucket: int) -> Machine[Any]:
        """A fresh machine for the total."""
        if bucket != 0:
            raise LocalProtocolError(f"no bucket {bucket} in the total stage")
        job, runs = self._job, self._runs
        kind = runs.prepared.kind.label
        ctx = f"atoll-sum/1/{kind}/total".encode()
        partials = [runs.partials[b] for b in runs.buckets()]
        params = job.sum_params(kind)
        if self.role == "ids":
            return SumTotalIdsParty(partials, params=params, context=ctx, rng=job.rng)
        values = runs.values
        assert values is not None
        assert job.keys is not None
        # Decode within this party's own column totals: the sum cannot exceed them.
        max_sum = int(values.sum(axis=0).max()) if len(values) else 0
        return SumTotalValuesParty(
            job.keys,
            partials,
            own_items=runs.prepared.unique,
            params=params,
            context=ctx,
            max_sum=min(max_sum, MAX_PLAINTEXT),
        )

    def accept(self, bucket: int, result: Any, traffic: Traffic | None = None) -> None:
        """Record the total (once)."""
        if bucket != 0 or self.result is not None:
            raise LocalProtocolError(f"total run {bucket} accepted twice or out of range")
        if not isinstance(result, SumResult):
            raise LocalProtocolError(f"total: unexpected result {type(result).__name__}")
        if len(result.sums) != len(self._job.value_columns):
            raise RemoteProtocolError("total: wrong number of sums")
        self.result = result
        if traffic is not None:
            self._traffic = self._traffic + traffic

    def finish(self) -> StageReport:
        """The job's report: the bucket stage's, with the total and all traffic."""
        if self.report is not None:
            return self.report
        if self.result is None:
            raise LocalProtocolError("the total never finished; refusing a partial sum")
        first = self._runs.finish()
        self.report = replace(
            first,
            matched_ids=self.result.cardinality,
            bytes_sent=first.bytes_sent + self._traffic.bytes_sent,
            bytes_received=first.bytes_received + self._traffic.bytes_received,
            seconds=first.seconds + time.perf_counter() - self._started,
        )
        return self.report


class SumPartyJob(PartyJob):
    """One party's intersection-sum job (build with :func:`sum_party`)."""

    def __init__(
        self,
        table: pa.Table,
        column: str,
        kind: IdKind,
        *,
        role: str,
        value_columns: Sequence[str] = (),
        options: SumOptions,
        source: str | None = None,
        rng: Rng | None = None,
    ) -> None:
        if role not in ("values", "ids"):
            raise ConfigError(f"intersection-sum role must be 'values' or 'ids', got {role!r}")
        if column not in table.column_names:
            raise SchemaError(
                f"no ID column {column!r} (columns: {', '.join(table.column_names)})", source=source
            )
        if role == "values":
            if not value_columns:
                raise ConfigError("the values party needs at least one value column")
            for c in value_columns:
                if c not in table.column_names:
                    raise SchemaError(
                        f"no value column {c!r} (columns: {', '.join(table.column_names)})",
                        source=source,
                    )
        elif value_columns:
            raise ConfigError("the ids party holds no value columns")
        self.role = role
        self.table = table
        self.column = column
        self.kind = kind
        self.value_columns = list(value_columns)
        self.options = options
        self.source = source
        self.rng = rng
        self.bucket_fn = BucketFunction(options.buckets, options.bucket_salt)
        self._decimals = options.decimals
        self._agreed = False
        self._session: SumTotalSession | None = None
        self.keys: list[ElGamalKey] | None = None
        self._started = time.perf_counter()
        self._amounts: IntArray | None = None
        if role == "values":
            cols = [
                parse_amounts(table[c], decimals=options.decimals, source=source, name=c)
                for c in self.value_columns
            ]
            self._amounts = (
                np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0), np.int64)
            )
            totals = [sum(int(v) for v in col) for col in self._amounts.T.tolist()]
            if max(totals, default=0) > MAX_PLAINTEXT // 2:
                raise InputError(
                    "a value column adds up beyond the supported range (2**61 units)", source=source
                )

    def params(self) -> dict[str, Any]:
        """Agreed parameters; the values party also states its value columns and decimals."""
        o = self.options
        return {
            "protocol": "intersection-sum",
            "version": SUM_VERSION,
            "role": self.role,
            "engine": "builtin",
            "stages": [self.kind.label],
            "bucket_function": self.bucket_fn.name,
            "buckets": o.buckets,
            "bucket_salt_sha256": sha256_hex(o.bucket_salt),
            "value_columns": self.value_columns if self.role == "values" else None,
            "decimals": self._decimals if self.role == "values" else None,
        }

    def agree(self, peer_params: Mapping[str, Any]) -> None:
        """Check the peer; the ids party adopts the value columns and decimals."""
        check_params(self.params(), peer_params, ignore=frozenset({"value_columns", "decimals"}))
        if self.role == "ids":
            cols = peer_params.get("value_columns")
            dec = peer_params.get("decimals")
            if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
                raise RemoteProtocolError(
                    "intersection-sum: the values party declares no value columns"
                )
            if not isinstance(dec, int) or not 0 <= dec <= 6:
                raise RemoteProtocolError(
                    "intersection-sum: the values party declares bad decimals"
                )
            self.value_columns = list(cols)
            self._decimals = dec
        self._agreed = True

    def sum_params(self, kind: str) -> SumParams:
        """Protocol parameters of every run of this job (deferred: see the module docstring)."""
        return SumParams(kind, len(self.value_columns), deferred=True)

    def sessions(self) -> Iterator[PartySession]:
        """The bucket runs, then the total."""
        if not self._agreed:
            raise LocalProtocolError("agree() with the peer's params before running sessions")
        prepared = prepare_ids(
            self.table, self.column, self.kind, self.bucket_fn, source=self.source
        )
        values = None
        if self._amounts is not None:
            valid_rows = prepared.row_unique >= 0
            per_unique = np.zeros((prepared.unique, len(self.value_columns)), dtype=np.int64)
            np.add.at(per_unique, prepared.row_unique[valid_rows], self._amounts[valid_rows])
            values = per_unique
            # One key per value column for every bucket, so the total can add them up.
            self.keys = [keygen(rng=self.rng) for _ in self.value_columns]
        runs = SumSession(self, prepared, values)
        yield runs
        self._session = SumTotalSession(self, runs)
        yield self._session

    def finish(self) -> SumJobOutcome:
        """The outcome, past the minimum-cardinality guard."""
        s = self._session
        if s is None or s.report is None or s.result is None:
            raise LocalProtocolError("the job has not finished; refusing a partial result")
        outcome = SumJobOutcome(
            role=self.role,
            cardinality=s.result.cardinality,
            sums=dict(zip(self.value_columns, s.result.sums, strict=True)),
            decimals=self._decimals,
            stage=s.report,
            params=self.params(),
            seconds=time.perf_counter() - self._started,
        )
        minimum = self.options.min_cardinality
        if minimum and outcome.cardinality < minimum:
            from atoll.matching.report import OutputGuardError

            raise OutputGuardError(
                f"output withheld: {outcome.cardinality} matches is below the minimum of {minimum}"
            )
        return outcome


def sum_party(
    table: pa.Table,
    id_column: str,
    *,
    role: str,
    id_type: str | None = None,
    value_columns: str | Sequence[str] = (),
    options: SumOptions | None = None,
    source: str | None = None,
    rng: Rng | None = None,
) -> SumPartyJob:
    """Build one party's intersection-sum job (``role``: ``values`` or ``ids``)."""
    if "," in id_column:
        raise ConfigError("intersection-sum matches on one ID column (no waterfall)")
    try:
        kind = IdKind.parse(id_type or id_column)
    except ConfigError as exc:
        raise ConfigError(f"column {id_column!r}: pass --id-type ({exc})") from None
    cols = (
        [c.strip() for c in value_columns.split(",")]
        if isinstance(value_columns, str)
        else list(value_columns)
    )
    cols = [c for c in cols if c]
    return SumPartyJob(
        table,
        id_column,
        kind,
        role=role,
        value_columns=cols,
        options=options or SumOptions(),
        source=source,
        rng=rng,
    )
