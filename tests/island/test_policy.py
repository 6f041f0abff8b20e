"""Attestation policy: TOML parsing (strict), every rule's rejection, and the accept path.

Real verdicts come from the public samples (SGX: ConfigurationAndSWHardeningNeeded;
SNP: a debug guest); synthetic verdicts cover what no sample shows (simulated
evidence, SVNs, ages). A Hypothesis test checks that ``evaluate`` accepts
exactly when the plain set-membership computation says it should.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError
from atoll.island import AttestationPolicy, PolicyRejected, Verdict, evaluate, load_policy
from atoll.island.evidence.sgx import verify_sgx_quote
from atoll.island.evidence.snp import verify_snp_report
from atoll.island.policy import parse_policy
from tests.island.test_verdicts import DCAP, SEV, SGX_AT, SNP_AT, VECTORS

MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
HELLO = b"Hello, world!".ljust(64, b"\0")

EXAMPLE = f"""
version = 1
tee_types = ["sgx", "tdx"]
tcb_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]
allowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]
allowed_signers = ["{MRSIGNER.upper()}"]
allowed_isv_prod_ids = [0]
max_evidence_age_seconds = 300
allow_debug = false
allow_simulated = false
require_report_data = true

[measurements]
mrenclave = ["{MRENCLAVE}"]

