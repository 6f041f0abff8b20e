"""The island as an HTTP service, and the party-side client that talks to it.

Why: the island runs as its own process (``atoll island serve``), reached
over TLS; brands and providers drive it from their own machines. This
module is only the edge: :func:`create_app` translates HTTP requests into
calls on :class:`atoll.island.runner.Island` (which holds every trust
decision), and :class:`IslandClient` plus the ``upload_dataset`` /
``release_keys`` / ``run_job`` helpers do the party side -- seal and upload,
verify evidence against the party's *own* policy before wrapping any key,
decrypt results, verify receipts. Foreign exceptions (httpx, FastAPI) are
mapped to :mod:`atoll.errors` once, here.

Endpoints (JSON unless noted; errors are ``{"kind", "error"}`` with 4xx/5xx)::

    GET  /island/v1/info                    measurement, TEE, stamp, receipt key
    POST /island/v1/attest                  {nonce} -> evidence bundle (no job)
    POST /island/v1/jobs                    body: job manifest TOML -> {job_id, job_hash}
    GET  /island/v1/jobs/{id}               released / missing keys, status
    POST /island/v1/jobs/{id}/attest        {nonce} -> evidence bundle for the job
    POST /island/v1/jobs/{id}/keys          {party, dataset, version, nonce, wrapped}
    POST /island/v1/jobs/{id}/run           -> outcome (sealed results, signed receipts)
    GET  /island/v1/jobs/{id}/outcome       -> outcome
    POST /island/v1/datasets                body: signed manifest (octets) -> {missing}
    PUT  /island/v1/chunks/{sha256}         body: sealed chunk (octets)

Party state (``--state DIR`` in the CLI): ``keys.json`` (0600: Ed25519
signing seed, HPKE private key, one random 32-byte key per dataset) and
``sealed/`` (a :class:`~atoll.data.envelope.SealedStore` of what the party
sealed, so the next version re-seals and re-uploads only changed buckets).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from atoll.crypto.hpke import HpkePrivateKey
from atoll.crypto.sign import SigningKey, VerifyKey
from atoll.data.datasets import BucketedDataset
from atoll.data.envelope import (
    IdFilter,
    SealedDataset,
    SealedStore,
    check_dataset_id,
    seal_dataset,
)
from atoll.data.io import iter_batches
from atoll.errors import (
    AtollError,
    ConfigError,
    CryptoError,
    DataError,
    InputError,
    IntegrityError,
    LocalProtocolError,
    ManifestError,
    ProtocolError,
    RemoteProtocolError,
    SchemaError,
)
from atoll.ids.buckets import BucketFunction
from atoll.island.keyrelease import (
    EvidenceBundle,
    new_nonce,
    sign_release,
    verify_bundle,
    wrap_dataset_key,
)
from atoll.island.policy import AttestationPolicy
from atoll.island.receipts import Receipt, UsageReceipt, verify_receipt
from atoll.island.runner import Island, JobManifest, SealedResult, open_result, parse_job
from atoll.island.verdict import AttestationError, Verdict
from atoll.service.server import serve_app
from atoll.transport.tls import TlsConfig

__all__ = [
    "IslandClient",
    "JobRun",
    "PartyKeys",
    "create_app",
    "release_keys",
    "run_job",
    "serve_island",
    "upload_dataset",
]

_MAX_CHUNK_BODY = 300 << 20
_MAX_MANIFEST_BODY = 64 << 20
_MAX_JOB_BODY = 1 << 20
_PREFIX = "/island/v1"


# --------------------------------------------------------------------------- server


def _status_of(exc: AtollError) -> int:
    if isinstance(exc, LocalProtocolError):
        return 409
    if isinstance(exc, IntegrityError | ManifestError):
        return 422
    if isinstance(exc, ProtocolError | ConfigError | InputError | CryptoError):
        return 400
    return 500


def create_app(island: Island) -> Any:
    """The FastAPI app of one island (see the module docstring)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        try:
            yield
        finally:
            island.shutdown()

    app = FastAPI(title="Atoll secure island", version="1", lifespan=lifespan)

    async def body_of(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RemoteProtocolError(f"request body over {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            raise RemoteProtocolError(f"request body over {limit} bytes")
        return body

    async def json_of(request: Request) -> dict[str, Any]:
        body = await body_of(request, 1 << 20)
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RemoteProtocolError("request body is not JSON") from None
        if not isinstance(obj, dict):
            raise RemoteProtocolError("request body must be a JSON object")
        return obj

    def b64(obj: dict[str, Any], key: str) -> bytes:
        value = obj.get(key)
        if not isinstance(value, str):
            raise RemoteProtocolError(f"field {key!r} missing or not a string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise RemoteProtocolError(f"field {key!r} is not base64") from None

    @app.exception_handler(AtollError)
    async def atoll_error(_: Request, exc: AtollError) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc), "kind": type(exc).__name__}, status_code=_status_of(exc)
        )

    @app.get(f"{_PREFIX}/info")
    def info() -> dict[str, Any]:
        return island.info()

    @app.post(f"{_PREFIX}/attest")
    async def attest(request: Request) -> dict[str, Any]:
        obj = await json_of(request)
        return island.attest(b64(obj, "nonce")).to_json()

    @app.post(f"{_PREFIX}/jobs")
    async def submit(request: Request) -> dict[str, Any]:
        job = island.submit_job(await body_of(request, _MAX_JOB_BODY))
        return {"job_id": job.job_id, "job_hash": job.digest.hex(), **island.job_status(job.job_id)}

    @app.get(f"{_PREFIX}/jobs/{{job_id}}")
    def status(job_id: str) -> dict[str, Any]:
        return island.job_status(job_id)

    @app.post(f"{_PREFIX}/jobs/{{job_id}}/attest")
    async def attest_job(job_id: str, request: Request) -> dict[str, Any]:
        obj = await json_of(request)
        return island.attest(b64(obj, "nonce"), job_id).to_json()

    @app.post(f"{_PREFIX}/jobs/{{job_id}}/keys")
    async def keys(job_id: str, request: Request) -> dict[str, Any]:
        obj = await json_of(request)
        version = obj.get("version")
        party, dataset = obj.get("party"), obj.get("dataset")
        if (
            not isinstance(version, int)
            or not isinstance(party, str)
            or not isinstance(dataset, str)
        ):
            raise RemoteProtocolError("key release needs party, dataset (strings), version (int)")
        return island.release_key(
            job_id,
            party=party,
            dataset_id=dataset,
            version=version,
            nonce=b64(obj, "nonce"),
            wrapped=b64(obj, "wrapped"),
            signature=b64(obj, "signature"),
        )

    @app.post(f"{_PREFIX}/jobs/{{job_id}}/run")
    def run(job_id: str) -> dict[str, Any]:
        return island.run(job_id).to_json()

    @app.get(f"{_PREFIX}/jobs/{{job_id}}/outcome")
    def outcome(job_id: str) -> dict[str, Any]:
        return island.outcome(job_id).to_json()

    @app.post(f"{_PREFIX}/datasets")
    async def manifest(request: Request) -> dict[str, Any]:
        signed = await body_of(request, _MAX_MANIFEST_BODY)
        parsed, missing = island.put_manifest(signed)
        return {"dataset": parsed.dataset_id, "version": parsed.version, "missing": missing}

    @app.put(f"{_PREFIX}/chunks/{{sha256}}")
    async def chunk(sha256: str, request: Request) -> dict[str, Any]:
        island.put_chunk(sha256, await body_of(request, _MAX_CHUNK_BODY))
        return {"stored": sha256}

    return app


