"""``atoll island``: run the secure island, attest it, upload to it, run jobs on it.

Why: the island is used by three kinds of people on three machines -- the
operator who serves it, and the brand and provider who each verify it with
their own policy before releasing any key. Each command is a thin wrapper
around :mod:`atoll.service.island` and :mod:`atoll.island`, so every step
can also be scripted in Python.

Typical session (two parties, one island)::

    atoll island keygen --party brand --state brand-state        # prints keys for the job
    atoll certs init --out certs island brand provider            # mutual-TLS material
    atoll island serve --backend simulated --port 8480 --workdir island --certs certs
    atoll island attest --peer https://127.0.0.1:8480 --policy policy.toml \\
        --certs certs --tls-name brand
    atoll island upload --peer URL --dataset brand-members --input members.parquet \\
        --id-column phone --state brand-state --certs certs --tls-name brand
    atoll island release --peer URL --job job.toml --state provider-state --policy p.toml
    atoll island run --peer URL --job job.toml --out results --state brand-state --policy b.toml
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from atoll.cli._common import console, fail, out_console, print_kv
from atoll.errors import AtollError, ConfigError, InputError

app = typer.Typer(
    help="The secure island: serve, attest, upload encrypted data, run jobs.",
    no_args_is_help=True,
)

_STAMP_STYLE = "[bold yellow]"


def _tls(certs: Path | None, name: str, *, server: bool = False) -> Any:
    """Mutual-TLS material of ``name`` in a certificate folder (``atoll certs init``)."""
    from atoll.transport.tls import PartyFiles

    if certs is None:
        return None
    files = PartyFiles(certs, name)
    return files.server_tls() if server else files.client_tls()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", source=str(path)) from None


@app.command("keygen")
def keygen(
    party: Annotated[str, typer.Option(help="Party name as used in job manifests (brand…).")],
    state: Annotated[Path, typer.Option(help="Party state folder (keys.json, sealed/).")],
    force: Annotated[bool, typer.Option(help="Replace existing keys.")] = False,
) -> None:
    """Create a party's keys; prints the public parts to paste into job manifests."""
    from atoll.service.island import PartyKeys

    try:
        path = state / "keys.json"
        if path.exists() and not force:
            raise ConfigError(f"{path} exists (use --force to replace it)")
        keys = PartyKeys.generate(party)
        keys.save(path)
    except AtollError as exc:
        raise fail(exc) from None
    out_console.print_json(json.dumps(keys.public()))
    console.print(f"keys written to {path} (mode 0600)")


@app.command("serve")
def serve(
    backend: Annotated[str, typer.Option(help="Evidence backend (only 'simulated' here).")],
    port: Annotated[int, typer.Option(help="TCP port.")] = 8480,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    workdir: Annotated[Path, typer.Option(help="Island folder (sealed store).")] = Path("island"),
    temp_dir: Annotated[
        Path | None, typer.Option(help="Burn area for spills (default: <workdir>/private).")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="A contract policy: serve warns if it would refuse this island."),
    ] = None,
    certs: Annotated[
        Path | None, typer.Option(help="Certificate folder (atoll certs init) for mutual TLS.")
    ] = None,
    tls_name: Annotated[str, typer.Option(help="The island's name in --certs.")] = "island",
    plain_http: Annotated[
        bool, typer.Option(help="Serve without TLS (loopback development only).")
    ] = False,
    config_tag: Annotated[
        str, typer.Option(help="Extra configuration label (enters the measurement).")
    ] = "",
) -> None:
    """Run the island service in this process (sweeps leftovers of a killed run first)."""
    from atoll.island.burn import install_signal_handlers
    from atoll.island.evidence.simulated import SIMULATED_STAMP, SimulatedBackend
    from atoll.island.policy import load_policy
    from atoll.island.runner import Island
    from atoll.service.island import serve_island

    try:
        if backend != "simulated":
            raise ConfigError(
                f"backend {backend!r} is not available here; real SGX/TDX/SEV-SNP runs need the "
                "hardware (see deploy/gramine/ and docs/island.md)"
            )
        from atoll.service.island_local import simulated_island_config

        island = Island(
            workdir,
            backend=SimulatedBackend(simulated_island_config(config_tag)),
            temp_root=temp_dir,
        )
        if policy is not None:
            rules = load_policy(policy)
            allowed = rules.measurements.get("measurement", frozenset())
            if not rules.allow_simulated or island.backend.measurement not in allowed:
                console.print(
                    f"[bold red]warning:[/] policy {policy} would refuse this island "
                    "(simulated not allowed, or measurement not listed)"
                )
    except AtollError as exc:
        raise fail(exc) from None
    info = island.info()
    print_kv(
        "island",
        {
            "backend": backend,
            "measurement": info["measurement"],
            "code_hash": info["code_hash"],
            "config_hash": info["config_hash"],
            "receipt key": info["receipt_key"],
            "listening": f"{'http' if plain_http else 'https'}://{host}:{port}",
            "swept at start": f"{len(island.swept)} leftover item(s) removed",
        },
    )
    console.print(f"{_STAMP_STYLE}{SIMULATED_STAMP.upper()}[/]: software island, no TEE.")
    install_signal_handlers(island.burn)
    try:
        serve_island(
            island,
            host=host,
            port=port,
            tls=_tls(certs, tls_name, server=True),
            allow_plaintext=plain_http,
        )
    except AtollError as exc:
        raise fail(exc) from None
    finally:
        island.shutdown()


