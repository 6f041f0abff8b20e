"""Demo step 9 — TA scoring: lookalike groups from the brand's buyers, packages, one closed loop.

Why: the deck's highest-precision targeting (``../shared/seed/README.md`` §4,
§10) is a loop, and the demo must show all of it on one world, with each
party touching only its own data:

1. **Seeds, through protocols.** The brand knows which of its members the
   provider knows (labeled PSI, :func:`atoll.demo.shared.matched_members`)
   and, from its own orders, which of them bought. It hands those buyers to
   the provider through a second PSI in which the *provider* is the
   receiver: the provider learns which of its devices are the brand's
   (matched) buyers — the seeds — and nothing about the brand's other
   customers; the brand learns the size of the provider's set.
2. **Features are the provider's own**: its universe tags plus LBS tags
   computed from its own location pings (:func:`atoll.analytics.lbs.lbs_tags`).
3. **Train and evaluate** (:func:`atoll.cli.lookalike.train_model`): the
   bagging-PU LightGBM model, evaluated on 20 % hidden seeds
   (recall@k %, lift@k %, k = 1, 5, 10, 20), next to the logistic baseline on
   the same hidden split. True precision against the planted buyers grades
   the ranking (``ctx.world.truth`` is used for grading only).
4. **Score, cut, package** (:func:`atoll.models.scoring.score_universe` on the
   demo's executor): groups 1/2/3 = top 1 %, next 4 %, next 15 % of the
   eligible devices; seeds and devices that already clicked an ad of the
   running campaign (the retargeting line serves them) are excluded; packages
   of hashed device IDs and phones (``docs/lookalike.md``), and the guarded
   persona of group 1 (:func:`atoll.analytics.persona.persona`, k = 50).
5. **One delivery round** — a *simulation* from the synthetic world
   (:func:`atoll.models.feedback.simulate_delivery`): the media platform
   delivers groups 1–3 and reports exposures, clicks and purchases; the
   provider ingests the report (:func:`~atoll.models.feedback.read_results`),
   retrains with the new buyers (warm start) as model version 2, and the
   next period's true buyer rate of group 1 is compared, old model vs new,
   on the same eligible devices.

Outputs under ``out/lookalike/``: ``seeds.parquet`` (the provider's PSI
result), ``provider_features.parquet``, ``models/v1`` and ``models/v2``
(model registry directories: model, manifest with lineage, ``metrics.json``,
``report.html``), ``scoring/`` (``scores.parquet``, ``packages/``,
group-1 persona), ``delivery/results_period_1.csv``, ``metrics.json`` and
``report.html`` (this step's numbers). The same numbers are left in
``ctx.artifacts["lookalike"]`` for later steps.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.analytics.lbs import lbs_tags
from atoll.analytics.persona import PersonaReport, persona
from atoll.cli.lookalike import train_model
from atoll.data.io import write_table
from atoll.demo.context import DemoContext
from atoll.demo.shared import matched_members
from atoll.errors import DataError, IntegrityError
from atoll.execution import make_executor
from atoll.matching import MatchOutcome, PsiOptions, psi_party, run_local
from atoll.models.evaluation import Evaluation, evaluate_holdout
from atoll.models.feedback import (
    append_outcomes,
    compare_group,
    period_outcomes,
    read_results,
    retrain,
    simulate_delivery,
)
from atoll.models.lookalike import LookalikeModel
from atoll.models.registry import data_entry, lineage, load_model_dir, save_model_dir
from atoll.models.scoring import GroupSpec, ScoringResult, exclusions_table, score_universe
from atoll.privacy import Guard
from atoll.ui import Page, line_chart, persona_page

__all__ = ["GROUP_BOUNDS", "MIN_CELL", "STRATEGY", "run"]

#: Cumulative top shares of the eligible devices: groups 1, 2, 3.
GROUP_BOUNDS = (0.01, 0.05, 0.2)
#: The PU strategy of the packaged model (the baseline is always ``logistic``).
STRATEGY = "bagging"
#: Minimum cell size of the group personas (the output guard's k).
MIN_CELL = 50
#: LBS tag columns used as features (POI-ID lists are left out: too sparse to learn from).
_LBS_PREFIX = "lbs_days_"
_LBS_LISTS = ("lbs_frequent_categories",)

#: How the scorer's exclusion reasons read in the summary.
_REASONS = {
    "seed": "seeds",
    "seed_phone": "same phone as a seed",
    "exposed": "already clicked the campaign",
}

Bool = npt.NDArray[np.bool_]
Float = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- party data


def brand_seed_phones(ctx: DemoContext) -> tuple[pa.Array, dict[str, int]]:
    """The brand's side: phones of its buyers that the provider knows.

    Buyers are members with an order (by ``member_id`` or by phone) among the
    members labeled PSI matched; the brand knows these from its own orders
    and the labeled-PSI result, nothing else.
    """
    matched = matched_members(ctx)
    orders = ctx.tables["brand/orders"]
    order_members = pc.unique(pc.drop_null(orders["member_id"]).combine_chunks())
    order_phones = pc.unique(pc.drop_null(orders["phone"]).combine_chunks())
    bought = pc.or_(
        pc.fill_null(pc.is_in(matched["member_id"], value_set=order_members), False),
        pc.fill_null(pc.is_in(matched["phone"], value_set=order_phones), False),
    )
    phones = pc.unique(pc.drop_null(matched.filter(bought)["phone"]).combine_chunks())
    members = ctx.tables["brand/members"]
    member_buyers = pc.sum(
        pc.fill_null(pc.is_in(members["member_id"], value_set=order_members), False)
    ).as_py()
    stats = {
        "orders": orders.num_rows,
        "members with an order": int(member_buyers or 0),
        "members matched (labeled PSI)": matched.num_rows,
        "matched buyers (seed phones)": len(phones),
    }
    return phones, stats


def hand_over_seeds(ctx: DemoContext, phones: pa.Array) -> pa.Table:
    """PSI, provider = receiver: the provider learns which of its devices carry a seed phone.

    Returns the provider's matched rows (``device_id, phone``): the seed devices.
    """
    universe = ctx.tables["provider/universe"].select(["device_id", "phone"])
    buckets = max(1, min(ctx.config.buckets, 16))
    options = PsiOptions(buckets=buckets)
    receiver = psi_party(
        universe, "phone", role="receiver", options=options, source="provider/universe"
    )
    sender = psi_party(
        pa.table({"phone": phones}),
        "phone",
        role="sender",
        options=options,
        source="brand seed buyers",
    )
    with make_executor(ctx.config.executor, **ctx.executor_options()) as ex:
        outcome, _ = run_local(
            receiver,
            sender,
            executor=ex,
            progress=lambda i, label, done, total: ctx.progress(
                f"lookalike: seed PSI ({label})", done, total
            ),
        )
    if not isinstance(outcome, MatchOutcome) or outcome.table is None:
        raise IntegrityError("the seed PSI returned no matched rows to the receiver (the provider)")
    return outcome.table.select(["device_id", "phone"])


def provider_features(ctx: DemoContext) -> tuple[pa.Table, dict[str, Any]]:
    """The provider's universe with its tags plus LBS tags from its own pings (universe order)."""
    universe = ctx.tables["provider/universe"]
    lbs = lbs_tags(
        ctx.world.tables["provider/pings"],
        ctx.world.tables["provider/pois"],
        source=str(ctx.paths.get("provider/pings", "provider/pings")),
    )
    tags = lbs.tags
    keep = [c for c in tags.column_names if c.startswith(_LBS_PREFIX) or c in _LBS_LISTS]
    idx = pc.index_in(universe["device_id"], value_set=tags["device_id"].combine_chunks())
    table = universe
    for c in keep:
        table = table.append_column(c, tags[c].combine_chunks().take(idx))
    info = {
        "devices with LBS tags": int(pc.sum(pc.is_valid(idx)).as_py() or 0),
        "lbs_columns": keep,
    }
    return table, info


