"""Burn after use: areas vanish at job end, on failure, on SIGTERM; SIGKILL leftovers are swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atoll.crypto.hpke import HpkePrivateKey
from atoll.island.burn import BurnArea

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from atoll.island.burn import BurnArea, install_signal_handlers
    area = BurnArea(sys.argv[1])
    install_signal_handlers(area)
    job = area.open("job-1")
    job.file("plain.arrow").write_bytes(b"plaintext rows" * 1000)
    print(job.path, flush=True)
    time.sleep(120)
    """
)


def test_area_is_removed_at_job_end_and_on_failure(tmp_path: Path) -> None:
    area = BurnArea(tmp_path / "burn")
    key = HpkePrivateKey.generate()
    with area.open("job") as job:
        job.file("spill.bin").write_bytes(b"x" * 100)
        job.hold_key("hpke", key)
        assert oct(job.path.stat().st_mode & 0o777) == "0o700"
    record = job.burn()  # idempotent: the same record
    assert record.files == 1
    assert record.bytes == 100
    assert record.keys_dropped == ["hpke"]
    assert key.destroyed
    assert area.is_empty()

    def failing_job() -> None:
        with area.open("job2") as job2:
            job2.file("spill.bin").write_bytes(b"y")
            raise RuntimeError("computation failed")

    with pytest.raises(RuntimeError):
        failing_job()
    assert area.is_empty()
    assert area.active == []


def _spawn(root: Path) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, Path(line)


def test_sigterm_burns_the_open_area(tmp_path: Path) -> None:
    root = tmp_path / "burn"
    proc, job_path = _spawn(root)
    try:
        assert (job_path / "plain.arrow").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert not job_path.exists()
    assert not any(root.iterdir())


def test_sigkill_leftovers_are_swept_at_next_start(tmp_path: Path) -> None:
    root = tmp_path / "burn"
    proc, job_path = _spawn(root)
    proc.kill()  # SIGKILL cannot be caught: the area stays behind ...
    proc.wait(timeout=30)
    assert (job_path / "plain.arrow").is_file()
    swept = BurnArea(root).sweep()  # ... until the next island start sweeps it.
    assert [r.path for r in swept] == [str(job_path)]
    assert swept[0].files == 1
    assert not any(root.iterdir())
