"""The output guard: every aggregate table passes through it before anyone reads it.

Why: a clean room protects rows with cryptography or an enclave, but the
*results* it releases — counts per tag, orders per channel — can still single
out a person when a cell is small, or when two releases are differenced. The
collaboration contract therefore sets output rules, and this module enforces
them in one place, the same way for the persona report, attribution, IVT,
LBS, lookalike and inside the island:

* **minimum cell size k** — each party sets one; the strictest (largest)
  wins. A row whose threshold count is below k is *suppressed*: its count,
  sum and derived columns become null and the row says why
  (``suppression_reason``) — rows never silently disappear;
* **complementary suppression** — in a group whose cells add up to a
  published total (e.g. the values of gender), one suppressed cell could be
  recovered by subtraction; while the suppressed cells of a group sum to
  less than k, the next smallest cell is suppressed too, with its reason;
* **rounding** of released counts to a multiple of ``rounding``;
* **differential privacy** (optional): discrete Laplace noise on counts and
  Laplace noise on sums through OpenDP (:mod:`atoll.privacy.dp`), paid from a
  per-collaboration budget ledger that refuses a release once spent. With DP
  on, the k threshold is applied to the *noisy* counts (thresholding exact
  counts would leak through which cells are shown).

Order of operations: spend ε → add noise → threshold (k) → complementary
suppression → round. Analytics compute shares and indices *from the guarded
counts*, so no derived number reveals an exact count the guard hid.

Contract (TOML ``[privacy]`` table, or the same as a dict)::

    [privacy]
    collaboration = "brand-x-provider"
    min_cell_size = 50          # optional floor for everyone
    rounding = 1

    [privacy.parties.brand]
    min_cell_size = 50
    [privacy.parties.provider]
    min_cell_size = 100         # strictest wins: k = 100
    rounding = 10

    [privacy.dp]                # optional
    epsilon_per_report = 0.5
    epsilon_total = 4.0
    ledger = "privacy-ledger.json"   # relative to the contract file

API in three lines::

    guard = Guard.from_contract("contract.toml")
    out = guard.apply(table, counts=["users"], group="dimension", what="persona")
    out.table, out.notes, out.summary()
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError, SchemaError
from atoll.privacy.dp import PrivacyLedger, laplace_counts, laplace_sums

__all__ = [
    "DEFAULT_MIN_CELL_SIZE",
    "REASON_COLUMN",
    "SUPPRESSED_COLUMN",
    "DpPolicy",
    "Guard",
    "GuardedTable",
    "PartyRule",
    "PrivacyPolicy",
    "SuppressionNote",
]

#: k when nobody sets one (Google Ads Data Hub's 50-user floor; see docs/methods.md).
DEFAULT_MIN_CELL_SIZE = 50
#: Boolean column the guard adds: whether the row's numbers are withheld.
SUPPRESSED_COLUMN = "suppressed"
#: Text column the guard adds: why the row is suppressed (null when it is not).
REASON_COLUMN = "suppression_reason"

_PRIVACY_KEYS = {"collaboration", "min_cell_size", "rounding", "parties", "dp"}
_PARTY_KEYS = {"min_cell_size", "rounding", "dp"}
_DP_KEYS = {"epsilon_per_report", "epsilon_total", "ledger"}


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _positive_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    return number


def _check_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


@dataclass(frozen=True, slots=True)
class PartyRule:
    """What one party of the collaboration demands of every output."""

    party: str
    min_cell_size: int = DEFAULT_MIN_CELL_SIZE
    rounding: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.party, str) or not self.party:
            raise ConfigError("a party rule needs a party name")
        _positive_int(self.min_cell_size, f"party {self.party!r} min_cell_size")
        _positive_int(self.rounding, f"party {self.party!r} rounding")


@dataclass(frozen=True, slots=True)
class DpPolicy:
    """Differential-privacy settings: ε per report, total ε, where the ledger lives."""

    epsilon_per_report: float
    epsilon_total: float
    ledger: Path | None = None

    def __post_init__(self) -> None:
        _positive_float(self.epsilon_per_report, "dp.epsilon_per_report")
        _positive_float(self.epsilon_total, "dp.epsilon_total")
        if self.epsilon_per_report > self.epsilon_total:
            raise ConfigError(
                f"dp.epsilon_per_report ({self.epsilon_per_report}) exceeds "
                f"dp.epsilon_total ({self.epsilon_total})"
            )


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    """The effective output rules of a collaboration (the strictest of all parties').

    Build it with :meth:`from_contract` (or :meth:`strictest` from rules). The
    fields are the effective values; ``k_set_by`` names the parties whose
    rule gave ``min_cell_size`` (for the reason text users see).
    """

    min_cell_size: int = DEFAULT_MIN_CELL_SIZE
    rounding: int = 1
    dp: DpPolicy | None = None
    collaboration: str = "default"
    k_set_by: tuple[str, ...] = ("default",)
    parties: tuple[PartyRule, ...] = ()

    def __post_init__(self) -> None:
        _positive_int(self.min_cell_size, "min_cell_size")
        _positive_int(self.rounding, "rounding")

    @classmethod
    def strictest(
        cls,
        rules: Sequence[PartyRule],
        *,
        floors: Mapping[str, int] | None = None,
        rounding: int = 1,
        dp: DpPolicy | None = None,
        collaboration: str = "default",
    ) -> PrivacyPolicy:
        """Combine party rules: the largest k and the coarsest rounding win.

        ``floors`` are extra minimums by who set them (``{"contract": 50,
        "caller": 80}``); they take part in "the strictest wins" like parties.
        """
        candidates: list[tuple[int, str]] = [(r.min_cell_size, r.party) for r in rules]
        for who, value in (floors or {}).items():
            candidates.append((_positive_int(value, f"min_cell_size of {who}"), who))
        if not candidates:
            candidates.append((DEFAULT_MIN_CELL_SIZE, "default"))
        k = max(c[0] for c in candidates)
        by = tuple(name for value, name in candidates if value == k)
        rnd = max([_positive_int(rounding, "rounding"), *(r.rounding for r in rules)])
        return cls(
            min_cell_size=k,
            rounding=rnd,
            dp=dp,
            collaboration=collaboration,
            k_set_by=by,
            parties=tuple(rules),
        )

    @classmethod
    def from_contract(
        cls,
        contract: Mapping[str, Any] | str | os.PathLike[str],
        *,
        min_cell_size: int | None = None,
    ) -> PrivacyPolicy:
        """Read the ``[privacy]`` table of a contract (a TOML file path or a dict).

        ``min_cell_size`` adds the caller's own floor (e.g. the CLI's ``--k``):
        it wins only if it is stricter. Unknown keys are errors, so a typo
        cannot silently weaken a rule. A relative DP ledger path is resolved
        against the contract file's folder.
        """
        base = Path(".")
        if isinstance(contract, str | os.PathLike):
            path = Path(contract)
            try:
                data: Mapping[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise ConfigError(f"contract {path}: file not found") from exc
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"contract {path}: cannot read TOML ({exc})") from exc
            base = path.parent
            where = str(path)
        elif isinstance(contract, Mapping):
            data = contract
            where = "contract"
        else:
            raise ConfigError(f"contract must be a mapping or a TOML path, got {contract!r}")
        # A whole contract has a [privacy] table; a bare privacy table is accepted too.
        if "privacy" in data:
            privacy = data["privacy"]
        elif set(data) <= _PRIVACY_KEYS:
            privacy = data
        else:
            privacy = {}
        if not isinstance(privacy, Mapping):
            raise ConfigError(f"{where}: [privacy] must be a table")
        _check_keys(privacy, _PRIVACY_KEYS, f"{where} [privacy]")
        collaboration = privacy.get("collaboration", "default")
        if not isinstance(collaboration, str) or not collaboration:
            raise ConfigError(f"{where}: privacy.collaboration must be a non-empty string")
        rules: list[PartyRule] = []
        dp_parts: list[tuple[str, Mapping[str, Any]]] = []
        parties = privacy.get("parties", {})
        if not isinstance(parties, Mapping):
            raise ConfigError(f"{where}: [privacy.parties] must be a table of parties")
        for name, rule in parties.items():
            if not isinstance(rule, Mapping):
                raise ConfigError(f"{where}: [privacy.parties.{name}] must be a table")
            _check_keys(rule, _PARTY_KEYS, f"{where} [privacy.parties.{name}]")
            rules.append(
                PartyRule(
                    str(name),
                    _positive_int(
                        rule.get("min_cell_size", DEFAULT_MIN_CELL_SIZE),
                        f"{where}: privacy.parties.{name}.min_cell_size",
                    ),
                    _positive_int(rule.get("rounding", 1), f"privacy.parties.{name}.rounding"),
                )
            )
            if "dp" in rule:
                dp_parts.append((f"privacy.parties.{name}.dp", rule["dp"]))
        if "dp" in privacy:
            dp_parts.append(("privacy.dp", privacy["dp"]))
        dp = _strictest_dp(dp_parts, where, base)
        floors: dict[str, int] = {}
        if privacy.get("min_cell_size") is not None:
            floors["contract"] = _positive_int(
                privacy["min_cell_size"], f"{where}: privacy.min_cell_size"
            )
        if min_cell_size is not None:
            floors["caller"] = _positive_int(min_cell_size, "min_cell_size")
        return cls.strictest(
            rules,
            floors=floors,
            rounding=_positive_int(privacy.get("rounding", 1), f"{where}: privacy.rounding"),
            dp=dp,
            collaboration=collaboration,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for ``metrics.json`` and reports)."""
        return {
            "collaboration": self.collaboration,
            "min_cell_size": self.min_cell_size,
            "min_cell_size_set_by": list(self.k_set_by),
            "rounding": self.rounding,
            "parties": {
                r.party: {"min_cell_size": r.min_cell_size, "rounding": r.rounding}
                for r in self.parties
            },
            "dp": None
            if self.dp is None
            else {
                "epsilon_per_report": self.dp.epsilon_per_report,
                "epsilon_total": self.dp.epsilon_total,
                "ledger": None if self.dp.ledger is None else str(self.dp.ledger),
            },
        }


