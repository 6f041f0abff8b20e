"""Jobs inside the island: manifest in, guarded results sealed to each recipient out.

Why: inside the island the parties' rows are plaintext, so *what may be
computed and what may leave* has to be written down in advance, agreed by
all parties, hashed into the attestation binding, and enforced by the island
-- not chosen by whoever calls it. A **job manifest** (TOML, below) names
the inputs (party, dataset, version, optionally which buckets), the
computation, the ID-matching rules, the output recipients with their HPKE
public keys, and the output guards. The island:

1. checks every input's signed manifest against the signer the job pins,
   and that every input's key was released by attested key release;
2. opens only the buckets the job needs (bucketed join: buckets non-empty on
   both sides; or the buckets the job lists), decrypting into memory or the
   job's private temp area (:mod:`atoll.island.burn`);
3. matches IDs with a vectorized hash join (Arrow's C++ hash join, bucket
   by bucket when both sides are bucketed by the join key), including a
   multi-ID **waterfall** (each left row takes the first step that matches)
   and steps **via the ID-mapping graph** (both sides mapped to ``one_id``
   with :func:`atoll.ids.mapping.build_id_graph`);
4. runs the computation (``match``, ``tag_augmentation``, or a hook
   registered with :func:`register_computation` by the analytics, attribution
   and scoring jobs);
5. applies output guards: **row-level output only where the contract allows
   it** (``row_level = true`` for that output), otherwise the aggregate, which
   always passes through :class:`atoll.privacy.guard.Guard` (minimum cell
   size, complementary suppression, rounding);
6. seals each output to its recipient with HPKE (info = job hash, output
   name, recipient), stamps it (simulated backend: "simulated — no hardware
   protection"), burns the temp area and keys, and signs a deletion and a
   usage receipt (:mod:`atoll.island.receipts`).

Job manifest (version 1)::

    version = 1
    job = "brand-x-provider-tags"
    computation = "tag_augmentation"          # or "match", or a registered hook

    [parties.brand]
    signing_key = "<base64 Ed25519 key that signs brand's dataset manifests>"
    [parties.provider]
    signing_key = "<base64>"

    [[inputs]]
    name = "seed"                              # how the computation refers to it
    party = "brand"
    dataset = "brand-members"
    version = 1
    # buckets = [0, 5]                         # optional: open only these
    # filter_digest = "<hex>"                  # optional: require this ID filter

    [[inputs]]
    name = "universe"
    party = "provider"
    dataset = "provider-universe"
    version = 1

    [match]
    left = "seed"
    right = "universe"
    graph = "edges"                            # optional input holding ID-graph edges
    [[match.steps]]                            # waterfall, in order
    left = "phone"
    right = "phone"
    [[match.steps]]
    left = "phone"
    right = "device_id"
    via_graph = true
    left_kind = "phone"
    right_kind = "device_id"

    [params]                                   # free-form, for the computation
    tag_columns = ["age_band", "interests"]
    key_column = "member_id"

    [[outputs]]
    name = "brand-tags"
    recipient = "brand"
    public_key = "<base64 X25519 HPKE public key>"
    row_level = false

    [guards]
    min_cell_size = 50
    rounding = 1

The job hash is the SHA-256 of the manifest file's bytes: every party hashes
its own copy, and attestation binds that hash, so an island running a
different job gets no key.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.crypto import sha256_digest
from atoll.crypto.hpke import HpkePrivateKey, hpke_seal, transcript_hash
from atoll.crypto.sign import SigningKey, VerifyKey
from atoll.data.envelope import (
    EnvelopeManifest,
    EnvelopeReader,
    SealedStore,
    check_dataset_id,
    manifest_digest,
)
from atoll.errors import (
    ConfigError,
    CryptoError,
    IntegrityError,
    LocalProtocolError,
    RemoteProtocolError,
    SchemaError,
)
from atoll.ids.mapping import IdGraph, MappingConfig, build_id_graph
from atoll.island.burn import BurnArea, JobArea
from atoll.island.evidence.simulated import SIMULATED_STAMP, SimulatedBackend
from atoll.island.keyrelease import EvidenceBundle, JobSession, verify_release
from atoll.island.receipts import DatasetUse, DeletionReceipt, UsageReceipt, sign_receipt
from atoll.privacy.guard import Guard, PrivacyPolicy

__all__ = [
    "JOB_VERSION",
    "RESULT_VERSION",
    "Computation",
    "ComputationResult",
    "InputSpec",
    "Island",
    "JobContext",
    "JobManifest",
    "JobOutcome",
    "MatchPart",
    "MatchSpec",
    "MatchStep",
    "OpenInput",
    "OutputSpec",
    "SealedResult",
    "computation",
    "computation_names",
    "job_hash",
    "match_tables",
    "open_result",
    "parse_job",
    "register_computation",
]

#: The ``version`` a job manifest must declare.
JOB_VERSION = 1
#: ``atoll_result`` version of a sealed result.
RESULT_VERSION = 1
_RESULT_DOMAIN = b"atoll-island-result-v1"
_KEY = "__key"
_LROW = "__l"
_RROW = "__r"


# --------------------------------------------------------------------------- job manifest


@dataclass(frozen=True)
class InputSpec:
    """One input of a job: a party's dataset version, optionally restricted to some buckets."""

    name: str
    party: str
    dataset: str
    version: int
    buckets: tuple[int, ...] | None = None
    filter_digest: str | None = None


