"""A deterministic byte source for replayable protocol runs (tests only)."""

from __future__ import annotations

import hashlib


class CounterRng:
    """``rng(n)``: SHAKE-256(seed || counter) stream; the same seed replays the same bytes."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        self.counter += 1
        return hashlib.shake_256(self.seed + self.counter.to_bytes(8, "big")).digest(n)
