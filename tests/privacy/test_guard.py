"""The output guard: strictest k wins, suppression with reasons, complementary cells, rounding."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError, SchemaError
from atoll.privacy import (
    REASON_COLUMN,
    SUPPRESSED_COLUMN,
    Guard,
    PartyRule,
    PrivacyBudgetError,
    PrivacyPolicy,
)


def _cells(values: list[int], group: str | None = "g") -> pa.Table:
    return pa.table(
        {
            "value": [f"v{i}" for i in range(len(values))],
            "group": pa.array([group] * len(values), pa.string()),
            "users": pa.array(values, pa.int64()),
            "share": pa.array([v / max(1, sum(values)) for v in values], pa.float64()),
        }
    )


def test_strictest_k_wins_and_names_the_party() -> None:
    policy = PrivacyPolicy.from_contract(
        {
            "privacy": {
                "collaboration": "brand-x-provider",
                "min_cell_size": 30,
                "parties": {
                    "brand": {"min_cell_size": 50},
                    "provider": {"min_cell_size": 100, "rounding": 10},
                },
            }
        }
    )
    assert policy.min_cell_size == 100
    assert policy.k_set_by == ("provider",)
    assert policy.rounding == 10
    assert policy.collaboration == "brand-x-provider"
    # The caller's own floor takes part too, and wins only when stricter.
    assert PrivacyPolicy.from_contract({"privacy": {}}, min_cell_size=80).min_cell_size == 80
    stricter = PrivacyPolicy.from_contract(
        {"privacy": {"parties": {"a": {"min_cell_size": 20}}}}, min_cell_size=80
    )
    assert stricter.min_cell_size == 80
    assert stricter.k_set_by == ("caller",)


def test_contract_from_toml_file_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "contract.toml"
    path.write_text(
        '[privacy]\ncollaboration = "c1"\n'
        "[privacy.parties.brand]\nmin_cell_size = 75\n"
        '[privacy.dp]\nepsilon_per_report = 0.5\nepsilon_total = 1.0\nledger = "ledger.json"\n',
        encoding="utf-8",
    )
    policy = PrivacyPolicy.from_contract(path)
    assert policy.min_cell_size == 75
    assert policy.dp is not None
    assert policy.dp.ledger == tmp_path / "ledger.json"
    with pytest.raises(ConfigError, match="unknown key"):
        PrivacyPolicy.from_contract({"privacy": {"min_cel_size": 10}})
    with pytest.raises(ConfigError, match="positive integer"):
        PrivacyPolicy.from_contract({"privacy": {"parties": {"b": {"min_cell_size": 0}}}})
    with pytest.raises(ConfigError, match="not found"):
        PrivacyPolicy.from_contract(tmp_path / "missing.toml")


def test_suppression_keeps_rows_and_shows_reason() -> None:
    guard = Guard(PrivacyPolicy.strictest([PartyRule("brand", 50)]))
    out = guard.apply(
        _cells([500, 120, 49, 0], group=None),
        counts=["users"],
        also_null=["share"],
        key=["value"],
    )
    t = out.table
    assert t.num_rows == 4  # never silently missing rows
    assert t["users"].to_pylist() == [500, 120, None, None]
    assert t["share"].to_pylist()[2:] == [None, None]
    assert t[SUPPRESSED_COLUMN].to_pylist() == [False, False, True, True]
    reasons = t[REASON_COLUMN].to_pylist()
    assert reasons[:2] == [None, None]
    assert reasons[2] == "suppressed: fewer than 50 (k set by brand)"
    assert [n.key for n in out.notes] == ["value=v2", "value=v3"]
    assert out.summary()["suppressed_below_k"] == 2


def test_complementary_suppression_protects_a_single_hidden_cell() -> None:
    guard = Guard(PrivacyPolicy.strictest([], floors={"caller": 50}))
    # Group total is published elsewhere: 10 could be recovered from 1000 - 600 - 390.
    out = guard.apply(_cells([600, 390, 10]), counts=["users"], group="group", key=["value"])
    hidden = out.table[SUPPRESSED_COLUMN].to_pylist()
    assert hidden == [False, True, True]  # the smallest shown cell is hidden too
    kinds = [n.kind for n in out.notes]
    assert kinds == ["complementary", "primary"]
    assert "complementary" in out.table[REASON_COLUMN].to_pylist()[1]
    # Two hidden cells that together reach k need nothing more.
    out2 = guard.apply(_cells([600, 30, 30, 20]), counts=["users"], group="group")
    assert out2.table[SUPPRESSED_COLUMN].to_pylist() == [False, True, True, True]
    assert out2.suppressed == 3
    # No group column → no complementary suppression.
    out3 = guard.apply(_cells([600, 390, 10], group=None), counts=["users"], group="group")
    assert out3.table[SUPPRESSED_COLUMN].to_pylist() == [False, False, True]


def test_rounding_after_threshold() -> None:
    guard = Guard(PrivacyPolicy.strictest([PartyRule("p", 50, rounding=10)]))
    out = guard.apply(_cells([54, 55, 1234, 49], group=None), counts=["users"])
    assert out.table["users"].to_pylist() == [50, 60, 1230, None]


def test_bad_columns_are_clear_errors() -> None:
    guard = Guard()
    with pytest.raises(SchemaError, match="no column 'nope'"):
        guard.apply(_cells([100]), counts=["nope"])
    with pytest.raises(SchemaError, match="must be integer"):
        guard.apply(_cells([100]), counts=["share"])
    with pytest.raises(ConfigError):
        guard.apply(_cells([100]), counts=[])


def test_dp_noise_spends_budget_and_refuses_when_spent(tmp_path: Path) -> None:
    contract = {
        "privacy": {
            "collaboration": "c-dp",
            "parties": {"brand": {"min_cell_size": 5}},
            "dp": {
                "epsilon_per_report": 1.0,
                "epsilon_total": 2.0,
                "ledger": str(tmp_path / "ledger.json"),
            },
        }
    }
    table = _cells([100_000, 50_000, 25_000], group=None)
    guard = Guard.from_contract(contract)
    first = guard.apply(table, counts=["users"], what="report 1")
    assert first.epsilon_spent == 1.0
    assert first.epsilon_remaining == pytest.approx(1.0)
    noisy = first.table["users"].to_pylist()
    # Scale 1/ε = 1: the noise is small but present in law; values stay close.
    assert all(abs(a - b) < 100 for a, b in zip(noisy, [100_000, 50_000, 25_000], strict=True))
    # A new guard (another process) reads the same ledger from disk.
    second = Guard.from_contract(contract).apply(table, counts=["users"], what="report 2")
    assert second.epsilon_remaining == pytest.approx(0.0)
    with pytest.raises(PrivacyBudgetError, match="refuses 'report 3'"):
        Guard.from_contract(contract).apply(table, counts=["users"], what="report 3")
    ledger = Guard.from_contract(contract).ledger
    assert ledger is not None
    assert [e.what for e in ledger.entries] == ["report 1", "report 2"]  # refusal not recorded


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=120),
)
def test_no_shown_cell_is_below_k_and_hidden_mass_is_safe(values: list[int], k: int) -> None:
    guard = Guard(PrivacyPolicy.strictest([PartyRule("p", k)]))
    out = guard.apply(_cells(values), counts=["users"], group="group")
    shown = out.table["users"].to_pylist()
    hidden = out.table[SUPPRESSED_COLUMN].to_pylist()
    assert all(v is None or v >= k for v in shown)
    assert all((v is None) == h for v, h in zip(shown, hidden, strict=True))
    hidden_mass = sum(v for v, h in zip(values, hidden, strict=True) if h)
    # Either nothing is hidden, or the hidden cells cannot be told apart by subtraction
    # (their sum reaches k), or every cell of the group is hidden.
    assert not any(hidden) or hidden_mass >= k or all(hidden)
