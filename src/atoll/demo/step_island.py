"""Demo step 7: the secure island round trip, as the brand and the provider would run it.

Why: the seed's second way to keep data private (``../shared/seed/README.md``
§7–8) is a trusted execution environment between the parties. This step runs
it end to end on the demo world with the same library calls the
``atoll island`` commands make (:mod:`atoll.service.island`), against the
real island service over mutual TLS on loopback:

1. **Set-up, each party on its own**: a certificate folder for mutual TLS
   (island, brand, provider); each party's keys (manifest signing, result
   decryption, one random key per dataset); each party's attestation policy,
   pinning the island measurement *recomputed from the party's own copy of the
   code* (:func:`atoll.service.island_local.expected_measurement`), not the
   one the island announces.
2. **The island** is served from a background thread of this process
   (:func:`atoll.service.island_local.local_island`: the FastAPI app under
   uvicorn, HTTPS with client certificates, simulated backend). It is always
   stopped and burned when the step leaves, also on error. In production it
   is its own process (``atoll island serve``) on hardware.
3. **Attestation**: the brand sends a fresh nonce and verifies the evidence
   under its policy (``allow_simulated = true``: accepted, with the warning);
   the *same evidence* is refused by the strict policy (simulated not
   allowed) and by a policy pinning another island build. The provider's
   attempt to release its key under the strict policy is refused before any
   key leaves it (the island holds none afterwards).
4. **Sealed, bucketed upload**: the brand uploads its members (member id and
   phone only), the provider its device universe with tags (devices without
   a phone cannot match on phone and are counted, not uploaded), both with the
   collaboration's bucket function; every chunk AES-256-GCM sealed under the
   party's dataset key, manifests signed.
5. **Job**: a ``tag_augmentation`` job on phone (the match plus the
   provider's tags), with two outputs sealed to the brand: the member-level
   tags (the contract sets ``row_level = true``) and the tag summary through
   the k-threshold guard. Each party verifies the island for the job and
   HPKE-wraps its dataset key to the attested key; the brand runs the job,
   decrypts its results and verifies the signed usage and deletion receipts
   with the attested receipt key.
6. **A second job, ``persona``**, on the same sealed inputs: the matched
   members' persona against the uploaded universe, computed inside and
   released as guarded counts (the provider releases its key again: a key
   is released per job). The brand derives TGI from the released counts and
   checks them against the plain persona of the same tables.
7. **Checks** (the step fails with :class:`~atoll.errors.IntegrityError` if
   any does not hold): the island's persona counts equal the plain persona
   of the same tables under the same guard; the island's matched count equals the labeled-PSI
   result the brand already holds (:func:`atoll.demo.shared.matched_members`),
   the same members, and each member's labeled-PSI tags are among the
   island's rows for it; the island's temp area is empty after the job (on
   disk, and per the signed deletion receipt) and after shutdown; every
   result, receipt and verdict carries the stamp
   "simulated — no hardware protection".

Outputs under ``ctx.folder("island")``: ``certs/``; ``brand/`` and
``provider/`` (each party's input file, ``keys.json`` (0600), policies and
sealed store); ``job.toml``; ``island/`` (the island's sealed store; its
``private/`` temp area is empty); ``brand/results/`` (``member-tags.parquet``,
``tag-summary.parquet``, ``receipts.json``); ``attestation.json`` (the
verdict and the refusals). Artifact left: ``ctx.artifacts["island"]`` (the
:class:`IslandDemoResult`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atoll.analytics.persona import PersonaConfig, persona, persona_statistics
from atoll.data.envelope import SealedDataset, SealedStore
from atoll.demo.context import DemoContext
from atoll.demo.shared import TAG_COLUMNS, matched_members
from atoll.errors import IntegrityError
from atoll.island.evidence.simulated import SIMULATED_STAMP
from atoll.island.keyrelease import new_nonce, verify_bundle
from atoll.island.policy import AttestationPolicy, load_policy
from atoll.island.receipts import DeletionReceipt, UsageReceipt
from atoll.island.runner import parse_job
from atoll.island.verdict import AttestationError, Verdict
from atoll.privacy.guard import SUPPRESSED_COLUMN, Guard, PrivacyPolicy
from atoll.service.island import (
    JobRun,
    PartyKeys,
    release_keys,
    run_job,
    upload_dataset,
)
from atoll.service.island_local import (
    LocalIsland,
    expected_measurement,
    local_island,
    simulated_policy_toml,
)
from atoll.transport.tls import PartyFiles, TlsConfig, init_certs

__all__ = ["MIN_CELL_SIZE", "IslandDemoResult", "Upload", "island_job_toml", "run"]

#: k of the tag summary's output guard (cells below it are withheld with their reason).
MIN_CELL_SIZE = 10
#: A list-valued provider tag shipped too (the island flattens it per value).
_LIST_TAG = "interests"
_BRAND_DATASET = "brand-members"
_PROVIDER_DATASET = "provider-universe"
_ROWS_OUTPUT = "member-tags"
_SUMMARY_OUTPUT = "tag-summary"
_PERSONA_OUTPUT = "member-persona"
_MB = 1_000_000


@dataclass(frozen=True)
class Upload:
    """One party's sealed upload, as the party measured it."""

    party: str
    dataset: str
    version: int
    rows: int
    plain_bytes: int
    sealed_bytes: int
    buckets: int
    chunks_sent: int
    seconds: float
    not_uploaded: int = 0

    @property
    def mb_per_s(self) -> float:
        """Plaintext (Arrow) megabytes per second through bucketing, sealing and HTTPS."""
        return self.plain_bytes / _MB / max(self.seconds, 1e-9)


