"""Identifier normalization: one canonical string per phone, device and member ID.

Why: two parties can only match an audience if they spell every identifier
the same way, byte for byte, *before* hashing it. A brand's CRM stores
``+86 138-0013-8000``, a data provider stores ``13800138000``, a media platform
only has ``md5("13800138000")``; an IMEI arrives as 14 digits from one system
and 15 from another; an IDFA is uppercase on the device and lowercase in a
data warehouse. The Chinese ad industry (Tencent Ads / 广点通, Ocean Engine /
巨量引擎, …) exchanges identifiers in a small set of agreed forms — the rules
and their sources are in ``docs/identifiers.md`` — and this module turns messy
columns into exactly those forms, vectorised with Arrow and numpy.

Bad values are never dropped silently: every row that fails gets a short
snake_case *reason* (table :data:`REASONS`), rows are counted per reason in an
:class:`InvalidReport`, and a few *masked* samples (``138****8000``; never the
full raw value) name the 1-based rows so a person can find and fix them.

Contract used by the rest of Atoll:

* :func:`normalize_array` — column in, :class:`Normalized` out (canonical
  values, null where invalid; validity mask; report).
* :func:`normalize_value` — one value; :class:`~atoll.errors.IdentifierError`
  whose ``reason`` is the reason code when invalid. It runs the same
  vectorised code on a one-element array, so both paths always agree.
* :func:`hash_array` / :func:`hash_value` — canonical plain values to the
  industry's hashed forms (MD5 / SHA-256, lowercase hex) after applying the
  type's case convention (IDFA uppercase, IMEI/OAID/e-mail lowercase).
* :func:`detect_form` — a hint (32 hex → MD5, 64 hex → SHA-256); the
  declared :class:`IdKind` always decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.crypto import md5_hex, md5_hex_many, sha256_hex, sha256_hex_many
from atoll.errors import ConfigError, DataError, IdentifierError, SchemaError

__all__ = [
    "ALL_KINDS",
    "KIND_LABELS",
    "MAX_EMAIL_LENGTH",
    "MAX_OPAQUE_LENGTH",
    "NULL_PLACEHOLDERS",
    "REASONS",
    "HashForm",
    "IdKind",
    "IdType",
    "InvalidReport",
    "InvalidSample",
    "Normalized",
    "describe_reason",
    "detect_form",
    "hash_array",
    "hash_value",
    "luhn_check_digit",
    "mask_identifier",
    "normalize_array",
    "normalize_table_column",
    "normalize_value",
    "parse_form",
    "string_buffers",
]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


class IdType(StrEnum):
    """What an identifier identifies (a person's phone, a device, a member …)."""

    PHONE = "phone"
    IMEI = "imei"
    OAID = "oaid"
    IDFA = "idfa"
    ANDROID_ID = "android_id"
    DEVICE_ID = "device_id"
    EMAIL = "email"
    MEMBER_ID = "member_id"


class HashForm(StrEnum):
    """How an identifier is written: plain, or the lowercase hex digest of the plain form."""

    PLAIN = "plain"
    MD5 = "md5"
    SHA256 = "sha256"


@dataclass(frozen=True, slots=True)
class IdKind:
    """A (type, form) pair such as ``imei`` + ``md5``; its label is ``"imei_md5"``.

    Plain kinds are labelled by the type alone (``"phone"``); hashed kinds by
    ``<type>_<form>`` (``"phone_sha256"``). Strings are accepted for both
    fields and converted; anything else raises :class:`ConfigError`.
    """

    type: IdType
    form: HashForm = HashForm.PLAIN

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "type", IdType(self.type))
            object.__setattr__(self, "form", HashForm(self.form))
        except ValueError as exc:
            raise ConfigError(
                f"invalid identifier kind ({self.type!r}, {self.form!r}); "
                f"types: {', '.join(t.value for t in IdType)}; "
                f"forms: {', '.join(f.value for f in HashForm)}"
            ) from exc

    @classmethod
    def parse(cls, label: str | IdKind) -> IdKind:
        """The kind named by ``label`` (case-insensitive), e.g. ``"imei_md5"``.

        Raises :class:`ConfigError` listing every valid label when unknown.
        """
        if isinstance(label, IdKind):
            return label
        if not isinstance(label, str):
            raise ConfigError(f"identifier kind must be a string label, got {type(label).__name__}")
        found = _KINDS_BY_LABEL.get(label.strip().lower())
        if found is None:
            raise ConfigError(
                f"unknown identifier kind {label!r}; valid kinds: {', '.join(KIND_LABELS)}"
            )
        return found

    @property
    def label(self) -> str:
        """``"phone"`` for plain kinds, ``"phone_sha256"`` for hashed ones."""
        if self.form is HashForm.PLAIN:
            return self.type.value
        return f"{self.type.value}_{self.form.value}"

    @property
    def hashed(self) -> bool:
        """True for MD5/SHA-256 kinds."""
        return self.form is not HashForm.PLAIN

    def __str__(self) -> str:
        return self.label


#: Every kind, plain first, in a stable order.
ALL_KINDS: Final[tuple[IdKind, ...]] = tuple(IdKind(t, f) for f in HashForm for t in IdType)
#: Every valid label, in the order of :data:`ALL_KINDS`.
KIND_LABELS: Final[tuple[str, ...]] = tuple(k.label for k in ALL_KINDS)
_KINDS_BY_LABEL: Final[dict[str, IdKind]] = {k.label: k for k in ALL_KINDS}

#: Longest accepted ``device_id`` / ``member_id`` (characters, after trimming).
MAX_OPAQUE_LENGTH: Final = 128
#: Longest accepted e-mail address (RFC 5321 path limit).
MAX_EMAIL_LENGTH: Final = 254

#: Values that mean "no value" in exported files (compared lowercase, after
#: trimming). They are reported as ``null_placeholder``; for ``device_id`` and
#: ``member_id`` this stops thousands of rows collapsing into one identity.
NULL_PLACEHOLDERS: Final[frozenset[str]] = frozenset(
    {"null", "none", "nil", "nan", "n/a", "na", "\\n", "undefined", "unknown", "-", "--", "0"}
)