def _strictest_dp(parts: Sequence[tuple[str, object]], where: str, base: Path) -> DpPolicy | None:
    """Combine DP settings: the smallest ε per report and total win; one ledger."""
    per_report: list[float] = []
    totals: list[float] = []
    ledgers: list[Path] = []
    for what, raw in parts:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: [{what}] must be a table")
        _check_keys(raw, _DP_KEYS, f"{where} [{what}]")
        if "epsilon_per_report" not in raw or "epsilon_total" not in raw:
            raise ConfigError(f"{where}: [{what}] needs epsilon_per_report and epsilon_total")
        per_report.append(_positive_float(raw["epsilon_per_report"], f"{what}.epsilon_per_report"))
        totals.append(_positive_float(raw["epsilon_total"], f"{what}.epsilon_total"))
        if "ledger" in raw:
            if not isinstance(raw["ledger"], str) or not raw["ledger"]:
                raise ConfigError(f"{where}: {what}.ledger must be a path")
            ledger = Path(raw["ledger"])
            ledgers.append(ledger if ledger.is_absolute() else base / ledger)
    if not per_report:
        return None
    if len(set(ledgers)) > 1:
        raise ConfigError(f"{where}: parties name different DP ledgers {sorted(map(str, ledgers))}")
    return DpPolicy(min(per_report), min(totals), ledgers[0] if ledgers else None)