@dataclass
class IslandDemoResult:
    """What the step established (kept in ``ctx.artifacts["island"]``)."""

    measurement: str
    verdict: Verdict
    refusals: dict[str, str]
    uploads: list[Upload]
    run: JobRun
    matched_island: int
    matched_psi: int
    tags_agree: int
    release_seconds: float
    job_seconds: float
    temp_area_empty_after_job: bool
    temp_area_empty_after_shutdown: bool
    url: str
    persona: pa.Table | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def usage(self) -> UsageReceipt:
        """The verified usage receipt."""
        return next(r for r in self.run.receipts if isinstance(r, UsageReceipt))

    @property
    def deletion(self) -> DeletionReceipt:
        """The verified deletion receipt."""
        return next(r for r in self.run.receipts if isinstance(r, DeletionReceipt))


def _job_toml(
    brand: dict[str, str],
    provider: dict[str, str],
    *,
    job: str,
    computation: str,
    brand_version: int,
    provider_version: int,
    params: str,
    outputs: list[tuple[str, bool]],
    min_cell_size: int,
) -> bytes:
    """A manifest of the demo's two parties: brand members × provider universe on phone.

    ``brand`` / ``provider`` are :meth:`PartyKeys.public` of each party (the
    manifest pins their signing keys; results are sealed to the brand's
    HPKE public key); ``outputs`` are ``(name, row_level)`` pairs, all to
    the brand.
    """
    sealed_to_brand = "".join(
        f'[[outputs]]\nname = "{name}"\nrecipient = "brand"\n'
        f'public_key = "{brand["public_key"]}"\nrow_level = {str(row_level).lower()}\n'
        for name, row_level in outputs
    )
    return (
        f'version = 1\njob = "{job}"\ncomputation = "{computation}"\n\n'
        f'[parties.brand]\nsigning_key = "{brand["signing_key"]}"\n'
        f'[parties.provider]\nsigning_key = "{provider["signing_key"]}"\n\n'
        f'[[inputs]]\nname = "seed"\nparty = "brand"\ndataset = "{_BRAND_DATASET}"\n'
        f"version = {brand_version}\n"
        f'[[inputs]]\nname = "universe"\nparty = "provider"\ndataset = "{_PROVIDER_DATASET}"\n'
        f"version = {provider_version}\n\n"
        '[match]\nleft = "seed"\nright = "universe"\n'
        '[[match.steps]]\nleft = "phone"\nright = "phone"\n\n'
        f"{params}"
        f"{sealed_to_brand}\n"
        f"[guards]\nmin_cell_size = {min_cell_size}\n"
    ).encode()


