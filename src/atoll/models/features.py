"""Tag columns → a numeric feature matrix whose columns keep the tags' own names.

Why: the provider's universe is a table of *tags* — single-valued labels
(``gender``, ``age_band``, ``city_tier``), multi-valued lists (``interests``,
``app_categories``, LBS ``lbs_frequent_categories``), and counts (LBS
``lbs_days_<category>``). A learner needs numbers; a marketer needs to read
"``interests=hair_care``" in the feature importance, not "column 37". The
persona report (:mod:`atoll.analytics.persona`) counts holders of the same
tag values, so this encoder follows the same rules, column for column:

* dimensions are chosen the way persona chooses them — every column except
  the identifier columns (:data:`IDENTIFIER_COLUMNS`, the same set persona
  skips) and ``exclude`` — or given explicitly (``columns``);
* values compared trimmed and lower-cased against :data:`DEFAULT_UNKNOWN_LABELS`
  (``unknown``, empty) and nulls are *unknown*: they set no indicator, as
  persona leaves them out of shares;
* a multi-valued list counts a value once (multi-hot), as persona counts holders;
* text/boolean columns are one-hot (``dim=value``), ``list<string>`` columns
  multi-hot (``dim=value``); integer and float columns are numeric
  (``dim``, null → NaN, which LightGBM routes natively). Persona profiles
  integers as categories; for a model a count is a count.

Vocabularies are learned in :meth:`TagEncoder.fit`: values held by at least
``min_frequency`` rows, at most ``max_values`` per dimension (most frequent
first, ties by name); rarer known values share one ``dim=(other)`` column,
so a value first seen at scoring time is never an error and never silently
becomes "unknown". Encoding is vectorised and works per *distinct* value:
a column is dictionary-encoded (or read that way from Parquet), the rules
above run once on its dictionary, and a NumPy gather maps the result to the
rows (list items through their list offsets) — no string kernel over every
row, no Python loop over rows. :meth:`TagEncoder.encode` can write
column-major and into a reused buffer, for scoring in blocks.

The encoder follows the scikit-learn transformer contract (``fit`` returns
self, learned attributes end in ``_``, ``get_feature_names_out``) and takes
an Arrow table or a pandas DataFrame, so ``Pipeline([("tags", TagEncoder()),
("pu", ElkanNotoPU())])`` works on a universe table directly. Its state is
plain JSON (:meth:`TagEncoder.to_state`), so saved models hold no pickles.
"""

# ruff: noqa: N803  (scikit-learn names matrices X, Z and the inverse regularization C)

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, TransformerMixin

from atoll.errors import ConfigError, SchemaError

__all__ = [
    "DEFAULT_UNKNOWN_LABELS",
    "IDENTIFIER_COLUMNS",
    "OTHER",
    "Dimension",
    "TagEncoder",
    "as_table",
    "dimension_kind",
]

#: Text values that mean "unknown" (trimmed, lower-cased) — persona's default set.
DEFAULT_UNKNOWN_LABELS = frozenset({"unknown", ""})
#: Columns that are identifiers, never features — persona's set, plus group/score columns.
IDENTIFIER_COLUMNS = frozenset(
    {"device_id", "phone", "oaid", "idfa", "imei", "email", "member_id", "one_id", "person_id"}
)
#: The value label of the column that gathers a dimension's rare values.
OTHER = "(other)"

Kind = Literal["categorical", "multi", "numeric"]
#: One encoded dimension: its column name, its kind and (categorical/multi) its vocabulary.
Dimension = tuple[str, Kind, tuple[str, ...]]
Int = npt.NDArray[np.int64]
#: Deduplicate list (row, value) pairs with a dense bitmap up to this many cells, else sort.
_DENSE_PAIRS = 1 << 26


def dimension_kind(type_: pa.DataType) -> Kind | None:
    """How a column of this Arrow type is encoded (``None``: not a feature type)."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        value = type_.value_type
        if pa.types.is_dictionary(value):  # how Parquet's dictionary-encoded lists are read
            value = value.value_type
        if pa.types.is_string(value) or pa.types.is_large_string(value):
            return "multi"
        return None
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_boolean(type_):
        return "categorical"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        return "numeric"
    return None


def as_table(data: Any) -> pa.Table:
    """An Arrow table from a table, record batch or pandas DataFrame (else :class:`SchemaError`)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # a pandas DataFrame
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise SchemaError(f"cannot read the DataFrame as tag columns ({exc})") from exc
    raise SchemaError(
        f"TagEncoder takes a pyarrow Table or a pandas DataFrame, got {type(data).__name__}"
    )


