"""Generate, summarise, write and read back a whole synthetic world.

Why: every capability of Atoll (normalization, ID-mapping, matching, persona
and TGI, attribution, IVT, LBS, lookalike, media joint modelling) needs data
with a known answer. :func:`generate_world` builds the three parties' tables
(provider, brand, media) and, kept aside, the ground truth the tests compare
against. Each part draws from its own random stream derived from the seed and
the part's name, so the same seed gives byte-identical files and adding a
part does not change the others.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from atoll.errors import ConfigError, DataError, ManifestError
from atoll.synth._columns import (
    chars_to_strings,
    digit_chars,
    local_midnight_us,
    take_labels,
    with_nulls,
)
from atoll.synth.config import WorldConfig
from atoll.synth.edges import build_edges
from atoll.synth.exposures import build_exposures, datacenter_ranges_table
from atoll.synth.geo import CITIES
from atoll.synth.media import build_media
from atoll.synth.orders import build_brand
from atoll.synth.pings import build_lbs
from atoll.synth.reference import AGE_BANDS, GENDERS
from atoll.synth.universe import build_population

__all__ = [
    "CSV_LIST_SEPARATOR",
    "TABLE_NAMES",
    "TRUTH_NAMES",
    "WORLD_FORMAT_VERSION",
    "World",
    "generate_world",
    "load_world_tables",
    "write_world",
]

#: First key of ``world.json``; bump on any layout change.
WORLD_FORMAT_VERSION: Final = 1
#: How ``list<string>`` columns are written in CSV (labels never contain it).
CSV_LIST_SEPARATOR: Final = "|"
#: The parties' tables, as ``<party>/<table>``.
TABLE_NAMES: Final = (
    "provider/universe",
    "provider/edges",
    "provider/exposures",
    "provider/pois",
    "provider/pings",
    "brand/members",
    "brand/orders",
    "media/users",
    "media/behaviour",
)
#: The truth tables (written under ``truth/``).
TRUTH_NAMES: Final = (
    "persons",
    "propensity",
    "order_causes",
    "channel_lift",
    "ivt_labels",
    "lbs_visits",
    "lbs_anchors",
    "edge_anomalies",
    "datacenter_ranges",
)

Progress = Callable[[str, int, int], None]


@dataclass
class World:
    """A generated world: the parties' ``tables``, the ``truth`` kept aside, and its ``config``.

    ``tables`` is keyed ``"<party>/<table>"`` (see :data:`TABLE_NAMES`),
    ``truth`` by plain name (see :data:`TRUTH_NAMES`). ``injected`` counts the
    deliberate mess in the edges (noisy formats, invalid IDs, repeated rows).
    """

    tables: dict[str, pa.Table]
    truth: dict[str, pa.Table]
    config: WorldConfig
    injected: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Headline numbers of the world (JSON-ready): sizes, planted effects, injected mess."""
        cfg = self.config
        t, tr = self.tables, self.truth
        exposures = t["provider/exposures"]
        labels = tr["ivt_labels"]
        causes = tr["order_causes"]
        orders = t["brand/orders"]
        start = pa.scalar(local_midnight_us(cfg.campaign_start), pa.timestamp("us", tz="UTC"))
        in_window = pc.sum(causes["in_window"]).as_py() or 0
        before = pc.sum(pc.less(orders["order_time"], start)).as_py() or 0
        persons = tr["persons"]
        prop = tr["propensity"]
        lift = tr["channel_lift"].to_pylist()
        return {
            "devices": t["provider/universe"].num_rows,
            "persons": len(pc.unique(persons["person_id"])),
            "bot_devices": pc.sum(persons["is_bot"]).as_py() or 0,
            "planted_buyers": len(pc.unique(prop.filter(prop["is_planted_buyer"])["person_id"])),
            "mean_device_propensity": round(float(pc.mean(prop["propensity"]).as_py() or 0.0), 6),
            "target_audience_devices": pc.sum(prop["in_target_audience"]).as_py() or 0,
            "members": t["brand/members"].num_rows,
            "orders": {
                "total": orders.num_rows,
                "before_campaign": before,
                "in_window": in_window,
                "after_window": orders.num_rows - before - in_window,
                "caused_by_exposure": causes.num_rows - (causes["caused_by_channel"].null_count),
            },
            "channels": {
                row["channel"]: {
                    "exposed_persons": row["exposed_persons"],
                    "clicked_persons": row["clicked_persons"],
                    "caused_orders": row["caused_orders"],
                    "cost": round(row["cost"], 2),
                    "incremental_cpo": row["incremental_cpo"],
                }
                for row in lift
            },
            "exposures": {
                "events": exposures.num_rows,
                "clicks": pc.sum(pc.equal(exposures["event_type"], "click")).as_py() or 0,
                "invalid_events": labels.num_rows,
                "invalid_by_type": {
                    r["values"]: r["counts"]
                    for r in pc.value_counts(labels["ivt_type"]).to_pylist()
                },
            },
            "edges": {"rows": t["provider/edges"].num_rows, "injected": dict(self.injected)},
            "lbs": {
                "pois": t["provider/pois"].num_rows,
                "pings": t["provider/pings"].num_rows,
                "pinged_devices": tr["lbs_anchors"].num_rows,
                "visits_by_category": {
                    r["values"]: r["counts"]
                    for r in pc.value_counts(tr["lbs_visits"]["category"]).to_pylist()
                },
            },
            "media": {"links": t["media/users"].num_rows, "events": t["media/behaviour"].num_rows},
        }


