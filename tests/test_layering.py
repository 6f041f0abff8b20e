"""Keep the layering rules of ARCHITECTURE.md: a layer imports only from below.

Why a test: layering erodes one convenient import at a time; a failing test
names the offending module and import so the fix is obvious.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "atoll"

# Rank of each top-level subpackage; a module may import atoll packages of a
# strictly lower rank, or its own package. Edges (rank 9) may import anything.
RANK = {
    "errors": 0,
    "crypto": 1,
    "ids": 2,
    "protocols": 3,
    "data": 3,
    "privacy": 4,
    "analytics": 5,
    "models": 5,
    "matching": 5,
    "island": 6,
    "control": 7,
    "execution": 3,
    "transport": 9,
    "service": 9,
    "cli": 9,
    "ui": 9,
    "synth": 9,
    "demo": 9,
    "_entry": 9,
    "__init__": 0,
    "__main__": 9,
}

# Third-party modules that only one place may import (a path, or a folder ending in "/").
EXCLUSIVE = {
    "duckdb": {"data/store.py"},
    "ray": {"execution/ray.py"},
    "hashlib": {"crypto/"},
    "hmac": {"crypto/"},
    "cryptography": {"crypto/"},
    "nacl": {"crypto/"},
    "rbcl": {"crypto/group.py"},
    "gmpy2": {"crypto/"},
    "fastapi": {"service/"},
    "uvicorn": {"service/", "cli/"},
    "sklearn": {"models/"},
    "lightgbm": {"models/"},
    "opendp": {"privacy/"},
}

# Modules a layer must never import (I/O and transports in protocol cores).
FORBIDDEN = {
    "protocols": {"socket", "httpx", "requests", "threading", "random", "time", "duckdb"},
    "ids": {"socket", "httpx", "requests"},
}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_respects_layers(path: Path) -> None:
    own = _package_of(path)
    assert own in RANK, f"new top-level module {own!r}: give it a rank in tests/test_layering.py"
    rel = str(path.relative_to(SRC))
    for lineno, name in _imports(path):
        top = name.split(".")[0]
        if top == "atoll":
            parts = name.split(".")
            if len(parts) == 1:
                continue
            target = parts[1]
            assert target in RANK, f"{rel}:{lineno} imports unknown atoll.{target}"
            if target == own or RANK[own] == 9:
                continue
            assert RANK[target] < RANK[own], (
                f"{rel}:{lineno} imports atoll.{target} (rank {RANK[target]}) "
                f"from {own} (rank {RANK[own]}): a layer imports only from below"
            )
        if top in EXCLUSIVE:
            allowed = EXCLUSIVE[top]
            assert any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allowed), (
                f"{rel}:{lineno} imports {top}; only {sorted(allowed)} may"
            )
        assert top not in FORBIDDEN.get(own, set()), f"{rel}:{lineno}: {own} must not import {top}"


def test_every_module_opens_with_a_docstring() -> None:
    missing = [
        str(p.relative_to(SRC))
        for p in _modules()
        if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None
    ]
    assert not missing, f"modules without a 'why' docstring: {missing}"