@app.command("measure")
def measure(
    config_tag: Annotated[
        str, typer.Option(help="The --config-tag the island is served with.")
    ] = "",
) -> None:
    """Recompute the simulated island's measurement from your own copy of the code (to pin it)."""
    from atoll.island.evidence.simulated import SimulatedBackend
    from atoll.service.island_local import simulated_island_config

    backend = SimulatedBackend(simulated_island_config(config_tag))
    out_console.print_json(
        json.dumps(
            {
                "tee": "simulated",
                "measurement": backend.measurement,
                "code_hash": backend.code_hash,
                "config_hash": backend.config_hash,
            }
        )
    )


@app.command("attest")
def attest(
    peer: Annotated[str, typer.Option(help="Island URL (https://host:port).")],
    policy: Annotated[Path, typer.Option(help="Your attestation policy (TOML).")],
    job: Annotated[Path | None, typer.Option(help="Bind the evidence to this job.")] = None,
    certs: Annotated[
        Path | None, typer.Option(help="Certificate folder (atoll certs init) for mutual TLS.")
    ] = None,
    tls_name: Annotated[str, typer.Option(help="Your party name in --certs.")] = "client",
) -> None:
    """Verify the island's evidence against your policy; print the verdict (exit 1 if refused)."""
    from atoll.island.keyrelease import new_nonce, verify_bundle
    from atoll.island.policy import load_policy
    from atoll.island.runner import parse_job
    from atoll.island.verdict import AttestationError
    from atoll.service.island import IslandClient, describe_rejection

    try:
        rules = load_policy(policy)
        with IslandClient(peer, tls=_tls(certs, tls_name)) as client:
            nonce = new_nonce()
            job_id = digest = None
            if job is not None:
                text = _read(job, "job manifest")
                parsed = parse_job(text, source=str(job))
                client.submit_job(text)
                job_id, digest = parsed.job_id, parsed.digest
            bundle = client.attest(nonce, job_id)
            try:
                verdict = verify_bundle(bundle, rules, nonce=nonce, job_hash=digest)
            except AttestationError as exc:
                out_console.print_json(json.dumps(describe_rejection(exc)))
                console.print(f"[bold red]refused:[/] {exc}")
                raise typer.Exit(code=1) from None
    except AtollError as exc:
        raise fail(exc) from None
    doc: dict[str, Any] = {"accepted": True, "verdict": verdict.to_dict()}
    out_console.print_json(json.dumps(doc, default=str))
    if verdict.simulated:
        console.print(f"{_STAMP_STYLE}accepted SIMULATED evidence[/]: no hardware protection.")


