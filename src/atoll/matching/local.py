"""Run both parties of a matching job in one process (``atoll psi local``, tests).

Why: the single-process form must exercise exactly what the two-process form
does -- the same jobs, sessions, machines, codec and checks -- with only the
transport replaced by memory. This runner is the reference driver of the
:mod:`atoll.matching.session` contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from atoll.errors import AtollError, LocalProtocolError
from atoll.execution import Executor, make_executor
from atoll.matching.engine import BuiltinEngine, PsiEngine
from atoll.matching.session import INITIATOR_ROLES, PartyJob, PartySession, canonical_params

__all__ = ["AuditHook", "StageProgress", "run_local"]

#: Receives audit events: ``(event, fields)``; fields are JSON-able, never row data.
AuditHook = Callable[[str, dict[str, Any]], None]
#: Progress: ``(stage_index, stage_label, buckets_done, buckets_total)``.
StageProgress = Callable[[int, str, int, int], None]


def _pairs(a: PartyJob, b: PartyJob) -> Iterator[tuple[PartySession, PartySession]]:
    sa, sb = a.sessions(), b.sessions()
    while True:
        try:
            x = next(sa)
        except StopIteration:
            x = None
        try:
            y = next(sb)
        except StopIteration:
            y = None
        if x is None and y is None:
            return
        if x is None or y is None:
            raise LocalProtocolError("the two parties have different numbers of stages")
        yield x, y


def run_local(
    a: PartyJob,
    b: PartyJob,
    *,
    engine: PsiEngine | None = None,
    executor: Executor | None = None,
    progress: StageProgress | None = None,
    audit: AuditHook | None = None,
) -> tuple[Any, Any]:
    """Run jobs ``a`` and ``b`` against each other; returns ``(a.finish(), b.finish())``.

    The initiator's machine runs as the pair's first party. ``executor``
    defaults to an inline executor; it is entered here if not running yet.
    Errors propagate after an ``error`` audit event; nothing partial is returned.
    """
    engine = engine or BuiltinEngine()
    caller_a = a
    own_executor = executor is None
    ex = executor or make_executor("inline")
    note = audit or (lambda event, fields: None)
    try:
        a.agree(b.params())
        b.agree(a.params())
        params = a.params()
        engine.check(params)
        first_role = INITIATOR_ROLES.get(str(params.get("protocol")), a.role)
        if b.role == first_role:
            a, b = b, a
        note("start", {"params": canonical_params(params), "engine": engine.name})
        entered = False
        if own_executor or not ex.running:
            ex.__enter__()
            entered = True
        try:
            for sa, sb in _pairs(a, b):
                pa_, pb_ = sa.params(), sb.params()
                if (pa_.get("stage"), pa_.get("id_kind")) != (pb_.get("stage"), pb_.get("id_kind")):
                    raise LocalProtocolError(
                        f"stage mismatch: {pa_.get('id_kind')} vs {pb_.get('id_kind')}"
                    )
                label = str(pa_.get("id_kind", sa.stage))
                total = len(sa.buckets())
                if progress is not None:
                    progress(sa.stage, label, 0, total)

                def tick(
                    done: int, stage: int = sa.stage, lab: str = label, n: int = total
                ) -> None:
                    if progress is not None:
                        progress(stage, lab, done, n)

                for out in engine.run_stage(sa, sb, ex, progress=tick):
                    sa.accept(out.bucket, out.a_result, out.a_traffic)
                    sb.accept(out.bucket, out.b_result, out.b_traffic)
                ra, rb = sa.finish(), sb.finish()
                note(
                    "stage",
                    {"stage": sa.stage, "id_kind": label, a.role: _brief(ra), b.role: _brief(rb)},
                )
        finally:
            if entered:
                ex.__exit__(None, None, None)
        oa, ob = a.finish(), b.finish()
        note("finish", {a.role: _brief(oa), b.role: _brief(ob)})
    except AtollError as exc:
        note("error", {"type": type(exc).__name__, "message": str(exc)})
        raise
    return (oa, ob) if a is caller_a else (ob, oa)


def _brief(obj: Any) -> dict[str, Any]:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        data = to_dict()
        if isinstance(data, dict):
            data.pop("stages", None)
            data.pop("params", None)
            data.pop("invalid_samples", None)
            return data
    return {"value": repr(obj)}
