"""Canonical Arrow schemas of the tables Atoll reads, and their validation.

Why: every capability above the data plane (matching, attribution, persona,
LBS) relies on the same column names and types — ``order_time`` is a UTC
timestamp, ``amount`` is exact money, identifiers are text that kept their
leading zeros. Checking that once, at the edge where a file enters, lets the
rest of Atoll trust its inputs, and lets a person fix a bad file from one
message ("orders.csv row 17, column 'amount': ...") instead of a traceback.

Design:

* A :class:`TableSpec` lists the columns of one canonical table
  (:data:`MEMBERS`, :data:`ORDERS`, :data:`UNIVERSE`, :data:`EXPOSURES`,
  :data:`EDGES`, :data:`PINGS`, :data:`POIS`), each a :class:`ColumnSpec`
  with its type and value checks, and says what happens to extra columns.
* :func:`validate` casts a table to the canonical types and checks every
  value. All work is vectorised with ``pyarrow.compute``; a failing check
  names the source, the column, the *first* offending 1-based data row and
  its value (masked when it is a personal identifier) and how many rows fail
  that check.
* Parsing text (CSV) into numbers and timestamps is done here, not by the CSV
  reader, so that a bad value is located precisely. A syntax regex finds
  malformed values exactly; values that pass it but still do not convert
  (2024-02-30, an overflowing amount) are located by bisection with
  :func:`locate_failures`.

Money: ``amount`` is ``decimal128(18, 2)`` — exact to the fen, up to 10^16.
A value with more than two significant decimal places is rejected, never
rounded; a float input is accepted only when it *is* a two-decimal value up to
float rounding noise. Event ``cost`` is ``float64``: per-impression costs
(CPM / 1000) are fractions of a fen and are only ever summed into reports.

Timestamps: stored as ``timestamp[us, tz=UTC]``. Text with an offset
(``+08:00``, ``Z``) is exact; naive text, naive Arrow timestamps and dates are
local times in the configurable ``timezone`` (default ``Asia/Shanghai``).
Digits below the microsecond are truncated.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError, InputError, SchemaError

__all__ = [
    "DEFAULT_TIMEZONE",
    "EDGES",
    "EXPOSURES",
    "MEMBERS",
    "MONEY",
    "ORDERS",
    "PINGS",
    "POIS",
    "SPECS",
    "STRING",
    "STRING_LIST",
    "TIMESTAMP",
    "UNIVERSE",
    "ColumnSpec",
    "ExtraColumns",
    "TableSpec",
    "convert_column",
    "get_spec",
    "locate_failures",
    "mask_value",
    "validate",
]

#: Timezone of naive timestamps unless the caller says otherwise.
DEFAULT_TIMEZONE = "Asia/Shanghai"
#: Canonical timestamp type: microseconds, UTC.
TIMESTAMP = pa.timestamp("us", tz="UTC")
#: Canonical money type: exact to the fen (0.01), up to 10^16.
MONEY = pa.decimal128(18, 2)
#: Canonical text type.
STRING = pa.string()
#: Canonical type of multi-valued tags.
STRING_LIST = pa.list_(pa.string())

# Syntax accepted for text → value conversion. The timestamp grammar is the
# subset of ISO 8601 that Arrow's parser accepts, with component ranges, so
# that a value passing the regex fails conversion only for calendar reasons.
_TS_RE = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([T ]([01]\d|2[0-3])(:[0-5]\d(:[0-5]\d(\.\d{1,9})?)?)?"
    r"(Z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?)?$"
)
_TS_OFFSET_RE = r"[T ][0-9:.]+(Z|[+-]\d{2}(:?\d{2})?)$"
_DECIMAL_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)$"
_FLOAT_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_INT_RE = r"^[+-]?\d+$"
_BOOL_RE = r"^(?i:true|false|1|0)$"
# Relative tolerance for float → decimal: a few ulps of float64.
_FLOAT_MONEY_RTOL = 2.0**-50
_FLOAT_MONEY_ATOL = 1e-12
_MAX_SHOWN = 60


class ExtraColumns(enum.Enum):
    """What :func:`validate` does with columns a :class:`TableSpec` does not list."""

    #: Extra columns are an error (fixed-shape tables: edges, pings).
    FORBID = "forbid"
    #: Extra columns are kept unchanged (member attributes, order details).
    KEEP = "keep"
    #: Extra columns are tags: text, numbers, booleans or lists of text.
    TAGS = "tags"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of a canonical table: its type and the checks on its values.

    ``required`` means the column must be present; ``nullable`` whether a
    value may be missing (for text, an empty string counts as missing).
    ``identifier`` marks personal identifiers: they must arrive as text (never
    numbers, which lose leading zeros) and are masked in error messages.
    ``allowed`` is an enumeration (values are trimmed and lower-cased first);
    ``min_value``/``max_value`` an inclusive range. Float values must be
    finite.
    """

    name: str
    type: pa.DataType
    required: bool = True
    nullable: bool = False
    identifier: bool = False
    allowed: frozenset[str] | None = None
    min_value: float | None = None
    max_value: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("column name must be non-empty")
        if self.allowed is not None and not pa.types.is_string(self.type):
            raise ConfigError(f"column {self.name!r}: enumerations apply to text columns only")
        if (self.min_value is not None or self.max_value is not None) and not (
            pa.types.is_floating(self.type)
            or pa.types.is_integer(self.type)
            or pa.types.is_decimal(self.type)
        ):
            raise ConfigError(f"column {self.name!r}: ranges apply to numeric columns only")


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A canonical table: its columns, extra-column policy and row-level rules.

    ``at_least_one_of`` names columns of which at least one must be present,
    and, in every row, at least one must be set (an order needs a phone or a
    member id to be matched to anyone).
    """

    name: str
    columns: tuple[ColumnSpec, ...]
    extra: ExtraColumns = ExtraColumns.KEEP
    at_least_one_of: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ConfigError(f"table spec {self.name!r} lists a column twice")
        unknown = [n for n in self.at_least_one_of if n not in names]
        if unknown:
            raise ConfigError(f"table spec {self.name!r}: at_least_one_of names unknown {unknown}")

    def get(self, name: str) -> ColumnSpec | None:
        """The spec of column ``name``, or ``None`` if the table does not list it."""
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Names of the columns that must be present."""
        return tuple(c.name for c in self.columns if c.required)

    @property
    def optional_columns(self) -> tuple[str, ...]:
        """Names of the listed columns that may be absent."""
        return tuple(c.name for c in self.columns if not c.required)

    @property
    def identifier_columns(self) -> tuple[str, ...]:
        """Names of the personal-identifier columns (text only, masked in errors)."""
        return tuple(c.name for c in self.columns if c.identifier)

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of all listed columns, in canonical order."""
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])


def _id(name: str, *, required: bool = True, nullable: bool = False, doc: str = "") -> ColumnSpec:
    return ColumnSpec(
        name, STRING, required=required, nullable=nullable, identifier=True, description=doc
    )


def _optional_id(name: str, doc: str) -> ColumnSpec:
    return _id(name, required=False, nullable=True, doc=doc)


#: Brand members (CRM): one row per member; extra columns are attributes.
MEMBERS = TableSpec(
    "members",
    (
        _id("member_id", doc="the brand's member key"),
        _id(
            "phone",
            nullable=True,
            doc="mobile number; the column is required, a value may be empty",
        ),
        _optional_id("oaid", "Android Open Anonymous Device Identifier"),
        _optional_id("idfa", "iOS advertising identifier"),
        _optional_id("imei", "device IMEI"),
        _optional_id("email", "e-mail address"),
    ),
    ExtraColumns.KEEP,
    description="brand members; extra columns are member attributes, kept as they are",
)

#: Brand orders: one row per order.
ORDERS = TableSpec(
    "orders",
    (
        ColumnSpec("order_id", STRING, description="order key"),
        ColumnSpec("order_time", TIMESTAMP, description="when the order was placed"),
        ColumnSpec("amount", MONEY, min_value=0, description="order amount, exact to 0.01"),
        ColumnSpec("product", STRING, nullable=True, description="product or product line"),
        ColumnSpec("channel", STRING, nullable=True, description="sales channel"),
        _optional_id("phone", "buyer's mobile number"),
        _optional_id("member_id", "buyer's member id"),
    ),
    ExtraColumns.KEEP,
    at_least_one_of=("phone", "member_id"),
    description="brand orders; every row needs a phone or a member id",
)

#: Data provider's device universe; extra columns are tags.
UNIVERSE = TableSpec(
    "universe",
    (
        _id("device_id", doc="the provider's device key"),
        _optional_id("phone", "mobile number linked to the device"),
        _optional_id("oaid", "Android OAID"),
        _optional_id("idfa", "iOS IDFA"),
        _optional_id("imei", "device IMEI"),
    ),
    ExtraColumns.TAGS,
    description="provider devices; extra columns are tags (text, numbers, lists of text)",
)

#: Ad exposure log: one row per impression or click.
EXPOSURES = TableSpec(
    "exposures",
    (
        ColumnSpec("event_id", STRING, description="event key"),
        ColumnSpec("event_time", TIMESTAMP, description="when the event happened"),
        ColumnSpec(
            "event_type",
            STRING,
            allowed=frozenset({"impression", "click"}),
            description="impression or click",
        ),
        ColumnSpec("campaign_id", STRING, description="campaign key"),
        ColumnSpec("channel", STRING, description="media channel"),
        _id("device_id", doc="exposed device"),
        _optional_id("ip", "client IP address"),
        ColumnSpec("user_agent", STRING, required=False, nullable=True, description="client UA"),
        ColumnSpec(
            "cost",
            pa.float64(),
            required=False,
            nullable=True,
            min_value=0,
            description="cost of this event in CNY",
        ),
    ),
    ExtraColumns.KEEP,
    description="ad exposure log",
)

#: ID-mapping edges: two identifiers seen together.
EDGES = TableSpec(
    "edges",
    (
        ColumnSpec("id_type_a", STRING, description="kind of id_a (phone, oaid, ...)"),
        _id("id_a", doc="first identifier"),
        ColumnSpec("id_type_b", STRING, description="kind of id_b"),
        _id("id_b", doc="second identifier"),
        ColumnSpec("source", STRING, required=False, nullable=True, description="where seen"),
        ColumnSpec(
            "seen_at", TIMESTAMP, required=False, nullable=True, description="when last seen"
        ),
    ),
    ExtraColumns.FORBID,
    description="ID-mapping edges",
)

#: Location pings of devices.
PINGS = TableSpec(
    "pings",
    (
        _id("device_id", doc="device"),
        ColumnSpec("ts", TIMESTAMP, description="when the device was seen"),
        ColumnSpec("lat", pa.float64(), min_value=-90, max_value=90, description="latitude"),
        ColumnSpec("lon", pa.float64(), min_value=-180, max_value=180, description="longitude"),
    ),
    ExtraColumns.FORBID,
    description="device location pings (WGS-84 degrees)",
)

#: Points of interest for LBS tags.
POIS = TableSpec(
    "pois",
    (
        ColumnSpec("poi_id", STRING, description="POI key"),
        ColumnSpec("name", STRING, description="POI name"),
        ColumnSpec("category", STRING, description="POI category"),
        ColumnSpec("lat", pa.float64(), min_value=-90, max_value=90, description="latitude"),
        ColumnSpec("lon", pa.float64(), min_value=-180, max_value=180, description="longitude"),
    ),
    ExtraColumns.KEEP,
    description="points of interest (WGS-84 degrees)",
)

#: Every canonical table by name.
SPECS: Mapping[str, TableSpec] = {
    spec.name: spec for spec in (MEMBERS, ORDERS, UNIVERSE, EXPOSURES, EDGES, PINGS, POIS)
}


def get_spec(name: str) -> TableSpec:
    """The canonical :class:`TableSpec` called ``name`` (ConfigError if unknown)."""
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown table kind {name!r}; expected one of {sorted(SPECS)}") from None


# --------------------------------------------------------------------------- helpers


def mask_value(value: object) -> str:
    """A masked rendering of an identifier for messages: ``138****8000``."""
    text = str(value)
    n = len(text)
    if n <= 4:
        return "*" * n
    if n <= 8:
        return text[0] + "*" * (n - 2) + text[-1]
    return text[:3] + "*" * (n - 7) + text[-4:]


def _show(value: object, identifier: bool) -> str:
    if value is None:
        return "null"
    if identifier:
        return repr(mask_value(value))
    text = repr(value) if isinstance(value, str | bytes) else str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _rows(count: int, *, exact: bool = True) -> str:
    noun = "row fails" if count == 1 and exact else "rows fail"
    return f"{'' if exact else 'at least '}{count} {noun} this check"


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    if isinstance(values, pa.ChunkedArray):
        return values
    if isinstance(values, pa.Array):
        return pa.chunked_array([values], type=values.type)
    raise ConfigError(f"expected an Arrow array, got {type(values).__name__}")


def _fail_mask(
    mask: pa.ChunkedArray | pa.Array,
    values: pa.ChunkedArray,
    reason: str,
    *,
    source: str | None,
    column: str | None,
    row_offset: int,
    identifier: bool,
) -> None:
    """Raise InputError for the first True in ``mask`` (nulls count as False)."""
    mask = pc.fill_null(mask, False)
    count = int(pc.sum(mask).as_py() or 0)
    if not count:
        return
    first = int(pc.index(mask, True).as_py())
    shown = _show(values[first].as_py(), identifier)
    raise InputError(
        f"{reason} (value {shown}; {_rows(count)})",
        source=source,
        row=row_offset + first + 1,
        column=column,
    )


def locate_failures(
    values: pa.Array | pa.ChunkedArray,
    convert: Callable[[Any], Any],
    *,
    limit: int = 1000,
) -> tuple[list[int], bool]:
    """Indices of the elements on which an element-wise ``convert`` fails.

    ``convert`` is a vectorised function that raises ``pyarrow.ArrowInvalid``
    when any element cannot be converted (Arrow casts report the value but not
    its position). Bisection only descends into failing halves, so finding
    ``k`` failures costs ``O(n + k log n)`` element conversions in
    ``O(k log n)`` vectorised calls. Returns the first ``limit`` failing
    indices in order and whether the search stopped early.
    """

    def fails(lo: int, hi: int) -> bool:
        try:
            convert(values.slice(lo, hi - lo))
        except pa.ArrowInvalid:
            return True
        return False

    found: list[int] = []
    stack = [(0, len(values))]
    while stack:
        lo, hi = stack.pop()
        if hi <= lo or not fails(lo, hi):
            continue
        if len(found) >= limit:
            return found, True
        if hi - lo == 1:
            found.append(lo)
            continue
        mid = (lo + hi) // 2
        stack.append((mid, hi))
        stack.append((lo, mid))
    return found, False


def _convert_or_locate(
    values: pa.ChunkedArray,
    convert: Callable[[pa.ChunkedArray], pa.ChunkedArray],
    reason: str,
    *,
    source: str | None,
    column: str | None,
    row_offset: int,
    identifier: bool,
) -> pa.ChunkedArray:
    try:
        return convert(values)
    except pa.ArrowInvalid as exc:
        found, truncated = locate_failures(values, convert)
        if not found:  # the failure was not element-wise; report it as is
            raise InputError(f"{reason}: {exc}", source=source, column=column) from exc
        shown = _show(values[found[0]].as_py(), identifier)
        raise InputError(
            f"{reason} (value {shown}; {_rows(len(found), exact=not truncated)})",
            source=source,
            row=row_offset + found[0] + 1,
            column=column,
        ) from exc


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _is_textlike(t: pa.DataType) -> bool:
    return _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type))


def _trimmed_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_trim_whitespace(pc.cast(values, STRING))


def _check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown timezone {timezone!r} (use an IANA name)") from exc


# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True, slots=True)
class _Ctx:
    source: str | None
    column: str | None
    row_offset: int
    identifier: bool

    def fail(self, mask: Any, values: pa.ChunkedArray, reason: str) -> None:
        _fail_mask(
            mask,
            values,
            reason,
            source=self.source,
            column=self.column,
            row_offset=self.row_offset,
            identifier=self.identifier,
        )

    def convert(
        self,
        values: pa.ChunkedArray,
        fn: Callable[[pa.ChunkedArray], pa.ChunkedArray],
        reason: str,
    ) -> pa.ChunkedArray:
        return _convert_or_locate(
            values,
            fn,
            reason,
            source=self.source,
            column=self.column,
            row_offset=self.row_offset,
            identifier=self.identifier,
        )

    def wrong_type(self, actual: pa.DataType, expected: str) -> NoReturn:
        hint = (
            "; identifiers must be stored as text (numbers lose leading zeros)"
            if self.identifier
            else ""
        )
        raise SchemaError(
            f"has type {actual}, expected {expected}{hint}", source=self.source, column=self.column
        )

    def check_syntax(self, text: pa.ChunkedArray, pattern: str, reason: str) -> None:
        ok = pc.match_substring_regex(text, pattern)
        self.fail(pc.invert(ok), text, reason)


def _to_string(values: pa.ChunkedArray, ctx: _Ctx) -> pa.ChunkedArray:
    t = values.type
    if pa.types.is_string(t):
        return values
    if _is_textlike(t) or pa.types.is_null(t):
        return pc.cast(values, STRING)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return ctx.convert(values, lambda v: pc.cast(v, STRING), "not valid UTF-8 text")
    if pa.types.is_integer(t) and not ctx.identifier:
        return pc.cast(values, STRING)
    ctx.wrong_type(t, "text (string)")


def _ns_to_us(values: Any) -> Any:
    # Only sub-microsecond digits are dropped (documented); never overflows.
    return pc.cast(values, TIMESTAMP, safe=False)


def _to_timestamp(values: pa.ChunkedArray, ctx: _Ctx, timezone: str) -> pa.ChunkedArray:
    t = values.type
    if pa.types.is_null(t):
        return pc.cast(values, TIMESTAMP)
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            aware = pc.cast(values, pa.timestamp(t.unit, tz="UTC"))
            return _ns_to_us(aware) if t.unit == "ns" else pc.cast(aware, TIMESTAMP)

        def localize(v: Any) -> Any:
            local = pc.assume_timezone(v, timezone=timezone)
            return _ns_to_us(pc.cast(local, pa.timestamp(t.unit, tz="UTC")))

        return ctx.convert(
            values, localize, f"local time does not exist or is ambiguous in {timezone}"
        )
    if pa.types.is_date(t):

        def midnight(v: Any) -> Any:
            local = pc.assume_timezone(pc.cast(v, pa.timestamp("us")), timezone=timezone)
            return pc.cast(local, TIMESTAMP)

        return ctx.convert(values, midnight, f"local midnight does not exist in {timezone}")
    if not _is_textlike(t):
        ctx.wrong_type(t, "a timestamp (ISO 8601 text or an Arrow timestamp/date)")
    text = _trimmed_text(values)
    ctx.check_syntax(
        text,
        _TS_RE,
        "not an ISO 8601 timestamp (expected e.g. 2024-03-01T10:00:00+08:00, "
        "2024-03-01 10:00:00 or 2024-03-01)",
    )

    def parse(v: Any) -> Any:
        has_offset = pc.match_substring_regex(v, _TS_OFFSET_RE)
        no_text = pa.scalar(None, STRING)
        aware = pc.cast(pc.if_else(has_offset, v, no_text), pa.timestamp("ns", tz="UTC"))
        naive = pc.cast(pc.if_else(has_offset, no_text, v), pa.timestamp("ns"))
        local = pc.cast(pc.assume_timezone(naive, timezone=timezone), pa.timestamp("ns", tz="UTC"))
        return _ns_to_us(pc.coalesce(aware, local))

    return ctx.convert(
        text,
        parse,
        f"not a valid date/time (no such calendar day, or a local time that does not "
        f"exist or is ambiguous in {timezone})",
    )


def _to_decimal(values: pa.ChunkedArray, target: pa.DataType, ctx: _Ctx) -> pa.ChunkedArray:
    t = values.type
    scale = target.scale
    lossy = f"does not fit {target} (more than {scale} decimal places or too large)"
    if pa.types.is_null(t):
        return pc.cast(values, target)
    if pa.types.is_decimal(t) or pa.types.is_integer(t):
        return ctx.convert(values, lambda v: pc.cast(v, target), lossy)
    if pa.types.is_floating(t):
        floats = pc.cast(values, pa.float64())
        ctx.fail(pc.invert(pc.is_finite(floats)), values, "not a finite number")
        exact = ctx.convert(values, lambda v: pc.cast(v, target, safe=False), lossy)
        diff = pc.abs(pc.subtract(pc.cast(exact, pa.float64()), floats))
        tol = pc.add(pc.multiply(pc.abs(floats), _FLOAT_MONEY_RTOL), _FLOAT_MONEY_ATOL)
        ctx.fail(
            pc.greater(diff, tol),
            values,
            f"{lossy}; money must not lose precision — store it as text or decimal",
        )
        return exact
    if not _is_textlike(t):
        ctx.wrong_type(t, f"a decimal number ({target})")
    text = _trimmed_text(values)
    ctx.check_syntax(
        text,
        _DECIMAL_RE,
        "not a decimal number (digits with an optional '.', e.g. 199.90; "
        "no thousands separators, currency signs or exponents)",
    )
    ctx.fail(
        pc.match_substring_regex(text, rf"\.\d{{{scale}}}\d*[1-9]"),
        text,
        f"has more than {scale} decimal places; money must not lose precision",
    )
    return ctx.convert(text, lambda v: pc.cast(v, target), lossy)


def _to_float(values: pa.ChunkedArray, target: pa.DataType, ctx: _Ctx) -> pa.ChunkedArray:
    t = values.type
    if pa.types.is_null(t):
        return pc.cast(values, target)
    if pa.types.is_decimal(t):
        return pc.cast(values, target, safe=False)  # decimal → float rounds, by design
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return pc.cast(values, target)
    if not _is_textlike(t):
        ctx.wrong_type(t, f"a number ({target})")
    text = _trimmed_text(values)
    ctx.check_syntax(text, _FLOAT_RE, "not a number")
    return ctx.convert(text, lambda v: pc.cast(v, target), "not a number")


def _to_int(values: pa.ChunkedArray, target: pa.DataType, ctx: _Ctx) -> pa.ChunkedArray:
    t = values.type
    reason = f"not an integer that fits {target}"
    if pa.types.is_null(t):
        return pc.cast(values, target)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return ctx.convert(values, lambda v: pc.cast(v, target), reason)
    if not _is_textlike(t):
        ctx.wrong_type(t, f"an integer ({target})")
    text = _trimmed_text(values)
    ctx.check_syntax(text, _INT_RE, reason)
    return ctx.convert(text, lambda v: pc.cast(v, target), reason)


def _to_bool(values: pa.ChunkedArray, ctx: _Ctx) -> pa.ChunkedArray:
    t = values.type
    if pa.types.is_boolean(t) or pa.types.is_null(t) or pa.types.is_integer(t):
        return ctx.convert(values, lambda v: pc.cast(v, pa.bool_()), "not a boolean")
    if not _is_textlike(t):
        ctx.wrong_type(t, "a boolean")
    text = _trimmed_text(values)
    ctx.check_syntax(text, _BOOL_RE, "not a boolean (true/false/1/0)")
    return pc.cast(pc.utf8_lower(text), pa.bool_())


def _to_string_list(
    values: pa.ChunkedArray, target: pa.DataType, ctx: _Ctx, separator: str
) -> pa.ChunkedArray:
    t = values.type
    if pa.types.is_null(t):
        return pc.cast(values, target)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        _is_textlike(t.value_type) or pa.types.is_null(t.value_type)
    ):
        return pc.cast(values, target)
    if not _is_textlike(t):
        ctx.wrong_type(t, f"a list of text or text separated by {separator!r}")
    if not separator:
        raise ConfigError("list separator must be non-empty")
    text = pc.cast(values, STRING)
    parts = pc.split_pattern(text, separator)
    empty = pa.scalar([], pa.list_(STRING))
    return pc.cast(pc.if_else(pc.equal(text, ""), empty, parts), target)


def convert_column(
    values: pa.Array | pa.ChunkedArray,
    target: pa.DataType,
    *,
    source: str | None,
    column: str | None,
    row_offset: int = 0,
    identifier: bool = False,
    timezone: str = DEFAULT_TIMEZONE,
    list_separator: str = "|",
) -> pa.ChunkedArray:
    """Convert one column to ``target``, raising InputError at the first bad value.

    Supported targets: text, ``timestamp[*, tz=UTC]`` (parsed as described in
    the module docstring), decimals, floats, integers, booleans and lists of
    text (text input is split on ``list_separator``; an empty string is an
    empty list). A column whose *type* cannot become ``target`` raises
    :class:`~atoll.errors.SchemaError`; a *value* that cannot, InputError
    naming ``row_offset`` + its 1-based position. Nulls stay null.
    """
    _check_timezone(timezone)
    data = _chunked(values)
    ctx = _Ctx(source, column, row_offset, identifier)
    if pa.types.is_string(target):
        return _to_string(data, ctx)
    if pa.types.is_timestamp(target):
        if target.tz != "UTC" or target.unit != "us":
            raise ConfigError(f"timestamps are stored as {TIMESTAMP}, not {target}")
        return _to_timestamp(data, ctx, timezone)
    if pa.types.is_decimal(target):
        return _to_decimal(data, target, ctx)
    if pa.types.is_floating(target):
        return _to_float(data, target, ctx)
    if pa.types.is_integer(target):
        return _to_int(data, target, ctx)
    if pa.types.is_boolean(target):
        return _to_bool(data, ctx)
    if pa.types.is_list(target) and pa.types.is_string(target.value_type):
        return _to_string_list(data, target, ctx, list_separator)
    raise ConfigError(f"cannot convert columns to {target}")


# --------------------------------------------------------------------------- validation


def _check_values(data: pa.ChunkedArray, spec: ColumnSpec, ctx: _Ctx) -> pa.ChunkedArray:
    """Apply ``spec``'s value checks; returns the (possibly normalised) column."""
    if not spec.nullable:
        missing = pc.is_null(data)
        if pa.types.is_string(data.type):
            missing = pc.or_kleene(missing, pc.equal(data, ""))
        ctx.fail(missing, data, "missing value in a required column")
    if spec.allowed is not None:
        data = pc.utf8_lower(pc.utf8_trim_whitespace(data))
        allowed = pa.array(sorted(spec.allowed), STRING)
        bad = pc.and_(pc.is_valid(data), pc.invert(pc.is_in(data, value_set=allowed)))
        ctx.fail(bad, data, f"not one of {', '.join(sorted(spec.allowed))}")
    if pa.types.is_floating(data.type):
        ctx.fail(pc.invert(pc.is_finite(data)), data, "not a finite number")
    low, high = spec.min_value, spec.max_value
    if low is not None or high is not None:
        span = (
            f"must be between {low:g} and {high:g}"
            if low is not None and high is not None
            else (f"must be >= {low:g}" if low is not None else f"must be <= {high:g}")
        )
        if low is not None:
            ctx.fail(pc.less(data, pa.scalar(float(low)).cast(data.type)), data, span)
        if high is not None:
            ctx.fail(pc.greater(data, pa.scalar(float(high)).cast(data.type)), data, span)
    return data