@dataclass(frozen=True)
class MatchStep:
    """One waterfall step: left column = right column, directly or via the ID graph."""

    left: str
    right: str
    via_graph: bool = False
    left_kind: str | None = None
    right_kind: str | None = None

    @property
    def label(self) -> str:
        """A short name such as ``phone=phone`` or ``phone~device_id (graph)``."""
        return (
            f"{self.left}~{self.right} (graph)" if self.via_graph else f"{self.left}={self.right}"
        )


@dataclass(frozen=True)
class MatchSpec:
    """Which inputs to match, how (waterfall steps), and the optional graph input."""

    left: str
    right: str
    steps: tuple[MatchStep, ...]
    graph: str | None = None


@dataclass(frozen=True)
class OutputSpec:
    """A result recipient: party, HPKE public key, and whether row-level output is allowed."""

    name: str
    recipient: str
    public_key: bytes
    row_level: bool = False


@dataclass(frozen=True)
class JobManifest:
    """A parsed job manifest (module docstring); ``digest`` is its SHA-256."""

    job: str
    computation: str
    parties: Mapping[str, VerifyKey]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    match: MatchSpec | None
    params: Mapping[str, Any]
    min_cell_size: int
    rounding: int
    digest: bytes

    def input(self, name: str) -> InputSpec:
        """The input called ``name`` (ConfigError if absent)."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ConfigError(f"job {self.job}: no input named {name!r}")

    @property
    def job_id(self) -> str:
        """The job's id: hex of the first 16 bytes of its hash."""
        return self.digest[:16].hex()


def job_hash(text: bytes) -> bytes:
    """SHA-256 of a job manifest file's bytes."""
    return sha256_digest(text)


def _table(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: key {key!r} must be a non-empty string")
    return value


def _check_keys(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (allowed: {sorted(allowed)})")


def _b64key(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not valid base64") from None
    if len(raw) != 32:
        raise ConfigError(f"{where}: a key is 32 bytes, got {len(raw)}")
    return raw


def parse_job(text: bytes, *, source: str = "job manifest") -> JobManifest:
    """Parse and validate a job manifest (TOML bytes); ConfigError naming the key on any problem."""
    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    _check_keys(
        doc,
        {
            "version",
            "job",
            "computation",
            "parties",
            "inputs",
            "outputs",
            "match",
            "params",
            "guards",
        },
        source,
    )
    if doc.get("version") != JOB_VERSION:
        raise ConfigError(f"{source}: key 'version' must be {JOB_VERSION}")
    job = _str(doc, "job", source)
    computation = _str(doc, "computation", source)
    parties: dict[str, VerifyKey] = {}
    for party, table in _table(doc, "parties", source).items():
        where = f"{source} [parties.{party}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(table, {"signing_key"}, where)
        try:
            parties[party] = VerifyKey(_b64key(_str(table, "signing_key", where), where))
        except CryptoError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    raw_inputs = doc.get("inputs", [])
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ConfigError(f"{source}: at least one [[inputs]] is needed")
    inputs: list[InputSpec] = []
    for i, raw in enumerate(raw_inputs):
        where = f"{source} inputs[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(raw, {"name", "party", "dataset", "version", "buckets", "filter_digest"}, where)
        party = _str(raw, "party", where)
        if party not in parties:
            raise ConfigError(f"{where}: party {party!r} has no [parties.{party}] signing key")
        version = raw.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"{where}: key 'version' must be a positive integer")
        buckets = raw.get("buckets")
        if buckets is not None and (
            not isinstance(buckets, list)
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in buckets)
        ):
            raise ConfigError(f"{where}: key 'buckets' must be a list of bucket numbers")
        digest = raw.get("filter_digest")
        if digest is not None and not isinstance(digest, str):
            raise ConfigError(f"{where}: key 'filter_digest' must be a hex string")
        try:
            dataset = check_dataset_id(_str(raw, "dataset", where))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        inputs.append(
            InputSpec(
                name=_str(raw, "name", where),
                party=party,
                dataset=dataset,
                version=version,
                buckets=None if buckets is None else tuple(sorted(set(buckets))),
                filter_digest=digest,
            )
        )
    names = [s.name for s in inputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: input names must be unique")
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list) or not raw_outputs:
        raise ConfigError(f"{source}: at least one [[outputs]] is needed")
    outputs: list[OutputSpec] = []
    for i, raw in enumerate(raw_outputs):
        where = f"{source} outputs[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(raw, {"name", "recipient", "public_key", "row_level"}, where)
        row_level = raw.get("row_level", False)
        if not isinstance(row_level, bool):
            raise ConfigError(f"{where}: key 'row_level' must be true or false")
        outputs.append(
            OutputSpec(
                name=_str(raw, "name", where),
                recipient=_str(raw, "recipient", where),
                public_key=_b64key(_str(raw, "public_key", where), where),
                row_level=row_level,
            )
        )
    if len({o.name for o in outputs}) != len(outputs):
        raise ConfigError(f"{source}: output names must be unique")
    match = _parse_match(doc.get("match"), names, source)
    guards = _table(doc, "guards", source)
    _check_keys(guards, {"min_cell_size", "rounding"}, f"{source} [guards]")
    min_cell = guards.get("min_cell_size", 50)
    rounding = guards.get("rounding", 1)
    for key, value in (("min_cell_size", min_cell), ("rounding", rounding)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source} [guards]: key {key!r} must be a positive integer")
    return JobManifest(
        job=job,
        computation=computation,
        parties=parties,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        match=match,
        params=dict(_table(doc, "params", source)),
        min_cell_size=int(min_cell),
        rounding=int(rounding),
        digest=job_hash(text),
    )


def _parse_match(raw: object, names: Sequence[str], source: str) -> MatchSpec | None:
    if raw is None:
        return None
    where = f"{source} [match]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table")
    _check_keys(raw, {"left", "right", "graph", "steps"}, where)
    left, right = _str(raw, "left", where), _str(raw, "right", where)
    graph = raw.get("graph")
    for key, value in (("left", left), ("right", right), ("graph", graph)):
        if value is not None and value not in names:
            raise ConfigError(f"{where}: key {key!r} names no input ({value!r})")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{where}: at least one [[match.steps]] is needed")
    steps = []
    for i, step in enumerate(raw_steps):
        at = f"{where} steps[{i}]"
        if not isinstance(step, Mapping):
            raise ConfigError(f"{at}: must be a table")
        _check_keys(step, {"left", "right", "via_graph", "left_kind", "right_kind"}, at)
        via = step.get("via_graph", False)
        if not isinstance(via, bool):
            raise ConfigError(f"{at}: key 'via_graph' must be true or false")
        if via and graph is None:
            raise ConfigError(f"{at}: via_graph needs [match] graph = <input name>")
        left_kind = step.get("left_kind")
        right_kind = step.get("right_kind")
        if via and not (isinstance(left_kind, str) and isinstance(right_kind, str)):
            raise ConfigError(f"{at}: a graph step needs left_kind and right_kind (ID kinds)")
        steps.append(
            MatchStep(
                left=_str(step, "left", at),
                right=_str(step, "right", at),
                via_graph=via,
                left_kind=left_kind if via else None,
                right_kind=right_kind if via else None,
            )
        )
    return MatchSpec(left=left, right=right, steps=tuple(steps), graph=graph)


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class MatchPart:
    """Matched pairs of one part of the data (one bucket, or everything).

    ``left_rows`` / ``right_rows`` index into ``left`` / ``right``; ``steps``
    is the waterfall step (0-based) that matched each pair.
    """

    left: pa.Table
    right: pa.Table
    left_rows: npt.NDArray[np.int64]
    right_rows: npt.NDArray[np.int64]
    steps: npt.NDArray[np.int16]

    @property
    def matched_left(self) -> npt.NDArray[np.int64]:
        """Distinct matched left rows, ascending."""
        return np.unique(self.left_rows)


