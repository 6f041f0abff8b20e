"""Jobs inside the island, in process: matching, guards, sealing, burning, receipts."""

from __future__ import annotations

import base64
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError, IntegrityError, LocalProtocolError, RemoteProtocolError
from atoll.ids.buckets import BucketFunction
from atoll.island.evidence.simulated import SIMULATED_STAMP, SimulatedBackend
from atoll.island.keyrelease import new_nonce, sign_release, wrap_dataset_key
from atoll.island.receipts import DeletionReceipt, UsageReceipt, verify_receipt
from atoll.island.runner import (
    Island,
    JobManifest,
    JobOutcome,
    MatchStep,
    match_tables,
    open_result,
    parse_job,
)
from tests.island.island_helpers import (
    Party,
    brand_table,
    job_toml,
    provider_table,
    sim_policy,
    submit,
)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Island, Party, Party]:
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    brand, provider = Party("brand", tmp_path), Party("provider", tmp_path)
    fn = BucketFunction(4)
    brand.upload(island, brand.seal("brand-members", brand_table(), "phone", fn))
    provider.upload(island, provider.seal("provider-tags", provider_table(), "phone", fn))
    return island, brand, provider


def _run(
    island: Island, brand: Party, provider: Party, text: bytes
) -> tuple[JobManifest, JobOutcome]:
    job = submit(island, text)
    policy = sim_policy(island.backend.measurement)
    brand.release(island, job, policy)
    provider.release(island, job, policy)
    return job, island.run(job.job_id)


def test_tag_augmentation_aggregate_is_guarded_and_stamped(
    world: tuple[Island, Party, Party],
) -> None:
    island, brand, provider = world
    job, outcome = _run(island, brand, provider, job_toml(brand, provider, min_cell_size=5))
    assert outcome.status == "done", outcome.error
    (result,) = outcome.results
    assert result.level == "aggregate"
    assert result.stamp == SIMULATED_STAMP
    table = open_result(result, brand.hpke, job_digest=job.digest)
    assert table.schema.metadata[b"atoll.stamp"].decode() == SIMULATED_STAMP
    cells = {(r["dimension"], r["value"]): r for r in table.to_pylist()}
    assert cells[("matched", "all")]["users"] == 30
    assert cells[("tag", "t0")]["users"] == 10
    assert cells[("tag", "extra")]["users"] == 10
    # Nothing below k = 5 is released (suppressed rows keep their reason).
    for row in table.to_pylist():
        assert row["suppressed"] or row["users"] >= 5
    assert not list(island.burn.root.iterdir())


def test_row_level_only_where_the_contract_allows(world: tuple[Island, Party, Party]) -> None:
    island, brand, provider = world
    job, outcome = _run(island, brand, provider, job_toml(brand, provider, row_level=True))
    (result,) = outcome.results
    assert result.level == "row"
    rows = open_result(result, brand.hpke, job_digest=job.digest)
    assert rows.num_rows == 40  # 30 matched phones + 10 extra tag rows
    assert set(rows.column_names) == {"member_id", "tag"}
    assert set(rows["member_id"].to_pylist()) == {f"m{i:03d}" for i in range(30)}


def test_receipts_verify_and_meter_rows(world: tuple[Island, Party, Party]) -> None:
    island, brand, provider = world
    job, outcome = _run(island, brand, provider, job_toml(brand, provider, computation="match"))
    assert outcome.usage_receipt is not None
    usage = verify_receipt(outcome.usage_receipt, island.receipt_key)
    deletion = verify_receipt(outcome.deletion_receipt, island.receipt_key)
    assert isinstance(usage, UsageReceipt)
    assert isinstance(deletion, DeletionReceipt)
    assert usage.stamp == SIMULATED_STAMP
    assert usage.job_hash == job.digest.hex()
    # Bucketed join: only buckets non-empty on both sides are opened and metered.
    assert usage.rows_read["brand"] <= 40
    assert usage.rows_read["provider"] <= 60
    assert usage.rows_out == {"brand-result": 2}  # one step + "all steps"
    assert usage.result_digests == {r.output: r.digest for r in outcome.results}
    assert deletion.temp_area_empty
    assert "dataset-key:brand/brand-members/v1" in deletion.keys_dropped
    assert deletion.outcome == "completed"
    tampered = bytearray(outcome.usage_receipt)
    tampered[-2] ^= 1
    with pytest.raises(IntegrityError):
        verify_receipt(bytes(tampered), island.receipt_key)
    other = Island(island.workdir / "other", backend=island.backend)
    with pytest.raises(IntegrityError):
        verify_receipt(outcome.usage_receipt, other.receipt_key)


