"""The joining party's resume journal: which buckets finished, and their results.

Why: a run over the network can break (a dropped connection, a killed
process, a laptop lid). Recomputing every bucket would waste hours at
10M x 10M, so the client records each bucket the moment both sides finished
it; a re-run with the same state directory skips those buckets (when the
server still has them too -- see :func:`atoll.transport.http.join_session`).

Layout of a state directory::

    journal.json        {"format": 1, "session": id, "peer": url, "params": ..., "input": ...}
    buckets/<s>-<b>.res JOURNAL_VERSION (u8) || stage (u16) || bucket (u32) || result bytes

Every file is written to a temporary name and renamed, so a crash leaves
either the old file or the new one, never half of one. The journal is bound
to the peer URL, the parameters and a fingerprint of the input: a state
directory of a different job is refused (:class:`~atoll.errors.ConfigError`),
never silently reused. The journal is deleted once the output is written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
from pathlib import Path
from typing import Any

from atoll.errors import ConfigError, DataError

__all__ = ["JOURNAL_VERSION", "Journal", "check_session_id", "new_session_id"]

#: First byte of every journaled result file.
JOURNAL_VERSION = 1
_FORMAT = 1
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_HEADER = struct.Struct(">BHI")


def new_session_id() -> str:
    """A fresh random session id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def check_session_id(sid: str) -> str:
    """Validate a session id's shape (16-64 URL-safe characters)."""
    if not _SESSION_ID.match(sid):
        raise ConfigError(f"malformed session id {sid!r}")
    return sid


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Journal:
    """A state directory recording finished buckets of one join (see the module doc)."""

    def __init__(self, root: Path, header: dict[str, Any]) -> None:
        self.root = root
        self.header = header

    @property
    def session_id(self) -> str:
        """The session id both sides use for this job."""
        return str(self.header["session"])

    @classmethod
    def open(
        cls, root: Path, *, peer: str, params: str, input_id: str, fresh: bool = False
    ) -> Journal:
        """Open ``root`` for this job, creating it if needed.

        Refuses a directory that holds the journal of another job (different
        peer, parameters or input) unless ``fresh``, which discards it.
        """
        meta = root / "journal.json"
        want = {"format": _FORMAT, "peer": peer, "params": params, "input": input_id}
        if fresh and root.exists():
            shutil.rmtree(root)
        if meta.exists():
            try:
                header = json.loads(meta.read_text(encoding="utf-8"))
                check_session_id(str(header["session"]))
            except (OSError, ValueError, KeyError, ConfigError) as exc:
                raise DataError(f"resume journal {meta} is unreadable: {exc}") from exc
            for key, value in want.items():
                if header.get(key) != value:
                    raise ConfigError(
                        f"{root} holds the resume journal of a different job ({key} differs); "
                        "use another state directory, or --fresh to discard it"
                    )
            return cls(root, header)
        try:
            (root / "buckets").mkdir(parents=True, exist_ok=True)
            header = {**want, "session": new_session_id()}
            _atomic_write(meta, json.dumps(header, indent=1).encode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot create the resume journal in {root}: {exc}") from exc
        return cls(root, header)

    def _path(self, stage: int, bucket: int) -> Path:
        return self.root / "buckets" / f"{stage}-{bucket}.res"

    def finished(self, stage: int) -> list[int]:
        """Buckets of ``stage`` recorded as finished."""
        out = []
        folder = self.root / "buckets"
        if not folder.is_dir():
            return []
        for p in folder.iterdir():
            s, _, b = p.stem.partition("-")
            if p.suffix == ".res" and s.isdigit() and b.isdigit() and int(s) == stage:
                out.append(int(b))
        return sorted(out)

    def record(self, stage: int, bucket: int, data: bytes) -> None:
        """Record ``bucket`` of ``stage`` as finished with its encoded result (atomic)."""
        try:
            _atomic_write(
                self._path(stage, bucket), _HEADER.pack(JOURNAL_VERSION, stage, bucket) + data
            )
        except OSError as exc:
            raise ConfigError(f"cannot write the resume journal in {self.root}: {exc}") from exc

    def load(self, stage: int, bucket: int) -> bytes:
        """The encoded result recorded for ``bucket`` of ``stage``."""
        path = self._path(stage, bucket)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"resume journal entry {path} is unreadable: {exc}") from exc
        if len(data) < _HEADER.size:
            raise DataError(f"resume journal entry {path} is truncated")
        version, stored_stage, stored = _HEADER.unpack_from(data)
        if (version, stored_stage, stored) != (JOURNAL_VERSION, stage, bucket):
            raise DataError(
                f"resume journal entry {path} is for version {version}, stage {stored_stage}, "
                f"bucket {stored}; expected {JOURNAL_VERSION}, {stage}, {bucket}"
            )
        return data[_HEADER.size :]

    def discard(self) -> None:
        """Delete the state directory (after the output was written)."""
        shutil.rmtree(self.root, ignore_errors=True)
