"""A restricted, versioned encoding of per-bucket results for the resume journal.

Why: resume must store each finished bucket's ``machine.result()`` on disk
and read it back in a later process. ``pickle`` would do it in one line and
would also execute whatever a tampered state directory contains; this
codec instead writes tagged JSON and rebuilds only plain values, NumPy
arrays (numeric/bool dtypes, never ``object``), enums and *dataclasses
defined in Atoll's own modules* (constructed through their ``__init__``,
so their validation runs again). Anything else is refused with
:class:`~atoll.errors.DataError` at encode time, not discovered at resume.

Encoding: ``RESULT_CODEC_VERSION`` (1 byte) || UTF-8 JSON, where

* ``{"$b": base64}`` is ``bytes``; ``{"$t": [...]}`` a tuple;
  ``{"$set": [...]}`` / ``{"$fset": [...]}`` a set / frozenset;
* ``{"$nd": [dtype, shape, base64]}`` a NumPy array (C order);
* ``{"$np": [dtype, value]}`` a NumPy scalar;
* ``{"$e": "module:Name", "v": value}`` an enum member;
* ``{"$dc": "module:Name", "f": {field: value}}`` a dataclass;
* ``{"$d": [[key, value], ...]}`` a dict with non-string keys; ``{"$m": {...}}``
  a dict whose string keys could be mistaken for a tag.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
from typing import Any

import numpy as np

from atoll.errors import DataError

__all__ = ["RESULT_CODEC_VERSION", "decode_result", "encode_result"]

#: First byte of every encoded result.
RESULT_CODEC_VERSION = 1
_ALLOWED_KINDS = set("biufc")  # bool, int, uint, float, complex: never object/void


def _qualname(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return {"$e": _qualname(type(value)), "v": _to_json(value.value)}
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise DataError(f"cannot journal an array of dtype {value.dtype}")
        data = np.ascontiguousarray(value).tobytes()
        return {"$nd": [value.dtype.str, list(value.shape), base64.b64encode(data).decode()]}
    if isinstance(value, np.generic):
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise DataError(f"cannot journal a scalar of dtype {value.dtype}")
        return {"$np": [value.dtype.str, value.item()]}
    if isinstance(value, tuple):
        return {"$t": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, frozenset):
        return {"$fset": [_to_json(v) for v in sorted(value, key=repr)]}
    if isinstance(value, set):
        return {"$set": [_to_json(v) for v in sorted(value, key=repr)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            body = {k: _to_json(v) for k, v in value.items()}
            return {"$m": body} if any(k.startswith("$") for k in value) else body
        return {"$d": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("atoll."):
            raise DataError(f"cannot journal {cls.__module__}.{cls.__qualname__}")
        fields = {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$dc": _qualname(cls), "f": fields}
    raise DataError(f"cannot journal a value of type {type(value).__name__}")


def _resolve(name: str, what: str) -> Any:
    module, _, qual = name.partition(":")
    if not module.startswith("atoll.") or not qual:
        raise DataError(f"journal names a {what} outside Atoll: {name!r}")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"journal names an unknown {what} {name!r}") from exc
    return obj


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$b" in value:
        return base64.b64decode(value["$b"], validate=True)
    if "$t" in value:
        return tuple(_from_json(v) for v in value["$t"])
    if "$set" in value:
        return {_from_json(v) for v in value["$set"]}
    if "$fset" in value:
        return frozenset(_from_json(v) for v in value["$fset"])
    if "$nd" in value:
        dtype_s, shape, data = value["$nd"]
        dtype = np.dtype(dtype_s)
        if dtype.kind not in _ALLOWED_KINDS:
            raise DataError(f"journal holds an array of dtype {dtype}")
        raw = base64.b64decode(data, validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape([int(n) for n in shape]).copy()
    if "$np" in value:
        dtype = np.dtype(value["$np"][0])
        if dtype.kind not in _ALLOWED_KINDS:
            raise DataError(f"journal holds a scalar of dtype {dtype}")
        return dtype.type(value["$np"][1])
    if "$e" in value:
        cls = _resolve(value["$e"], "enum")
        if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
            raise DataError(f"journal names a non-enum {value['$e']!r}")
        return cls(_from_json(value["v"]))
    if "$dc" in value:
        cls = _resolve(value["$dc"], "dataclass")
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise DataError(f"journal names a non-dataclass {value['$dc']!r}")
        fields = {k: _from_json(v) for k, v in value["f"].items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in fields.items() if k in init})
        for k, v in fields.items():
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj
    if "$d" in value:
        return {_from_json(k): _from_json(v) for k, v in value["$d"]}
    if "$m" in value:
        return {k: _from_json(v) for k, v in value["$m"].items()}
    return {k: _from_json(v) for k, v in value.items()}


def encode_result(value: Any) -> bytes:
    """Encode a bucket result (see the module docstring for what is allowed)."""
    text = json.dumps(_to_json(value), separators=(",", ":"), allow_nan=True)
    return bytes([RESULT_CODEC_VERSION]) + text.encode("utf-8")


def decode_result(data: bytes) -> Any:
    """Decode :func:`encode_result`'s output; DataError on anything malformed or disallowed."""
    if not data or data[0] != RESULT_CODEC_VERSION:
        raise DataError(f"journal result has version {data[:1].hex() or 'none'}, expected 01")
    try:
        return _from_json(json.loads(data[1:].decode("utf-8")))
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataError(f"journal result is malformed: {exc}") from exc
