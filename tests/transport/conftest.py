"""Fixtures: a certificate directory, and a node served over mutual TLS in a background thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atoll.service.node import Node, create_app
from atoll.service.server import AppServer
from atoll.transport.http import HttpPeer
from atoll.transport.tls import CertLayout, PartyFiles, init_certs, load_token, peer_tokens
from tests.transport.toy import ToyJob

SERVER_ITEMS = [[b"a", b"b", b"c", b"d", b"e", b"f"], [b"x", b"y", b"z"]]
CLIENT_ITEMS = [[b"b", b"d", b"f", b"h", b"j"], [b"y", b"z", b"w"]]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertLayout:
    """brand (client), provider (server) and a third party, in one CA."""
    return init_certs(tmp_path_factory.mktemp("certs"), ["brand", "provider", "island"])


@dataclass
class Served:
    """A running node and what it saw."""

    server: AppServer
    node: Node
    jobs: list[ToyJob] = field(default_factory=list)
    finished: list[tuple[str, str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def serve(certs: CertLayout) -> Iterator[Callable[..., Served]]:
    """Start a provider node serving toy jobs; stopped after the test."""
    started: list[AppServer] = []

    def start(
        *,
        items: list[list[bytes]] | None = None,
        node_kwargs: dict[str, Any] | None = None,
        job_kwargs: dict[str, Any] | None = None,
    ) -> Served:
        holder: list[Served] = []

        def factory() -> ToyJob:
            job = ToyJob("sender", items or SERVER_ITEMS, **(job_kwargs or {}))
            holder[0].jobs.append(job)
            return job

        def on_finish(caller: str, jid: str, report: Any) -> None:
            holder[0].finished.append((caller, jid, report))

        node = Node(
            factory,
            peer_tokens(certs.root, "provider"),
            on_finish=on_finish,
            **(node_kwargs or {}),
        )
        server = AppServer(
            create_app(node), "127.0.0.1", 0, PartyFiles(certs.root, "provider").server_tls()
        )
        server.start_background()
        started.append(server)
        holder.append(Served(server, node))
        return holder[0]

    yield start
    for server in started:
        server.stop()


def brand_peer(certs: CertLayout, url: str, **kwargs: Any) -> HttpPeer:
    """An HttpPeer as the brand (its client cert and token)."""
    files = PartyFiles(certs.root, "brand")
    return HttpPeer(
        url,
        token=load_token(files.token),
        tls=files.client_tls(),
        retries=kwargs.pop("retries", 0),
        backoff=0.01,
        **kwargs,
    )


def plain_intersections() -> list[list[bytes]]:
    """What the toy job must output."""
    return [sorted(set(c) & set(s)) for c, s in zip(CLIENT_ITEMS, SERVER_ITEMS, strict=True)]


def write_file(path: Path, data: bytes) -> Path:
    """Helper for tests that need a throwaway file."""
    path.write_bytes(data)
    return path
