"""Demo step 8: the covert query (隐匿查询) in every mode, and the provider's bill.

Why: the brand wants to ask the provider "what do you know about this
customer?" for a handful of members without telling it which customer, and
the provider wants to be paid per answered hit (seed §9). This step shows the
whole loop as a deployment would run it:

* the **provider** builds its covert-query index over its own device universe
  (one label record per phone; the bucket-mode OPRF setup runs on the demo's
  executor) and serves it with the real HTTP service
  (:mod:`atoll.service.covert`, FastAPI/uvicorn) on loopback, with **mutual
  TLS** from ``atoll certs init`` — the production setup, on one machine;
* the **brand** asks about six of its members — three the provider knows and
  three it does not, which the brand learned from the labeled-PSI match of
  step 5 — through the client SDK
  (:class:`~atoll.transport.covert_client.CovertHttpClient`) in each mode and
  batch style: ``rsa`` (the seed's protocol) with N = 10 decoys drawn from the
  brand's own member base (its ID master library; a pool of 12 RSA-2048 keys
  keeps key generation short), ``ec`` with hash-truncation groups of at
  least 100 IDs on average (single, micro and async batch), ``bucket`` with
  hash buckets of at least 1000 (single, micro), and one ``ec`` round with
  random phone-number decoys, where the k_min rule makes the brand decline
  to buy;
* every answer is **graded** against the provider's plain lookup (grading
  only: the plain table never reaches the brand's code path) and, for the
  members known from step 5, against the labels labeled PSI returned;
* the **provider's billing statement** comes from its metering ledger, with
  the hash chain and every receipt's Ed25519 signature verified against the
  key the brand pinned; the brand's own receipts are checked against it, and
  a tampered copy of the ledger is shown to be rejected.

Outputs under ``out/covert/``: ``answers.csv`` (one row per query),
``billing.json``, the provider's state (index, ledger, keys) and the certs.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atoll.control.metering import LedgerReport, verify_ledger
from atoll.crypto.sign import VerifyKey
from atoll.data.io import write_table
from atoll.demo.context import DemoContext
from atoll.demo.shared import matched_members
from atoll.errors import IntegrityError
from atoll.protocols.covert import AnswerStatus, CovertAnswer, Mode, UsageReceipt
from atoll.protocols.covert_source import DecoySource, LibraryDecoys, PhoneDecoys
from atoll.service.covert import (
    IndexReport,
    ProviderConfig,
    ProviderService,
    ProviderState,
    build_index,
    create_app,
    load_index,
)
from atoll.service.server import AppServer
from atoll.transport.covert_client import CovertHttpClient
from atoll.transport.tls import PartyFiles, init_certs

__all__ = ["BUCKET_TARGET", "K_MIN", "LABELS", "ROUNDS", "Round", "run"]

#: The provider's label columns served by the covert query.
LABELS: tuple[str, ...] = ("gender", "age_band", "province", "city_tier", "consumption_level")
#: The brand's k_min policy: buy a key only when the true slot hits and >= K_MIN slots hit.
K_MIN = 3
#: Bucket mode: about this many provider IDs per bucket.
BUCKET_TARGET = 1000
#: RSA: modulus size and key pool (>= N; the provider picks N of them per batch).
RSA_BITS = 2048
RSA_POOL = 12
#: How many members the brand asks about, of those the provider knows / does not know.
ASK_KNOWN = 3
ASK_UNKNOWN = 3
_TITLE = "8 · covert query"


@dataclass(frozen=True)
class Round:
    """One round of queries: a mode, an amplification, N and a batch style."""

    mode: str
    amplify: str
    n: int
    batch: str
    decoys: str = ""  # "library" (brand's member base) or "random" (valid phone numbers)

    @property
    def name(self) -> str:
        """Short label, e.g. ``"ec · prefix · N≥100 · single"``."""
        if self.decoys:  # exactly N IDs
            return f"{self.mode} · decoy ({self.decoys}) · N={self.n} · {self.batch}"
        # hash truncation: the longest prefix whose groups hold >= N IDs on average
        return f"{self.mode} · {self.amplify} · N≥{self.n} · {self.batch}"

    @property
    def family(self) -> str:
        """The per-member column this round is graded under (batch styles share one)."""
        return f"{self.mode}-{self.decoys}" if self.decoys else self.mode


#: The rounds, in order. Single/micro/async of one mode ask the same IDs.
ROUNDS: tuple[Round, ...] = (
    Round("rsa", "decoy", 10, "single", decoys="library"),
    Round("rsa", "decoy", 10, "micro", decoys="library"),
    Round("ec", "prefix", 100, "single"),
    Round("ec", "prefix", 100, "micro"),
    Round("ec", "prefix", 100, "async"),
    Round("bucket", "prefix", BUCKET_TARGET, "single"),
    Round("bucket", "prefix", BUCKET_TARGET, "micro"),
    Round("ec", "decoy", 10, "micro", decoys="random"),
)


def _provider_db(ctx: DemoContext, path: Path) -> pa.Table:
    """The provider's label table: one record per phone (its first device row wins)."""
    universe = ctx.tables["provider/universe"]
    table = universe.select(["phone", *LABELS]).filter(pc.is_valid(universe["phone"]))
    _, first = np.unique(
        np.asarray(table["phone"].to_numpy(zero_copy_only=False)), return_index=True
    )
    table = table.take(pa.array(np.sort(first)))
    write_table(table, path)
    return table