@dataclass(frozen=True, slots=True)
class SuppressionNote:
    """One withheld row: its position, its key (e.g. ``gender=female``) and why."""

    row: int
    key: str
    reason: str
    kind: str  # "primary" (below k) or "complementary"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"row": self.row, "key": self.key, "reason": self.reason, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class GuardedTable:
    """The result of :meth:`Guard.apply`: the table as released, and what was done to it.

    ``table`` has every input row, the guarded count/sum columns, and two
    added columns, :data:`SUPPRESSED_COLUMN` and :data:`REASON_COLUMN`.
    """

    table: pa.Table
    notes: tuple[SuppressionNote, ...]
    policy: PrivacyPolicy
    epsilon_spent: float = 0.0
    epsilon_remaining: float | None = None
    noise: Mapping[str, float] = field(default_factory=dict)

    @property
    def suppressed(self) -> int:
        """Number of withheld rows."""
        return len(self.notes)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for reports (policy, counts of withheld rows, ε)."""
        primary = sum(1 for n in self.notes if n.kind == "primary")
        return {
            "policy": self.policy.to_dict(),
            "rows": self.table.num_rows,
            "suppressed_rows": self.suppressed,
            "suppressed_below_k": primary,
            "suppressed_complementary": self.suppressed - primary,
            "dp": None
            if self.policy.dp is None
            else {
                "epsilon_spent": self.epsilon_spent,
                "epsilon_remaining": self.epsilon_remaining,
                "noise_scale": dict(self.noise),
                "mechanism": "OpenDP discrete Laplace (counts), Laplace (sums)",
            },
            "notes": [n.to_dict() for n in self.notes],
        }


def _round_to(values: npt.NDArray[np.int64], step: int) -> npt.NDArray[np.int64]:
    """Round to the nearest multiple of ``step`` (halves up)."""
    if step == 1:
        return values
    rounded: npt.NDArray[np.int64] = ((values + step // 2) // step) * step
    return rounded


class Guard:
    """Applies a :class:`PrivacyPolicy` to aggregate tables (see the module docs).

    ``ledger`` overrides where the DP budget is kept (default: the policy's
    ledger path, else ``privacy-ledger-<collaboration>.json`` in the working
    directory).
    """

    def __init__(
        self, policy: PrivacyPolicy | None = None, *, ledger: PrivacyLedger | None = None
    ) -> None:
        self.policy = policy if policy is not None else PrivacyPolicy()
        self._ledger = ledger

    @classmethod
    def from_contract(
        cls,
        contract: Mapping[str, Any] | str | os.PathLike[str],
        *,
        min_cell_size: int | None = None,
    ) -> Guard:
        """A guard for a contract (TOML path or dict); see :meth:`PrivacyPolicy.from_contract`."""
        return cls(PrivacyPolicy.from_contract(contract, min_cell_size=min_cell_size))

    @property
    def k(self) -> int:
        """The effective minimum cell size."""
        return self.policy.min_cell_size

    @property
    def ledger(self) -> PrivacyLedger | None:
        """The budget ledger (opened on first use), or ``None`` without DP."""
        dp = self.policy.dp
        if dp is None:
            return None
        if self._ledger is None:
            path = dp.ledger or Path(f"privacy-ledger-{self.policy.collaboration}.json")
            self._ledger = PrivacyLedger(
                path, collaboration=self.policy.collaboration, epsilon_total=dp.epsilon_total
            )
        return self._ledger

    def reason_below_k(self) -> str:
        """The text shown for a cell withheld because it is below k."""
        who = ", ".join(self.policy.k_set_by)
        return f"suppressed: fewer than {self.k} (k set by {who})"

    def apply(
        self,
        table: pa.Table,
        *,
        counts: Sequence[str],
        threshold: str | None = None,
        sums: Mapping[str, float] | None = None,
        also_null: Sequence[str] = (),
        group: str | None = None,
        key: Sequence[str] = (),
        sensitivity: int = 1,
        what: str = "report",
    ) -> GuardedTable:
        """Guard an aggregate table; returns every row, with withheld ones marked.

        * ``counts``: integer columns released (noised, thresholded, rounded);
        * ``threshold``: the count compared with k (default ``counts[0]``);
        * ``sums``: float columns released, each with its per-person L1 bound
          (the caller clips contributions upstream); noised under DP, nulled
          when suppressed;
        * ``also_null``: other columns derived from the row's data, nulled
          when the row is suppressed;
        * ``group``: a column naming groups whose cells add up to a published
          total (null = not part of such a group) — enables complementary
          suppression;
        * ``key``: columns that name a row in the notes (e.g. dimension, value);
        * ``sensitivity``: L1 bound of one person's effect on *all* count
          columns together (how many cells one person can be counted in);
        * ``what``: the release's name in the DP ledger.

        Raises :class:`~atoll.errors.SchemaError` for missing or non-numeric
        columns and :class:`~atoll.privacy.dp.PrivacyBudgetError` (nothing is
        released) when the DP budget cannot pay.
        """
        sums = dict(sums or {})
        if not counts:
            raise ConfigError("guard.apply needs at least one count column")
        threshold = threshold or counts[0]
        names = set(table.column_names)
        for col in [*counts, *sums, *also_null, *key, threshold, *([group] if group else [])]:
            if col not in names:
                raise SchemaError(
                    f"guard: no column {col!r} (columns: {', '.join(table.column_names)})",
                    column=col,
                )
        for col in (*counts, threshold):
            if not pa.types.is_integer(table.schema.field(col).type):
                raise SchemaError(f"guard: count column {col!r} must be integer", column=col)
        for col, bound in sums.items():
            if not (
                pa.types.is_floating(table.schema.field(col).type)
                or pa.types.is_integer(table.schema.field(col).type)
                or pa.types.is_decimal(table.schema.field(col).type)
            ):
                raise SchemaError(f"guard: sum column {col!r} must be numeric", column=col)
            _positive_float(bound, f"sum bound of {col!r}")
        for col in {*counts, threshold}:
            if table[col].null_count:
                raise SchemaError(f"guard: count column {col!r} has missing values", column=col)
        _positive_int(sensitivity, "sensitivity")

        n = table.num_rows
        released: dict[str, npt.NDArray[Any]] = {
            c: np.asarray(table[c].to_numpy(), dtype=np.int64) for c in {*counts, threshold}
        }
        released_sums: dict[str, npt.NDArray[np.float64]] = {
            c: np.asarray(pc.cast(table[c], pa.float64()).to_numpy(zero_copy_only=False))
            for c in sums
        }
        spent = 0.0
        remaining: float | None = None
        noise: dict[str, float] = {}
        dp = self.policy.dp
        if dp is not None and n:
            ledger = self.ledger
            assert ledger is not None
            ledger.spend(dp.epsilon_per_report, what)
            spent = dp.epsilon_per_report
            remaining = ledger.remaining
            # Split ε evenly between the count block and each sum column.
            parts = 1 + len(sums)
            eps_each = dp.epsilon_per_report / parts
            count_cols = list(dict.fromkeys([*counts, threshold]))
            stacked = np.concatenate([released[c] for c in count_cols])
            noisy = laplace_counts(stacked, sensitivity=sensitivity, epsilon=eps_each)
            for i, c in enumerate(count_cols):
                released[c] = noisy[i * n : (i + 1) * n]
                noise[c] = sensitivity / eps_each
            for c, bound in sums.items():
                nan = np.isnan(released_sums[c])
                filled = np.where(nan, 0.0, released_sums[c])
                noisy_sum = laplace_sums(filled, sensitivity=bound, epsilon=eps_each)
                released_sums[c] = np.where(nan, np.nan, noisy_sum)
                noise[c] = bound / eps_each
        elif dp is not None:
            remaining = self.ledger.remaining if self.ledger is not None else None

        # Primary suppression: below k.
        k = self.k
        below = released[threshold] < k
        reasons: list[str | None] = [None] * n
        notes: list[SuppressionNote] = []
        key_values = [table[c].to_pylist() for c in key]

        def key_of(i: int) -> str:
            return ", ".join(f"{c}={vals[i]}" for c, vals in zip(key, key_values, strict=True))

        primary_reason = self.reason_below_k()
        for row in np.flatnonzero(below).tolist():
            reasons[row] = primary_reason
            notes.append(SuppressionNote(row, key_of(row), primary_reason, "primary"))

        # Complementary suppression inside groups with a published total.
        suppressed = below.copy()
        if group is not None:
            groups = table[group].to_pylist()
            members: dict[object, list[int]] = {}
            for i, g in enumerate(groups):
                if g is not None:
                    members.setdefault(g, []).append(i)
            values = released[threshold]
            for g, rows in members.items():
                hidden = [i for i in rows if suppressed[i]]
                if not hidden:
                    continue
                shown = sorted((i for i in rows if not suppressed[i]), key=lambda i: values[i])
                while shown and int(values[hidden].sum()) < k:
                    extra = shown.pop(0)
                    suppressed[extra] = True
                    hidden.append(extra)
                    text = (
                        f"suppressed: complementary (hides the withheld cells of {g} "
                        f"from subtraction; k={k})"
                    )
                    reasons[extra] = text
                    notes.append(SuppressionNote(extra, key_of(extra), text, "complementary"))

        # Rounding, then build the released table.
        out = table
        mask = pa.array(suppressed)
        for c in dict.fromkeys([*counts, threshold]):
            vals = _round_to(released[c], self.policy.rounding)
            arr = pa.array(vals, type=pa.int64(), mask=suppressed)
            out = out.set_column(out.schema.get_field_index(c), c, arr)
        for c in sums:
            vals_f = released_sums[c]
            arr_f = pa.array(vals_f, type=pa.float64(), mask=suppressed | np.isnan(vals_f))
            out = out.set_column(out.schema.get_field_index(c), c, arr_f)
        for c in also_null:
            if c in counts or c in sums:
                continue
            col = out[c]
            nulls = pa.nulls(n, type=col.type)
            out = out.set_column(out.schema.get_field_index(c), c, pc.if_else(mask, nulls, col))
        out = out.append_column(SUPPRESSED_COLUMN, mask)
        out = out.append_column(REASON_COLUMN, pa.array(reasons, type=pa.string()))
        notes.sort(key=lambda note: note.row)
        return GuardedTable(
            table=out,
            notes=tuple(notes),
            policy=self.policy,
            epsilon_spent=spent,
            epsilon_remaining=remaining,
            noise=noise,
        )