@app.command("filter-request")
def filter_request(
    input_path: Annotated[Path, typer.Option("--input", help="Your IDs (CSV or Parquet).")],
    id_column: Annotated[str, typer.Option(help="Column of normalized IDs.")],
    out: Annotated[Path, typer.Option(help="Request file to send to the provider (JSON).")],
    bits: Annotated[
        int, typer.Option(min=1, max=32, help="Prefix bits (fewer = more amplification).")
    ] = 12,
    salt: Annotated[str | None, typer.Option(help="Hex salt (default: random).")] = None,
) -> None:
    """Build an ID-amplification filter request from your IDs (brand side)."""
    import os

    import pyarrow.compute as pc

    from atoll.data.envelope import IdFilter
    from atoll.data.io import iter_batches

    try:
        salt_bytes = bytes.fromhex(salt) if salt else os.urandom(32)
        prefixes: set[int] = set()
        for batch in iter_batches(input_path):
            if id_column not in batch.schema.names:
                raise InputError("id column not found", source=str(input_path), column=id_column)
            column = batch.column(id_column)
            values = column.filter(pc.is_valid(column)).to_pylist()
            probe = IdFilter(bits, frozenset(), salt_bytes)
            prefixes.update(int(p) for p in probe.prefixes_of(str(v) for v in values))
        request = IdFilter(bits, frozenset(prefixes), salt_bytes)
        out.write_text(json.dumps(request.to_json()), encoding="utf-8")
    except ValueError as exc:
        raise fail(ConfigError(f"--salt must be hex: {exc}")) from None
    except AtollError as exc:
        raise fail(exc) from None
    print_kv(
        f"filter request → {out}",
        {
            "prefix bits": bits,
            "prefixes": len(request.prefixes),
            "expected upload fraction": f"{request.coverage:.2%}",
            "digest (put in the job as filter_digest)": request.digest(),
        },
    )


