"""Scoring the universe in parts, cutting scoring groups, excluding seeds, building packages.

Why: a provider's universe has tens of millions of devices; scoring must
stream (bounded memory) and run in parallel (ARCHITECTURE ideas 2 and 3).
Pass 1 maps over the universe's parts — the buckets of a
:class:`~atoll.data.datasets.BucketedDataset` or the row groups of a Parquet
file (a CSV is first spilled to Parquet) — on an
:class:`~atoll.execution.Executor`. Tasks take *paths* (the part, the
model directory, the exclusion lists), load the model once per worker,
read only the columns they need (tag columns of a Parquet file as Arrow
dictionaries, as Parquet stores them), score in blocks of
:data:`SCORE_BLOCK_ROWS` rows (:func:`score_table`: a column-major feature
block, reused, evaluated by the compiled trees of :mod:`atoll.models.pu` —
LightGBM's exact numbers), mark exclusions and write a small part file;
they return only the scores of eligible rows, so the group cut points can
be computed exactly.
Pass 2 streams the part files once more: assigns groups, writes
``scores.parquet`` (``device_id, score, group, excluded`` for *every*
universe row) and feeds the package builder.

Groups (:class:`GroupSpec`):

* ``quantile`` (default, ``--groups 0.01,0.05,0.2``): cumulative top shares
  of the eligible rows — group 1 the top 1 %, group 2 the next 4 %, group 3
  the next 15 %; group 0 the rest. Cut points are scores, so rows tied
  with a cut score join the higher group.
* ``threshold`` (``--thresholds 0.3,0.15,0.05``): expected-conversion cuts on
  a *calibrated* score (Elkan–Noto ``P(buyer)``): group 1 ``≥ 0.3``, …

Exclusions (``excluded`` column, group forced to 0): ``seed`` (a training
seed's device), ``seed_phone`` (another device carrying a seed's phone: the
same buyer) and ``exposed`` (optional list of already-exposed devices).
Excluded rows are never given to the package builder.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.data.datasets import MANIFEST_NAME, BucketedDataset
from atoll.data.io import iter_batches
from atoll.errors import ConfigError, InputError, SchemaError
from atoll.execution import Executor
from atoll.ids.normalize import normalize_array
from atoll.models.packages import DEFAULT_KINDS, PackageBuilder, PackageKind
from atoll.models.pu import BaggingPU, ElkanNotoPU, is_lightgbm
from atoll.models.registry import EXCLUSIONS_FILE, load_model_dir

__all__ = [
    "GroupSpec",
    "ScoringResult",
    "assign_groups",
    "cut_points",
    "exclusions_table",
    "score_table",
    "score_universe",
    "universe_parts",
]

Float = npt.NDArray[np.float64]
#: Rows encoded and scored at a time within a part: bounds the feature matrix (rows x features).
SCORE_BLOCK_ROWS = 32_768
#: Text columns of a CSV universe that hold ``|``-separated lists.
LIST_COLUMNS = ("app_categories", "interests", "lbs_frequent_categories", "lbs_frequent_pois")


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """How scores become groups 1..n (see the module docs)."""

    mode: Literal["quantile", "threshold"]
    bounds: tuple[float, ...]

    def __post_init__(self) -> None:
        b = self.bounds
        if not b:
            raise ConfigError("at least one group bound is needed")
        if any(not (0 < x <= 1) or not math.isfinite(x) for x in b):
            raise ConfigError(f"group bounds must be in (0, 1], got {list(b)}")
        if self.mode == "quantile" and any(x >= y for x, y in itertools.pairwise(b)):
            raise ConfigError(f"quantile groups must increase (e.g. 0.01,0.05,0.2), got {list(b)}")
        if self.mode == "threshold" and any(x <= y for x, y in itertools.pairwise(b)):
            raise ConfigError(f"thresholds must decrease (e.g. 0.3,0.15,0.05), got {list(b)}")
        if self.mode not in ("quantile", "threshold"):
            raise ConfigError(f"group mode must be quantile or threshold, got {self.mode!r}")

    @classmethod
    def quantiles(cls, bounds: Sequence[float]) -> GroupSpec:
        """Cumulative top shares, e.g. ``(0.01, 0.05, 0.2)``."""
        return cls("quantile", tuple(float(x) for x in bounds))

    @classmethod
    def thresholds(cls, bounds: Sequence[float]) -> GroupSpec:
        """Decreasing score thresholds, e.g. ``(0.3, 0.15, 0.05)``."""
        return cls("threshold", tuple(float(x) for x in bounds))

    @classmethod
    def parse(cls, text: str, mode: Literal["quantile", "threshold"] = "quantile") -> GroupSpec:
        """Parse ``"0.01,0.05,0.2"``."""
        try:
            values = tuple(float(p) for p in text.split(",") if p.strip())
        except ValueError as exc:
            raise ConfigError(f"groups must be comma-separated numbers, got {text!r}") from exc
        return cls(mode, values)

    @property
    def groups(self) -> int:
        """Number of groups (group 0, the rest, not counted)."""
        return len(self.bounds)

    def describe(self) -> list[str]:
        """Human labels of the groups."""
        if self.mode == "threshold":
            return [f"score ≥ {b:g}" for b in self.bounds]
        lo = 0.0
        out = []
        for b in self.bounds:
            out.append(f"top {lo:.0%}–{b:.0%}" if lo else f"top {b:.0%}")
            lo = b
        return out


def cut_points(eligible_scores: Float, spec: GroupSpec) -> list[float]:
    """Score cut of each group (descending): group g holds scores ≥ cut[g-1] (and < cut[g-2])."""
    if spec.mode == "threshold":
        return list(spec.bounds)
    s = np.asarray(eligible_scores, dtype=np.float64)
    tops = [math.ceil(b * s.size) for b in spec.bounds]
    # The top-th largest score is the (size - top)-th smallest: a partial sort finds them all.
    kth = sorted({s.size - top for top in tops if top >= 1})
    ranked = np.partition(s, kth) if kth and s.size else s
    return [float(ranked[s.size - top]) if top >= 1 and s.size else math.inf for top in tops]


def _groups_from_cuts(
    score: Float, eligible: npt.NDArray[np.bool_], cuts: Sequence[float]
) -> npt.NDArray[np.int8]:
    group = np.zeros(score.shape, dtype=np.int8)
    for j in reversed(range(len(cuts))):
        group[(score >= cuts[j]) & eligible] = j + 1
    return group


def assign_groups(
    score: Float, eligible: npt.NDArray[np.bool_], spec: GroupSpec
) -> npt.NDArray[np.int8]:
    """Groups of in-memory scores (0 = no group; ineligible rows always 0)."""
    score = np.asarray(score, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    return _groups_from_cuts(score, eligible, cut_points(score[eligible], spec))


# --------------------------------------------------------------------------- parts


def universe_parts(path: Path) -> tuple[str, list[tuple[str, int]]]:
    """``(source, [(kind, part)])`` of a bucketed dataset folder or a Parquet file."""
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists():
            raise InputError(
                "a folder universe must be a bucketed dataset (no manifest)", source=str(path)
            )
        return str(path), [("bucket", b) for b in BucketedDataset.open(path).buckets()]
    if not path.exists():
        raise InputError("file not found", source=str(path))
    try:
        groups = pq.ParquetFile(path).num_row_groups
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"unreadable Parquet ({exc})", source=str(path)) from exc
    return str(path), [("row_group", i) for i in range(groups)]


def _spill_csv(path: Path, folder: Path, batch_rows: int) -> Path:
    out = folder / "universe.parquet"
    writer: pq.ParquetWriter | None = None
    try:
        first = next(iter_batches(path, batch_rows=1), None)
        if first is None:
            raise InputError("the universe file has no rows", source=str(path))
        types = {c: pa.list_(pa.string()) for c in LIST_COLUMNS if c in first.schema.names}
        for batch in iter_batches(path, batch_rows=batch_rows, column_types=types):
            if writer is None:
                writer = pq.ParquetWriter(out, batch.schema)
            writer.write_table(pa.Table.from_batches([batch]), row_group_size=batch_rows)
    finally:
        if writer is not None:
            writer.close()
    return out


def read_part(
    source: str,
    kind: str,
    part: int,
    columns: Sequence[str] | None = None,
    dictionary: Sequence[str] = (),
) -> pa.Table:
    """Read one part (a bucket or a Parquet row group).

    ``dictionary``: text or list-of-text columns of a Parquet file to read as
    Arrow dictionaries (Parquet stores them dictionary-encoded; reading the
    dictionary and its indices skips building one string per row). Values
    are unchanged; bucketed datasets ignore it.
    """
    cols = None if columns is None else list(columns)
    if kind == "bucket":
        return BucketedDataset.open(source).read_bucket(part, cols)
    if dictionary:
        paths = _dictionary_paths(source, os.stat(source).st_mtime_ns, tuple(dictionary))
        return pq.ParquetFile(source, read_dictionary=paths).read_row_group(part, columns=cols)
    return pq.ParquetFile(source).read_row_group(part, columns=cols)


@functools.lru_cache(maxsize=8)
def _dictionary_paths(source: str, mtime_ns: int, names: tuple[str, ...]) -> list[str]:
    """Parquet leaf paths of the named text / list-of-text columns (others are skipped)."""
    del mtime_ns
    file = pq.ParquetFile(source)
    arrow = file.schema_arrow
    leaves: dict[str, list[str]] = {}
    for i in range(file.metadata.num_columns):
        path = file.schema.column(i).path
        leaves.setdefault(path.split(".", 1)[0], []).append(path)
    out: list[str] = []
    for name in names:
        if name not in arrow.names or len(leaves.get(name, [])) != 1:
            continue
        type_ = arrow.field(name).type
        if pa.types.is_list(type_) or pa.types.is_large_list(type_):
            type_ = type_.value_type
        if pa.types.is_string(type_) or pa.types.is_large_string(type_):
            out.append(leaves[name][0])
    return out


# --------------------------------------------------------------------------- pass 1


@dataclass(frozen=True, slots=True)
class _Task:
    source: str
    kind: str
    part: int
    model_dir: str
    exposed_path: str | None
    id_column: str
    keep_columns: tuple[str, ...]
    out_path: str


@functools.lru_cache(maxsize=2)
def _model(path: str, mtime_ns: int) -> Any:
    del mtime_ns
    return load_model_dir(path)


@functools.lru_cache(maxsize=8)
def _id_set(path: str, column: str, reason: str | None, mtime_ns: int) -> pa.Array:
    del mtime_ns
    table = pq.read_table(path)
    if column not in table.column_names:
        return pa.array([], pa.string())
    if reason is not None and "reason" in table.column_names:
        table = table.filter(pc.equal(table["reason"], reason))
    values = pc.drop_null(table[column]).combine_chunks()
    return values.cast(pa.string())


def _normalized_phones(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    values = normalize_array(column, "phone").values
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _excluded(
    table: pa.Table, id_column: str, model_dir: str, exposed_path: str | None
) -> pa.Array:
    """Per row: ``seed``, ``seed_phone``, ``exposed`` or null (eligible); seed wins."""
    excl_path = os.path.join(model_dir, EXCLUSIONS_FILE)
    stamp = os.stat(excl_path).st_mtime_ns
    reason = pa.nulls(table.num_rows, pa.string())
    ids = table[id_column].cast(pa.string())
    exposed_sets = [_id_set(excl_path, "device_id", "exposed", stamp)]
    if exposed_path is not None:
        exposed_sets.append(
            _id_set(exposed_path, "device_id", None, os.stat(exposed_path).st_mtime_ns)
        )
    for exposed in exposed_sets:
        if len(exposed):
            hit = pc.fill_null(pc.is_in(ids, value_set=exposed), False)
            reason = pc.if_else(hit, pa.scalar("exposed"), reason)
    if "phone" in table.column_names:
        seed_phones = _id_set(excl_path, "phone", "seed", stamp)
        if len(seed_phones):
            phones = _normalized_phones(table["phone"])
            hit = pc.fill_null(pc.is_in(phones, value_set=seed_phones), False)
            reason = pc.if_else(hit, pa.scalar("seed_phone"), reason)
    seeds = _id_set(excl_path, "device_id", "seed", stamp)
    hit = pc.fill_null(pc.is_in(ids, value_set=seeds), False)
    return pc.if_else(hit, pa.scalar("seed"), reason)


def score_table(model: Any, table: pa.Table, block_rows: int = SCORE_BLOCK_ROWS) -> Float:
    """``model.score(table)``, the same numbers, computed ``block_rows`` rows at a time.

    For the LightGBM strategies each block is encoded column-major
    (:meth:`~atoll.models.features.TagEncoder.encode` with ``order="F"``),
    the layout of the compiled tree evaluator in :mod:`atoll.models.pu`, and
    the feature matrix never exceeds one block. Scores are per row, so
    blocks change nothing. The logistic baseline is scored in one call (its
    dot products go through BLAS, whose summation order may depend on the
    matrix shape).
    """
    pipeline = model.pipeline
    if pipeline is None:
        raise ConfigError("the lookalike model is not fitted yet")
    enc, est = pipeline.named_steps["tags"], pipeline.named_steps["pu"]
    if not _lightgbm_based(est) or table.num_rows <= 0:
        return np.asarray(model.score(table), dtype=np.float64)
    out = np.empty(table.num_rows, dtype=np.float64)
    width = len(enc.get_feature_names_out())
    buffer: npt.NDArray[np.float32] | None = None
    for start in range(0, table.num_rows, block_rows):
        block = table.slice(start, block_rows)
        if buffer is None or buffer.shape[0] != block.num_rows:
            buffer = np.empty((block.num_rows, width), dtype=np.float32, order="F")
        features = enc.encode(block, order="F", out=buffer)
        out[start : start + block.num_rows] = est.score_samples(features)
    return out


def _lightgbm_based(est: Any) -> bool:
    """Whether ``est`` is a PU strategy whose every base learner is a LightGBM model."""
    if isinstance(est, ElkanNotoPU):
        learners = [getattr(est, "estimator_", None)]
    elif isinstance(est, BaggingPU):
        learners = list(getattr(est, "estimators_", []))
    else:
        return False
    return bool(learners) and all(is_lightgbm(b) for b in learners)


def _score_part(task: _Task) -> tuple[str, int, npt.NDArray[np.float64]]:
    """Executor task: score one part, mark exclusions, write the part file."""
    loaded = _model(task.model_dir, os.stat(os.path.join(task.model_dir, "model.json")).st_mtime_ns)
    model = loaded.model
    needed = list(dict.fromkeys([task.id_column, *model.dimensions]))
    stamp_path = os.path.join(task.source, MANIFEST_NAME) if task.kind == "bucket" else task.source
    schema = _part_schema(task.source, task.kind, os.stat(stamp_path).st_mtime_ns)
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise SchemaError(
            f"the universe lacks column(s) the model needs: {', '.join(missing)}",
            source=task.source,
            column=missing[0],
        )
    keep = tuple(c for c in (*task.keep_columns, "phone") if c in schema.names)
    wanted = [*needed, *keep]
    table = read_part(
        task.source,
        task.kind,
        task.part,
        list(dict.fromkeys(wanted)),
        dictionary=[c for c in model.dimensions if c not in (task.id_column, "phone", *keep)],
    )
    score = score_table(model, table)
    excluded = _excluded(table, task.id_column, task.model_dir, task.exposed_path)
    cols: dict[str, Any] = {
        task.id_column: table[task.id_column].cast(pa.string()),
        "score": pa.array(score, pa.float64()),
        "excluded": excluded,
    }
    for c in task.keep_columns:
        if c in table.column_names and c not in cols:
            cols[c] = table[c]
    pq.write_table(pa.table(cols), task.out_path)
    eligible = np.asarray(excluded.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return task.out_path, table.num_rows, score[eligible]


@functools.lru_cache(maxsize=8)
def _part_schema(source: str, kind: str, mtime_ns: int) -> pa.Schema:
    """The universe's column schema (a bucketed dataset's manifest, or the Parquet footer)."""
    del mtime_ns
    if kind == "bucket":
        return BucketedDataset.open(source).schema
    return pq.ParquetFile(source).schema_arrow


# --------------------------------------------------------------------------- driver


@dataclass
class ScoringResult:
    """What :func:`score_universe` wrote and counted."""

    scores_path: Path
    rows: int
    eligible: int
    excluded: dict[str, int]
    cuts: list[float]
    group_sizes: list[int]
    spec: GroupSpec
    packages: dict[str, Any] | None = None
    mean_score: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "scores": str(self.scores_path),
            "rows": self.rows,
            "eligible": self.eligible,
            "excluded": self.excluded,
            "group_mode": self.spec.mode,
            "group_bounds": list(self.spec.bounds),
            "groups": [
                {"group": g + 1, "label": label, "cut_score": cut, "devices": n, "mean_score": m}
                for g, (label, cut, n, m) in enumerate(
                    zip(
                        self.spec.describe(),
                        self.cuts,
                        self.group_sizes,
                        self.mean_score,
                        strict=True,
                    )
                )
            ],
            "packages": self.packages,
        }


def score_universe(
    model_dir: str | os.PathLike[str],
    universe: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spec: GroupSpec,
    id_column: str = "device_id",
    exposed: pa.Array | None = None,
    executor: Executor | None = None,
    kinds: Sequence[PackageKind] | None = DEFAULT_KINDS,
    batch_rows: int = 250_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> ScoringResult:
    """Score every universe row, cut groups, write ``scores.parquet`` and the packages.

    ``universe``: a bucketed dataset folder, a Parquet file or a CSV file.
    ``exposed``: device IDs to exclude as already exposed. ``kinds=None``
    writes no packages. ``progress(stage, done, total)`` reports each pass.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = str(Path(model_dir).resolve())
    load_model_dir(model_path)  # fail early, in the caller, on a bad model directory
    builder = PackageBuilder(spec.groups, kinds) if kinds else None
    keep = tuple(builder.columns()) if builder is not None else ()
    with tempfile.TemporaryDirectory(prefix="atoll-score-", dir=out) as tmp_name:
        tmp = Path(tmp_name)
        path = Path(universe)
        if path.is_file() and path.suffix.lower() not in (".parquet", ".pq"):
            path = _spill_csv(path, tmp, batch_rows)
        source, parts = universe_parts(path)
        exposed_path = None
        if exposed is not None:
            exposed_path = str(tmp / "exposed.parquet")
            pq.write_table(
                pa.table({"device_id": pa.array(exposed).cast(pa.string())}), exposed_path
            )
        tasks = [
            _Task(
                source,
                kind,
                part,
                model_path,
                exposed_path,
                id_column,
                keep,
                str(tmp / f"part-{i:06d}.parquet"),
            )
            for i, (kind, part) in enumerate(parts)
        ]
        results: Iterator[tuple[str, int, npt.NDArray[np.float64]]] = (
            map(_score_part, tasks) if executor is None else executor.imap(_score_part, tasks)
        )
        files: list[str] = []
        eligible_scores: list[npt.NDArray[np.float64]] = []
        rows = 0
        for i, (part_path, n, elig) in enumerate(results):
            files.append(part_path)
            eligible_scores.append(elig.astype(np.float64))
            rows += n
            if progress is not None:
                progress("score", i + 1, len(tasks))
        all_eligible = np.concatenate(eligible_scores) if eligible_scores else np.zeros(0)
        cuts = cut_points(all_eligible, spec)
        sizes = [0] * spec.groups
        sums = [0.0] * spec.groups
        excluded: dict[str, int] = {}
        scores_path = out / "scores.parquet"
        tmp_scores = tmp / "scores.parquet"
        writer: pq.ParquetWriter | None = None
        try:
            for i, part_path in enumerate(files):
                part = pq.read_table(part_path)
                score = part["score"].to_numpy()
                eligible = np.asarray(
                    part["excluded"].is_null().to_numpy(zero_copy_only=False), dtype=bool
                )
                if not eligible.all():
                    for item in pc.value_counts(pc.drop_null(part["excluded"])).to_pylist():
                        key = str(item["values"])
                        excluded[key] = excluded.get(key, 0) + int(item["counts"])
                group = _groups_from_cuts(score, eligible, cuts)
                for g in range(1, spec.groups + 1):
                    sel = group == g
                    sizes[g - 1] += int(sel.sum())
                    sums[g - 1] += float(score[sel].sum())
                table = pa.table(
                    {
                        id_column: part[id_column],
                        "score": part["score"],
                        "group": pa.array(group, pa.int8()),
                        "excluded": part["excluded"],
                    }
                )
                if writer is None:
                    # Dictionary pages only where values repeat (not unique device IDs).
                    writer = pq.ParquetWriter(
                        tmp_scores,
                        table.schema,
                        compression="zstd",
                        use_dictionary=["group", "excluded"],
                    )
                writer.write_table(table)
                if builder is not None:
                    builder.add(part, group)
                if progress is not None:
                    progress("groups", i + 1, len(files))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InputError("the universe has no rows", source=str(universe))
        os.replace(tmp_scores, scores_path)
    packages = builder.write(out / "packages") if builder is not None else None
    return ScoringResult(
        scores_path=scores_path,
        rows=rows,
        eligible=int(all_eligible.size),
        excluded=excluded,
        cuts=cuts,
        group_sizes=sizes,
        spec=spec,
        packages=packages,
        mean_score=[s / n if n else None for s, n in zip(sums, sizes, strict=True)],
    )


