"""The node's job/stage/bucket state machine, driven directly and through its FastAPI app.

Why: the network tests show the happy paths and resume; these pin the
node's answers to every out-of-order or hostile request -- repeated rounds
(answered from cache, the machine is not fed twice), skipped rounds,
restarts, foreign callers, limits -- and the JSON error bodies.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from atoll.protocols.messages import decode_frames, encode_frames
from atoll.service.node import Node, NodeError, create_app
from tests.transport.toy import Ack, Offer, ToyJob

TOKENS = {"brand": "b" * 43, "media": "m" * 43}


def _node(**kwargs: Any) -> tuple[Node, list[ToyJob]]:
    jobs: list[ToyJob] = []

    def factory() -> ToyJob:
        jobs.append(ToyJob("sender", [[b"a", b"b", b"c"]], n_buckets=2))
        return jobs[-1]

    return Node(factory, TOKENS, **kwargs), jobs


def _client_params(**extra: Any) -> dict[str, Any]:
    return {**ToyJob("receiver", [[]], n_buckets=2).params(), **extra}


JID = "job-0123456789abcdef"


def _open(node: Node, jid: str = JID) -> None:
    node.open_job("brand", jid, _client_params())
    node.open_stage("brand", jid, 0, {**_client_params(), "stage": 0})


def _offer(items: list[bytes]) -> bytes:
    return encode_frames([Offer(tuple(items))])


def test_authentication() -> None:
    node, _ = _node()
    assert node.authenticate("Bearer " + "b" * 43) == "brand"
    assert node.authenticate("bearer " + "m" * 43) == "media"
    for bad in (None, "", "Bearer", "Basic " + "b" * 43, "Bearer " + "x" * 43, "b" * 43):
        with pytest.raises(NodeError) as info:
            node.authenticate(bad)
        assert info.value.status == 401


def test_rounds_retry_and_restart() -> None:
    node, jobs = _node()
    _open(node)
    items = [b"b"]  # bucket of b"b" with 2 buckets: 98 % 2 = 0
    reply0, done0 = node.round("brand", JID, 0, 0, 0, _offer(items))
    assert not done0
    msgs = decode_frames(reply0)
    assert [type(m).__name__ for m in msgs] == ["Hello", "Match"]
    # A repeated round 0 (lost response) is answered from cache: no new machine.
    again, _ = node.round("brand", JID, 0, 0, 0, _offer(items))
    assert again == reply0
    session = jobs[0].sessions_made[0]
    assert session.machines_made == [0]
    # Skipping ahead is refused.
    with pytest.raises(NodeError, match="expected round 1, got 5") as info:
        node.round("brand", JID, 0, 0, 5, encode_frames([Ack(1)]))
    assert info.value.code == "bad_round"
    # Round 1 finishes the bucket; repeating it is answered from cache.
    reply1, done1 = node.round("brand", JID, 0, 0, 1, encode_frames([Ack(1)]))
    assert done1
    assert decode_frames(reply1) == []
    assert node.round("brand", JID, 0, 0, 1, encode_frames([Ack(1)])) == (reply1, True)
    assert node.status("brand", JID)["stages"][0]["complete"] is False
    # A different round 0 restarts the (finished) bucket with a fresh machine.
    node.round("brand", JID, 0, 0, 0, _offer([b"b", b"d"]))
    assert session.machines_made == [0, 0]
    assert node.open_stage("brand", JID, 0, {**_client_params(), "stage": 0})["finished"] == []


def test_bad_peer_input_resets_the_bucket() -> None:
    node, _ = _node()
    _open(node)
    with pytest.raises(Exception, match="truncated"):
        node.round("brand", JID, 0, 1, 0, b"\x01\x00\x00")
    # Ack before Offer: the machine refuses, the bucket must restart at round 0.
    node.round("brand", JID, 0, 1, 0, encode_frames([]))
    with pytest.raises(Exception, match="got Ack, expected Offer"):
        node.round("brand", JID, 0, 1, 1, encode_frames([Ack(0)]))
    with pytest.raises(NodeError, match="expected round 0"):
        node.round("brand", JID, 0, 1, 1, encode_frames([Ack(0)]))


def test_finish_needs_every_bucket_and_stage() -> None:
    node, jobs = _node()
    _open(node)
    with pytest.raises(NodeError, match="2 buckets not finished"):
        node.finish_stage("brand", JID, 0)
    with pytest.raises(NodeError, match="not every stage finished"):
        node.finish_job("brand", JID)
    for bucket in (0, 1):
        node.round("brand", JID, 0, bucket, 0, _offer([]))
        node.round("brand", JID, 0, bucket, 1, encode_frames([Ack(0)]))
    assert node.finish_stage("brand", JID, 0)["complete"]
    assert node.finish_stage("brand", JID, 0)["complete"]  # idempotent
    with pytest.raises(NodeError, match="already finished"):
        node.round("brand", JID, 0, 0, 0, _offer([]))
    with pytest.raises(NodeError, match="has no stage 1"):
        node.open_stage("brand", JID, 1, {**_client_params(), "stage": 1})
    assert node.finish_job("brand", JID)["finished"]
    assert jobs[0].finish() == [0]


def test_jobs_belong_to_their_caller_and_ids_are_checked() -> None:
    node, _ = _node()
    _open(node)
    with pytest.raises(NodeError, match="no job") as info:
        node.status("media", JID)
    assert info.value.status == 404
    with pytest.raises(NodeError, match="no job"):
        node.open_job("media", JID, _client_params())
    with pytest.raises(NodeError, match="16-64"):
        node.open_job("brand", "../../etc", _client_params())
    with pytest.raises(NodeError, match="other parameters"):
        node.open_job("brand", JID, _client_params(extra=1))
    with pytest.raises(NodeError, match="cannot open stage 2"):
        node.open_stage("brand", JID, 2, {})
    with pytest.raises(NodeError, match="bucket 7 is not part"):
        node.round("brand", JID, 0, 7, 0, b"")


def test_job_limit_and_idle_expiry() -> None:
    now = [0.0]
    node, _ = _node(max_jobs=1, idle_timeout=10.0, clock=lambda: now[0])
    _open(node)
    with pytest.raises(NodeError, match="busy") as info:
        node.open_job("brand", "another-job-123456", _client_params())
    assert info.value.status == 503
    now[0] = 11.0
    node.open_job("brand", "another-job-123456", _client_params())  # the idle one expired
    with pytest.raises(NodeError, match="no job"):
        node.status("brand", JID)


def test_app_error_bodies_and_limits() -> None:
    node, _ = _node(max_body=100)
    client = TestClient(create_app(node))
    r = client.get("/v1/info")
    assert r.status_code == 401
    assert r.json() == {
        "error": "unauthorized",
        "message": "missing bearer token",
    }
    assert r.headers["www-authenticate"] == "Bearer"
    auth = {"authorization": "Bearer " + "b" * 43}
    assert client.get("/v1/info", headers=auth).json()["caller"] == "brand"
    r = client.post("/v1/jobs", headers=auth, content=b"not json")
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request"
    r = client.post("/v1/jobs", headers=auth, json={"job": JID, "params": _client_params()})
    assert r.status_code == 201
    r = client.post("/v1/jobs", headers=auth, json={"job": JID, "params": _client_params()})
    assert r.status_code == 200
    assert r.json()["resumed"]
    r = client.post(
        "/v1/jobs",
        headers=auth,
        json={"job": "zzzzzzzzzzzzzzzzzzzz", "params": _client_params(buckets=3)},
    )
    assert r.status_code == 409
    assert r.json()["error"] == "params_mismatch"
    assert "'buckets' is 3, ours is 2" in r.json()["message"]
    stage = {"params": {**_client_params(), "stage": 0}}
    assert client.post(f"/v1/jobs/{JID}/stages/0", headers=auth, json=stage).status_code == 200
    r = client.post(f"/v1/jobs/{JID}/stages/0/buckets/0", headers=auth, content=b"\x07" * 101)
    assert r.status_code == 413
    assert "more buckets" in r.json()["message"]
    r = client.post(f"/v1/jobs/{JID}/stages/0/buckets/0", headers=auth, content=b"\x07\x00")
    assert r.status_code == 400
    assert r.json()["error"] == "remote_protocol"
    assert "wire version 7" in r.json()["message"]
    r = client.post(f"/v1/jobs/{JID}/stages/0/buckets/0?round=0", headers=auth, content=_offer([]))
    assert r.status_code == 200
    assert r.headers["x-atoll-peer-done"] == "0"
    assert client.delete(f"/v1/jobs/{JID}", headers=auth).json()["abandoned"]
    assert client.get(f"/v1/jobs/{JID}", headers=auth).status_code == 404


def test_internal_failures_do_not_leak_details() -> None:
    from atoll.errors import DataError

    class Failing(ToyJob):
        def agree(self, peer_params: Any) -> None:
            raise DataError("/secret/provider.csv row 17: bad phone 13800000000")

    node = Node(lambda: Failing("sender", [[]], n_buckets=2), TOKENS)
    client = TestClient(create_app(node))
    r = client.post(
        "/v1/jobs",
        headers={"authorization": "Bearer " + "b" * 43},
        json={"job": JID, "params": _client_params()},
    )
    assert r.status_code == 500
    assert "secret" not in r.text
    assert "1380" not in r.text
