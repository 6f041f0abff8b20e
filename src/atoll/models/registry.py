"""Model directories: the model, its training-data manifest, its metrics, its lineage.

Why: a lookalike model is retrained every delivery round, and a marketer
must be able to say which model built which package, from which data, and
whether the new one is better. Each model lives in its own directory (a
*version*); retraining writes a new directory whose manifest names its
parent, so the versions form a chain that :func:`lineage` walks back.

Layout of a model directory::

    model.json          format_version 1: the LookalikeModel state (JSON +
                        LightGBM text models — no pickles: loading runs no code)
    manifest.json       format_version 1: version, parent, created_at, the
                        training data (path, SHA-256, rows per input), seeds,
                        outcomes rows, model info
    metrics.json        hidden-seed evaluation (and, after feedback, the
                        comparison with the parent)
    exclusions.parquet  seed device IDs (and seed phones): never packaged
    outcomes.parquet    labelled delivery outcomes accumulated so far (optional)
    report.html         the HTML report (written by the CLI)

Every JSON file starts with its ``format_version`` and is checked on load;
``model.json``'s SHA-256 is recorded in the manifest and verified, so a
swapped or truncated model is an :class:`~atoll.errors.IntegrityError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from atoll.crypto import sha256_file
from atoll.errors import ConfigError, DataError, InputError, IntegrityError
from atoll.models.lookalike import LookalikeModel

__all__ = [
    "FORMAT_VERSION",
    "ModelDir",
    "data_entry",
    "lineage",
    "load_model_dir",
    "save_model_dir",
]

#: Version of ``model.json`` / ``manifest.json`` / ``metrics.json``.
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
EXCLUSIONS_FILE = "exclusions.parquet"
OUTCOMES_FILE = "outcomes.parquet"


def data_entry(path: str | os.PathLike[str], rows: int | None = None) -> dict[str, Any]:
    """A training-data manifest entry: absolute path, SHA-256 (files) and row count."""
    p = Path(path)
    entry: dict[str, Any] = {"path": str(p.resolve()), "rows": rows}
    if p.is_file():
        entry["sha256"] = sha256_file(p)
        entry["bytes"] = p.stat().st_size
    elif p.is_dir():
        manifest = p / "manifest.json"
        entry["sha256_of_manifest"] = sha256_file(manifest) if manifest.exists() else None
    return entry


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(
            json.dumps({"format_version": FORMAT_VERSION, **obj}, indent=2, sort_keys=False),
            encoding="utf-8",
        )
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write ({exc})") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("file not found (is this a model directory?)", source=str(path)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable JSON ({exc})", source=str(path)) from exc
    if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: format_version must be {FORMAT_VERSION}, got "
            f"{obj.get('format_version') if isinstance(obj, dict) else type(obj).__name__!r}"
        )
    return obj


@dataclass
class ModelDir:
    """A loaded model directory."""

    path: Path
    model: LookalikeModel
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    exclusions: pa.Table
    outcomes: pa.Table | None

    @property
    def version(self) -> int:
        """The version number (1 for a first training)."""
        return int(self.manifest["version"])


def save_model_dir(
    out: str | os.PathLike[str],
    model: LookalikeModel,
    *,
    manifest: Mapping[str, Any],
    metrics: Mapping[str, Any],
    exclusions: pa.Table,
    outcomes: pa.Table | None = None,
    parent: ModelDir | None = None,
    now: datetime | None = None,
) -> Path:
    """Write a model directory (created if needed; an existing model there is an error)."""
    root = Path(out)
    if (root / MODEL_FILE).exists():
        raise ConfigError(f"{root} already holds a model; choose a new --out directory")
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / MODEL_FILE, {"model": model.to_state()})
    pq.write_table(exclusions, root / EXCLUSIONS_FILE)
    if outcomes is not None:
        pq.write_table(outcomes, root / OUTCOMES_FILE)
    full = {
        "version": 1 if parent is None else parent.version + 1,
        "parent": None
        if parent is None
        else {
            "path": str(parent.path.resolve()),
            "version": parent.version,
            "model_sha256": parent.manifest["model_sha256"],
        },
        "created_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "model_sha256": sha256_file(root / MODEL_FILE),
        "model": model.info(),
        **manifest,
    }
    _write_json(root / MANIFEST_FILE, full)
    _write_json(root / METRICS_FILE, dict(metrics))
    return root


def load_model_dir(path: str | os.PathLike[str]) -> ModelDir:
    """Load and verify a model directory."""
    root = Path(path)
    if not root.is_dir():
        raise InputError("not a model directory", source=str(root))
    manifest = _read_json(root / MANIFEST_FILE)
    expected = manifest.get("model_sha256")
    actual = sha256_file(root / MODEL_FILE) if (root / MODEL_FILE).exists() else None
    if actual is None:
        raise InputError("model.json is missing", source=str(root))
    if not isinstance(expected, str) or expected != actual:
        # Integrity, not a secret: digests are public, so a plain comparison is fine here.
        raise IntegrityError(f"{root}: model.json does not match the SHA-256 in manifest.json")
    model = LookalikeModel.from_state(_read_json(root / MODEL_FILE)["model"])
    metrics = _read_json(root / METRICS_FILE)
    try:
        exclusions = pq.read_table(root / EXCLUSIONS_FILE)
        outcomes = pq.read_table(root / OUTCOMES_FILE) if (root / OUTCOMES_FILE).exists() else None
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"unreadable model data ({exc})", source=str(root)) from exc
    return ModelDir(root, model, manifest, metrics, exclusions, outcomes)


def lineage(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The chain of versions from ``path`` back to the first training (newest first)."""
    chain: list[dict[str, Any]] = []
    current: Path | None = Path(path)
    seen: set[str] = set()
    while current is not None:
        key = str(current.resolve())
        if key in seen:
            raise IntegrityError(f"{current}: the model lineage loops")
        seen.add(key)
        manifest = _read_json(current / MANIFEST_FILE)
        chain.append(
            {
                "path": key,
                "version": manifest.get("version"),
                "created_at": manifest.get("created_at"),
                "model_sha256": manifest.get("model_sha256"),
            }
        )
        parent = manifest.get("parent")
        current = Path(parent["path"]) if isinstance(parent, dict) and parent.get("path") else None
        if current is not None and not (current / MANIFEST_FILE).exists():
            chain.append({"path": str(current), "missing": True})
            break
    return chain
