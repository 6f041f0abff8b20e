"""Joint modeling: a media platform's behaviour features next to the provider's tags.

Why: the deck's strongest lookalike signal is what a person *does* on the
media platform — add to cart, favourite, click an ad, and in which item
category — joined to the provider's tags for the same person. Neither party
may hand the other its rows, so the join runs where both are allowed to be
plaintext: inside the secure island (``atoll.island``), where the model is
trained and only the model's guarded outputs leave (score-group counts
through the output guard; row-level scores only where the contract says
``row_level = true``). This module is the computation itself, on Arrow
tables, with no I/O: the island job ``lookalike_joint``
(:mod:`atoll.island.lookalike_job`, loaded by every island on first use)
opens the inputs and calls :func:`joint_lookalike`.

Identity: behaviour rows are keyed by ``media_user_id``; ``media/users``
links a media user to a device. With an ID-mapping graph
(:class:`~atoll.ids.mapping.IdGraph`), features are carried to *every*
device of the same person (both sides mapped to ``one_id``); without one,
to the linked device only.

Feature columns (numeric, so :class:`~atoll.models.features.TagEncoder`
encodes them as counts): ``media_events``, ``media_<action>`` per action and
``media_cat_<item_category>`` per category. A device with no media account
gets nulls (unknown), a device whose account did nothing gets zeros.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError, SchemaError
from atoll.ids.mapping import IdGraph
from atoll.privacy import Guard

__all__ = [
    "JointResult",
    "join_features",
    "joint_lookalike",
    "media_features",
]


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_") or "unnamed"


def _need(table: pa.Table, columns: Sequence[str], what: str) -> None:
    for c in columns:
        if c not in table.column_names:
            raise SchemaError(
                f"{what}: no column {c!r} (columns: {', '.join(table.column_names)})", column=c
            )


def media_features(
    users: pa.Table,
    behaviour: pa.Table,
    *,
    graph: IdGraph | None = None,
    device_ids: pa.Array | pa.ChunkedArray | None = None,
) -> pa.Table:
    """Per-device behaviour counts (``device_id`` + numeric ``media_*`` columns).

    ``users`` has ``media_user_id, device_id``; ``behaviour`` has
    ``media_user_id, action, item_category``. With ``graph`` and
    ``device_ids`` (the universe's devices), the counts of a person's media
    accounts are summed and given to each of that person's devices.
    """
    _need(users, ("media_user_id", "device_id"), "media users")
    _need(behaviour, ("media_user_id", "action", "item_category"), "media behaviour")
    actions = sorted(v for v in pc.unique(behaviour["action"]).to_pylist() if v is not None)
    cats = sorted(v for v in pc.unique(behaviour["item_category"]).to_pylist() if v is not None)
    per_user = behaviour.group_by("media_user_id").aggregate([("action", "count")])
    columns: dict[str, Any] = {
        "media_user_id": per_user["media_user_id"],
        "media_events": per_user["action_count"],
    }
    key = per_user["media_user_id"]
    for col, values in (("action", actions), ("item_category", cats)):
        for value in values:
            sub = behaviour.filter(pc.equal(behaviour[col], value))
            g = sub.group_by("media_user_id").aggregate([(col, "count")])
            idx = pc.index_in(key, value_set=g["media_user_id"])
            counts = pc.fill_null(g[f"{col}_count"].take(idx), 0)
            prefix = "media_" if col == "action" else "media_cat_"
            columns[prefix + _slug(value)] = counts
    feats = pa.table(columns)
    # Users → devices; accounts with no behaviour get zeros.
    links = users.select(["media_user_id", "device_id"]).filter(pc.is_valid(users["device_id"]))
    linked = links.join(feats, "media_user_id", join_type="left outer").drop_columns(
        ["media_user_id"]
    )
    names = [c for c in linked.column_names if c != "device_id"]
    linked = pa.table(
        {"device_id": linked["device_id"], **{c: pc.fill_null(linked[c], 0) for c in names}}
    )
    direct = _strip_sum(
        linked.group_by("device_id").aggregate([(c, "sum") for c in names]), "device_id", names
    )
    if graph is None:
        return direct
    if device_ids is None:
        raise ConfigError("media_features with a graph needs the universe's device_ids")
    person = graph.lookup("device_id", linked["device_id"].combine_chunks())
    linked = linked.append_column("one_id", person).filter(pc.is_valid(person))
    per_person = linked.group_by("one_id").aggregate([(c, "sum") for c in names])
    dev = device_ids.combine_chunks() if isinstance(device_ids, pa.ChunkedArray) else device_ids
    dev = pc.unique(pc.drop_null(dev))
    dev_person = graph.lookup("device_id", dev)
    out = pa.table({"device_id": dev, "one_id": dev_person}).filter(pc.is_valid(dev_person))
    out = _strip_sum(out.join(per_person, "one_id", join_type="inner"), "device_id", names)
    # Devices the graph does not know keep their direct link.
    rest = direct.filter(pc.invert(pc.is_in(direct["device_id"], value_set=out["device_id"])))
    return pa.concat_tables([out, rest.cast(out.schema)])


def _strip_sum(table: pa.Table, key: str, names: Sequence[str]) -> pa.Table:
    """``key`` then ``names``, from a group-by result whose columns end in ``_sum``."""
    return pa.table({key: table[key], **{c: table[f"{c}_sum"] for c in names}})


def join_features(
    universe: pa.Table, features: pa.Table, *, id_column: str = "device_id"
) -> pa.Table:
    """``universe`` with ``features``' columns appended by ``id_column`` (nulls where absent).

    Row order of ``universe`` is kept. ``features`` must have one row per id.
    """
    _need(universe, (id_column,), "universe")
    _need(features, (id_column,), "features")
    ids = features[id_column]
    if pc.count_distinct(ids).as_py() != features.num_rows:
        raise SchemaError(f"features have repeated {id_column} values", column=id_column)
    idx = pc.index_in(universe[id_column], value_set=ids.combine_chunks())
    out = universe
    for name in features.column_names:
        if name == id_column:
            continue
        if name in out.column_names:
            raise SchemaError(
                f"feature column {name!r} already exists in the universe", column=name
            )
        out = out.append_column(name, features[name].take(idx))
    return out


@dataclass(frozen=True)
class JointResult:
    """What a joint-model run produces: guarded group counts, and the scores (island-only).

    ``aggregate`` (columns ``group, devices, seeds_in_group``) is what may
    leave without a row-level grant, after :class:`~atoll.privacy.Guard`;
    ``scores`` (``device_id, score, group``) leaves only where the contract
    allows row-level output; ``metrics`` are the hidden-seed evaluation.
    """

    aggregate: pa.Table
    guarded: pa.Table
    scores: pa.Table
    metrics: dict[str, Any]


def joint_lookalike(
    universe: pa.Table,
    seed_ids: pa.Array | pa.ChunkedArray,
    users: pa.Table,
    behaviour: pa.Table,
    *,
    graph: IdGraph | None = None,
    groups: Sequence[float] = (0.01, 0.05, 0.2),
    guard: Guard | None = None,
    random_state: int = 0,
    id_column: str = "device_id",
) -> JointResult:
    """Train the PU lookalike on provider tags + media behaviour; score; guard the counts.

    Runs entirely on in-memory tables (inside the island). Seeds are
    universe ``id_column`` values. Returns :class:`JointResult`.
    """
    from atoll.models.evaluation import evaluate_holdout
    from atoll.models.lookalike import LookalikeModel
    from atoll.models.scoring import GroupSpec, assign_groups

    feats = media_features(users, behaviour, graph=graph, device_ids=universe[id_column])
    table = join_features(universe, feats, id_column=id_column)
    seeds = pc.fill_null(
        pc.is_in(table[id_column], value_set=pa.chunked_array([seed_ids]).combine_chunks()), False
    )
    is_seed = np.asarray(seeds.to_numpy(zero_copy_only=False), dtype=bool)
    model = LookalikeModel(random_state=random_state)
    evaluation = evaluate_holdout(model, table, is_seed, random_state=random_state)
    model.fit(table, is_seed)
    score = model.score(table)
    spec = GroupSpec.quantiles(groups)
    group = assign_groups(score, ~is_seed, spec)
    scores = pa.table(
        {id_column: table[id_column], "score": pa.array(score), "group": pa.array(group, pa.int8())}
    )
    labels = [f"group {g}" for g in range(1, len(spec.bounds) + 1)]
    aggregate = pa.table(
        {
            "group": pa.array(labels, pa.string()),
            "devices": pa.array(
                [int((group == g).sum()) for g in range(1, len(labels) + 1)], pa.int64()
            ),
        }
    )
    guarded = (guard or Guard()).apply(
        aggregate, counts=["devices"], key=["group"], what="joint lookalike groups"
    )
    return JointResult(aggregate, guarded.table, scores, evaluation.to_dict())
