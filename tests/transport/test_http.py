"""Joining a node over mutual TLS: results, authentication, parameter checks, resume.

Why: these run the real stack -- uvicorn with the strict TLS context, httpx
with the client certificate, the node's job/stage/bucket state machine and
the client's journal -- against a toy protocol, so a transport bug cannot
hide behind protocol complexity.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from atoll.errors import ConfigError, RemoteProtocolError
from atoll.transport.base import TransportError
from atoll.transport.http import HttpPeer, join_job
from atoll.transport.journal import Journal
from atoll.transport.tls import CertLayout, PartyFiles, TlsConfig, init_certs, load_token
from tests.transport.conftest import CLIENT_ITEMS, Served, brand_peer, plain_intersections
from tests.transport.toy import ToyJob


def _journal(tmp_path: Path, url: str, job: ToyJob, *, fresh: bool = False) -> Journal:
    import json

    return Journal.open(
        tmp_path / "state",
        peer=url,
        params=json.dumps(job.params(), sort_keys=True),
        input_id="toy-input",
        fresh=fresh,
    )


def test_join_over_mutual_tls_equals_plain_intersection(
    certs: CertLayout, serve: Callable[..., Served]
) -> None:
    served = serve()
    job = ToyJob("receiver", CLIENT_ITEMS)
    with brand_peer(certs, served.url) as peer:
        assert peer.info()["caller"] == "brand"
        result = join_job(job, peer, workers=2)
    assert result.outcome == plain_intersections()
    assert result.stages == 2
    assert not result.skipped
    assert len(result.ran) == 2 * 4
    # The server finished too, with the intersection sizes, and knew who called.
    [(caller, jid, report)] = served.finished
    assert (caller, jid) == ("brand", result.job)
    assert report == [len(x) for x in plain_intersections()]
    # Traffic was recorded per bucket on both sides.
    traffic = job.sessions_made[0].traffic
    assert all(
        t is not None and t.bytes_sent > 0 and t.bytes_received > 0 for t in traffic.values()
    )


def test_client_without_certificate_is_refused(
    certs: CertLayout, serve: Callable[..., Served]
) -> None:
    served = serve()
    files = PartyFiles(certs.root, "brand")
    ctx = ssl.create_default_context(cafile=str(files.ca))  # trusts the server, no client cert
    import httpx

    with pytest.raises(httpx.TransportError):
        httpx.get(served.url + "/v1/info", verify=ctx, headers={"authorization": "Bearer x"})
    assert not served.jobs


def test_client_certificate_of_another_ca_is_refused(
    certs: CertLayout, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve()
    other = init_certs(tmp_path / "other", ["brand"])
    mine = PartyFiles(other.root, "brand")
    # Trust the real CA for the server, but present a client cert from a foreign CA.
    tls = TlsConfig(cert=mine.client_cert, key=mine.client_key, ca=certs.root / "ca.pem")
    token = load_token(PartyFiles(certs.root, "brand").token)
    with (
        HttpPeer(served.url, token=token, tls=tls, retries=0) as peer,
        pytest.raises(TransportError, match="connection failed"),
    ):
        peer.info()
    assert not served.jobs


def test_server_of_another_ca_is_refused(certs: CertLayout, tmp_path: Path) -> None:
    from atoll.service.node import Node, create_app
    from atoll.service.server import AppServer

    other = init_certs(tmp_path / "other", ["provider", "brand"])
    node = Node(lambda: ToyJob("sender", [[b"a"]]), {"brand": "t" * 43})
    server = AppServer(
        create_app(node), "127.0.0.1", 0, PartyFiles(other.root, "provider").server_tls()
    )
    server.start_background()
    try:
        with (
            brand_peer(certs, server.url) as peer,
            pytest.raises(RemoteProtocolError, match=r"TLS.*CERTIFICATE_VERIFY_FAILED"),
        ):
            peer.info()
    finally:
        server.stop()


def test_wrong_token_is_refused(
    certs: CertLayout, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve()
    files = PartyFiles(certs.root, "brand")
    with (
        HttpPeer(served.url, token="A" * 43, tls=files.client_tls(), retries=0) as peer,
        pytest.raises(RemoteProtocolError, match="refused our token \\(401\\)"),
    ):
        join_job(ToyJob("receiver", CLIENT_ITEMS), peer)
    # The server's own token is not accepted from a client either.
    own = load_token(PartyFiles(certs.root, "provider").token)
    with (
        HttpPeer(served.url, token=own, tls=files.client_tls(), retries=0) as peer,
        pytest.raises(RemoteProtocolError, match="401"),
    ):
        peer.info()
    assert not served.jobs


def test_parameter_mismatch_is_refused_with_the_key(
    certs: CertLayout, serve: Callable[..., Served]
) -> None:
    served = serve()
    job = ToyJob("receiver", CLIENT_ITEMS, n_buckets=8)
    with (
        brand_peer(certs, served.url) as peer,
        pytest.raises(RemoteProtocolError, match=r"409.*'buckets' is 8, ours is 4"),
    ):
        join_job(job, peer)
    same_role = ToyJob("sender", CLIENT_ITEMS)
    with (
        brand_peer(certs, served.url) as peer,
        pytest.raises(RemoteProtocolError, match="peer's role is 'sender'"),
    ):
        join_job(same_role, peer)
    assert served.node.jobs == 0


class BoomError(Exception):
    """Injected failure (the client 'dies')."""


def test_resume_skips_buckets_finished_on_both_sides(
    certs: CertLayout, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve()
    first = ToyJob("receiver", CLIENT_ITEMS)
    done: list[tuple[int, int]] = []

    def die_after_five(stage: int, bucket: int) -> None:
        done.append((stage, bucket))
        if len(done) == 5:
            raise BoomError

    with brand_peer(certs, served.url) as peer, pytest.raises(BoomError):
        join_job(first, peer, journal=_journal(tmp_path, served.url, first), workers=1,
                 on_bucket=die_after_five)  # fmt: skip
    assert done == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    # Re-run in a "new process": a new job object, the same state directory.
    second = ToyJob("receiver", CLIENT_ITEMS)
    journal = _journal(tmp_path, served.url, second)
    with brand_peer(certs, served.url) as peer:
        result = join_job(second, peer, journal=journal, workers=2)
    assert result.outcome == plain_intersections()
    assert sorted(result.skipped) == done
    assert sorted(result.ran) == [(1, 1), (1, 2), (1, 3)]
    # The client built no machine for skipped buckets ...
    assert second.sessions_made[0].machines_made == []
    assert sorted(second.sessions_made[1].machines_made) == [1, 2, 3]
    # ... and the server computed each bucket exactly once overall.
    [server_job] = served.jobs
    assert sorted(server_job.sessions_made[0].machines_made) == [0, 1, 2, 3]
    assert sorted(server_job.sessions_made[1].machines_made) == [0, 1, 2, 3]
    assert len(served.finished) == 1


def test_resume_after_the_server_lost_its_state_reruns_what_it_lacks(
    certs: CertLayout, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve()
    first = ToyJob("receiver", CLIENT_ITEMS)

    def die_at_bucket_one(stage: int, bucket: int) -> None:
        if bucket == 1:
            raise BoomError

    with brand_peer(certs, served.url) as peer, pytest.raises(BoomError):
        join_job(first, peer, journal=_journal(tmp_path, served.url, first), workers=1,
                 on_bucket=die_at_bucket_one)  # fmt: skip
    served.node._jobs.clear()  # the node process "restarted": its jobs are gone
    second = ToyJob("receiver", CLIENT_ITEMS)
    journal = _journal(tmp_path, served.url, second)
    assert journal.finished(0) == [0, 1]
    with brand_peer(certs, served.url) as peer:
        result = join_job(second, peer, journal=journal)
    assert result.outcome == plain_intersections()
    assert result.skipped == []  # the node lacked them, so both sides ran them again
    assert len(served.finished) == 1


def test_journal_of_another_job_is_refused(tmp_path: Path) -> None:
    Journal.open(tmp_path / "s", peer="https://a", params="p", input_id="i")
    with pytest.raises(ConfigError, match="different job \\(input differs\\)"):
        Journal.open(tmp_path / "s", peer="https://a", params="p", input_id="other")
    fresh = Journal.open(tmp_path / "s", peer="https://a", params="p", input_id="other", fresh=True)
    assert fresh.finished(0) == []


def test_oversized_round_is_refused_by_the_node(
    certs: CertLayout, serve: Callable[..., Served]
) -> None:
    served = serve(node_kwargs={"max_body": 200})
    big = ToyJob("receiver", [[bytes([i]) * 100 for i in range(40)], []])
    with (
        brand_peer(certs, served.url) as peer,
        pytest.raises(RemoteProtocolError, match=r"413.*more buckets"),
    ):
        join_job(big, peer, workers=1)


def test_client_caps_replies(certs: CertLayout, serve: Callable[..., Served]) -> None:
    served = serve(items=[[bytes([i]) * 100 for i in range(40)], []])
    job = ToyJob("receiver", [[bytes([i]) * 100 for i in range(40)], []])
    with (
        brand_peer(certs, served.url, max_body=1500) as peer,
        pytest.raises(RemoteProtocolError, match="exceeds the limit 1500"),
    ):
        join_job(job, peer, workers=1)


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="refusing plain HTTP"):
        HttpPeer("http://example.org:8443", token="t" * 43, tls=None)
    with pytest.raises(ConfigError, match="needs TLS settings"):
        HttpPeer("https://127.0.0.1:1", token="t" * 43, tls=None)
    with pytest.raises(ConfigError, match="http\\(s\\) URL"):
        HttpPeer("ftp://x", token="t" * 43, tls=None)


def test_unreachable_peer_is_a_transport_error(certs: CertLayout) -> None:
    with (
        brand_peer(certs, "https://127.0.0.1:9", retries=1) as peer,
        pytest.raises(TransportError, match="connection failed"),
    ):
        peer.info()
