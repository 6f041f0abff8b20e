"""The base of every protocol role: a sans-IO state machine with a sticky error.

Why: every protocol (PSI, labeled PSI, intersection-sum, covert query) has the
same outer shape -- ``start()`` emits the first messages, ``receive(msg)``
consumes one peer message and returns the replies, ``done`` says when
``result()`` may be read. Putting the shape (and its error discipline) in
one base class means transports drive any of them without knowing what they
compute, and a machine that failed once can never be coaxed into continuing.

Rules every subclass follows:

* It never performs I/O, reads a clock or the global RNG; randomness comes
  from an injected ``rng`` (:data:`atoll.crypto.Rng`).
* Bad peer input raises :class:`~atoll.errors.RemoteProtocolError`; calling
  methods out of order raises :class:`~atoll.errors.LocalProtocolError`.
  Either puts the machine in the ``failed`` state for good.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from atoll.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from atoll.protocols.messages import Message

__all__ = ["Machine"]

R = TypeVar("R")


class Machine(ABC, Generic[R]):
    """One party's role in a two-party protocol (subclass and implement the hooks)."""

    #: Short protocol name used in errors and audit lines (e.g. ``"ecdh-psi"``).
    protocol: str = "protocol"

    def __init__(self) -> None:
        self._started = False
        self._failed: ProtocolError | None = None

    # -- public driver interface -------------------------------------------
    def start(self) -> list[Message]:
        """Begin the protocol; returns the first outbound messages (maybe none)."""
        self._check_alive()
        if self._started:
            raise self._fail(LocalProtocolError(f"{self.protocol}: start() called twice"))
        self._started = True
        return self._guard(self._on_start)

    def receive(self, msg: Message) -> list[Message]:
        """Consume one peer message; returns the replies (maybe none)."""
        self._check_alive()
        if not self._started:
            raise self._fail(LocalProtocolError(f"{self.protocol}: receive() before start()"))
        if self.done:
            raise self._fail(
                RemoteProtocolError(
                    f"{self.protocol}: unexpected {type(msg).__name__} after the protocol ended"
                )
            )
        return self._guard(lambda: self._on_receive(msg))

    @property
    def failed(self) -> bool:
        """True once any error occurred; the machine then refuses all calls."""
        return self._failed is not None

    @property
    @abstractmethod
    def done(self) -> bool:
        """True when :meth:`result` may be read."""

    def result(self) -> R:
        """The local output; raises LocalProtocolError unless :attr:`done`."""
        self._check_alive()
        if not self.done:
            raise LocalProtocolError(f"{self.protocol}: result() before the protocol finished")
        return self._result()

    # -- hooks ----------------------------------------------------------------
    @abstractmethod
    def _on_start(self) -> list[Message]: ...

    @abstractmethod
    def _on_receive(self, msg: Message) -> list[Message]: ...

    @abstractmethod
    def _result(self) -> R: ...

    # -- helpers for subclasses ------------------------------------------------
    def _unexpected(self, msg: Message, expected: str) -> RemoteProtocolError:
        """The error for a message that is not legal in the current state."""
        return RemoteProtocolError(
            f"{self.protocol}: got {type(msg).__name__}, expected {expected}"
        )

    def _check_alive(self) -> None:
        if self._failed is not None:
            raise LocalProtocolError(
                f"{self.protocol}: machine failed earlier ({self._failed}); start a new one"
            )

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self._failed = exc
        return exc

    def _guard(self, fn: object) -> list[Message]:
        assert callable(fn)
        try:
            out = fn()
        except ProtocolError as exc:
            self._failed = exc
            raise
        assert isinstance(out, list)
        return out
