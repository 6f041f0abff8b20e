"""TLS material on disk: the ``atoll certs init`` layout, TLS settings, bearer tokens.

Why: every Atoll service (the PSI node, the covert-query provider, the
island) and every client speaks HTTPS with *mutual* TLS and a bearer token.
One module decides where the files live, checks their permissions, and
builds the :class:`ssl.SSLContext` both ends use, so that no service gets a
weaker setting by accident. Certificates are minted by
:mod:`atoll.crypto.pki`; this module only writes and reads them.

Layout written by :func:`init_certs` (``atoll certs init --dir D``)::

    D/ca.pem               the CA certificate (public; every party needs it)
    D/ca.key               the CA key (0600; keep it offline after init)
    D/<party>/server.pem   server certificate (SAN: party, localhost, 127.0.0.1, --hosts)
    D/<party>/server.key   its key (0600)
    D/<party>/client.pem   client certificate (CN = party)
    D/<party>/client.key   its key (0600)
    D/<party>/token        the party's bearer token (0600)

A party's token is what *it* presents when it calls another party's node;
a node accepts the tokens of the other parties (see :func:`peer_tokens`).
Private keys and tokens must not be readable by group or others: loading
one that is refuses with a :class:`~atoll.errors.ConfigError` (like ssh).

TLS settings (both directions): TLS 1.2 minimum (1.3 preferred by OpenSSL),
the CA file as the *only* trust anchor, peer certificates required, host
names checked by the client against the server certificate's SAN.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atoll.crypto.pki import (
    CertUsage,
    KeyPair,
    generate_ca,
    issue_certificate,
    new_token,
)
from atoll.errors import ConfigError, CryptoError

__all__ = [
    "CertLayout",
    "PartyFiles",
    "TlsConfig",
    "check_party_name",
    "init_certs",
    "load_token",
    "peer_tokens",
    "write_private",
]

_PARTY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-.~+/=]{16,512}$")


def _check_private(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (keys, tokens, secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_token(path: Path) -> str:
    """Read a bearer token file (one line; must be private: mode 0600)."""
    _check_private(path, "token file")
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"token file {path} cannot be read as ASCII: {exc}") from exc
    if not _TOKEN.match(text):
        raise ConfigError(
            f"token file {path} does not hold one token (16..512 URL-safe characters)"
        )
    return text


@dataclass(frozen=True)
class PartyFiles:
    """Where one party's certificates, keys and token live in a cert directory."""

    root: Path
    name: str

    @property
    def dir(self) -> Path:
        """The party's folder."""
        return self.root / self.name

    @property
    def ca(self) -> Path:
        """The shared CA certificate."""
        return self.root / "ca.pem"

    @property
    def server_cert(self) -> Path:
        """Server certificate (PEM)."""
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        """Server key (PEM, 0600)."""
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        """Client certificate (PEM)."""
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        """Client key (PEM, 0600)."""
        return self.dir / "client.key"

    @property
    def token(self) -> Path:
        """The party's bearer token (0600)."""
        return self.dir / "token"

    def server_tls(self) -> TlsConfig:
        """TLS settings for this party's node (server side)."""
        return TlsConfig(cert=self.server_cert, key=self.server_key, ca=self.ca)

    def client_tls(self) -> TlsConfig:
        """TLS settings for this party calling another party's node."""
        return TlsConfig(cert=self.client_cert, key=self.client_key, ca=self.ca)


def check_party_name(name: str) -> str:
    """Validate a party name (lowercase letters, digits, ``-``/``_``; ≤ 32 characters)."""
    if not _PARTY.match(name):
        raise ConfigError(f"party name {name!r} must be 1-32 lowercase letters, digits, '-' or '_'")
    return name


def peer_tokens(root: Path, own: str) -> dict[str, str]:
    """The tokens a node run by party ``own`` accepts: every other party's token in ``root``."""
    tokens: dict[str, str] = {}
    if not root.is_dir():
        raise ConfigError(f"certificate directory {root} does not exist (run: atoll certs init)")
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name != own and (sub / "token").exists():
            tokens[sub.name] = load_token(sub / "token")
    if not tokens:
        raise ConfigError(f"{root} holds no token of another party than {own!r}")
    return tokens


