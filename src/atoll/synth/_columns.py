"""Vectorised builders of Arrow columns from numpy arrays (internal to ``atoll.synth``).

Why: a million-device world has millions of identifiers, timestamps and list
tags; building them as Python objects would take minutes and gigabytes. These
helpers build Arrow arrays straight from numpy buffers (fixed-width ASCII
matrices become ``string`` arrays without a per-row object), so that every part
of the generator stays vectorised and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LOCAL_OFFSET_US",
    "US_PER_DAY",
    "US_PER_SECOND",
    "assemble",
    "categorical",
    "chars_to_strings",
    "decimal_from_cents",
    "digit_chars",
    "fixed_width_chars",
    "hex_chars",
    "list_from_mask",
    "local_midnight_us",
    "luhn_check_digit",
    "prefixed_numbers",
    "take_labels",
    "timestamps",
    "with_nulls",
]

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
#: Asia/Shanghai is UTC+8 all year (no daylight saving time).
LOCAL_OFFSET_US = 8 * 3600 * US_PER_SECOND
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

IntArray = npt.NDArray[np.int64]


def chars_to_strings(chars: npt.NDArray[np.uint8]) -> pa.Array:
    """A ``string`` array from an ``(n, width)`` matrix of ASCII codes (one row, one value)."""
    chars = np.ascontiguousarray(chars, dtype=np.uint8)
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    if offsets[-1] >= 2**31:
        return pa.Array.from_buffers(
            pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars)]
        ).cast(pa.string())
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(chars)]
    )


def fixed_width_chars(strings: pa.Array, width: int) -> npt.NDArray[np.uint8]:
    """The ``(n, width)`` ASCII matrix of a null-free string array of ``width``-byte values."""
    if strings.null_count or strings.type != pa.string():
        raise ValueError("fixed_width_chars needs a null-free string array")
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + n + 1
    ]
    if n and not (np.diff(offsets) == width).all():
        raise ValueError(f"fixed_width_chars: not every value has {width} bytes")
    start = int(offsets[0]) if n else 0
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8) if n else np.empty(0, np.uint8)
    return data[start : start + n * width].reshape(n, width).copy()


def digit_chars(values: npt.ArrayLike, width: int) -> npt.NDArray[np.uint8]:
    """ASCII digits of non-negative integers, zero-padded to ``width``, as ``(n, width)``."""
    v = np.array(values, dtype=np.int64)
    out = np.empty((v.size, width), dtype=np.uint8)
    # Column by column: division by a scalar is much faster than a broadcast division.
    for j in range(width - 1, -1, -1):
        out[:, j] = v % 10 + 48
        v //= 10
    return out


def hex_chars(raw: npt.NDArray[np.uint8], *, upper: bool = False) -> npt.NDArray[np.uint8]:
    """Lowercase (or uppercase) hex ASCII of an ``(n, k)`` byte matrix, as ``(n, 2k)``."""
    table = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8) if upper else _HEX
    out = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = table[raw >> 4]
    out[:, 1::2] = table[raw & 0x0F]
    return out


def prefixed_numbers(prefix: str, numbers: npt.ArrayLike, width: int) -> pa.Array:
    """Strings ``prefix + zero-padded number`` (e.g. ``ev000000000042``)."""
    digits = digit_chars(numbers, width)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    chars = np.empty((digits.shape[0], head.size + width), dtype=np.uint8)
    chars[:, : head.size] = head
    chars[:, head.size :] = digits
    return chars_to_strings(chars)


def luhn_check_digit(digits: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The Luhn check digit of each row of an ``(n, k)`` digit matrix (payload, left to right)."""
    k = digits.shape[1]
    # Doubling starts with the payload's rightmost digit (the check digit goes right of it).
    double = (np.arange(k) % 2) == ((k - 1) % 2)
    d = digits.astype(np.int64)
    doubled = d * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = np.where(double[None, :], doubled, d).sum(axis=1)
    return np.asarray((10 - total % 10) % 10, dtype=np.int64)