def island_job_toml(
    brand: dict[str, str],
    provider: dict[str, str],
    *,
    brand_version: int,
    provider_version: int,
    tag_columns: list[str],
    min_cell_size: int = MIN_CELL_SIZE,
    job: str = "demo-brand-x-provider-tags",
) -> bytes:
    """The job manifest both parties agree on: tag augmentation on phone, two brand outputs."""
    tags = ", ".join(json.dumps(t) for t in tag_columns)
    return _job_toml(
        brand,
        provider,
        job=job,
        computation="tag_augmentation",
        brand_version=brand_version,
        provider_version=provider_version,
        params=f'[params]\ntag_columns = [{tags}]\nkey_column = "member_id"\n\n',
        outputs=[(_ROWS_OUTPUT, True), (_SUMMARY_OUTPUT, False)],
        min_cell_size=min_cell_size,
    )


def persona_job_toml(
    brand: dict[str, str],
    provider: dict[str, str],
    *,
    brand_version: int,
    provider_version: int,
    min_cell_size: int = MIN_CELL_SIZE,
) -> bytes:
    """The second job: the persona of the matched members against the uploaded universe."""
    return _job_toml(
        brand,
        provider,
        job="demo-member-persona",
        computation="persona",
        brand_version=brand_version,
        provider_version=provider_version,
        params="",
        outputs=[(_PERSONA_OUTPUT, False)],
        min_cell_size=min_cell_size,
    )


def _check_persona(released: pa.Table, brand: pa.Table, provider: pa.Table) -> None:
    """The island's persona counts must equal the plain persona of the same tables."""
    plain = persona(
        brand["phone"],
        provider,
        id_column="phone",
        guard=Guard(PrivacyPolicy(min_cell_size=MIN_CELL_SIZE)),
    )
    cols = ["dimension", "value", "target_count", "base_count", SUPPRESSED_COLUMN]
    if released.select(cols).to_pylist() != plain.guarded.table.select(cols).to_pylist():
        raise IntegrityError("the island's persona differs from the plain persona of its inputs")


# --------------------------------------------------------------------------- the parties


@dataclass
class _Party:
    name: str
    folder: Path
    keys: PartyKeys
    policy: AttestationPolicy
    strict: AttestationPolicy
    tls: TlsConfig

    @property
    def store(self) -> SealedStore:
        return SealedStore(self.folder / "sealed")


def _party(name: str, folder: Path, certs: Path, measurement: str) -> _Party:
    """A party's own set-up: keys (saved 0600), its policy and the strict variant."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = PartyKeys.generate(name)
    keys.save(folder / "keys.json")
    policy_path = folder / "policy.toml"
    policy_path.write_text(simulated_policy_toml(measurement), encoding="utf-8")
    strict_path = folder / "strict-policy.toml"
    strict_path.write_text(
        simulated_policy_toml(measurement, allow_simulated=False), encoding="utf-8"
    )
    return _Party(
        name,
        folder,
        keys,
        load_policy(policy_path),
        load_policy(strict_path),
        PartyFiles(certs, name).client_tls(),
    )


def _upload(
    ctx: DemoContext,
    served: LocalIsland,
    party: _Party,
    dataset: str,
    table: pa.Table,
    *,
    not_uploaded: int,
) -> tuple[Upload, SealedDataset]:
    path = party.folder / f"{dataset}.parquet"
    pq.write_table(table, path)
    progress: Callable[[str, int, int], None] = lambda name, done, total: ctx.progress(  # noqa: E731
        f"island: {party.name} {name}", done, max(total, 0)
    )
    t0 = time.perf_counter()
    with served.client(party.tls) as client:
        sealed, sent = upload_dataset(
            client,
            party.keys,
            party.store,
            dataset_id=dataset,
            input_path=path,
            id_column="phone",
            buckets=ctx.bucket_fn.buckets,
            salt=ctx.bucket_fn.salt,
            progress=progress,
        )
    seconds = time.perf_counter() - t0
    party.keys.save(party.folder / "keys.json")  # the new dataset key, as the CLI keeps it
    m = sealed.manifest
    upload = Upload(
        party=party.name,
        dataset=dataset,
        version=m.version,
        rows=m.rows,
        plain_bytes=int(table.nbytes),
        sealed_bytes=m.sealed_bytes,
        buckets=len(m.buckets),
        chunks_sent=sent,
        seconds=seconds,
        not_uploaded=not_uploaded,
    )
    return upload, sealed


# --------------------------------------------------------------------------- checks


def _where(exc: AttestationError) -> str:
    return f"refused at {exc.stage}" + (f" ({exc.field})" if exc.field else "")


def _refusal(
    bundle_check: Callable[[AttestationPolicy], Verdict], policy: AttestationPolicy, what: str
) -> str:
    """Verify under ``policy``; it must refuse. Returns the reason."""
    try:
        bundle_check(policy)
    except AttestationError as exc:
        return f"{_where(exc)}: {exc.reason}"
    raise IntegrityError(f"{what} accepted the simulated island's evidence")


def _matched_from_summary(summary: pa.Table) -> int:
    for row in summary.to_pylist():
        if row["dimension"] == "matched" and row["value"] == "all":
            if row["users"] is None:
                raise IntegrityError("the island withheld the matched total")
            return int(row["users"])
    raise IntegrityError("the island's tag summary has no matched total")


def _tags_agree(psi: pa.Table, rows: pa.Table, tags: list[str]) -> int:
    """Members whose labeled-PSI tags are among the island's rows for them."""
    island: dict[str, set[tuple[Any, ...]]] = {}
    cols = [rows.column(t).to_pylist() for t in tags]
    for i, member in enumerate(rows.column("member_id").to_pylist()):
        island.setdefault(member, set()).add(tuple(c[i] for c in cols))
    psi_cols = [psi.column(t).to_pylist() for t in tags]
    agree = 0
    for i, member in enumerate(psi.column("member_id").to_pylist()):
        if tuple(c[i] for c in psi_cols) in island.get(member, set()):
            agree += 1
    return agree


