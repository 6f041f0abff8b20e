"""Simulated evidence and attested key release, both sides in memory.

The party side (``verify_bundle`` + ``wrap_dataset_key``) and the island side
(``JobSession``) exchange their JSON forms, as they do over HTTP, so the
parsers of hostile input run too.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atoll.errors import RemoteProtocolError
from atoll.island.evidence.simulated import (
    SIMULATED_STAMP,
    SimulatedBackend,
    code_hash,
    verify_simulated,
)
from atoll.island.keyrelease import (
    EvidenceBundle,
    JobSession,
    new_nonce,
    report_data,
    verify_bundle,
    wrap_dataset_key,
)
from atoll.island.policy import AttestationPolicy, parse_policy
from atoll.island.verdict import AttestationError, EvidenceFormatError, PolicyRejected

JOB = bytes(range(32))


def _policy(measurement: str, *, allow_simulated: bool = True) -> AttestationPolicy:
    return parse_policy(
        {
            "version": 1,
            "tee_types": ["simulated"],
            "allow_simulated": allow_simulated,
            "measurements": {"measurement": [measurement]},
        }
    )


def _island(config: dict[str, str] | None = None) -> tuple[SimulatedBackend, JobSession]:
    backend = SimulatedBackend(config or {"backend": "simulated"})
    session = JobSession(
        job_hash=JOB, receipt_key=os.urandom(32), tee="simulated", quote=backend.quote
    )
    return backend, session


def _over_the_wire(bundle: EvidenceBundle) -> EvidenceBundle:
    return EvidenceBundle.from_json(bundle.to_json())


def test_simulated_verdict_is_marked_and_self_consistent() -> None:
    backend, _ = _island()
    data = os.urandom(64)
    verdict = verify_simulated(backend.quote(data))
    assert verdict.simulated
    assert verdict.tee == "simulated"
    assert verdict.report_data == data
    assert verdict.measurements["measurement"] == backend.measurement
    assert verdict.details["warning"] == SIMULATED_STAMP


def test_measurement_changes_with_code_and_config(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = code_hash(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_hash(tmp_path) != first
    assert SimulatedBackend({"a": 1}).measurement != SimulatedBackend({"a": 2}).measurement


def test_tampered_or_stale_simulated_evidence_is_refused() -> None:
    backend, _ = _island()
    evidence = bytearray(backend.quote(os.urandom(64)))
    evidence[-3] ^= 1
    with pytest.raises(AttestationError):
        verify_simulated(bytes(evidence))
    with pytest.raises(EvidenceFormatError):
        verify_simulated(b"\x09" + bytes(evidence[1:]))
    old = backend.quote(os.urandom(64), now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(EvidenceFormatError, match="too far"):
        verify_simulated(old)
    with pytest.raises(AttestationError, match="trusted set"):
        verify_simulated(backend.quote(os.urandom(64)), trusted_keys=frozenset({bytes(32)}))


def test_two_party_key_release_in_memory() -> None:
    backend, session = _island()
    policy = _policy(backend.measurement)
    keys = {"brand": os.urandom(32), "provider": os.urandom(32)}
    for party, key in keys.items():
        nonce = new_nonce()
        bundle = _over_the_wire(session.attest(nonce))
        verdict = verify_bundle(bundle, policy, nonce=nonce, job_hash=JOB)
        assert verdict.simulated
        wrapped = wrap_dataset_key(bundle, key, party=party, dataset_id=f"{party}-d", version=1)
        session.unwrap(wrapped, nonce=nonce, party=party, dataset_id=f"{party}-d", version=1)
    for party, key in keys.items():
        assert session.dataset_key(party, f"{party}-d", 1) == key
    session.destroy()
    assert session.closed
    assert session.released() == set()


def test_strict_policy_refuses_simulated_evidence() -> None:
    backend, session = _island()
    nonce = new_nonce()
    bundle = session.attest(nonce)
    with pytest.raises(PolicyRejected) as info:
        verify_bundle(
            bundle, _policy(backend.measurement, allow_simulated=False), nonce=nonce, job_hash=JOB
        )
    assert info.value.rule == "allow_simulated"


def test_changed_island_program_gets_nothing() -> None:
    trusted, _ = _island({"backend": "simulated"})
    _, rogue_session = _island({"backend": "simulated", "patched": "yes"})
    nonce = new_nonce()
    bundle = rogue_session.attest(nonce)
    with pytest.raises(PolicyRejected) as info:
        verify_bundle(bundle, _policy(trusted.measurement), nonce=nonce, job_hash=JOB)
    assert info.value.rule == "measurements.measurement"


def test_binding_nonce_job_and_key_substitution() -> None:
    backend, session = _island()
    policy = _policy(backend.measurement)
    nonce = new_nonce()
    bundle = session.attest(nonce)
    with pytest.raises(EvidenceFormatError, match="another nonce"):
        verify_bundle(bundle, policy, nonce=new_nonce(), job_hash=JOB)
    with pytest.raises(EvidenceFormatError, match="another job"):
        verify_bundle(bundle, policy, nonce=nonce, job_hash=bytes(32))
    # A man in the middle swaps in its own HPKE key: the report data no longer matches.
    swapped = EvidenceBundle(**{**bundle.__dict__, "hpke_public_key": os.urandom(32)})
    with pytest.raises(PolicyRejected) as info:
        verify_bundle(swapped, policy, nonce=nonce, job_hash=JOB)
    assert info.value.rule == "report_data"
    assert (
        report_data(
            hpke_public_key=bundle.hpke_public_key,
            nonce=nonce,
            job_hash=JOB,
            receipt_key=bundle.receipt_key,
        )
        == verify_simulated(bundle.evidence).report_data
    )


def test_island_refuses_replays_and_foreign_wraps() -> None:
    backend, session = _island()
    policy = _policy(backend.measurement)
    nonce = new_nonce()
    bundle = session.attest(nonce)
    verify_bundle(bundle, policy, nonce=nonce, job_hash=JOB)
    with pytest.raises(RemoteProtocolError, match="already used"):
        session.attest(nonce)
    wrapped = wrap_dataset_key(bundle, os.urandom(32), party="brand", dataset_id="d", version=1)
    with pytest.raises(RemoteProtocolError, match="never attested"):
        session.unwrap(wrapped, nonce=new_nonce(), party="brand", dataset_id="d", version=1)
    with pytest.raises(RemoteProtocolError, match="does not open"):
        session.unwrap(wrapped, nonce=nonce, party="brand", dataset_id="d", version=2)
    session.unwrap(wrapped, nonce=nonce, party="brand", dataset_id="d", version=1)
    with pytest.raises(RemoteProtocolError, match="already used"):
        session.unwrap(wrapped, nonce=nonce, party="brand", dataset_id="d", version=1)
    # A key wrapped for another island session cannot be opened here.
    _, other = _island()
    other_nonce = new_nonce()
    other_bundle = other.attest(other_nonce)
    foreign = wrap_dataset_key(other_bundle, os.urandom(32), party="p", dataset_id="d", version=1)
    nonce2 = new_nonce()
    session.attest(nonce2)
    with pytest.raises(RemoteProtocolError, match="does not open"):
        session.unwrap(foreign, nonce=nonce2, party="p", dataset_id="d", version=1)


def test_bundle_parser_rejects_malformed_peer_input() -> None:
    _, session = _island()
    good = session.attest(new_nonce()).to_json()
    for key, value in (("hpke_public_key", "AAAA"), ("evidence", "%%%"), ("tee", "gpu")):
        with pytest.raises(RemoteProtocolError):
            EvidenceBundle.from_json({**good, key: value})
    with pytest.raises(RemoteProtocolError):
        EvidenceBundle.from_json({**good, "atoll_evidence_bundle": 2})