def test_job_runs_once_and_needs_every_key(world: tuple[Island, Party, Party]) -> None:
    island, brand, provider = world
    job = submit(island, job_toml(brand, provider))
    brand.release(island, job, sim_policy(island.backend.measurement))
    with pytest.raises(LocalProtocolError, match="provider/provider-tags/v1"):
        island.run(job.job_id)
    provider.release(island, job, sim_policy(island.backend.measurement))
    first = island.run(job.job_id)
    assert island.run(job.job_id) is first
    assert island.job_status(job.job_id)["status"] == "done"


def test_failed_job_still_burns_and_signs_a_deletion_receipt(
    world: tuple[Island, Party, Party],
) -> None:
    island, brand, provider = world
    text = job_toml(brand, provider, params='tag_columns = ["no_such_column"]\n')
    _, outcome = _run(island, brand, provider, text)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "no_such_column" in outcome.error
    assert outcome.results == []
    deletion = verify_receipt(outcome.deletion_receipt, island.receipt_key)
    assert isinstance(deletion, DeletionReceipt)
    assert deletion.outcome == "failed"
    assert deletion.keys_dropped
    assert not list(island.burn.root.iterdir())


def test_waterfall_and_graph_steps(tmp_path: Path) -> None:
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    brand, provider = Party("brand", tmp_path), Party("provider", tmp_path)
    members = pa.table(
        {
            "member_id": ["a", "b", "c", "d"],
            "phone": ["13800000001", "13800000002", "13800000003", "13800000004"],
        }
    )
    devices = pa.table(
        {
            "device_id": ["d1", "d2", "d3"],
            "phone": ["13800000001", None, None],
            "tag": ["x", "y", "z"],
        }
    )
    edges = pa.table(
        {
            "id_type_a": ["phone", "phone"],
            "id_a": ["13800000002", "13800000003"],
            "id_type_b": ["device_id", "device_id"],
            "id_b": ["d2", "d3"],
        }
    )
    brand.upload(island, brand.seal("brand-members", members, "phone", BucketFunction(2)))
    provider.upload(island, provider.seal("provider-tags", devices, "device_id", BucketFunction(2)))
    provider.upload(island, provider.seal("provider-edges", edges, "id_a", BucketFunction(1)))
    steps = (
        '[[match.steps]]\nleft = "phone"\nright = "phone"\n'
        '[[match.steps]]\nleft = "phone"\nright = "device_id"\nvia_graph = true\n'
        'left_kind = "phone"\nright_kind = "device_id"\n'
    )
    extra = (
        '[[inputs]]\nname = "edges"\nparty = "provider"\ndataset = "provider-edges"\nversion = 1\n'
    )
    text = job_toml(
        brand,
        provider,
        computation="match",
        steps=steps,
        inputs_extra=extra,
        graph="edges",
        row_level=True,
    )
    job, outcome = _run(island, brand, provider, text)
    rows = open_result(outcome.results[0], brand.hpke, job_digest=job.digest)
    got = dict(zip(rows["member_id"].to_pylist(), rows["match_step"].to_pylist(), strict=True))
    assert got == {
        "a": "phone=phone",
        "b": "phone~device_id (graph)",
        "c": "phone~device_id (graph)",
    }


def test_job_manifest_errors_name_the_key(tmp_path: Path) -> None:
    brand, provider = Party("brand", tmp_path), Party("provider", tmp_path)
    good = job_toml(brand, provider).decode()
    with pytest.raises(ConfigError, match="'version'"):
        parse_job(good.replace("version = 1\njob", "version = 7\njob").encode())
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        parse_job(('colour = "red"\n' + good).encode())
    with pytest.raises(ConfigError, match="no input"):
        parse_job(good.replace('right = "tags"', 'right = "nope"').encode())
    with pytest.raises(ConfigError, match="not valid base64"):
        parse_job(good.replace(brand.public_text, "!!!").encode())
    island = Island(tmp_path / "i", backend=SimulatedBackend())
    with pytest.raises(ConfigError, match="unknown computation"):
        island.submit_job(good.replace('"tag_augmentation"', '"astrology"').encode())


