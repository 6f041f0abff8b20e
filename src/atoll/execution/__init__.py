"""Where computations run: one :class:`Executor` interface, local and Ray engines.

Why: per-bucket computations are maps followed by additive merges
(ARCHITECTURE idea 2); this package lets the same code run in the calling
thread, on a local process pool, or on a Ray cluster, chosen by one CLI flag
(``--executor inline|local|ray``) through :func:`make_executor`.

::

    from atoll.execution import make_executor

    with make_executor("local", workers=4) as executor:
        partials = executor.map(count_bucket, bucket_paths)
    total = merge(partials)

See ``docs/execution.md`` for the lifetime, error and chunking contracts.
"""

from __future__ import annotations

import inspect
from typing import Any

from atoll.errors import ConfigError
from atoll.execution.base import Describe, Executor, Progress
from atoll.execution.local import LocalExecutor, Mode, default_workers
from atoll.execution.ray import RayExecutor

__all__ = [
    "EXECUTOR_SPECS",
    "Describe",
    "Executor",
    "LocalExecutor",
    "Mode",
    "Progress",
    "RayExecutor",
    "default_workers",
    "make_executor",
]

#: The engine names :func:`make_executor` accepts ("local" and "process" are synonyms).
EXECUTOR_SPECS = ("inline", "thread", "local", "process", "ray")


def make_executor(spec: str = "local", **options: Any) -> Executor:
    """Build an executor from its CLI name and options (not yet entered).

    * ``"inline"`` -- :class:`LocalExecutor` in the calling thread;
    * ``"thread"`` -- :class:`LocalExecutor` with a thread pool (options:
      ``workers``, ``chunksize``, ``max_in_flight``, ``progress``);
    * ``"local"`` / ``"process"`` -- :class:`LocalExecutor` with a process
      pool (options: ``workers``, ``chunksize``, ``max_in_flight``, ``progress``);
    * ``"ray"`` -- :class:`RayExecutor` (options: ``address``, ``num_cpus``,
      ``runtime_env``, ``chunksize``, ``max_in_flight``, ``progress``).

    An unknown name or an option the engine does not take is a
    :class:`~atoll.errors.ConfigError`.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"executor must be one of {', '.join(EXECUTOR_SPECS)}, got {spec!r}")
    key = spec.strip().lower()
    cls: type[Executor]
    fixed: dict[str, Any]
    if key == "inline":
        cls, fixed = LocalExecutor, {"mode": "inline"}
    elif key == "thread":
        cls, fixed = LocalExecutor, {"mode": "thread"}
    elif key in ("local", "process"):
        cls, fixed = LocalExecutor, {"mode": "process"}
    elif key == "ray":
        cls, fixed = RayExecutor, {}
    else:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTOR_SPECS)}, got {spec!r}")
    clash = sorted(set(fixed) & set(options))
    if clash:
        raise ConfigError(f"option(s) {', '.join(clash)} are set by the executor name {spec!r}")
    try:
        inspect.signature(cls).bind(**fixed, **options)
    except TypeError as exc:
        raise ConfigError(f"executor {spec!r} does not take option(s) given: {exc}") from exc
    return cls(**fixed, **options)
