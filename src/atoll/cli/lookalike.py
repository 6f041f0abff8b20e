"""``atoll lookalike train | score | feedback``: TA scoring from the command line.

Why: the lookalike loop is run by people, not notebooks — a brand analyst
trains on buyers, a provider operator scores and exports packages, a media
contact sends delivery results back. Each command parses, calls
:mod:`atoll.models`, renders (HTML report with lift/gain curves and feature
importance via :mod:`atoll.ui`) and writes a model directory
(:mod:`atoll.models.registry`).

This module also composes what the ``models`` layer may not import (it is
rank 9, allowed to import analytics and the UI):

* group personas — each scoring group profiled by
  :func:`atoll.analytics.persona.persona` through its output guard;
* :func:`world_ladder` — the precision ladder of a synthetic world, with IVT
  filtering (:mod:`atoll.analytics.ivt`) and LBS visits (:mod:`atoll.analytics.lbs`).

The island job ``lookalike_joint`` lives in :mod:`atoll.island.lookalike_job`,
so that every island knows it, not only one started from the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from atoll.analytics.persona import persona
from atoll.cli._common import console, fail, print_kv
from atoll.data.datasets import MANIFEST_NAME, BucketedDataset
from atoll.data.io import read_table
from atoll.errors import AtollError, ConfigError, InputError, SchemaError
from atoll.execution import make_executor
from atoll.models.evaluation import Evaluation, evaluate_holdout
from atoll.models.feedback import (
    append_outcomes,
    compare_group,
    read_results,
    retrain,
)
from atoll.models.ladder import LadderStep, precision_ladder
from atoll.models.lookalike import STRATEGIES, LookalikeModel
from atoll.models.packages import DEFAULT_KINDS, parse_kinds
from atoll.models.registry import (
    ModelDir,
    data_entry,
    load_model_dir,
    save_model_dir,
)
from atoll.models.scoring import LIST_COLUMNS, GroupSpec, exclusions_table, score_universe
from atoll.models.seeds import KNOWN_KINDS, match_seeds
from atoll.privacy import Guard
from atoll.ui import Bar, Page, hbar_chart, line_chart

__all__ = ["app", "load_universe", "train_model", "world_ladder"]

app = typer.Typer(
    help="Lookalike TA scoring: train PU models on seeds, score groups, export packages, retrain.",
    no_args_is_help=True,
)


# --------------------------------------------------------------------------- loading


def load_universe(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole universe (bucketed dataset folder, Parquet or CSV) as one table."""
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists():
            raise InputError("a folder universe must be a bucketed dataset", source=str(path))
        ds = BucketedDataset.open(path)
        cols = None if columns is None else list(columns)
        parts = [t for _, t in ds.iter_buckets(cols)]
        return pa.concat_tables(parts) if parts else ds.schema.empty_table()
    if path.suffix.lower() in (".parquet", ".pq"):
        table = read_table(path)
    else:
        first = read_table(path)
        types = {c: pa.list_(pa.string()) for c in LIST_COLUMNS if c in first.column_names}
        table = read_table(path, column_types=types) if types else first
    return table if columns is None else table.select(list(columns))


def _truth_buyers(
    path: Path | None, universe: pa.Table, id_column: str
) -> np.ndarray[Any, Any] | None:
    if path is None:
        return None
    truth = read_table(path)
    for c in ("device_id", "is_planted_buyer"):
        if c not in truth.column_names:
            raise SchemaError(f"truth table needs {c!r}", source=str(path), column=c)
    idx = pc.index_in(
        universe[id_column].cast(pa.string()), value_set=truth["device_id"].combine_chunks()
    )
    values = pc.fill_null(truth["is_planted_buyer"].take(idx), False)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


# --------------------------------------------------------------------------- report


