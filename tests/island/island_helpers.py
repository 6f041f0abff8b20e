"""Shared helpers of the island tests: parties, sealed uploads, job manifests, policies."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from atoll.crypto.hpke import HpkePrivateKey
from atoll.crypto.sign import SigningKey
from atoll.data.datasets import bucket_table
from atoll.data.envelope import SealedDataset, SealedStore, seal_dataset
from atoll.ids.buckets import BucketFunction
from atoll.island.keyrelease import new_nonce, sign_release, verify_bundle, wrap_dataset_key
from atoll.island.policy import AttestationPolicy, parse_policy
from atoll.island.runner import Island, JobManifest, parse_job


@dataclass
class Party:
    """A party's keys and its local store of what it sealed."""

    name: str
    root: Path
    signing: SigningKey = field(default_factory=SigningKey.generate)
    hpke: HpkePrivateKey = field(default_factory=HpkePrivateKey.generate)
    keys: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = SealedStore(self.root / f"party-{self.name}")

    def seal(
        self,
        dataset: str,
        table: pa.Table,
        id_column: str,
        fn: BucketFunction,
        *,
        version: int = 1,
        chunk_bytes: int = 4096,
    ) -> SealedDataset:
        key = self.keys.setdefault(dataset, os.urandom(32))
        return seal_dataset(
            sorted(bucket_table(table, id_column, fn).items()),
            dataset_id=dataset,
            version=version,
            dataset_key=key,
            signing_key=self.signing,
            schema=table.schema,
            id_column=id_column,
            bucket_function=fn,
            store=self.store,
            chunk_bytes=chunk_bytes,
        )

    def upload(self, island: Island, sealed: SealedDataset) -> None:
        _, missing = island.put_manifest(sealed.signed)
        for digest in missing:
            island.put_chunk(digest, self.store.get_chunk(digest))

    def release(self, island: Island, job: JobManifest, policy: AttestationPolicy) -> None:
        for spec in job.inputs:
            if spec.party != self.name:
                continue
            nonce = new_nonce()
            bundle = island.attest(nonce, job.job_id)
            verify_bundle(bundle, policy, nonce=nonce, job_hash=job.digest)
            wrapped = wrap_dataset_key(
                bundle,
                self.keys[spec.dataset],
                party=self.name,
                dataset_id=spec.dataset,
                version=spec.version,
            )
            signature = sign_release(
                self.signing,
                job_hash=job.digest,
                nonce=nonce,
                party=self.name,
                dataset_id=spec.dataset,
                version=spec.version,
                wrapped=wrapped,
            )
            island.release_key(
                job.job_id,
                party=self.name,
                dataset_id=spec.dataset,
                version=spec.version,
                nonce=nonce,
                wrapped=wrapped,
                signature=signature,
            )

    @property
    def signing_text(self) -> str:
        return self.signing.verify_key.to_text()

    @property
    def public_text(self) -> str:
        return base64.b64encode(self.hpke.public_bytes).decode()


def sim_policy(measurement: str, *, allow_simulated: bool = True) -> AttestationPolicy:
    return parse_policy(
        {
            "version": 1,
            "tee_types": ["simulated"],
            "allow_simulated": allow_simulated,
            "measurements": {"measurement": [measurement]},
        }
    )


def policy_toml(measurement: str, *, allow_simulated: bool = True) -> str:
    return (
        "version = 1\n"
        'tee_types = ["simulated"]\n'
        f"allow_simulated = {'true' if allow_simulated else 'false'}\n"
        "[measurements]\n"
        f'measurement = ["{measurement}"]\n'
    )


def job_toml(
    brand: Party,
    provider: Party,
    *,
    computation: str = "tag_augmentation",
    steps: str = '[[match.steps]]\nleft = "phone"\nright = "phone"\n',
    inputs_extra: str = "",
    graph: str | None = None,
    row_level: bool = False,
    min_cell_size: int = 2,
    params: str = 'tag_columns = ["tag"]\nkey_column = "member_id"\n',
    brand_dataset: str = "brand-members",
    provider_dataset: str = "provider-tags",
    provider_version: int = 1,
    job_name: str = "test-job",
) -> bytes:
    graph_line = f'graph = "{graph}"\n' if graph else ""
    return (
        f'version = 1\njob = "{job_name}"\ncomputation = "{computation}"\n'
        f'[parties.brand]\nsigning_key = "{brand.signing_text}"\n'
        f'[parties.provider]\nsigning_key = "{provider.signing_text}"\n'
        f'[[inputs]]\nname = "seed"\nparty = "brand"\ndataset = "{brand_dataset}"\nversion = 1\n'
        f'[[inputs]]\nname = "tags"\nparty = "provider"\ndataset = "{provider_dataset}"\n'
        f"version = {provider_version}\n"
        f"{inputs_extra}"
        f'[match]\nleft = "seed"\nright = "tags"\n{graph_line}{steps}'
        f"[params]\n{params}"
        f'[[outputs]]\nname = "brand-result"\nrecipient = "brand"\n'
        f'public_key = "{brand.public_text}"\nrow_level = {"true" if row_level else "false"}\n'
        f"[guards]\nmin_cell_size = {min_cell_size}\n"
    ).encode()


def brand_table() -> pa.Table:
    phones = [f"1380000{i:04d}" for i in range(40)]
    return pa.table({"member_id": [f"m{i:03d}" for i in range(40)], "phone": phones})


def provider_table() -> pa.Table:
    # phones 0..29 overlap the brand's (0..39); 100..119 do not. Two tag rows per phone 0..9.
    rows = [(f"1380000{i:04d}", f"t{i % 3}") for i in range(30)]
    rows += [(f"1380000{i:04d}", "extra") for i in range(10)]
    rows += [(f"1380000{i:04d}", "t0") for i in range(100, 120)]
    return pa.table({"phone": [r[0] for r in rows], "tag": [r[1] for r in rows]})


def submit(island: Island, text: bytes) -> JobManifest:
    job = island.submit_job(text)
    assert job.job_id == parse_job(text).job_id
    return job
