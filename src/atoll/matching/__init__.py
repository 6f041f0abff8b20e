"""Matching orchestration: normalize, bucket, run a PSI engine per bucket, merge.

Why: every matching job -- ECDH PSI, labeled PSI (tag augmentation),
intersection-sum, multi-ID waterfalls -- shares the same outer work
(normalize and de-duplicate the ID column, bucket, run per bucket in
parallel, map results back to rows, guard and audit the output), whatever
engine computes the per-bucket intersection. This package holds that work once.
"""

from atoll.matching.engine import BucketOutcome, BuiltinEngine, PsiEngine, get_engine
from atoll.matching.local import run_local
from atoll.matching.psi_job import PsiOptions, PsiPartyJob, parse_id_columns, psi_party
from atoll.matching.report import (
    MatchOutcome,
    OutputGuardError,
    StageReport,
    min_cardinality_guard,
    write_outcome,
)
from atoll.matching.session import PartyJob, PartySession, Traffic, check_params
from atoll.matching.sum_job import SumJobOutcome, SumOptions, SumPartyJob, sum_party

__all__ = [
    "BucketOutcome",
    "BuiltinEngine",
    "MatchOutcome",
    "OutputGuardError",
    "PartyJob",
    "PartySession",
    "PsiEngine",
    "PsiOptions",
    "PsiPartyJob",
    "StageReport",
    "SumJobOutcome",
    "SumOptions",
    "SumPartyJob",
    "Traffic",
    "check_params",
    "get_engine",
    "min_cardinality_guard",
    "parse_id_columns",
    "psi_party",
    "run_local",
    "sum_party",
    "write_outcome",
]
