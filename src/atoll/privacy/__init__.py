"""Output privacy: the guard every report passes through, and differential privacy.

Why: whatever protects the rows (PSI, the island), the *released aggregates*
decide what a reader can learn about one person. The collaboration contract
sets the rules — a minimum cell size per party (the strictest wins),
suppression with the reason shown, rounding, optional DP noise paid from a
tracked budget — and :class:`Guard` enforces them, identically for every
report (persona, attribution, IVT, LBS, lookalike) and inside the island::

    from atoll.privacy import Guard

    guard = Guard.from_contract("contract.toml", min_cell_size=50)
    released = guard.apply(counts, counts=["users"], group="dimension", key=["value"])
    released.table          # every row; withheld ones null with `suppression_reason`
    released.summary()      # for metrics.json

See :mod:`atoll.privacy.guard` for the contract format and order of
operations, :mod:`atoll.privacy.dp` for the mechanisms (OpenDP) and the ledger.
"""

from atoll.privacy.dp import (
    LEDGER_VERSION,
    LedgerEntry,
    PrivacyBudgetError,
    PrivacyLedger,
    laplace_counts,
    laplace_sums,
)
from atoll.privacy.guard import (
    DEFAULT_MIN_CELL_SIZE,
    REASON_COLUMN,
    SUPPRESSED_COLUMN,
    DpPolicy,
    Guard,
    GuardedTable,
    PartyRule,
    PrivacyPolicy,
    SuppressionNote,
)

__all__ = [
    "DEFAULT_MIN_CELL_SIZE",
    "LEDGER_VERSION",
    "REASON_COLUMN",
    "SUPPRESSED_COLUMN",
    "DpPolicy",
    "Guard",
    "GuardedTable",
    "LedgerEntry",
    "PartyRule",
    "PrivacyBudgetError",
    "PrivacyLedger",
    "PrivacyPolicy",
    "SuppressionNote",
    "laplace_counts",
    "laplace_sums",
]
