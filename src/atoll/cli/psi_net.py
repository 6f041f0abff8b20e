"""``atoll psi serve`` / ``psi join``: the two PSI parties as separate processes over HTTPS.

Why: ``psi local`` runs both roles in one process; real parties run on
different machines. The *serving* party (the provider: PSI sender, holder of
the label columns) runs a node that handles one job and exits (or keeps
serving); the *joining* party (the brand: PSI receiver, who gets the matched
rows) connects with its client certificate and token, drives the buckets and
writes the output atomically at the end. An interrupted ``join`` re-run with
the same arguments resumes: it skips the buckets both sides finished (state
in ``--state-dir``, by default ``<out>.state``).

These commands are registered on the ``atoll psi`` Typer app by
:func:`register` (the ``psi`` app itself, with ``psi local``, lives in
:mod:`atoll.cli.psi`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from atoll.cli._common import console, fail, out_console, print_kv
from atoll.errors import AtollError, ConfigError

__all__ = ["join", "register", "serve", "sum_join", "sum_serve"]

_CertsOpt = Annotated[
    Path,
    typer.Option("--certs", help="Directory made by `atoll certs init` (default ./certs)."),
]
_CertOpt = Annotated[
    Path | None, typer.Option("--cert", help="Certificate (PEM), overrides --certs.")
]
_KeyOpt = Annotated[Path | None, typer.Option("--key", help="Private key (PEM, mode 0600).")]
_CaOpt = Annotated[Path | None, typer.Option("--ca", help="CA certificate to trust (PEM).")]
_MaxOpt = Annotated[
    int,
    typer.Option(
        "--max-message-mb", min=1, max=2048, help="Cap on one round's body, MiB (both sides)."
    ),
]
_TokenFileOpt = Annotated[
    Path | None, typer.Option(help="Our bearer token file (default: <certs>/<name>/token).")
]
_StateDirOpt = Annotated[
    Path | None, typer.Option(help="Resume journal directory (default: <out>.state).")
]
_FreshOpt = Annotated[bool, typer.Option(help="Discard an existing resume journal.")]
_WorkersOpt = Annotated[int, typer.Option(min=1, max=64, help="Buckets in flight.")]
_NameOpt = Annotated[str, typer.Option(help="This party's name in --certs.")]


def _tls(certs: Path, name: str, cert: Path | None, key: Path | None, ca: Path | None, *,
         server: bool) -> Any:  # fmt: skip
    from atoll.transport.tls import PartyFiles, TlsConfig, check_party_name

    files = PartyFiles(certs, check_party_name(name))
    default = files.server_tls() if server else files.client_tls()
    return TlsConfig(cert=cert or default.cert, key=key or default.key, ca=ca or default.ca)


def _options(
    reveal: str, cardinality_only: bool, buckets: int, labels: tuple[str, ...] | None
) -> Any:
    from atoll.matching.psi_job import PsiOptions

    try:
        return PsiOptions(
            reveal=reveal, cardinality_only=cardinality_only, buckets=buckets, labels=labels
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc


def _load(input_path: Path) -> Any:
    from atoll.data.io import read_table

    return read_table(input_path)


def _summary(outcome: Any) -> dict[str, Any]:
    data = outcome.to_dict() if hasattr(outcome, "to_dict") else dict(outcome)
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool))}


def serve(
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file (sender).")],
    id_column: Annotated[str, typer.Option(help="ID column, or a priority list phone,oaid,…")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")],
    labels: Annotated[
        str | None, typer.Option(help="Label columns to offer (labeled PSI), comma list.")
    ] = None,
    id_type: Annotated[str | None, typer.Option(help="ID kind(s) if not the column name.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Buckets (both sides).")] = 16,
    reveal: Annotated[str, typer.Option(help="receiver or both (both sides).")] = "receiver",
    cardinality_only: Annotated[bool, typer.Option(help="Only the count (both sides).")] = False,
    certs: _CertsOpt = Path("certs"),
    name: Annotated[str, typer.Option(help="This party's name in --certs.")] = "provider",
    cert: _CertOpt = None,
    key: _KeyOpt = None,
    ca: _CaOpt = None,
    token_file: Annotated[
        list[Path] | None,
        typer.Option(help="Accepted client token file (repeatable; default: other parties')."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the sender's outcome goes (JSON or table).")
    ] = None,
    keep_serving: Annotated[bool, typer.Option(help="Serve more jobs instead of exiting.")] = False,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the bound port here once listening.")
    ] = None,
    max_message_mb: _MaxOpt = 64,
) -> None:
    """Serve this party's side of a PSI job (the sender) to one joining party over mutual TLS."""
    from atoll.matching.psi_job import psi_party

    try:
        tls, tokens = _server_creds(certs, name, cert, key, ca, token_file)
        label_cols = tuple(c.strip() for c in labels.split(",") if c.strip()) if labels else None
        options = _options(reveal, cardinality_only, buckets, label_cols)
        table = _load(input_path)

        def factory() -> Any:
            return psi_party(
                table, id_column, role="sender", id_types=id_type, options=options,
                source=str(input_path),
            )  # fmt: skip

        _run_server(factory, tokens, tls, host, port, out, keep_serving, ready_file,
                    max_message_mb, "PSI (sender)")  # fmt: skip
    except AtollError as exc:
        raise fail(exc) from None