@dataclass(frozen=True)
class TlsConfig:
    """Mutual-TLS settings of one endpoint: its certificate and key, and the CA it trusts.

    The same value serves both ends: :meth:`server_context` for a service
    (:func:`atoll.service.server.serve_app`), :meth:`client_context` for a
    client (:class:`atoll.transport.http.HttpPeer`). With
    ``require_peer_cert=True`` (the default, and the only setting Atoll's
    own commands use) a server refuses clients without a certificate signed
    by ``ca``.
    """

    cert: Path
    key: Path
    ca: Path
    require_peer_cert: bool = True

    def check(self) -> None:
        """Raise ConfigError naming the file if any is missing or the key is not private."""
        for what, path in (("certificate", self.cert), ("CA certificate", self.ca)):
            if not Path(path).is_file():
                raise ConfigError(f"{what} {path} does not exist (run: atoll certs init)")
        _check_private(Path(self.key), "private key")

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        self.check()
        try:
            ctx = ssl.create_default_context(purpose, cafile=str(self.ca))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load TLS material (cert {self.cert}, key {self.key}, ca {self.ca}): {exc}"
            ) from exc
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext for a server: TLS ≥ 1.2, client certificates verified against ``ca``."""
        ctx = self._context(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_peer_cert else ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext for a client: server certificate and host name verified against ``ca``."""
        ctx = self._context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@dataclass(frozen=True)
class CertLayout:
    """What :func:`init_certs` wrote (or kept)."""

    root: Path
    ca_created: bool
    parties: dict[str, PartyFiles]
    skipped: tuple[str, ...]


def init_certs(
    root: Path,
    names: Sequence[str],
    *,
    hosts: Sequence[str] = (),
    days: int = 825,
    force: bool = False,
) -> CertLayout:
    """Create (or extend) a certificate directory: a CA, and per party certs, keys and a token.

    An existing CA in ``root`` is reused, so parties can be added later;
    existing party folders are kept unless ``force``. Server certificates
    carry the party name, ``localhost``, ``127.0.0.1``, ``::1`` and ``hosts``.
    """
    names = [check_party_name(n) for n in names]
    if not names:
        raise ConfigError("give at least one party name")
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate party names in {list(names)}")
    root.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = root / "ca.pem", root / "ca.key"
    created = False
    try:
        if ca_cert.exists() and ca_key.exists():
            _check_private(ca_key, "CA key")
            ca = KeyPair(ca_cert.read_bytes(), ca_key.read_bytes())
        elif ca_cert.exists() or ca_key.exists():
            raise ConfigError(f"{root} holds only one of ca.pem / ca.key; remove it or fix it")
        else:
            ca = generate_ca(days=days)
            write_private(ca_key, ca.key_pem)
            _write_public(ca_cert, ca.cert_pem)
            created = True
        server_hosts = ["localhost", "127.0.0.1", "::1", *hosts]
        parties: dict[str, PartyFiles] = {}
        skipped: list[str] = []
        for name in names:
            files = PartyFiles(root, name)
            if files.dir.exists() and not force:
                skipped.append(name)
                parties[name] = files
                continue
            server = issue_certificate(ca, name, CertUsage.SERVER, hosts=server_hosts, days=days)
            client = issue_certificate(ca, name, CertUsage.CLIENT, days=days)
            files.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(files.dir, 0o700)
            write_private(files.server_key, server.key_pem)
            _write_public(files.server_cert, server.cert_pem)
            write_private(files.client_key, client.key_pem)
            _write_public(files.client_cert, client.cert_pem)
            write_private(files.token, (new_token() + "\n").encode("ascii"))
            parties[name] = files
    except CryptoError as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot write certificates under {root}: {exc}") from exc
    return CertLayout(root=root, ca_created=created, parties=parties, skipped=tuple(skipped))
