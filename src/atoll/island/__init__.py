"""The secure island: attestation verdicts, policy, evidence verifiers, key release, jobs.

Why a package of its own (rank 6 in the layering): the island is where trust
is decided. Before any party releases a dataset key it verifies hardware
evidence (:mod:`atoll.island.evidence`) into a typed
:class:`~atoll.island.verdict.Verdict` and checks it against its own
:class:`~atoll.island.policy.AttestationPolicy`; the rest of the island (the
simulated backend, key release, encrypted upload, in-island jobs, receipts)
builds on those two types. Nothing here speaks HTTP -- services and CLIs at
the edges drive it.
"""

from __future__ import annotations

from atoll.island.policy import AttestationPolicy, evaluate, load_policy, parse_policy
from atoll.island.verdict import AttestationError, PolicyRejected, Verdict

__all__ = [
    "AttestationError",
    "AttestationPolicy",
    "PolicyRejected",
    "Verdict",
    "evaluate",
    "load_policy",
    "parse_policy",
]
