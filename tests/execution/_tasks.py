"""Task functions for the executor tests.

They live at module level so that they travel to process-pool and Ray workers
by reference, as production tasks must.
"""

from __future__ import annotations

import os
import threading
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.errors import DecryptionError, InputError
from atoll.execution import LocalExecutor


def square(x: int) -> int:
    return x * x


def identity(x: object) -> object:
    return x


def square_after(item: tuple[int, float]) -> int:
    """Square ``item[0]`` after sleeping ``item[1]`` seconds (to scramble completion order)."""
    value, delay = item
    time.sleep(delay)
    return value * value


def fail_if(x: int, *, bad: frozenset[int]) -> int:
    if x in bad:
        raise ValueError(f"bad item {x}")
    return x * x


def bad_phone(x: int) -> int:
    if x == 2:
        raise InputError("not a phone number", source="orders.csv", row=x + 1, column="phone")
    return x


def cannot_decrypt(x: int) -> int:
    if x == 1:
        raise DecryptionError()
    return x


class LockedError(Exception):
    """An exception whose state does not pickle (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raise_locked(x: int) -> int:
    if x == 1:
        raise LockedError()
    return x


def sum_with_nested_inline(x: int) -> int:
    """Run an inner (inline) executor whose item 2 fails when ``x`` > 2."""
    from functools import partial

    with LocalExecutor(mode="inline") as inner:
        return sum(inner.map(partial(fail_if, bad=frozenset({2})), range(x)))


def worker_pid(_: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def crash(x: int) -> int:
    if x == 3:
        os._exit(3)
    return x


def bucket_stats(path: str) -> tuple[int, int, int]:
    """Rows, sum of ``amount`` and distinct ``id`` count of one bucket file."""
    table = pq.read_table(path, columns=["id", "amount"])
    total = pc.sum(table["amount"]).as_py() or 0
    return table.num_rows, int(total), len(pc.unique(table["id"]))