def _check_stamps(run: JobRun, verdict: Verdict) -> None:
    if not verdict.simulated:
        raise IntegrityError("the demo island is simulated but the verdict says otherwise")
    for sealed in run.sealed:
        if sealed.stamp != SIMULATED_STAMP or not sealed.simulated:
            raise IntegrityError(f"result {sealed.output} is not stamped {SIMULATED_STAMP!r}")
    for name, table in run.results.items():
        meta = table.schema.metadata or {}
        if meta.get(b"atoll.stamp", b"").decode() != SIMULATED_STAMP:
            raise IntegrityError(f"decrypted result {name} carries no simulated stamp")
    for receipt in run.receipts:
        if receipt.stamp != SIMULATED_STAMP or not receipt.simulated:
            raise IntegrityError(f"a {type(receipt).__name__} is not stamped {SIMULATED_STAMP!r}")


# --------------------------------------------------------------------------- the step


def _inputs(ctx: DemoContext) -> tuple[pa.Table, int, pa.Table, int, list[str]]:
    """Each party's upload: only the columns the job needs, rows that have a phone."""
    members = ctx.tables["brand/members"].select(["member_id", "phone"])
    universe = ctx.tables["provider/universe"]
    tags = [c for c in TAG_COLUMNS if c in universe.schema.names]
    shipped = tags + ([_LIST_TAG] if _LIST_TAG in universe.schema.names else [])
    universe = universe.select(["phone", *shipped])
    brand = members.filter(pc.is_valid(members["phone"]))
    provider = universe.filter(pc.is_valid(universe["phone"]))
    return (
        brand,
        members.num_rows - brand.num_rows,
        provider,
        universe.num_rows - provider.num_rows,
        tags,
    )