#: Every reason code with its meaning; the table in ``docs/identifiers.md``.
REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "empty": "null, empty, or nothing left after removing whitespace and separators",
        "null_placeholder": "a placeholder for 'no value' such as NULL, None, N/A, \\N, -, 0",
        "looks_hashed": (
            "32 or 64 hex digits (an MD5/SHA-256 digest?) where a plain ID was declared; "
            "declare the column as <type>_md5 or <type>_sha256"
        ),
        "bad_country_code": "an international prefix other than +86 / 0086",
        "non_digit": "characters other than digits remain after removing separators",
        "not_hex": "characters other than hexadecimal digits (and dashes) remain",
        "bad_length": "wrong number of characters after removing separators",
        "bad_format": "right characters and length, wrong layout (UUID dashes misplaced)",
        "bad_prefix": "not a mainland-China mobile number (must match 1[3-9]xxxxxxxxx)",
        "imei_placeholder": "IMEI whose first 14 digits are one repeated digit (000000000000000)",
        "imei_bad_check_digit": "15-digit IMEI whose Luhn check digit is wrong",
        "oaid_zero": "all-zero OAID: the user turned off ad tracking",
        "idfa_zero": "all-zero IDFA: the user limited ad tracking / denied ATT",
        "android_id_zero": "all-zero Android ID",
        "android_id_known_bad": "9774d56d682e549c, shared by many devices (Android 2.2 bug)",
        "too_long": "longer than the type allows (128 characters; e-mail 254)",
        "not_printable": "contains control or invisible format characters",
        "bad_encoding": "contains U+FFFD, the mark of a failed decode (GBK read as UTF-8?)",
        "unknown_id_type": "the row's id_type is empty or names no known identifier kind",
        "email_bad_at": "an e-mail address needs exactly one '@'",
        "email_bad_local": "the part before '@' is empty, longer than 64, or has spaces",
        "email_bad_domain": "the part after '@' is not a plausible domain (labels + TLD)",
        "not_md5_hex": "a *_md5 column needs 32 hexadecimal digits",
        "not_sha256_hex": "a *_sha256 column needs 64 hexadecimal digits",
        "hash_of_empty": "the digest of the empty string: a blank value was hashed",
        "hash_of_placeholder": "the digest of a placeholder ID (all-zero OAID/IDFA/IMEI, …)",
    }
)
_REASON_NAMES: Final[tuple[str, ...]] = tuple(REASONS)
# Code 0 means "valid"; reason i has code i + 1.
_CODE: Final[dict[str, int]] = {name: i + 1 for i, name in enumerate(_REASON_NAMES)}


def describe_reason(reason: str) -> str:
    """A one-line explanation of a reason code (``ConfigError`` if unknown)."""
    try:
        return REASONS[reason]
    except KeyError:
        raise ConfigError(f"unknown reason {reason!r}; known: {', '.join(_REASON_NAMES)}") from None


def parse_form(form: HashForm | str) -> HashForm:
    """``form`` as a :class:`HashForm` (``ConfigError`` listing valid forms otherwise)."""
    if isinstance(form, HashForm):
        return form
    if isinstance(form, str):
        try:
            return HashForm(form.strip().lower())
        except ValueError:
            pass
    raise ConfigError(
        f"unknown hash form {form!r}; valid forms: {', '.join(f.value for f in HashForm)}"
    )


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvalidSample:
    """One invalid row: 1-based ``row``, ``reason`` code and the *masked* raw value.

    ``source`` is set only when reports of different sources were merged, so
    that the row number still points into the right file.
    """

    row: int
    reason: str
    value: str
    source: str | None = None


