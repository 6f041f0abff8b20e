"""Reading and writing the tables users hand to Atoll: CSV and Parquet.

Why: the first thing that goes wrong with real data is the file itself — a
row with one field too many, a phone number that a CSV reader turned into an
integer, an export in GBK. This module reads files so that nothing is lost
silently and every failure names the file and row:

* every CSV column is read as *text* (the header is read first so that the
  reader never guesses a type): ``013800138000`` stays a string with its
  leading zero. Typed values are parsed afterwards by
  :func:`atoll.data.schema.validate` / :func:`~atoll.data.schema.convert_column`,
  which locate a bad value precisely;
* pyarrow's parse errors ("Expected 5 columns, got 6") become
  :class:`~atoll.errors.InputError` with the file and the 1-based data row
  (header excluded; blank lines are not rows), never echoing the row's text,
  which may hold personal data;
* an empty CSV field is null; every other text ("NULL", "NA") is kept as text
  and fails validation visibly if it is not a valid value.

Formats are chosen by suffix (``.csv``, ``.tsv``, ``.parquet``/``.pq``,
optionally compressed: ``.csv.gz``) unless ``fmt`` says otherwise.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io as _io
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from atoll.data.schema import (
    DEFAULT_TIMEZONE,
    STRING,
    TableSpec,
    convert_column,
    locate_failures,
    validate,
)
from atoll.errors import ConfigError, InputError, SchemaError

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "Format",
    "TableWriter",
    "iter_batches",
    "read_table",
    "write_table",
]

#: Rows per batch of :func:`iter_batches` unless the caller says otherwise.
DEFAULT_BATCH_ROWS = 65_536
_HEADER_PROBE = 1 << 16
_ROW_IN_MESSAGE = re.compile(r"Row #(\d+)")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")


class Format(enum.StrEnum):
    """File formats Atoll reads and writes."""

    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"


def _format_of(path: Path, fmt: Format | str | None) -> Format:
    if fmt is not None:
        try:
            return Format(str(fmt).lower())
        except ValueError:
            raise ConfigError(
                f"unknown format {fmt!r}; expected one of {', '.join(f.value for f in Format)}"
            ) from None
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last == ".csv":
        return Format.CSV
    if last == ".tsv":
        return Format.TSV
    if last in (".parquet", ".pq"):
        return Format.PARQUET
    raise ConfigError(
        f"{path}: cannot tell the format from the suffix; pass fmt='csv' or 'parquet'"
    )


def _existing_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", source=str(p))
    if not p.is_file():
        raise InputError("not a regular file", source=str(p))
    return p


# --------------------------------------------------------------------------- CSV


class _InvalidRows:
    """Collects pyarrow's malformed CSV rows (row number and field counts only)."""

    def __init__(self) -> None:
        self.first: tuple[int | None, int, int, bool] | None = None
        self.count = 0

    def __call__(self, row: Any) -> str:
        if self.first is None:
            self.first = (row.number, row.expected_columns, row.actual_columns, not row.text)
        self.count += 1
        return "skip"

    def raise_if_any(self, source: str, *, complete: bool) -> None:
        if self.first is None:
            return
        number, expected, actual, empty = self.first
        reason = (
            "empty record"
            if empty
            else f"malformed CSV row: expected {expected} fields, got {actual}"
        )
        if complete:
            reason += f" ({self.count} malformed row{'s' if self.count != 1 else ''} in the file)"
        raise InputError(reason, source=source, row=None if number is None else number - 1)


def _delimiter(fmt: Format, delimiter: str | None) -> str:
    if delimiter is not None:
        if len(delimiter) != 1:
            raise ConfigError(f"CSV delimiter must be one character, got {delimiter!r}")
        return delimiter
    return "\t" if fmt is Format.TSV else ","


def _csv_header(path: Path, encoding: str, delimiter: str) -> list[str]:
    """The header row as written, read ahead so that every column can be typed as text.

    Names are unique and non-empty once surrounding whitespace is stripped
    (the tables Atoll returns use the stripped names).
    """
    raw = b""
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            while b"\n" not in raw:
                block = stream.read(_HEADER_PROBE)
                if not block:
                    break
                raw += block
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read file: {exc}", source=str(path)) from exc
    line = raw.split(b"\n", 1)[0]
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = line.decode(codec)
    except (UnicodeDecodeError, LookupError) as exc:
        raise InputError(
            f"cannot decode the header as {encoding} ({exc}); pass encoding=... (e.g. 'gbk')",
            source=str(path),
        ) from exc
    names = next(csv.reader(_io.StringIO(text.rstrip("\r")), delimiter=delimiter), [])
    if not names or names == [""]:
        raise InputError("empty file: no header row", source=str(path))
    seen: set[str] = set()
    for name in (raw.strip() for raw in names):
        if not name:
            raise SchemaError("header has an empty column name", source=str(path))
        if name in seen:
            raise SchemaError(
                "column appears more than once in the header", source=str(path), column=name
            )
        seen.add(name)
    return names


