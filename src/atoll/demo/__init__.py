"""The closed-loop demo: every built capability, end to end, on a synthetic world.

Why: one command (``make demo`` / ``atoll demo``) shows a new user the whole
flow on data that looks like theirs, with embedded defaults (local files,
DuckDB, the local executor, in-process protocol pairs and a loopback island)
and no external server. The steps, in order:

1–4. each party prepares its own data (:mod:`atoll.demo.core`): the synthetic
     world, validation and ID normalization, the provider's OneID graph,
     bucketing with the collaboration's bucket function, a map over buckets;
5.   cryptographic matching (:mod:`atoll.demo.step_matching`): PSI match rates
     per ID type, labeled PSI tag augmentation, intersection-sum;
6.   insight and measurement (:mod:`atoll.demo.step_insight`): invalid-traffic
     filtering, persona/TGI of the matched audience, campaign attribution,
     LBS tags, all through the privacy guard;
7.   the secure island (:mod:`atoll.demo.step_island`): attestation, attested
     key release, sealed upload, an in-island match job, burn and receipts;
8.   covert query (:mod:`atoll.demo.step_covert`): a round in each mode and the
     provider's billing statement;
9.   TA scoring (:mod:`atoll.demo.step_lookalike`): train, lift table,
     packages, one simulated delivery round, retrain.

A summary (Markdown + JSON) records every number and where the outputs are.
"""

from __future__ import annotations

import importlib
import time

from atoll.demo.context import DemoConfig, DemoContext, ProgressFn, StepFn
from atoll.demo.core import DemoSummary, bucket_profile, run_core, write_summary

__all__ = ["STEPS", "DemoConfig", "DemoContext", "DemoSummary", "bucket_profile", "run_demo"]

#: The steps after data preparation: (title for timings, module with ``run(ctx)``).
STEPS: tuple[tuple[str, str], ...] = (
    ("matching (PSI, labeled PSI, intersection-sum)", "atoll.demo.step_matching"),
    ("insight (IVT, persona, attribution, LBS)", "atoll.demo.step_insight"),
    ("secure island", "atoll.demo.step_island"),
    ("covert query", "atoll.demo.step_covert"),
    ("TA scoring (lookalike)", "atoll.demo.step_lookalike"),
)


def _load(module: str) -> StepFn:
    """The step's ``run`` (imported when its turn comes, so its libraries load only then)."""
    fn: StepFn = importlib.import_module(module).run
    return fn


def run_demo(config: DemoConfig, *, progress: ProgressFn | None = None) -> DemoSummary:
    """Run the demo; write outputs under ``config.out``; return the summary."""
    step = progress or (lambda name, done, total: None)
    summary = DemoSummary(out=config.out)
    ctx: DemoContext = run_core(config, summary, step)
    for title, module in STEPS:
        fn = _load(module)
        t0 = time.perf_counter()
        summary.sections.update(fn(ctx))
        ctx.timings[title] = f"{time.perf_counter() - t0:.1f} s"
    summary.sections["timings"] = ctx.timings
    write_summary(summary, config)
    return summary