@dataclass
class InvalidReport:
    """How many values of one column were invalid, and why — never silent.

    ``by_reason`` counts rows per reason code; ``samples`` holds at most
    ``max_samples`` masked examples per reason, ordered by row.
    """

    source: str | None
    column: str | None
    total: int
    invalid: int
    by_reason: dict[str, int]
    samples: list[InvalidSample]
    kind: str | None = None
    max_samples: int = 5

    def __post_init__(self) -> None:
        if self.total < 0 or not 0 <= self.invalid <= self.total:
            raise DataError(f"inconsistent report: {self.invalid} invalid of {self.total}")
        if sum(self.by_reason.values()) != self.invalid:
            raise DataError(
                f"inconsistent report: reasons add up to {sum(self.by_reason.values())}, "
                f"not {self.invalid}"
            )
        unknown = set(self.by_reason) - set(REASONS)
        if unknown:
            raise DataError(f"report names unknown reasons: {sorted(unknown)}")
        if self.max_samples < 0:
            raise DataError("max_samples must be >= 0")

    @property
    def valid(self) -> int:
        """Number of valid rows."""
        return self.total - self.invalid

    def merge(self, other: InvalidReport) -> InvalidReport:
        """The report of both inputs together (e.g. two chunks or two files).

        Counts add up. ``source``/``column`` are kept when equal, else ``None``
        (samples then carry their own ``source``). Samples keep the first
        ``max_samples`` per reason in merge order. Reports of different kinds
        cannot be merged (``ConfigError``).
        """
        if not isinstance(other, InvalidReport):
            raise ConfigError(f"cannot merge an InvalidReport with {type(other).__name__}")
        if self.kind is not None and other.kind is not None and self.kind != other.kind:
            raise ConfigError(f"cannot merge reports of kinds {self.kind!r} and {other.kind!r}")
        same_source = self.source == other.source
        limit = max(self.max_samples, other.max_samples)

        def stamped(report: InvalidReport) -> Iterator[InvalidSample]:
            for sample in report.samples:
                if same_source or sample.source is not None:
                    yield sample
                else:
                    yield replace(sample, source=report.source)

        kept: list[InvalidSample] = []
        per_reason: dict[str, int] = {}
        for sample in (*stamped(self), *stamped(other)):
            taken = per_reason.get(sample.reason, 0)
            if taken < limit:
                per_reason[sample.reason] = taken + 1
                kept.append(sample)
        by_reason = dict(self.by_reason)
        for reason, count in other.by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
        return InvalidReport(
            source=self.source if same_source else None,
            column=self.column if self.column == other.column else None,
            total=self.total + other.total,
            invalid=self.invalid + other.invalid,
            by_reason=_ordered_reasons(by_reason),
            samples=kept,
            kind=self.kind if self.kind is not None else other.kind,
            max_samples=limit,
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (for reports, logs and the CLI); values are masked."""
        return {
            "source": self.source,
            "column": self.column,
            "kind": self.kind,
            "total": self.total,
            "valid": self.valid,
            "invalid": self.invalid,
            "by_reason": dict(self.by_reason),
            "samples": [
                {"row": s.row, "reason": s.reason, "value": s.value}
                | ({"source": s.source} if s.source is not None else {})
                for s in self.samples
            ],
        }


def _ordered_reasons(counts: Mapping[str, int]) -> dict[str, int]:
    return {name: counts[name] for name in _REASON_NAMES if counts.get(name)}


@dataclass(frozen=True)
class Normalized:
    """The result of :func:`normalize_array`.

    ``values`` holds the canonical form (``string``, or ``large_string`` when
    the input was), null where invalid; ``valid`` is the row mask; ``report``
    says how many rows failed and why.
    """

    values: pa.Array
    valid: pa.BooleanArray
    report: InvalidReport


# ---------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------

# Trimmed from both ends: Unicode White_Space, the C0 separators Python's
# str.strip() also treats as space, and the invisible characters a copy-paste
# or a CSV byte-order mark leaves behind (ZWSP/ZWNJ/ZWJ/WJ/BOM/MVS).
_TRIM_CHARS: Final = (
    " \t\n\v\f\r\x1c\x1d\x1e\x1f\x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
    "\u180e\u200b\u200c\u200d\u2060\ufeff"
)
_ASCII_TRIM_CHARS: Final = " \t\n\v\f\r\x1c\x1d\x1e\x1f"
_MASK: Final = "****"
_PLAIN_PHONE: Final = IdKind(IdType.PHONE)


def mask_identifier(value: str, kind: IdKind | str | None = None) -> str:
    """A display-safe form of a (possibly invalid) identifier for logs and reports.

    Plain phones keep the first 3 and last 4 characters (``138****8000``, the
    convention Chinese apps use); other values of 8+ characters keep the first
    3 and last 2, values of 4–7 keep the first and last, shorter ones become
    ``****``. At most 7 characters of the value survive, so a full phone
    number or device ID never does. Non-printable kept characters become ``?``.
    """
    text = value.strip(_TRIM_CHARS)
    size = len(text)
    if size == 0:
        return ""
    is_phone = kind is not None and IdKind.parse(kind) == _PLAIN_PHONE
    if is_phone and size >= 11:
        head, tail = 3, 4
    elif size >= 8:
        head, tail = 3, 2
    elif size >= 4:
        head, tail = 1, 1
    else:
        return _MASK
    return _printable(text[:head]) + _MASK + _printable(text[-tail:])


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


# ---------------------------------------------------------------------------
# Arrow / numpy helpers
# ---------------------------------------------------------------------------


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> BoolArray:
    """A null-free Arrow boolean result as a numpy bool array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _all_ascii(arr: pa.Array) -> bool:
    if len(arr) == 0:
        return True
    if arr.null_count == 0 and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return bool(_ascii_body(arr) is not None)
    return bool(pc.all(pc.string_is_ascii(arr)).as_py())


def _ascii_body(arr: pa.Array) -> npt.NDArray[np.uint8] | None:
    """The bytes of a null-free string array when they are all ASCII, else ``None``.

    One vectorized pass over the data buffer (several times faster than
    ``string_is_ascii``, which walks the strings one by one).
    """
    offsets, data = string_buffers(arr)
    body = data[offsets[0] : offsets[-1]]
    return body if body.size == 0 or int(body.max()) < 0x80 else None


@overload
def string_buffers(
    arr: pa.Array, *, native: Literal[False] = False
) -> tuple[IntArray, npt.NDArray[np.uint8]]: ...
@overload
def string_buffers(
    arr: pa.Array, *, native: Literal[True]
) -> tuple[npt.NDArray[np.signedinteger[Any]], npt.NDArray[np.uint8]]: ...
def string_buffers(
    arr: pa.Array, *, native: bool = False
) -> tuple[npt.NDArray[np.signedinteger[Any]], npt.NDArray[np.uint8]]:
    """Absolute byte offsets (``len + 1``; int64 unless ``native``) and the data of a string array.

    Works for ``string`` and ``large_string`` and for slices (the array's
    offset is applied); string ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
    ``native``: the offsets as the array stores them (int32 for ``string``),
    a read-only view instead of a widened copy.
    """
    large = pa.types.is_large_string(arr.type)
    buffers = arr.buffers()
    width: type[np.signedinteger[Any]] = np.int64 if large else np.int32
    raw_offsets = np.frombuffer(buffers[1], dtype=width)
    offsets = raw_offsets[arr.offset : arr.offset + len(arr) + 1]
    if not native:
        offsets = offsets.astype(np.int64)
    data: npt.NDArray[np.uint8] = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    return offsets, data


def _byte_lengths(arr: pa.Array) -> IntArray:
    offsets, _ = string_buffers(arr)
    return np.diff(offsets)


def _char_lengths(arr: pa.Array) -> IntArray:
    return np.asarray(pc.utf8_length(arr).to_numpy(zero_copy_only=False), dtype=np.int64)


def _from_bytes(type_: pa.DataType, offsets: IntArray, data: npt.NDArray[np.uint8]) -> pa.Array:
    """A null-free string array of ``type_`` from offsets and bytes."""
    width = np.int64 if pa.types.is_large_string(type_) else np.int32
    return pa.Array.from_buffers(
        type_,
        len(offsets) - 1,
        [None, pa.py_buffer(offsets.astype(width)), pa.py_buffer(np.ascontiguousarray(data))],
    )


def _gather(arr: pa.Array, rows: IntArray, width: int) -> npt.NDArray[np.uint8]:
    """The first ``width`` bytes of each of ``rows`` (each at least that long)."""
    offsets, data = string_buffers(arr)
    if len(rows) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    gathered: npt.NDArray[np.uint8] = data[offsets[rows][:, None] + np.arange(width)]
    return gathered


def _delete_ascii(arr: pa.Array, chars: bytes) -> pa.Array:
    """Remove every occurrence of the ASCII ``chars`` from a null-free string array.

    Works on the raw UTF-8 buffer with numpy (ASCII bytes never occur inside a
    multi-byte sequence, so this is safe); one pass instead of one regex
    replace per row.
    """
    table = np.zeros(256, dtype=np.bool_)
    table[list(chars)] = True
    offsets, data = string_buffers(arr)
    start, end = int(offsets[0]), int(offsets[-1])
    segment = data[start:end]
    drop = table[segment]
    if not drop.any():
        return arr
    keep = ~drop
    kept_before = np.zeros(len(segment) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return _from_bytes(arr.type, kept_before[offsets - start], segment[keep])


def _strip_prefix(arr: pa.Array, rows: BoolArray, size: int) -> pa.Array:
    if not rows.any():
        return arr
    return pc.if_else(pa.array(rows), pc.utf8_slice_codeunits(arr, start=size), arr)


def _match(arr: pa.Array, pattern: str, rows: BoolArray | None = None) -> BoolArray:
    """Regex match per row; when ``rows`` is given, only those rows are tested."""
    if rows is None:
        return _np_bool(pc.match_substring_regex(arr, pattern))
    out = np.zeros(len(arr), dtype=np.bool_)
    index = np.flatnonzero(rows)
    if len(index):
        out[index] = _np_bool(pc.match_substring_regex(arr.take(pa.array(index)), pattern))
    return out


def _lower(arr: pa.Array) -> pa.Array:
    return pc.ascii_lower(arr) if _all_ascii(arr) else pc.utf8_lower(arr)


def _upper(arr: pa.Array) -> pa.Array:
    return pc.ascii_upper(arr) if _all_ascii(arr) else pc.utf8_upper(arr)


def _equals_any(arr: pa.Array, values: frozenset[str]) -> BoolArray:
    return _np_bool(pc.is_in(arr, value_set=pa.array(sorted(values), type=arr.type)))


_HEX_DIGEST: Final = r"^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{64})$"


def _looks_hashed(trimmed: pa.Array, lengths: IntArray) -> BoolArray:
    return _match(trimmed, _HEX_DIGEST, (lengths == 32) | (lengths == 64))


def _placeholder_rows(trimmed: pa.Array, rows: BoolArray) -> BoolArray:
    out = np.zeros(len(trimmed), dtype=np.bool_)
    index = np.flatnonzero(rows)
    if len(index):
        sub = _lower(trimmed.take(pa.array(index)))
        out[index] = _equals_any(sub, NULL_PLACEHOLDERS)
    return out


class _Rules:
    """Reason codes for the invalid rows, first matching rule wins (vectorised)."""

    def __init__(self, valid: BoolArray) -> None:
        self.codes = np.zeros(len(valid), dtype=np.int8)
        self.open = ~valid  # invalid rows not yet given a reason

    def add(self, reason: str, rows: BoolArray) -> None:
        hit = self.open & rows
        self.codes[hit] = _CODE[reason]
        self.open &= ~hit

    def rest(self, reason: str) -> npt.NDArray[np.int8]:
        self.codes[self.open] = _CODE[reason]
        self.open[:] = False
        return self.codes


# ---------------------------------------------------------------------------
# Luhn (IMEI check digit)
# ---------------------------------------------------------------------------


def _luhn_digits(body: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Luhn check digit of each row of a ``(n, 14)`` digit matrix.

    Counting from the right of the body, the 1st, 3rd, … digits are doubled
    (a doubled digit above 9 loses 9); the check digit tops the sum up to a
    multiple of 10 (ISO/IEC 7812-1 Annex B, as used by 3GPP TS 23.003 for IMEI).
    """
    width = body.shape[1]
    doubled_cols = np.arange(width - 1, -1, -2)
    plain_cols = np.arange(width - 2, -1, -2)
    doubled = body[:, doubled_cols] * 2
    doubled -= 9 * (doubled > 9)
    total = doubled.sum(axis=1) + body[:, plain_cols].sum(axis=1)
    return np.asarray((10 - total % 10) % 10, dtype=np.int16)


def luhn_check_digit(body: str) -> int:
    """The Luhn check digit of a string of decimal digits (the IMEI's 15th digit)."""
    if not body or not body.isascii() or not body.isdigit():
        raise ConfigError("Luhn body must be a non-empty string of ASCII digits")
    digits = np.frombuffer(body.encode("ascii"), dtype=np.uint8).astype(np.int16) - 48
    return int(_luhn_digits(digits[None, :])[0])


# ---------------------------------------------------------------------------
# Per-type rules. Each takes the trimmed, null-free column and returns the
# canonical column plus a reason code per row (0 = valid).
# ---------------------------------------------------------------------------

_Handler = Callable[[pa.Array], tuple[pa.Array, npt.NDArray[np.int8]]]

_PHONE_SEPARATORS: Final = b" \t\n\v\f\r-.()"
_IMEI_SEPARATORS: Final = b" \t\n\v\f\r-./"
_DIGIT_LO, _DIGIT_HI = ord("0"), ord("9")


def _is_digits(matrix: npt.NDArray[np.uint8]) -> BoolArray:
    return np.asarray(((matrix >= _DIGIT_LO) & (matrix <= _DIGIT_HI)).all(axis=1), dtype=np.bool_)


def _phone(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    cleaned = _delete_ascii(trimmed, _PHONE_SEPARATORS)
    lengths = _byte_lengths(cleaned)
    plus86 = _np_bool(pc.starts_with(cleaned, "+86"))
    zero86 = _np_bool(pc.starts_with(cleaned, "0086"))
    bare86 = _np_bool(pc.starts_with(cleaned, "86")) & (lengths == 13)
    cleaned = _strip_prefix(cleaned, plus86, 3)
    cleaned = _strip_prefix(cleaned, zero86, 4)
    cleaned = _strip_prefix(cleaned, bare86, 2)
    lengths = _byte_lengths(cleaned)

    rows = np.flatnonzero(lengths == 11)
    matrix = _gather(cleaned, rows, 11)
    ok = (
        _is_digits(matrix)
        & (matrix[:, 0] == ord("1"))
        & (matrix[:, 1] >= ord("3"))
        & (matrix[:, 1] <= ord("9"))
    )
    valid = np.zeros(len(cleaned), dtype=np.bool_)
    valid[rows] = ok
    if valid.all():
        return cleaned, np.zeros(len(cleaned), dtype=np.int8)

    rules = _Rules(valid)
    raw_lengths = _char_lengths(trimmed)
    rules.add("empty", (raw_lengths == 0) | (lengths == 0))
    rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open))
    rules.add("looks_hashed", _looks_hashed(trimmed, raw_lengths))
    foreign = _np_bool(pc.starts_with(cleaned, "+")) | _np_bool(pc.starts_with(cleaned, "00"))
    rules.add("bad_country_code", foreign)
    rules.add("non_digit", ~_np_bool(pc.ascii_is_decimal(cleaned)))
    rules.add("bad_length", lengths != 11)
    return cleaned, rules.rest("bad_prefix")


def _imei(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    cleaned = _delete_ascii(_lower(trimmed), _IMEI_SEPARATORS)
    lengths = _byte_lengths(cleaned)
    size = len(cleaned)

    rows = np.flatnonzero((lengths == 14) | (lengths == 15))
    body_bytes = _gather(cleaned, rows, 14)
    body_ok = _is_digits(body_bytes)
    is15 = lengths[rows] == 15
    given = np.full(len(rows), -1, dtype=np.int16)
    given[is15] = _gather(cleaned, rows[is15], 15)[:, 14].astype(np.int16) - _DIGIT_LO
    digits_ok = body_ok & (~is15 | ((given >= 0) & (given <= 9)))
    body = body_bytes.astype(np.int16) - _DIGIT_LO
    repeated = (body == body[:, :1]).all(axis=1)
    check = _luhn_digits(body)

    placeholder = np.zeros(size, dtype=np.bool_)
    placeholder[rows] = digits_ok & repeated
    bad_check = np.zeros(size, dtype=np.bool_)
    bad_check[rows] = digits_ok & ~repeated & is15 & (given != check)
    valid = np.zeros(size, dtype=np.bool_)
    valid[rows] = digits_ok & ~repeated & (~is15 | (given == check))
    # MEID (3GPP2 S.R0048): 14 hex digits, regional code A0–FF, so it starts with a letter.
    meid = _match(cleaned, r"^[a-f][0-9a-f]{13}$", (lengths == 14) & ~valid & ~placeholder)
    valid |= meid

    append = np.zeros(size, dtype=np.bool_)
    append[rows] = digits_ok & ~repeated & ~is15
    if append.any():
        # 14-digit IMEI body: append the Luhn check digit, built as bytes.
        pick = append[rows]
        full = np.empty((int(pick.sum()), 15), dtype=np.uint8)
        full[:, :14] = body_bytes[pick]
        full[:, 14] = check[pick] + _DIGIT_LO
        offsets = np.arange(0, full.size + 1, 15, dtype=np.int64)
        completed = _from_bytes(cleaned.type, offsets, full.reshape(-1))
        cleaned = pc.replace_with_mask(cleaned, pa.array(append), completed)
    if valid.all():
        return cleaned, np.zeros(size, dtype=np.int8)

    rules = _Rules(valid)
    raw_lengths = _char_lengths(trimmed)
    rules.add("empty", (raw_lengths == 0) | (lengths == 0))
    rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open))
    rules.add("looks_hashed", _looks_hashed(trimmed, raw_lengths))
    rules.add("imei_placeholder", placeholder)
    rules.add("imei_bad_check_digit", bad_check)
    decimal = _np_bool(pc.ascii_is_decimal(cleaned))
    meid_like = _match(cleaned, r"^[a-f][0-9a-f]*$", rules.open & ~decimal)
    rules.add("non_digit", ~decimal & ~meid_like)
    return cleaned, rules.rest("bad_length")


_UUID_LOWER: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_OAID_FORMS: Final = rf"^(?:{_UUID_LOWER}|[0-9a-f]{{16}}|[0-9a-f]{{32}}|[0-9a-f]{{64}})$"
_UUID_UPPER: Final = r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$"


def _oaid(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    cleaned = _lower(trimmed)
    shaped = _match(cleaned, _OAID_FORMS)
    zero = _match(cleaned, r"^[0-]+$", shaped)
    valid = shaped & ~zero
    if valid.all():
        return cleaned, np.zeros(len(cleaned), dtype=np.int8)
    rules = _Rules(valid)
    rules.add("empty", _char_lengths(trimmed) == 0)
    rules.add("oaid_zero", zero)
    rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open))
    rules.add("not_hex", _match(cleaned, r"[^0-9a-f-]", rules.open))
    rules.add("bad_format", _np_bool(pc.match_substring(cleaned, "-")))
    return cleaned, rules.rest("bad_length")


def _idfa(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    cleaned = _upper(trimmed)
    shaped = _match(cleaned, _UUID_UPPER)
    lengths = _char_lengths(trimmed)
    zero = _match(cleaned, r"^[0-]+$", shaped | (lengths == 32))
    valid = shaped & ~zero
    if valid.all():
        return cleaned, np.zeros(len(cleaned), dtype=np.int8)
    rules = _Rules(valid)
    rules.add("empty", lengths == 0)
    rules.add("idfa_zero", zero)
    rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open))
    rules.add("looks_hashed", _looks_hashed(trimmed, lengths))
    rules.add("not_hex", _match(cleaned, r"[^0-9A-F-]", rules.open))
    rules.add("bad_format", lengths == 36)
    return cleaned, rules.rest("bad_length")