def _text(chunk: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_decode()
    if not pa.types.is_string(chunk.type):
        chunk = pc.cast(chunk, pa.string())
    return chunk


def _known(values: pa.Array, unknown: frozenset[str]) -> pa.Array:
    """The values with unknown labels turned into nulls, trimmed and lower-cased for comparison."""
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    is_unknown = pc.is_in(folded, value_set=pa.array(sorted(unknown), pa.string()))
    return pc.if_else(pc.fill_null(is_unknown, True), pa.nulls(len(values), pa.string()), values)


def _chunk_values(chunk: pa.Array, kind: Kind) -> tuple[pa.Array, npt.NDArray[np.int64] | None]:
    """A chunk's values (a multi column's list items) and, for lists, the row of each item."""
    if kind != "multi":
        return chunk, None
    if pa.types.is_dictionary(chunk.type):  # a dictionary of whole lists
        chunk = chunk.dictionary_decode()
    parents = pc.list_parent_indices(chunk).to_numpy(zero_copy_only=False)
    return pc.list_flatten(chunk), np.asarray(parents, dtype=np.int64)


def _dictionary_codes(values: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int64]]:
    """``(dictionary, codes)``: ``dictionary[codes[i]]`` is value ``i``; a null has code ``len``.

    Why: every rule of the encoder (unknown labels, vocabulary lookup) is a
    function of the value alone, so it is computed once per *distinct* value
    (a dictionary of a few dozen entries) and mapped to the rows with one
    NumPy gather, instead of running string kernels over every row. Parquet's
    own dictionaries (columns read with ``read_dictionary``) are used as they
    are; other columns are dictionary-encoded here (one hash pass).
    """
    if not pa.types.is_dictionary(values.type):
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        values = pc.dictionary_encode(values)
    dictionary = values.dictionary
    indices = values.indices
    if indices.null_count:
        indices = pc.fill_null(indices, len(dictionary))
    codes = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return dictionary, codes


def _known_lookup(dictionary: pa.Array, unknown: frozenset[str]) -> tuple[list[str], Int]:
    """Distinct known values of a dictionary and, per entry (+ the null code), their index or -1.

    Entries that are equal strings share one index, so a dictionary with
    repeated entries still counts a value once per row.
    """
    known = _known(_text(dictionary), unknown)
    distinct = pc.dictionary_encode(known)
    ids = pc.fill_null(distinct.indices, -1).to_numpy(zero_copy_only=False)
    lookup = np.append(np.asarray(ids, dtype=np.int64), -1)
    return [str(v) for v in distinct.dictionary.to_pylist()], lookup


