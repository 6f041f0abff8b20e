"""Demo step 5 · cryptographic matching: PSI, campaign reach, tags, multi-ID waterfall, spend.

Why: matching is where a clean room starts ("撞库"): before any insight, the
brand must learn which of its members the provider knows, with which tags,
and how much its exposed customers spent -- and neither side may see the
rest of the other's list. This step runs every protocol of the PSI family
through :mod:`atoll.matching` (the same jobs, sessions, machines and binary
codec as ``atoll psi local`` and the two-process ``psi serve``/``psi join``;
here both parties run in one process with an in-memory transport) on the
demo's executor, and reports for each protocol what each party learned,
the bytes exchanged and the seconds it took:

1. **the match** (ECDH PSI, brand = receiver): the brand learns which of its
   members the provider knows; the provider learns the brand's set size;
2. **campaign reach, a count only** (cardinality-only ECDH PSI, reveal to
   both): how many of the brand's members the provider's campaign exposed
   -- brand and provider learn that number and nothing else (what the
   provider may learn about the brand's members);
3. **tag augmentation** (OPRF-based labeled PSI, through
   :func:`atoll.demo.shared.matched_members`): the brand receives the
   provider's tags for its matched members only; coverage per tag;
4. **multi-ID waterfall** (ECDH PSI per ID type, priority OAID → IDFA →
   IMEI-MD5): the media platform's device links against the provider
   universe; a row matched at a higher priority is not matched again;
5. **match rates** per ID type and per member level through
   :func:`atoll.analytics.match_rate.match_rate` on the PSI results, guarded
   (k = :data:`K`), written as CSV and JSON;
6. **intersection-sum** (exponential ElGamal): the brand's orders (phone,
   amount) against the phones of the devices the provider exposed to the
   campaign -- the number and total spend of exposed-and-matched customers,
   nothing per person; withheld below :data:`K` matches.

Where the data comes from (the demo's honesty rule: a party touches only
what it would have). The brand uses its members and orders; the provider
its universe and exposure log (exposure → device → phone is the provider's
own join). The synthetic world links media accounts to device IDs
(``media/users``) but does not write the advertising IDs a media app reads
from those devices; :func:`media_device_ids` supplies them from the world's
devices (the world keeps every device's OAID/IDFA/IMEI in one place, the
provider universe table) and hashes IMEIs to MD5, the form media platforms
exchange. That is world-building, not a computation across parties: the
provider's tags, phones and membership never reach the media side. Because
the world generates each device's IDs once, every media device that has an
advertising ID is in the universe -- the waterfall's point here is the
priority rule and the per-type split, not a realistic media match rate.

Outputs under ``out/matching/`` (see :func:`run`); ``ctx.artifacts["matching"]``
holds the :class:`MatchingResult` for later steps and tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.analytics.match_rate import ALL_SOURCES, MatchRateReport, match_rate
from atoll.analytics.paths import CampaignWindow
from atoll.data.io import write_table
from atoll.demo.context import DemoContext
from atoll.demo.shared import TAG_COLUMNS, matched_members
from atoll.errors import DataError, IntegrityError
from atoll.execution import Executor, make_executor
from atoll.ids.normalize import hash_array, normalize_array
from atoll.matching import (
    MatchOutcome,
    OutputGuardError,
    PartyJob,
    PsiOptions,
    SumJobOutcome,
    SumOptions,
    psi_party,
    run_local,
    sum_party,
)
from atoll.matching.report import MATCHED_BY_COLUMN
from atoll.privacy import Guard, PartyRule, PrivacyPolicy

__all__ = [
    "MAX_BUCKETS",
    "WATERFALL",
    "K",
    "MatchingResult",
    "ProtocolRun",
    "brand_order_values",
    "exposed_phones",
    "exposed_spend",
    "media_device_ids",
    "provider_device_ids",
    "run",
]

#: Minimum cell size of the demo collaboration (match-rate cells, intersection-sum matches).
K = 50
#: Most buckets a matching job uses in the demo (fewer, larger buckets cost less overhead).
MAX_BUCKETS = 16
#: The media waterfall's ID types, in priority order.
WATERFALL: tuple[str, ...] = ("oaid", "idfa", "imei_md5")
_TRANSPORT = "in-memory pair through the real message codec"
_UNKNOWN = "unknown"


@dataclass(frozen=True)
class ProtocolRun:
    """The cost of one protocol run between two parties (``a`` speaks first)."""

    protocol: str
    a: str
    b: str
    bytes_a_to_b: int | None
    bytes_b_to_a: int | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "protocol": self.protocol,
            "parties": [self.a, self.b],
            "bytes_a_to_b": self.bytes_a_to_b,
            "bytes_b_to_a": self.bytes_b_to_a,
            "seconds": round(self.seconds, 3),
            "transport": _TRANSPORT,
        }


@dataclass(frozen=True)
class MatchingResult:
    """What the matching step computed (``ctx.artifacts["matching"]``).

    ``brand_match`` and ``waterfall`` are the receivers' outcomes (brand,
    media); ``reach`` is the count both parties learned from the
    cardinality-only run (members exposed to the campaign; ``reach_outcome``
    is the brand's outcome of it); ``spend`` is ``None`` when the guard
    withheld it (``spend_withheld`` says why).
    """

    reach: int
    reach_outcome: MatchOutcome
    brand_match: MatchOutcome
    tagged: pa.Table
    media_devices: pa.Table
    waterfall: MatchOutcome
    brand_rates: MatchRateReport
    media_rates: MatchRateReport
    spend: SumJobOutcome | None
    spend_withheld: str | None
    runs: dict[str, ProtocolRun]


# --------------------------------------------------------------------------- inputs


def media_device_ids(ctx: DemoContext) -> pa.Table:
    """The media platform's device links with the advertising IDs its app reads from them.

    One row per ``media/users`` link (same order): ``media_user_id,
    device_id, oaid, idfa, imei_md5``. The advertising IDs are the world's
    IDs of that device (see the module docs: the world does not generate the
    media's copy separately); IMEIs are normalized and hashed to MD5 as media
    platforms keep them. Nothing else about the device is taken.
    """
    links = ctx.world.tables["media/users"]
    devices = ctx.world.tables["provider/universe"].select(["device_id", "oaid", "idfa", "imei"])
    at = pc.index_in(links["device_id"], value_set=devices["device_id"].combine_chunks())
    ids = devices.take(at)
    imei = normalize_array(ids["imei"], "imei", source="media device links", column="imei")
    return pa.table(
        {
            "media_user_id": links["media_user_id"],
            "device_id": links["device_id"],
            "oaid": ids["oaid"],
            "idfa": ids["idfa"],
            "imei_md5": hash_array(imei.values, "imei", "md5"),
        }
    )


def provider_device_ids(universe: pa.Table) -> pa.Table:
    """The provider's advertising IDs offered to the waterfall: ``oaid, idfa, imei_md5``.

    The provider hashes its own IMEIs (normalized first) to the exchange form.
    """
    imei = normalize_array(universe["imei"], "imei", source="provider/universe", column="imei")
    return pa.table(
        {
            "oaid": universe["oaid"],
            "idfa": universe["idfa"],
            "imei_md5": hash_array(imei.values, "imei", "md5"),
        }
    )


def exposed_phones(ctx: DemoContext) -> pa.Table:
    """The provider's own join: devices in its exposure log → their known phones (``phone``).

    Every device in the log counts, invalid traffic included (the insight
    step filters it for attribution). Devices without a known phone cannot
    take part and are left out (the summary counts the rest).
    """
    universe = ctx.tables["provider/universe"]
    exposed = pc.unique(ctx.tables["provider/exposures"]["device_id"].combine_chunks())
    rows = universe.filter(pc.is_in(universe["device_id"], value_set=exposed))
    return rows.filter(pc.is_valid(rows["phone"])).select(["phone"])


def _window(ctx: DemoContext) -> CampaignWindow:
    cfg = ctx.world.config
    return CampaignWindow(
        cfg.campaign_start, cfg.campaign_end, window_days=cfg.conversion_window_days
    )


def brand_order_values(ctx: DemoContext) -> pa.Table:
    """The brand's orders with a phone: ``phone, amount, amount_in_window``.

    ``amount_in_window`` is the amount of orders placed in the campaign's
    conversion window (campaign start to campaign end + the world's window
    days, Asia/Shanghai), else 0. Orders keyed by member ID only (offline
    stores) have no phone and cannot be matched on phone.
    """
    orders = ctx.tables["brand/orders"]
    orders = orders.filter(pc.is_valid(orders["phone"]))
    window = _window(ctx)
    t_us = pc.cast(orders["order_time"], pa.int64())
    inside = pc.and_(
        pc.greater_equal(t_us, window.start_ms * 1000), pc.less(t_us, window.window_end_ms * 1000)
    )
    amount = orders["amount"]
    zero = pa.scalar(Decimal(0), amount.type)
    return pa.table(
        {
            "phone": orders["phone"],
            "amount": amount,
            "amount_in_window": pc.if_else(inside, amount, zero),
        }
    )


# --------------------------------------------------------------------------- running


def _guard(*parties: str) -> Guard:
    """The demo collaboration's output guard: every party asks for k = K."""
    rules = [PartyRule(p, K) for p in parties]
    return Guard(PrivacyPolicy.strictest(rules, collaboration="atoll-demo"))


def _pair(
    ctx: DemoContext, ex: Executor, what: str, a: PartyJob, b: PartyJob
) -> tuple[Any, Any, float]:
    """Run jobs ``a`` and ``b`` on the executor; return both outcomes and the wall time."""
    t0 = time.perf_counter()
    oa, ob = run_local(
        a,
        b,
        executor=ex,
        progress=lambda _i, label, done, total: ctx.progress(
            f"matching: {what} ({label})", done, total
        ),
    )
    return oa, ob, time.perf_counter() - t0


def _reach(
    ctx: DemoContext, ex: Executor, buckets: int
) -> tuple[MatchOutcome, MatchOutcome, ProtocolRun]:
    """Cardinality-only PSI, reveal=both, members × exposed phones: the counts each learned."""
    opts = PsiOptions(buckets=buckets, cardinality_only=True, reveal="both")
    brand = psi_party(
        ctx.tables["brand/members"].select(["phone"]),
        "phone",
        role="receiver",
        options=opts,
        source="brand/members",
    )
    provider = psi_party(
        exposed_phones(ctx), "phone", role="sender", options=opts, source="provider/exposures"
    )
    ob, op, seconds = _pair(ctx, ex, "campaign reach", brand, provider)
    assert isinstance(ob, MatchOutcome)
    assert isinstance(op, MatchOutcome)
    if ob.cardinality is None or op.cardinality is None:
        raise IntegrityError("cardinality-only PSI returned no count")
    run = ProtocolRun(
        "ECDH PSI, cardinality only, reveal=both",
        "brand",
        "provider",
        ob.bytes_sent,
        ob.bytes_received,
        seconds,
    )
    return ob, op, run


def _brand_match(ctx: DemoContext, ex: Executor, buckets: int) -> tuple[MatchOutcome, ProtocolRun]:
    """ECDH PSI on phone, brand = receiver (reveal=receiver)."""
    opts = PsiOptions(buckets=buckets)
    members = ctx.tables["brand/members"].select(["member_id", "phone", "member_level"])
    brand = psi_party(members, "phone", role="receiver", options=opts, source="brand/members")
    provider = psi_party(
        ctx.tables["provider/universe"].select(["phone"]),
        "phone",
        role="sender",
        options=opts,
        source="provider/universe",
    )
    ob, _, seconds = _pair(ctx, ex, "brand match", brand, provider)
    assert isinstance(ob, MatchOutcome)
    if ob.table is None:
        raise IntegrityError("ECDH PSI returned no matched rows to the receiver (the brand)")
    run = ProtocolRun(
        "ECDH PSI, reveal=receiver", "brand", "provider", ob.bytes_sent, ob.bytes_received, seconds
    )
    return ob, run


def _waterfall(
    ctx: DemoContext, ex: Executor, buckets: int, devices: pa.Table
) -> tuple[MatchOutcome, ProtocolRun]:
    """The media's device links against the provider universe, OAID → IDFA → IMEI-MD5."""
    opts = PsiOptions(buckets=buckets)
    media = psi_party(devices, WATERFALL, role="receiver", options=opts, source="media/users")
    provider = psi_party(
        provider_device_ids(ctx.tables["provider/universe"]),
        WATERFALL,
        role="sender",
        options=opts,
        source="provider/universe",
    )
    om, _, seconds = _pair(ctx, ex, "media waterfall", media, provider)
    assert isinstance(om, MatchOutcome)
    if om.table is None or om.matched_rows is None:
        raise IntegrityError("the waterfall returned no matched rows to the receiver (the media)")
    run = ProtocolRun(
        "multi-ID waterfall (ECDH PSI per ID type), reveal=receiver",
        "media",
        "provider",
        om.bytes_sent,
        om.bytes_received,
        seconds,
    )
    return om, run


def exposed_spend(
    ctx: DemoContext, ex: Executor, *, buckets: int, min_cardinality: int = K
) -> tuple[SumJobOutcome, SumJobOutcome, float]:
    """Intersection-sum: brand orders (values) against the provider's exposed phones (ids).

    Returns both parties' outcomes and the wall time; raises
    :class:`~atoll.matching.OutputGuardError` below ``min_cardinality`` matches.
    """
    opts = SumOptions(buckets=buckets, min_cardinality=min_cardinality)
    brand = sum_party(
        brand_order_values(ctx),
        "phone",
        role="values",
        value_columns=("amount", "amount_in_window"),
        options=opts,
        source="brand/orders",
    )
    provider = sum_party(
        exposed_phones(ctx), "phone", role="ids", options=opts, source="provider/exposures"
    )
    t0 = time.perf_counter()
    ob, op = run_local(
        brand,
        provider,
        executor=ex,
        progress=lambda _i, label, done, total: ctx.progress(
            f"matching: intersection-sum ({label})", done, total
        ),
    )
    assert isinstance(ob, SumJobOutcome)
    assert isinstance(op, SumJobOutcome)
    return ob, op, time.perf_counter() - t0


# --------------------------------------------------------------------------- match rates


def _stage_of(outcome: MatchOutcome, rows: int, kinds: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Per receiver row: the index of the waterfall stage that matched it, or -1."""
    stage = np.full(rows, -1, dtype=np.int64)
    assert outcome.table is not None
    assert outcome.matched_rows is not None
    labels = outcome.table[MATCHED_BY_COLUMN].to_pylist()
    stage[outcome.matched_rows] = [kinds.index(str(label)) for label in labels]
    return stage


def _waterfall_rates(devices: pa.Table, outcome: MatchOutcome, guard: Guard) -> MatchRateReport:
    """Match rates per waterfall stage: each ID type over the rows still unmatched at its stage.

    A row matched at a higher priority never takes part in a later stage, so
    its lower-priority IDs are blanked in the table handed to ``match_rate``
    (its ``with_id`` is the stage's eligible rows); the matched-ID table
    holds, per type, the IDs of the rows that stage matched.
    """
    stage = _stage_of(outcome, devices.num_rows, WATERFALL)
    view: dict[str, pa.Array] = {}
    ids: list[pa.Array] = []
    types: list[pa.Array] = []
    for k, label in enumerate(WATERFALL):
        column = devices[label].combine_chunks()
        taken_before = pa.array((stage >= 0) & (stage < k))
        view[label] = pc.if_else(taken_before, pa.scalar(None, column.type), column)
        here = pa.array(np.flatnonzero(stage == k), type=pa.int64())
        normalized = normalize_array(column.take(here), label).values
        ids.append(normalized.cast(pa.string()))
        types.append(pa.array([label] * len(normalized), pa.string()))
    matched = pa.table({"id_type": pa.concat_arrays(types), "id": pa.concat_arrays(ids)})
    return match_rate(
        pa.table(view),
        id_columns={label: label for label in WATERFALL},
        matched=matched,
        guard=guard,
        source="media/users",
    )


def _check_rates(
    brand: MatchRateReport, match: MatchOutcome, media: MatchRateReport, waterfall: MatchOutcome
) -> None:
    """The guarded match-rate counts equal the protocols' own counts (where released)."""
    matched = 0 if match.matched_rows is None else len(match.matched_rows)
    pairs: list[tuple[str, Any, int | None]] = [
        ("brand phone", brand.row("phone")["matched"], matched),
    ]
    for stage in waterfall.stages:
        row = media.row(stage.kind)
        pairs.append((f"media {stage.kind}", row["matched"], stage.matched_rows))
        pairs.append((f"media {stage.kind} rows with the ID", row["with_id"], stage.eligible_rows))
    for what, released, expected in pairs:
        if released is not None and released != expected:
            raise IntegrityError(f"match rate {what}: report says {released}, PSI said {expected}")


def _rate_text(row: Mapping[str, Any]) -> str:
    if row["matched"] is None:
        return f"withheld ({row['flag']})"
    rate = row["match_rate"]
    share = "–" if rate is None else f"{rate:.1%}"
    return f"{row['matched']:,} / {row['with_id']:,} = {share}"


def _write_rates(report: MatchRateReport, folder: Path, name: str) -> list[Path]:
    csv_path = write_table(report.table, folder / f"{name}.csv")
    json_path = folder / f"{name}.json"
    _json({"rows": report.table.to_pylist(), "privacy": report.guarded.summary()}, json_path)
    return [csv_path, json_path]


# --------------------------------------------------------------------------- reporting


def _json(obj: Any, path: Path) -> Path:
    try:
        path.write_text(
            json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc})") from exc
    return path


def _bytes(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} MB"
    if n >= 1000:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def _cost(run: ProtocolRun) -> str:
    return (
        f"{run.a}→{run.b} {_bytes(run.bytes_a_to_b)}, {run.b}→{run.a} {_bytes(run.bytes_b_to_a)}, "
        f"{run.seconds:.1f} s"
    )


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _known(column: pa.ChunkedArray | pa.Array) -> int:
    """Rows whose tag is known: not null and not the label ``unknown`` (lists: non-empty)."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = pc.fill_null(pc.list_value_length(column), 0)
        return int(pc.sum(pc.greater(lengths, 0)).as_py() or 0)
    text = pc.cast(column, pa.string())
    known = pc.and_(pc.is_valid(text), pc.fill_null(pc.not_equal(text, _UNKNOWN), False))
    return int(pc.sum(known).as_py() or 0)


def _money(units: int, decimals: int) -> str:
    value = Decimal(units).scaleb(-decimals)
    return f"CNY {value:,.{decimals}f}"


def run(ctx: DemoContext) -> dict[str, dict[str, Any]]:
    """Run step 5 (matching); write ``out/matching/``; return its summary sections.

    Files: ``brand_matched_members.parquet`` and ``brand_members_tagged.parquet``
    (the brand's outputs), ``media_matched_devices.parquet`` (the media's),
    ``brand_match_rate.{csv,json}``, ``media_match_rate.{csv,json}``,
    ``exposed_spend.json`` and ``matching.json`` (every protocol's report,
    counts only, and the costs).
    """
    folder = ctx.folder("matching")
    buckets = max(1, min(ctx.config.buckets, MAX_BUCKETS))
    runs: dict[str, ProtocolRun] = {}
    reports: dict[str, Any] = {}

    # Tag augmentation first: the shared helper runs labeled PSI on its own executor.
    t0 = time.perf_counter()
    tagged = matched_members(ctx)
    tag_outcome = ctx.artifacts.get("matched_outcome")
    if not isinstance(tag_outcome, MatchOutcome):
        raise IntegrityError("labeled PSI left no outcome in ctx.artifacts['matched_outcome']")
    runs["labeled PSI"] = ProtocolRun(
        "labeled PSI (OPRF), tags to the receiver",
        "brand",
        "provider",
        tag_outcome.bytes_sent,
        tag_outcome.bytes_received,
        time.perf_counter() - t0,
    )
    devices = media_device_ids(ctx)
    spend: SumJobOutcome | None = None
    withheld: str | None = None
    with make_executor(ctx.config.executor, **ctx.executor_options()) as ex:
        match, runs["ECDH PSI"] = _brand_match(ctx, ex, buckets)
        reach_brand, reach_provider, runs["campaign reach"] = _reach(ctx, ex, buckets)
        waterfall, runs["multi-ID waterfall"] = _waterfall(ctx, ex, buckets, devices)
        t0 = time.perf_counter()
        try:
            spend, spend_ids, seconds = exposed_spend(ctx, ex, buckets=buckets, min_cardinality=K)
            runs["intersection-sum"] = ProtocolRun(
                "intersection-sum (exponential ElGamal), sums to both",
                "provider",
                "brand",
                spend.stage.bytes_received,
                spend.stage.bytes_sent,
                seconds,
            )
            reports["intersection_sum"] = {
                "brand": spend.to_dict(),
                "provider": spend_ids.to_dict(),
            }
        except OutputGuardError as exc:
            withheld = str(exc)
            runs["intersection-sum"] = ProtocolRun(
                "intersection-sum (exponential ElGamal), withheld by the guard",
                "provider",
                "brand",
                None,
                None,
                time.perf_counter() - t0,
            )
            reports["intersection_sum"] = {"withheld": withheld}
    reach = reach_brand.cardinality
    if reach is None or reach != reach_provider.cardinality:
        raise IntegrityError(
            f"cardinality-only PSI: brand got {reach}, provider {reach_provider.cardinality}"
        )

    # Match rates through the analytics module, on the PSI results.
    assert match.table is not None
    assert waterfall.table is not None
    brand_rates = match_rate(
        ctx.tables["brand/members"].select(["member_id", "phone", "member_level"]),
        id_columns={"phone": "phone"},
        matched=pa.table(
            {
                "id_type": pa.array(["phone"] * match.table.num_rows, pa.string()),
                "id": match.table["phone"],
            }
        ),
        source_column="member_level",
        guard=_guard("brand", "provider"),
        source="brand/members",
    )
    media_rates = _waterfall_rates(devices, waterfall, _guard("media", "provider"))
    _check_rates(brand_rates, match, media_rates, waterfall)

    # Files.
    files: list[Path] = [
        write_table(
            match.table.select(["member_id", "member_level", MATCHED_BY_COLUMN]),
            folder / "brand_matched_members.parquet",
        ),
        write_table(
            tagged.select(["member_id", *[c for c in TAG_COLUMNS if c in tagged.column_names]]),
            folder / "brand_members_tagged.parquet",
        ),
        write_table(
            waterfall.table.select(["media_user_id", "device_id", MATCHED_BY_COLUMN]),
            folder / "media_matched_devices.parquet",
        ),
        *_write_rates(brand_rates, folder, "brand_match_rate"),
        *_write_rates(media_rates, folder, "media_match_rate"),
    ]
    files.append(_json(reports.get("intersection_sum", {}), folder / "exposed_spend.json"))
    reports.update(
        {
            "campaign_reach": {
                "brand": reach_brand.to_dict(),
                "provider": reach_provider.to_dict(),
            },
            "brand_match": match.to_dict(),
            "labeled_psi": tag_outcome.to_dict(),
            "media_waterfall": waterfall.to_dict(),
            "costs": {name: r.to_dict() for name, r in runs.items()},
        }
    )
    files.append(_json(reports, folder / "matching.json"))

    result = MatchingResult(
        reach=reach,
        reach_outcome=reach_brand,
        brand_match=match,
        tagged=tagged,
        media_devices=devices,
        waterfall=waterfall,
        brand_rates=brand_rates,
        media_rates=media_rates,
        spend=spend,
        spend_withheld=withheld,
        runs=runs,
    )
    ctx.artifacts["matching"] = result
    return _sections(ctx, result, folder, files)


def _sections(
    ctx: DemoContext, r: MatchingResult, folder: Path, files: list[Path]
) -> dict[str, dict[str, Any]]:
    runs = r.runs
    stage = r.brand_match.stages[0]
    matched = len(r.brand_match.matched_rows) if r.brand_match.matched_rows is not None else 0
    members = stage.rows
    match_section: dict[str, Any] = {
        "protocol": f"ECDH PSI (ristretto255), brand = receiver, {stage.buckets} buckets, "
        f"{_TRANSPORT}, executor {ctx.config.executor}",
        "brand members (valid phone)": f"{members:,} ({stage.eligible_rows:,})",
        "provider phones, unique (all the brand learns of the provider's list)": (
            f"{stage.peer_unique:,}"
        ),
        "matched members": f"{matched:,}",
        "match rate": f"{_pct(matched, stage.eligible_rows)} of members with a valid phone",
        "the provider learned": f"the brand's set size ({stage.unique:,}) and per-bucket sizes",
        "cost": _cost(runs["ECDH PSI"]),
    }
    reach = r.reach_outcome.stages[0]
    reach_section: dict[str, Any] = {
        "protocol": "ECDH PSI, cardinality only, reveal=both (the doubly blinded list is "
        "shuffled); provider side: phones of the devices in its exposure log (its own join)",
        "brand members' unique phones × provider's exposed phones": (
            f"{reach.unique:,} × {reach.peer_unique:,}"
        ),
        "brand and provider both learned": (
            f"{r.reach:,} members were exposed to the campaign "
            f"({_pct(r.reach, reach.unique)}), not which ones"
        ),
        "what the provider may learn": "this count and the brand's set size "
        "(in the match above, the set size only)",
        "cost": _cost(runs["campaign reach"]),
    }
    tagged = r.tagged
    n_tagged = tagged.num_rows
    matched_ids = r.brand_match.table["member_id"] if r.brand_match.table is not None else []
    same = set(tagged["member_id"].to_pylist()) == set(pa.array(matched_ids).to_pylist())
    tag_section: dict[str, Any] = {
        "protocol": "labeled PSI (OPRF blind evaluation, labels sealed under F_k(y)), "
        "tags only for matched members",
        "members with tags": f"{n_tagged:,} (same members as the ECDH match: "
        + ("yes" if same else "NO")
        + ")",
    }
    for tag in TAG_COLUMNS:
        if tag in tagged.column_names:
            known = _known(tagged[tag])
            tag_section[f"tag {tag}: known"] = f"{known:,} ({_pct(known, n_tagged)})"
    tag_section["cost"] = _cost(runs["labeled PSI"])

    w = r.waterfall
    devices = r.media_devices
    accounts = len(pc.unique(devices["media_user_id"]))
    matched_accounts = len(pc.unique(w.table["media_user_id"])) if w.table is not None else 0
    several = _several_ids(devices)
    wf_section: dict[str, Any] = {
        "protocol": "multi-ID waterfall, ECDH PSI per ID type, media = receiver",
        "priority": " → ".join(WATERFALL),
        "media device links (accounts)": f"{devices.num_rows:,} ({accounts:,})",
        "links with several ID types (matched once, at the first)": f"{several:,}",
    }
    for s in w.stages:
        wf_section[f"stage {s.kind}: matched / eligible rows"] = (
            f"{s.matched_rows or 0:,} / {s.eligible_rows:,} "
            f"(provider offers {s.peer_unique:,} unique)"
        )
    total = len(w.matched_rows) if w.matched_rows is not None else 0
    wf_section["matched links (accounts)"] = (
        f"{total:,} of {devices.num_rows:,} ({matched_accounts:,} of {accounts:,} accounts)"
    )
    wf_section["where the media's IDs come from"] = (
        "the world's advertising IDs of each linked device (see step_matching docs): "
        "by construction every device with an ID is in the universe"
    )
    wf_section["cost"] = _cost(runs["multi-ID waterfall"])

    rates: dict[str, Any] = {
        "method": "atoll.analytics.match_rate on the PSI results, guarded (k = "
        f"{K}); waterfall types over the rows still unmatched at their stage",
    }
    for row in r.brand_rates.table.to_pylist():
        if row["id_type"] == "phone":
            label = "all members" if row["source"] == ALL_SOURCES else f"level {row['source']}"
            rates[f"brand phone · {label}"] = _rate_text(row)
    for row in r.media_rates.table.to_pylist():
        rates[f"media {row['id_type']}"] = _rate_text(row)
    rates["files"] = ", ".join(str(p.relative_to(ctx.out)) for p in files if "match_rate" in p.name)

    sum_section: dict[str, Any] = {
        "protocol": "intersection-sum with cardinality (exponential ElGamal over ristretto255): "
        "both learn the count and the sums, nothing per person",
    }
    values = brand_order_values(ctx)
    phones = exposed_phones(ctx)
    sum_section["brand orders with a phone (offline orders are keyed by member ID)"] = (
        f"{values.num_rows:,} of {ctx.tables['brand/orders'].num_rows:,}"
    )
    sum_section["provider's exposed devices with a known phone"] = f"{phones.num_rows:,}"
    window = _window(ctx).describe()["conversion_window"]
    spend = r.spend
    if spend is not None:
        sum_section["exposed-and-matched customers"] = f"{spend.cardinality:,}"
        sum_section["their spend, all orders"] = _money(spend.sums["amount"], spend.decimals)
        sum_section[f"their spend in the conversion window ({window})"] = _money(
            spend.sums["amount_in_window"], spend.decimals
        )
    else:
        sum_section["result"] = f"withheld by the output guard: {r.spend_withheld}"
    sum_section["cost"] = _cost(runs["intersection-sum"])

    order = ("ECDH PSI", "campaign reach", "labeled PSI", "multi-ID waterfall", "intersection-sum")
    costs = {name: _cost(runs[name]) for name in order if name in runs}
    costs["outputs"] = str(folder)
    return {
        "5 · matching: brand members ↔ provider universe (ECDH PSI)": match_section,
        "5 · campaign reach among members, a count only (cardinality-only PSI)": reach_section,
        "5 · tag augmentation (labeled PSI)": tag_section,
        "5 · multi-ID waterfall: media device links ↔ provider universe": wf_section,
        "5 · match rates per ID type and member level": rates,
        "5 · intersection-sum: spend of exposed-and-matched customers": sum_section,
        "5 · matching protocol costs (bytes, seconds)": costs,
    }


def _several_ids(devices: pa.Table) -> int:
    """Links carrying a valid ID of more than one waterfall type."""
    counts = np.zeros(devices.num_rows, dtype=np.int64)
    for label in WATERFALL:
        valid = normalize_array(devices[label], label).valid
        counts += np.asarray(valid.to_numpy(zero_copy_only=False), dtype=np.int64)
    return int((counts > 1).sum())
