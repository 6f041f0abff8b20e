"""Shared pieces of the CLI: consoles and the one way an AtollError is shown.

Why: every sub-command (``atoll psi``, ``atoll island``, ``atoll report``…)
prints errors the same way -- one escaped line on stderr, exit code 2 -- so
scripts can rely on it; sub-command modules import these instead of copying.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atoll.errors import AtollError

#: Progress, warnings and errors go to stderr; results to stdout.
console = Console(stderr=True)
out_console = Console()


def fail(exc: AtollError) -> typer.Exit:
    """Print ``exc`` as one escaped error line and return the exit (code 2) to raise."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def print_kv(title: str, rows: dict[str, Any]) -> None:
    """Print a two-column key/value table on stdout."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, str(value))
    out_console.print(table)
