"""The Ray engine: the same map over buckets, on a Ray cluster.

Why: when one machine is not enough (``atoll ... --executor ray --address
...``), the same task functions and bucket paths run as Ray tasks, with the
same ordering and error contract as the local engine (see
:mod:`atoll.execution.base`). This is the only module in Atoll that imports
``ray``, and it does so lazily, on entering the executor, so Atoll installs
and works without the ``atoll[ray]`` extra.

Lifetime: if Ray is not initialised yet, entering the executor starts it --
a private local instance when ``address`` is None (``ray.init(address=
"local")``, which never attaches to some other cluster found through
``RAY_ADDRESS`` or ``/tmp/ray``), or a connection to the cluster at
``address`` -- and exiting shuts it down again. If Ray was already
initialised by the caller, the executor uses that session and leaves it
running. Ray's usage-statistics reporting is switched off
(``RAY_USAGE_STATS_ENABLED=0``) for any instance the executor starts: a clean
room does not phone home.

Ray retries a task whose *worker process died* (its default, up to three
times); task functions must therefore be idempotent, which per-bucket
computations naturally are. Exceptions raised *by* the task are not retried.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from types import ModuleType
from typing import Any

from atoll.errors import ConfigError, ExecutionError
from atoll.execution.base import ChunkResult, PooledExecutor, Progress, run_chunk

__all__ = ["RayExecutor"]

_USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the Ray executor needs the optional dependency: pip install 'atoll[ray]'"
        ) from exc
    return ray


class RayExecutor(PooledExecutor[Any]):
    """Run tasks as Ray tasks, on a local Ray instance or a cluster.

    ``address`` is a Ray cluster address (``"ray://host:10001"``,
    ``"host:6379"``, ``"auto"``); None starts a private local instance with
    ``num_cpus`` CPUs (default: all). ``num_cpus`` cannot be combined with an
    address: a cluster's size is the cluster's business. ``runtime_env`` is
    passed to ``ray.init`` (e.g. ``{"pip": ["atoll"]}`` or ``py_modules`` so
    that cluster workers can import Atoll and the task's module).
    ``chunksize``, ``max_in_flight`` and ``progress`` behave as for
    :class:`~atoll.execution.local.LocalExecutor`, sized by the cluster's CPUs.
    """

    backend_name = "Ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        runtime_env: Mapping[str, Any] | None = None,
        chunksize: int | None = None,
        max_in_flight: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(chunksize=chunksize, max_in_flight=max_in_flight, progress=progress)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigError(f"Ray address must be a non-empty string, got {address!r}")
        if num_cpus is not None and (
            isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1
        ):
            raise ConfigError(f"num_cpus must be a positive integer, got {num_cpus!r}")
        if address is not None and num_cpus is not None:
            raise ConfigError(
                "num_cpus applies only to a local Ray instance (address=None); "
                "a cluster's size is set when the cluster is started"
            )
        self.address = address.strip() if address is not None else None
        self.num_cpus = num_cpus
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self._ray: ModuleType | None = None
        self._remote: Any = None
        self._owns_ray = False
        self._saved_usage_env: str | None = None
        self._cpus = 1

    def __repr__(self) -> str:
        where = f"address={self.address!r}" if self.address else f"num_cpus={self.num_cpus!r}"
        return f"RayExecutor({where})"

    # -- lifetime -----------------------------------------------------------

    def _open(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            self._saved_usage_env = os.environ.get(_USAGE_STATS_ENV)
            os.environ[_USAGE_STATS_ENV] = "0"
            try:
                ray.init(
                    address=self.address if self.address is not None else "local",
                    num_cpus=self.num_cpus,
                    runtime_env=self.runtime_env,
                    include_dashboard=False,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                )
            except Exception as exc:
                self._restore_usage_env()
                target = (
                    f"connect to the Ray cluster at {self.address!r}"
                    if self.address is not None
                    else "start a local Ray instance"
                )
                raise ExecutionError(f"could not {target}: {type(exc).__name__}: {exc}") from exc
            self._owns_ray = True
        self._ray = ray
        try:
            self._remote = ray.remote(run_chunk)
            cpus = ray.cluster_resources().get("CPU", 1)
            self._cpus = max(1, int(cpus))
        except Exception:
            self._close()
            raise

    def _close(self) -> None:
        ray, self._ray, self._remote = self._ray, None, None
        if self._owns_ray:
            self._owns_ray = False
            try:
                if ray is not None:
                    ray.shutdown()
            finally:
                self._restore_usage_env()

    def _restore_usage_env(self) -> None:
        previous, self._saved_usage_env = self._saved_usage_env, None
        if previous is None:
            os.environ.pop(_USAGE_STATS_ENV, None)
        else:
            os.environ[_USAGE_STATS_ENV] = previous

    def _running_ray(self) -> ModuleType:
        ray = self._ray
        if ray is None:
            raise ExecutionError(f"{self!r} is not running")
        return ray

    # -- primitives ---------------------------------------------------------

    def _prepare(self, fn: Any) -> Any:
        # Checked like the process pool (by-reference picklability), then put
        # in the object store once per map instead of once per chunk.
        return self._running_ray().put(super()._prepare(fn))

    def _parallelism(self) -> int:
        return self._cpus

    def _submit(self, task: Any, start: int, items: list[Any]) -> Any:
        self._running_ray()
        return self._remote.remote(task, start, items)

    def _wait(self, handles: Collection[Any]) -> list[Any]:
        ready, _ = self._running_ray().wait(list(handles), num_returns=1)
        return list(ready)

    def _fetch(self, handle: Any) -> ChunkResult:
        result = self._running_ray().get(handle)
        if not isinstance(result, ChunkResult):
            raise ExecutionError(f"Ray returned {type(result).__name__}, expected a ChunkResult")
        return result

    def _cancel(self, handles: Collection[Any]) -> None:
        """Drop chunks that are no longer needed, without ``ray.cancel``.

        Cancelling a task while it completes races inside Ray's driver (see
        ray-project/ray#54116 and #54798: ``RAY_CHECK`` failures in the task
        manager, which end the driver process with no Python traceback). At
        most ``max_in_flight`` chunks are in flight, so they are left to
        finish, as the process pool does with running tasks; their results
        are released with the references.
        """
        del handles