def _rng(config: WorldConfig, part: str) -> np.random.Generator:
    """The random stream of one part: derived from the seed and the part's name only."""
    return np.random.default_rng(
        np.random.SeedSequence(config.seed, spawn_key=tuple(part.encode("ascii")))
    )


def generate_world(config: WorldConfig, *, progress: Progress | None = None) -> World:
    """Generate the synthetic world described by ``config`` (deterministic in ``config``)."""
    if not isinstance(config, WorldConfig):
        raise ConfigError(f"generate_world needs a WorldConfig, got {type(config).__name__}")
    steps = ("universe", "exposures", "brand", "edges", "lbs", "media", "truth")
    report = progress or (lambda name, done, total: None)

    report("universe", 0, len(steps))
    pop = build_population(config, _rng(config, "universe"))
    report("exposures", 1, len(steps))
    exposures, ivt_labels, exposure_truth = build_exposures(config, pop, _rng(config, "exposures"))
    report("brand", 2, len(steps))
    brand = build_brand(config, pop, exposure_truth, _rng(config, "brand"))
    report("edges", 3, len(steps))
    edges = build_edges(config, pop, _rng(config, "edges"))
    report("lbs", 4, len(steps))
    lbs = build_lbs(config, pop, _rng(config, "lbs"))
    report("media", 5, len(steps))
    media = build_media(config, pop, _rng(config, "media"))
    report("truth", 6, len(steps))

    pd = pop.person_of_device
    dev_bot = pop.is_bot[pd]
    mrow = brand.member_of_person[pd]
    is_member = mrow >= 0
    persons = pa.table(
        {
            "person_id": pop.person_id.take(pa.array(pd)),
            "device_id": pop.device_id,
            "phone": with_nulls(chars_to_strings(digit_chars(pop.phone[pd], 11)), dev_bot),
            "phone_known": pa.array(pop.phone_known),
            "member_id": brand.members["member_id"].take(
                pa.array(np.where(is_member, mrow, 0), mask=~is_member)
            ),
            "member_phone": with_nulls(
                chars_to_strings(digit_chars(brand.member_phone[pd], 11)), ~is_member
            ),
            "is_bot": pa.array(dev_bot),
            "gender": take_labels(GENDERS, pop.gender[pd], dev_bot),
            "age_band": take_labels(AGE_BANDS, pop.age[pd], dev_bot),
            "province": take_labels([c.province for c in CITIES], pop.city[pd], dev_bot),
            "city": take_labels([c.name for c in CITIES], pop.city[pd], dev_bot),
        }
    )
    propensity = pa.table(
        {
            "device_id": pop.device_id,
            "person_id": pop.person_id.take(pa.array(pd)),
            "propensity": pa.array(np.round(pop.propensity[pd], 9), pa.float64()),
            "is_planted_buyer": pa.array(pop.is_buyer[pd]),
            "in_target_audience": pa.array(pop.in_ta),
        }
    )
    world = World(
        tables={
            "provider/universe": pop.universe,
            "provider/edges": edges.edges,
            "provider/exposures": exposures,
            "provider/pois": lbs.pois,
            "provider/pings": lbs.pings,
            "brand/members": brand.members,
            "brand/orders": brand.orders,
            "media/users": media.users,
            "media/behaviour": media.behaviour,
        },
        truth={
            "persons": persons,
            "propensity": propensity,
            "order_causes": brand.order_causes,
            "channel_lift": brand.channel_lift,
            "ivt_labels": ivt_labels,
            "lbs_visits": lbs.visits,
            "lbs_anchors": lbs.anchors,
            "edge_anomalies": edges.anomalies,
            "datacenter_ranges": datacenter_ranges_table(),
        },
        config=config,
        injected=edges.injected,
    )
    report("done", len(steps), len(steps))
    return world


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t))


