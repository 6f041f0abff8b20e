"""Differential-privacy noise on released counts and sums, and the privacy budget ledger.

Why: a minimum cell size stops the obvious re-identification of a small
crowd, but repeated or overlapping reports can still be differenced to learn
about one person. Differential privacy (DP) bounds what any number of reports
reveal, *if* every release spends from one finite budget. This module holds
the two pieces the :class:`~atoll.privacy.guard.Guard` needs:

* the mechanisms, taken from OpenDP (a maintained, audited library; we never
  sample noise ourselves): the discrete Laplace (geometric) mechanism for
  integer counts and the Laplace mechanism for float sums, both calibrated by
  OpenDP from the L1 sensitivity and the ε the caller spends, and checked
  with OpenDP's privacy map before use;
* :class:`PrivacyLedger`, the per-collaboration budget: a versioned JSON file
  that records every ε spent, refuses a spend that would exceed the total
  (:class:`PrivacyBudgetError`), and is updated atomically under an
  exclusive lock so two concurrent jobs cannot both spend the last ε.

Composition is basic (sequential) composition: the ε of all releases add up.
Sensitivity is the caller's claim about how much one person can change the
released vector in L1 — the guard's docs say how the analytics derive it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from atoll.errors import ConfigError, DataError

__all__ = [
    "LEDGER_VERSION",
    "LedgerEntry",
    "PrivacyBudgetError",
    "PrivacyLedger",
    "laplace_counts",
    "laplace_sums",
]

#: Version of the ledger file format (the first key of the JSON object).
LEDGER_VERSION = 1
# Float slack when comparing ε sums (a budget of 1.0 spent as 10 × 0.1).
_EPS_SLACK = 1e-9


class PrivacyBudgetError(ConfigError):
    """The collaboration's privacy budget cannot pay for a release: it is refused."""


def _opendp() -> Any:
    """OpenDP's prelude with its contrib features enabled (as its docs require)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _check_epsilon(epsilon: float) -> float:
    if not isinstance(epsilon, int | float) or isinstance(epsilon, bool):
        raise ConfigError(f"epsilon must be a number, got {epsilon!r}")
    value = float(epsilon)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"epsilon must be positive and finite, got {epsilon!r}")
    return value


def _check_sensitivity(sensitivity: float) -> float:
    if not isinstance(sensitivity, int | float) or isinstance(sensitivity, bool):
        raise ConfigError(f"sensitivity must be a number, got {sensitivity!r}")
    value = float(sensitivity)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"sensitivity must be positive and finite, got {sensitivity!r}")
    return value


def laplace_counts(
    counts: Sequence[int] | npt.NDArray[np.integer[Any]],
    *,
    sensitivity: int,
    epsilon: float,
) -> npt.NDArray[np.int64]:
    """Release integer ``counts`` with discrete Laplace noise (OpenDP), ε-DP.

    ``sensitivity`` is the L1 distance one person can move the whole vector
    (an integer). The noise scale is ``sensitivity / epsilon``; OpenDP's
    privacy map is checked to cost at most ``epsilon``. Negative noisy counts
    are clamped to 0 (post-processing, free of privacy cost).
    """
    eps = _check_epsilon(epsilon)
    if not isinstance(sensitivity, int | np.integer) or isinstance(sensitivity, bool):
        raise ConfigError(f"count sensitivity must be an integer, got {sensitivity!r}")
    sens = int(sensitivity)
    if sens < 1:
        raise ConfigError(f"count sensitivity must be >= 1, got {sensitivity!r}")
    values = np.asarray(counts, dtype=np.int64)
    if values.ndim != 1:
        raise ConfigError("counts must be a one-dimensional vector")
    if values.size == 0:
        return values.copy()
    dp = _opendp()
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=sens / eps
    )
    cost = float(measurement.map(sens))
    if cost > eps * (1 + _EPS_SLACK):
        raise ConfigError(f"OpenDP privacy map says {cost} > epsilon {eps}")
    noisy = np.asarray(measurement([int(v) for v in values]), dtype=np.int64)
    result: npt.NDArray[np.int64] = np.maximum(noisy, 0)
    return result


def laplace_sums(
    sums: Sequence[float] | npt.NDArray[np.floating[Any]],
    *,
    sensitivity: float,
    epsilon: float,
) -> npt.NDArray[np.float64]:
    """Release float ``sums`` with Laplace noise (OpenDP), ε-DP.

    ``sensitivity`` bounds the L1 change one person can make to the whole
    vector: the caller must clip each person's contribution (e.g. order
    amounts clipped to a maximum) before summing. Values must be finite.
    """
    eps = _check_epsilon(epsilon)
    sens = _check_sensitivity(sensitivity)
    values = np.asarray(sums, dtype=np.float64)
    if values.ndim != 1:
        raise ConfigError("sums must be a one-dimensional vector")
    if not np.all(np.isfinite(values)):
        raise ConfigError("sums must be finite to be noised")
    if values.size == 0:
        return values.copy()
    dp = _opendp()
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.l1_distance(T=float),
        scale=sens / eps,
    )
    cost = float(measurement.map(sens))
    if cost > eps * (1 + 1e-6):
        raise ConfigError(f"OpenDP privacy map says {cost} > epsilon {eps}")
    noisy: npt.NDArray[np.float64] = np.asarray(measurement(values.tolist()), dtype=np.float64)
    return noisy


# --------------------------------------------------------------------------- ledger


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One release paid from the budget: when, what, and how much ε."""

    at: str
    what: str
    epsilon: float

    def to_json(self) -> dict[str, Any]:
        """The JSON form of this entry."""
        return {"at": self.at, "what": self.what, "epsilon": self.epsilon}