def exclusions_table(
    seed_devices: pa.Array,
    seed_phones: pa.Array | None = None,
    exposed_devices: pa.Array | None = None,
) -> pa.Table:
    """The ``exclusions.parquet`` of a model directory: ``device_id, phone, reason``.

    Seed devices (reason ``seed``), seed phones (normalized, reason ``seed``:
    every device carrying one is excluded as ``seed_phone``) and exposed
    devices (reason ``exposed``).
    """
    ids: list[pa.Array] = [seed_devices.cast(pa.string())]
    phones: list[pa.Array] = [pa.nulls(len(seed_devices), pa.string())]
    reasons = ["seed"] * len(seed_devices)
    if seed_phones is not None:
        clean = pc.drop_null(_normalized_phones(seed_phones))
        ids.append(pa.nulls(len(clean), pa.string()))
        phones.append(clean.cast(pa.string()))
        reasons += ["seed"] * len(clean)
    if exposed_devices is not None:
        ids.append(exposed_devices.cast(pa.string()))
        phones.append(pa.nulls(len(exposed_devices), pa.string()))
        reasons += ["exposed"] * len(exposed_devices)
    return pa.table(
        {
            "device_id": pa.concat_arrays(ids),
            "phone": pa.concat_arrays(phones),
            "reason": pa.array(reasons, pa.string()),
        }
    )
