"""Render a report page in headless Chromium and report what it drew (shared by report tests).

Why: a page that is valid HTML in Python's eyes can still draw nothing in a
browser (a broken SVG, a script error, a resource blocked by the CSP). Any
report test can call :func:`check_page` on the file it wrote::

    from tests.ui.chromium import check_page
    rendered = check_page(out / "attribution.html", tmp_path, min_charts=3)

It runs Debian's ``chromium`` (installed by ``.ci/run``) headless with
networking disabled, dumps the DOM after load, and fails on any console
message (a clean page logs nothing; CSP violations and uncaught errors are
console messages). Tests are skipped, with the reason, when Chromium is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ATOLL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=3000",
)
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?:?\d*\]\s*(.*)")


@dataclass(frozen=True)
class Rendered:
    """What the browser produced: the DOM after load and the console lines."""

    dom: str
    console: list[str]

    @property
    def charts(self) -> int:
        """Charts the page script counted (``data-charts-rendered``); -1 if it did not run."""
        found = re.search(r'data-charts-rendered="(\d+)"', self.dom)
        return int(found.group(1)) if found else -1

    def count(self, tag: str) -> int:
        """Occurrences of ``<tag`` in the DOM (e.g. ``rect``, ``path``)."""
        return len(re.findall(rf"<{tag}[\s>]", self.dom))


def chromium_available() -> bool:
    """Whether a Chromium binary is installed."""
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


def render(page: Path, profile: Path, timeout: float = 90.0) -> Rendered:
    """Load ``page`` in headless Chromium (fresh ``profile`` dir) and dump its DOM."""
    if not chromium_available():
        pytest.skip(f"chromium not installed ({CHROMIUM}); apt-get install chromium")
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    console = [m.group(1) for line in proc.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Rendered(proc.stdout, console)


def check_page(page: Path, tmp_path: Path, *, min_charts: int = 1) -> Rendered:
    """Render ``page``; assert it ran its script, drew ``min_charts`` charts, logged nothing."""
    rendered = render(page, tmp_path / f"chromium-profile-{page.stem}")
    assert not rendered.console, f"console messages while rendering {page}: {rendered.console}"
    assert rendered.charts >= min_charts, (
        f"{page}: {rendered.charts} charts rendered, expected at least {min_charts}"
    )
    assert rendered.count("svg") >= min_charts
    assert rendered.count("rect") + rendered.count("path") > 0, "charts have no marks"
    return rendered
