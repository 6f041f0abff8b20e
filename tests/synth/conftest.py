"""Shared synthetic worlds for the synth tests (generated once per session: ~1-2 s)."""

from __future__ import annotations

import pytest

from atoll.synth import World, WorldConfig, generate_world


@pytest.fixture(scope="session")
def small_world() -> World:
    """A small world for structure and integrity checks."""
    return generate_world(WorldConfig(devices=3000, seed=11))


@pytest.fixture(scope="session")
def effects_world() -> World:
    """A world with the default planted effects, big enough to see them in plain counts."""
    return generate_world(WorldConfig(devices=20_000, seed=7))
