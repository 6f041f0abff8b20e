"""Audience packages: scoring groups as the hashed-ID files media platforms accept.

Why: a media platform's DMP takes an audience as a text file of hashed
identifiers, one per line — IMEI-MD5, OAID-MD5, IDFA-MD5, phone MD5 or
SHA-256 — and each platform hashes a *canonical* spelling (IDFA upper-case
with dashes, IMEI/OAID lower-case, phones as 11 digits). Getting the case
wrong matches nothing, silently. So packages are built only through
:func:`atoll.ids.normalize.normalize_array` and :func:`~atoll.ids.normalize.hash_array`,
which implement the documented conventions (``docs/identifiers.md``, with
the platforms' own test vectors).

Layout written by :meth:`PackageBuilder.write`::

    packages/manifest.json             format_version 1; counts per group and kind
    packages/group_1/imei_md5.txt      one lowercase hex digest per line, sorted, distinct
    packages/group_1/oaid_md5.txt
    packages/group_1/idfa_md5.txt
    packages/group_1/phone_md5.txt
    packages/group_1/phone_sha256.txt
    packages/group_2/…

Hashed identifiers are an *exchange format*, not anonymisation: an MD5 of a
phone number is reversible by enumeration. Packages go to the media party
the contract names, and only rows the guard and the contract allow.
Excluded devices (seeds, already exposed) never reach a builder: the
scorer drops them before :meth:`PackageBuilder.add`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from atoll.errors import ConfigError, DataError
from atoll.ids.normalize import HashForm, IdKind, hash_array, normalize_array

__all__ = [
    "DEFAULT_KINDS",
    "PACKAGE_VERSION",
    "PackageBuilder",
    "PackageKind",
    "parse_kinds",
]

#: Version of ``packages/manifest.json``.
PACKAGE_VERSION = 1


@dataclass(frozen=True, slots=True)
class PackageKind:
    """One package file: the universe column, its identifier type and the hash form."""

    column: str
    id_type: str
    form: str

    def __post_init__(self) -> None:
        kind = IdKind.parse(self.id_type)
        if kind.hashed:
            raise ConfigError(f"package kind {self.id_type!r}: give the plain type (e.g. 'imei')")
        if HashForm(self.form) is HashForm.PLAIN:
            raise ConfigError("packages hold hashed identifiers; form must be md5 or sha256")

    @property
    def name(self) -> str:
        """File stem, e.g. ``imei_md5``."""
        return f"{IdKind.parse(self.id_type).label}_{self.form}"


#: Device IDs as MD5 (IMEI, OAID, IDFA) and phones as MD5 and SHA-256.
DEFAULT_KINDS: tuple[PackageKind, ...] = (
    PackageKind("imei", "imei", "md5"),
    PackageKind("oaid", "oaid", "md5"),
    PackageKind("idfa", "idfa", "md5"),
    PackageKind("phone", "phone", "md5"),
    PackageKind("phone", "phone", "sha256"),
)


def parse_kinds(text: str) -> tuple[PackageKind, ...]:
    """``"imei_md5,phone_sha256"`` → kinds (the column is the identifier type's name)."""
    kinds = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        id_type, sep, form = item.rpartition("_")
        if not sep:
            raise ConfigError(f"package kind {item!r}: write <type>_<md5|sha256>, e.g. imei_md5")
        kinds.append(PackageKind(id_type, id_type, form))
    if not kinds:
        raise ConfigError("no package kinds given")
    return tuple(kinds)


class PackageBuilder:
    """Collects hashed IDs per group and kind, part by part; :meth:`write` dedupes and saves."""

    def __init__(self, groups: int, kinds: Sequence[PackageKind] = DEFAULT_KINDS) -> None:
        if groups < 1:
            raise ConfigError("a package needs at least one group")
        self.groups = groups
        self.kinds = tuple(kinds)
        self._parts: dict[tuple[int, str], list[pa.Array]] = {}
        self.devices = [0] * (groups + 1)
        self.invalid: dict[str, int] = {}

    def columns(self) -> list[str]:
        """Universe columns the builder needs."""
        return sorted({k.column for k in self.kinds})

    def add(self, table: pa.Table, group: npt.NDArray[np.int8]) -> None:
        """Add one part: rows with ``group[i] > 0`` go to package ``group[i]``."""
        if group.shape != (table.num_rows,):
            raise ConfigError("group array and table differ in length")
        for g in range(1, self.groups + 1):
            sel = group == g
            count = int(sel.sum())
            if not count:
                continue
            self.devices[g] += count
            rows = table.filter(pa.array(sel))
            for kind in self.kinds:
                if kind.column not in rows.column_names:
                    continue
                column = rows[kind.column]
                present = int(len(column) - column.null_count)
                norm = normalize_array(column, kind.id_type, column=kind.column).values
                valid = pc.drop_null(norm)
                if isinstance(valid, pa.ChunkedArray):
                    valid = valid.combine_chunks()
                self.invalid[kind.name] = self.invalid.get(kind.name, 0) + present - len(valid)
                if len(valid):
                    hashed = hash_array(valid, kind.id_type, kind.form)
                    self._parts.setdefault((g, kind.name), []).append(hashed)

    def hashed(self, group: int, kind: PackageKind) -> pa.Array:
        """Distinct sorted digests of one package."""
        parts = self._parts.get((group, kind.name), [])
        if not parts:
            return pa.array([], pa.string())
        values = pc.unique(pa.concat_arrays(parts))
        return values.take(pc.sort_indices(values))

    def write(self, out: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the package files and ``manifest.json``; returns the manifest."""
        root = Path(out)
        manifest: dict[str, Any] = {
            "format_version": PACKAGE_VERSION,
            "kinds": [k.name for k in self.kinds],
            "groups": [],
            "invalid_identifiers_skipped": dict(sorted(self.invalid.items())),
            "note": "hashed identifiers are an exchange format, not anonymisation",
        }
        try:
            for g in range(1, self.groups + 1):
                folder = root / f"group_{g}"
                folder.mkdir(parents=True, exist_ok=True)
                files = {}
                for kind in self.kinds:
                    values = self.hashed(g, kind)
                    path = folder / f"{kind.name}.txt"
                    text = "\n".join(values.to_pylist())
                    path.write_text(text + ("\n" if text else ""), encoding="ascii")
                    files[kind.name] = {"file": f"group_{g}/{kind.name}.txt", "ids": len(values)}
                manifest["groups"].append({"group": g, "devices": self.devices[g], "files": files})
            (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{root}: cannot write the packages ({exc})") from exc
        return manifest