_ANDROID_ID_KNOWN_BAD: Final = frozenset({"9774d56d682e549c"})


def _android_id(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    cleaned = _lower(trimmed)
    # A 64-bit value in hex; pre-Android-8 devices print it without leading
    # zeros (Long.toHexString), so 13–15 digits occur (1 device in 16 has 15).
    shaped = _match(cleaned, r"^[0-9a-f]{13,16}$")
    zero = _match(cleaned, r"^0+$", shaped)
    known_bad = _equals_any(cleaned, _ANDROID_ID_KNOWN_BAD)
    valid = shaped & ~zero & ~known_bad
    if valid.all():
        return cleaned, np.zeros(len(cleaned), dtype=np.int8)
    rules = _Rules(valid)
    lengths = _char_lengths(trimmed)
    rules.add("empty", lengths == 0)
    rules.add("android_id_zero", zero)
    rules.add("android_id_known_bad", known_bad)
    rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open))
    rules.add("looks_hashed", _looks_hashed(trimmed, lengths))
    rules.add("not_hex", _match(cleaned, r"[^0-9a-f]", rules.open))
    return cleaned, rules.rest("bad_length")


def _opaque(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    ascii_body = _ascii_body(trimmed)
    if ascii_body is not None:
        # ASCII (the usual device and member ids): a character is a byte, no
        # U+FFFD can occur, and the only unprintable characters are the C0
        # controls and DEL, looked for in the bytes before any regex runs.
        lengths = _byte_lengths(trimmed)
        control = (ascii_body < 0x20) | (ascii_body == 0x7F)
        unprintable = (
            _match(trimmed, r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}]")
            if control.any()
            else np.zeros(len(trimmed), dtype=np.bool_)
        )
        bad_encoding = np.zeros(len(trimmed), dtype=np.bool_)
    else:
        lengths = _char_lengths(trimmed)
        unprintable = _match(trimmed, r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}]")
        bad_encoding = _np_bool(pc.match_substring(trimmed, "\ufffd"))
    too_long = lengths > MAX_OPAQUE_LENGTH
    placeholder = _placeholder_rows(trimmed, lengths <= 9)
    valid = (lengths > 0) & ~too_long & ~unprintable & ~bad_encoding & ~placeholder
    if valid.all():
        return trimmed, np.zeros(len(trimmed), dtype=np.int8)
    rules = _Rules(valid)
    rules.add("empty", lengths == 0)
    rules.add("null_placeholder", placeholder)
    rules.add("too_long", too_long)
    rules.add("bad_encoding", bad_encoding)
    return trimmed, rules.rest("not_printable")