def _for_csv(table: pa.Table) -> pa.Table:
    """Lists joined with :data:`CSV_LIST_SEPARATOR` (CSV has no nested values)."""
    cols = [
        pc.binary_join(col, CSV_LIST_SEPARATOR) if _is_list(col.type) else col
        for col in table.columns
    ]
    return pa.table(cols, names=table.column_names)


def _schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def write_world(
    world: World, out_dir: Path, *, fmt: Literal["parquet", "csv"] = "parquet"
) -> dict[str, Path]:
    """Write every table under ``out_dir`` (``provider/``, ``brand/``, ``media/``, ``truth/``).

    Returns ``{"provider/universe": path, ..., "truth/persons": path, ...}``
    and writes ``world.json`` last (config, summary, per-table schema). The
    same world gives byte-identical files. In CSV, ``list<string>`` columns
    are joined with ``|`` and nulls are empty fields; read a CSV world back
    with :func:`load_world_tables`, which restores types and lists.
    """
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    items = [*world.tables.items(), *((f"truth/{k}", v) for k, v in world.truth.items())]
    paths: dict[str, Path] = {}
    catalogue: dict[str, object] = {}
    try:
        for name, table in items:
            path = out / f"{name}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                pq.write_table(table, path, compression="zstd")
            else:
                pacsv.write_csv(_for_csv(table), path)
            paths[name] = path
            catalogue[name] = {
                "path": f"{name}.{fmt}",
                "rows": table.num_rows,
                "columns": {f.name: str(f.type) for f in table.schema},
                "arrow_schema": _schema_b64(table.schema),
            }
        meta = {
            "atoll_world_version": WORLD_FORMAT_VERSION,
            "format": fmt,
            "csv_list_separator": CSV_LIST_SEPARATOR,
            "config": world.config.to_dict(),
            "summary": world.summary(),
            "tables": catalogue,
        }
        (out / "world.json").write_text(
            json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise DataError(f"cannot write the world to {out}: {exc}") from exc
    return paths


def load_world_tables(out_dir: Path) -> dict[str, pa.Table]:
    """Read a world written by :func:`write_world` (Parquet or CSV) back, with its exact types."""
    out = Path(out_dir)
    meta_path = out / "world.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{meta_path}: missing (not a world folder?)") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{meta_path}: unreadable: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("atoll_world_version") != WORLD_FORMAT_VERSION:
        raise ManifestError(
            f"{meta_path}: field 'atoll_world_version' must be {WORLD_FORMAT_VERSION}"
        )
    fmt = meta.get("format")
    tables = meta.get("tables")
    if fmt not in ("parquet", "csv") or not isinstance(tables, dict):
        raise ManifestError(f"{meta_path}: fields 'format' and 'tables' are missing or malformed")
    result: dict[str, pa.Table] = {}
    for name, entry in tables.items():
        try:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(entry["arrow_schema"])))
            path = out / entry["path"]
        except (KeyError, TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise ManifestError(f"{meta_path}: table {name!r} has a malformed entry") from exc
        try:
            if fmt == "parquet":
                result[name] = pq.read_table(path, schema=schema)
                continue
            types = {f.name: (pa.string() if _is_list(f.type) else f.type) for f in schema}
            raw = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
            )
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{path}: cannot read world table {name!r}: {exc}") from exc
        cols = [
            pc.split_pattern(raw[f.name], CSV_LIST_SEPARATOR).cast(f.type)
            if _is_list(f.type)
            else raw[f.name]
            for f in schema
        ]
        result[name] = pa.table(cols, schema=schema)
    return result
