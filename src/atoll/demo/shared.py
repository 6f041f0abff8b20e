"""Results several demo steps build on, computed once and kept in the context.

Why: the insight, island and lookalike steps all start from "the brand's
members that the provider also knows, with the provider's tags" — the output
of labeled PSI (tag augmentation). It is computed here once, through the real
protocol (OPRF-based labeled PSI, both parties in one process), and cached in
``ctx.artifacts["matched"]``.
"""

from __future__ import annotations

import pyarrow as pa

from atoll.demo.context import DemoContext
from atoll.errors import IntegrityError
from atoll.execution import make_executor
from atoll.matching import MatchOutcome, PsiOptions, psi_party, run_local

__all__ = ["TAG_COLUMNS", "matched_members"]

#: The provider's tag columns the brand asks for (the persona dimensions).
TAG_COLUMNS: tuple[str, ...] = (
    "gender",
    "age_band",
    "province",
    "city",
    "city_tier",
    "phone_brand",
    "consumption_level",
    "parenting_status",
    "marital_status",
    "occupation",
)


def matched_members(ctx: DemoContext) -> pa.Table:
    """The brand's members matched on phone, with the provider's tags (labeled PSI).

    The brand is the receiver: it learns which of its members the provider
    knows and their tags, nothing else; the provider learns the brand's set
    size. The result (member columns + the tag columns) is cached in
    ``ctx.artifacts["matched"]`` and the outcome in ``ctx.artifacts["matched_outcome"]``.
    """
    cached = ctx.artifacts.get("matched")
    if isinstance(cached, pa.Table):
        return cached
    members = ctx.tables["brand/members"]
    universe = ctx.tables["provider/universe"]
    tags = tuple(c for c in TAG_COLUMNS if c in universe.schema.names)
    provider_cols = universe.select(["phone", *tags])
    # The brand's own demographic columns would collide with the provider's tags.
    brand_cols = members.select([c for c in members.schema.names if c not in tags])
    buckets = max(1, min(ctx.config.buckets, 16))
    receiver = psi_party(
        brand_cols,
        "phone",
        role="receiver",
        options=PsiOptions(buckets=buckets, labels=()),
        source="brand/members",
    )
    sender = psi_party(
        provider_cols,
        "phone",
        role="sender",
        options=PsiOptions(buckets=buckets, labels=tags),
        source="provider/universe",
    )
    with make_executor(ctx.config.executor, **ctx.executor_options()) as ex:
        outcome, _ = run_local(
            receiver,
            sender,
            executor=ex,
            progress=lambda i, label, done, total: ctx.progress(
                f"labeled PSI ({label})", done, total
            ),
        )
    if not isinstance(outcome, MatchOutcome) or outcome.table is None:
        raise IntegrityError("labeled PSI returned no matched rows to the receiver (the brand)")
    ctx.artifacts["matched"] = outcome.table
    ctx.artifacts["matched_outcome"] = outcome
    return outcome.table
