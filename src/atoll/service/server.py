"""Run any Atoll FastAPI app under uvicorn with mutual TLS.

Why: the PSI node, the covert-query provider and the island each serve a
FastAPI app to *another organisation*. They must all get the same, strict
transport: TLS 1.2+ with the private CA as the only trust anchor and client
certificates required. One function, :func:`serve_app`, does that for every
service, so no service can forget the client-certificate check.

Use::

    from atoll.service.server import TlsConfig, serve_app
    from atoll.transport.tls import PartyFiles

    tls = PartyFiles(Path("certs"), "provider").server_tls()   # from `atoll certs init`
    serve_app(app, "127.0.0.1", 8443, tls)                      # blocks until stopped

or, to learn a port chosen by the OS (``port=0``), stop from inside the app,
or run in a background thread (tests)::

    server = AppServer(app, "127.0.0.1", 0, tls)
    print(server.port)          # bound and listening already
    server.start_background()   # or server.run() to block
    ...
    server.stop()

Plain HTTP (``tls=None``) is refused on anything but a loopback address
unless ``allow_plaintext=True`` -- it exists for local development only.
Bearer-token checks are the app's job (see :mod:`atoll.service.node`);
uvicorn's access log is off by default (it would print request paths of
another party's traffic).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from atoll.errors import ConfigError
from atoll.transport.tls import TlsConfig

__all__ = ["AppServer", "TlsConfig", "serve_app"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc}") from exc
    last: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.set_inheritable(True)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise ConfigError(f"cannot listen on {host}:{port}: {last}")


class AppServer:
    """One uvicorn server for one ASGI app on an already-bound socket.

    The socket is bound in the constructor (``port=0`` picks a free port;
    read :attr:`port`), so callers can announce the address before
    :meth:`run`. :meth:`stop` may be called from any thread, including a
    request handler of the app itself (the response in flight is still
    delivered: uvicorn shuts down gracefully).
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8443,
        tls: TlsConfig | None = None,
        *,
        allow_plaintext: bool = False,
        log_level: str = "warning",
        access_log: bool = False,
        limit_concurrency: int = 64,
        timeout_keep_alive: int = 30,
    ) -> None:
        if tls is None and not (allow_plaintext or _is_loopback(host)):
            raise ConfigError(
                f"refusing to serve plain HTTP on {host}: give TLS settings "
                "(atoll certs init) or serve on a loopback address"
            )
        ssl_context = tls.server_context() if tls is not None else None
        self.host = host
        self.tls = tls
        self._sock = _bind(host, port)
        self.port: int = int(self._sock.getsockname()[1])
        factory: Callable[..., Any] | None = None
        if ssl_context is not None:

            def factory(_config: Any, _default: Any) -> Any:
                return ssl_context

        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level=log_level,
            access_log=access_log,
            ssl_context_factory=factory,
            limit_concurrency=limit_concurrency,
            timeout_keep_alive=timeout_keep_alive,
            server_header=False,
            proxy_headers=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL clients dial (``https://`` when TLS is on)."""
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def run(self) -> None:
        """Serve until :meth:`stop` (or SIGINT/SIGTERM when run in the main thread)."""
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def start_background(self, *, timeout: float = 30.0) -> None:
        """Serve from a daemon thread; returns once the server accepts connections."""

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # surfaced by stop()/started checks
                self._error = exc

        self._thread = threading.Thread(target=target, name=f"atoll-server-{self.port}")
        self._thread.daemon = True
        self._thread.start()
        done = threading.Event()
        while not done.wait(0.02):
            if self._server.started:
                return
            if not self._thread.is_alive():
                raise ConfigError(f"server on {self.url} failed to start: {self._error}")
            timeout -= 0.02
            if timeout <= 0:
                self.stop()
                raise ConfigError(f"server on {self.url} did not start in time")

    def stop(self, *, wait: bool = True) -> None:
        """Ask the server to finish in-flight requests and exit."""
        self._server.should_exit = True
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    @property
    def should_exit(self) -> bool:
        """True once :meth:`stop` was called."""
        return bool(self._server.should_exit)


def serve_app(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8443,
    tls: TlsConfig | None = None,
    *,
    ready: Callable[[AppServer], None] | None = None,
    allow_plaintext: bool = False,
    log_level: str = "warning",
) -> None:
    """Serve ``app`` on ``host:port`` with mutual TLS (``tls``) until stopped; blocks.

    ``ready`` is called with the :class:`AppServer` once the socket listens
    (read ``server.port`` when ``port=0``; keep the object to call
    ``server.stop()`` later, e.g. after one job).
    """
    server = AppServer(app, host, port, tls, allow_plaintext=allow_plaintext, log_level=log_level)
    if ready is not None:
        ready(server)
    server.run()
