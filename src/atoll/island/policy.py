"""Attestation policy: which verified islands a party is willing to give a key to.

Why: a valid signature chain only proves that *some* code ran on *some*
genuine TEE. Whether that code, on that patch level, in that mode may receive
a brand's or a provider's dataset key is each party's own decision, written
down as data so it can be reviewed, versioned and signed as part of the
collaboration contract. This module reads that decision from TOML into a
frozen :class:`AttestationPolicy` and applies it to a
:class:`~atoll.island.verdict.Verdict` with :func:`evaluate`, which raises
:class:`~atoll.island.verdict.PolicyRejected` naming the exact rule that
failed. Defaults are strict: only ``UpToDate`` TCB, no debug enclaves, no
simulated evidence, a report-data binding required, and the code must be
pinned by at least one measurement or signer rule. GPU evidence (NVIDIA H100)
never qualifies an island for key release: :func:`evaluate` refuses it, and
:func:`evaluate_gpu_addon` accepts it only as an *add-on* claim next to CPU
TEE evidence, when the policy says ``allow_gpu_addon = true``.

Example (``docs/attestation.md`` has the full reference)::

    version = 1
    tee_types = ["sgx", "tdx"]
    tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
    allowed_signers = ["815f42f1..."]
    max_evidence_age_seconds = 300

    [measurements]
    mrenclave = ["33d8736d..."]
    mrtd = ["91eb2b44..."]

    [min_svn]
    isv_svn = 1
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from atoll.crypto import constant_time_equal
from atoll.errors import ConfigError
from atoll.island.verdict import (
    GPU_NONCE_SIZE,
    GPU_TEE_TYPES,
    INTEL_TCB_STATUSES,
    KNOWN_MEASUREMENTS,
    KNOWN_SVNS,
    REPORT_DATA_SIZE,
    TEE_TYPES,
    PolicyRejected,
    Verdict,
)

__all__ = [
    "POLICY_VERSION",
    "AttestationPolicy",
    "evaluate",
    "evaluate_gpu_addon",
    "load_policy",
    "parse_policy",
]

#: The ``version`` a policy file must declare.
POLICY_VERSION = 1

_ALL_MEASUREMENT_KEYS = frozenset().union(*KNOWN_MEASUREMENTS.values())
_ALL_SVN_KEYS = frozenset().union(*KNOWN_SVNS.values())
# Intel statuses a policy may accept ("Revoked" never). They apply to SGX and TDX
# verdicts; SEV-SNP TCB is judged with min_svn (see _SNP_TCB_KEYS).
_ACCEPTABLE_STATUSES = frozenset(INTEL_TCB_STATUSES) - {"Revoked"}
_INTEL_TEES = frozenset({"sgx", "tdx"})
_SNP_TCB_KEYS = ("bootloader", "tee", "snp", "microcode")
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class AttestationPolicy:
    """A relying party's rules for accepting a :class:`Verdict` (strict defaults).

    * ``tee_types`` – TEE families accepted (``"simulated"`` additionally needs
      ``allow_simulated``).
    * ``measurements`` – per key (``mrenclave``, ``mrtd``, ``rtmr0``…, SNP
      ``measurement``, ``host_data``…) the allowed lowercase-hex values; a rule
      applies to every verdict whose TEE carries that key.
    * ``allowed_signers`` – allowed SGX MRSIGNER values.
    * ``allowed_isv_prod_ids`` – allowed SGX ISVPRODID values (empty = any).
    * ``min_svn`` – minimum value per SVN key (``isv_svn``, ``tdx_module_svn``,
      SNP ``snp``/``microcode``…), applied to verdicts whose TEE carries it.
    * ``tcb_statuses`` – acceptable Intel TCB statuses for SGX/TDX (default only
      ``UpToDate``; ``Revoked`` can never be listed). SEV-SNP has no such
      status: an SNP verdict is refused unless ``min_svn`` sets at least one
      of ``bootloader``, ``tee``, ``snp``, ``microcode``.
    * ``allowed_advisories`` – if not ``None``, every advisory on the verdict
      must be listed here.
    * ``allow_debug`` / ``allow_simulated`` – both default ``False``.
    * ``max_evidence_age_seconds`` – how long after verification a verdict may
      still be used (``None``: no limit beyond collateral expiry).
    * ``require_report_data`` – :func:`evaluate` must be given the expected
      64-byte report data (the key/nonce/manifest binding) and it must match.
    * ``allow_any_measurement`` – accept code not pinned by any measurement or
      signer rule (default ``False``: an unpinned island gets nothing).
    * ``allow_gpu_addon`` – accept verified GPU evidence (``nvidia-h100``) as an
      add-on claim via :func:`evaluate_gpu_addon` (default ``False``). GPU
      types can never be listed in ``tee_types``.
    """

    tee_types: frozenset[str] = frozenset({"sgx", "tdx", "sev-snp"})
    measurements: Mapping[str, frozenset[str]] = field(default_factory=dict)
    allowed_signers: frozenset[str] = frozenset()
    allowed_isv_prod_ids: frozenset[int] = frozenset()
    min_svn: Mapping[str, int] = field(default_factory=dict)
    tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    allowed_advisories: frozenset[str] | None = None
    allow_debug: bool = False
    allow_simulated: bool = False
    max_evidence_age_seconds: int | None = None
    require_report_data: bool = True
    allow_any_measurement: bool = False
    allow_gpu_addon: bool = False

    def __post_init__(self) -> None:
        bad_tee = sorted(set(self.tee_types) - set(TEE_TYPES))
        if bad_tee:
            raise ConfigError(f"unknown TEE type(s) {bad_tee}; known: {list(TEE_TYPES)}")
        gpu = sorted(set(self.tee_types) & GPU_TEE_TYPES)
        if gpu:
            raise ConfigError(
                f"GPU evidence {gpu} cannot be an island TEE type; "
                "use allow_gpu_addon = true to accept it as an add-on claim"
            )
        for key, values in self.measurements.items():
            if key not in _ALL_MEASUREMENT_KEYS:
                raise ConfigError(
                    f"unknown measurement key {key!r}; known: {sorted(_ALL_MEASUREMENT_KEYS)}"
                )
            for value in values:
                _check_hex(value, f"measurements.{key}")
        for value in self.allowed_signers:
            _check_hex(value, "allowed_signers")
        for key, minimum in self.min_svn.items():
            if key not in _ALL_SVN_KEYS:
                raise ConfigError(f"unknown SVN key {key!r}; known: {sorted(_ALL_SVN_KEYS)}")
            if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
                raise ConfigError(f"min_svn.{key} must be a non-negative integer")
        bad_status = sorted(set(self.tcb_statuses) - _ACCEPTABLE_STATUSES)
        if bad_status:
            raise ConfigError(
                f"TCB status(es) {bad_status} cannot be accepted; "
                f"choose from {sorted(_ACCEPTABLE_STATUSES)} (Revoked never)"
            )
        if self.max_evidence_age_seconds is not None and self.max_evidence_age_seconds <= 0:
            raise ConfigError("max_evidence_age_seconds must be positive")
        object.__setattr__(
            self,
            "measurements",
            MappingProxyType({k: frozenset(v) for k, v in self.measurements.items()}),
        )
        object.__setattr__(self, "min_svn", MappingProxyType(dict(self.min_svn)))

    def to_dict(self) -> dict[str, Any]:
        """The policy as TOML-shaped data (sorted lists), e.g. for audit logs."""
        out: dict[str, Any] = {
            "version": POLICY_VERSION,
            "tee_types": sorted(self.tee_types),
            "tcb_statuses": sorted(self.tcb_statuses),
            "allow_debug": self.allow_debug,
            "allow_simulated": self.allow_simulated,
            "require_report_data": self.require_report_data,
            "allow_any_measurement": self.allow_any_measurement,
            "allow_gpu_addon": self.allow_gpu_addon,
            "allowed_signers": sorted(self.allowed_signers),
            "allowed_isv_prod_ids": sorted(self.allowed_isv_prod_ids),
            "measurements": {k: sorted(v) for k, v in sorted(self.measurements.items())},
            "min_svn": dict(sorted(self.min_svn.items())),
        }
        if self.allowed_advisories is not None:
            out["allowed_advisories"] = sorted(self.allowed_advisories)
        if self.max_evidence_age_seconds is not None:
            out["max_evidence_age_seconds"] = self.max_evidence_age_seconds
        return out


def _check_hex(value: str, where: str) -> None:
    if not value or len(value) % 2 or any(c not in _HEX for c in value):
        raise ConfigError(f"{where}: {value!r} is not lowercase hex")


_TOP_KEYS = frozenset(
    {
        "version",
        "tee_types",
        "measurements",
        "allowed_signers",
        "allowed_isv_prod_ids",
        "min_svn",
        "tcb_statuses",
        "allowed_advisories",
        "allow_debug",
        "allow_simulated",
        "max_evidence_age_seconds",
        "require_report_data",
        "allow_any_measurement",
        "allow_gpu_addon",
    }
)


def _str_list(doc: Mapping[str, Any], key: str, source: str, *, lower: bool = False) -> list[str]:
    value = doc[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: key {key!r} must be a list of strings")
    return [v.lower() for v in value] if lower else list(value)


def _bool(doc: Mapping[str, Any], key: str, source: str) -> bool:
    value = doc[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: key {key!r} must be true or false")
    return value


def parse_policy(doc: Mapping[str, Any], *, source: str = "<policy>") -> AttestationPolicy:
    """Build a policy from parsed TOML; unknown keys are refused, naming ``source`` and key."""
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown policy key {unknown[0]!r} (known: {sorted(_TOP_KEYS)})"
        )
    if doc.get("version") != POLICY_VERSION:
        raise ConfigError(
            f"{source}: key 'version' must be {POLICY_VERSION} (got {doc.get('version')!r})"
        )
    kwargs: dict[str, Any] = {}
    if "tee_types" in doc:
        kwargs["tee_types"] = frozenset(_str_list(doc, "tee_types", source))
    if "tcb_statuses" in doc:
        kwargs["tcb_statuses"] = frozenset(_str_list(doc, "tcb_statuses", source))
    if "allowed_signers" in doc:
        kwargs["allowed_signers"] = frozenset(_str_list(doc, "allowed_signers", source, lower=True))
    if "allowed_advisories" in doc:
        kwargs["allowed_advisories"] = frozenset(_str_list(doc, "allowed_advisories", source))
    if "allowed_isv_prod_ids" in doc:
        ids = doc["allowed_isv_prod_ids"]
        if not isinstance(ids, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in ids
        ):
            raise ConfigError(f"{source}: key 'allowed_isv_prod_ids' must be a list of integers")
        kwargs["allowed_isv_prod_ids"] = frozenset(ids)
    for key in (
        "allow_debug",
        "allow_simulated",
        "require_report_data",
        "allow_any_measurement",
        "allow_gpu_addon",
    ):
        if key in doc:
            kwargs[key] = _bool(doc, key, source)
    if "max_evidence_age_seconds" in doc:
        age = doc["max_evidence_age_seconds"]
        if isinstance(age, bool) or not isinstance(age, int):
            raise ConfigError(f"{source}: key 'max_evidence_age_seconds' must be an integer")
        kwargs["max_evidence_age_seconds"] = age
    if "measurements" in doc:
        table = doc["measurements"]
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [measurements] must be a table of key = [hex, …]")
        measurements: dict[str, frozenset[str]] = {}
        for key in table:
            if key not in _ALL_MEASUREMENT_KEYS:
                raise ConfigError(f"{source}: unknown policy key 'measurements.{key}'")
            measurements[key] = frozenset(
                _str_list(table, key, f"{source} [measurements]", lower=True)
            )
        kwargs["measurements"] = measurements
    if "min_svn" in doc:
        table = doc["min_svn"]
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [min_svn] must be a table of key = integer")
        mins: dict[str, int] = {}
        for key, value in table.items():
            if key not in _ALL_SVN_KEYS:
                raise ConfigError(f"{source}: unknown policy key 'min_svn.{key}'")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{source}: key 'min_svn.{key}' must be an integer")
            mins[key] = value
        kwargs["min_svn"] = mins
    try:
        return AttestationPolicy(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_policy(path: str | Path) -> AttestationPolicy:
    """Read a policy TOML file (see :func:`parse_policy`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_policy(doc, source=str(path))


def evaluate(
    verdict: Verdict,
    policy: AttestationPolicy,
    *,
    expected_report_data: bytes | None,
    now: datetime | None = None,
) -> None:
    """Accept ``verdict`` under ``policy`` or raise :class:`PolicyRejected` naming the rule.

    GPU evidence is refused first (rule ``gpu_evidence``): it proves a GPU's
    firmware, not the CPU enclave that would hold the key. Then rules are
    checked in a fixed order: simulated, TEE type, debug, TCB status,
    advisories, measurements / signer pinning, ISV product, minimum SVNs,
    collateral expiry and evidence age at ``now`` (default: the current UTC
    time), and finally the report-data binding (constant-time comparison).
    """
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ConfigError("evaluate(now=...) must be timezone-aware")
    tee = verdict.tee
    if tee in GPU_TEE_TYPES:
        raise PolicyRejected(
            f"{tee} GPU evidence never qualifies an island for key release; it is only an "
            "add-on claim next to CPU TEE evidence (see evaluate_gpu_addon)",
            rule="gpu_evidence",
        )
    if verdict.simulated and not policy.allow_simulated:
        raise PolicyRejected(
            "simulated evidence (no hardware protection) is refused by this policy",
            rule="allow_simulated",
        )
    if tee not in policy.tee_types:
        raise PolicyRejected(
            f"TEE type {tee!r} is not allowed (allowed: {sorted(policy.tee_types)})",
            rule="tee_types",
        )
    if verdict.debug and not policy.allow_debug:
        raise PolicyRejected("the enclave/VM runs in debug mode", rule="allow_debug")
    if tee in _INTEL_TEES and verdict.tcb_status not in policy.tcb_statuses:
        raise PolicyRejected(
            f"TCB status {verdict.tcb_status!r} is not accepted "
            f"(accepted: {sorted(policy.tcb_statuses)})",
            rule="tcb_statuses",
        )
    if policy.allowed_advisories is not None:
        extra = sorted(set(verdict.advisories) - policy.allowed_advisories)
        if extra:
            raise PolicyRejected(f"advisories not accepted: {extra}", rule="allowed_advisories")
    _check_code_identity(verdict, policy)
    if tee == "sev-snp" and not any(key in policy.min_svn for key in _SNP_TCB_KEYS):
        raise PolicyRejected(
            "policy sets no minimum SEV-SNP TCB: add [min_svn] bootloader/tee/snp/microcode",
            rule="min_svn",
        )
    known_svns = KNOWN_SVNS[tee]
    for key, minimum in sorted(policy.min_svn.items()):
        if key not in known_svns:
            continue
        actual = verdict.svn.get(key)
        if actual is None:
            raise PolicyRejected(f"evidence carries no {key} to compare", rule=f"min_svn.{key}")
        if actual < minimum:
            raise PolicyRejected(
                f"{key} = {actual} is below the minimum {minimum}", rule=f"min_svn.{key}"
            )
    _check_fresh(verdict, policy, now, expired="collateral")
    if expected_report_data is None:
        if policy.require_report_data:
            raise PolicyRejected(
                "policy requires a report-data binding (key, nonce, manifest) "
                "but no expected report data was given",
                rule="require_report_data",
            )
        return
    if len(expected_report_data) != REPORT_DATA_SIZE:
        raise ConfigError(f"expected report data must be {REPORT_DATA_SIZE} bytes")
    if not constant_time_equal(verdict.report_data, expected_report_data):
        raise PolicyRejected(
            "report data does not match the expected binding (key, nonce, manifest)",
            rule="report_data",
        )


def _check_fresh(
    verdict: Verdict, policy: AttestationPolicy, now: datetime, *, expired: str
) -> None:
    """Collateral (``expired`` names it) still valid at ``now``; verdict within the max age."""
    if verdict.collateral_expires is not None and now > verdict.collateral_expires:
        raise PolicyRejected(
            f"{expired} expired at {verdict.collateral_expires.isoformat()}",
            rule="collateral_expires",
        )
    if policy.max_evidence_age_seconds is not None:
        age = (now - verdict.verified_at).total_seconds()
        if age > policy.max_evidence_age_seconds or age < -60:
            raise PolicyRejected(
                f"verdict is {age:.0f} s old (max {policy.max_evidence_age_seconds} s)",
                rule="max_evidence_age_seconds",
            )


def _check_code_identity(verdict: Verdict, policy: AttestationPolicy) -> None:
    tee = verdict.tee
    known = KNOWN_MEASUREMENTS[tee]
    pinned = False
    for key, allowed in sorted(policy.measurements.items()):
        if key not in known:
            continue
        pinned = True
        actual = verdict.measurements.get(key)
        if actual is None:
            raise PolicyRejected(f"evidence carries no {key}", rule=f"measurements.{key}")
        if actual not in allowed:
            raise PolicyRejected(
                f"{key} {actual} is not in the allowed list", rule=f"measurements.{key}"
            )
    if policy.allowed_signers and "mrsigner" in known:
        pinned = True
        signer = verdict.measurements.get("mrsigner")
        if signer is None or signer not in policy.allowed_signers:
            raise PolicyRejected(f"signer {signer} is not allowed", rule="allowed_signers")
    if policy.allowed_isv_prod_ids and "isv_prod_id" in KNOWN_SVNS[tee]:
        prod = verdict.svn.get("isv_prod_id")
        if prod is None or prod not in policy.allowed_isv_prod_ids:
            raise PolicyRejected(f"ISVPRODID {prod} is not allowed", rule="allowed_isv_prod_ids")
    if not pinned and not policy.allow_any_measurement:
        raise PolicyRejected(
            f"policy pins no measurement or signer for {tee} evidence "
            "(set [measurements] / allowed_signers, or allow_any_measurement = true)",
            rule="measurements",
        )


def evaluate_gpu_addon(
    verdict: Verdict,
    policy: AttestationPolicy,
    *,
    expected_nonce: bytes | None,
    now: datetime | None = None,
) -> None:
    """Accept verified GPU evidence as an *add-on* claim, or raise :class:`PolicyRejected`.

    This never replaces :func:`evaluate` on the island's CPU TEE evidence: a
    caller releases a key only if that passed too. Rules, in order:
    ``allow_gpu_addon`` must be true; the verdict must be GPU evidence; the
    chain must not have expired at ``now``; ``max_evidence_age_seconds``; and
    the signed SPDM nonce must equal ``expected_nonce`` (constant-time;
    required whenever ``require_report_data`` is on, the default).
    Measurements are not appraised here (that needs NVIDIA's signed RIMs).
    """
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ConfigError("evaluate_gpu_addon(now=...) must be timezone-aware")
    if not policy.allow_gpu_addon:
        raise PolicyRejected(
            "GPU evidence is refused by this policy (set allow_gpu_addon = true to accept it "
            "as an add-on claim)",
            rule="allow_gpu_addon",
        )
    if verdict.tee not in GPU_TEE_TYPES:
        raise PolicyRejected(
            f"{verdict.tee} evidence is not GPU evidence; use evaluate()", rule="gpu_evidence"
        )
    _check_fresh(verdict, policy, now, expired="GPU certificate chain")
    if expected_nonce is None:
        if policy.require_report_data:
            raise PolicyRejected(
                "policy requires a fresh-nonce binding but no expected GPU nonce was given",
                rule="require_report_data",
            )
        return
    if len(expected_nonce) != GPU_NONCE_SIZE:
        raise ConfigError(f"expected GPU nonce must be {GPU_NONCE_SIZE} bytes")
    if not constant_time_equal(verdict.report_data, expected_nonce):
        raise PolicyRejected("GPU evidence does not carry the expected nonce", rule="gpu_nonce")
