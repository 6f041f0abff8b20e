"""The ``atoll`` console script's entry point, kept import-light.

Why: process-pool workers are started with *spawn*, which re-imports the main
script in every worker. The generated ``atoll`` script imports its entry
point at top level, so pointing it at :mod:`atoll.cli` made every worker
import the whole command line (and through it every library) before doing
any work — seconds per worker on a loaded machine. This module imports the
CLI only when the command actually runs.
"""

from __future__ import annotations


def main() -> None:
    """Run the ``atoll`` command line."""
    from atoll.cli import main as cli_main

    cli_main()