def _report_page(
    title: str, evaluation: Evaluation | None, model: LookalikeModel, extra: dict[str, Any]
) -> Page:
    page = Page(title, "Atoll lookalike TA scoring — positive–unlabeled model")
    page.kv(
        {
            "strategy": model.strategy,
            **{k: v for k, v in model.info().items() if k != "dimensions"},
        },
        digits=3,
    )
    if evaluation is not None:
        page.heading("Hidden-seed evaluation")
        page.paragraph(
            f"{evaluation.hidden_seeds} seeds (a random 20 %) were hidden before training; "
            "recall@k% is the share of them ranked in the top k % of the candidates "
            "(universe minus training seeds), lift@k% = recall / (k/100). PU-AUC compares "
            "hidden seeds with unlabeled rows, which contain unknown buyers: it is biased "
            "towards 0.5 but ranks models like the true AUC."
        )
        rows = [
            [f"{r['k']}%", r["rows"], r["recall"], r["lift"], r.get("true_precision")]
            for r in evaluation.at_k
        ]
        page.table(["top k", "rows", "recall", "lift", "true precision"], rows, digits=3)
        page.kv(
            {"PU-AUC": evaluation.auc_pu, "true AUC (synthetic)": evaluation.true_auc}, digits=3
        )
        gain = evaluation.gain
        page.chart(
            line_chart(
                gain["share"],
                {"model": gain["gain"]},
                title="Cumulative gain of hidden seeds",
                x_label="share of candidates",
                y_label="share of hidden seeds",
                diagonal=True,
            ),
            "Dashed diagonal: random targeting.",
        )
        page.chart(
            line_chart(
                gain["share"],
                {"lift": gain["lift"]},
                title="Lift curve",
                x_label="share of candidates",
            ),
            "Lift = gain / share; 1 is random.",
        )
        page.table(
            ["decile", "rows", "mean score", "hidden-seed share", "decile lift", "true rate"],
            [
                [
                    c["decile"],
                    c["rows"],
                    c["mean_score"],
                    c["hidden_share"],
                    c["hidden_lift"],
                    c.get("true_rate"),
                ]
                for c in evaluation.calibration
            ],
            caption="Calibration by score decile",
            digits=3,
        )
    page.heading("Feature importance")
    top = model.feature_importance(top=20)
    page.chart(
        hbar_chart(
            [Bar(r["feature"], r["importance"]) for r in top],
            title="Top features (share of total importance)",
            value_format="{:.3f}",
            color_by_reference=False,
        )
    )
    page.table(
        ["dimension", "importance"],
        [[r["dimension"], r["importance"]] for r in model.dimension_importance()],
        digits=3,
    )
    for heading, body in extra.items():
        page.heading(heading)
        if isinstance(body, list) and body and isinstance(body[0], dict):
            cols = list(body[0])
            page.table(cols, [[r.get(c) for c in cols] for r in body], digits=3)
        else:
            page.paragraph(json.dumps(body, indent=1, default=str))
    return page


# --------------------------------------------------------------------------- train


def train_model(
    universe_path: Path,
    seeds_path: Path,
    seed_column: str,
    out: Path,
    *,
    universe_column: str | None = None,
    id_kind: str | None = None,
    features: Sequence[str] | None = None,
    exposed_path: Path | None = None,
    strategy: str = "bagging",
    random_state: int = 0,
    hidden_share: float = 0.2,
    truth_path: Path | None = None,
    id_column: str = "device_id",
) -> tuple[ModelDir, Evaluation]:
    """The ``train`` command as a function: evaluate on hidden seeds, fit on all, save."""
    universe = load_universe(universe_path)
    seeds_table = read_table(seeds_path, column_types={seed_column: pa.string()})
    if seed_column not in seeds_table.column_names:
        raise SchemaError(
            f"no seed column {seed_column!r}", source=str(seeds_path), column=seed_column
        )
    ucol = universe_column or (seed_column if seed_column in universe.column_names else id_column)
    kind = id_kind if id_kind is not None else (seed_column if seed_column in KNOWN_KINDS else None)
    mask, phones = match_seeds(
        universe,
        seeds_table[seed_column].combine_chunks(),
        universe_column=ucol,
        kind=kind,
        source=str(seeds_path),
    )
    truth = _truth_buyers(truth_path, universe, id_column)
    model = LookalikeModel(strategy, columns=features, random_state=random_state)
    evaluation = evaluate_holdout(
        model, universe, mask, share=hidden_share, random_state=random_state, truth=truth
    )
    model.fit(universe, mask)
    exposed = None
    if exposed_path is not None:
        exp = read_table(exposed_path, column_types={"device_id": pa.string()})
        if "device_id" not in exp.column_names:
            raise SchemaError(
                "exposed devices file needs a device_id column", source=str(exposed_path)
            )
        exposed = pc.unique(pc.drop_null(exp["device_id"].combine_chunks()))
    seed_devices = universe[id_column].filter(pa.array(mask)).combine_chunks()
    metrics = {
        "evaluation": evaluation.to_dict(),
        "feature_importance": model.feature_importance(top=50),
    }
    manifest = {
        "training_data": {
            "universe": data_entry(universe_path, universe.num_rows),
            "seeds": data_entry(seeds_path, seeds_table.num_rows),
            "exposed": None if exposed_path is None else data_entry(exposed_path),
        },
        "seed_column": seed_column,
        "universe_column": ucol,
        "id_kind": kind,
        "id_column": id_column,
        "seeds_matched": int(mask.sum()),
        "outcome_rows": 0,
    }
    saved = save_model_dir(
        out,
        model,
        manifest=manifest,
        metrics=metrics,
        exclusions=exclusions_table(seed_devices, phones, exposed),
    )
    _report_page("Lookalike model report", evaluation, model, {}).write(saved / "report.html")
    return load_model_dir(saved), evaluation