@app.command("upload")
def upload(
    peer: Annotated[str, typer.Option(help="Island URL.")],
    dataset: Annotated[str, typer.Option(help="Dataset id (the job manifest names it).")],
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file.")],
    id_column: Annotated[str, typer.Option(help="Normalized identifier column to bucket by.")],
    state: Annotated[Path, typer.Option(help="Party state folder (from keygen).")],
    strategy: Annotated[str, typer.Option(help="full | bucketed | filter.")] = "bucketed",
    buckets: Annotated[int, typer.Option(min=1, max=65536, help="Bucket count B.")] = 64,
    salt: Annotated[
        str | None, typer.Option(help="Bucket salt, hex (agree with the peer).")
    ] = None,
    filter_request_path: Annotated[
        Path | None, typer.Option("--filter-request", help="The brand's filter request (filter).")
    ] = None,
    certs: Annotated[
        Path | None, typer.Option(help="Certificate folder (atoll certs init) for mutual TLS.")
    ] = None,
    tls_name: Annotated[str, typer.Option(help="Your party name in --certs.")] = "client",
) -> None:
    """Seal a table bucket by bucket and upload it (next version; only changed buckets)."""
    from atoll.data.envelope import IdFilter, SealedStore
    from atoll.service.island import IslandClient, PartyKeys, upload_dataset

    try:
        keys = PartyKeys.load(state / "keys.json")
        id_filter = None
        if filter_request_path is not None:
            try:
                obj = json.loads(_read(filter_request_path, "filter request"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{filter_request_path}: not JSON ({exc})") from None
            id_filter = IdFilter.from_json(obj, where=str(filter_request_path))
        salt_bytes = bytes.fromhex(salt) if salt else None
        with (
            IslandClient(peer, tls=_tls(certs, tls_name)) as client,
            Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
            ) as progress,
        ):
            tasks: dict[str, Any] = {}

            def step(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total if total > 0 else None)
                progress.update(tasks[name], completed=done, total=total if total > 0 else None)

            sealed, uploaded = upload_dataset(
                client,
                keys,
                SealedStore(state / "sealed"),
                dataset_id=dataset,
                input_path=input_path,
                id_column=id_column,
                strategy=strategy,
                buckets=buckets,
                salt=salt_bytes,
                id_filter=id_filter,
                progress=step,
            )
        keys.save(state / "keys.json")
    except ValueError as exc:
        raise fail(ConfigError(f"--salt must be hex: {exc}")) from None
    except AtollError as exc:
        raise fail(exc) from None
    m = sealed.manifest
    print_kv(
        f"uploaded {dataset} v{m.version}",
        {
            "strategy": m.strategy,
            "rows": f"{m.rows:,}",
            "buckets": f"{len(m.buckets)} non-empty of {m.bucket_function.buckets}",
            "chunks uploaded": f"{uploaded} (new in this version: {len(sealed.new_chunks)})",
            "sealed bytes": f"{m.sealed_bytes:,}",
            "manifest digest": sealed.digest,
        },
    )


def _job_common(
    peer: str, job: Path, state: Path, policy: Path, certs: Path | None, tls_name: str
) -> tuple[Any, Any, Any, bytes]:
    from atoll.island.policy import load_policy
    from atoll.service.island import IslandClient, PartyKeys

    keys = PartyKeys.load(state / "keys.json")
    rules = load_policy(policy)
    text = _read(job, "job manifest")
    client = IslandClient(peer, tls=_tls(certs, tls_name))
    return client, keys, rules, text


@app.command("release")
def release(
    peer: Annotated[str, typer.Option(help="Island URL.")],
    job: Annotated[Path, typer.Option(help="Job manifest (TOML).")],
    state: Annotated[Path, typer.Option(help="Party state folder.")],
    policy: Annotated[Path, typer.Option(help="Your attestation policy (TOML).")],
    certs: Annotated[
        Path | None, typer.Option(help="Certificate folder (atoll certs init) for mutual TLS.")
    ] = None,
    tls_name: Annotated[str, typer.Option(help="Your party name in --certs.")] = "client",
) -> None:
    """Verify the island for a job and release your dataset keys to it (exit 1 if refused)."""
    from atoll.island.verdict import AttestationError
    from atoll.service.island import describe_rejection, release_keys

    try:
        client, keys, rules, text = _job_common(peer, job, state, policy, certs, tls_name)
        with client:
            try:
                run = release_keys(client, keys, rules, text)
            except AttestationError as exc:
                out_console.print_json(json.dumps(describe_rejection(exc)))
                console.print(f"[bold red]refused, no key released:[/] {exc}")
                raise typer.Exit(code=1) from None
    except AtollError as exc:
        raise fail(exc) from None
    print_kv(
        f"job {run.job.job} ({run.job.job_id})",
        {
            "released": ", ".join(run.released) or "(no inputs of yours)",
            "still missing": ", ".join(run.status.get("missing", [])) or "none",
            "island": "SIMULATED" if any(v.simulated for v in run.verdicts) else "hardware TEE",
        },
    )


@app.command("run")
def run(
    peer: Annotated[str, typer.Option(help="Island URL.")],
    job: Annotated[Path, typer.Option(help="Job manifest (TOML).")],
    out: Annotated[Path, typer.Option(help="Folder for your decrypted results and receipts.")],
    state: Annotated[Path, typer.Option(help="Party state folder.")],
    policy: Annotated[Path, typer.Option(help="Your attestation policy (TOML).")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for other parties' keys.")] = 0.0,
    certs: Annotated[
        Path | None, typer.Option(help="Certificate folder (atoll certs init) for mutual TLS.")
    ] = None,
    tls_name: Annotated[str, typer.Option(help="Your party name in --certs.")] = "client",
) -> None:
    """Release your keys, run the job, decrypt the results sealed to you, verify receipts."""
    import pyarrow.parquet as pq

    from atoll.island.verdict import AttestationError
    from atoll.service.island import describe_rejection, run_job

    try:
        client, keys, rules, text = _job_common(peer, job, state, policy, certs, tls_name)
        with client:
            try:
                result = run_job(client, keys, rules, text, wait_seconds=wait)
            except AttestationError as exc:
                out_console.print_json(json.dumps(describe_rejection(exc)))
                console.print(f"[bold red]refused, no key released:[/] {exc}")
                raise typer.Exit(code=1) from None
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in result.results.items():
            path = out / f"{name}.parquet"
            pq.write_table(table, path)
            written.append(f"{path} ({table.num_rows:,} rows)")
        receipts = [r.to_json() for r in result.receipts]
        (out / "receipts.json").write_text(json.dumps(receipts, indent=2), encoding="utf-8")
    except OSError as exc:
        raise fail(InputError(f"cannot write results: {exc.strerror}", source=str(out))) from None
    except AtollError as exc:
        raise fail(exc) from None
    stamps = {r.stamp for r in result.sealed if r.stamp}
    print_kv(
        f"job {result.job.job} ({result.job.job_id})",
        {
            "results": "; ".join(written) or "(none addressed to you)",
            "receipts": f"{len(result.receipts)} verified → {out / 'receipts.json'}",
        },
    )
    for stamp in sorted(stamps):
        console.print(f"{_STAMP_STYLE}{stamp.upper()}[/]")
