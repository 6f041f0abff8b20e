"""PSI party jobs: ECDH PSI or labeled PSI over one ID column or a multi-ID waterfall.

Why: this is where a table becomes protocol inputs and protocol results
become rows again, for every engine and transport (see
:mod:`atoll.matching.session` for the contract). A *waterfall* over several
ID columns (e.g. ``phone, oaid, idfa, imei_md5``) runs one stage per column
in priority order; a receiver row matched at a higher priority does not take
part in later stages, so it is matched (and counted) once, under the first ID
type that matched it. The sender offers all its valid IDs at every stage
(with reveal=receiver it does not know which of its rows matched).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.crypto import Rng, sha256_hex
from atoll.errors import ConfigError, LocalProtocolError, RemoteProtocolError, SchemaError
from atoll.ids.buckets import BucketFunction
from atoll.ids.normalize import IdKind
from atoll.matching.prepare import PreparedIds, prepare_ids
from atoll.matching.report import (
    MATCHED_BY_COLUMN,
    MatchOutcome,
    OutputGuard,
    StageReport,
    min_cardinality_guard,
)
from atoll.matching.session import PartyJob, PartySession, Traffic, check_params
from atoll.protocols._machine import Machine
from atoll.protocols.labeled_psi import (
    LABELED_VERSION,
    LabeledParams,
    LabeledPsiReceiver,
    LabeledPsiSender,
    LabeledResult,
    encode_labels,
    label_record_size,
)
from atoll.protocols.psi import (
    DEFAULT_TRUNCATE,
    PSI_VERSION,
    PsiParams,
    PsiReceiver,
    PsiResult,
    PsiSender,
)

__all__ = ["PsiOptions", "PsiPartyJob", "PsiStageSession", "parse_id_columns", "psi_party"]

IntArray = npt.NDArray[np.int64]
_ROLES = ("receiver", "sender")


@dataclass(frozen=True)
class PsiOptions:
    """Job parameters both parties must agree on (plus local-only guard settings).

    ``labels``: request labeled PSI (tag augmentation). On the sender it
    lists the label columns to attach; on the receiver ``True``/a column
    list means "labeled PSI, adopt the sender's label columns". ``truncate``
    and ``tag_size`` are in bytes (see the protocol docs for the collision
    bounds). ``min_cardinality`` (local) refuses outcomes with fewer matches.
    """

    reveal: str = "receiver"
    cardinality_only: bool = False
    truncate: int = DEFAULT_TRUNCATE
    tag_size: int = 16
    buckets: int = 16
    bucket_salt: bytes = b"atoll-psi-bucket-salt-v1"
    labels: tuple[str, ...] | None = None
    engine: str = "builtin"
    min_cardinality: int = 0
    extra_guards: tuple[OutputGuard, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        PsiParams(self.reveal, self.cardinality_only, self.truncate)  # validates
        LabeledParams(self.tag_size)
        BucketFunction(self.buckets, self.bucket_salt)
        if self.labels is not None and (self.reveal != "receiver" or self.cardinality_only):
            raise ConfigError(
                "labeled PSI gives labels to the receiver only: it cannot be combined "
                "with --reveal both or --cardinality-only"
            )


def parse_id_columns(
    id_columns: str | Sequence[str], id_types: str | Sequence[str] | None = None
) -> list[tuple[str, IdKind]]:
    """``"phone,oaid"`` (+ optional types) -> ``[(column, kind), ...]`` in priority order.

    Without types each column name must itself be an ID kind label (``phone``,
    ``oaid``, ``imei_md5``...); otherwise pass one type per column.
    """
    cols = (
        [c.strip() for c in id_columns.split(",")]
        if isinstance(id_columns, str)
        else list(id_columns)
    )
    if not cols or any(not c for c in cols):
        raise ConfigError(f"bad ID column list {id_columns!r}")
    if len(set(cols)) != len(cols):
        raise ConfigError(f"ID column list {id_columns!r} repeats a column")
    if id_types is None:
        types = cols
    else:
        types = (
            [t.strip() for t in id_types.split(",")]
            if isinstance(id_types, str)
            else list(id_types)
        )
        if len(types) != len(cols):
            raise ConfigError(f"{len(cols)} ID columns but {len(types)} ID types")
    out: list[tuple[str, IdKind]] = []
    for col, typ in zip(cols, types, strict=True):
        try:
            kind = IdKind.parse(typ)
        except ConfigError as exc:
            raise ConfigError(
                f"column {col!r}: cannot infer the ID type from its name; pass --id-type ({exc})"
            ) from None
        out.append((col, kind))
    return out


class PsiStageSession(PartySession):
    """One stage of a PSI job for one party (see :class:`PartySession`)."""

    def __init__(self, job: PsiPartyJob, stage: int, prepared: PreparedIds) -> None:
        self.role = job.role
        self.stage = stage
        self._job = job
        self.prepared = prepared
        self._results: dict[int, PsiResult | LabeledResult] = {}
        self._traffic = Traffic()
        self._started = time.perf_counter()
        self.report: StageReport | None = None
        self.matched_unique: IntArray | None = None
        self.matched_rows: IntArray | None = None

    def params(self) -> dict[str, Any]:
        """Job params plus ``stage`` and ``id_kind``."""
        return {**self._job.params(), "stage": self.stage, "id_kind": self.prepared.kind.label}

    def buckets(self) -> list[int]:
        """All buckets of the agreed bucket function."""
        return list(range(self.prepared.buckets))

    def pending(self) -> list[int]:
        """Buckets not yet accepted."""
        return [b for b in self.buckets() if b not in self._results]

    def context(self, bucket: int) -> bytes:
        """The context bound into a bucket's machines (stage, kind, bucket)."""
        return f"atoll-match/{self.stage}/{self.prepared.kind.label}/{bucket}".encode()

    def bucket_items(self, bucket: int) -> list[bytes]:
        """The bucket's unique normalized IDs (UTF-8), the protocol input."""
        self._check_bucket(bucket)
        return self.prepared.bucket_items(bucket)

    def _check_bucket(self, bucket: int) -> None:
        if not isinstance(bucket, int) or not 0 <= bucket < self.prepared.buckets:
            raise LocalProtocolError(f"no bucket {bucket!r} (there are {self.prepared.buckets})")

    def machine(self, bucket: int) -> Machine[Any]:
        """A fresh machine for ``bucket`` (receiver or sender; ECDH or labeled)."""
        job = self._job
        self._check_bucket(bucket)
        items = self.prepared.bucket_packed(bucket)
        ctx = self.context(bucket)
        kind = self.prepared.kind.label
        o = job.options
        if job.labeled:
            lp = LabeledParams(o.tag_size, kind)
            if self.role == "receiver":
                return LabeledPsiReceiver(items, params=lp, context=ctx, rng=job.rng)
            records, width = job.label_records(self, bucket)
            return LabeledPsiSender(
                items,
                records,
                columns=job.label_columns,
                params=lp,
                context=ctx,
                width=width,
                rng=job.rng,
            )
        pp = PsiParams(o.reveal, o.cardinality_only, o.truncate, kind)
        cls = PsiReceiver if self.role == "receiver" else PsiSender
        return cls(items, params=pp, context=ctx, rng=job.rng)

    def accept(self, bucket: int, result: Any, traffic: Traffic | None = None) -> None:
        """Record one bucket's result (once)."""
        self._check_bucket(bucket)
        if self.report is not None:
            raise LocalProtocolError(f"stage {self.stage} is already finished")
        if bucket in self._results:
            raise LocalProtocolError(f"bucket {bucket} of stage {self.stage} accepted twice")
        if not isinstance(result, PsiResult | LabeledResult):
            raise LocalProtocolError(f"bucket {bucket}: unexpected result {type(result).__name__}")
        start, end = self.prepared.bucket_range(bucket)
        if result.indices is not None and len(result.indices):
            idx = result.indices
            if int(idx.min()) < 0 or int(idx.max()) >= end - start:
                raise RemoteProtocolError(f"bucket {bucket}: result indices out of range")
        self._results[bucket] = result
        if traffic is not None:
            self._traffic = self._traffic + traffic

    def finish(self) -> StageReport:
        """Merge the buckets into the stage report; the job maps matches to rows."""
        if self.report is not None:
            return self.report
        missing = self.pending()
        if missing:
            raise LocalProtocolError(
                f"stage {self.stage}: {len(missing)} bucket(s) never finished "
                f"(first: {missing[0]}); refusing a partial result"
            )
        p = self.prepared
        matched: list[IntArray] = []
        cardinality: int | None = 0
        peer = 0
        for b, res in sorted(self._results.items()):
            peer += res.peer_size
            if res.indices is not None:
                matched.append(res.indices + p.bucket_range(b)[0])
            if cardinality is not None:
                cardinality = None if res.cardinality is None else cardinality + res.cardinality
        unique_hits = np.concatenate(matched) if matched else None
        rows = None if unique_hits is None else p.rows_of(unique_hits)
        self.matched_unique = unique_hits
        self.matched_rows = rows
        self.report = StageReport(
            column=p.column,
            kind=p.kind.label,
            rows=len(p.row_unique),
            eligible_rows=p.eligible_rows,
            invalid=p.report,
            duplicates=p.duplicates,
            unique=p.unique,
            peer_unique=peer,
            matched_ids=cardinality,
            matched_rows=None if rows is None else len(rows),
            bytes_sent=self._traffic.bytes_sent,
            bytes_received=self._traffic.bytes_received,
            buckets=p.buckets,
            seconds=time.perf_counter() - self._started,
        )
        return self.report

    def labels_of(self) -> dict[int, tuple[str | None, ...]]:
        """Unique-ID index -> label record, for a finished labeled receiver stage."""
        out: dict[int, tuple[str | None, ...]] = {}
        for b, res in self._results.items():
            if (
                isinstance(res, LabeledResult)
                and res.labels is not None
                and res.indices is not None
            ):
                base = self.prepared.bucket_range(b)[0]
                for i, rec in zip(res.indices.tolist(), res.labels, strict=True):
                    out[base + i] = rec
        return out


