"""Shared fixtures of the covert-query tests: a small label DB, keys, a provider factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from atoll.crypto.group import scalar_random
from atoll.crypto.rsa import RsaKeyPool
from atoll.crypto.sign import SigningKey
from atoll.protocols.covert import BillingEvent, CovertProvider, sign_receipt
from atoll.protocols.covert_source import ArrayLabelSource

DB_SIZE = 400


def phone(i: int) -> str:
    return f"139{i:08d}"


@pytest.fixture(scope="session")
def db_rows() -> tuple[list[str], list[list[Any]]]:
    ids = [phone(i) for i in range(DB_SIZE)]
    values: list[list[Any]] = [[i % 50 + 18, f"seg{i % 7}", i % 3 == 0] for i in range(DB_SIZE)]
    return ids, values


@pytest.fixture(scope="session")
def source(db_rows: tuple[list[str], list[list[Any]]]) -> ArrayLabelSource:
    ids, values = db_rows
    return ArrayLabelSource.from_rows(
        ids, values, ["age", "segment", "vip"], bucket_bits=3, oprf_key=scalar_random()
    )


@pytest.fixture(scope="session")
def rsa_pool() -> RsaKeyPool:
    return RsaKeyPool.generate(32, bits=1024)


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


class MemoryBiller:
    """Signs receipts like the ledger does, keeping events in a list."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.events: list[BillingEvent] = []

    def __call__(self, event: BillingEvent) -> bytes:
        self.events.append(event)
        return sign_receipt(
            self.key, event, time="2025-01-01T00:00:00Z", seq=len(self.events), provider="p"
        )


@pytest.fixture
def make_provider(
    source: ArrayLabelSource, rsa_pool: RsaKeyPool, signing_key: SigningKey
) -> Callable[..., tuple[CovertProvider, MemoryBiller]]:
    def make(**kwargs: Any) -> tuple[CovertProvider, MemoryBiller]:
        biller = MemoryBiller(signing_key)
        options: dict[str, Any] = {"max_n": 64}
        options.update(kwargs)
        src = options.pop("source", source)
        provider = CovertProvider(
            src, signing_key=signing_key, biller=biller, rsa_pool=rsa_pool, **options
        )
        return provider, biller

    return make