def _keys(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.string())
    return array.cast(pa.large_string())


def match_tables(
    left: pa.Table,
    right: pa.Table,
    steps: Sequence[MatchStep],
    *,
    graph: IdGraph | None = None,
) -> MatchPart:
    """Waterfall hash join of ``left`` and ``right`` (vectorized; no per-row Python).

    Each step joins the still-unmatched left rows with all right rows on the
    step's key (nulls never match); a left row is matched by the first step
    that finds it, and paired with every right row sharing that key.
    """
    remaining = np.arange(left.num_rows, dtype=np.int64)
    lefts: list[npt.NDArray[np.int64]] = []
    rights: list[npt.NDArray[np.int64]] = []
    labels: list[npt.NDArray[np.int16]] = []
    for index, step in enumerate(steps):
        if remaining.size == 0 or right.num_rows == 0:
            break
        for table, column, side in ((left, step.left, "left"), (right, step.right, "right")):
            if column not in table.schema.names:
                raise SchemaError(
                    f"match step {index + 1} ({step.label}): the {side} input has no such column",
                    column=column,
                )
        left_keys = _keys(left.column(step.left).take(pa.array(remaining)))
        right_keys = _keys(right.column(step.right))
        if step.via_graph:
            if graph is None:
                raise ConfigError(f"match step {index + 1} needs the ID graph")
            left_keys = _keys(graph.lookup(str(step.left_kind), left_keys.cast(pa.string())))
            right_keys = _keys(graph.lookup(str(step.right_kind), right_keys.cast(pa.string())))
        lt = pa.table({_KEY: left_keys, _LROW: pa.array(remaining)})
        rt = pa.table(
            {_KEY: right_keys, _RROW: pa.array(np.arange(right.num_rows, dtype=np.int64))}
        )
        lt = lt.filter(pc.is_valid(lt[_KEY]))
        rt = rt.filter(pc.is_valid(rt[_KEY]))
        if lt.num_rows == 0 or rt.num_rows == 0:
            continue
        joined = lt.join(rt, keys=_KEY, join_type="inner", use_threads=True)
        if joined.num_rows == 0:
            continue
        l_idx = joined[_LROW].to_numpy()
        r_idx = joined[_RROW].to_numpy()
        lefts.append(l_idx)
        rights.append(r_idx)
        labels.append(np.full(l_idx.size, index, dtype=np.int16))
        remaining = np.setdiff1d(remaining, l_idx, assume_unique=False)
    if lefts:
        l_all, r_all, s_all = np.concatenate(lefts), np.concatenate(rights), np.concatenate(labels)
        order = np.lexsort((r_all, l_all))
        l_all, r_all, s_all = l_all[order], r_all[order], s_all[order]
    else:
        l_all = r_all = np.zeros(0, dtype=np.int64)
        s_all = np.zeros(0, dtype=np.int16)
    return MatchPart(left, right, l_all, r_all, s_all)


