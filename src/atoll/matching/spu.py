"""The ``spu`` engine: SecretFlow's PSI (ECDH, KKRT, RR22) in a separate interpreter.

Why: SecretFlow's native PSI (the ``spu`` package on PyPI) is much faster
than any pure-Python-driven protocol for plain matching (its RR22 does
1M x 1M in seconds), and users should see and choose what each engine costs.
But ``spu`` 0.9.5 needs numpy<2 and jax, which conflict with Atoll's numpy 2
stack, so it cannot be imported here. Instead the engine runs
:mod:`atoll.matching.spu_worker` under the interpreter named by the
``ATOLL_SPU_PYTHON`` environment variable (a virtualenv with only ``spu``)::

    python3 -m venv /opt/spu-venv && /opt/spu-venv/bin/pip install spu
    export ATOLL_SPU_PYTHON=/opt/spu-venv/bin/python

Per stage, both parties' bucket inputs are written as CSV (one column
``id``: the hex of each normalized ID's UTF-8 bytes, so no CSV quoting issue
can arise) into a private temporary directory (mode 0700, removed
afterwards); two worker processes -- rank 0 the receiver, rank 1 the sender
-- connect over a loopback brpc link and run ``psi_execute`` per bucket; the
output CSVs are mapped back to bucket indices and handed to the sessions as
ordinary :class:`~atoll.protocols.psi.PsiResult` values, so everything above
the engine is unchanged.

Scope: plain matching with reveal ``receiver`` or ``both`` (``broadcast_result``);
labeled PSI, cardinality-only and intersection-sum need the built-in engine
(spu's PSI reveals the intersection itself). Both parties run on this host,
so this is the engine of ``psi local``; the bytes it moves are not counted
(spu's link does not expose them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from atoll.errors import ConfigError, ExecutionError
from atoll.execution import Executor
from atoll.matching.engine import BucketOutcome, BucketProgress, PsiEngine
from atoll.matching.session import PartySession, Traffic
from atoll.protocols.psi import PsiResult

__all__ = ["SPU_ENV", "SPU_PROTOCOLS", "SpuEngine", "spu_unavailable_reason"]

#: Environment variable naming the interpreter that has ``spu`` installed.
SPU_ENV = "ATOLL_SPU_PYTHON"
#: Short names of the spu protocols this engine drives.
SPU_PROTOCOLS = {"ecdh": "PROTOCOL_ECDH", "kkrt": "PROTOCOL_KKRT", "rr22": "PROTOCOL_RR22"}
_WORKER = Path(__file__).with_name("spu_worker.py")


@lru_cache(maxsize=4)
def _probe(python: str) -> str | None:
    if not Path(python).is_file():
        return f"{SPU_ENV}={python} is not a file"
    try:
        done = subprocess.run(  # noqa: S603 - the operator's configured interpreter
            [python, "-c", "import spu.psi, spu.libspu"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SPU_ENV}={python} cannot run: {exc}"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"{SPU_ENV}={python} cannot import spu: {tail[0]}"
    return None


def spu_unavailable_reason() -> str | None:
    """``None`` when the spu engine can run here, else why not (for skips and errors)."""
    python = os.environ.get(SPU_ENV, "").strip()
    if not python:
        return f"{SPU_ENV} is not set (point it at a Python with `pip install spu`)"
    return _probe(python)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_ids(path: Path, items: list[bytes]) -> None:
    with path.open("w", encoding="ascii") as handle:
        handle.write("id\n")
        handle.writelines(item.hex() + "\n" for item in items)


def _read_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="ascii").splitlines()
    return [line.strip().strip('"') for line in lines[1:] if line.strip()]


def _indices(found: list[str], items: list[bytes], what: str) -> Any:
    position = {item.hex(): i for i, item in enumerate(items)}
    try:
        idx = sorted({position[h] for h in found})
    except KeyError as exc:
        raise ExecutionError(f"spu returned an identifier that {what} never had") from exc
    return np.asarray(idx, dtype=np.int64)


class SpuEngine(PsiEngine):
    """Run each stage's buckets through SecretFlow PSI (``protocol``: ecdh, kkrt or rr22)."""

    def __init__(self, protocol: str = "rr22", *, timeout: float = 3600.0) -> None:
        key = protocol.strip().lower()
        if key not in SPU_PROTOCOLS:
            raise ConfigError(
                f"unknown spu protocol {protocol!r} (choose {', '.join(SPU_PROTOCOLS)})"
            )
        self.protocol = key
        self.name = "spu" if key == "rr22" else f"spu-{key}"
        self.timeout = timeout

    def check(self, params: dict[str, Any]) -> None:
        """Refuse what spu's PSI cannot do (labels, cardinality-only, intersection-sum)."""
        if params.get("protocol") != "ecdh-psi":
            raise ConfigError(
                f"the spu engine runs plain matching only, not {params.get('protocol')} "
                "(use --engine builtin)"
            )
        if params.get("cardinality_only"):
            raise ConfigError("the spu engine reveals the intersection: no --cardinality-only")
        reason = spu_unavailable_reason()
        if reason is not None:
            raise ConfigError(f"the spu engine is not available: {reason}")

    def run_stage(
        self,
        a: PartySession,
        b: PartySession,
        executor: Executor,
        *,
        progress: BucketProgress | None = None,
    ) -> Iterator[BucketOutcome]:
        """Write the stage's buckets, run the two spu workers, map the outputs back."""
        receiver, sender = (a, b) if a.role == "receiver" else (b, a)
        reveal_both = receiver.params().get("reveal") == "both"
        get_r = getattr(receiver, "bucket_items", None)
        get_s = getattr(sender, "bucket_items", None)
        if not callable(get_r) or not callable(get_s):
            raise ConfigError("the spu engine needs sessions that expose bucket_items()")
        python = os.environ.get(SPU_ENV, "").strip()
        reason = spu_unavailable_reason()
        if reason is not None:
            raise ConfigError(f"the spu engine is not available: {reason}")
        with tempfile.TemporaryDirectory(prefix="atoll-spu-") as tmp:
            root = Path(tmp)
            os.chmod(root, 0o700)
            runs: list[tuple[int, list[bytes], list[bytes]]] = []
            work: list[list[dict[str, str]]] = [[], []]
            empties: list[tuple[int, list[bytes], list[bytes]]] = []
            for bucket in a.pending():
                xs, ys = get_r(bucket), get_s(bucket)
                if not xs or not ys:
                    empties.append((bucket, xs, ys))
                    continue
                runs.append((bucket, xs, ys))
                for rank, items in ((0, xs), (1, ys)):
                    inp = root / f"b{bucket}-r{rank}.csv"
                    _write_ids(inp, items)
                    work[rank].append(
                        {"input": str(inp), "output": str(root / f"b{bucket}-r{rank}.out.csv")}
                    )
            if runs:
                self._run_workers(python, root, work, reveal_both)
            done = 0
            for bucket, xs, ys in empties:
                done += 1
                if progress is not None:
                    progress(done)
                yield self._outcome(a, bucket, xs, ys, [], [], reveal_both)
            for bucket, xs, ys in runs:
                found_r = _read_ids(root / f"b{bucket}-r0.out.csv")
                found_s = _read_ids(root / f"b{bucket}-r1.out.csv") if reveal_both else []
                done += 1
                if progress is not None:
                    progress(done)
                yield self._outcome(a, bucket, xs, ys, found_r, found_s, reveal_both)

    def _outcome(
        self,
        a: PartySession,
        bucket: int,
        xs: list[bytes],
        ys: list[bytes],
        found_r: list[str],
        found_s: list[str],
        reveal_both: bool,
    ) -> BucketOutcome:
        r_idx = _indices(found_r, xs, "the receiver")
        r_res = PsiResult(r_idx, len(r_idx), len(ys))
        if reveal_both:
            s_idx = _indices(found_s, ys, "the sender")
            if len(s_idx) != len(r_idx):
                raise ExecutionError(
                    f"spu bucket {bucket}: receiver found {len(r_idx)}, sender {len(s_idx)}"
                )
            s_res = PsiResult(s_idx, len(s_idx), len(xs))
        else:
            s_res = PsiResult(None, None, len(xs))
        none = Traffic()
        if a.role == "receiver":
            return BucketOutcome(bucket, r_res, s_res, none, none)
        return BucketOutcome(bucket, s_res, r_res, none, none)

    def _run_workers(
        self, python: str, root: Path, work: list[list[dict[str, str]]], reveal_both: bool
    ) -> None:
        ports = [_free_port(), _free_port()]
        procs: list[subprocess.Popen[bytes]] = []
        env = {**os.environ, "TMPDIR": str(root)}
        for rank in (0, 1):
            spec = {
                "rank": rank,
                "addresses": [f"127.0.0.1:{p}" for p in ports],
                "protocol": SPU_PROTOCOLS[self.protocol],
                "broadcast": reveal_both,
                "buckets": work[rank],
                "report": str(root / f"report-{rank}.json"),
            }
            spec_path = root / f"spec-{rank}.json"
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            log = (root / f"worker-{rank}.log").open("wb")
            procs.append(
                subprocess.Popen(  # noqa: S603 - our worker script and spec paths
                    [python, str(_WORKER), str(spec_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=root,
                    env=env,
                )
            )
            log.close()
        failed: list[str] = []
        for rank, proc in enumerate(procs):
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise ExecutionError(
                    f"spu worker {rank} did not finish in {self.timeout} s"
                ) from None
            if code != 0:
                text = (root / f"worker-{rank}.log").read_text(errors="replace")
                tail = [ln for ln in text.splitlines() if ln.strip()][-3:]
                failed.append(f"rank {rank} exited with {code}: {' | '.join(tail)}")
        for rank in (0, 1):
            _remove_traces(root / f"worker-{rank}.log")
        if failed:
            raise ExecutionError("spu PSI failed: " + "; ".join(failed))


_TRACE = re.compile(r"Trace has been written to (/tmp/psi_[A-Za-z0-9_-]+\.trace)")


def _remove_traces(log: Path) -> None:
    """spu writes a perfetto trace per run to /tmp whatever TMPDIR says; remove ours."""
    if not log.exists():
        return
    for match in _TRACE.finditer(log.read_text(errors="replace")):
        Path(match.group(1)).unlink(missing_ok=True)
