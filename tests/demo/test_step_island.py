"""Demo step 7 (the secure island): real round trip, results equal the plain join, always burned.

The step runs the island service over mutual TLS on loopback; these tests
grade what the brand decrypted against a plain computation on both parties'
tables (which only a test may do), check the receipts and the temp area, and
that the island is stopped and burned when something fails inside the step.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from atoll.cli import app as cli_app
from atoll.demo import DemoContext, step_island
from atoll.demo.shared import TAG_COLUMNS, matched_members
from atoll.demo.step_island import MIN_CELL_SIZE, IslandDemoResult
from atoll.errors import ConfigError, IntegrityError
from atoll.island.evidence.simulated import SIMULATED_STAMP
from atoll.island.receipts import verify_receipt
from atoll.privacy.guard import SUPPRESSED_COLUMN
from atoll.service.island import IslandClient
from atoll.service.island import run_job as real_run_job
from atoll.service.island_local import expected_measurement, local_island, simulated_policy_toml
from atoll.transport.tls import PartyFiles, init_certs


def _plain_pairs(ctx: DemoContext) -> tuple[pa.Table, list[str]]:
    """Brand member x provider device pairs sharing a phone (plain join, grading only)."""
    members = ctx.tables["brand/members"].select(["member_id", "phone"])
    universe = ctx.tables["provider/universe"]
    tags = [c for c in TAG_COLUMNS if c in universe.schema.names] + ["interests"]
    indexed = pa.table(
        {"phone": universe["phone"], "__r": pa.array(np.arange(universe.num_rows))}
    ).filter(pc.is_valid(universe["phone"]))
    joined = members.filter(pc.is_valid(members["phone"])).join(
        indexed, keys="phone", join_type="inner"
    )
    right = universe.select(tags).take(joined["__r"])
    pairs = pa.table({"member_id": joined["member_id"], **{t: right[t] for t in tags}})
    return pairs, tags


def _plain_cells(pairs: pa.Table, tags: list[str]) -> dict[tuple[str, str], int]:
    cells: dict[tuple[str, str], set[str]] = {}
    members = pairs["member_id"].to_pylist()
    for tag in tags:
        for member, value in zip(members, pairs[tag].to_pylist(), strict=True):
            for v in value if isinstance(value, list) else [value]:
                if v is not None:
                    cells.setdefault((tag, str(v)), set()).add(member)
    out = {key: len(v) for key, v in cells.items()}
    out[("matched", "all")] = len(set(members))
    return out


def _rows(table: pa.Table, tags: list[str]) -> list[tuple[Any, ...]]:
    cols = [table[c].to_pylist() for c in ["member_id", *tags]]
    return sorted(
        (
            tuple(tuple(v) if isinstance(v, list) else v for v in row)
            for row in zip(*cols, strict=True)
        ),
        key=repr,
    )


def test_island_round_trip_equals_plain_join(fresh_ctx: DemoContext) -> None:
    sections = step_island.run(fresh_ctx)
    assert sections
    assert all(title.startswith("7 · secure island") for title in sections)
    result = fresh_ctx.artifacts["island"]
    assert isinstance(result, IslandDemoResult)
    pairs, tags = _plain_pairs(fresh_ctx)
    plain = _plain_cells(pairs, tags)

    # Matched count: island == labeled PSI == plain join (and > 0).
    assert result.matched_island == result.matched_psi == plain[("matched", "all")] > 0
    assert result.tags_agree == result.matched_psi

    # Row-level output: exactly the plain join's member x device pairs with their tags.
    rows = result.run.results["member-tags"]
    assert _rows(rows, tags) == _rows(pairs, tags)

    # Aggregate output: released cells equal the plain counts; withheld ones are below k.
    summary = result.run.results["tag-summary"]
    released = withheld = 0
    for row in summary.to_pylist():
        key = (row["dimension"], row["value"])
        if row[SUPPRESSED_COLUMN]:
            assert row["users"] is None
            assert plain[key] < MIN_CELL_SIZE
            withheld += 1
        else:
            assert row["users"] == plain[key] >= MIN_CELL_SIZE
            released += 1
    assert set(plain) == {(r["dimension"], r["value"]) for r in summary.to_pylist()}
    assert released > 0

    # Attestation: accepted under the brand's policy, refused by the strict one and another pin.
    assert result.verdict.simulated
    assert result.verdict.measurements["measurement"] == result.measurement
    assert "allow_simulated" in result.refusals["strict"]
    assert "measurements.measurement" in result.refusals["other build"]
    assert "no key left the provider" in result.refusals["provider release, strict"]

    # Receipts: both verified; the usage receipt meters exactly the rows of the joined buckets.
    usage, deletion = result.usage, result.deletion
    fn = fresh_ctx.bucket_fn
    brand_phones = fresh_ctx.tables["brand/members"]["phone"].drop_null().to_pylist()
    prov_phones = fresh_ctx.tables["provider/universe"]["phone"].drop_null().to_pylist()
    brand_b, prov_b = fn.assign(brand_phones), fn.assign(prov_phones)
    common = set(brand_b.tolist()) & set(prov_b.tolist())
    assert usage.rows_read == {
        "brand": int(np.isin(brand_b, list(common)).sum()),
        "provider": int(np.isin(prov_b, list(common)).sum()),
    }
    assert usage.rows_out == {"member-tags": rows.num_rows, "tag-summary": summary.num_rows}
    assert deletion.temp_area_empty
    assert deletion.outcome == "completed"
    assert len(deletion.keys_dropped) >= 3  # the job's HPKE key and both dataset keys
    assert result.run.receipt_key is not None
    assert result.run.outcome is not None
    blob = bytearray(base64.b64decode(result.run.outcome["usage_receipt"]))
    assert verify_receipt(bytes(blob), result.run.receipt_key).job_hash == usage.job_hash
    blob[-5] ^= 1
    with pytest.raises(IntegrityError):
        verify_receipt(bytes(blob), result.run.receipt_key)

    # The stamp is everywhere, and printed.
    for table in result.run.results.values():
        assert (table.schema.metadata or {})[b"atoll.stamp"].decode() == SIMULATED_STAMP
    assert all(r.stamp == SIMULATED_STAMP for r in result.run.receipts)
    printed = json.dumps(sections, ensure_ascii=False)
    assert SIMULATED_STAMP in printed
    assert "MB/s" in printed
    assert "job seconds" in printed

    # Burned: the island's private area is empty; the parties' files are where the docs say.
    folder = fresh_ctx.out / "island"
    assert result.temp_area_empty_after_job
    assert result.temp_area_empty_after_shutdown
    assert not any((folder / "island" / "private").iterdir())
    for name in ("job.toml", "attestation.json", "brand/results/receipts.json"):
        assert (folder / name).is_file()
    for party in ("brand", "provider"):
        mode = (folder / party / "keys.json").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
    assert (folder / "brand" / "results" / "member-tags.parquet").is_file()


def _port_open(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((str(parts.hostname), int(parts.port or 0))) == 0


def test_a_failure_inside_the_step_still_stops_and_burns_the_island(
    fresh_ctx: DemoContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def failing_run_job(client: IslandClient, *args: Any, **kwargs: Any) -> Any:
        seen["url"] = client.base_url
        real_run_job(client, *args, **kwargs)
        raise RuntimeError("the brand's machine lost power")

    monkeypatch.setattr(step_island, "run_job", failing_run_job)
    with pytest.raises(RuntimeError, match="lost power"):
        step_island.run(fresh_ctx)
    assert not _port_open(seen["url"])
    assert not any((fresh_ctx.out / "island" / "island" / "private").iterdir())


def test_a_mismatch_with_labeled_psi_fails_the_step(fresh_ctx: DemoContext) -> None:
    psi = matched_members(fresh_ctx)
    fresh_ctx.artifacts["matched"] = psi.slice(1)  # one member fewer than the island finds
    with pytest.raises(IntegrityError, match="labeled PSI"):
        step_island.run(fresh_ctx)


def _fail_inside(tmp_path: Path, certs: Path, leftover: Path, seen: dict[str, Any]) -> None:
    with local_island(tmp_path / "island", tls=PartyFiles(certs, "island").server_tls()) as served:
        assert [r.path for r in served.island.swept] == [str(leftover)]
        assert served.url.startswith("https://127.0.0.1:")
        with served.client(PartyFiles(certs, "brand").client_tls()) as client:
            info = client.info()
        assert info["simulated"]
        assert info["stamp"] == SIMULATED_STAMP
        assert info["measurement"] == expected_measurement()
        area = served.island.burn.open("job-in-flight")
        area.file("spill.arrow").write_bytes(b"plaintext in flight")
        seen["url"] = served.url
        raise ConfigError("failure inside the block")


def test_local_island_sweeps_leftovers_and_burns_on_error(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    init_certs(certs, ["island", "brand"])
    leftover = tmp_path / "island" / "private" / "killed-job-1234"
    leftover.mkdir(parents=True)
    (leftover / "input-seed.arrow").write_bytes(b"plaintext of a killed run")
    seen: dict[str, Any] = {}
    with pytest.raises(ConfigError, match="inside"):
        _fail_inside(tmp_path, certs, leftover, seen)
    url = seen["url"]
    assert not any((tmp_path / "island" / "private").iterdir())
    assert not _port_open(url)


def test_pinned_measurement_matches_the_cli_and_policies_validate() -> None:
    out = CliRunner().invoke(cli_app, ["island", "measure"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["measurement"] == expected_measurement()
    assert expected_measurement("another-build") != expected_measurement()
    text = simulated_policy_toml("AB" * 32, allow_simulated=False)
    assert "allow_simulated = false" in text
    assert "ab" * 32 in text
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        simulated_policy_toml("not-a-measurement")