def _run_server(
    factory: Any,
    tokens: dict[str, str],
    tls: Any,
    host: str,
    port: int,
    out: Path | None,
    keep_serving: bool,
    ready_file: Path | None,
    max_message_mb: int,
    what: str,
) -> None:
    from atoll.matching.report import write_outcome
    from atoll.service.node import Node, create_app
    from atoll.service.server import AppServer

    factory()  # fail now, not on the first client, if the input or options are bad
    holder: list[AppServer] = []
    errors: list[AtollError] = []

    def on_finish(caller: str, job: str, outcome: Any) -> None:
        try:
            if out is not None:
                write_outcome(outcome, out)
                console.print(f"wrote this party's outcome → {out}")
            print_kv(f"job {job} with {caller} finished", _summary(outcome))
        except AtollError as exc:
            errors.append(exc)
        if not keep_serving:
            holder[0].stop(wait=False)

    node = Node(factory, tokens, max_body=max_message_mb * 1024 * 1024, on_finish=on_finish)
    server = AppServer(create_app(node), host, port, tls)
    holder.append(server)
    if ready_file is not None:
        tmp = ready_file.with_name(f".{ready_file.name}.tmp")
        tmp.write_text(f"{server.port}\n", encoding="ascii")
        os.replace(tmp, ready_file)
    console.print(f"serving {what} on {server.url} — waiting for a joining party")
    server.run()
    if errors:
        raise errors[0]


def _server_creds(
    certs: Path, name: str, cert: Path | None, key: Path | None, ca: Path | None,
    token_file: list[Path] | None,
) -> tuple[Any, dict[str, str]]:  # fmt: skip
    from atoll.transport.tls import load_token, peer_tokens

    tls = _tls(certs, name, cert, key, ca, server=True)
    if token_file:
        return tls, {f"token{i}:{p.name}": load_token(p) for i, p in enumerate(token_file)}
    return tls, peer_tokens(certs, name)


def join(
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file (receiver).")],
    id_column: Annotated[str, typer.Option(help="ID column, or a priority list phone,oaid,…")],
    peer: Annotated[str, typer.Option(help="URL of the serving node, e.g. https://host:8443")],
    out: Annotated[Path, typer.Option(help="Output: matched rows (.parquet/.csv) or .json.")],
    labels: Annotated[
        bool, typer.Option(help="Ask for the server's label columns (labeled PSI).")
    ] = False,
    id_type: Annotated[str | None, typer.Option(help="ID kind(s) if not the column name.")] = None,
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Buckets (both sides).")] = 16,
    reveal: Annotated[str, typer.Option(help="receiver or both (both sides).")] = "receiver",
    cardinality_only: Annotated[bool, typer.Option(help="Only the count (both sides).")] = False,
    certs: _CertsOpt = Path("certs"),
    name: _NameOpt = "brand",
    cert: _CertOpt = None,
    key: _KeyOpt = None,
    ca: _CaOpt = None,
    token_file: _TokenFileOpt = None,
    state_dir: _StateDirOpt = None,
    fresh: _FreshOpt = False,
    workers: _WorkersOpt = 2,
    max_message_mb: _MaxOpt = 64,
) -> None:
    """Join a serving node as the PSI receiver; resumes an interrupted run from --state-dir."""
    from atoll.matching.psi_job import psi_party
    from atoll.transport.tls import PartyFiles, load_token

    try:
        tls = _tls(certs, name, cert, key, ca, server=False)
        token = load_token(token_file or PartyFiles(certs, name).token)
        options = _options(reveal, cardinality_only, buckets, () if labels else None)
        job = psi_party(
            _load(input_path), id_column, role="receiver", id_types=id_type, options=options,
            source=str(input_path),
        )  # fmt: skip
        _run_join(job, input_path, peer, out, tls, token, state_dir, fresh, workers,
                  max_message_mb, "PSI")  # fmt: skip
    except AtollError as exc:
        raise fail(exc) from None