class PsiPartyJob(PartyJob):
    """One party's PSI job over a table (build with :func:`psi_party`)."""

    def __init__(
        self,
        table: pa.Table,
        columns: Sequence[tuple[str, IdKind]],
        *,
        role: str,
        options: PsiOptions,
        source: str | None = None,
        rng: Rng | None = None,
    ) -> None:
        if role not in _ROLES:
            raise ConfigError(f"PSI role must be 'receiver' or 'sender', got {role!r}")
        if not columns:
            raise ConfigError("at least one ID column is needed")
        for col, _ in columns:
            if col not in table.column_names:
                raise SchemaError(
                    f"no ID column {col!r} (columns: {', '.join(table.column_names)})",
                    source=source,
                )
        if options.cardinality_only and len(columns) > 1:
            raise ConfigError(
                "a multi-ID waterfall needs to know which rows matched at each priority; "
                "--cardinality-only works with one ID column"
            )
        self.role = role
        self.table = table
        self.columns = list(columns)
        self.options = options
        self.source = source
        self.rng = rng
        self.bucket_fn = BucketFunction(options.buckets, options.bucket_salt)
        self.labeled = options.labels is not None
        self.label_columns: tuple[str, ...] = ()
        self.label_types: list[list[str]] = []
        if role == "sender" and options.labels is not None:
            missing = [c for c in options.labels if c not in table.column_names]
            if missing:
                raise SchemaError(
                    f"no label column(s) {', '.join(map(repr, missing))} "
                    f"(columns: {', '.join(table.column_names)})",
                    source=source,
                )
            self.label_columns = tuple(options.labels)
            self.label_types = [[c, str(table.schema.field(c).type)] for c in self.label_columns]
        self._agreed = False
        self._stages: list[PsiStageSession] = []
        self._started = time.perf_counter()
        self._label_text: list[pa.Array] | None = None
        self._label_width: int | None = None

    # -- contract ----------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The agreed parameters (JSON-able)."""
        o = self.options
        p: dict[str, Any] = {
            "protocol": "labeled-psi" if self.labeled else "ecdh-psi",
            "version": LABELED_VERSION if self.labeled else PSI_VERSION,
            "role": self.role,
            "engine": o.engine,
            "stages": [k.label for _, k in self.columns],
            "bucket_function": self.bucket_fn.name,
            "buckets": o.buckets,
            "bucket_salt_sha256": sha256_hex(o.bucket_salt),
        }
        if self.labeled:
            p["tag_size"] = o.tag_size
            p["labels"] = self.label_types if self.role == "sender" else None
        else:
            p["reveal"] = o.reveal
            p["cardinality_only"] = o.cardinality_only
            p["truncate"] = o.truncate
        return p

    def agree(self, peer_params: Mapping[str, Any]) -> None:
        """Check the peer's params; a labeled receiver adopts the sender's label columns."""
        check_params(self.params(), peer_params, ignore=frozenset({"labels"}))
        if self.labeled and self.role == "receiver":
            labels = peer_params.get("labels")
            if not isinstance(labels, list) or not all(
                isinstance(x, list) and len(x) == 2 and all(isinstance(s, str) for s in x)
                for x in labels
            ):
                raise RemoteProtocolError("labeled-psi: the sender declares no valid label columns")
            self.label_types = [list(x) for x in labels]
            self.label_columns = tuple(x[0] for x in labels)
            wanted = self.options.labels
            if wanted and set(wanted) - set(self.label_columns):
                raise RemoteProtocolError(
                    f"labeled-psi: the sender offers labels {list(self.label_columns)}, "
                    f"not {sorted(set(wanted) - set(self.label_columns))}"
                )
        self._agreed = True

    def sessions(self) -> Iterator[PsiStageSession]:
        """One session per ID column, in priority order."""
        if not self._agreed:
            raise LocalProtocolError("agree() with the peer's params before running sessions")
        matched = np.zeros(self.table.num_rows, dtype=np.bool_)
        for stage, (column, kind) in enumerate(self.columns):
            eligible = ~matched if self.role == "receiver" else None
            prepared = prepare_ids(
                self.table, column, kind, self.bucket_fn, eligible=eligible, source=self.source
            )
            session = PsiStageSession(self, stage, prepared)
            self._stages.append(session)
            yield session
            if session.report is None:
                raise LocalProtocolError(
                    f"stage {stage} was not finished before the next stage was requested"
                )
            if session.matched_rows is not None and self.role == "receiver":
                matched[session.matched_rows] = True

    def finish(self) -> MatchOutcome:
        """The outcome: matched rows (+ ``matched_by`` and labels), counts, traffic."""
        if len(self._stages) != len(self.columns) or any(s.report is None for s in self._stages):
            raise LocalProtocolError("the job has unfinished stages; refusing a partial result")
        reports = [s.report for s in self._stages if s.report is not None]
        card: int | None = 0
        for r in reports:
            card = None if card is None or r.matched_ids is None else card + r.matched_ids
        rows_known = all(s.matched_rows is not None for s in self._stages)
        table: pa.Table | None = None
        matched_rows: IntArray | None = None
        if rows_known:
            table, matched_rows = self._output_table()
        outcome = MatchOutcome(
            role=self.role,
            protocol="labeled-psi" if self.labeled else "ecdh-psi",
            engine=self.options.engine,
            stages=reports,
            table=table,
            matched_rows=matched_rows,
            cardinality=card,
            params=self.params(),
            seconds=time.perf_counter() - self._started,
        )
        guards = [min_cardinality_guard(self.options.min_cardinality), *self.options.extra_guards]
        for guard in guards:
            guard(outcome)
        return outcome

    # -- helpers -----------------------------------------------------------
    def _output_table(self) -> tuple[pa.Table, IntArray]:
        n = self.table.num_rows
        stage_of = np.full(n, -1, dtype=np.int64)
        for s in self._stages:
            assert s.matched_rows is not None
            fresh = s.matched_rows[stage_of[s.matched_rows] < 0]
            stage_of[fresh] = s.stage  # the highest priority that matched wins
        rows = np.flatnonzero(stage_of >= 0).astype(np.int64)
        out = self.table.take(pa.array(rows, type=pa.int64()))
        kinds = [k.label for _, k in self.columns]
        matched_by = pa.array([kinds[i] for i in stage_of[rows].tolist()], type=pa.string())
        name = MATCHED_BY_COLUMN
        while name in out.column_names:
            name = "_" + name
        out = out.append_column(name, matched_by)
        if self.labeled and self.role == "receiver":
            out = self._append_labels(out, rows)
        return out, rows

    def _append_labels(self, out: pa.Table, rows: IntArray) -> pa.Table:
        per_row: dict[int, tuple[str | None, ...]] = {}
        for s in self._stages:
            records = s.labels_of()
            unique_of_row = s.prepared.row_unique
            assert s.matched_rows is not None
            for r in s.matched_rows.tolist():
                rec = records.get(int(unique_of_row[r]))
                if rec is not None:
                    per_row[r] = rec
        width = len(self.label_columns)
        for j, (col, type_text) in enumerate(self.label_types):
            values = [per_row[r][j] if r in per_row else None for r in rows.tolist()]
            arr: pa.Array = pa.array(values, type=pa.string())
            arr = _cast_back(arr, type_text)
            name = col if col not in out.column_names else f"label_{col}"
            while name in out.column_names:
                name = "_" + name
            out = out.append_column(name, arr)
        assert width == len(self.label_types)
        return out

    def _label_strings(self) -> list[pa.Array]:
        if self._label_text is None:
            cols: list[pa.Array] = []
            for c in self.label_columns:
                col = self.table[c]
                try:
                    text = pc.cast(col, pa.string())
                except pa.ArrowException as exc:
                    raise SchemaError(
                        f"label column {c!r} of type {col.type} cannot be sent as text: {exc}",
                        source=self.source,
                    ) from None
                cols.append(text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text)
            self._label_text = cols
            lengths = [
                pc.binary_length(pc.cast(a, pa.binary())).to_numpy(zero_copy_only=False)
                for a in cols
            ]
            if cols and n_rows(cols) > 0:
                total = np.full(n_rows(cols), 3, dtype=np.int64)
                for a, ln in zip(cols, lengths, strict=True):
                    nulls = a.is_null().to_numpy(zero_copy_only=False)
                    total += 1 + np.where(nulls, 0, 4 + np.nan_to_num(ln, nan=0).astype(np.int64))
                self._label_width = int(total.max())
            else:
                self._label_width = label_record_size([None] * len(cols))
        return self._label_text

    def label_records(self, session: PsiStageSession, bucket: int) -> tuple[list[bytes], int]:
        """The bucket's label records (from each unique ID's first row) and the job-wide width."""
        cols = self._label_strings()
        start, end = session.prepared.bucket_range(bucket)
        first = session.prepared.first_row[start:end]
        idx = pa.array(first, type=pa.int64())
        taken = [c.take(idx).to_pylist() for c in cols]
        records = (
            [encode_labels(list(vals)) for vals in zip(*taken, strict=True)]
            if cols
            else [encode_labels([]) for _ in range(end - start)]
        )
        assert self._label_width is not None
        return records, self._label_width


def n_rows(cols: list[pa.Array]) -> int:
    """Rows of the first column."""
    return len(cols[0])


def _cast_back(arr: pa.Array, type_text: str) -> pa.Array:
    try:
        target = pa.type_for_alias(type_text)
    except (ValueError, KeyError):
        return arr
    try:
        return pc.cast(arr, target)
    except pa.ArrowException:
        return arr


def psi_party(
    table: pa.Table,
    id_columns: str | Sequence[str],
    *,
    role: str,
    id_types: str | Sequence[str] | None = None,
    options: PsiOptions | None = None,
    source: str | None = None,
    rng: Rng | None = None,
) -> PsiPartyJob:
    """Build one party's PSI job from a table (``role``: receiver or sender)."""
    return PsiPartyJob(
        table,
        parse_id_columns(id_columns, id_types),
        role=role,
        options=options or PsiOptions(),
        source=source,
        rng=rng,
    )