def _slot_lookup(dictionary: pa.Array, vocab: pa.Array, unknown: frozenset[str]) -> Int:
    """Per dictionary entry (+ the null code): vocabulary index, ``len(vocab)`` (other) or -1."""
    known = _known(_text(dictionary), unknown)
    idx = pc.fill_null(pc.index_in(known, value_set=vocab), len(vocab))
    slots = np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)
    valid = np.asarray(known.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    slots[~valid] = -1
    return np.append(slots, -1)


#: Recent slot lookups by (dimension, vocabulary, unknown labels), with their dictionary.
_SLOT_CACHE: dict[tuple[str, tuple[str, ...], frozenset[str]], tuple[pa.Array, Int]] = {}
_SLOT_CACHE_SIZE = 512


def _cached_slot_lookup(
    name: str, dictionary: pa.Array, vocab: tuple[str, ...], unknown: frozenset[str]
) -> Int:
    """:func:`_slot_lookup`, reused while the same dictionary comes back.

    Blocks sliced from one Parquet row group share its dictionary, so the
    lookup is built once per part, not once per block; the dictionary is
    compared by value (a few dozen entries), never by address.
    """
    key = (name, vocab, unknown)
    hit = _SLOT_CACHE.get(key)
    if hit is not None and hit[0].equals(dictionary):
        return hit[1]
    lookup = _slot_lookup(dictionary, pa.array(vocab, pa.string()), unknown)
    if len(_SLOT_CACHE) >= _SLOT_CACHE_SIZE:
        _SLOT_CACHE.clear()
    _SLOT_CACHE[key] = (dictionary, lookup)
    return lookup


def _holder_counts(column: pa.ChunkedArray, kind: Kind, unknown: frozenset[str]) -> dict[str, int]:
    """Rows holding each known value of a column (a list value counts once per row)."""
    totals: dict[str, int] = {}
    for chunk in column.chunks:
        values, rows = _chunk_values(chunk, kind)
        if len(values) == 0:
            continue
        dictionary, codes = _dictionary_codes(values)
        names, lookup = _known_lookup(dictionary, unknown)
        ids = lookup[codes]
        keep = ids >= 0
        m = len(names)
        if rows is not None and m:
            # Deduplicate (row, value) pairs: a value listed twice in a row has one holder.
            pairs = rows[keep] * m + ids[keep]
            if len(chunk) * m <= _DENSE_PAIRS:
                seen = np.zeros(len(chunk) * m, dtype=bool)
                seen[pairs] = True
                counts = seen.reshape(len(chunk), m).sum(axis=0)
            else:
                counts = np.bincount(np.unique(pairs) % m, minlength=m)
        else:
            counts = np.bincount(ids[keep], minlength=m)
        for name, count in zip(names, counts.tolist(), strict=True):
            if count:
                totals[name] = totals.get(name, 0) + int(count)
    return totals


class TagEncoder(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Encode tag columns into a dense ``float32`` matrix with named columns.

    Parameters
    ----------
    columns:
        The dimensions to encode; ``None`` picks every column of a feature
        type except identifiers and ``exclude`` (persona's rule).
    exclude:
        Columns never encoded when ``columns`` is ``None``.
    min_frequency:
        A value needs at least this many holders in the training table to
        get its own column.
    max_values:
        At most this many value columns per dimension (most frequent first).
    unknown_labels:
        Text values that mean unknown (compared trimmed, lower-cased).
    """

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        min_frequency: int = 20,
        max_values: int = 64,
        unknown_labels: Sequence[str] = tuple(sorted(DEFAULT_UNKNOWN_LABELS)),
    ) -> None:
        self.columns = columns
        self.exclude = exclude
        self.min_frequency = min_frequency
        self.max_values = max_values
        self.unknown_labels = unknown_labels

    # -- fitting ----------------------------------------------------------------------------

    def _unknown(self) -> frozenset[str]:
        return frozenset(str(v).strip().lower() for v in self.unknown_labels)

    def _select(self, schema: pa.Schema) -> list[tuple[str, Kind]]:
        if self.columns is not None:
            if isinstance(self.columns, str):
                raise ConfigError("columns must be a list of column names, not one string")
            chosen: list[tuple[str, Kind]] = []
            for name in self.columns:
                if name not in schema.names:
                    raise SchemaError(
                        f"no feature column {name!r} (columns: {', '.join(schema.names)})",
                        column=name,
                    )
                kind = dimension_kind(schema.field(name).type)
                if kind is None:
                    raise SchemaError(
                        f"feature column {name!r} has type {schema.field(name).type}; "
                        "use text, boolean, list-of-text or numeric columns",
                        column=name,
                    )
                chosen.append((name, kind))
            if len({n for n, _ in chosen}) != len(chosen):
                raise ConfigError("a feature column is listed twice")
            return chosen
        skip = IDENTIFIER_COLUMNS | set(self.exclude)
        found: list[tuple[str, Kind]] = []
        for field in schema:
            if field.name in skip:
                continue
            kind = dimension_kind(field.type)
            if kind is not None:
                found.append((field.name, kind))
        if not found:
            raise SchemaError(f"no tag columns to encode (columns: {', '.join(schema.names)})")
        return found

    def fit(self, X: Any, y: object = None) -> TagEncoder:
        """Learn the dimensions and their vocabularies from the table ``X``."""
        del y
        if not isinstance(self.min_frequency, int) or self.min_frequency < 1:
            raise ConfigError(f"min_frequency must be a positive integer, got {self.min_frequency}")
        if not isinstance(self.max_values, int) or self.max_values < 1:
            raise ConfigError(f"max_values must be a positive integer, got {self.max_values}")
        table = as_table(X)
        unknown = self._unknown()
        dims: list[Dimension] = []
        for name, kind in self._select(table.schema):
            if kind == "numeric":
                dims.append((name, kind, ()))
                continue
            counts = _holder_counts(table[name], kind, unknown)
            ranked = sorted(
                ((v, c) for v, c in counts.items() if c >= self.min_frequency),
                key=lambda vc: (-vc[1], vc[0]),
            )[: self.max_values]
            vocab = tuple(sorted(v for v, _ in ranked))
            dims.append((name, kind, vocab))
        self._set_dimensions(dims)
        return self

    def _set_dimensions(self, dims: Sequence[Dimension]) -> None:
        names: list[str] = []
        for name, kind, vocab in dims:
            if kind == "numeric":
                names.append(name)
            else:
                names.extend(f"{name}={v}" for v in vocab)
                names.append(f"{name}={OTHER}")
        self.dimensions_: list[Dimension] = list(dims)
        self.feature_names_in_ = np.array([d[0] for d in dims], dtype=object)
        self.n_features_in_ = len(dims)
        self.feature_names_out_ = np.array(names, dtype=object)

    # -- transforming -----------------------------------------------------------------------

    def get_feature_names_out(self, input_features: object = None) -> npt.NDArray[np.object_]:
        """Output column names: ``dim=value``, ``dim=(other)`` or the numeric ``dim``."""
        del input_features
        self._check_fitted()
        out: npt.NDArray[np.object_] = self.feature_names_out_.copy()
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "dimensions_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this TagEncoder is not fitted yet; call fit first")

    def transform(self, X: Any) -> npt.NDArray[np.float32]:
        """Encode a table (same columns as in ``fit``) into ``float32``."""
        return self.encode(X)

    def encode(
        self,
        X: Any,
        *,
        order: Literal["C", "F"] = "C",
        out: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[np.float32]:
        """:meth:`transform` with a choice of memory layout (same values), optionally in place.

        ``order="F"`` (column-major) suits consumers that read the matrix a
        feature at a time, such as the compiled tree evaluator in
        :mod:`atoll.models.pu`; ``"C"`` is scikit-learn's usual layout.
        ``out``: a ``float32`` array of shape ``(rows, features)`` contiguous
        in ``order`` to overwrite (a buffer reused across blocks of a large
        table skips re-faulting fresh memory for every block).
        """
        self._check_fitted()
        table = as_table(X)
        unknown = self._unknown()
        n = table.num_rows
        width = len(self.feature_names_out_)
        if out is None:
            out = np.zeros((n, width), dtype=np.float32, order=order)
        else:
            contiguous = out.flags.f_contiguous if order == "F" else out.flags.c_contiguous
            if out.shape != (n, width) or out.dtype != np.float32 or not contiguous:
                raise ConfigError(
                    f"out must be a {order}-contiguous float32 array of shape {(n, width)}"
                )
            out.fill(0.0)
        flat = out.reshape(-1, order=order)  # a view: out is contiguous in this order
        col = 0
        for name, kind, vocab in self.dimensions_:
            if name not in table.column_names:
                raise SchemaError(f"the table has no feature column {name!r}", column=name)
            have = dimension_kind(table.schema.field(name).type)
            if have is None or (have == "multi") != (kind == "multi"):
                raise SchemaError(
                    f"feature column {name!r} has type {table.schema.field(name).type}, "
                    f"but the model was trained on a {kind} column",
                    column=name,
                )
            if kind == "numeric":
                values = pc.cast(table[name], pa.float64()).to_numpy()
                out[:, col] = values
                col += 1
                continue
            offset = 0
            for chunk in table[name].chunks:
                values, rows = _chunk_values(chunk, kind)
                if len(values):
                    dictionary, codes = _dictionary_codes(values)
                    slots = _cached_slot_lookup(name, dictionary, vocab, unknown)[codes]
                    hit = np.flatnonzero(slots >= 0)
                    at = (hit if rows is None else rows[hit]) + offset
                    columns = slots[hit] + col
                    flat[at * width + columns if order == "C" else columns * n + at] = 1.0
                offset += len(chunk)
            col += len(vocab) + 1
        return out

    # -- state ------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-ready parameters and learned dimensions (for saved models)."""
        self._check_fitted()
        return {
            "params": {
                "columns": None if self.columns is None else list(self.columns),
                "exclude": list(self.exclude),
                "min_frequency": self.min_frequency,
                "max_values": self.max_values,
                "unknown_labels": list(self.unknown_labels),
            },
            "dimensions": [[n, k, list(v)] for n, k, v in self.dimensions_],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TagEncoder:
        """Rebuild a fitted encoder from :meth:`to_state` output (validated)."""
        try:
            params = dict(state["params"])
            raw = state["dimensions"]
            dims: list[Dimension] = []
            for name, kind, vocab in raw:
                if kind not in ("categorical", "multi", "numeric") or not isinstance(name, str):
                    raise ValueError(f"bad dimension {name!r}/{kind!r}")
                dims.append((name, kind, tuple(str(v) for v in vocab)))
            encoder = cls(
                columns=params["columns"],
                exclude=tuple(params["exclude"]),
                min_frequency=int(params["min_frequency"]),
                max_values=int(params["max_values"]),
                unknown_labels=tuple(params["unknown_labels"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid saved encoder state ({exc})") from exc
        encoder._set_dimensions(dims)
        return encoder