# Length limits are checked apart from the patterns: counted repetition of
# Unicode classes makes RE2 compile slowly (pyarrow compiles per call).
_EMAIL_LOCAL: Final = r"^[^@\s\p{C}]+@"
_EMAIL_DOMAIN: Final = (
    r"@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?\.)+"
    r"(?:\p{L}\p{L}+|xn--[a-z0-9-]+)$"
)
_EMAIL_LONG_LABEL: Final = r"@[^@]*[^.@]{64}"
_EMAIL_MAX_LOCAL: Final = 64


def _email(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
    cleaned = _lower(trimmed)
    lengths = _char_lengths(cleaned)
    one_at = np.asarray(pc.count_substring(cleaned, "@").to_numpy(), dtype=np.int64) == 1
    ok_length = (lengths > 0) & (lengths <= MAX_EMAIL_LENGTH)
    at_byte = np.asarray(pc.find_substring(cleaned, "@").to_numpy(), dtype=np.int64)
    local_ok = _match(cleaned, _EMAIL_LOCAL, one_at & ok_length) & (at_byte <= _EMAIL_MAX_LOCAL)
    domain_ok = _match(cleaned, _EMAIL_DOMAIN, local_ok) & ~_match(
        cleaned, _EMAIL_LONG_LABEL, local_ok
    )
    valid = domain_ok
    if valid.all():
        return cleaned, np.zeros(len(cleaned), dtype=np.int8)
    rules = _Rules(valid)
    rules.add("empty", lengths == 0)
    rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open))
    rules.add("too_long", lengths > MAX_EMAIL_LENGTH)
    rules.add("looks_hashed", _looks_hashed(trimmed, lengths))
    rules.add("email_bad_at", ~one_at)
    rules.add("email_bad_local", ~local_ok)
    return cleaned, rules.rest("email_bad_domain")


