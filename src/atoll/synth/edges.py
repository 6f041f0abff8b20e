"""The provider's ID-mapping edges: phone <-> device <-> advertising IDs, with real-world mess.

Why: the OneID graph, identifier normalization and its invalid-ID reports
are tested on these edges, so they carry what real link tables carry:

* the true links: phone <-> device_id (when the provider knows the phone;
  sources ``carrier_auth`` one-tap login, ``sdk_login``, ``ad_form``),
  device_id <-> OAID / IDFA / IMEI (source ``sdk``); persons with two or three
  devices share a phone, so components have 2-6 nodes;
* repeated observations (the same link seen again, another source/date);
* formatting noise (``+86 138-0013-8000``, uppercase OAIDs, lowercase IDFAs,
  IMEIs as ``AA-BBBBBB-CCCCCC-D``) on a ``noisy_id_share`` of rows;
* invalid identifiers on extra rows (``invalid_id_share`` of each type):
  phones missing a digit or with a ``12`` prefix, IMEIs with a wrong Luhn
  check digit, the all-zero OAID / IDFA of limit-ad-tracking devices;
* hub anomalies: well-known test phone numbers typed into forms on hundreds
  of devices, and a cloned IMEI shared by many devices. They are listed in
  ``truth/edge_anomalies``; a giant-component guard should cut them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.synth import reference as ref
from atoll.synth._columns import (
    US_PER_DAY,
    assemble,
    categorical,
    local_midnight_us,
    luhn_check_digit,
    take_labels,
    timestamps,
)
from atoll.synth.config import WorldConfig
from atoll.synth.noise import format_imeis, format_phones, invalid_imeis, invalid_phones
from atoll.synth.universe import Population

__all__ = ["EDGE_COLUMNS", "EdgeData", "build_edges"]

Int = npt.NDArray[np.int64]

EDGE_COLUMNS: Final = ("id_type_a", "id_a", "id_type_b", "id_b", "source", "seen_at")
_ZERO_UUID: Final = "00000000-0000-0000-0000-000000000000"
_PHONE_SOURCES: Final = (("carrier_auth", 0.6), ("sdk_login", 0.3), ("ad_form", 0.1))
_SEEN_DAYS: Final = 180


@dataclass
class EdgeData:
    """``provider/edges``, ``truth/edge_anomalies`` and counts of the injected mess."""

    edges: pa.Table
    anomalies: pa.Table
    injected: dict[str, int] = field(default_factory=dict)


@dataclass
class _Rows:
    type_a: list[pa.Array] = field(default_factory=list)
    id_a: list[pa.Array] = field(default_factory=list)
    type_b: list[pa.Array] = field(default_factory=list)
    id_b: list[pa.Array] = field(default_factory=list)
    source: list[pa.Array] = field(default_factory=list)

    def add(
        self, type_a: str, id_a: pa.Array, type_b: str, id_b: pa.Array, source: pa.Array
    ) -> None:
        n = len(id_a)
        self.type_a.append(_const(type_a, n))
        self.id_a.append(id_a)
        self.type_b.append(_const(type_b, n))
        self.id_b.append(id_b)
        self.source.append(source)


def _const(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int64)))


def _pick(rng: np.random.Generator, n: int, share: float) -> npt.NDArray[np.bool_]:
    """A mask of exactly ``round(share * n)`` rows (at least one when ``share > 0``)."""
    k = 0 if share == 0 or n == 0 else max(1, round(share * n))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask


def _noisy_case(rng: np.random.Generator, ids: pa.Array, share: float, *, upper: bool) -> pa.Array:
    flip = pa.array(rng.random(len(ids)) < share)
    changed = pc.utf8_upper(ids) if upper else pc.utf8_lower(ids)
    return pc.if_else(flip, changed, ids)


def build_edges(config: WorldConfig, pop: Population, rng: np.random.Generator) -> EdgeData:
    """Generate ``provider/edges`` and ``truth/edge_anomalies``."""
    rows = _Rows()
    injected: dict[str, int] = {}
    noisy = config.noisy_id_share
    bad = config.invalid_id_share

    # phone <-> device
    known = np.nonzero(pop.phone_known)[0]
    phones = pop.phone[pop.person_of_device[known]]
    dev_ids = pop.device_id.take(pa.array(known))
    src = take_labels(
        [s for s, _ in _PHONE_SOURCES], categorical(rng, [w for _, w in _PHONE_SOURCES], known.size)
    )
    shown_phones = format_phones(rng, phones, noisy)
    rows.add("phone", shown_phones, "device_id", dev_ids, src)
    injected["phone_noisy_format"] = int(
        pc.sum(pc.not_equal(pc.utf8_length(shown_phones), 11)).as_py() or 0
    )
    k = _pick(rng, known.size, bad)
    rows.add(
        "phone",
        invalid_phones(rng, phones[k]),
        "device_id",
        dev_ids.filter(pa.array(k)),
        src.filter(pa.array(k)),
    )
    injected["phone_invalid"] = int(k.sum())

    # device <-> advertising identifiers
    for id_type, ids in (("oaid", pop.oaid), ("idfa", pop.idfa), ("imei", pop.imei)):
        has = np.nonzero(pc.is_valid(ids).to_numpy(zero_copy_only=False))[0]
        values = ids.take(pa.array(has))
        devs = pop.device_id.take(pa.array(has))
        if id_type == "oaid":
            shown = _noisy_case(rng, values, noisy, upper=True)
        elif id_type == "idfa":
            shown = _noisy_case(rng, values, noisy, upper=False)
        else:
            pretty = rng.random(has.size) < noisy
            shown = assemble(
                has.size,
                [
                    (np.nonzero(~pretty)[0], values.filter(pa.array(~pretty))),
                    (np.nonzero(pretty)[0], format_imeis(values.filter(pa.array(pretty)))),
                ],
                pa.string(),
            )
        rows.add("device_id", devs, id_type, shown, _const("sdk", has.size))
        injected[f"{id_type}_noisy_format"] = int(pc.sum(pc.not_equal(shown, values)).as_py() or 0)
        k = _pick(rng, has.size, bad)
        kk = pa.array(k)
        if id_type == "imei":
            broken = invalid_imeis(rng, values.filter(kk))
            injected["imei_bad_check_digit"] = int(k.sum())
        else:
            broken = _const(_ZERO_UUID, int(k.sum()))
            injected[f"{id_type}_zero"] = int(k.sum())
        rows.add("device_id", devs.filter(kk), id_type, broken, _const("sdk", int(k.sum())))

    # hubs: test phones and a cloned IMEI linked to many devices
    human = np.nonzero(~pop.is_bot[pop.person_of_device])[0]
    degree = min(config.hub_degree, max(2, human.size // 10))
    hub_type: list[str] = []
    hub_id: list[str] = []
    hub_deg: list[int] = []
    hub_kind: list[str] = []
    for h in range(config.hub_phones):
        who = rng.choice(human, size=degree, replace=False)
        number = ref.HUB_TEST_PHONES[h]
        rows.add(
            "phone",
            _const(number, degree),
            "device_id",
            pop.device_id.take(pa.array(who)),
            _const("ad_form", degree),
        )
        hub_type.append("phone")
        hub_id.append(number)
        hub_deg.append(degree)
        hub_kind.append("test_phone")
    for _ in range(config.hub_imeis):
        payload = np.concatenate([[8, 6], rng.integers(0, 10, 12)]).astype(np.int64)
        digits = np.concatenate([payload, luhn_check_digit(payload[None, :])])
        imei = "".join(str(int(x)) for x in digits)
        k_deg = max(2, degree // 2)
        who = rng.choice(human, size=k_deg, replace=False)
        rows.add(
            "device_id",
            pop.device_id.take(pa.array(who)),
            "imei",
            _const(imei, k_deg),
            _const("sdk", k_deg),
        )
        hub_type.append("imei")
        hub_id.append(imei)
        hub_deg.append(k_deg)
        hub_kind.append("cloned_imei")

    type_a = pa.concat_arrays(rows.type_a)
    id_a = pa.concat_arrays([a.cast(pa.string()) for a in rows.id_a])
    type_b = pa.concat_arrays(rows.type_b)
    id_b = pa.concat_arrays([a.cast(pa.string()) for a in rows.id_b])
    source = pa.concat_arrays([a.cast(pa.string()) for a in rows.source])
    total = len(id_a)

    # repeated observations of the same link (another date), then seen_at and a shuffle
    dup = np.nonzero(rng.random(total) < 0.04)[0]
    index = np.concatenate([np.arange(total), dup])
    start = local_midnight_us(config.campaign_start - timedelta(days=_SEEN_DAYS))
    seen = start + rng.integers(0, _SEEN_DAYS * US_PER_DAY, index.size)
    perm = rng.permutation(index.size)
    pick = pa.array(index[perm])
    edges = pa.table(
        {
            "id_type_a": type_a.take(pick),
            "id_a": id_a.take(pick),
            "id_type_b": type_b.take(pick),
            "id_b": id_b.take(pick),
            "source": source.take(pick),
            "seen_at": timestamps(seen[perm]),
        }
    )
    injected["repeated_rows"] = int(dup.size)
    anomalies = pa.table(
        {
            "id_type": pa.array(hub_type, pa.string()),
            "id": pa.array(hub_id, pa.string()),
            "linked_devices": pa.array(hub_deg, pa.int64()),
            "kind": pa.array(hub_kind, pa.string()),
        }
    )
    return EdgeData(edges=edges, anomalies=anomalies, injected=injected)