def _execute(ctx: DemoContext, folder: Path) -> IslandDemoResult:
    psi = matched_members(ctx)  # labeled PSI, held by the brand: the grading reference
    brand_table, brand_skipped, provider_table, provider_skipped, tags = _inputs(ctx)
    shipped = [c for c in provider_table.schema.names if c != "phone"]

    ctx.progress("island: set-up (certificates, keys, policies)", 0, 1)
    certs = folder / "certs"
    init_certs(certs, ["island", "brand", "provider"])
    measurement = expected_measurement()
    brand = _party("brand", folder / "brand", certs, measurement)
    provider = _party("provider", folder / "provider", certs, measurement)
    other_build = folder / "brand" / "other-build-policy.toml"
    other_build.write_text(simulated_policy_toml(expected_measurement("another-build")))
    ctx.progress("island: set-up (certificates, keys, policies)", 1, 1)

    refusals: dict[str, str] = {}
    island_tls = PartyFiles(certs, "island").server_tls()
    with local_island(folder / "island", tls=island_tls) as served:
        # Attestation: one piece of evidence, judged by three policies.
        with served.client(brand.tls) as client:
            nonce = new_nonce()
            bundle = client.attest(nonce)

            def check(policy: AttestationPolicy) -> Verdict:
                return verify_bundle(bundle, policy, nonce=nonce, job_hash=None)

            verdict = check(brand.policy)
            refusals["strict"] = _refusal(check, brand.strict, "the strict policy")
            refusals["other build"] = _refusal(
                check, load_policy(other_build), "a policy pinning another build"
            )

        # Sealed, bucketed uploads.
        up_brand, sealed_brand = _upload(
            ctx, served, brand, _BRAND_DATASET, brand_table, not_uploaded=brand_skipped
        )
        up_provider, sealed_provider = _upload(
            ctx,
            served,
            provider,
            _PROVIDER_DATASET,
            provider_table,
            not_uploaded=provider_skipped,
        )
        job_text = island_job_toml(
            brand.keys.public(),
            provider.keys.public(),
            brand_version=sealed_brand.manifest.version,
            provider_version=sealed_provider.manifest.version,
            tag_columns=shipped,
        )
        (folder / "job.toml").write_bytes(job_text)

        # The provider's key release: refused under its strict policy, then under its own.
        ctx.progress("island: key release", 0, 2)
        with served.client(provider.tls) as client:
            try:
                release_keys(client, provider.keys, provider.strict, job_text)
            except AttestationError as exc:
                held = client.job_status(parse_job(job_text).job_id)["released"]
                if held:
                    raise IntegrityError(
                        f"a refused release left keys on the island: {held}"
                    ) from None
                refusals["provider release, strict"] = (
                    f"{_where(exc)}: no key left the provider (island holds 0 keys)"
                )
            else:
                raise IntegrityError("the provider released its key under the strict policy")
            t0 = time.perf_counter()
            release_keys(client, provider.keys, provider.policy, job_text)
            release_seconds = time.perf_counter() - t0
        ctx.progress("island: key release", 1, 2)

        # The brand verifies, releases, runs, decrypts and verifies the receipts.
        t0 = time.perf_counter()
        with served.client(brand.tls) as client:
            run = run_job(client, brand.keys, brand.policy, job_text)
        job_seconds = time.perf_counter() - t0
        ctx.progress("island: key release", 2, 2)

        # A second job on the same sealed inputs: the matched members' persona.
        persona_text = persona_job_toml(
            brand.keys.public(),
            provider.keys.public(),
            brand_version=sealed_brand.manifest.version,
            provider_version=sealed_provider.manifest.version,
        )
        (folder / "persona-job.toml").write_bytes(persona_text)
        with served.client(provider.tls) as client:
            release_keys(client, provider.keys, provider.policy, persona_text)
        with served.client(brand.tls) as client:
            persona_run = run_job(client, brand.keys, brand.policy, persona_text)
        empty_after_job = served.island.burn.is_empty()
        url = served.url
        burn_root = served.burn_root
    empty_after_shutdown = not any(burn_root.iterdir())

    # The brand's results, graded against the labeled-PSI result it already holds.
    rows, summary = run.results.get(_ROWS_OUTPUT), run.results.get(_SUMMARY_OUTPUT)
    if rows is None or summary is None:
        raise IntegrityError(f"the brand received {sorted(run.results)}, not both outputs")
    _check_stamps(run, verdict)
    _check_stamps(persona_run, verdict)
    persona_counts = persona_run.results.get(_PERSONA_OUTPUT)
    if persona_counts is None:
        raise IntegrityError(f"the brand received {sorted(persona_run.results)}, not the persona")
    _check_persona(persona_counts, brand_table, provider_table)
    matched_island = _matched_from_summary(summary)
    if matched_island != psi.num_rows:
        raise IntegrityError(
            f"island matched {matched_island:,} members, labeled PSI {psi.num_rows:,}"
        )
    island_members = set(rows.column("member_id").to_pylist())
    if island_members != set(psi.column("member_id").to_pylist()):
        raise IntegrityError("the island and labeled PSI matched different members")
    agree = _tags_agree(psi, rows, tags)
    if agree != psi.num_rows:
        raise IntegrityError(
            f"labeled-PSI tags of {psi.num_rows - agree:,} members are not in the island's rows"
        )
    usage = next((r for r in run.receipts if isinstance(r, UsageReceipt)), None)
    deletion = next((r for r in run.receipts if isinstance(r, DeletionReceipt)), None)
    if usage is None or deletion is None:
        raise IntegrityError("the brand did not get both signed receipts")
    if deletion.outcome != "completed" or not deletion.temp_area_empty:
        raise IntegrityError(f"deletion receipt: outcome {deletion.outcome}, temp area not empty")
    if not (empty_after_job and empty_after_shutdown):
        raise IntegrityError(f"the island's temp area {burn_root} is not empty")

    results_dir = folder / "brand" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    files = {"results": results_dir}
    for name, table in [*run.results.items(), *persona_run.results.items()]:
        pq.write_table(table, results_dir / f"{name}.parquet")
    (results_dir / "receipts.json").write_text(
        json.dumps([r.to_json() for r in run.receipts], indent=2), encoding="utf-8"
    )
    attestation = {
        "accepted_by_brand_policy": verdict.to_dict(),
        "refusals": refusals,
        "measurement_pinned": measurement,
    }
    (folder / "attestation.json").write_text(
        json.dumps(attestation, indent=2, default=str), encoding="utf-8"
    )
    return IslandDemoResult(
        measurement=measurement,
        verdict=verdict,
        refusals=refusals,
        uploads=[up_brand, up_provider],
        run=run,
        matched_island=matched_island,
        matched_psi=psi.num_rows,
        tags_agree=agree,
        release_seconds=release_seconds,
        job_seconds=job_seconds,
        temp_area_empty_after_job=empty_after_job,
        temp_area_empty_after_shutdown=empty_after_shutdown,
        url=url,
        persona=persona_counts,
        files=files,
    )


