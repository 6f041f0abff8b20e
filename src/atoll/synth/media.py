"""The media platform's side: in-site user IDs linked to devices, and shopping behaviour.

Why: joint modelling with a media platform (the deck's TalkingData x JD Cloud
case) scores audiences from the media's own signals (add-to-cart, favourite,
ad click by item category) alongside the provider's tags. For that to mean
something, behaviour must carry signal about the same planted propensity:
persons in the market for hair care (planted buyers) and persons interested
in hair care or beauty act on those categories more often.

A ``media_user_share`` of human persons have a media account; each account is
linked to one of the person's devices (and, for 30 % of multi-device persons,
a second one). Events fall in the ``ping_days`` before the campaign and the
campaign itself; counts are ``Poisson(3 + 12 x propensity / mean)``-ish.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.synth import reference as ref
from atoll.synth._columns import (
    categorical,
    chars_to_strings,
    hex_chars,
    local_midnight_us,
    take_labels,
    timestamps,
)
from atoll.synth.config import WorldConfig
from atoll.synth.exposures import HOURLY_WEIGHTS, diurnal_times
from atoll.synth.universe import Population

__all__ = ["MediaData", "build_media"]

Int = npt.NDArray[np.int64]

_C = {name: i for i, name in enumerate(ref.ITEM_CATEGORIES)}
_I = {name: i for i, name in enumerate(ref.INTERESTS)}
_ACTION_SHARES: Final = (0.35, 0.25, 0.40)


@dataclass
class MediaData:
    """``media/users`` and ``media/behaviour``."""

    users: pa.Table
    behaviour: pa.Table


def build_media(config: WorldConfig, pop: Population, rng: np.random.Generator) -> MediaData:
    """Generate the media platform's users (linked to devices) and their behaviour events."""
    human = np.nonzero(~pop.is_bot)[0]
    members = human[rng.random(human.size) < config.media_user_share]
    n_users = members.size
    user_of_person = np.full(pop.n_persons, -1, dtype=np.int64)
    user_of_person[members] = np.arange(n_users)

    # Link each account to the person's devices: the first device always, others with p=0.3.
    devices = np.arange(pop.n_devices)
    owner_user = user_of_person[pop.person_of_device]
    has_user = owner_user >= 0
    order = np.lexsort((rng.random(pop.n_devices), owner_user))
    order = order[has_user[order]]
    first = np.ones(order.size, dtype=bool)
    first[1:] = owner_user[order][1:] != owner_user[order][:-1]
    keep = first | (rng.random(order.size) < 0.3)
    link_dev = devices[order][keep]
    link_user = owner_user[order][keep]
    media_ids = chars_to_strings(_prefixed_hex(rng, n_users, b"mu_"))
    users = pa.table(
        {
            "media_user_id": media_ids.take(pa.array(link_user)),
            "device_id": pop.device_id.take(pa.array(link_dev)),
        }
    )

    # Behaviour: rates and item categories follow propensity and interests.
    prop = pop.propensity[members]
    rel = prop / max(float(prop.mean()) if prop.size else 1.0, 1e-12)
    counts = rng.poisson(3.0 + 4.0 * np.minimum(rel, 5.0))
    who = np.repeat(np.arange(n_users), counts)
    person = members[who]
    weights = np.ones((who.size, len(ref.ITEM_CATEGORIES)))
    interests = pop.interests[person]
    weights[:, _C["hair_care"]] += 6.0 * pop.is_buyer[person] + 2.0 * interests[:, _I["hair_care"]]
    weights[:, _C["skincare"]] += 2.0 * interests[:, _I["beauty"]]
    weights[:, _C["makeup"]] += 2.0 * interests[:, _I["beauty"]]
    weights[:, _C["baby"]] += 3.0 * interests[:, _I["mother_baby"]]
    weights[:, _C["electronics"]] += 1.5 * interests[:, _I["gaming"]]
    weights[:, _C["sports"]] += 2.0 * interests[:, _I["sports_health"]]
    weights[:, _C["books"]] += 2.0 * interests[:, _I["reading"]]
    item = categorical(rng, weights)
    action = categorical(rng, _ACTION_SHARES, who.size)
    first_day = config.campaign_start - timedelta(days=config.ping_days)
    days = config.ping_days + (config.campaign_end - config.campaign_start).days + 1
    t = diurnal_times(rng, who.size, local_midnight_us(first_day), days, HOURLY_WEIGHTS)
    order = np.lexsort((who, t))
    behaviour = pa.table(
        {
            "media_user_id": media_ids.take(pa.array(who[order])),
            "event_time": timestamps(t[order]),
            "action": take_labels(ref.MEDIA_ACTIONS, action[order]),
            "item_category": take_labels(ref.ITEM_CATEGORIES, item[order]),
        }
    )
    return MediaData(users=users, behaviour=behaviour)


def _prefixed_hex(rng: np.random.Generator, n: int, prefix: bytes) -> npt.NDArray[np.uint8]:
    """``prefix`` + 16 hex digits of distinct random 64-bit numbers."""
    ids = rng.integers(0, 2**63, n, dtype=np.int64)
    while True:  # redraw the (astronomically rare) duplicates
        order = np.argsort(ids, kind="stable")
        dup = np.zeros(n, dtype=bool)
        dup[order[1:]] = ids[order][1:] == ids[order][:-1]
        if not dup.any():
            break
        ids[dup] = rng.integers(0, 2**63, int(dup.sum()), dtype=np.int64)
    head = np.frombuffer(prefix, dtype=np.uint8)
    body = hex_chars(ids.astype(">i8").view(np.uint8).reshape(n, 8))
    out = np.empty((n, head.size + body.shape[1]), dtype=np.uint8)
    out[:, : head.size] = head
    out[:, head.size :] = body
    return out