def _plain_waterfall(
    left: list[tuple[str | None, str | None]], right: list[tuple[str | None, str | None]]
) -> set[tuple[int, int, int]]:
    pairs: set[tuple[int, int, int]] = set()
    matched: set[int] = set()
    for step in (0, 1):
        for i, lrow in enumerate(left):
            if i in matched or lrow[step] is None:
                continue
            hits = [j for j, rrow in enumerate(right) if rrow[step] == lrow[step]]
            if hits:
                matched.add(i)
                pairs.update((i, j, step) for j in hits)
    return pairs


_ids = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e"]))


@settings(max_examples=60, deadline=None)
@given(
    left=st.lists(st.tuples(_ids, _ids), max_size=12),
    right=st.lists(st.tuples(_ids, _ids), max_size=12),
)
def test_property_waterfall_join_equals_the_plain_computation(
    left: list[tuple[str | None, str | None]], right: list[tuple[str | None, str | None]]
) -> None:
    lt = pa.table(
        {
            "k1": pa.array([r[0] for r in left], pa.string()),
            "k2": pa.array([r[1] for r in left], pa.string()),
        }
    )
    rt = pa.table(
        {
            "k1": pa.array([r[0] for r in right], pa.string()),
            "k2": pa.array([r[1] for r in right], pa.string()),
        }
    )
    part = match_tables(lt, rt, [MatchStep("k1", "k1"), MatchStep("k2", "k2")])
    got = set(
        zip(part.left_rows.tolist(), part.right_rows.tolist(), part.steps.tolist(), strict=True)
    )
    assert got == _plain_waterfall(left, right)


def test_results_are_only_for_their_recipient(world: tuple[Island, Party, Party]) -> None:
    island, brand, provider = world
    job, outcome = _run(island, brand, provider, job_toml(brand, provider))
    result = outcome.results[0]
    with pytest.raises(Exception, match="decryption failed"):
        open_result(result, provider.hpke, job_digest=job.digest)
    assert base64.b64decode(result.to_json()["sealed"]) == result.sealed


def test_bucketed_join_opens_only_the_buckets_it_needs(tmp_path: Path) -> None:
    island = Island(tmp_path / "island", backend=SimulatedBackend({"backend": "simulated"}))
    brand, provider = Party("brand", tmp_path), Party("provider", tmp_path)
    fn = BucketFunction(16)
    one = pa.table({"member_id": ["m1"], "phone": ["13800000007"]})
    brand.upload(island, brand.seal("brand-members", one, "phone", fn))
    provider.upload(island, provider.seal("provider-tags", provider_table(), "phone", fn))
    job, outcome = _run(island, brand, provider, job_toml(brand, provider))
    usage = verify_receipt(outcome.usage_receipt or b"", island.receipt_key)
    assert isinstance(usage, UsageReceipt)
    bucket = fn.bucket_of("13800000007")
    in_bucket = sum(1 for p in provider_table()["phone"].to_pylist() if fn.bucket_of(p) == bucket)
    by_party = {u.party: u for u in usage.datasets}
    assert by_party["provider"].buckets_opened == 1
    assert by_party["provider"].rows_read == in_bucket < provider_table().num_rows
    assert job.job_id == usage.job_id


def test_key_release_must_be_signed_by_the_party(world: tuple[Island, Party, Party]) -> None:
    island, brand, provider = world
    job = submit(island, job_toml(brand, provider))
    nonce = new_nonce()
    bundle = island.attest(nonce, job.job_id)
    wrapped = wrap_dataset_key(
        bundle, brand.keys["brand-members"], party="brand", dataset_id="brand-members", version=1
    )
    forged = sign_release(
        provider.signing,  # the provider tries to release (or overwrite) the brand's key
        job_hash=job.digest,
        nonce=nonce,
        party="brand",
        dataset_id="brand-members",
        version=1,
        wrapped=wrapped,
    )
    with pytest.raises(RemoteProtocolError, match="not signed by brand"):
        island.release_key(
            job.job_id,
            party="brand",
            dataset_id="brand-members",
            version=1,
            nonce=nonce,
            wrapped=wrapped,
            signature=forged,
        )
    assert island.job_status(job.job_id)["released"] == []
