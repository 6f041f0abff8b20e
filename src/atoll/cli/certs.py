"""``atoll certs``: mint the private CA, per-party certificates and bearer tokens.

Why: two parties' nodes talk over mutual TLS with bearer tokens; setting
that up by hand with openssl is where deployments go wrong (missing SANs,
client certs without clientAuth, world-readable keys). One command writes
the layout :mod:`atoll.transport.tls` expects, with 0600 keys and tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atoll.cli._common import console, fail, out_console
from atoll.errors import AtollError

app = typer.Typer(
    help="Certificates and tokens for mutual TLS between nodes.", no_args_is_help=True
)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Option("--dir", help="Certificate directory to create.")],
    names: Annotated[
        str, typer.Option(help="Comma-separated party names (one folder each).")
    ] = "brand,provider,island",
    hosts: Annotated[
        str, typer.Option(help="Extra host names/IPs for the server certificates (comma list).")
    ] = "",
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 825,
    force: Annotated[bool, typer.Option(help="Re-issue existing parties' files.")] = False,
) -> None:
    """Create a self-signed CA and, per party, server/client certificates, keys and a token.

    An existing CA in the directory is reused, so parties can be added later.
    Keys and tokens are written with mode 0600. Give each party its own
    folder plus ``ca.pem``; keep ``ca.key`` offline.
    """
    from atoll.crypto.pki import certificate_info
    from atoll.transport.tls import init_certs

    try:
        layout = init_certs(
            directory,
            [n.strip() for n in names.split(",") if n.strip()],
            hosts=[h.strip() for h in hosts.split(",") if h.strip()],
            days=days,
            force=force,
        )
        ca_info = certificate_info((directory / "ca.pem").read_bytes())
    except AtollError as exc:
        raise fail(exc) from None
    action = "created" if layout.ca_created else "reused"
    out_console.print(f"CA {action}: {directory / 'ca.pem'} (sha256 {ca_info['sha256'][:16]}…)")
    for name, files in layout.parties.items():
        state = "kept (use --force to re-issue)" if name in layout.skipped else "issued"
        out_console.print(f"  {name}: {files.dir}/ server.pem client.pem token — {state}")
    console.print(f"keep {directory / 'ca.key'} offline; keys and tokens are mode 0600")
