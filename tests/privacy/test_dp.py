"""OpenDP mechanisms and the persisted privacy-budget ledger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atoll.errors import ConfigError, DataError
from atoll.privacy import PrivacyBudgetError, PrivacyLedger, laplace_counts, laplace_sums


def test_discrete_laplace_counts_have_the_calibrated_spread() -> None:
    # Discrete Laplace with scale b: variance = 2 e^{-1/b} / (1 - e^{-1/b})^2.
    b = 4.0  # sensitivity 2, epsilon 0.5
    zeros = np.full(20_000, 1_000, dtype=np.int64)
    noisy = laplace_counts(zeros, sensitivity=2, epsilon=0.5)
    assert noisy.dtype == np.int64
    q = np.exp(-1 / b)
    expected_var = 2 * q / (1 - q) ** 2
    assert abs(float(noisy.mean()) - 1_000) < 0.5
    assert abs(float(noisy.var()) / expected_var - 1) < 0.1  # 20k draws: ~1 % s.e.


def test_counts_are_clamped_at_zero_and_sums_are_noised() -> None:
    noisy = laplace_counts([0] * 2_000, sensitivity=1, epsilon=0.1)
    assert noisy.min() >= 0
    sums = laplace_sums([100.0] * 5_000, sensitivity=10.0, epsilon=1.0)
    assert abs(float(sums.mean()) - 100.0) < 1.0
    assert abs(float(sums.std()) / (10.0 * np.sqrt(2)) - 1) < 0.1  # Laplace sd = b√2


def test_mechanism_parameters_are_validated() -> None:
    with pytest.raises(ConfigError):
        laplace_counts([1], sensitivity=0, epsilon=1.0)
    with pytest.raises(ConfigError):
        laplace_counts([1], sensitivity=1, epsilon=0.0)
    with pytest.raises(ConfigError):
        laplace_sums([float("nan")], sensitivity=1.0, epsilon=1.0)
    assert laplace_counts([], sensitivity=1, epsilon=1.0).size == 0


def test_ledger_persists_refuses_and_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(path, collaboration="c", epsilon_total=1.0)
    for i in range(10):
        ledger.spend(0.1, f"release {i}")  # 10 × 0.1 = 1.0 exactly, with float slack
    assert ledger.remaining == pytest.approx(0.0)
    with pytest.raises(PrivacyBudgetError, match="only 0 of 1 remains"):
        ledger.spend(0.01, "one too many")
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert next(iter(obj)) == "atoll_privacy_ledger_version"  # version first
    assert len(obj["entries"]) == 10
    with pytest.raises(ConfigError, match="fixed when the ledger is created"):
        PrivacyLedger(path, collaboration="c", epsilon_total=5.0)
    with pytest.raises(ConfigError, match="belongs to collaboration"):
        PrivacyLedger(path, collaboration="other", epsilon_total=1.0)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="unreadable privacy ledger"):
        PrivacyLedger(path, collaboration="c", epsilon_total=1.0)