def _asked(ctx: DemoContext) -> list[tuple[str, str, bool]]:
    """``(member_id, phone, known per labeled PSI)`` for the members the brand asks about."""
    members = ctx.tables["brand/members"]
    members = members.filter(pc.is_valid(members["phone"])).sort_by("member_id")
    known_phones = set(matched_members(ctx)["phone"].to_pylist())
    known: list[tuple[str, str, bool]] = []
    unknown: list[tuple[str, str, bool]] = []
    seen: set[str] = set()
    for member_id, phone in zip(
        members["member_id"].to_pylist(), members["phone"].to_pylist(), strict=True
    ):
        if phone in seen:
            continue
        seen.add(phone)
        is_known = phone in known_phones
        bucket = known if is_known else unknown
        if len(bucket) < (ASK_KNOWN if is_known else ASK_UNKNOWN):
            bucket.append((str(member_id), str(phone), is_known))
    asked = [x for pair in zip(known, unknown, strict=False) for x in pair]
    return asked + known[len(unknown) :] + unknown[len(known) :]


def _grade(answer: CovertAnswer, expected: list[Any] | None) -> bool:
    """Is the answer what the plain lookup says it should be (with the k_min rule)?"""
    if answer.status == AnswerStatus.HIT:
        return expected is not None and answer.values == expected and answer.m >= K_MIN
    if answer.status == AnswerStatus.NO_RECORD:
        return expected is None and answer.values is None
    if answer.status == AnswerStatus.DECLINED:
        return expected is not None and answer.m < K_MIN and answer.values is None
    return False  # REFUSED: the brand asked and paid nothing, but got no key


