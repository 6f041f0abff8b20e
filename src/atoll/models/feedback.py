"""The closed loop: delivery results in, labelled outcomes appended, model retrained, lift compared.

Why: a lookalike model is only as good as its next campaign. After the media
platform delivers a package it can report, per packaged device, whether it
was exposed, clicked and bought. Those outcomes are labels the seeds never
had — buyers the brand did not know, found where the model looked — so the
loop (``../shared/seed/README.md`` §10) is: ingest the results
(:func:`read_results`, strict: every bad row is named), append them to the
model's outcome history (:func:`append_outcomes`), retrain with the new
buyers as extra positives (:func:`retrain`; LightGBM continues the previous
boosters with ``extra_trees`` new trees — a warm start), then compare the
new model with the previous one on the *next* period's outcomes
(:func:`compare_group`), on the same candidate devices.

For the synthetic world (tests and ``atoll demo``) :func:`period_outcomes`
draws who would buy in a period from the planted propensities (one uniform
per device and period, so two models are judged on the same draws), and
:func:`simulate_delivery` turns a package into delivery results. These are
labelled as simulations wherever they are reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.data.io import read_table
from atoll.errors import ConfigError, InputError, SchemaError
from atoll.models.lookalike import LookalikeModel

__all__ = [
    "RESULT_COLUMNS",
    "append_outcomes",
    "compare_group",
    "period_outcomes",
    "read_results",
    "retrain",
    "simulate_delivery",
    "top_share",
]

#: Columns of a delivery-results file.
RESULT_COLUMNS = ("device_id", "exposed", "clicked", "purchased")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _bool_column(table: pa.Table, name: str, source: str | None) -> pa.Array:
    col = table[name].combine_chunks()
    if pa.types.is_boolean(col.type):
        values = col
    elif pa.types.is_integer(col.type):
        bad = pc.and_(pc.not_equal(col, 0), pc.not_equal(col, 1))
        if pc.any(pc.fill_null(bad, False)).as_py():
            row = int(pc.index(pc.fill_null(bad, False), True).as_py())
            raise InputError(
                f"expected 0/1, got {col[row].as_py()!r}", source=source, row=row + 1, column=name
            )
        values = pc.equal(col, 1)
    else:
        text = pc.utf8_lower(pc.utf8_trim_whitespace(col.cast(pa.string())))
        ok = pc.is_in(text, value_set=pa.array(sorted(_TRUE | _FALSE)))
        if not pc.all(pc.fill_null(ok, True)).as_py():
            row = int(pc.index(pc.fill_null(ok, True), False).as_py())
            raise InputError(
                f"expected true/false or 0/1, got {col[row].as_py()!r}",
                source=source,
                row=row + 1,
                column=name,
            )
        values = pc.is_in(text, value_set=pa.array(sorted(_TRUE)))
    if values.null_count:
        row = int(pc.index(values.is_null(), True).as_py())
        raise InputError("missing value", source=source, row=row + 1, column=name)
    return values


def read_results(data: pa.Table | str | os.PathLike[str], *, source: str | None = None) -> pa.Table:
    """Validated delivery results: ``device_id`` (string) and boolean exposed/clicked/purchased.

    Raises :class:`~atoll.errors.InputError` naming file, row and column for a
    missing ID, a non-boolean flag, a repeated device, or a click/purchase
    on a device that was not exposed... only clicks require exposure (a
    purchase may follow an unseen ad: it still counts as an outcome).
    """
    if isinstance(data, pa.Table):
        table = data
    else:
        source = source or str(data)
        table = read_table(data, column_types={"device_id": pa.string()})
    for c in RESULT_COLUMNS:
        if c not in table.column_names:
            raise SchemaError(
                f"delivery results need columns {', '.join(RESULT_COLUMNS)}; {c!r} is missing",
                source=source,
                column=c,
            )
    ids = table["device_id"].combine_chunks().cast(pa.string())
    if ids.null_count:
        row = int(pc.index(ids.is_null(), True).as_py())
        raise InputError("missing device_id", source=source, row=row + 1, column="device_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        row = int(pc.index(ids, dup).as_py())
        raise InputError(
            f"device {dup!r} appears more than once", source=source, row=row + 1, column="device_id"
        )
    exposed = _bool_column(table, "exposed", source)
    clicked = _bool_column(table, "clicked", source)
    purchased = _bool_column(table, "purchased", source)
    bad = pc.and_(clicked, pc.invert(exposed))
    if pc.any(bad).as_py():
        row = int(pc.index(bad, True).as_py())
        raise InputError("clicked but not exposed", source=source, row=row + 1, column="clicked")
    return pa.table(
        {"device_id": ids, "exposed": exposed, "clicked": clicked, "purchased": purchased}
    )


def append_outcomes(previous: pa.Table | None, results: pa.Table, period: int) -> pa.Table:
    """The outcome history with ``results`` appended as ``period`` (a period only once)."""
    if period < 1:
        raise ConfigError(f"period must be a positive integer, got {period}")
    new = results.append_column("period", pa.array(np.full(results.num_rows, period, np.int32)))
    if previous is None or previous.num_rows == 0:
        return new
    if period in set(previous["period"].to_pylist()):
        raise ConfigError(f"outcomes of period {period} were already ingested")
    return pa.concat_tables([previous.select(new.column_names), new])


def retrain(
    model: LookalikeModel,
    universe: pa.Table,
    seed_devices: pa.Array,
    outcomes: pa.Table,
    *,
    warm_start: bool = True,
    extra_trees: int = 100,
    id_column: str = "device_id",
) -> tuple[LookalikeModel, npt.NDArray[np.bool_]]:
    """A new model trained on seeds ∪ purchasers; returns it and the new seed mask.

    The previous model is not modified: the new one starts from its state
    (same encoder, boosters continued with ``extra_trees`` trees) when
    ``warm_start``, from scratch otherwise.
    """
    buyers = outcomes.filter(outcomes["purchased"])["device_id"].combine_chunks()
    known = pa.concat_arrays([seed_devices.cast(pa.string()), buyers.cast(pa.string())])
    mask = np.asarray(
        pc.fill_null(
            pc.is_in(universe[id_column].cast(pa.string()), value_set=known), False
        ).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    if warm_start:
        fresh = LookalikeModel.from_state(model.to_state())
        fresh.fit(universe, mask, warm_start=True, extra_trees=extra_trees)
    else:
        fresh = model.clone().fit(universe, mask)
    return fresh, mask


def top_share(
    score: npt.NDArray[np.float64], eligible: npt.NDArray[np.bool_], share: float
) -> npt.NDArray[np.bool_]:
    """Rows in the top ``share`` of ``score`` among ``eligible`` rows."""
    idx = np.flatnonzero(eligible)
    n = int(np.ceil(share * idx.size))
    order = idx[np.argsort(-score[idx], kind="stable")[:n]]
    out = np.zeros(score.shape, dtype=bool)
    out[order] = True
    return out


def compare_group(
    old_score: npt.NDArray[np.float64],
    new_score: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    outcome: npt.NDArray[np.float64],
    *,
    share: float = 0.01,
    names: Sequence[str] = ("previous", "new"),
) -> dict[str, Any]:
    """Outcome rate of each model's top-``share`` group on the same eligible rows, and the lift.

    ``outcome`` is per row: 1/0 purchases of the next period, or (synthetic)
    a true purchase probability.
    """
    out: dict[str, Any] = {"share": share, "eligible": int(eligible.sum())}
    rates = []
    for name, score in zip(names, (old_score, new_score), strict=True):
        top = top_share(score, eligible, share)
        rate = float(outcome[top].mean()) if top.any() else 0.0
        rates.append(rate)
        out[name] = {"devices": int(top.sum()), "rate": rate}
    out["lift"] = rates[1] / rates[0] if rates[0] else None
    out["base_rate"] = float(outcome[eligible].mean()) if eligible.any() else None
    return out


# --------------------------------------------------------------------------- synthetic world


def period_outcomes(
    device_ids: pa.Array, propensity: npt.NDArray[np.float64], *, period: int, seed: int = 0
) -> npt.NDArray[np.bool_]:
    """SIMULATION: who buys in ``period`` — ``u < propensity`` with one uniform per device.

    Deterministic in ``(seed, period)`` and in the device order, so two models
    are judged on the same draws.
    """
    if len(device_ids) != propensity.size:
        raise ConfigError("device_ids and propensity differ in length")
    rng = np.random.default_rng([seed, period])
    out: npt.NDArray[np.bool_] = rng.random(propensity.size) < propensity
    return out


def simulate_delivery(
    device_ids: pa.Array,
    package: npt.NDArray[np.bool_],
    buys: npt.NDArray[np.bool_],
    *,
    reach: float = 0.8,
    ctr: float = 0.02,
    seed: int = 0,
) -> pa.Table:
    """SIMULATION: delivery results of a package — exposed with ``reach``, clicks, purchases.

    ``buys`` says who buys in the period (from :func:`period_outcomes`); a
    packaged device reports a purchase when it buys (the platform attributes
    it to the delivery when exposed, and still reports it otherwise).
    """
    if not 0 < reach <= 1 or not 0 <= ctr <= 1:
        raise ConfigError("reach must be in (0, 1] and ctr in [0, 1]")
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(package)
    exposed = rng.random(rows.size) < reach
    clicked = exposed & (rng.random(rows.size) < ctr)
    return pa.table(
        {
            "device_id": device_ids.take(pa.array(rows)).cast(pa.string()),
            "exposed": pa.array(exposed),
            "clicked": pa.array(clicked),
            "purchased": pa.array(buys[rows] & exposed),
        }
    )
