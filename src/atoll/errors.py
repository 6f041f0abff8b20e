"""The one exception tree of Atoll.

Why: callers (the CLI, services, other parties' drivers) must be able to tell
*bad input* from *a misbehaving peer* from *a bug*, and to print a message a
person can act on ("orders.csv row 17, column phone: ...") instead of a
traceback from deep inside a library. Every error raised on purpose by Atoll
derives from :class:`AtollError`; foreign exceptions are mapped once, at the
edge where they enter, with ``raise ... from exc``.

::

    AtollError
    ├── ConfigError                 bad option, parameter or contract value
    ├── InputError                  bad user data; carries source/row/column
    │   ├── SchemaError             a table lacks a column or has a wrong type
    │   └── IdentifierError         an identifier fails normalization
    ├── DataError                   stored data is inconsistent
    │   ├── ManifestError           a dataset manifest is missing/malformed
    │   └── IntegrityError          content hash or row count mismatch
    ├── IdentityGraphError          ID-mapping cannot be built as asked
    ├── CryptoError                 misuse of a crypto recipe
    │   └── DecryptionError         opaque: authentication failed
    ├── ProtocolError               two-party protocol failures (sticky)
    │   ├── LocalProtocolError      we were asked to do something illegal
    │   └── RemoteProtocolError     the peer sent something invalid
    └── ExecutionError              a task failed inside an executor

``DecryptionError`` is deliberately uninformative: it never says *why*
authentication failed, so it cannot serve as an oracle.
"""

from __future__ import annotations

__all__ = [
    "AtollError",
    "ConfigError",
    "CryptoError",
    "DataError",
    "DecryptionError",
    "ExecutionError",
    "IdentifierError",
    "IdentityGraphError",
    "InputError",
    "IntegrityError",
    "LocalProtocolError",
    "ManifestError",
    "ProtocolError",
    "RemoteProtocolError",
    "SchemaError",
]


class AtollError(Exception):
    """Base class of every error Atoll raises on purpose."""


class ConfigError(AtollError):
    """An option, parameter or contract value is invalid."""


class InputError(AtollError):
    """User-supplied data is malformed.

    ``source`` names the file or table, ``row`` is the 1-based data row
    (header excluded) and ``column`` the field, whenever they are known; the
    message then reads ``"orders.csv row 17, column 'phone': <reason>"``.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.row = row
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        loc = ", ".join(
            part
            for part in (
                f"row {self.row}" if self.row is not None else "",
                f"column {self.column!r}" if self.column is not None else "",
            )
            if part
        )
        head = " ".join(part for part in (self.source or "", loc) if part)
        return f"{head}: {self.reason}" if head else self.reason


class SchemaError(InputError):
    """A table lacks a required column or a column has the wrong type."""


class IdentifierError(InputError):
    """An identifier value cannot be normalized (see ``atoll.ids``)."""


class DataError(AtollError):
    """Stored data is inconsistent with its own metadata."""


class ManifestError(DataError):
    """A dataset manifest is missing, malformed or of an unknown version."""


class IntegrityError(DataError):
    """A content hash, row count or bucket assignment does not match."""


class IdentityGraphError(AtollError):
    """The ID-mapping graph cannot be built as configured."""


class CryptoError(AtollError):
    """A cryptographic recipe was misused (wrong key size, bad parameters)."""


class DecryptionError(CryptoError):
    """Decryption or authentication failed. Deliberately says nothing more."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class ProtocolError(AtollError):
    """A two-party protocol cannot continue; the machine's error state is sticky."""


class LocalProtocolError(ProtocolError):
    """The local caller asked the protocol machine for an illegal transition."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a message that is malformed, out of order or out of range."""


class ExecutionError(AtollError):
    """A task failed inside an executor; the original error is chained."""