def _mask(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


def _start_server(
    state: ProviderState, certs: Path
) -> tuple[AppServer, ProviderService, PartyFiles]:
    init_certs(certs, ["provider", "brand"])
    service = ProviderService(state)
    server = AppServer(
        create_app(service), "127.0.0.1", 0, tls=PartyFiles(certs, "provider").server_tls()
    )
    server.start_background()
    return server, service, PartyFiles(certs, "brand")


def _ask_all(
    ctx: DemoContext,
    url: str,
    brand: PartyFiles,
    phones: Sequence[str],
    library: DecoySource,
) -> tuple[dict[Round, list[CovertAnswer]], dict[Round, float], VerifyKey]:
    answers: dict[Round, list[CovertAnswer]] = {}
    seconds: dict[Round, float] = {}
    verify = brand.client_tls().client_context()
    with CovertHttpClient(url, client_name="brand", verify=verify) as http:
        pinned = http.info().signing_key
        for done, rnd in enumerate(ROUNDS):
            ctx.progress(f"covert query ({rnd.name})", done, len(ROUNDS))
            decoys = {"library": library, "random": PhoneDecoys()}.get(rnd.decoys)
            started = time.perf_counter()
            answers[rnd] = http.query(
                list(phones), mode=rnd.mode, amplify=rnd.amplify, n=rnd.n, k_min=K_MIN,
                batch=rnd.batch, decoys=decoys, poll_interval=0.02,
            )  # fmt: skip
            seconds[rnd] = time.perf_counter() - started
        ctx.progress("covert query", len(ROUNDS), len(ROUNDS))
    return answers, seconds, pinned


def _round_line(
    answers: list[CovertAnswer], grades: list[bool], seconds: float, same_as: str
) -> str:
    counts = {s: sum(a.status == s for a in answers) for s in ("hit", "no_record", "declined")}
    bought = sum(bool(a.receipt) for a in answers)
    sizes = [a.n for a in answers]
    hits = [a.m for a in answers]
    return (
        f"{len(answers)} queries: {counts['hit']} hit, {counts['no_record']} no record, "
        f"{counts['declined']} declined · keys bought {bought} · N {min(sizes)}–{max(sizes)}, "
        f"m {min(hits)}–{max(hits)} · {sum(grades)}/{len(grades)} correct"
        + (f" · same answers as {same_as}" if same_as else "")
        + f" · {seconds:.2f} s"
    )


def _billing(
    ledger: Path, pinned: VerifyKey, answers: dict[Round, list[CovertAnswer]], folder: Path
) -> tuple[LedgerReport, dict[str, str]]:
    """Verify the provider's ledger, match the brand's receipts, show a tampered copy fails."""
    report = verify_ledger(ledger, pinned)
    lines = ledger.read_text(encoding="utf-8").splitlines()
    billed = {json.loads(line)["query_id"]: json.loads(line) for line in lines[1:]}
    held = [a.receipt for batch in answers.values() for a in batch if a.receipt]
    for receipt in held:
        parsed = UsageReceipt.verify(pinned, receipt)
        line = billed.get(parsed.query_id)
        if line is None or base64.b64decode(line["receipt"]) != receipt:
            raise IntegrityError(
                f"the brand holds a receipt for {parsed.query_id} not in the ledger"
            )
    if len(held) != len(billed):
        raise IntegrityError(
            f"the ledger bills {len(billed)} key releases; the brand holds {len(held)} receipts"
        )
    tampered = folder / "ledger.tampered.jsonl"
    if len(lines) > 1:
        edited = json.loads(lines[1])
        edited["m"] = int(edited["m"]) + 1
        body = [lines[0], json.dumps(edited, sort_keys=True, separators=(",", ":")), *lines[2:]]
        tampered.write_text("\n".join(body) + "\n", encoding="utf-8")
        try:
            verify_ledger(tampered, pinned)
            tamper = "NOT detected"
        except IntegrityError as exc:
            tamper = f"rejected — {str(exc).replace(str(tampered), tampered.name)}"
    else:
        tamper = "nothing billed, nothing to tamper with"
    section: dict[str, str] = {
        "ledger": str(ledger),
        "chain": (
            f"{report.lines} lines (genesis + {report.lines - 1} billed key releases), "
            f"hash chain intact, {report.lines - 1} receipt signatures (Ed25519) verified "
            "against the key pinned from /covert/v1/info"
        ),
    }
    for client, bill in sorted(report.bills.items()):
        modes = ", ".join(f"{m} {c}" for m, c in sorted(bill.by_mode.items()))
        section[f"client {client}"] = (
            f"{bill.queries} keys bought ({modes}) · Σ N = {bill.total_n:,}, Σ m = {bill.total_m:,}"
        )
    section["brand's receipts"] = (
        f"{len(held)} held, each verifies and is the receipt of a ledger line "
        "(query id, N, m, mode, key digest)"
    )
    section["tampered ledger copy"] = f"{tamper} (line 2's m changed by one)"
    return report, section


def run(ctx: DemoContext) -> dict[str, dict[str, Any]]:
    """Serve the provider's labels, ask covertly in every mode, grade, bill."""
    folder = ctx.folder("covert")
    state_dir = folder / "provider"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    started = time.perf_counter()
    db = _provider_db(ctx, folder / "provider_db.parquet")
    plain = {r["phone"]: [r[c] for c in LABELS] for r in db.to_pylist()}  # grading only, never sent
    index: IndexReport = build_index(
        folder / "provider_db.parquet", state_dir / "index", id_column="phone", labels=LABELS,
        id_type="phone", bucket_target=BUCKET_TARGET, executor=ctx.config.executor,
        executor_options=ctx.executor_options(),
        progress=lambda step, done, total: ctx.progress(f"covert {step}", done, total),
    )  # fmt: skip
    config = ProviderConfig(
        modes=(Mode.RSA, Mode.EC, Mode.BUCKET), max_n=1024, rsa_pool_size=RSA_POOL,
        rsa_bits=RSA_BITS, name="provider",
    )  # fmt: skip
    state = ProviderState(
        load_index(state_dir / "index"), state_dir, config,
        rsa_progress=lambda done, total: ctx.progress("covert RSA key pool", done, total),
    )  # fmt: skip
    setup = time.perf_counter() - started
    asked = _asked(ctx)
    phones = [phone for _, phone, _ in asked]
    members = ctx.tables["brand/members"]
    library = LibraryDecoys(tuple(sorted(set(members["phone"].drop_null().to_pylist()))))
    server, service, brand = _start_server(state, folder / "certs")
    try:
        answers, seconds, pinned = _ask_all(ctx, server.url, brand, phones, library)
    finally:
        server.stop()
        service.close()
    grades = {rnd: [_grade(a, plain.get(a.id)) for a in answers[rnd]] for rnd in ROUNDS}
    psi_tags = {
        r["phone"]: [r[c] for c in LABELS]
        for r in matched_members(ctx).select(["phone", *LABELS]).to_pylist()
    }
    _write_answers(folder / "answers.csv", asked, answers, grades)
    report, billing = _billing(state.ledger.path, pinned, answers, folder)
    (folder / "billing.json").write_text(
        json.dumps(
            {
                "provider": report.provider,
                "lines": report.lines,
                "bills": {c: b.__dict__ for c, b in report.bills.items()},
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    overview: dict[str, Any] = {
        "provider DB": (
            f"{index.rows:,} phones × {len(LABELS)} labels ({', '.join(LABELS)}), "
            f"{index.record_size}-byte records; index + {2**index.bucket_bits} OPRF buckets "
            f"(mean {index.rows / 2**index.bucket_bits:,.0f}) built in {index.seconds:.1f} s "
            f"on the {ctx.config.executor} executor"
        ),
        "RSA key pool": (
            f"{RSA_POOL} × RSA-{RSA_BITS} keys in {state.rsa_pool_seconds:.1f} s "
            f"(generated once, reused; setup total {setup:.1f} s)"
        ),
        "transport": (
            "real HTTP service (FastAPI/uvicorn) on 127.0.0.1 with mutual TLS (atoll certs "
            "init); the brand uses the client SDK (CovertHttpClient)"
        ),
        "asked": (
            f"{len(asked)} brand members: {sum(k for *_, k in asked)} known to the provider, "
            f"{sum(not k for *_, k in asked)} not (as step 5's labeled-PSI match told the brand)"
        ),
    }
    first: dict[str, Round] = {}
    for rnd in ROUNDS:
        base = first.setdefault(rnd.family, rnd)
        same = ""
        if base is not rnd and not rnd.decoys:  # fresh random decoys: m may differ
            equal = [
                (a.status, a.values) == (b.status, b.values)
                for a, b in zip(answers[rnd], answers[base], strict=True)
            ]
            same = base.batch if all(equal) else f"{base.batch}: NO ({sum(equal)}/{len(equal)})"
        overview[rnd.name] = _round_line(answers[rnd], grades[rnd], seconds[rnd], same)
    total = sum(len(g) for g in grades.values())
    overview["graded"] = (
        f"{sum(sum(g) for g in grades.values())}/{total} answers equal the provider's plain "
        "lookup (grading only); known members' labels equal labeled PSI's: "
        + _psi_check(asked, answers, psi_tags)
    )
    overview["k_min rule"] = (
        f"k_min = {K_MIN}: the brand requests the key only when its true slot hits and ≥ {K_MIN} "
        "slots hit; with random decoys (m = 1) it declines, so the provider learns nothing "
        "and bills nothing"
    )
    return {
        _TITLE: overview,
        f"{_TITLE} — per member, graded against the provider's plain lookup": _per_member(
            asked, answers, grades
        ),
        f"{_TITLE} — provider's billing statement (verified ledger)": billing,
    }


def _psi_check(
    asked: Sequence[tuple[str, str, bool]],
    answers: dict[Round, list[CovertAnswer]],
    psi_tags: dict[str, list[Any]],
) -> str:
    checked = agree = 0
    for rnd in ROUNDS:
        for (_, phone, known), answer in zip(asked, answers[rnd], strict=True):
            if known and answer.status == AnswerStatus.HIT:
                checked += 1
                agree += answer.values == psi_tags.get(phone)
    return f"{agree}/{checked}"


def _per_member(
    asked: Sequence[tuple[str, str, bool]],
    answers: dict[Round, list[CovertAnswer]],
    grades: dict[Round, list[bool]],
) -> dict[str, str]:
    short = {"hit": "hit", "no_record": "no record", "declined": "declined", "refused": "refused"}
    out: dict[str, str] = {}
    for i, (member_id, _, known) in enumerate(asked):
        parts: dict[str, str] = {}
        for rnd in ROUNDS:
            a = answers[rnd][i]
            mark = "✓" if grades[rnd][i] else "✗"
            key = "key" if a.receipt else "no key"
            text = f"{short.get(a.status, a.status)} m={a.m}/{a.n} {key} {mark}"
            parts.setdefault(rnd.family, f"{rnd.family}: {text}")
            if not grades[rnd][i]:
                parts[rnd.family] = f"{rnd.family}: {text} ({rnd.batch})"
        label = f"member {member_id} ({'known' if known else 'unknown'})"
        out[label] = " · ".join(parts.values())
    return out


def _write_answers(
    path: Path,
    asked: Sequence[tuple[str, str, bool]],
    answers: dict[Round, list[CovertAnswer]],
    grades: dict[Round, list[bool]],
) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["round", "mode", "amplify", "batch", "member_id", "phone_masked", "known_per_psi",
             "status", "n", "m", "key_requested", "correct", "labels"]
        )  # fmt: skip
        for rnd in ROUNDS:
            for (member_id, phone, known), a, ok in zip(
                asked, answers[rnd], grades[rnd], strict=True
            ):
                requested = a.status in (AnswerStatus.HIT, AnswerStatus.REFUSED)
                writer.writerow(
                    [rnd.name, rnd.mode, f"decoy-{rnd.decoys}" if rnd.decoys else rnd.amplify,
                     rnd.batch, member_id, _mask(phone), known, a.status, a.n, a.m, requested,
                     ok, json.dumps(a.values, ensure_ascii=False)]
                )  # fmt: skip