class PrivacyLedger:
    """The privacy budget of one collaboration, persisted as a JSON file.

    ``PrivacyLedger(path, collaboration=..., epsilon_total=...)`` opens the
    ledger (creating it on first use). The total is fixed when the file is
    created; reopening it with a different total or collaboration is a
    :class:`~atoll.errors.ConfigError` (a contract cannot grow its budget by
    being re-read). :meth:`spend` records a release or raises
    :class:`PrivacyBudgetError` and records nothing.

    File format (``atoll_privacy_ledger_version`` first)::

        {"atoll_privacy_ledger_version": 1, "collaboration": "brand-x-provider",
         "epsilon_total": 3.0,
         "entries": [{"at": "2026-06-30T08:00:00Z", "what": "persona", "epsilon": 1.0}]}
    """

    def __init__(self, path: str | os.PathLike[str], *, collaboration: str, epsilon_total: float):
        if not isinstance(collaboration, str) or not collaboration.strip():
            raise ConfigError("a privacy ledger needs a non-empty collaboration name")
        self.path = Path(path)
        self.collaboration = collaboration
        self.epsilon_total = _check_epsilon(epsilon_total)
        with self._locked():
            if self.path.exists():
                self._load()
            else:
                self._write([])

    # ------------------------------------------------------------------ file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<ledger>.lock`` (POSIX ``flock``)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _load(self) -> list[LedgerEntry]:
        where = str(self.path)
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{where}: unreadable privacy ledger ({exc})") from exc
        if not isinstance(obj, dict) or obj.get("atoll_privacy_ledger_version") != LEDGER_VERSION:
            raise DataError(
                f"{where}: not a version-{LEDGER_VERSION} privacy ledger "
                "(missing or unknown 'atoll_privacy_ledger_version')"
            )
        if obj.get("collaboration") != self.collaboration:
            raise ConfigError(
                f"{where}: ledger belongs to collaboration {obj.get('collaboration')!r}, "
                f"not {self.collaboration!r}"
            )
        total = obj.get("epsilon_total")
        if not isinstance(total, int | float) or abs(float(total) - self.epsilon_total) > 1e-12:
            raise ConfigError(
                f"{where}: ledger total epsilon is {total!r} but the contract says "
                f"{self.epsilon_total}; a budget is fixed when the ledger is created"
            )
        raw = obj.get("entries")
        if not isinstance(raw, list):
            raise DataError(f"{where}: 'entries' must be a list")
        entries = []
        for i, item in enumerate(raw):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("epsilon"), int | float)
                or not isinstance(item.get("what"), str)
                or not isinstance(item.get("at"), str)
                or not float(item["epsilon"]) > 0
            ):
                raise DataError(f"{where}: entries[{i}] is malformed")
            entries.append(LedgerEntry(item["at"], item["what"], float(item["epsilon"])))
        return entries

    def _write(self, entries: list[LedgerEntry]) -> None:
        obj = {
            "atoll_privacy_ledger_version": LEDGER_VERSION,
            "collaboration": self.collaboration,
            "epsilon_total": self.epsilon_total,
            "entries": [e.to_json() for e in entries],
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{self.path}: cannot write privacy ledger ({exc})") from exc

    # ------------------------------------------------------------------ budget

    @property
    def entries(self) -> list[LedgerEntry]:
        """Every release paid so far, oldest first."""
        with self._locked():
            return self._load()

    @property
    def spent(self) -> float:
        """ε spent so far (basic composition: the sum of all entries)."""
        return math.fsum(e.epsilon for e in self.entries)

    @property
    def remaining(self) -> float:
        """ε still available."""
        return max(0.0, self.epsilon_total - self.spent)

    def spend(self, epsilon: float, what: str, *, now: datetime | None = None) -> LedgerEntry:
        """Pay ``epsilon`` for release ``what``, or raise :class:`PrivacyBudgetError`.

        Check and record happen under one lock, so concurrent spenders cannot
        overdraw. Nothing is recorded when the spend is refused.
        """
        eps = _check_epsilon(epsilon)
        if not isinstance(what, str) or not what:
            raise ConfigError("a release needs a non-empty description")
        moment = now if now is not None else datetime.now(UTC)
        if moment.tzinfo is None:
            raise ConfigError("now must be timezone-aware")
        with self._locked():
            entries = self._load()
            spent = math.fsum(e.epsilon for e in entries)
            if spent + eps > self.epsilon_total * (1 + _EPS_SLACK) + _EPS_SLACK:
                raise PrivacyBudgetError(
                    f"privacy budget of collaboration {self.collaboration!r} refuses {what!r}: "
                    f"it needs epsilon {eps:g} but only {max(0.0, self.epsilon_total - spent):g} "
                    f"of {self.epsilon_total:g} remains ({len(entries)} releases so far; "
                    f"ledger {self.path})"
                )
            at = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
            entry = LedgerEntry(at, what, eps)
            entries.append(entry)
            self._write(entries)
        return entry
