"""A simulated island served in the background of this process, always torn down.

Why: ``atoll island serve`` runs the island as its own long-lived process.
The demo, notebooks and integration scripts need the same service -- the
real FastAPI app, real mutual TLS on loopback, a real HTTP client -- for
the length of one ``with`` block, and they need the guarantee the CLI gets
from its signal handlers: whatever happens inside the block (an error, a
refused attestation, Ctrl-C), the server stops, every open burn area is
removed and every session key is dropped. :func:`local_island` gives that;
everything the parties do against it goes through
:mod:`atoll.service.island` (``upload_dataset``, ``release_keys``,
``run_job``) exactly as from another machine.

It also holds what a party needs to *pin* a simulated island without
trusting it: :func:`expected_measurement` recomputes the measurement from
the party's own copy of the code and configuration (what ``atoll island
measure`` prints), and :func:`simulated_policy_toml` writes the policy that
accepts it -- or, with ``allow_simulated=False``, the strict policy that
refuses the very same evidence.

Use::

    with local_island(workdir, tls=PartyFiles(certs, "island").server_tls()) as served:
        with served.client(PartyFiles(certs, "brand").client_tls()) as client:
            upload_dataset(client, keys, store, dataset_id="brand-members", ...)
    # here the server is stopped and the burn root is empty

The simulated backend protects nothing against whoever runs the process
(``docs/island.md``); everything it produces is stamped accordingly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.errors import ConfigError
from atoll.island.evidence.simulated import (
    SimulatedBackend,
    code_hash,
    config_hash,
    measurement_of,
)
from atoll.island.runner import Island
from atoll.service.island import IslandClient, create_app
from atoll.service.server import AppServer
from atoll.transport.tls import TlsConfig

__all__ = [
    "LocalIsland",
    "expected_measurement",
    "local_island",
    "simulated_island_config",
    "simulated_policy_toml",
]


def simulated_island_config(config_tag: str = "") -> dict[str, Any]:
    """The configuration a simulated island is measured with (as ``atoll island serve`` uses)."""
    return {"backend": "simulated", "config_tag": config_tag, "format": 1}


def expected_measurement(config_tag: str = "") -> str:
    """The measurement a party pins, recomputed from its own copy of the island code.

    Equals what ``atoll island measure --config-tag T`` prints; an island
    serving other code or another configuration reports a different value
    and gets no key from a policy pinning this one.
    """
    config = simulated_island_config(config_tag)
    return measurement_of(code_hash(), config_hash(config))


def simulated_policy_toml(measurement: str, *, allow_simulated: bool = True) -> str:
    """An attestation policy (TOML) pinning one simulated island measurement.

    ``allow_simulated=False`` is the strict form: the same pin, but simulated
    evidence is refused (the default of every policy).
    """
    text = measurement.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(f"measurement must be 64 lowercase hex characters, got {measurement!r}")
    return (
        "version = 1\n"
        'tee_types = ["simulated"]\n'
        f"allow_simulated = {'true' if allow_simulated else 'false'}\n"
        "[measurements]\n"
        f'measurement = ["{text}"]\n'
    )


@dataclass(frozen=True)
class LocalIsland:
    """A running background island: the host object, its URL, and its burn root."""

    island: Island
    url: str
    server: AppServer

    @property
    def burn_root(self) -> Path:
        """The island's private temp area (empty whenever no job runs)."""
        return self.island.burn.root

    def client(self, tls: TlsConfig | None, *, timeout: float = 600.0) -> IslandClient:
        """An HTTP client for a party (its mutual-TLS client material, or None for plain HTTP)."""
        return IslandClient(self.url, tls=tls, timeout=timeout)


@contextmanager
def local_island(
    workdir: Path,
    *,
    tls: TlsConfig | None,
    host: str = "127.0.0.1",
    port: int = 0,
    temp_root: Path | None = None,
    config_tag: str = "",
) -> Iterator[LocalIsland]:
    """Serve a simulated island from a background thread for the ``with`` block.

    ``tls`` is the island's server material (``PartyFiles(certs,
    "island").server_tls()``); ``None`` serves plain HTTP, which
    :class:`~atoll.service.server.AppServer` allows on loopback only.
    ``port=0`` picks a free port (read :attr:`LocalIsland.url`). Leftovers of
    a killed earlier run under ``workdir`` are swept at start. On leaving the
    block -- normally, on an exception, or on ``KeyboardInterrupt`` -- the
    server is stopped, then every open burn area is removed and every
    session key dropped (:meth:`atoll.island.runner.Island.shutdown`).
    """
    island = Island(
        workdir,
        backend=SimulatedBackend(simulated_island_config(config_tag)),
        temp_root=temp_root,
    )
    try:
        server = AppServer(create_app(island), host, port, tls)
        try:
            server.start_background()
            yield LocalIsland(island, server.url, server)
        finally:
            server.stop()
    finally:
        island.shutdown()