def _lift_rows(evaluation: Evaluation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in evaluation.at_k:
        text = f"recall {r['recall']:.3f} · lift {r['lift']:.2f}"
        if "true_precision" in r:
            text += f" · true precision {r['true_precision']:.3f}"
        out[f"top {r['k']}%"] = text
    out["PU-AUC"] = f"{evaluation.auc_pu:.3f}"
    return out


@app.command("train")
def train(
    seeds: Annotated[Path, typer.Option(help="Seed file (CSV/Parquet): the brand's buyers")],
    seed_id_column: Annotated[str, typer.Option(help="Identifier column of the seed file")],
    universe: Annotated[Path, typer.Option(help="Universe: Parquet, CSV or bucketed dataset")],
    out: Annotated[Path, typer.Option(help="Model directory to create")],
    features: Annotated[
        str | None, typer.Option(help="Comma-separated feature columns (default: all tags)")
    ] = None,
    exclude_exposed: Annotated[
        Path | None,
        typer.Option(help="File of already-exposed device_ids to exclude from packages"),
    ] = None,
    universe_id_column: Annotated[
        str | None, typer.Option(help="Universe column matching the seeds (default: same name)")
    ] = None,
    id_kind: Annotated[
        str | None, typer.Option(help="Identifier kind to normalize both sides as (phone, imei…)")
    ] = None,
    strategy: Annotated[
        str, typer.Option(help=f"PU strategy: {', '.join(STRATEGIES)}")
    ] = "bagging",
    random_state: Annotated[int, typer.Option(help="Random seed")] = 0,
    truth: Annotated[
        Path | None, typer.Option(help="Synthetic truth/propensity table (adds true precision)")
    ] = None,
) -> None:
    """Train a PU lookalike model; write the model, metrics.json and report.html."""
    try:
        cols = None if features is None else [c.strip() for c in features.split(",") if c.strip()]
        with console.status("training (hidden-seed evaluation, then the full model)…"):
            saved, evaluation = train_model(
                universe,
                seeds,
                seed_id_column,
                out,
                universe_column=universe_id_column,
                id_kind=id_kind,
                features=cols,
                exposed_path=exclude_exposed,
                strategy=strategy,
                random_state=random_state,
                truth_path=truth,
            )
    except AtollError as exc:
        raise fail(exc) from None
    print_kv(
        "lookalike model",
        {
            "model": str(saved.path),
            "seeds matched": saved.manifest["seeds_matched"],
            **_lift_rows(evaluation),
        },
    )


# --------------------------------------------------------------------------- score


def _group_personas(
    scores_path: Path, universe: Path, out: Path, groups: int, guard: Guard
) -> list[dict[str, Any]]:
    scores = pq.read_table(scores_path, columns=["device_id", "group"])
    summary = []
    for g in range(1, groups + 1):
        ids = scores.filter(pc.equal(scores["group"], g))["device_id"]
        report = persona(
            ids, universe, id_column="device_id", guard=guard, name=f"lookalike group {g}"
        )
        folder = out / "packages" / f"group_{g}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(report.csv_table(), folder / "persona.parquet")
        summary.append(
            {
                "group": g,
                "devices": report.metrics["audience"]["matched_devices"],
                "top_tags": [
                    f"{t['dimension']}={t['value']} (TGI {t['tgi']:.0f})"
                    for t in report.top_tags[:5]
                ],
                "suppressed_cells": report.guarded.suppressed,
                "guard_k": guard.k,
            }
        )
    return summary


@app.command("score")
def score(
    model: Annotated[Path, typer.Option(help="Model directory from `atoll lookalike train`")],
    universe: Annotated[Path, typer.Option(help="Universe: Parquet, CSV or bucketed dataset")],
    out: Annotated[Path, typer.Option(help="Output directory")],
    groups: Annotated[
        str, typer.Option(help="Cumulative top shares of groups 1/2/3")
    ] = "0.01,0.05,0.2",
    thresholds: Annotated[
        str | None,
        typer.Option(help="Expected-conversion cuts instead of shares, e.g. 0.3,0.15,0.05"),
    ] = None,
    packages: Annotated[str, typer.Option(help="Package kinds")] = ",".join(
        k.name for k in DEFAULT_KINDS
    ),
    executor: Annotated[str, typer.Option(help="inline | thread | local | ray")] = "inline",
    k: Annotated[int, typer.Option(help="Minimum cell size of group personas")] = 50,
    personas: Annotated[bool, typer.Option(help="Profile each group (guarded persona)")] = True,
) -> None:
    """Score every universe row into scores.parquet; write packages and group personas."""
    try:
        spec = GroupSpec.parse(thresholds, "threshold") if thresholds else GroupSpec.parse(groups)
        kinds = parse_kinds(packages)
        with make_executor(executor) as ex:
            result = score_universe(model, universe, out, spec=spec, executor=ex, kinds=kinds)
        summary = result.to_dict()
        if personas:
            summary["group_personas"] = _group_personas(
                result.scores_path,
                universe,
                out,
                spec.groups,
                Guard.from_contract({}, min_cell_size=k),
            )
        (out / "scoring.json").write_text(
            json.dumps(summary, indent=2, default=str), encoding="utf-8"
        )
        loaded = load_model_dir(model)
        extra = {"Scoring groups": summary["groups"], "Excluded": [summary["excluded"]]}
        if personas:
            extra["Group personas (guarded)"] = summary["group_personas"]
        _report_page("Lookalike scoring report", None, loaded.model, extra).write(
            out / "report.html"
        )
    except AtollError as exc:
        raise fail(exc) from None
    print_kv(
        "lookalike scores",
        {
            "scores": str(result.scores_path),
            "rows": result.rows,
            **{f"group {g['group']} ({g['label']})": g["devices"] for g in summary["groups"]},
            "excluded": result.excluded,
        },
    )


# --------------------------------------------------------------------------- feedback


@app.command("feedback")
def feedback(
    model: Annotated[Path, typer.Option(help="Model directory to retrain")],
    results: Annotated[
        Path, typer.Option(help="Delivery results: device_id, exposed, clicked, purchased")
    ],
    out: Annotated[Path, typer.Option(help="New model directory")],
    universe: Annotated[
        Path | None, typer.Option(help="Universe (default: the one the model was trained on)")
    ] = None,
    next_outcomes: Annotated[
        Path | None,
        typer.Option(help="Next period's outcomes (device_id, purchased) to compare old and new"),
    ] = None,
    cold: Annotated[
        bool, typer.Option(help="Retrain from scratch instead of a warm start")
    ] = False,
) -> None:
    """Ingest delivery results, retrain (warm start) and write the next model version."""
    try:
        old = load_model_dir(model)
        uni_path = universe or Path(old.manifest["training_data"]["universe"]["path"])
        table = load_universe(uni_path)
        res = read_results(results)
        period = 1 + (
            0 if old.outcomes is None else int(pc.max(old.outcomes["period"]).as_py() or 0)
        )
        outcomes = append_outcomes(old.outcomes, res, period)
        excl = old.exclusions
        seed_devices = excl.filter(pc.equal(excl["reason"], "seed"))["device_id"]
        seed_devices = pc.drop_null(seed_devices).combine_chunks()
        new_model, mask = retrain(old.model, table, seed_devices, outcomes, warm_start=not cold)
        id_column = str(old.manifest.get("id_column", "device_id"))
        metrics: dict[str, Any] = {
            "period": period,
            "results": {
                "rows": res.num_rows,
                "exposed": int(pc.sum(res["exposed"]).as_py() or 0),
                "clicked": int(pc.sum(res["clicked"]).as_py() or 0),
                "purchased": int(pc.sum(res["purchased"]).as_py() or 0),
            },
            "warm_start": not cold,
            "seeds_after": int(mask.sum()),
        }
        if next_outcomes is not None:
            nxt = read_table(next_outcomes, column_types={"device_id": pa.string()})
            idx = pc.index_in(
                table[id_column].cast(pa.string()), value_set=nxt["device_id"].combine_chunks()
            )
            bought = pc.fill_null(nxt["purchased"].cast(pa.float64()).take(idx), 0.0)
            outcome = np.asarray(bought.to_numpy(zero_copy_only=False), dtype=np.float64)
            metrics["comparison"] = compare_group(
                old.model.score(table), new_model.score(table), ~mask, outcome
            )
        new_seeds = table[id_column].filter(pa.array(mask)).combine_chunks()
        phones = excl.filter(pc.is_valid(excl["phone"]))["phone"].combine_chunks()
        exposed = excl.filter(pc.equal(excl["reason"], "exposed"))["device_id"].combine_chunks()
        manifest = {
            **{
                k: v
                for k, v in old.manifest.items()
                if k in ("seed_column", "universe_column", "id_kind", "id_column")
            },
            "training_data": {
                **old.manifest["training_data"],
                "universe": data_entry(uni_path, table.num_rows),
                f"results_period_{period}": data_entry(results, res.num_rows),
            },
            "seeds_matched": int(mask.sum()),
            "outcome_rows": outcomes.num_rows,
        }
        saved = save_model_dir(
            out,
            new_model,
            manifest=manifest,
            metrics=metrics,
            exclusions=exclusions_table(
                new_seeds, phones if len(phones) else None, exposed if len(exposed) else None
            ),
            outcomes=outcomes,
            parent=old,
        )
        extra: dict[str, Any] = {"Delivery results": [metrics["results"]]}
        if "comparison" in metrics:
            c = metrics["comparison"]
            extra["New vs previous model (next period, group 1)"] = [
                {"model": "previous", **c["previous"]},
                {"model": "new", **c["new"]},
            ]
        _report_page(f"Lookalike model v{old.version + 1}", None, new_model, extra).write(
            saved / "report.html"
        )
    except AtollError as exc:
        raise fail(exc) from None
    rows = {
        "model": str(saved),
        "version": old.version + 1,
        **metrics["results"],
        "seeds after": metrics["seeds_after"],
    }
    if "comparison" in metrics:
        c = metrics["comparison"]
        rows["group 1 rate previous → new"] = (
            f"{c['previous']['rate']:.4f} → {c['new']['rate']:.4f}"
        )
    print_kv("lookalike feedback", rows)


# ---------------------------------------------------------------- ladder (synthetic world)


def world_ladder(
    tables: dict[str, pa.Table],
    truth: dict[str, pa.Table],
    group1: pa.Array,
    *,
    campaign: str | None = None,
    guard: Guard | None = None,
) -> dict[str, Any]:
    """The precision ladder of a synthetic world for one campaign (its exposed devices).

    Rungs: all traffic (devices with an event) → IVT-filtered (devices with a
    valid event, :func:`atoll.analytics.ivt.detect_ivt`) → demographic TA
    (female, 18-44) → interest tags (beauty or hair_care) → LBS (visited a
    brand store, :func:`atoll.analytics.lbs.lbs_tags`); lookalike group 1
    narrows the IVT-filtered rung. Buyer rate: planted buyers.
    """
    from atoll.analytics.ivt import detect_ivt
    from atoll.analytics.lbs import lbs_tags

    events = tables["provider/exposures"]
    if campaign is not None:
        events = events.filter(pc.equal(events["campaign_id"], campaign))
    if events.num_rows == 0:
        raise ConfigError(f"no exposure events for campaign {campaign!r}")
    ivt = detect_ivt(events)
    universe = tables["provider/universe"]
    demo = universe.filter(
        pc.and_(
            pc.equal(universe["gender"], "female"),
            pc.is_in(universe["age_band"], value_set=pa.array(["18-24", "25-34", "35-44"])),
        )
    )["device_id"]
    interests = pc.list_flatten(universe["interests"])
    parents = pc.list_parent_indices(universe["interests"])
    hit = pc.is_in(interests, value_set=pa.array(["beauty", "hair_care"]))
    rows = pc.unique(pc.filter(parents, hit))
    interest_ids = universe["device_id"].take(rows)
    lbs = lbs_tags(tables["provider/pings"], tables["provider/pois"])
    col = "lbs_days_brand_store"
    store = (
        lbs.tags.filter(pc.greater(lbs.tags[col], 0))["device_id"]
        if col in lbs.tags.column_names
        else pa.array([], pa.string())
    )
    prop = truth["propensity"]
    buyers = prop.filter(prop["is_planted_buyer"])["device_id"]
    steps = [
        LadderStep(
            "all traffic", pc.unique(events["device_id"]), description="devices with any event"
        ),
        LadderStep(
            "IVT-filtered",
            pc.unique(ivt.filtered["device_id"]),
            description="devices with a valid event",
        ),
        LadderStep("demographic TA", demo.combine_chunks(), description="female, 18-44"),
        LadderStep(
            "interest tags", interest_ids.combine_chunks(), description="beauty or hair_care"
        ),
        LadderStep(
            "LBS",
            store.combine_chunks() if isinstance(store, pa.ChunkedArray) else store,
            description="visited a brand store",
        ),
        LadderStep(
            "lookalike group 1",
            group1,
            within="IVT-filtered",
            description="top 1 % lookalike scores",
        ),
    ]
    return precision_ladder(steps, buyers.combine_chunks(), guard=guard)
