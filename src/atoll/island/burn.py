"""Burn after use (用后即焚): plaintext lives in memory or a job's private temp area, then goes.

Why: the seed's island decrypts, computes and "burns after use". In this
software that means three things, each enforced here rather than by
convention:

1. **One private temp area per job** (:class:`JobArea`), a ``0700``
   directory under the island's burn root, for anything a job spills to
   disk (the island prefers memory; a RAM-backed root such as ``/dev/shm``
   keeps even spills off disk). It is removed when the job ends -- normally,
   on an exception (``with`` block), and on ``SIGTERM``/``SIGINT``
   (:func:`install_signal_handlers` burns every open area before the process
   exits).
2. **Keys dropped**: objects registered with :meth:`JobArea.hold_key` (HPKE
   private keys, dataset-key readers) have their ``destroy()``/``drop_key()``
   called, which zeroes the bytes we hold.
3. **Leftovers swept at start**: ``SIGKILL`` (or power loss) cannot be
   caught, so :meth:`BurnArea.sweep` -- run by the island at every start --
   removes whatever a killed process left behind and reports it.

What this cannot promise (documented in ``docs/island.md``): CPython and
Arrow make copies we do not control (immutable ``bytes``, allocator pools),
so erasure of every in-memory copy is not guaranteed; on real hardware the
TEE's memory encryption and tear-down of the enclave/VM are what actually
protect plaintext after the job.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

from atoll.errors import ConfigError

__all__ = [
    "BurnArea",
    "BurnRecord",
    "Destroyable",
    "JobArea",
    "install_signal_handlers",
]


class Destroyable(Protocol):
    """Anything holding key material that can be destroyed."""

    def destroy(self) -> None:
        """Zero and release the key material."""


@dataclass
class BurnRecord:
    """What burning a job area removed."""

    path: str
    files: int = 0
    bytes: int = 0
    directories: int = 0
    keys_dropped: list[str] = field(default_factory=list)
    empty_after: bool = True


def _measure(path: Path) -> tuple[int, int, int]:
    files = size = dirs = 0
    for root, dirnames, filenames in os.walk(path):
        dirs += len(dirnames)
        for name in filenames:
            files += 1
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(root, name)).st_size
    return files, size, dirs


class JobArea:
    """A job's private temp directory and the keys it holds; :meth:`burn` removes both."""

    def __init__(self, owner: BurnArea, job_id: str, path: Path) -> None:
        self.owner = owner
        self.job_id = job_id
        self.path = path
        self._keys: list[tuple[str, Callable[[], None]]] = []
        self._record: BurnRecord | None = None
        self._lock = threading.Lock()

    def hold_key(self, name: str, key: Destroyable) -> None:
        """Register key material whose ``destroy()`` runs at burn time."""
        self._keys.append((name, key.destroy))

    def file(self, name: str) -> Path:
        """A path inside the area for a spill file (the name must be a plain file name)."""
        if "/" in name or name in {"", ".", ".."}:
            raise ConfigError(f"spill file name {name!r} must be a plain file name")
        return self.path / name

    @property
    def burned(self) -> bool:
        """True once :meth:`burn` ran."""
        return self._record is not None

    def burn(self) -> BurnRecord:
        """Drop every held key and remove the directory (idempotent)."""
        with self._lock:
            if self._record is not None:
                return self._record
            record = BurnRecord(path=str(self.path))
            for name, drop in self._keys:
                try:
                    drop()
                finally:
                    record.keys_dropped.append(name)
            self._keys.clear()
            if self.path.exists():
                record.files, record.bytes, record.directories = _measure(self.path)
                record.directories += 1
                shutil.rmtree(self.path, ignore_errors=True)
            record.empty_after = not self.path.exists()
            self._record = record
            self.owner._forget(self)
            return record

    def __enter__(self) -> JobArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.burn()


class BurnArea:
    """The island's burn root: creates per-job areas, sweeps leftovers, burns all on exit."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, stat.S_IRWXU)
        self._active: dict[str, JobArea] = {}
        self._lock = threading.Lock()

    def sweep(self) -> list[BurnRecord]:
        """Remove leftovers of a previous process (e.g. one killed by SIGKILL)."""
        found = []
        for path in sorted(self.root.iterdir()):
            with self._lock:
                if any(area.path == path for area in self._active.values()):
                    continue
            record = BurnRecord(path=str(path))
            if path.is_dir() and not path.is_symlink():
                record.files, record.bytes, record.directories = _measure(path)
                record.directories += 1
                shutil.rmtree(path, ignore_errors=True)
            else:
                record.files, record.bytes = 1, path.lstat().st_size
                path.unlink(missing_ok=True)
            record.empty_after = not path.exists()
            found.append(record)
        return found

    def open(self, job_id: str) -> JobArea:
        """A fresh private area for ``job_id`` (use as a context manager)."""
        safe = "".join(c for c in job_id if c.isalnum() or c in "-_")[:64] or "job"
        path = self.root / f"{safe}-{secrets.token_hex(4)}"
        path.mkdir(mode=stat.S_IRWXU)
        area = JobArea(self, job_id, path)
        with self._lock:
            self._active[str(path)] = area
        return area

    def _forget(self, area: JobArea) -> None:
        with self._lock:
            self._active.pop(str(area.path), None)

    @property
    def active(self) -> list[JobArea]:
        """Areas not burned yet."""
        with self._lock:
            return list(self._active.values())

    def burn_all(self) -> list[BurnRecord]:
        """Burn every open area (shutdown, signals)."""
        return [area.burn() for area in self.active]

    def is_empty(self) -> bool:
        """True when the burn root holds nothing at all."""
        return not any(self.root.iterdir())


def install_signal_handlers(area: BurnArea, *, signals: tuple[int, ...] | None = None) -> None:
    """On SIGTERM/SIGINT: burn every open job area, then exit with ``128 + signal``.

    Call from the main thread of the island process. The previous handler
    is not chained: the island's shutdown *is* this burn.
    """
    chosen = (signal.SIGTERM, signal.SIGINT) if signals is None else signals

    def handler(signum: int, frame: FrameType | None) -> None:
        area.burn_all()
        raise SystemExit(128 + signum)

    for sig in chosen:
        signal.signal(sig, handler)
