"""Insight inside the island: persona (with TGI), invalid traffic, attribution, LBS tags.

Why: the deck's island profiles the brand's matched members against the
provider's universe without either side handing the other its rows. The
computation is the same map-and-merge as :func:`atoll.analytics.persona.persona`
on plain data -- :func:`~atoll.analytics.persona.count_table` per part,
additive :class:`~atoll.analytics.persona.PersonaCounts` merged -- so the
island's released counts equal the plain computation's under the same guard
(tested). Only the guarded counts table leaves; the recipient derives shares,
TGI, z and intervals from it with
:func:`~atoll.analytics.persona.persona_statistics`, so a suppressed cell's
statistics are never computed from its withheld count.

Invalid traffic is :func:`atoll.analytics.ivt.detect_ivt` with the shipped
lists; attribution may drop the events it flags first (``ivt = true``), as
``atoll report attribution --exclude-events`` does with a flag file.
Attribution is :func:`atoll.analytics.attribution.run_attribution` on the
decrypted logs, released through :func:`~atoll.analytics.attribution.release`
under the job's guard (three guarded tables: ratios recomputed from released
numbers), sealed as one long table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atoll.analytics.attribution import (
    AttributionConfig,
    parse_models,
    release,
    release_table,
    run_attribution,
)
from atoll.analytics.ivt import RULES, IvtConfig, IvtResult, default_lists, detect_ivt
from atoll.analytics.lbs import LbsConfig, default_as_of, lbs_tags
from atoll.analytics.paths import CampaignWindow
from atoll.analytics.persona import (
    PersonaConfig,
    PersonaCounts,
    count_table,
    persona_counts_table,
    select_dimensions,
)
from atoll.data.schema import DEFAULT_TIMEZONE, PINGS, validate
from atoll.errors import ConfigError
from atoll.ids.mapping import MappingConfig, build_id_graph
from atoll.island.runner import ComputationResult, JobContext, OpenInput, register_computation

__all__ = ["attribution_job", "ivt_job", "lbs_tags_job", "persona_job"]


def _config(params: dict[str, Any]) -> PersonaConfig:
    dims = params.get("dimensions")
    if dims is not None and (
        not isinstance(dims, list) or not dims or not all(isinstance(d, str) for d in dims)
    ):
        raise ConfigError("params.dimensions must be a non-empty list of column names")
    exclude = params.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(d, str) for d in exclude):
        raise ConfigError("params.exclude must be a list of column names")
    return PersonaConfig(dimensions=None if dims is None else tuple(dims), exclude=tuple(exclude))


@register_computation("persona")
def persona_job(ctx: JobContext) -> ComputationResult:
    """Persona of the base rows matched by the audience, against the whole base.

    ``[match]``: ``left`` is the audience (e.g. the brand's members), ``right``
    the base with its tag columns (e.g. the provider's universe); T = base
    rows matched by any audience row through the match steps, U = every base
    row the job may open. ``[params]``: ``dimensions`` (default: every
    profilable column but identifiers), ``exclude``. Aggregate: the persona
    counts table (:func:`~atoll.analytics.persona.persona_counts_table`),
    guarded by the island (k on ``target_count``, complementary suppression
    within each single-valued dimension). No row-level product.
    """
    spec = ctx.job.match
    if spec is None:
        raise ConfigError("computation 'persona' needs a [match] table")
    left, right = ctx.inputs[spec.left], ctx.inputs[spec.right]
    config = _config(dict(ctx.params))
    dims, skipped = select_dimensions(right.manifest.schema, right.manifest.id_column, config)
    if not dims:
        raise ConfigError(f"input {right.spec.name!r} has no column to profile")
    total = PersonaCounts.empty(dims)
    unknown = config.unknown_labels
    for part in ctx.match_parts():
        mask = np.zeros(part.right.num_rows, dtype=bool)
        mask[part.right_rows] = True
        total.merge(count_table(part.right, mask, dims, unknown_labels=unknown))
    if ctx.notes.get("match_mode") == "bucketed":
        # Buckets with no audience rows were not joined; their rows are still base.
        joined = set(left.buckets)
        for bucket in right.buckets:
            if bucket not in joined:
                rest = right.read_bucket(bucket)
                none = np.zeros(rest.num_rows, dtype=bool)
                total.merge(count_table(rest, none, dims, unknown_labels=unknown))
    ctx.notes["persona"] = {"dimensions": [d for d, _ in dims], "skipped_columns": skipped}
    return ComputationResult(
        aggregate=persona_counts_table(total),
        counts=("target_count",),
        key=("dimension", "value"),
        group="group",
    )


#: ``[params]`` of the attribution job passed on to :class:`AttributionConfig`, with their types.
_ATTRIBUTION_OPTIONS: dict[str, tuple[type, ...]] = {
    "click_lookback_days": (int, float),
    "view_lookback_days": (int, float),
    "click_priority": (bool,),
    "orders_per_person": (str,),
    "half_life_days": (int, float),
    "buckets": (int,),
    "headline_model": (str,),
}


def _options(params: Mapping[str, Any], spec: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    """The ``[params]`` named in ``spec`` that are given, type-checked (``bool`` only if listed)."""
    out: dict[str, Any] = {}
    for name, types in spec.items():
        if name in params:
            value = params[name]
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                raise ConfigError(f"params.{name}: unexpected value {value!r}")
            out[name] = value
    return out


def _input(ctx: JobContext, params: Mapping[str, Any], role: str) -> OpenInput:
    """The input ``params[role]`` names, by default the input called ``role``."""
    name = params.get(role, role)
    if isinstance(name, str) and name in ctx.inputs:
        return ctx.inputs[name]
    if role in params:
        raise ConfigError(f"params.{role} names no input of this job ({name!r})")
    raise ConfigError(f"{ctx.job.computation} needs an input named {role!r} (or params.{role})")


def _day(params: Mapping[str, Any], name: str) -> date:
    value = params.get(name)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # TOML dates arrive as dates
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"params.{name} must be a date (YYYY-MM-DD), got {value!r}")


def _attribution_config(params: dict[str, Any]) -> AttributionConfig:
    calendar = _options(params, {"window_days": (int,), "timezone": (str,)})
    window = CampaignWindow(
        _day(params, "campaign_start"), _day(params, "campaign_end"), **calendar
    )
    options = _options(params, _ATTRIBUTION_OPTIONS)
    models = params.get("models", "all")
    if not isinstance(models, str | list):
        raise ConfigError("params.models must be a string or a list of model names")
    return AttributionConfig(window=window, models=parse_models(models), **options)


@register_computation("attribution")
def attribution_job(ctx: JobContext) -> ComputationResult:
    """Campaign measurement and multi-touch attribution over the parties' logs.

    Inputs named by ``[params]`` ``exposures`` and ``orders`` (default: inputs
    of those names; e.g. the media platform's exposure log and the brand's
    orders) and optionally ``edges`` (an ID-mapping edge dataset, e.g. the
    provider's, resolving phones and devices to one person). ``[params]``:
    ``campaign_start``, ``campaign_end`` (dates), ``window_days`` (15),
    ``timezone`` (Asia/Shanghai), ``models`` (``all``) and the
    :class:`~atoll.analytics.attribution.AttributionConfig` options
    (lookbacks, ``click_priority``, ``orders_per_person``, ``half_life_days``,
    ``buckets``, ``headline_model``) and ``ivt`` (default false: when true,
    events flagged by :func:`~atoll.analytics.ivt.detect_ivt` are left out
    and counted as ``excluded_invalid_traffic``). The same computation as
    :func:`~atoll.analytics.attribution.run_attribution` on plain data; the
    release is :func:`~atoll.analytics.attribution.release` under the job's
    guard, sealed as one long table (:func:`~atoll.analytics.attribution.release_table`).
    No row-level product.
    """
    params = dict(ctx.params)
    config = _attribution_config(params)
    exposures_in, orders_in = _input(ctx, params, "exposures"), _input(ctx, params, "orders")
    edges_in = _input(ctx, params, "edges") if "edges" in params else None
    use_ivt = _options(params, {"ivt": (bool,)}).get("ivt", False)
    graph = None
    if edges_in is not None:
        graph = build_id_graph(
            edges_in.read_all(), MappingConfig(), source=f"input {edges_in.spec.name}"
        )
    # Without IVT the exposure log streams bucket by bucket; IVT needs all of it.
    exposures: pa.Table | pa.RecordBatchReader
    flagged = None
    if use_ivt:
        exposures = exposures_in.read_all()
        flagged = _detect(exposures, config.window.timezone).flags["event_id"]
    else:
        exposures = exposures_in.reader()
    result = run_attribution(
        exposures,
        orders_in.read_all(),
        config,
        graph=graph,
        exclude_event_ids=flagged,
    )
    ctx.notes["attribution"] = {
        "models": list(config.models),
        "buckets": config.buckets,
        "ivt": use_ivt,
    }
    released = release(result, ctx.guard())
    return ComputationResult(aggregate=release_table(released), counts=(), guarded=True)


def _detect(exposures: pa.Table, timezone: str) -> IvtResult:
    return detect_ivt(exposures, IvtConfig(timezone=timezone), default_lists(), source="exposures")


#: Per-rule statistics released by the ``ivt`` job (``devices`` is the guarded count).
_IVT_COUNTS = ("devices", "events", "impressions", "clicks")


@register_computation("ivt")
def ivt_job(ctx: JobContext) -> ComputationResult:
    """Invalid-traffic filtering of an exposure log: what each rule flags, guarded.

    Input named by ``[params]`` ``exposures`` (default ``exposures``);
    ``timezone`` (Asia/Shanghai) for the hour-of-day rules. The shipped
    user-agent and data-center lists are used (their sources are in
    ``atoll/analytics/data/README.md``). Aggregate, one row per rule and the
    ``GIVT``/``SIVT``/``any`` totals and ``all events``: devices (the count
    thresholded against k), events, impressions, clicks, cost (withheld
    with the row). No row-level product: the flagged events stay in the
    island, where ``attribution`` with ``ivt = true`` leaves them out.
    """
    params = dict(ctx.params)
    exposures = _input(ctx, params, "exposures")
    timezone = _options(params, {"timezone": (str,)}).get("timezone", DEFAULT_TIMEZONE)
    report = _detect(exposures.read_all(), timezone).report
    rows = [(rule, RULES[rule], report.per_rule[rule]) for rule in report.rules]
    rows += [
        ("GIVT", "GIVT", report.givt),
        ("SIVT", "SIVT", report.sivt),
        ("any", "any", report.any),
        ("all events", "total", report.total),
    ]
    table = pa.table(
        {
            "rule": pa.array([r for r, _, _ in rows], pa.string()),
            "class": pa.array([c for _, c, _ in rows], pa.string()),
            **{
                col: pa.array([int(stats[col]) for _, _, stats in rows], pa.int64())
                for col in _IVT_COUNTS
            },
            "cost": pa.array([float(stats["cost"]) for _, _, stats in rows], pa.float64()),
        }
    )
    guarded = ctx.guard().apply(
        table,
        counts=list(_IVT_COUNTS),
        threshold="devices",
        also_null=["cost"],
        key=["rule"],
        what="island ivt",
    )
    ctx.notes["ivt"] = {"rules": list(report.rules)}
    return ComputationResult(aggregate=guarded.table, counts=(), guarded=True)


def _lbs_config(params: dict[str, Any]) -> LbsConfig:
    options = _options(
        params,
        {"radius_m": (int, float), "min_days": (int,), "days": (int,), "timezone": (str,)},
    )
    if "as_of" in params:
        options["as_of"] = _day(params, "as_of")
    return LbsConfig(**options)


def _stream_as_of(pings: OpenInput, config: LbsConfig) -> date | None:
    """The ``as_of`` to stream the pings bucket by bucket with, or ``None`` to read them whole.

    Streaming gives the whole-table result only if every device's pings are
    in one bucket: the input must be bucketed by ``device_id``, as
    normalized (a party that bucketed raw ids, `` d1`` apart from ``d1``,
    would split a device). A first pass over the buckets checks that each
    bucket's normalized device ids belong to it, and finds the last ping
    for the default ``as_of``; it costs one more decryption of each bucket,
    and keeps one bucket in memory at a time.
    """
    manifest = pings.manifest
    if manifest.id_column != "device_id":
        return None
    fn = manifest.bucket_function
    last: int | None = None
    for number, bucket in pings.iter_buckets():
        valid = validate(bucket, PINGS, source=pings.spec.name, timezone=config.timezone)
        ids = pc.unique(valid["device_id"].combine_chunks())
        if len(ids) and not bool((fn.assign_arrow(ids) == number).all()):
            return None
        top = pc.max(pc.cast(valid["ts"], pa.int64())).as_py()
        if top is not None and (last is None or top > last):
            last = int(top)
    if config.as_of is not None:
        return config.as_of
    return default_as_of(last, config.timezone) if last is not None else date.today()


@register_computation("lbs_tags")
def lbs_tags_job(ctx: JobContext) -> ComputationResult:
    """LBS tags from location pings and POIs, as ordinary tag columns.

    Inputs named by ``[params]`` ``pings`` and ``pois`` (defaults: those
    names); ``radius_m``, ``min_days``, ``days``, ``as_of``, ``timezone``
    as in :class:`~atoll.analytics.lbs.LbsConfig`. Row level (only where the
    contract says ``row_level = true``): the tag table, one row per device
    (:func:`~atoll.analytics.lbs.lbs_tags`). Aggregate: devices per tag value
    (list columns flattened, day counts by value) with a ``devices`` total
    and each dimension's ``(known)`` holders, guarded (k on ``devices``,
    complementary suppression within single-valued dimensions).
    """
    params = dict(ctx.params)
    pings, pois = _input(ctx, params, "pings"), _input(ctx, params, "pois")
    config = _lbs_config(params)
    poi_table = pois.read_all()
    as_of = _stream_as_of(pings, config)
    streamed = as_of is not None
    parts: list[pa.Table] = []
    stays = 0
    if as_of is not None:  # bucket by bucket: every device's pings are in one bucket
        config = replace(config, as_of=as_of)
        for _, bucket in pings.iter_buckets():
            part = lbs_tags(bucket, poi_table, config, source=pings.spec.name)
            parts.append(part.tags)
            stays += part.stays.num_rows
    else:
        whole = lbs_tags(pings.read_all(), poi_table, config, source=pings.spec.name)
        as_of, stays = whole.as_of, whole.stays.num_rows
        parts.append(whole.tags)
    if not parts:  # no bucket at all: the empty input's tag table
        parts.append(lbs_tags(pings.manifest.schema.empty_table(), poi_table, config).tags)
    tags = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    dims, _ = select_dimensions(tags.schema, "device_id", PersonaConfig())
    counts = count_table(tags, np.ones(tags.num_rows, dtype=bool), dims)
    table = persona_counts_table(counts)
    aggregate = table.select(["dimension", "value", "kind", "group"]).append_column(
        "devices", table["target_count"]
    )
    ctx.notes["lbs"] = {"as_of": as_of.isoformat(), "stays": stays, "streamed": streamed}
    return ComputationResult(
        aggregate=aggregate,
        counts=("devices",),
        key=("dimension", "value"),
        group="group",
        rows=tags,
    )