def with_nulls(array: pa.Array, null_mask: npt.NDArray[np.bool_]) -> pa.Array:
    """``array`` with nulls where ``null_mask`` is true."""
    if not null_mask.any():
        return array
    return pc.if_else(pa.array(null_mask), pa.nulls(len(array), array.type), array)


def assemble(
    n: int, parts: Sequence[tuple[npt.NDArray[np.int64], pa.Array]], type_: pa.DataType
) -> pa.Array:
    """An array of length ``n`` built from ``(positions, values)`` parts; other rows are null."""
    source = np.full(n, -1, dtype=np.int64)
    chunks: list[pa.Array] = []
    start = 0
    for positions, values in parts:
        source[positions] = start + np.arange(len(values), dtype=np.int64)
        chunks.append(values.cast(type_))
        start += len(values)
    chunks.append(pa.nulls(1, type_))
    source[source < 0] = start
    return pa.concat_arrays(chunks).take(pa.array(source))


def take_labels(
    labels: Sequence[str], index: npt.ArrayLike, null_mask: npt.NDArray[np.bool_] | None = None
) -> pa.Array:
    """Strings ``labels[index]`` (vectorised take), null where ``null_mask``."""
    out = pa.array(list(labels), pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))
    return out if null_mask is None else with_nulls(out, null_mask)


def list_from_mask(
    mask: npt.NDArray[np.bool_],
    labels: Sequence[str],
    null_rows: npt.NDArray[np.bool_] | None = None,
) -> pa.Array:
    """A ``list<string>`` array: row i holds the labels whose column is true in ``mask[i]``."""
    n = mask.shape[0]
    counts = mask.sum(axis=1).astype(np.int64)
    if null_rows is not None:
        counts = np.where(null_rows, 0, counts)
        mask = mask & ~null_rows[:, None]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = take_labels(labels, np.nonzero(mask)[1])  # column indices, row-major order
    offsets_arr = pa.array(offsets, pa.int32())
    if null_rows is not None and null_rows.any():
        out = pa.ListArray.from_arrays(offsets_arr, values, mask=pa.array(null_rows))
    else:
        out = pa.ListArray.from_arrays(offsets_arr, values)
    return out.cast(pa.list_(pa.string()))


def categorical(rng: np.random.Generator, probs: npt.ArrayLike, n: int | None = None) -> IntArray:
    """Draw category indices: ``probs`` is ``(k,)`` (shared) or ``(n, k)`` (one row per draw)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        if n is None:
            raise ValueError("n is required with shared probabilities")
        cum = np.cumsum(p / p.sum())
        cum[-1] = 1.0
        return np.searchsorted(cum, rng.random(n), side="right").astype(np.int64)
    cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    u = rng.random(size=(p.shape[0],))
    return np.asarray((u[:, None] >= cum).sum(axis=1), dtype=np.int64)


def local_midnight_us(day: date) -> int:
    """UTC microseconds of local (Asia/Shanghai) midnight starting ``day``."""
    utc_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (utc_midnight - _EPOCH) // timedelta(microseconds=1) - LOCAL_OFFSET_US


def timestamps(us: npt.ArrayLike) -> pa.Array:
    """A ``timestamp[us, tz=UTC]`` array from epoch microseconds."""
    return pa.array(np.asarray(us, dtype=np.int64), pa.timestamp("us", tz="UTC"))


def decimal_from_cents(cents: npt.ArrayLike, precision: int = 18) -> pa.Array:
    """A ``decimal128(precision, 2)`` array from integer cents (exact, no float rounding)."""
    c = np.asarray(cents, dtype=np.int64)
    words = np.empty((c.size, 2), dtype=np.int64)
    words[:, 0] = c
    words[:, 1] = np.where(c < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(precision, 2), c.size, [None, pa.py_buffer(words)])