def _aligned(ids: pa.ChunkedArray | pa.Array, table: pa.Table, column: str) -> pa.Array:
    """``table[column]`` in the order of ``ids`` (by ``device_id``; nulls where absent)."""
    idx = pc.index_in(ids, value_set=table["device_id"].combine_chunks())
    return table[column].combine_chunks().take(idx)


def _np_bool(values: pa.Array | pa.ChunkedArray) -> Bool:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _np_float(values: pa.Array | pa.ChunkedArray) -> Float:
    return np.asarray(pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)


def engaged_devices(ctx: DemoContext) -> pa.Array:
    """Devices that already clicked an ad of the running campaign (the provider's exposure log).

    The retargeting line serves them, so the prospecting packages exclude them.
    """
    events = ctx.tables["provider/exposures"]
    clicks = events.filter(pc.equal(events["event_type"], "click"))
    return pc.unique(pc.drop_null(clicks["device_id"]).combine_chunks())


# --------------------------------------------------------------------------- formatting


def _lift_cells(ev: Evaluation) -> dict[int, str]:
    out = {}
    for r in ev.at_k:
        text = f"recall {r['recall']:.3f} · lift {r['lift']:.2f}"
        if r.get("true_precision") is not None:
            text += f" · true precision {r['true_precision']:.3f}"
        out[int(r["k"])] = text
    return out


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _group_persona(
    ids: pa.Array, base: pa.Table, folder: Path, guard: Guard
) -> tuple[PersonaReport, dict[str, Any]]:
    report = persona(ids, base, id_column="device_id", guard=guard, name="lookalike group 1")
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(report.csv_table(), folder / "persona.parquet")
    persona_page(report, title="Lookalike group 1 — persona (guarded)").write(
        folder / "persona.html"
    )
    summary = {
        "devices": report.metrics["audience"]["matched_devices"],
        "top_tags": [
            f"{t['dimension']}={t['value']} (TGI {t['tgi']:.0f})" for t in report.top_tags[:5]
        ],
        "cells": report.cells.num_rows,
        "suppressed_cells": report.guarded.suppressed,
        "guard_k": guard.policy.min_cell_size,
    }
    return report, summary


