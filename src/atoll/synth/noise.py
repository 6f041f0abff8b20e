"""Realistic formatting noise and invalid identifiers, as they arrive from real systems.

Why: identifier normalization and its reports are only tested if the data
contains what real exports contain: phones typed as ``+86 138-0013-8000``,
IMEIs printed in the ``AA-BBBBBB-CCCCCC-D`` layout, uppercase OAIDs, and a
small share of values that are simply wrong (a mistyped IMEI check digit, a
phone with a digit missing, the all-zero "limit ad tracking" OAID/IDFA). The
formats here are the ones the ``atoll.ids.normalize`` rules accept (or, for the
invalid ones, reject with a named reason).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atoll.synth._columns import (
    assemble,
    categorical,
    chars_to_strings,
    digit_chars,
    fixed_width_chars,
)

__all__ = [
    "PHONE_FORMATS",
    "format_imeis",
    "format_phones",
    "invalid_imeis",
    "invalid_phones",
]

Int = npt.NDArray[np.int64]

#: Noisy phone layouts (``D`` = one of the 11 digits), used with equal weight.
PHONE_FORMATS: Final = (
    "+86 DDD-DDDD-DDDD",
    "+86DDDDDDDDDDD",
    "DDD DDDD DDDD",
    "86-DDD-DDDD-DDDD",
    " DDDDDDDDDDD ",
    "(+86) DDD DDDD DDDD",
    "0086DDDDDDDDDDD",
)


def _layout(digits: npt.NDArray[np.uint8], pattern: str) -> pa.Array:
    """Strings laid out by ``pattern``: each ``D`` takes the next digit column."""
    chars = np.empty((digits.shape[0], len(pattern)), dtype=np.uint8)
    col = 0
    for i, ch in enumerate(pattern):
        if ch == "D":
            chars[:, i] = digits[:, col]
            col += 1
        else:
            chars[:, i] = ord(ch)
    return chars_to_strings(chars)


def format_phones(rng: np.random.Generator, phones: Int, noisy_share: float) -> pa.Array:
    """Raw phone strings: 11 plain digits, or (a ``noisy_share`` of rows) a noisy layout."""
    n = phones.size
    digits = digit_chars(phones, 11)
    noisy = rng.random(n) < noisy_share
    fmt = categorical(rng, np.ones(len(PHONE_FORMATS)), n)
    parts = [(np.nonzero(~noisy)[0], chars_to_strings(digits[~noisy]))]
    for f, pattern in enumerate(PHONE_FORMATS):
        pos = np.nonzero(noisy & (fmt == f))[0]
        parts.append((pos, _layout(digits[pos], pattern)))
    return assemble(n, parts, pa.string())


def format_imeis(imeis: pa.Array) -> pa.Array:
    """IMEIs printed as ``AA-BBBBBB-CCCCCC-D`` (reporting-body, TAC-serial-check layout)."""
    return _layout(fixed_width_chars(imeis, 15), "DD-DDDDDD-DDDDDD-D")


def invalid_imeis(rng: np.random.Generator, imeis: pa.Array) -> pa.Array:
    """The same IMEIs with a wrong Luhn check digit (a typo in the last digit)."""
    chars = fixed_width_chars(imeis, 15)
    bump = rng.integers(1, 10, chars.shape[0]).astype(np.uint8)
    chars[:, 14] = (chars[:, 14] - 48 + bump) % 10 + 48
    return chars_to_strings(chars)


def invalid_phones(rng: np.random.Generator, phones: Int) -> pa.Array:
    """Broken phone strings: a digit missing (10 digits) or a landline-like ``12`` prefix."""
    n = phones.size
    short = rng.random(n) < 0.7
    digits = digit_chars(phones, 11)
    bad_prefix = digits.copy()
    bad_prefix[:, 1] = ord("2")
    parts = [
        (np.nonzero(short)[0], chars_to_strings(digits[short][:, :10])),
        (np.nonzero(~short)[0], chars_to_strings(bad_prefix[~short])),
    ]
    return assemble(n, parts, pa.string())