# Plain placeholder IDs whose digests show up in hashed files (a limited-ad-
# tracking device hashed as if it were an ID); see docs/identifiers.md.
_PLACEHOLDER_PLAIN: Final[dict[IdType, tuple[str, ...]]] = {
    IdType.IMEI: ("000000000000000", "00000000000000"),
    IdType.OAID: (
        "00000000-0000-0000-0000-000000000000",
        "0" * 16,
        "0" * 32,
        "0" * 64,
    ),
    IdType.IDFA: ("00000000-0000-0000-0000-000000000000",),
    IdType.ANDROID_ID: ("9774d56d682e549c", "0" * 16),
}


def _digest(form: HashForm, data: bytes) -> str:
    return md5_hex(data) if form is HashForm.MD5 else sha256_hex(data)


def _hashed_handler(kind: IdKind) -> _Handler:
    width = 32 if kind.form is HashForm.MD5 else 64
    reason = "not_md5_hex" if kind.form is HashForm.MD5 else "not_sha256_hex"
    empty_digest = frozenset({_digest(kind.form, b"")})
    placeholders = frozenset(
        _digest(kind.form, p.encode("ascii")) for p in _PLACEHOLDER_PLAIN.get(kind.type, ())
    )

    def handle(trimmed: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int8]]:
        cleaned = pc.ascii_lower(trimmed)
        shaped = _match(cleaned, rf"^[0-9a-f]{{{width}}}$")
        of_empty = _equals_any(cleaned, empty_digest)
        of_placeholder = (
            _equals_any(cleaned, placeholders) if placeholders else np.zeros_like(shaped)
        )
        valid = shaped & ~of_empty & ~of_placeholder
        if valid.all():
            return cleaned, np.zeros(len(cleaned), dtype=np.int8)
        rules = _Rules(valid)
        rules.add("empty", _char_lengths(trimmed) == 0)
        rules.add("null_placeholder", _placeholder_rows(trimmed, rules.open & ~shaped))
        rules.add(reason, ~shaped)
        rules.add("hash_of_empty", of_empty)
        return cleaned, rules.rest("hash_of_placeholder")

    return handle