def _csv_options(
    names: list[str], fmt: Format, encoding: str, delimiter: str | None, block_size: int | None
) -> tuple[Any, Any, Any, _InvalidRows]:
    invalid = _InvalidRows()
    read = pa_csv.ReadOptions(use_threads=False, encoding=encoding, block_size=block_size)
    parse = pa_csv.ParseOptions(
        delimiter=_delimiter(fmt, delimiter),
        newlines_in_values=True,
        invalid_row_handler=invalid,
    )
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, STRING),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    return read, parse, convert, invalid


def _locate_bad_utf8(
    path: Path, names: list[str], fmt: Format, delimiter: str | None
) -> InputError:
    """Re-read the file as bytes to find the first field that is not UTF-8."""
    read, parse, _, _ = _csv_options(names, fmt, "utf-8", delimiter, None)
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.binary()), null_values=[""], strings_can_be_null=True
    )
    table = pa_csv.read_csv(
        str(path), read_options=read, parse_options=parse, convert_options=convert
    )
    best: tuple[int, str] | None = None
    for name in names:
        found, _ = locate_failures(table[name], lambda v: pc.cast(v, STRING), limit=1)
        if found and (best is None or found[0] < best[0]):
            best = (found[0], name)
    reason = (
        "not valid UTF-8 text; if the file uses another encoding pass encoding=... (e.g. 'gbk')"
    )
    if best is None:
        return InputError(reason, source=str(path))
    return InputError(reason, source=str(path), row=best[0] + 1, column=best[1].strip())


def _csv_error(
    exc: Exception, path: Path, names: list[str], fmt: Format, delimiter: str | None, encoding: str
) -> InputError:
    message = str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return InputError(
            f"cannot decode the file as {encoding}: {exc.reason} at byte {exc.start}",
            source=str(path),
        )
    if "invalid UTF8" in message or "invalid utf8" in message.lower():
        try:
            return _locate_bad_utf8(path, names, fmt, delimiter)
        except pa.ArrowException:
            pass
    match = _ROW_IN_MESSAGE.search(message)
    row = int(match.group(1)) - 1 if match else None
    reason = message
    if message.startswith("CSV parse error"):
        # "CSV parse error: [Row #N: ]<reason>[: <row text>]" — keep the reason,
        # never echo the row text (it may hold personal data).
        parts = message.split(": ")[1:]
        if parts and parts[0].startswith("Row #"):
            parts = parts[1:]
        reason = parts[0] if parts else "malformed CSV"
    return InputError(f"cannot parse CSV: {reason}", source=str(path), row=row)


def _read_csv(path: Path, fmt: Format, encoding: str, delimiter: str | None) -> pa.Table:
    names = _csv_header(path, encoding, _delimiter(fmt, delimiter))
    read, parse, convert, invalid = _csv_options(names, fmt, encoding, delimiter, None)
    try:
        table = pa_csv.read_csv(
            str(path), read_options=read, parse_options=parse, convert_options=convert
        )
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise _csv_error(exc, path, names, fmt, delimiter, encoding) from exc
    except OSError as exc:
        raise InputError(f"cannot read file: {exc}", source=str(path)) from exc
    invalid.raise_if_any(str(path), complete=True)
    return table.rename_columns([name.strip() for name in names])


def _iter_csv(
    path: Path, fmt: Format, encoding: str, delimiter: str | None
) -> Iterator[pa.RecordBatch]:
    names = _csv_header(path, encoding, _delimiter(fmt, delimiter))
    read, parse, convert, invalid = _csv_options(names, fmt, encoding, delimiter, 1 << 20)
    try:
        reader = pa_csv.open_csv(
            str(path), read_options=read, parse_options=parse, convert_options=convert
        )
        clean = [name.strip() for name in names]
        empty = True
        for batch in reader:
            invalid.raise_if_any(str(path), complete=False)
            empty = empty and batch.num_rows == 0
            yield pa.RecordBatch.from_arrays(batch.columns, names=clean)
        if empty:  # carry the header to validation even when there are no rows
            yield pa.RecordBatch.from_pylist([], schema=pa.schema([(n, STRING) for n in clean]))
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise _csv_error(exc, path, names, fmt, delimiter, encoding) from exc
    except OSError as exc:
        raise InputError(f"cannot read file: {exc}", source=str(path)) from exc
    invalid.raise_if_any(str(path), complete=False)


