"""``atoll query``: the covert query (隐匿查询) from the command line.

Why: the provider runs ``atoll query serve`` next to its label database; the
brand runs ``atoll query ask`` on its front-end machine (or ``atoll query
local`` to try both sides in one process); the provider's finance team runs
``atoll query receipts`` to bill each client from the verified ledger. The
commands only parse options, call :mod:`atoll.service.covert` /
:mod:`atoll.transport.covert_client` and render.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from atoll.cli._common import console, fail, out_console, print_kv
from atoll.errors import AtollError, ConfigError, CryptoError, InputError

app = typer.Typer(
    help="Covert query (隐匿查询): look up labels without revealing which ID was asked.",
    no_args_is_help=True,
)

_STATUS_INVALID = "invalid_id"


@contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        yield progress


def _labels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [x.strip() for x in value.split(",") if x.strip()]
    if not names:
        raise ConfigError("--labels needs at least one column name")
    return names


def _modes(value: str) -> tuple[Any, ...]:
    from atoll.protocols.covert import Mode

    return tuple(Mode.parse(x) for x in value.split(",") if x.strip())


def _fingerprint(db: Path, **options: Any) -> dict[str, Any]:
    st = db.stat()
    return {"db": str(db.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, **options}


def _provider_state(
    db: Path,
    state_dir: Path,
    *,
    id_column: str,
    labels: list[str] | None,
    id_type: str | None,
    modes: tuple[Any, ...],
    n: int,
    rsa_bits: int,
    name: str,
    executor: str,
    progress: Progress,
) -> Any:
    """Build (or reuse) the index in ``state_dir/index`` and open the provider state."""
    from atoll.protocols.covert import Mode
    from atoll.service.covert import ProviderConfig, ProviderState, build_index, load_index

    index_dir = state_dir / "index"
    stamp = state_dir / "index.source.json"
    want_bucket = Mode.BUCKET in modes
    wanted = _fingerprint(
        db, id_column=id_column, labels=labels, id_type=id_type, bucket=want_bucket, n=n
    )
    reuse = (
        stamp.exists()
        and (index_dir / "meta.json").exists()
        and json.loads(stamp.read_text(encoding="utf-8")) == wanted
    )
    if not reuse:
        tasks: dict[str, Any] = {}

        def step(name_: str, done: int, total: int) -> None:
            if name_ not in tasks:
                tasks[name_] = progress.add_task(name_, total=total or None)
            progress.update(tasks[name_], completed=done, total=total or None)

        state_dir.mkdir(parents=True, exist_ok=True)
        build_index(
            db, index_dir, id_column=id_column, labels=labels, id_type=id_type,
            bucket_target=n, with_bucket=want_bucket, executor=executor, progress=step,
        )  # fmt: skip
        stamp.write_text(json.dumps(wanted), encoding="utf-8")
    index = load_index(index_dir)
    rsa_task = progress.add_task("RSA key pool", total=None) if Mode.RSA in modes else None

    def rsa_step(done: int, total: int) -> None:
        if rsa_task is not None:
            progress.update(rsa_task, completed=done, total=total)

    config = ProviderConfig(
        modes=modes, max_n=max(4 * n, 16), rsa_pool_size=max(2 * n, 8), rsa_bits=rsa_bits,
        name=name,
    )  # fmt: skip
    return ProviderState(index, state_dir, config, rsa_progress=rsa_step)


def _read_ids(
    path: Path, id_column: str, id_type: str | None
) -> tuple[list[str | None], list[str | None]]:
    """``(raw ids as given, normalized ids or None where invalid)``."""
    from atoll.data.io import iter_batches
    from atoll.ids.normalize import normalize_array

    raw: list[str | None] = []
    norm: list[str | None] = []
    offset = 0
    for batch in iter_batches(path):
        if id_column not in batch.schema.names:
            raise InputError(f"no column {id_column!r}", source=str(path))
        column = batch.column(id_column)
        values = column.cast(pa.string()).to_pylist()
        raw.extend(values)
        if id_type:
            result = normalize_array(
                column, id_type, source=str(path), column=id_column, row_offset=offset
            )
            pairs = zip(result.values.to_pylist(), result.valid.to_pylist(), strict=True)
            norm.extend(v if ok else None for v, ok in pairs)
        else:
            norm.extend(v.strip() if v and v.strip() else None for v in values)
        offset += batch.num_rows
    return raw, norm


def _decoys(amplify: str, decoys: Path | None, id_column: str, id_type: str | None) -> Any:
    from atoll.protocols.covert_source import LibraryDecoys, PhoneDecoys

    if amplify != "decoy":
        return None
    if decoys is not None:
        _, library = _read_ids(decoys, id_column, id_type)
        ids = tuple(dict.fromkeys(x for x in library if x))
        if not ids:
            raise InputError("the ID master library has no valid IDs", source=str(decoys))
        return LibraryDecoys(ids)
    if id_type and id_type.startswith("phone"):
        console.print(
            "[yellow]warning:[/] decoys are random valid CN mobile numbers; most will miss the "
            "provider's database, so the k_min rule will usually refuse to buy. Pass --decoys "
            "with an ID master library from your own population."
        )
        return PhoneDecoys()
    raise ConfigError("decoy amplification needs --decoys FILE (an ID master library)")


def _write_answers(
    out: Path, raw: Sequence[str | None], norm: Sequence[str | None], answers: list[Any],
    labels: Sequence[str],
) -> dict[str, int]:  # fmt: skip
    from atoll.data.io import write_table

    by_id = {a.id: a for a in answers}
    status, ns, ms = [], [], []
    columns: list[list[Any]] = [[] for _ in labels]
    counts: dict[str, int] = {}
    for x in norm:
        answer = by_id.get(x) if x is not None else None
        st = answer.status if answer is not None else _STATUS_INVALID
        counts[st] = counts.get(st, 0) + 1
        status.append(st)
        ns.append(answer.n if answer is not None else None)
        ms.append(answer.m if answer is not None else None)
        values = answer.values if answer is not None and answer.values is not None else None
        for i, column in enumerate(columns):
            column.append(values[i] if values is not None else None)
    arrays: dict[str, pa.Array] = {
        "id": pa.array(list(raw), type=pa.string()),
        "status": pa.array(status, type=pa.string()),
        "n": pa.array(ns, type=pa.int64()),
        "m": pa.array(ms, type=pa.int64()),
    }
    for name, column in zip(labels, columns, strict=True):
        try:
            arrays[name] = pa.array(column)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False) for v in column]
            )
    write_table(pa.table(arrays), out, fmt="csv" if out.suffix in {".csv", ".tsv"} else None)
    return counts


def _print_counts(title: str, counts: dict[str, int], extra: dict[str, Any]) -> None:
    rows = {f"status {k}": f"{v:,}" for k, v in sorted(counts.items())}
    print_kv(title, {**rows, **extra})


def _print_bills(report: Any) -> None:
    table = Table(title=f"billing statement · provider {report.provider!r}")
    for col in ("client", "released keys (billed)", "by mode", "Σ N", "Σ hits m", "first", "last"):
        table.add_column(col)
    for bill in sorted(report.bills.values(), key=lambda b: b.client):
        table.add_row(
            bill.client,
            f"{bill.queries:,}",
            ", ".join(f"{k}:{v}" for k, v in sorted(bill.by_mode.items())),
            f"{bill.total_n:,}",
            f"{bill.total_m:,}",
            bill.first,
            bill.last,
        )
    pinned = "pinned key" if report.key_pinned else "key from the ledger's genesis line"
    table.caption = (
        f"{report.lines - 1:,} usage lines; hash chain and every receipt signature verified "
        f"({pinned}: {report.public_key.to_text()})"
    )
    out_console.print(table)


ModeOpt = Annotated[str, typer.Option("--mode", help="rsa, ec or bucket.")]
NOpt = Annotated[int, typer.Option("--n", min=1, max=65536, help="Anonymity target N.")]
KOpt = Annotated[int, typer.Option("--k-min", min=1, help="Buy a key only with >= k hits.")]
AmpOpt = Annotated[
    str, typer.Option("--amplify", help="prefix (hash truncation) or decoy (ID master library).")
]
CertsOpt = Annotated[
    Path | None,
    typer.Option(help="Certificate folder from `atoll certs init` (mutual TLS)."),
]
PartyOpt = Annotated[str, typer.Option(help="Your party name in the certificate folder.")]
TypeOpt = Annotated[
    str | None, typer.Option("--id-type", help="Normalize IDs as this kind (phone, imei, …).")
]


@app.command()
def serve(
    db: Annotated[Path, typer.Option(help="Label database (CSV or Parquet).")],
    id_column: Annotated[str, typer.Option(help="Identifier column.")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")],
    labels: Annotated[str | None, typer.Option(help="Label columns, comma-separated.")] = None,
    mode: Annotated[str, typer.Option(help="Modes to serve (comma list).")] = "rsa,ec,bucket",
    n: NOpt = 100,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    state: Annotated[Path, typer.Option(help="State directory.")] = Path(".atoll-query"),
    id_type: TypeOpt = None,
    rsa_bits: Annotated[int, typer.Option(help="RSA modulus size.")] = 2048,
    name: Annotated[str, typer.Option(help="Provider name on receipts.")] = "provider",
    executor: Annotated[
        str, typer.Option(help="Executor for the index build (inline, local, ray).")
    ] = "local",
    certs: CertsOpt = None,
    party: PartyOpt = "provider",
) -> None:
    """Serve covert queries over the label database (index built once, then reused)."""
    from atoll.service.covert import ProviderService
    from atoll.service.covert import serve as serve_http
    from atoll.transport.tls import PartyFiles

    try:
        with _progress() as progress:
            provider = _provider_state(
                db, state, id_column=id_column, labels=_labels(labels), id_type=id_type,
                modes=_modes(mode), n=n, rsa_bits=rsa_bits, name=name, executor=executor,
                progress=progress,
            )  # fmt: skip
        tls = PartyFiles(certs, party).server_tls() if certs is not None else None
        info = provider.info()
        print_kv(
            "covert query provider",
            {
                "listening": f"{'https' if tls else 'http'}://{host}:{port}/covert/v1",
                "rows": f"{info['rows']:,}",
                "labels": ", ".join(info["labels"]),
                "modes": ", ".join(info["modes"]),
                "bucket bits": info["bucket_bits"],
                "RSA pool": f"{info['max_group_rsa']} keys × {info['rsa_bits']} bits",
                "receipt key": info["signing_key"],
                "ledger": provider.ledger.path,
            },
        )
        service = ProviderService(provider)
        try:
            serve_http(service, host=host, port=port, tls=tls)
        finally:
            service.close()
    except AtollError as exc:
        raise fail(exc) from None


@app.command()
def ask(
    ids: Annotated[Path, typer.Option(help="IDs to look up (CSV or Parquet).")],
    id_column: Annotated[str, typer.Option(help="Identifier column.")],
    peer: Annotated[str, typer.Option(help="Provider URL, e.g. https://host:8470")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")],
    mode: ModeOpt = "ec",
    n: NOpt = 100,
    k_min: KOpt = 3,
    batch: Annotated[str, typer.Option(help="single, micro or async.")] = "micro",
    amplify: AmpOpt = "prefix",
    decoys: Annotated[Path | None, typer.Option(help="ID master library for decoys.")] = None,
    id_type: TypeOpt = None,
    client: Annotated[str, typer.Option(help="Client name on receipts.")] = "client",
    micro_size: Annotated[int, typer.Option(min=1, help="IDs per micro-batch.")] = 256,
    certs: CertsOpt = None,
    party: PartyOpt = "brand",
    receipts: Annotated[Path | None, typer.Option(help="Write usage receipts (JSONL).")] = None,
) -> None:
    """Ask a provider covertly; --out gets one row per ID (labels empty where none)."""
    from atoll.protocols.covert import Amplify, Mode
    from atoll.transport.covert_client import CovertHttpClient
    from atoll.transport.tls import PartyFiles

    try:
        raw, norm = _read_ids(ids, id_column, id_type)
        source = _decoys(amplify, decoys, id_column, id_type)
        valid = [x for x in norm if x is not None]
        verify: Any = True
        if certs is not None:
            verify = PartyFiles(certs, party).client_tls().client_context()
        with CovertHttpClient(peer, client_name=client, verify=verify) as http:
            info = http.info()
            with _progress() as progress:
                task = progress.add_task(f"covert query ({mode}, {batch})", total=len(valid))
                answers = http.query(
                    valid, mode=Mode.parse(mode), amplify=Amplify.parse(amplify), n=n,
                    k_min=k_min, batch=batch, micro_size=micro_size, decoys=source,
                    progress=lambda d, t: progress.update(task, completed=d, total=t),
                )  # fmt: skip
        counts = _write_answers(out, raw, norm, answers, info.labels)
        if receipts is not None:
            _write_receipts(receipts, answers)
    except AtollError as exc:
        raise fail(exc) from None
    _print_counts(f"covert query → {out}", counts, {"provider": info.provider})


def _write_receipts(path: Path, answers: list[Any]) -> None:
    import base64

    with open(path, "w", encoding="utf-8") as handle:
        for a in answers:
            if a.receipt:
                receipt = base64.b64encode(a.receipt).decode()
                handle.write(json.dumps({"v": 1, "receipt": receipt}) + "\n")


@app.command()
def local(
    db: Annotated[Path, typer.Option(help="Provider's label database (CSV or Parquet).")],
    ids: Annotated[Path, typer.Option(help="Client's IDs (CSV or Parquet).")],
    id_column: Annotated[str, typer.Option(help="Identifier column (both files).")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")],
    labels: Annotated[str | None, typer.Option(help="Label columns, comma-separated.")] = None,
    mode: ModeOpt = "ec",
    n: NOpt = 100,
    k_min: KOpt = 3,
    amplify: AmpOpt = "prefix",
    decoys: Annotated[Path | None, typer.Option(help="ID master library for decoys.")] = None,
    id_type: TypeOpt = None,
    db_id_column: Annotated[
        str | None, typer.Option(help="ID column of --db if it differs.")
    ] = None,
    state: Annotated[
        Path | None, typer.Option(help="Provider state dir (default: <out>.provider/).")
    ] = None,
    rsa_bits: Annotated[int, typer.Option(help="RSA modulus size.")] = 2048,
    micro_size: Annotated[int, typer.Option(min=1, help="IDs per micro-batch.")] = 256,
) -> None:
    """Run both sides in one process (through the real wire codec) and bill into a ledger."""
    from atoll.control.metering import verify_ledger
    from atoll.protocols.covert import Amplify, Mode
    from atoll.service.covert import run_local

    state_dir = state or out.with_name(out.name + ".provider")
    try:
        mode_ = Mode.parse(mode)
        with _progress() as progress:
            provider = _provider_state(
                db, state_dir, id_column=db_id_column or id_column, labels=_labels(labels),
                id_type=id_type, modes=(mode_,), n=n, rsa_bits=rsa_bits, name="provider",
                executor="inline", progress=progress,
            )  # fmt: skip
            raw, norm = _read_ids(ids, id_column, id_type)
            source = _decoys(amplify, decoys, id_column, id_type)
            valid = [x for x in norm if x is not None]
            task = progress.add_task(f"covert query ({mode_.label})", total=len(valid))
            run = run_local(
                provider, valid, mode=mode_, amplify=Amplify.parse(amplify), n=n, k_min=k_min,
                decoys=source, batch_size=micro_size,
                progress=lambda d, t: progress.update(task, completed=d, total=t),
            )  # fmt: skip
        counts = _write_answers(out, raw, norm, run.answers, provider.index.source.codec.labels)
        report = verify_ledger(provider.ledger.path, provider.signing_key.verify_key)
    except AtollError as exc:
        raise fail(exc) from None
    _print_counts(
        f"covert query ({mode_.label}) → {out}",
        counts,
        {
            "bytes client→provider": f"{run.bytes_client_to_provider:,}",
            "bytes provider→client": f"{run.bytes_provider_to_client:,}",
            "batches": run.batches,
            "seconds": f"{run.seconds:.2f}",
            "ledger": provider.ledger.path,
        },
    )
    _print_bills(report)


@app.command()
def receipts(
    ledger: Annotated[Path, typer.Option(help="The provider's ledger.jsonl.")],
    public_key: Annotated[
        Path | None, typer.Option(help="Provider's receipt key (provider.pub) to pin.")
    ] = None,
) -> None:
    """Verify the ledger's hash chain and every receipt signature; print billing per client."""
    from atoll.control.metering import verify_ledger
    from atoll.crypto.sign import VerifyKey

    try:
        key = None
        if public_key is not None:
            try:
                key = VerifyKey.from_text(public_key.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"{public_key}: {exc}") from exc
            except CryptoError as exc:
                raise ConfigError(f"{public_key}: {exc}") from exc
        report = verify_ledger(ledger, key)
    except AtollError as exc:
        raise fail(exc) from None
    _print_bills(report)