_PLAIN_HANDLERS: Final[dict[IdType, _Handler]] = {
    IdType.PHONE: _phone,
    IdType.IMEI: _imei,
    IdType.OAID: _oaid,
    IdType.IDFA: _idfa,
    IdType.ANDROID_ID: _android_id,
    IdType.DEVICE_ID: _opaque,
    IdType.MEMBER_ID: _opaque,
    IdType.EMAIL: _email,
}
_HANDLERS: Final[dict[IdKind, _Handler]] = {
    kind: (_hashed_handler(kind) if kind.hashed else _PLAIN_HANDLERS[kind.type])
    for kind in ALL_KINDS
}
# Opaque IDs are compared byte for byte: no Unicode compatibility folding.
_NO_NFKC: Final = frozenset({IdType.DEVICE_ID, IdType.MEMBER_ID})


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _as_string_array(
    values: pa.Array | pa.ChunkedArray | Sequence[str | None],
    kind: IdKind,
    source: str | None,
    column: str | None,
) -> pa.Array | pa.ChunkedArray:
    """The input as an Arrow ``string``/``large_string`` array (or chunked array)."""
    if isinstance(values, str | bytes):
        raise ConfigError("expected a column of values, got a single string (use normalize_value)")
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        items = values if isinstance(values, Sequence) else list(values)
        for index, item in enumerate(items):
            if item is not None and not isinstance(item, str):
                raise SchemaError(
                    f"{kind.label} values must be text, got {type(item).__name__}",
                    source=source,
                    row=index + 1,
                    column=column,
                )
        return pa.array(items, type=pa.string())
    type_ = values.type
    if pa.types.is_dictionary(type_):
        values = values.cast(type_.value_type)
        type_ = values.type
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return values
    if pa.types.is_string_view(type_) or pa.types.is_null(type_):
        return values.cast(pa.string())
    if pa.types.is_integer(type_) and kind == _PLAIN_PHONE:
        # Safe only for phones: they start with 1 (or 86), so no leading zero was lost.
        return values.cast(pa.string())
    raise SchemaError(
        f"{kind.label} column must be text, got Arrow type {type_} "
        "(read identifier columns as strings: numeric types drop leading zeros)",
        source=source,
        column=column,
    )


def _normalize_chunk(
    raw: pa.Array,
    kind: IdKind,
    *,
    source: str | None,
    column: str | None,
    row_offset: int,
    max_samples: int,
) -> tuple[pa.Array, BoolArray, InvalidReport]:
    filled = pc.fill_null(raw, "") if raw.null_count else raw
    if _all_ascii(filled):
        trimmed = pc.ascii_trim(filled, characters=_ASCII_TRIM_CHARS)
    else:
        if kind.type not in _NO_NFKC:
            # Full-width digits/letters, ideographic space, full-width '＋'/'＠' → ASCII.
            filled = pc.utf8_normalize(filled, form="NFKC")
        trimmed = pc.utf8_trim(filled, characters=_TRIM_CHARS)
    cleaned, codes = _HANDLERS[kind](trimmed)
    valid = codes == 0
    values = pc.if_else(pa.array(valid), cleaned, pa.scalar(None, type=cleaned.type))

    counts = np.bincount(codes, minlength=len(_REASON_NAMES) + 1)
    by_reason = {
        name: int(counts[code])
        for name, code in _CODE.items()
        if code < len(counts) and counts[code]
    }
    samples: list[InvalidSample] = []
    if max_samples:
        for name in by_reason:
            rows = np.flatnonzero(codes == _CODE[name])[:max_samples]
            shown = trimmed.take(pa.array(rows)).to_pylist()
            samples.extend(
                InvalidSample(
                    row=int(r) + 1 + row_offset, reason=name, value=mask_identifier(v, kind)
                )
                for r, v in zip(rows, shown, strict=True)
            )
        samples.sort(key=lambda s: s.row)
    report = InvalidReport(
        source=source,
        column=column,
        total=len(raw),
        invalid=int(len(raw) - valid.sum()),
        by_reason=by_reason,
        samples=samples,
        kind=kind.label,
        max_samples=max_samples,
    )
    return values, valid, report


def normalize_table_column(
    table: pa.Table,
    column: str,
    kind: IdKind | str,
    *,
    source: str | None = None,
    row_offset: int = 0,
    max_samples: int = 5,
) -> tuple[pa.Table, Normalized]:
    """Normalize ``table[column]`` in place of the original; invalid rows become null.

    Returns the table with the column replaced and the :class:`Normalized`
    result (its ``valid`` mask selects the good rows, its ``report`` counts
    the rest). A missing column is a :class:`SchemaError` listing the columns.
    """
    if column not in table.column_names:
        raise SchemaError(
            f"no column {column!r} (columns: {', '.join(table.column_names)})", source=source
        )
    result = normalize_array(
        table[column],
        kind,
        source=source,
        column=column,
        row_offset=row_offset,
        max_samples=max_samples,
    )
    index = table.column_names.index(column)
    return table.set_column(index, column, result.values), result