# --------------------------------------------------------------------------- Parquet


def _parquet_file(path: Path) -> Any:
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file ({exc})", source=str(path)) from exc


def _read_parquet(path: Path) -> pa.Table:
    try:
        return _parquet_file(path).read()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet data ({exc})", source=str(path)) from exc


def _iter_parquet(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    handle = _parquet_file(path)
    try:
        yield pa.RecordBatch.from_pylist(
            [], schema=handle.schema_arrow
        )  # the schema, even if empty
        yield from handle.iter_batches(batch_size=batch_rows)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet data ({exc})", source=str(path)) from exc


# --------------------------------------------------------------------------- public API


def _apply_types(
    table: pa.Table,
    column_types: Mapping[str, pa.DataType] | None,
    spec: TableSpec | None,
    *,
    source: str,
    row_offset: int,
    timezone: str,
    list_separator: str,
) -> pa.Table:
    if not column_types:
        return table
    for name, target in column_types.items():
        if spec is not None and spec.get(name) is not None:
            raise ConfigError(
                f"column {name!r} has a canonical type in the {spec.name} table; "
                "column_types is for extra columns"
            )
        if name not in table.column_names:
            continue
        converted = convert_column(
            table[name],
            target,
            source=source,
            column=name,
            row_offset=row_offset,
            timezone=timezone,
            list_separator=list_separator,
        )
        index = table.column_names.index(name)
        table = table.set_column(index, pa.field(name, converted.type), converted)
    return table


def _finish(
    table: pa.Table,
    spec: TableSpec | None,
    column_types: Mapping[str, pa.DataType] | None,
    *,
    source: str,
    row_offset: int,
    timezone: str,
    list_separator: str,
) -> pa.Table:
    table = _apply_types(
        table,
        column_types,
        spec,
        source=source,
        row_offset=row_offset,
        timezone=timezone,
        list_separator=list_separator,
    )
    if spec is None:
        return table
    return validate(table, spec, source=source, timezone=timezone, row_offset=row_offset)


def read_table(
    path: str | os.PathLike[str],
    spec: TableSpec | None = None,
    *,
    fmt: Format | str | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    column_types: Mapping[str, pa.DataType] | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    list_separator: str = "|",
) -> pa.Table:
    """Read a whole CSV or Parquet file, validated against ``spec`` if given.

    ``column_types`` converts extra (non-canonical) columns, e.g.
    ``{"age": pa.int64(), "interests": pa.list_(pa.string())}``; a list type
    splits CSV text on ``list_separator``. Without it, CSV extra columns stay
    text. ``timezone`` is the zone of naive timestamps. Raises InputError (file
    missing, unreadable, malformed row, bad value) naming the file and row.
    """
    p = _existing_file(path)
    kind = _format_of(p, fmt)
    table = _read_parquet(p) if kind is Format.PARQUET else _read_csv(p, kind, encoding, delimiter)
    return _finish(
        table,
        spec,
        column_types,
        source=str(p),
        row_offset=0,
        timezone=timezone,
        list_separator=list_separator,
    )


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup batches into tables of exactly ``rows`` rows (the last may be shorter).

    A source without rows yields one empty table, so that its columns are
    still validated.
    """
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    produced = False
    schema_only: pa.RecordBatch | None = None
    for batch in batches:
        if batch.num_rows == 0:
            schema_only = batch
            continue
        produced = True
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending = rest.to_batches() if rest.num_rows else []
            pending_rows = rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)
    elif not produced and schema_only is not None:
        yield pa.Table.from_batches([schema_only])  # no rows: still validate the columns


def iter_batches(
    path: str | os.PathLike[str],
    spec: TableSpec | None = None,
    *,
    fmt: Format | str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    timezone: str = DEFAULT_TIMEZONE,
    column_types: Mapping[str, pa.DataType] | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    list_separator: str = "|",
) -> Iterator[pa.RecordBatch]:
    """Stream a CSV or Parquet file as validated batches of at most ``batch_rows`` rows.

    Same conversions and checks as :func:`read_table`, in bounded memory;
    error rows are numbered from the start of the file. A malformed CSV row
    raises when the batch holding it is read (batches before it were already
    yielded).
    """
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    p = _existing_file(path)
    kind = _format_of(p, fmt)
    raw = (
        _iter_parquet(p, batch_rows)
        if kind is Format.PARQUET
        else _iter_csv(p, kind, encoding, delimiter)
    )
    offset = 0
    for table in _rebatch(raw, batch_rows):
        checked = _finish(
            table,
            spec,
            column_types,
            source=str(p),
            row_offset=offset,
            timezone=timezone,
            list_separator=list_separator,
        )
        offset += table.num_rows
        yield from checked.combine_chunks().to_batches(max_chunksize=batch_rows)


def _csv_ready(table: pa.Table, source: str, list_separator: str) -> pa.Table:
    """Join list columns with ``list_separator`` so that CSV can hold them."""
    for index, field in enumerate(table.schema):
        if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)):
            continue
        column = table.column(index)
        items = pc.list_flatten(column)
        clash = pc.fill_null(pc.match_substring(pc.cast(items, STRING), list_separator), False)
        if pc.any(clash).as_py():
            parents = pc.list_parent_indices(column)
            first = int(parents[int(pc.index(clash, True).as_py())].as_py())
            raise InputError(
                f"a list item contains the separator {list_separator!r}; it would not read "
                "back the same — use Parquet or another separator",
                source=source,
                row=first + 1,
                column=field.name,
            )
        joined = pc.binary_join(pc.cast(column, pa.list_(STRING)), list_separator)
        table = table.set_column(index, pa.field(field.name, STRING), joined)
    return table


def write_table(
    table: pa.Table,
    path: str | os.PathLike[str],
    fmt: Format | str | None = None,
    *,
    list_separator: str = "|",
    compression: str = "zstd",
) -> Path:
    """Write ``table`` to ``path`` atomically (temporary file, then rename).

    CSV gets a header; timestamps are written as ISO 8601 with ``Z``, lists
    joined with ``list_separator`` (an item containing it is an error, not a
    silent corruption). Parquet uses ``compression``. Returns the path.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    p = Path(path)
    kind = _format_of(p, fmt)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        if kind is Format.PARQUET:
            pq.write_table(table, str(tmp), compression=compression)
        else:
            ready = _csv_ready(table, str(p), list_separator)
            options = pa_csv.WriteOptions(delimiter="\t" if kind is Format.TSV else ",")
            pa_csv.write_csv(ready, str(tmp), write_options=options)
        os.replace(tmp, p)
    except (pa.ArrowException, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {kind.value}: {exc}", source=str(p)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


class TableWriter:
    """Write a table batch by batch to CSV or Parquet, atomically on :meth:`close`.

    The streaming counterpart of :func:`write_table`, for inputs too large to
    hold at once: rows go to a temporary file in the target's folder, which
    replaces ``path`` only when every batch has been written; an error (or
    leaving the ``with`` block by an exception) removes the temporary file and
    leaves any previous ``path`` untouched. The schema is fixed by the first
    batch; a later batch with another schema is a :class:`SchemaError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: Format | str | None = None,
        *,
        list_separator: str = "|",
        compression: str = "zstd",
    ) -> None:
        self.path = Path(path)
        self.format = _format_of(self.path, fmt)
        self.rows = 0
        self._list_separator = list_separator
        self._compression = compression
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{id(self)}")
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._closed = False

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append ``data`` (same schema as the first write)."""
        if self._closed:
            raise ConfigError(f"{self.path}: writer already closed")
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        if self._schema is None:
            self._schema = table.schema
        elif not table.schema.equals(self._schema):
            raise SchemaError(
                f"batch schema {table.schema} differs from the first batch's {self._schema}",
                source=str(self.path),
            )
        try:
            if self.format is Format.PARQUET:
                if self._writer is None:
                    self._writer = pq.ParquetWriter(
                        str(self._tmp), table.schema, compression=self._compression
                    )
                self._writer.write_table(table)
            else:
                ready = _csv_ready(table, str(self.path), self._list_separator)
                if self._writer is None:
                    options = pa_csv.WriteOptions(
                        delimiter="\t" if self.format is Format.TSV else ","
                    )
                    self._writer = pa_csv.CSVWriter(
                        str(self._tmp), ready.schema, write_options=options
                    )
                self._writer.write_table(ready)
        except (pa.ArrowException, OSError) as exc:
            self.abort()
            raise InputError(
                f"cannot write {self.format.value}: {exc}", source=str(self.path)
            ) from exc
        self.rows += table.num_rows

    def close(self) -> Path:
        """Finish the file and move it into place; returns the path."""
        if self._closed:
            return self.path
        if self._writer is None:
            raise ConfigError(f"{self.path}: nothing was written (no schema to write)")
        try:
            self._writer.close()
            os.replace(self._tmp, self.path)
        except (pa.ArrowException, OSError) as exc:
            self.abort()
            raise InputError(
                f"cannot write {self.format.value}: {exc}", source=str(self.path)
            ) from exc
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._writer is not None and not self._closed:
            with contextlib.suppress(pa.ArrowException, OSError):  # being discarded anyway
                self._writer.close()
        self._tmp.unlink(missing_ok=True)
        self._closed = True