def _run_join(
    job: Any,
    input_path: Path,
    peer: str,
    out: Path,
    tls: Any,
    token: str,
    state_dir: Path | None,
    fresh: bool,
    workers: int,
    max_message_mb: int,
    what: str,
) -> None:
    from atoll.cli import _progress
    from atoll.crypto import sha256_file
    from atoll.matching.report import write_outcome
    from atoll.matching.session import canonical_params
    from atoll.transport.http import HttpPeer, join_job
    from atoll.transport.journal import Journal

    journal = Journal.open(
        state_dir or out.with_name(f"{out.name}.state"),
        peer=peer,
        params=canonical_params(job.params()),
        input_id=sha256_file(input_path),
        fresh=fresh,
    )
    with (
        HttpPeer(peer, token=token, tls=tls, max_body=max_message_mb * 1024 * 1024) as hp,
        _progress() as bar,
    ):
        tasks: dict[int, Any] = {}

        def progress(stage: int, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"stage {stage}: buckets", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = join_job(job, hp, journal=journal, workers=workers, progress=progress)
    write_outcome(result.outcome, out)
    journal.discard()
    print_kv(f"{what} with {peer}", _summary(result.outcome))
    if result.skipped:
        console.print(f"resumed: {len(result.skipped)} buckets reused from the journal")
    out_console.print(f"wrote → {out}")


def sum_serve(
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file (IDs only).")],
    id_column: Annotated[str, typer.Option(help="ID column (one; no waterfall).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")],
    id_type: Annotated[str | None, typer.Option(help="ID kind if not the column name.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Buckets (both sides).")] = 8,
    decimals: Annotated[int, typer.Option(min=0, max=6, help="Decimal places of values.")] = 2,
    certs: _CertsOpt = Path("certs"),
    name: Annotated[str, typer.Option(help="This party's name in --certs.")] = "provider",
    cert: _CertOpt = None,
    key: _KeyOpt = None,
    ca: _CaOpt = None,
    token_file: Annotated[
        list[Path] | None,
        typer.Option(help="Accepted client token file (repeatable; default: other parties')."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where this party's JSON outcome goes.")] = None,
    keep_serving: Annotated[bool, typer.Option(help="Serve more jobs instead of exiting.")] = False,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the bound port here once listening.")
    ] = None,
    max_message_mb: _MaxOpt = 64,
) -> None:
    """Serve the ID-only side of an intersection-sum (e.g. the provider's exposed devices)."""
    from atoll.matching.sum_job import SumOptions, sum_party

    try:
        tls, tokens = _server_creds(certs, name, cert, key, ca, token_file)
        options = SumOptions(buckets=buckets, decimals=decimals)
        table = _load(input_path)

        def factory() -> Any:
            return sum_party(table, id_column, role="ids", id_type=id_type, options=options,
                             source=str(input_path))  # fmt: skip

        _run_server(factory, tokens, tls, host, port, out, keep_serving, ready_file,
                    max_message_mb, "intersection-sum (ids)")  # fmt: skip
    except AtollError as exc:
        raise fail(exc) from None


def sum_join(
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file (id, values).")],
    id_column: Annotated[str, typer.Option(help="ID column (one; no waterfall).")],
    value_column: Annotated[str, typer.Option(help="Value column(s) to sum, comma list.")],
    peer: Annotated[str, typer.Option(help="URL of the serving node, e.g. https://host:8443")],
    out: Annotated[Path, typer.Option(help="Output JSON: intersection size and sums.")],
    id_type: Annotated[str | None, typer.Option(help="ID kind if not the column name.")] = None,
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Buckets (both sides).")] = 8,
    decimals: Annotated[int, typer.Option(min=0, max=6, help="Decimal places of values.")] = 2,
    certs: _CertsOpt = Path("certs"),
    name: _NameOpt = "brand",
    cert: _CertOpt = None,
    key: _KeyOpt = None,
    ca: _CaOpt = None,
    token_file: _TokenFileOpt = None,
    state_dir: _StateDirOpt = None,
    fresh: _FreshOpt = False,
    workers: _WorkersOpt = 2,
    max_message_mb: _MaxOpt = 64,
) -> None:
    """Join as the values side of an intersection-sum (e.g. the brand's order amounts)."""
    from atoll.matching.sum_job import SumOptions, sum_party
    from atoll.transport.tls import PartyFiles, load_token

    try:
        tls = _tls(certs, name, cert, key, ca, server=False)
        token = load_token(token_file or PartyFiles(certs, name).token)
        job = sum_party(
            _load(input_path), id_column, role="values", id_type=id_type,
            value_columns=value_column, options=SumOptions(buckets=buckets, decimals=decimals),
            source=str(input_path),
        )  # fmt: skip
        _run_join(job, input_path, peer, out, tls, token, state_dir, fresh, workers,
                  max_message_mb, "intersection-sum")  # fmt: skip
    except AtollError as exc:
        raise fail(exc) from None


def register(psi_app: typer.Typer) -> None:
    """Add ``serve``, ``join``, ``sum-serve`` and ``sum-join`` to the ``atoll psi`` app."""
    psi_app.command("serve")(serve)
    psi_app.command("join")(join)
    psi_app.command("sum-serve")(sum_serve)
    psi_app.command("sum-join")(sum_join)