def normalize_array(
    values: pa.Array | pa.ChunkedArray | Sequence[str | None],
    kind: IdKind | str,
    *,
    source: str | None = None,
    column: str | None = None,
    row_offset: int = 0,
    max_samples: int = 5,
) -> Normalized:
    """Canonicalize a column of identifiers of one ``kind``; invalid rows become null.

    ``source``/``column`` name the input in the report; ``row_offset`` is
    added to the 1-based row numbers of samples (pass the number of rows
    before this chunk). Raises :class:`SchemaError` if the column is not text
    (integers are accepted for phones only) and :class:`ConfigError` for an
    unknown kind or bad parameters. Invalid *values* never raise: they are
    counted in ``report``.
    """
    parsed = IdKind.parse(kind)
    if not isinstance(row_offset, int) or row_offset < 0:
        raise ConfigError(f"row_offset must be a non-negative integer, got {row_offset!r}")
    if not isinstance(max_samples, int) or max_samples < 0:
        raise ConfigError(f"max_samples must be a non-negative integer, got {max_samples!r}")
    column_values = _as_string_array(values, parsed, source, column)
    chunks = column_values.chunks if isinstance(column_values, pa.ChunkedArray) else [column_values]
    if not chunks:
        chunks = [pa.array([], type=column_values.type)]
    out_values: list[pa.Array] = []
    out_valid: list[BoolArray] = []
    reports: list[InvalidReport] = []
    offset = row_offset
    for chunk in chunks:
        chunk_values, chunk_valid, chunk_report = _normalize_chunk(
            chunk,
            parsed,
            source=source,
            column=column,
            row_offset=offset,
            max_samples=max_samples,
        )
        offset += len(chunk)
        out_values.append(chunk_values)
        out_valid.append(chunk_valid)
        reports.append(chunk_report)
    report = reports[0]
    for later in reports[1:]:
        report = report.merge(later)
    if len(out_values) == 1:
        merged = out_values[0]
    else:
        total_bytes = sum(int(a.nbytes) for a in out_values)
        if pa.types.is_string(out_values[0].type) and total_bytes >= 2**31 - 1:
            out_values = [a.cast(pa.large_string()) for a in out_values]
        merged = pa.concat_arrays(out_values)
    return Normalized(
        values=merged,
        valid=pa.array(np.concatenate(out_valid), type=pa.bool_()),
        report=report,
    )


def normalize_value(value: str, kind: IdKind | str) -> str:
    """The canonical form of one identifier; :class:`IdentifierError` if invalid.

    The error's ``reason`` is the reason code (see :data:`REASONS` and
    :func:`describe_reason`). Runs :func:`normalize_array` on one value.
    """
    parsed = IdKind.parse(kind)
    if not isinstance(value, str):
        raise SchemaError(f"{parsed.label} value must be text, got {type(value).__name__}")
    result = normalize_array([value], parsed, max_samples=0)
    if not result.valid[0].as_py():
        (reason,) = result.report.by_reason
        raise IdentifierError(reason)
    return str(result.values[0].as_py())


def _case_convention(arr: pa.Array, type_: IdType) -> pa.Array:
    """The letter case each platform hashes: IDFA upper; IMEI/OAID/Android ID/e-mail lower."""
    if type_ is IdType.IDFA:
        return _upper(arr)
    if type_ in (IdType.IMEI, IdType.OAID, IdType.ANDROID_ID, IdType.EMAIL):
        return _lower(arr)
    return arr


def hash_array(
    normalized: pa.Array | pa.ChunkedArray,
    kind: IdKind | str,
    form: HashForm | str,
) -> pa.Array:
    """The industry hashed form (lowercase hex) of already-normalized values.

    ``kind`` is the kind of ``normalized`` (normally a plain kind, the output
    of :func:`normalize_array`); the type's case convention is applied before
    hashing. ``form=plain`` returns the values unchanged; a hashed kind can
    only be "hashed" to its own form (values returned lowercased). Nulls stay
    null. Digests of other digests (Tencent's ``MD5_SHA256_*``) are not a
    :class:`HashForm` and raise :class:`ConfigError`.
    """
    parsed = IdKind.parse(kind)
    target = parse_form(form)
    arr = normalized.combine_chunks() if isinstance(normalized, pa.ChunkedArray) else normalized
    if not isinstance(arr, pa.Array):
        raise ConfigError(f"hash_array needs an Arrow array, got {type(normalized).__name__}")
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if not pa.types.is_null(arr.type):
            raise SchemaError(f"hash_array needs a string array, got Arrow type {arr.type}")
        arr = arr.cast(pa.string())
    if parsed.hashed:
        if target is parsed.form:
            return pc.ascii_lower(arr)
        raise ConfigError(
            f"{parsed.label} values are already {parsed.form.value} digests; "
            f"they cannot be turned into {target.value}"
        )
    cased = _case_convention(arr, parsed.type)
    if target is HashForm.PLAIN:
        return cased
    present = pc.drop_null(cased)
    # Per-row hashing is unavoidable (no MD5/SHA-256 kernel in Arrow or numpy);
    # the loop lives in atoll.crypto's batch helpers.
    data = present.cast(pa.large_binary()).to_pylist()
    digests = md5_hex_many(data) if target is HashForm.MD5 else sha256_hex_many(data)
    hashed = pa.array(digests, type=pa.string())
    if arr.null_count == 0:
        return hashed
    return pc.replace_with_mask(pa.nulls(len(arr), type=pa.string()), arr.is_valid(), hashed)


def hash_value(normalized: str, kind: IdKind | str, form: HashForm | str) -> str:
    """:func:`hash_array` for one normalized value."""
    if not isinstance(normalized, str):
        raise SchemaError(f"hash_value needs text, got {type(normalized).__name__}")
    out = hash_array(pa.array([normalized], type=pa.string()), kind, form)[0].as_py()
    return str(out)


def detect_form(value: str) -> HashForm:
    """Guess the form of one value: 32 hex → MD5, 64 hex → SHA-256, else PLAIN.

    Only a hint: a 32- or 64-hex OAID (Xiaomi, vivo, OPPO …) and any opaque
    device or member ID may look like a digest. The kind a column is declared
    with (``IdKind.form``) always decides; use this to suggest a label.
    """
    text = value.strip(_TRIM_CHARS) if isinstance(value, str) else ""
    if len(text) in (32, 64) and text.isascii() and all(c in _HEX_CHARS for c in text):
        return HashForm.MD5 if len(text) == 32 else HashForm.SHA256
    return HashForm.PLAIN


_HEX_CHARS: Final = frozenset("0123456789abcdefABCDEF")