def serve_island(
    island: Island,
    *,
    host: str = "127.0.0.1",
    port: int = 8480,
    tls: TlsConfig | None = None,
    allow_plaintext: bool = False,
) -> None:
    """Serve the island app with mutual TLS (:func:`atoll.service.server.serve_app`).

    Plain HTTP only when ``allow_plaintext`` and on loopback (development).
    The app runs without a lifespan there, so the caller burns and drops
    keys on exit (``Island.shutdown``; the CLI does it in ``finally``).
    """
    if tls is None and not allow_plaintext:
        raise ConfigError("the island serves mutual TLS: give --certs (or --plain-http)")
    serve_app(create_app(island), host, port, tls, allow_plaintext=allow_plaintext)


# --------------------------------------------------------------------------- client

_ERRORS: dict[str, Callable[[str], AtollError]] = {
    "ConfigError": ConfigError,
    "IntegrityError": IntegrityError,
    "ManifestError": ManifestError,
    "DataError": DataError,
    "CryptoError": CryptoError,
    "SchemaError": SchemaError,
    "InputError": InputError,
    "LocalProtocolError": RemoteProtocolError,
    "RemoteProtocolError": RemoteProtocolError,
}


class IslandClient:
    """A thin HTTP client of one island.

    ``tls`` is the party's mutual-TLS material (``atoll certs init``): the
    island's certificate is verified against its CA and the party presents
    its client certificate. Without ``tls`` only a plain ``http://`` URL is
    accepted (loopback development). ``http`` injects a ready
    ``httpx.Client``-compatible object instead (e.g. Starlette's
    ``TestClient`` around :func:`create_app`, to test in process).
    """

    def __init__(
        self,
        base_url: str,
        *,
        tls: TlsConfig | None = None,
        timeout: float = 600.0,
        http: Any = None,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        if http is not None:  # an httpx.Client-compatible object (in-process tests)
            self._client = http
            return
        if tls is None and not self.base_url.startswith("http://"):
            raise ConfigError(f"{base_url}: an https island needs TLS material (--certs)")
        verify: Any = tls.client_context() if tls is not None else False
        self._client = httpx.Client(base_url=self.base_url, verify=verify, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> IslandClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, f"{_PREFIX}{path}", **kwargs)
        except self._httpx.HTTPError as exc:
            raise RemoteProtocolError(f"island at {self.base_url} unreachable: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            raise RemoteProtocolError(
                f"island answered {response.status_code} with a non-JSON body"
            ) from None
        if response.status_code >= 400:
            kind = body.get("kind", "") if isinstance(body, dict) else ""
            detail = body.get("error", response.text) if isinstance(body, dict) else response.text
            make = _ERRORS.get(kind, RemoteProtocolError)
            raise make(f"island refused ({response.status_code} {kind}): {detail}")
        return body

    def info(self) -> dict[str, Any]:
        """The island's public facts."""
        return dict(self._call("GET", "/info"))

    def attest(self, nonce: bytes, job_id: str | None = None) -> EvidenceBundle:
        """Ask for evidence binding ``nonce`` (and the job, when given)."""
        path = "/attest" if job_id is None else f"/jobs/{job_id}/attest"
        body = {"nonce": base64.b64encode(nonce).decode()}
        return EvidenceBundle.from_json(self._call("POST", path, json=body))

    def submit_job(self, text: bytes) -> dict[str, Any]:
        """Register a job manifest."""
        return dict(self._call("POST", "/jobs", content=text))

    def job_status(self, job_id: str) -> dict[str, Any]:
        """Released and missing keys of a job."""
        return dict(self._call("GET", f"/jobs/{job_id}"))

    def release_key(
        self,
        job_id: str,
        *,
        party: str,
        dataset: str,
        version: int,
        nonce: bytes,
        wrapped: bytes,
        signature: bytes,
    ) -> dict[str, Any]:
        """Send a wrapped dataset key with the party's signature over the request."""
        body = {
            "party": party,
            "dataset": dataset,
            "version": version,
            "nonce": base64.b64encode(nonce).decode(),
            "wrapped": base64.b64encode(wrapped).decode(),
            "signature": base64.b64encode(signature).decode(),
        }
        return dict(self._call("POST", f"/jobs/{job_id}/keys", json=body))

    def run(self, job_id: str) -> dict[str, Any]:
        """Run the job (or fetch its outcome if it already ran)."""
        return dict(self._call("POST", f"/jobs/{job_id}/run"))

    def outcome(self, job_id: str) -> dict[str, Any]:
        """A finished job's outcome."""
        return dict(self._call("GET", f"/jobs/{job_id}/outcome"))

    def put_manifest(self, signed: bytes) -> list[str]:
        """Upload a signed manifest; returns the chunk hashes the island still lacks."""
        headers = {"content-type": "application/octet-stream"}
        body = self._call("POST", "/datasets", content=signed, headers=headers)
        return [str(h) for h in body["missing"]]

    def put_chunk(self, sha256: str, data: bytes) -> None:
        """Upload one sealed chunk."""
        headers = {"content-type": "application/octet-stream"}
        self._call("PUT", f"/chunks/{sha256}", content=data, headers=headers)


# --------------------------------------------------------------------------- party side


@dataclass
class PartyKeys:
    """A party's keys: manifest signing, result decryption, one key per dataset."""

    party: str
    signing: SigningKey
    hpke: HpkePrivateKey
    dataset_keys: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def generate(cls, party: str) -> PartyKeys:
        """Fresh keys for ``party``."""
        if not party or not party.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"party name {party!r} must be letters, digits, '-' or '_'")
        return cls(party, SigningKey.generate(), HpkePrivateKey.generate())

    def dataset_key(self, dataset_id: str, *, create: bool = False) -> bytes:
        """The key of ``dataset_id`` (a fresh random one with ``create``)."""
        check_dataset_id(dataset_id)
        if dataset_id not in self.dataset_keys:
            if not create:
                raise ConfigError(f"party {self.party} holds no key for dataset {dataset_id!r}")
            self.dataset_keys[dataset_id] = os.urandom(32)
        return self.dataset_keys[dataset_id]

    def public(self) -> dict[str, str]:
        """What goes into job manifests: the signing key and the HPKE public key (base64)."""
        return {
            "party": self.party,
            "signing_key": self.signing.verify_key.to_text(),
            "public_key": base64.b64encode(self.hpke.public_bytes).decode(),
        }

    def save(self, path: Path) -> None:
        """Write the key file with 0600 permissions (atomically)."""
        doc = {
            "atoll_party_keys": 1,
            "party": self.party,
            "signing_seed": base64.b64encode(self.signing.seed_bytes()).decode(),
            "hpke_private": base64.b64encode(self.hpke.private_bytes()).decode(),
            "dataset_keys": {k: base64.b64encode(v).decode() for k, v in self.dataset_keys.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PartyKeys:
        """Read a key file written by :meth:`save`."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no party keys (run `atoll island keygen` first)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable party keys ({exc})") from None
        if not isinstance(doc, dict) or doc.get("atoll_party_keys") != 1:
            raise ConfigError(f"{path}: not an Atoll party key file")
        try:
            return cls(
                party=str(doc["party"]),
                signing=SigningKey(base64.b64decode(doc["signing_seed"], validate=True)),
                hpke=HpkePrivateKey.from_bytes(
                    base64.b64decode(doc["hpke_private"], validate=True)
                ),
                dataset_keys={
                    str(k): base64.b64decode(v, validate=True)
                    for k, v in dict(doc.get("dataset_keys", {})).items()
                },
            )
        except (KeyError, TypeError, ValueError, binascii.Error, CryptoError) as exc:
            raise ConfigError(f"{path}: malformed party key file ({exc})") from None


def upload_dataset(
    client: IslandClient,
    keys: PartyKeys,
    state: SealedStore,
    *,
    dataset_id: str,
    input_path: Path,
    id_column: str,
    strategy: str = "bucketed",
    buckets: int = 64,
    salt: bytes | None = None,
    id_filter: IdFilter | None = None,
    id_kind: str | None = None,
    chunk_bytes: int = 4 << 20,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[SealedDataset, int]:
    """Seal a CSV/Parquet file as the next version of ``dataset_id`` and upload what is missing.

    Returns the sealed dataset and the number of chunks uploaded (an
    incremental version uploads only the chunks of changed buckets). The
    plaintext is bucketed in a temporary folder on the party's own machine.
    """
    if strategy not in ("full", "bucketed", "filter"):
        raise ConfigError(f"--strategy must be full, bucketed or filter (got {strategy!r})")
    if (strategy == "filter") != (id_filter is not None):
        raise ConfigError("strategy 'filter' needs a filter request (--filter-request)")
    fn = BucketFunction(1 if strategy == "full" else buckets, *([salt] if salt else []))
    versions = state.versions(dataset_id)
    previous = state.manifest(dataset_id, versions[-1]) if versions else None
    source = str(input_path)

    def batches() -> Iterator[pa.Table]:
        kept = seen = 0
        for batch in iter_batches(input_path):
            table = pa.Table.from_batches([batch])
            seen += table.num_rows
            if id_filter is not None:
                if id_column not in table.schema.names:
                    raise SchemaError("id column not found", source=source, column=id_column)
                table = table.filter(pa.array(id_filter.mask(table.column(id_column))))
            kept += table.num_rows
            if progress is not None:
                progress("reading", seen, -1)
            yield table

    with tempfile.TemporaryDirectory(prefix="atoll-upload-") as tmp:
        plain = BucketedDataset.write(
            batches(), Path(tmp) / "plain", id_column=id_column, buckets=fn, source=source
        )
        sealed = seal_dataset(
            plain.iter_buckets(),
            dataset_id=dataset_id,
            version=1 if previous is None else previous[0].version + 1,
            dataset_key=keys.dataset_key(dataset_id, create=True),
            signing_key=keys.signing,
            schema=plain.schema,
            id_column=id_column,
            bucket_function=fn,
            store=state,
            id_kind=id_kind,
            strategy=strategy,
            id_filter=id_filter,
            previous=previous,
            chunk_bytes=chunk_bytes,
        )
    state.put_manifest(sealed.signed)
    missing = client.put_manifest(sealed.signed)
    for index, digest in enumerate(missing):
        client.put_chunk(digest, state.get_chunk(digest))
        if progress is not None:
            progress("uploading chunks", index + 1, len(missing))
    return sealed, len(missing)


@dataclass
class JobRun:
    """What a party got from a job: verdicts, its decrypted results, verified receipts."""

    job: JobManifest
    verdicts: list[Verdict]
    released: list[str]
    status: dict[str, Any]
    results: dict[str, pa.Table] = field(default_factory=dict)
    sealed: list[SealedResult] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    receipt_key: VerifyKey | None = None
    outcome: dict[str, Any] | None = None


def release_keys(
    client: IslandClient,
    keys: PartyKeys,
    policy: AttestationPolicy,
    job_text: bytes,
) -> JobRun:
    """Submit the job, verify the island per input we own, and release our dataset keys.

    Every release uses a fresh nonce and its own verification: if the
    evidence does not satisfy *our* policy (wrong measurement, simulated
    under a strict policy, stale nonce, another job), an
    :class:`~atoll.island.verdict.AttestationError` is raised and no key
    leaves this process.
    """
    job = parse_job(job_text)
    answer = client.submit_job(job_text)
    if answer.get("job_hash") != job.digest.hex():
        raise RemoteProtocolError("the island hashed the job manifest differently")
    verdicts: list[Verdict] = []
    released: list[str] = []
    receipt_key: VerifyKey | None = None
    status: dict[str, Any] = answer
    mine = [spec for spec in job.inputs if spec.party == keys.party]
    for spec in mine:
        nonce = new_nonce()
        bundle = client.attest(nonce, job.job_id)
        verdicts.append(verify_bundle(bundle, policy, nonce=nonce, job_hash=job.digest))
        receipt_key = VerifyKey(bundle.receipt_key)
        wrapped = wrap_dataset_key(
            bundle,
            keys.dataset_key(spec.dataset),
            party=keys.party,
            dataset_id=spec.dataset,
            version=spec.version,
        )
        signature = sign_release(
            keys.signing,
            job_hash=job.digest,
            nonce=nonce,
            party=keys.party,
            dataset_id=spec.dataset,
            version=spec.version,
            wrapped=wrapped,
        )
        status = client.release_key(
            job.job_id,
            party=keys.party,
            dataset=spec.dataset,
            version=spec.version,
            nonce=nonce,
            wrapped=wrapped,
            signature=signature,
        )
        released.append(f"{spec.dataset} v{spec.version}")
    if receipt_key is None:
        nonce = new_nonce()
        bundle = client.attest(nonce, job.job_id)
        verdicts.append(verify_bundle(bundle, policy, nonce=nonce, job_hash=job.digest))
        receipt_key = VerifyKey(bundle.receipt_key)
    return JobRun(job, verdicts, released, status, receipt_key=receipt_key)


def run_job(
    client: IslandClient,
    keys: PartyKeys,
    policy: AttestationPolicy,
    job_text: bytes,
    *,
    wait_seconds: float = 0.0,
    poll: float = 0.5,
) -> JobRun:
    """Release our keys, wait for the others', run, decrypt our results, verify receipts."""
    run = release_keys(client, keys, policy, job_text)
    deadline = time.monotonic() + wait_seconds
    status = run.status
    while status.get("missing") and status.get("status") == "waiting-for-keys":
        if time.monotonic() >= deadline:
            raise LocalProtocolError(
                f"job {run.job.job_id} still waits for keys: {', '.join(status['missing'])}"
            )
        time.sleep(poll)
        status = client.job_status(run.job.job_id)
    outcome = client.run(run.job.job_id)
    run.outcome = outcome
    if run.receipt_key is None:
        raise LocalProtocolError("no attested receipt key")
    for name in ("usage_receipt", "deletion_receipt"):
        blob = outcome.get(name)
        if blob is not None:
            run.receipts.append(verify_receipt(base64.b64decode(blob), run.receipt_key))
    if outcome.get("status") != "done":
        raise DataError(f"the island job failed: {outcome.get('error')}")
    usage = next((r for r in run.receipts if isinstance(r, UsageReceipt)), None)
    if usage is None or usage.job_hash != run.job.digest.hex():
        raise IntegrityError("no signed usage receipt for this job: results cannot be trusted")
    for raw in outcome.get("results", []):
        result = SealedResult.from_json(raw)
        if usage.result_digests.get(result.output) != result.digest:
            raise IntegrityError(
                f"result {result.output!r} is not the one the island's signed receipt lists"
            )
        run.sealed.append(result)
        if result.recipient == keys.party:
            run.results[result.output] = open_result(result, keys.hpke, job_digest=run.job.digest)
    return run


def describe_rejection(exc: AttestationError) -> dict[str, Any]:
    """A JSON-ready description of a refused attestation (for ``atoll island attest``)."""
    return {"accepted": False, "stage": exc.stage, "field": exc.field, "reason": exc.reason}