def _write_report(path: Path, metrics: dict[str, Any]) -> None:
    page = Page(
        "TA scoring — lookalike groups and the closed loop",
        "Atoll demo step 9: seeds by PSI, PU model on the provider's tags, "
        "scoring groups, packages, one simulated delivery round, retraining.",
    )
    page.heading("Seeds")
    page.kv(metrics["seeds"])
    page.heading("Hidden-seed evaluation (20 % of the seeds hidden)")
    page.paragraph(
        "recall@k% = hidden seeds in the top k % of the candidates / hidden seeds; "
        "lift@k% = recall / (k/100). True precision = planted buyers in the top k % "
        "(synthetic world, grading only)."
    )
    rows = []
    for name, ev in metrics["evaluation"].items():
        for r in ev["at_k"]:
            rows.append(
                [name, f"{r['k']}%", r["rows"], r["recall"], r["lift"], r.get("true_precision")]
            )
    page.table(["model", "top k", "rows", "recall", "lift", "true precision"], rows, digits=3)
    curves = metrics["evaluation"]
    first = next(iter(curves.values()))["gain"]["share"]
    page.chart(
        line_chart(
            first,
            {name: ev["gain"]["gain"] for name, ev in curves.items()},
            title="Cumulative gain of hidden seeds",
            x_label="share of candidates",
            y_label="share of hidden seeds",
            diagonal=True,
        ),
        "Dashed diagonal: random targeting.",
    )
    page.heading("Scoring groups and packages")
    page.table(
        ["group", "label", "devices", "cut score", "planted-buyer rate", "mean true propensity"],
        [
            [
                g["group"],
                g["label"],
                g["devices"],
                g["cut_score"],
                g["planted_buyer_rate"],
                g["mean_propensity"],
            ]
            for g in metrics["groups"]
        ],
        digits=4,
    )
    page.kv({f"excluded: {_REASONS.get(k, k)}": v for k, v in metrics["excluded"].items()})
    page.heading("Group 1 persona (guarded)")
    p = metrics["group_1_persona"]
    page.kv({"devices": p["devices"], "suppressed cells": p["suppressed_cells"], "k": p["guard_k"]})
    if p["top_tags"]:
        page.paragraph("Top tags: " + "; ".join(p["top_tags"]))
    page.heading("Closed loop (simulated delivery)")
    fb = metrics["feedback"]
    page.note("Delivery results are a simulation drawn from the synthetic world's propensities.")
    page.kv(fb["delivery"])
    page.table(
        ["outcome of the next period", "previous model (v1)", "retrained (v2)", "base"],
        [
            [
                label,
                fb[key]["previous"]["rate"],
                fb[key]["new"]["rate"],
                fb[key]["base_rate"],
            ]
            for key, label in (
                ("expected", "true purchase probability"),
                ("realised", "realised purchases"),
                ("planted", "planted-buyer share"),
            )
        ],
        caption="Group 1 (top 1 % of the same eligible devices)",
        digits=4,
    )
    page.write(path)