def _tag_column(data: pa.ChunkedArray, ctx: _Ctx) -> pa.ChunkedArray:
    t = data.type
    if pa.types.is_null(t) or _is_textlike(t):
        return pc.cast(data, STRING)
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    ):
        return data
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        _is_textlike(t.value_type) or pa.types.is_null(t.value_type)
    ):
        return pc.cast(data, STRING_LIST)
    raise SchemaError(
        f"tag column has type {t}; tags must be text, numbers, booleans or lists of text",
        source=ctx.source,
        column=ctx.column,
    )


def validate(
    table: pa.Table | pa.RecordBatch,
    spec: TableSpec,
    *,
    source: str | None,
    timezone: str = DEFAULT_TIMEZONE,
    row_offset: int = 0,
) -> pa.Table:
    """Cast ``table`` to ``spec``'s canonical types and check every value.

    Returns a table with the listed columns first, in canonical order, then
    any extra columns in input order (unchanged, or as tags). Raises
    :class:`~atoll.errors.SchemaError` for missing, duplicated, forbidden or
    wrongly typed columns and :class:`~atoll.errors.InputError` for bad
    values, naming ``source``, the column, the first offending data row
    (``row_offset`` + 1-based position, for batches of a larger file) and how
    many rows fail that check. Identifiers are masked in messages.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise ConfigError(f"validate expects an Arrow table, got {type(table).__name__}")
    _check_timezone(timezone)
    names = table.column_names
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SchemaError("column appears more than once", source=source, column=name)
        seen.add(name)
    missing = [name for name in spec.required_columns if name not in seen]
    if missing:
        raise SchemaError(
            f"missing required column(s) {', '.join(missing)} for the {spec.name} table "
            f"(required: {', '.join(spec.required_columns)}; found: {', '.join(names) or 'none'})",
            source=source,
            column=missing[0],
        )
    group = spec.at_least_one_of
    if group and not any(name in seen for name in group):
        raise SchemaError(
            f"the {spec.name} table needs at least one of the columns {', '.join(group)}",
            source=source,
        )
    extras = [name for name in names if spec.get(name) is None]
    if extras and spec.extra is ExtraColumns.FORBID:
        raise SchemaError(
            f"unexpected column in the {spec.name} table "
            f"(allowed: {', '.join(c.name for c in spec.columns)})",
            source=source,
            column=extras[0],
        )

    arrays: list[pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for col in spec.columns:
        if col.name not in seen:
            continue
        ctx = _Ctx(source, col.name, row_offset, col.identifier)
        data = convert_column(
            table[col.name],
            col.type,
            source=source,
            column=col.name,
            row_offset=row_offset,
            identifier=col.identifier,
            timezone=timezone,
        )
        arrays.append(_check_values(data, col, ctx))
        fields.append(pa.field(col.name, col.type))
    for name in extras:
        data = table[name]
        if spec.extra is ExtraColumns.TAGS:
            data = _tag_column(data, _Ctx(source, name, row_offset, False))
        arrays.append(data)
        fields.append(pa.field(name, data.type))
    result = pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    present = [name for name in group if name in seen]
    if present:
        none_set = None
        for name in present:
            col = result[name]
            unset = (
                pc.or_kleene(pc.is_null(col), pc.equal(col, ""))
                if pa.types.is_string(col.type)
                else pc.is_null(col)
            )
            none_set = unset if none_set is None else pc.and_kleene(none_set, unset)
        _fail_mask(
            none_set,
            result[present[0]],
            f"none of {', '.join(group)} is set; every row needs at least one",
            source=source,
            column=present[0] if len(present) == 1 else None,
            row_offset=row_offset,
            identifier=True,
        )
    return result