# --------------------------------------------------------------------------- inputs and context


class OpenInput:
    """One decrypted-on-demand input: streams buckets, meters rows read."""

    def __init__(
        self,
        spec: InputSpec,
        manifest: EnvelopeManifest,
        digest: str,
        reader: EnvelopeReader,
        store: SealedStore,
        area: JobArea,
    ) -> None:
        self.spec = spec
        self.manifest = manifest
        self.digest = digest
        self._reader = reader
        self._store = store
        self._area = area
        self.rows_read = 0
        self.buckets_opened: set[int] = set()

    @property
    def buckets(self) -> list[int]:
        """Non-empty buckets this job may open (the job's list, if it gives one)."""
        listed = [b.bucket for b in self.manifest.buckets]
        if self.spec.buckets is None:
            return listed
        return [b for b in listed if b in set(self.spec.buckets)]

    def read_bucket(self, bucket: int) -> pa.Table:
        """Decrypt one bucket (empty table if the bucket is empty or not allowed)."""
        if bucket not in self.buckets:
            return self.manifest.schema.empty_table()
        entry = self.manifest.bucket(bucket)
        if entry is None:
            return self.manifest.schema.empty_table()
        chunks = [self._store.get_chunk(c.sha256) for c in entry.chunks]
        table = self._reader.open_bucket(bucket, chunks)
        self.rows_read += table.num_rows
        self.buckets_opened.add(bucket)
        return table

    def iter_buckets(self, buckets: Sequence[int] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """Stream ``(bucket, rows)`` one bucket at a time."""
        for bucket in self.buckets if buckets is None else buckets:
            yield bucket, self.read_bucket(bucket)

    def reader(self) -> pa.RecordBatchReader:
        """Every allowed bucket as a stream of record batches, decrypted one bucket at a time."""

        def batches() -> Iterator[pa.RecordBatch]:
            for _, table in self.iter_buckets():
                yield from table.to_batches()

        return pa.RecordBatchReader.from_batches(self.manifest.schema, batches())

    def read_all(self) -> pa.Table:
        """Every allowed bucket, spilled to the job's private area and memory-mapped back."""
        path = self._area.file(f"input-{self.spec.name}.arrow")
        schema = self.manifest.schema
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for _, table in self.iter_buckets():
                writer.write_table(table)
        with pa.memory_map(str(path), "r") as source:
            return pa.ipc.open_file(source).read_all()

    def use(self) -> DatasetUse:
        """Metering record of this input."""
        return DatasetUse(
            party=self.spec.party,
            dataset_id=self.spec.dataset,
            version=self.spec.version,
            manifest_digest=self.digest,
            rows_read=self.rows_read,
            buckets_opened=len(self.buckets_opened),
        )


@dataclass
class JobContext:
    """What a computation sees: the job, its opened inputs, its private area."""

    job: JobManifest
    inputs: Mapping[str, OpenInput]
    area: JobArea
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> Mapping[str, Any]:
        """The job's ``[params]`` table."""
        return self.job.params

    def guard(self) -> Guard:
        """The job's output guard (``[guards]``), for computations that guard several tables."""
        return Guard(
            PrivacyPolicy(min_cell_size=self.job.min_cell_size, rounding=self.job.rounding)
        )

    def match_parts(self) -> Iterator[MatchPart]:
        """Matched pairs, bucket by bucket when possible, else over all rows.

        Bucket by bucket when the match has one direct step on both inputs'
        bucket columns with the same bucket function: then only buckets that
        are non-empty on *both* sides are opened. Otherwise (waterfall over
        other IDs, graph steps) every allowed bucket is opened.
        """
        spec = self.job.match
        if spec is None:
            raise ConfigError(f"job {self.job.job}: computation needs a [match] table")
        left, right = self.inputs[spec.left], self.inputs[spec.right]
        steps = spec.steps
        bucketed = (
            len(steps) == 1
            and not steps[0].via_graph
            and steps[0].left == left.manifest.id_column
            and steps[0].right == right.manifest.id_column
            and left.manifest.bucket_function == right.manifest.bucket_function
        )
        self.notes["match_mode"] = "bucketed" if bucketed else "full"
        if bucketed:
            common = sorted(set(left.buckets) & set(right.buckets))
            self.notes["buckets_joined"] = len(common)
            for bucket in common:
                yield match_tables(left.read_bucket(bucket), right.read_bucket(bucket), steps)
            return
        graph = None
        if spec.graph is not None:
            edges = self.inputs[spec.graph].read_all()
            graph = build_id_graph(edges, MappingConfig(), source=f"input {spec.graph}")
            self.notes["graph_nodes"] = graph.report.nodes
        yield match_tables(left.read_all(), right.read_all(), steps, graph=graph)


@dataclass(frozen=True)
class ComputationResult:
    """A computation's products: row-level (only released where allowed) and aggregate.

    ``aggregate`` is released through the output guard: ``counts`` are its
    count columns (the first is thresholded against k), ``key`` the columns
    naming a cell, ``group`` the column whose cells sum to a published total.
    A computation whose release needs more than one guarded table (sums,
    ratios recomputed from released numbers) guards them itself with
    :meth:`JobContext.guard` and sets ``guarded = True``: its ``aggregate``
    is then released as it is.
    """

    aggregate: pa.Table
    counts: tuple[str, ...]
    key: tuple[str, ...] = ()
    group: str | None = None
    rows: pa.Table | None = None
    guarded: bool = False


#: A computation: context in, products out.
Computation = Callable[[JobContext], ComputationResult]
_COMPUTATIONS: dict[str, Computation] = {}
#: Built-in computations that live in modules of their own, imported when a job
#: first asks for them (an island that never trains a model never loads LightGBM).
_BUILTIN: dict[str, str] = {
    "persona": "atoll.island.insight_jobs",
    "attribution": "atoll.island.insight_jobs",
    "ivt": "atoll.island.insight_jobs",
    "lbs_tags": "atoll.island.insight_jobs",
    "lookalike_joint": "atoll.island.lookalike_job",
}


def computation_names() -> list[str]:
    """Names of every computation an island can run."""
    return sorted(set(_COMPUTATIONS) | set(_BUILTIN))


def computation(name: str) -> Computation:
    """The computation called ``name`` (its built-in module imported on first use)."""
    if name not in _COMPUTATIONS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    found = _COMPUTATIONS.get(name)
    if found is None:
        raise ConfigError(f"unknown computation {name!r} (known: {computation_names()})")
    return found


def register_computation(name: str) -> Callable[[Computation], Computation]:
    """Decorator: make ``fn`` runnable as ``computation = "<name>"`` in job manifests.

    This is the hook analytics, attribution and scoring jobs use to run
    inside the island; they get a :class:`JobContext` and return a
    :class:`ComputationResult`, and the island applies guards and sealing.
    """

    def deco(fn: Computation) -> Computation:
        if name in _COMPUTATIONS and _COMPUTATIONS[name] is not fn:
            raise ConfigError(f"computation {name!r} is already registered")
        _COMPUTATIONS[name] = fn
        return fn

    return deco


def _key_column(ctx: JobContext, left: OpenInput) -> str:
    key = ctx.params.get("key_column", left.manifest.id_column)
    if not isinstance(key, str) or key not in left.manifest.schema.names:
        raise ConfigError(f"params.key_column {key!r} is not a column of input {left.spec.name}")
    return key


@register_computation("match")
def _match(ctx: JobContext) -> ComputationResult:
    """Who matched, and by which waterfall step (rows); matched users per step (aggregate)."""
    spec = ctx.job.match
    if spec is None:
        raise ConfigError("computation 'match' needs a [match] table")
    left = ctx.inputs[spec.left]
    key = _key_column(ctx, left)
    per_step = np.zeros(len(spec.steps), dtype=np.int64)
    rows: list[pa.Table] = []
    for part in ctx.match_parts():
        first = np.unique(part.left_rows, return_index=True)
        idx, pos = first
        step_of = part.steps[pos]
        per_step += np.bincount(step_of, minlength=len(spec.steps)).astype(np.int64)
        labels = pa.array([spec.steps[int(s)].label for s in step_of], pa.string())
        rows.append(
            pa.table({key: part.left.column(key).take(pa.array(idx)), "match_step": labels})
        )
    total = int(per_step.sum())
    labels = [s.label for s in spec.steps] + ["all steps"]
    aggregate = pa.table(
        {
            "step": pa.array(labels, pa.string()),
            "users": pa.array([*per_step.tolist(), total], pa.int64()),
        }
    )
    row_table = pa.concat_tables(rows) if rows else None
    return ComputationResult(aggregate=aggregate, counts=("users",), key=("step",), rows=row_table)


@register_computation("tag_augmentation")
def _tag_augmentation(ctx: JobContext) -> ComputationResult:
    """Provider tags for matched brand rows (rows), or users per tag value (aggregate)."""
    spec = ctx.job.match
    if spec is None:
        raise ConfigError("computation 'tag_augmentation' needs a [match] table")
    left, right = ctx.inputs[spec.left], ctx.inputs[spec.right]
    key = _key_column(ctx, left)
    tags = ctx.params.get("tag_columns")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
        raise ConfigError("params.tag_columns must be a non-empty list of column names")
    for tag in tags:
        if tag not in right.manifest.schema.names:
            raise ConfigError(
                f"params.tag_columns: {tag!r} is not a column of input {right.spec.name}"
            )
    counts: dict[tuple[str, str], int] = {}
    matched = 0
    rows: list[pa.Table] = []
    for part in ctx.match_parts():
        matched += int(part.matched_left.size)
        l_take, r_take = pa.array(part.left_rows), pa.array(part.right_rows)
        row = {key: part.left.column(key).take(l_take)}
        for tag in tags:
            row[tag] = part.right.column(tag).take(r_take)
        rows.append(pa.table(row))
        for tag in tags:
            values = part.right.column(tag).take(r_take)
            owners = part.left_rows
            if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
                parents = pc.list_parent_indices(flat).to_numpy()
                owners = owners[parents]
                values = pc.list_flatten(flat)
            pairs = pa.table({"o": pa.array(owners), "v": values.cast(pa.string())})
            pairs = pairs.filter(pc.is_valid(pairs["v"]))
            distinct = pairs.group_by(["o", "v"]).aggregate([])
            per_value = distinct.group_by("v").aggregate([("o", "count")])
            for value, users in zip(
                per_value["v"].to_pylist(), per_value["o_count"].to_pylist(), strict=True
            ):
                counts[(tag, value)] = counts.get((tag, value), 0) + int(users)
    ordered = sorted(counts.items())
    aggregate = pa.table(
        {
            "dimension": pa.array(["matched"] + [k[0] for k, _ in ordered], pa.string()),
            "value": pa.array(["all"] + [k[1] for k, _ in ordered], pa.string()),
            "users": pa.array([matched] + [v for _, v in ordered], pa.int64()),
        }
    )
    row_table = pa.concat_tables(rows) if rows else None
    return ComputationResult(
        aggregate=aggregate, counts=("users",), key=("dimension", "value"), rows=row_table
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SealedResult:
    """One output sealed to its recipient (JSON over the wire)."""

    output: str
    recipient: str
    level: Literal["row", "aggregate"]
    rows: int
    simulated: bool
    stamp: str | None
    sealed: bytes

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the sealed bytes; the signed usage receipt lists it."""
        return sha256_digest(self.sealed).hex()

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "atoll_result": RESULT_VERSION,
            "output": self.output,
            "recipient": self.recipient,
            "level": self.level,
            "rows": self.rows,
            "simulated": self.simulated,
            "stamp": self.stamp,
            "sealed": base64.b64encode(self.sealed).decode("ascii"),
        }

    @classmethod
    def from_json(cls, obj: object) -> SealedResult:
        """Parse a result sent by the island (hostile input: RemoteProtocolError)."""
        if not isinstance(obj, dict) or obj.get("atoll_result") != RESULT_VERSION:
            raise RemoteProtocolError("not a sealed result of version 1")
        try:
            level = obj["level"]
            if level not in ("row", "aggregate"):
                raise ValueError(f"bad level {level!r}")
            return cls(
                output=str(obj["output"]),
                recipient=str(obj["recipient"]),
                level=level,
                rows=int(obj["rows"]),
                simulated=bool(obj["simulated"]),
                stamp=None if obj.get("stamp") is None else str(obj["stamp"]),
                sealed=base64.b64decode(str(obj["sealed"]), validate=True),
            )
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise RemoteProtocolError(f"malformed sealed result ({exc})") from None


def _result_info(job_digest: bytes, output: str, recipient: str) -> bytes:
    return transcript_hash(_RESULT_DOMAIN, job_digest, output.encode(), recipient.encode())


def open_result(result: SealedResult, key: HpkePrivateKey, *, job_digest: bytes) -> pa.Table:
    """Decrypt a sealed result with the recipient's HPKE private key.

    The returned table's schema metadata carries ``atoll.stamp`` (the
    simulated-backend warning, when it applies), ``atoll.level`` and the job id.
    """
    plain = key.open(result.sealed, info=_result_info(job_digest, result.output, result.recipient))
    try:
        table = pa.ipc.open_stream(pa.py_buffer(plain)).read_all()
    except pa.ArrowException as exc:
        raise IntegrityError(f"result {result.output}: decrypted bytes are not Arrow IPC") from exc
    meta = table.schema.metadata or {}
    if meta.get(b"atoll.level", b"").decode() != result.level:
        raise IntegrityError(f"result {result.output}: level differs from the sealed metadata")
    return table


def _seal_output(
    job: JobManifest, spec: OutputSpec, table: pa.Table, level: str, stamp: str | None
) -> SealedResult:
    meta = {
        b"atoll.job": job.job.encode(),
        b"atoll.job_id": job.job_id.encode(),
        b"atoll.output": spec.name.encode(),
        b"atoll.level": level.encode(),
    }
    if stamp is not None:
        meta[b"atoll.stamp"] = stamp.encode()
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    sealed = hpke_seal(
        spec.public_key, payload, info=_result_info(job.digest, spec.name, spec.recipient)
    )
    return SealedResult(
        output=spec.name,
        recipient=spec.recipient,
        level="row" if level == "row" else "aggregate",
        rows=table.num_rows,
        simulated=stamp is not None,
        stamp=stamp,
        sealed=sealed,
    )


# --------------------------------------------------------------------------- the island host


@dataclass
class JobOutcome:
    """Sealed results and signed receipts of a finished (or failed) job."""

    job_id: str
    status: str
    results: list[SealedResult]
    usage_receipt: bytes | None
    deletion_receipt: bytes
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "job_id": self.job_id,
            "status": self.status,
            "error": self.error,
            "results": [r.to_json() for r in self.results],
            "usage_receipt": None
            if self.usage_receipt is None
            else base64.b64encode(self.usage_receipt).decode(),
            "deletion_receipt": base64.b64encode(self.deletion_receipt).decode(),
        }


@dataclass
class _JobState:
    manifest: JobManifest
    session: JobSession
    status: str = "waiting-for-keys"
    outcome: JobOutcome | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Island:
    """The island host: sealed storage, job sessions, attested key release, runs, receipts.

    All state that matters for trust lives here and in the modules it uses;
    the HTTP service (:mod:`atoll.service.island`) only translates requests.
    ``workdir`` holds the sealed store; ``temp_root`` the burn area (default
    ``workdir/private``; a tmpfs path keeps spills off disk). Leftovers of a
    previous process are swept at construction (:attr:`swept`).
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        backend: SimulatedBackend,
        temp_root: str | Path | None = None,
        max_jobs: int = 64,
    ) -> None:
        self.workdir = Path(workdir)
        self.store = SealedStore(self.workdir / "store")
        self.burn = BurnArea(Path(temp_root) if temp_root is not None else self.workdir / "private")
        self.swept = self.burn.sweep()
        self.backend = backend
        self._receipt_key = SigningKey.generate()
        self._jobs: dict[str, _JobState] = {}
        self._expected_chunks: set[str] = set()
        self._max_jobs = max_jobs
        self._lock = threading.Lock()
        self._service_session = self._session(bytes(32))
        for dataset, versions in self.store.datasets().items():
            for version in versions:
                manifest, _ = self.store.manifest(dataset, version)
                self._expected_chunks.update(self.store.missing_chunks(manifest))

    @property
    def simulated(self) -> bool:
        """True under the simulated backend."""
        return self.backend.tee == "simulated"

    @property
    def stamp(self) -> str | None:
        """The label stamped on everything this island produces (None on real hardware)."""
        return SIMULATED_STAMP if self.simulated else None

    @property
    def receipt_key(self) -> VerifyKey:
        """The public key receipts are signed with (bound into every attestation)."""
        return self._receipt_key.verify_key

    def info(self) -> dict[str, Any]:
        """Public facts about this island (measurement to pin, TEE type, stamp)."""
        return {
            "tee": self.backend.tee,
            "simulated": self.simulated,
            "stamp": self.stamp,
            "measurement": self.backend.measurement,
            "code_hash": self.backend.code_hash,
            "config_hash": self.backend.config_hash,
            "receipt_key": self.receipt_key.to_text(),
            "datasets": self.store.datasets(),
            "swept_at_start": len(self.swept),
        }

    def _session(self, digest: bytes) -> JobSession:
        return JobSession(
            job_hash=digest,
            receipt_key=self.receipt_key.raw,
            tee=self.backend.tee,
            quote=self.backend.quote,
        )

    # ------------------------------------------------------------------ jobs and attestation

    def submit_job(self, text: bytes) -> JobManifest:
        """Register a job manifest (idempotent for the same bytes); returns it parsed."""
        job = parse_job(text)
        computation(job.computation)  # unknown names are refused before any key is released
        with self._lock:
            if job.job_id not in self._jobs:
                if len(self._jobs) >= self._max_jobs:
                    raise RemoteProtocolError("too many jobs on this island")
                self._jobs[job.job_id] = _JobState(job, self._session(job.digest))
        return job

    def _state(self, job_id: str) -> _JobState:
        with self._lock:
            state = self._jobs.get(job_id)
        if state is None:
            raise LocalProtocolError(
                f"no job {job_id!r} on this island (submit its manifest first)"
            )
        return state

    def attest(self, nonce: bytes, job_id: str | None = None) -> EvidenceBundle:
        """Evidence for ``job_id`` (or for the island itself, job hash all zeros)."""
        session = self._service_session if job_id is None else self._state(job_id).session
        return session.attest(nonce)

    def release_key(
        self,
        job_id: str,
        *,
        party: str,
        dataset_id: str,
        version: int,
        nonce: bytes,
        wrapped: bytes,
        signature: bytes,
    ) -> dict[str, Any]:
        """Accept a wrapped dataset key for an input of ``job_id``; say which keys are missing.

        ``signature`` (:func:`~atoll.island.keyrelease.sign_release`) must be
        made with the signing key the job manifest pins for ``party``.
        """
        state = self._state(job_id)
        wanted = {(s.party, s.dataset, s.version) for s in state.manifest.inputs}
        if (party, dataset_id, version) not in wanted:
            raise RemoteProtocolError(f"job {job_id} has no input {party}/{dataset_id} v{version}")
        verify_release(
            state.manifest.parties[party],
            signature,
            job_hash=state.manifest.digest,
            nonce=nonce,
            party=party,
            dataset_id=dataset_id,
            version=version,
            wrapped=wrapped,
        )
        state.session.unwrap(
            wrapped, nonce=nonce, party=party, dataset_id=dataset_id, version=version
        )
        return self.job_status(job_id)

    def job_status(self, job_id: str) -> dict[str, Any]:
        """Status of a job: which keys are released, which are still missing."""
        state = self._state(job_id)
        wanted = {(s.party, s.dataset, s.version) for s in state.manifest.inputs}
        have = state.session.released() if not state.session.closed else set()
        return {
            "job_id": job_id,
            "job": state.manifest.job,
            "status": state.status,
            "released": sorted(f"{p}/{d}/v{v}" for p, d, v in have & wanted),
            "missing": sorted(f"{p}/{d}/v{v}" for p, d, v in wanted - have),
        }

    # ------------------------------------------------------------------ uploads

    def put_manifest(self, signed: bytes) -> tuple[EnvelopeManifest, list[str]]:
        """Store a signed dataset manifest; returns it and the chunk hashes still missing."""
        manifest = self.store.put_manifest(signed)
        missing = self.store.missing_chunks(manifest)
        with self._lock:
            self._expected_chunks.update(missing)
        return manifest, missing

    def put_chunk(self, sha256: str, data: bytes) -> None:
        """Store a sealed chunk that an uploaded manifest lists."""
        with self._lock:
            expected = sha256 in self._expected_chunks
        if not expected and not self.store.has_chunk(sha256):
            raise RemoteProtocolError(
                f"chunk {sha256[:16]}... is not listed by any uploaded manifest"
            )
        self.store.put_chunk(sha256, data)
        with self._lock:
            self._expected_chunks.discard(sha256)

    # ------------------------------------------------------------------ running

    def run(self, job_id: str) -> JobOutcome:
        """Run a job whose keys are all released; burn; sign receipts (once per job)."""
        state = self._state(job_id)
        with state.lock:
            if state.outcome is not None:
                return state.outcome
            status = self.job_status(job_id)
            if status["missing"]:
                raise LocalProtocolError(
                    f"job {job_id} cannot run: keys not released for {', '.join(status['missing'])}"
                )
            state.status = "running"
            outcome = self._execute(state)
            state.outcome = outcome
            state.status = outcome.status
            return outcome

    def outcome(self, job_id: str) -> JobOutcome:
        """The outcome of a finished job (LocalProtocolError before it ran)."""
        state = self._state(job_id)
        if state.outcome is None:
            raise LocalProtocolError(f"job {job_id} has not run yet ({state.status})")
        return state.outcome

    def _execute(self, state: _JobState) -> JobOutcome:
        job = state.manifest
        started = datetime.now(UTC)
        opened: dict[str, OpenInput] = {}
        results: list[SealedResult] = []
        usage_blob: bytes | None = None
        error: str | None = None
        failure: Exception | None = None
        uses: list[DatasetUse] = []
        area = self.burn.open(job.job_id)
        with area:
            area.hold_key("job-session-hpke-key-and-released-dataset-keys", state.session)
            try:
                for spec in job.inputs:
                    manifest, signed = self.store.manifest(
                        spec.dataset, spec.version, expected_signer=job.parties[spec.party]
                    )
                    if (
                        spec.filter_digest is not None
                        and manifest.filter_digest != spec.filter_digest
                    ):
                        raise IntegrityError(
                            f"input {spec.name}: uploaded with filter {manifest.filter_digest}, "
                            f"the job requires {spec.filter_digest}"
                        )
                    reader = EnvelopeReader(
                        manifest, state.session.dataset_key(spec.party, spec.dataset, spec.version)
                    )
                    area.hold_key(
                        f"dataset-key:{spec.party}/{spec.dataset}/v{spec.version}", reader
                    )
                    opened[spec.name] = OpenInput(
                        spec, manifest, manifest_digest(signed), reader, self.store, area
                    )
                ctx = JobContext(job, opened, area)
                product = computation(job.computation)(ctx)
                if product.guarded:
                    guarded = product.aggregate
                else:
                    guarded = (
                        ctx.guard()
                        .apply(
                            product.aggregate,
                            counts=list(product.counts),
                            key=list(product.key),
                            group=product.group,
                            what=f"island job {job.job}",
                        )
                        .table
                    )
                rows_out: dict[str, int] = {}
                for out in job.outputs:
                    if out.row_level and product.rows is not None:
                        sealed = _seal_output(job, out, product.rows, "row", self.stamp)
                    else:
                        sealed = _seal_output(job, out, guarded, "aggregate", self.stamp)
                    results.append(sealed)
                    rows_out[out.name] = sealed.rows
                uses = [opened[s.name].use() for s in job.inputs]
                usage = UsageReceipt(
                    job_id=job.job_id,
                    job_hash=job.digest.hex(),
                    tee=self.backend.tee,
                    measurement=self.backend.measurement,
                    simulated=self.simulated,
                    stamp=self.stamp,
                    computation=job.computation,
                    datasets=tuple(uses),
                    rows_out=rows_out,
                    recipients={o.name: o.recipient for o in job.outputs},
                    result_digests={r.output: r.digest for r in results},
                    started_at=started,
                    finished_at=datetime.now(UTC),
                )
                usage_blob = sign_receipt(usage, self._receipt_key)
            except Exception as exc:
                # Atoll errors carry their message; anything else (a bug, an Arrow
                # error on unexpected data) is reported by type and message too.
                failure = exc
                error = f"{type(exc).__name__}: {exc}"
                results = []
                uses = [o.use() for o in opened.values()]
        record = area.burn()
        deletion = DeletionReceipt(
            job_id=job.job_id,
            job_hash=job.digest.hex(),
            tee=self.backend.tee,
            measurement=self.backend.measurement,
            simulated=self.simulated,
            stamp=self.stamp,
            datasets=tuple(uses),
            files_deleted=record.files,
            bytes_deleted=record.bytes,
            directories_deleted=record.directories,
            keys_dropped=tuple(record.keys_dropped),
            temp_area_empty=record.empty_after,
            outcome="completed" if failure is None else "failed",
        )
        return JobOutcome(
            job_id=job.job_id,
            status="done" if failure is None else "failed",
            results=results,
            usage_receipt=usage_blob,
            deletion_receipt=sign_receipt(deletion, self._receipt_key),
            error=error,
        )

    def shutdown(self) -> None:
        """Burn every open area and drop every session's keys (process exit)."""
        self.burn.burn_all()
        with self._lock:
            states = list(self._jobs.values())
        for state in states:
            state.session.destroy()
        self._service_session.destroy()