def _mb(n: int) -> str:
    return f"{n / _MB:.2f} MB" if n >= _MB // 10 else f"{n / 1000:.1f} kB"


def _sections(result: IslandDemoResult, folder: Path) -> dict[str, dict[str, Any]]:
    usage, deletion = result.usage, result.deletion
    summary = result.run.results[_SUMMARY_OUTPUT]
    suppressed = summary.column(SUPPRESSED_COLUMN).to_pylist()
    withheld = sum(1 for s in suppressed if s)
    rows = result.run.results[_ROWS_OUTPUT]
    trust = {
        "stamp (every verdict, result and receipt)": SIMULATED_STAMP,
        "island service": f"background thread of the demo, HTTPS with client certificates at "
        f"{result.url} (production: its own process on TEE hardware)",
        "measurement pinned by each party": f"{result.measurement[:16]}… (recomputed from the "
        "party's own copy of the code, as `atoll island measure`)",
        "brand policy (allow_simulated = true)": "accepted — tee=simulated, nonce and report "
        "data bind the island's HPKE key and receipt key",
        "strict policy, same evidence": result.refusals["strict"],
        "policy pinning another island build": result.refusals["other build"],
        "provider key release under its strict policy": result.refusals["provider release, strict"],
        "key release": "each party verified the island for the job, then HPKE-wrapped its "
        "dataset key to the attested key (RFC 9180), signed request",
    }
    upload: dict[str, Any] = {}
    for up in result.uploads:
        skipped = (
            f"; {up.not_uploaded:,} rows without a phone not uploaded" if up.not_uploaded else ""
        )
        upload[f"{up.party}: {up.dataset} v{up.version}"] = (
            f"{up.rows:,} rows, {_mb(up.plain_bytes)} plaintext → {_mb(up.sealed_bytes)} sealed, "
            f"{up.buckets} buckets, {up.chunks_sent} chunks{skipped}"
        )
        upload[f"{up.party}: upload throughput"] = (
            f"{up.mb_per_s:.2f} MB/s ({up.seconds:.2f} s: bucket, seal AES-256-GCM, HTTPS)"
        )
    upload["about the throughput"] = (
        "demo-sized tables: per-bucket sealing and one HTTPS request per chunk dominate; "
        "benchmarks/bench_island.py measures the upload path at millions of rows"
    )
    upload["what crossed parties"] = (
        "only sealed chunks and signed manifests, to the island; no party saw the other's rows"
    )
    rows_read = ", ".join(f"{p} {n:,}" for p, n in sorted(usage.rows_read.items()))
    rows_out = ", ".join(f"{o} {n:,}" for o, n in sorted(usage.rows_out.items()))
    job = {
        "job": f"tag_augmentation on phone=phone, bucketed hash join "
        f"({max((d.buckets_opened for d in usage.datasets), default=0)} buckets opened)",
        "job seconds": f"{result.job_seconds:.2f} s (brand: attest, release, run, decrypt, "
        f"verify receipts); provider release {result.release_seconds:.2f} s",
        "matched (island)": f"{result.matched_island:,} members",
        "matched (labeled PSI, brand's copy)": f"{result.matched_psi:,} members — "
        + ("equal" if result.matched_island == result.matched_psi else "DIFFERENT"),
        "provider tags agree with labeled PSI": f"{result.tags_agree:,} / {result.matched_psi:,} "
        "members",
        f"brand result {_ROWS_OUTPUT}": f"{rows.num_rows:,} rows (row level: the contract "
        "allows it), one per matched member × device",
        f"brand result {_SUMMARY_OUTPUT}": f"{summary.num_rows - withheld:,} cells released, "
        f"{withheld:,} withheld below k={MIN_CELL_SIZE}",
        "usage receipt": f"verified with the attested receipt key — rows read: {rows_read}; "
        f"rows out: {rows_out}",
        "deletion receipt": f"verified — {len(deletion.keys_dropped)} key holders dropped, "
        f"{deletion.files_deleted} spill files deleted, temp area empty: "
        f"{deletion.temp_area_empty}",
        "island temp area (checked on disk)": "empty after the job and after shutdown"
        if result.temp_area_empty_after_job and result.temp_area_empty_after_shutdown
        else "NOT EMPTY",
        "outputs": str(folder),
    }
    sections = {
        "7 · secure island: attestation and key release": trust,
        "7 · secure island: sealed bucketed upload": upload,
        "7 · secure island: match + tag augmentation job": job,
    }
    if result.persona is not None:
        cells, _ = persona_statistics(result.persona, PersonaConfig())
        top = [
            r
            for r in cells.to_pylist()
            if r["tgi"] is not None and r["significant"] and r["target_count"] is not None
        ]
        top.sort(key=lambda r: -r["tgi"])
        withheld = sum(1 for s in result.persona.column(SUPPRESSED_COLUMN).to_pylist() if s)
        persona_section: dict[str, Any] = {
            "job": "persona on phone=phone: matched members (T) against the uploaded universe "
            "(U), counted inside, released as guarded counts; TGI derived by the brand",
            "released": f"{result.persona.num_rows - withheld:,} counts, {withheld:,} withheld "
            f"below k={MIN_CELL_SIZE}",
            "check": "equal to the plain persona of the same tables under the same guard",
        }
        for r in top[:3]:
            persona_section[f"TGI {r['dimension']}={r['value']}"] = (
                f"{r['tgi']:.0f} (share T {r['target_share']:.1%} vs U {r['base_share']:.1%}; "
                "TGI = share_T / share_U × 100)"
            )
        sections["7 · secure island: persona job"] = persona_section
    return sections


def run(ctx: DemoContext) -> dict[str, dict[str, Any]]:
    """Run the island round trip (module docstring); return the summary sections."""
    folder = ctx.out / "island"
    if folder.exists():  # a previous run's keys and stores would not match this world
        shutil.rmtree(folder)
    folder = ctx.folder("island")
    result = _execute(ctx, folder)
    ctx.artifacts["island"] = result
    return _sections(result, folder)