[min_svn]
isv_svn = 0
"""


def synthetic(**changes: Any) -> Verdict:
    base: dict[str, Any] = dict(
        tee="sgx",
        measurements={"mrenclave": "aa" * 32, "mrsigner": "bb" * 32},
        report_data=bytes(range(64)),
        tcb_status="UpToDate",
        advisories=(),
        debug=False,
        svn={"isv_svn": 3, "isv_prod_id": 7},
        verified_at=SGX_AT,
        collateral_expires=SGX_AT + timedelta(days=10),
        simulated=False,
    )
    base.update(changes)
    return Verdict(**base)


PINNED = AttestationPolicy(
    tee_types=frozenset({"sgx", "tdx", "sev-snp", "simulated"}),
    measurements={"mrenclave": frozenset({"aa" * 32})},
)


def reject(verdict: Verdict, policy: AttestationPolicy, **kwargs: Any) -> str:
    kwargs.setdefault("expected_report_data", verdict.report_data)
    kwargs.setdefault("now", SGX_AT)
    with pytest.raises(PolicyRejected) as info:
        evaluate(verdict, policy, **kwargs)
    assert info.value.stage == "policy"
    return info.value.rule


# --- parsing -------------------------------------------------------------------------


def test_example_policy_parses(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    policy = load_policy(path)
    assert policy.tee_types == {"sgx", "tdx"}
    assert policy.allowed_signers == {MRSIGNER}  # lower-cased
    assert policy.measurements["mrenclave"] == {MRENCLAVE}
    assert policy.max_evidence_age_seconds == 300
    assert policy.to_dict()["version"] == 1


def test_defaults_are_strict() -> None:
    policy = parse_policy({"version": 1})
    assert policy.tcb_statuses == {"UpToDate"}
    assert not policy.allow_debug
    assert not policy.allow_simulated
    assert policy.require_report_data
    assert not policy.allow_any_measurement
    assert "simulated" not in policy.tee_types


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("version = 1\nallow_debugg = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.toml.*'allow_debugg'"):
        load_policy(path)
    path.write_text("version = 1\n[measurements]\nmrenclav = ['aa']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.toml.*measurements\.mrenclav"):
        load_policy(path)
    path.write_text("version = 1\n[min_svn]\nisvsvn = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.toml.*min_svn\.isvsvn"):
        load_policy(path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "version"),
        ({"version": 2}, "version"),
        ({"version": 1, "tcb_statuses": ["Revoked"]}, "Revoked"),
        ({"version": 1, "tcb_statuses": ["Fine"]}, "cannot be accepted"),
        ({"version": 1, "tee_types": ["sgx2"]}, "unknown TEE"),
        ({"version": 1, "allow_debug": "no"}, "true or false"),
        ({"version": 1, "measurements": {"mrenclave": ["xyz"]}}, "not lowercase hex"),
        ({"version": 1, "measurements": {"mrenclave": "aa"}}, "list of strings"),
        ({"version": 1, "min_svn": {"isv_svn": -1}}, "non-negative"),
        ({"version": 1, "max_evidence_age_seconds": 0}, "positive"),
        ({"version": 1, "allowed_isv_prod_ids": ["1"]}, "integers"),
    ],
)
def test_bad_policies_are_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(doc, source="t.toml")


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("version = = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_policy(bad)


# --- decisions on real verdicts -----------------------------------------------------


@pytest.mark.skipif(not VECTORS.is_dir(), reason="TEE test vectors not present")
def test_real_sgx_verdict_accepted_by_the_example_policy() -> None:
    verdict = verify_sgx_quote(
        (DCAP / "sgx_quote").read_bytes(),
        (DCAP / "sgx_quote_collateral.json").read_bytes(),
        at=SGX_AT,
    )
    policy = parse_policy(__import__("tomllib").loads(EXAMPLE))
    evaluate(verdict, policy, expected_report_data=HELLO, now=SGX_AT + timedelta(seconds=10))
    # ...but not by the default TCB rule (only UpToDate):
    strict = AttestationPolicy(measurements={"mrenclave": frozenset({MRENCLAVE})})
    assert reject(verdict, strict, expected_report_data=HELLO) == "tcb_statuses"
    # ...nor when an advisory is not on the allow-list:
    narrow = AttestationPolicy(
        measurements={"mrenclave": frozenset({MRENCLAVE})},
        tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}),
        allowed_advisories=frozenset({"INTEL-SA-00289"}),
    )
    assert reject(verdict, narrow, expected_report_data=HELLO) == "allowed_advisories"
    # ...nor when the report data is not the expected binding:
    loose = AttestationPolicy(
        measurements={"mrenclave": frozenset({MRENCLAVE})},
        tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}),
    )
    assert reject(verdict, loose, expected_report_data=bytes(64)) == "report_data"
    # ...nor when the measurement is not allowed:
    other = AttestationPolicy(
        measurements={"mrenclave": frozenset({"00" * 32})},
        tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}),
    )
    assert reject(verdict, other, expected_report_data=HELLO) == "measurements.mrenclave"


@pytest.mark.skipif(not VECTORS.is_dir(), reason="TEE test vectors not present")
def test_real_snp_debug_guest_is_refused() -> None:
    verdict = verify_snp_report(
        (SEV / "attestation.bin").read_bytes(), (SEV / "vcek.der").read_bytes(), at=SNP_AT
    )
    policy = AttestationPolicy(
        measurements={"measurement": frozenset({verdict.measurements["measurement"]})},
        min_svn={"snp": 5, "microcode": 68},
    )
    assert reject(verdict, policy, now=SNP_AT) == "allow_debug"
    permissive = AttestationPolicy(
        measurements=policy.measurements, min_svn=policy.min_svn, allow_debug=True
    )
    evaluate(verdict, permissive, expected_report_data=verdict.report_data, now=SNP_AT)
    too_new = AttestationPolicy(
        measurements=policy.measurements, min_svn={"microcode": 200}, allow_debug=True
    )
    assert reject(verdict, too_new, now=SNP_AT) == "min_svn.microcode"
    no_tcb_floor = AttestationPolicy(measurements=policy.measurements, allow_debug=True)
    assert reject(verdict, no_tcb_floor, now=SNP_AT) == "min_svn"


# --- each rule on synthetic verdicts --------------------------------------------------


def test_simulated_refused_by_default_and_accepted_only_explicitly() -> None:
    sim = synthetic(tee="simulated", simulated=True, measurements={"measurement": "cc" * 32})
    assert reject(sim, AttestationPolicy()) == "allow_simulated"
    assert reject(sim, AttestationPolicy(allow_simulated=True)) == "tee_types"
    ok = AttestationPolicy(
        allow_simulated=True,
        tee_types=frozenset({"simulated"}),
        measurements={"measurement": frozenset({"cc" * 32})},
    )
    evaluate(sim, ok, expected_report_data=sim.report_data, now=SGX_AT)


def test_tee_type_debug_status_rules() -> None:
    assert reject(synthetic(tee="tdx"), AttestationPolicy(tee_types=frozenset({"sgx"}))) == (
        "tee_types"
    )
    assert reject(synthetic(debug=True), PINNED) == "allow_debug"
    assert reject(synthetic(tcb_status="OutOfDate"), PINNED) == "tcb_statuses"
    assert reject(synthetic(tcb_status="Revoked"), PINNED) == "tcb_statuses"


def test_unpinned_code_is_refused_unless_explicitly_allowed() -> None:
    assert reject(synthetic(), AttestationPolicy()) == "measurements"
    evaluate(
        synthetic(),
        AttestationPolicy(allow_any_measurement=True),
        expected_report_data=bytes(range(64)),
        now=SGX_AT,
    )


def test_signer_and_product_rules() -> None:
    by_signer = AttestationPolicy(allowed_signers=frozenset({"bb" * 32}))
    evaluate(synthetic(), by_signer, expected_report_data=bytes(range(64)), now=SGX_AT)
    wrong = AttestationPolicy(allowed_signers=frozenset({"cc" * 32}))
    assert reject(synthetic(), wrong) == "allowed_signers"
    product = AttestationPolicy(
        allowed_signers=frozenset({"bb" * 32}), allowed_isv_prod_ids=frozenset({8})
    )
    assert reject(synthetic(), product) == "allowed_isv_prod_ids"


def test_min_svn_rule() -> None:
    policy = AttestationPolicy(measurements=PINNED.measurements, min_svn={"isv_svn": 4})
    assert reject(synthetic(), policy) == "min_svn.isv_svn"
    missing = synthetic(svn={})
    assert reject(missing, policy) == "min_svn.isv_svn"
    ok = AttestationPolicy(measurements=PINNED.measurements, min_svn={"isv_svn": 3})
    evaluate(synthetic(), ok, expected_report_data=bytes(range(64)), now=SGX_AT)


def test_age_and_collateral_expiry_rules() -> None:
    aged = AttestationPolicy(measurements=PINNED.measurements, max_evidence_age_seconds=60)
    late = SGX_AT + timedelta(seconds=61)
    assert reject(synthetic(), aged, now=late) == "max_evidence_age_seconds"
    evaluate(
        synthetic(), aged, expected_report_data=bytes(range(64)), now=SGX_AT + timedelta(seconds=59)
    )
    assert reject(synthetic(), PINNED, now=SGX_AT + timedelta(days=11)) == "collateral_expires"


def test_report_data_binding_rules() -> None:
    assert reject(synthetic(), PINNED, expected_report_data=None) == "require_report_data"
    no_binding = AttestationPolicy(measurements=PINNED.measurements, require_report_data=False)
    evaluate(synthetic(), no_binding, expected_report_data=None, now=SGX_AT)
    assert reject(synthetic(), PINNED, expected_report_data=bytes(64)) == "report_data"
    with pytest.raises(ConfigError, match="64 bytes"):
        evaluate(synthetic(), PINNED, expected_report_data=b"short", now=SGX_AT)
    with pytest.raises(ConfigError, match="timezone"):
        evaluate(
            synthetic(),
            PINNED,
            expected_report_data=bytes(range(64)),
            now=datetime(2025, 1, 1),
        )


HEX32 = st.sampled_from(["aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32])


@settings(max_examples=80, deadline=None)
@given(
    mrenclave=HEX32,
    allowed=st.frozensets(HEX32, min_size=1),
    isv_svn=st.integers(0, 5),
    minimum=st.integers(0, 5),
    status=st.sampled_from(["UpToDate", "SWHardeningNeeded", "OutOfDate"]),
    accepted=st.frozensets(st.sampled_from(["UpToDate", "SWHardeningNeeded", "OutOfDate"])),
    debug=st.booleans(),
)
def test_evaluate_equals_the_plain_rule_computation(
    mrenclave: str,
    allowed: frozenset[str],
    isv_svn: int,
    minimum: int,
    status: str,
    accepted: frozenset[str],
    debug: bool,
) -> None:
    verdict = synthetic(
        measurements={"mrenclave": mrenclave, "mrsigner": "bb" * 32},
        svn={"isv_svn": isv_svn},
        tcb_status=status,
        debug=debug,
    )
    policy = AttestationPolicy(
        measurements={"mrenclave": allowed},
        min_svn={"isv_svn": minimum},
        tcb_statuses=accepted,
    )
    expected = (not debug) and status in accepted and mrenclave in allowed and isv_svn >= minimum
    try:
        evaluate(verdict, policy, expected_report_data=verdict.report_data, now=SGX_AT)
        got = True
    except PolicyRejected:
        got = False
    assert got == expected