# --------------------------------------------------------------------------- the step


def _check_groups(result: ScoringResult, spec: GroupSpec) -> None:
    """The group sizes must be the quantiles of the eligible devices (ties join the higher)."""
    cumulative = 0
    for bound, size in zip(spec.bounds, result.group_sizes, strict=True):
        cumulative += size
        if cumulative < math.ceil(bound * result.eligible):
            raise IntegrityError(
                f"scoring groups hold {cumulative} devices, fewer than the top {bound:.0%} "
                f"of {result.eligible} eligible devices"
            )


def run(ctx: DemoContext) -> dict[str, dict[str, Any]]:
    """Train on the brand's buyers, print the lift table, package groups, loop once, retrain."""
    folder = ctx.folder("lookalike")
    for stale in ("models", "scoring", "delivery"):  # a previous run's model versions
        if (folder / stale).exists():
            shutil.rmtree(folder / stale)
    total_steps = 7
    ctx.progress("lookalike", 0, total_steps)

    # 1. Seeds: the brand's matched buyers, handed to the provider through PSI.
    phones, seed_stats = brand_seed_phones(ctx)
    if len(phones) == 0:
        raise DataError("no buyer among the matched members: nothing to learn a lookalike from")
    seeds = hand_over_seeds(ctx, phones)
    seeds_path = folder / "seeds.parquet"
    pq.write_table(seeds, seeds_path)
    ctx.progress("lookalike", 1, total_steps)

    # 2. The provider's features (its tags + LBS tags from its own pings).
    table, lbs_info = provider_features(ctx)
    features_path = folder / "provider_features.parquet"
    row_group = max(1000, math.ceil(table.num_rows / 8))
    pq.write_table(table, features_path, row_group_size=row_group, compression="zstd")
    ids = table["device_id"].combine_chunks()
    engaged = engaged_devices(ctx)
    engaged_path = folder / "engaged_devices.parquet"
    pq.write_table(pa.table({"device_id": engaged}), engaged_path)
    ctx.progress("lookalike", 2, total_steps)

    # Grading only: the planted truth, aligned to the universe.
    truth = ctx.world.truth["propensity"]
    buyer = _np_bool(_aligned(ids, truth, "is_planted_buyer"))
    propensity = _np_float(_aligned(ids, truth, "propensity"))

    # 3. Train (hidden-seed evaluation, then the full model) and the logistic baseline.
    models = folder / "models"
    v1, evaluation = train_model(
        features_path,
        seeds_path,
        "phone",
        models / "v1",
        strategy=STRATEGY,
        exposed_path=engaged_path,
        truth_path=ctx.paths["truth/propensity"],
    )
    is_seed = _np_bool(pc.is_in(ids, value_set=seeds["device_id"].combine_chunks()))
    if int(is_seed.sum()) != int(v1.manifest["seeds_matched"]):
        raise IntegrityError(
            f"the model matched {v1.manifest['seeds_matched']} seed devices, "
            f"the seed PSI gave {int(is_seed.sum())}"
        )
    baseline = evaluate_holdout(
        LookalikeModel("logistic", random_state=0), table, is_seed, truth=buyer
    )
    ctx.progress("lookalike", 3, total_steps)

    # 4. Score every device on the executor, cut groups, write packages.
    spec = GroupSpec.quantiles(GROUP_BOUNDS)
    scoring = folder / "scoring"
    with make_executor(ctx.config.executor, **ctx.executor_options()) as ex:
        result = score_universe(
            v1.path,
            features_path,
            scoring,
            spec=spec,
            executor=ex,
            progress=lambda stage, done, total: ctx.progress(f"lookalike: {stage}", done, total),
        )
    _check_groups(result, spec)
    scores = pq.read_table(result.scores_path)
    group = np.asarray(_aligned(ids, scores, "group").to_numpy(zero_copy_only=False), dtype=np.int8)
    eligible = _np_bool(_aligned(ids, scores, "excluded").is_null())
    old_score = _np_float(_aligned(ids, scores, "score"))
    groups = []
    for g, info in enumerate(result.to_dict()["groups"], start=1):
        sel = group == g
        groups.append(
            {
                **info,
                "planted_buyer_rate": float(buyer[sel].mean()) if sel.any() else None,
                "mean_propensity": float(propensity[sel].mean()) if sel.any() else None,
            }
        )
    base_rate = float(buyer[eligible].mean()) if eligible.any() else None
    guard = Guard.from_contract({}, min_cell_size=MIN_CELL)
    _, persona_summary = _group_persona(
        ids.filter(pa.array(group == 1)), table, scoring / "packages" / "group_1", guard
    )
    ctx.progress("lookalike", 4, total_steps)

    # 5. One delivery round (SIMULATION from the synthetic world): groups 1-3 are delivered.
    buys_1 = period_outcomes(ids, propensity, period=1, seed=ctx.config.seed)
    delivered = simulate_delivery(ids, group > 0, buys_1, seed=ctx.config.seed + 1)
    delivery = folder / "delivery"
    delivery.mkdir(parents=True, exist_ok=True)
    results_path = delivery / "results_period_1.csv"
    write_table(delivered, results_path, fmt="csv")
    results = read_results(results_path)  # the provider ingests the media's report
    outcomes = append_outcomes(v1.outcomes, results, 1)
    ctx.progress("lookalike", 5, total_steps)

    # 6. Retrain (warm start) as version 2, with lineage and the delivery as training data.
    seed_devices = ids.filter(pa.array(is_seed))
    new_model, new_mask = retrain(v1.model, table, seed_devices, outcomes, warm_start=True)
    new_score = new_model.score(table)
    compare_on = ~new_mask & eligible
    buys_2 = period_outcomes(ids, propensity, period=2, seed=ctx.config.seed)
    expected = compare_group(old_score, new_score, compare_on, propensity)
    realised = compare_group(old_score, new_score, compare_on, buys_2.astype(np.float64))
    planted = compare_group(old_score, new_score, compare_on, buyer.astype(np.float64))
    delivery_stats = {
        "delivered devices (groups 1-3)": results.num_rows,
        "exposed": int(pc.sum(results["exposed"]).as_py() or 0),
        "clicked": int(pc.sum(results["clicked"]).as_py() or 0),
        "purchased (new labelled buyers)": int(pc.sum(results["purchased"]).as_py() or 0),
        "seeds before → after": f"{int(is_seed.sum()):,} → {int(new_mask.sum()):,}",
    }
    feedback = {
        "delivery": delivery_stats,
        "expected": expected,
        "realised": realised,
        "planted": planted,
        "note": "SIMULATION: delivery outcomes and next-period purchases are drawn from the "
        "synthetic world's planted propensities",
    }
    phones_excl = v1.exclusions.filter(pc.is_valid(v1.exclusions["phone"]))["phone"]
    v2_path = save_model_dir(
        models / "v2",
        new_model,
        manifest={
            **{
                k: v
                for k, v in v1.manifest.items()
                if k in ("seed_column", "universe_column", "id_kind", "id_column")
            },
            "training_data": {
                **v1.manifest["training_data"],
                "results_period_1": data_entry(results_path, results.num_rows),
            },
            "seeds_matched": int(new_mask.sum()),
            "outcome_rows": outcomes.num_rows,
        },
        metrics={"period": 1, "warm_start": True, "comparison": feedback},
        exclusions=exclusions_table(
            ids.filter(pa.array(new_mask)), phones_excl.combine_chunks(), engaged
        ),
        outcomes=outcomes,
        parent=v1,
    )
    v2 = load_model_dir(v2_path)
    Page(f"Lookalike model v{v2.version}", "Retrained on seeds + delivered buyers").kv(
        {
            "parent": f"v{v1.version} ({v1.manifest['model_sha256'][:12]}…)",
            **delivery_stats,
            "group 1 true purchase probability, v1 → v2": (
                f"{expected['previous']['rate']:.4f} → {expected['new']['rate']:.4f}"
            ),
        }
    ).write(v2_path / "report.html")
    ctx.progress("lookalike", 6, total_steps)

    # 7. Everything this step measured, as JSON and a report page.
    evaluations = {STRATEGY: evaluation, "logistic (baseline)": baseline}
    metrics: dict[str, Any] = {
        "seeds": {
            **seed_stats,
            "seed devices (provider, PSI)": int(is_seed.sum()),
            "hidden seeds": evaluation.hidden_seeds,
        },
        "features": {"universe rows": table.num_rows, **lbs_info},
        "evaluation": {k: v.to_dict() for k, v in evaluations.items()},
        "groups": groups,
        "eligible": result.eligible,
        "excluded": result.excluded,
        "eligible_planted_buyer_rate": base_rate,
        "packages": result.packages,
        "group_1_persona": persona_summary,
        "feedback": feedback,
        "lineage": lineage(v2_path),
    }
    (folder / "metrics.json").write_text(
        json.dumps(metrics, indent=2, default=str), encoding="utf-8"
    )
    _write_report(folder / "report.html", metrics)
    ctx.artifacts["lookalike"] = metrics
    ctx.progress("lookalike", total_steps, total_steps)

    gbm, base = _lift_cells(evaluation), _lift_cells(baseline)
    lift: dict[str, Any] = {
        "seeds": (
            f"{seed_stats['matched buyers (seed phones)']:,} matched buyers (labeled PSI + "
            f"brand orders) → {int(is_seed.sum()):,} provider devices (seed PSI, provider "
            f"receives); {evaluation.hidden_seeds} hidden for evaluation"
        ),
        "features": (
            f"provider tags + LBS tags ({lbs_info['devices with LBS tags']:,} devices pinged)"
        ),
    }
    for k in sorted(gbm):
        lift[f"top {k}% {STRATEGY}"] = gbm[k]
        lift[f"top {k}% logistic"] = base[k]
    lift["PU-AUC bagging / logistic"] = f"{evaluation.auc_pu:.3f} / {baseline.auc_pu:.3f}"
    lift["planted-buyer base rate (candidates)"] = _rate(evaluation.true_base_rate)
    lift["model"] = f"{v1.path} (report.html, metrics.json)"

    pkg = result.packages or {}
    pkg_rows: dict[str, Any] = {}
    for row, package in zip(groups, pkg.get("groups", []), strict=False):
        files = ", ".join(f"{name} {f['ids']:,}" for name, f in package["files"].items())
        pkg_rows[f"group {row['group']} ({row['label']})"] = (
            f"{row['devices']:,} devices · planted-buyer rate "
            f"{_rate(row['planted_buyer_rate'])} · {files}"
        )
    pkg_rows["eligible devices (planted-buyer rate)"] = f"{result.eligible:,} ({_rate(base_rate)})"
    pkg_rows["excluded (never packaged)"] = ", ".join(
        f"{_REASONS.get(k, k)} {v:,}" for k, v in sorted(result.excluded.items())
    )
    pkg_rows["group 1 persona (guarded, k=50)"] = (
        "; ".join(persona_summary["top_tags"][:3]) or "all cells withheld"
    ) + f" · {persona_summary['suppressed_cells']} cells suppressed"
    pkg_rows["packages (to the media platform)"] = (
        f"{scoring / 'packages'} — hashed-ID files, an exchange format, not anonymisation"
    )

    loop: dict[str, Any] = {
        "delivery (SIMULATION from the synthetic world)": (
            f"{delivery_stats['delivered devices (groups 1-3)']:,} delivered, "
            f"{delivery_stats['exposed']:,} exposed, {delivery_stats['clicked']:,} clicked, "
            f"{delivery_stats['purchased (new labelled buyers)']:,} bought"
        ),
        "retrained": f"v{v2.version} (warm start), seeds {delivery_stats['seeds before → after']}",
        "group 1 next-period true buyer rate, v1 → v2": (
            f"{expected['previous']['rate']:.4f} → {expected['new']['rate']:.4f} "
            f"(lift {expected['lift']:.2f}; base {expected['base_rate']:.4f})"
            if expected["lift"] is not None
            else f"{expected['previous']['rate']:.4f} → {expected['new']['rate']:.4f}"
        ),
        "group 1 realised next-period purchases, v1 → v2": (
            f"{realised['previous']['rate']:.4f} → {realised['new']['rate']:.4f}"
        ),
        "models": f"{models} (v1 → v2 lineage), report {folder / 'report.html'}",
    }
    return {
        "9 · TA scoring: lift table (hidden seeds)": lift,
        "9 · TA scoring: groups and packages": pkg_rows,
        "9 · TA scoring: closed loop": loop,
    }
