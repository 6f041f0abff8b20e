"""``atoll attest``: verify attestation evidence offline and print a JSON verdict.

Why: before a party hands any key to an island it must be able to check the
island's evidence itself, with its own policy, on its own machine, without
trusting the island operator's tooling. ``atoll attest verify`` runs the same
verifiers and policy evaluation the key-release path uses (exit 0 accept,
1 reject, 2 bad input) so it can gate scripts and CI jobs. NVIDIA H100 GPU
evidence is verified the same way (``--nonce`` checks the SPDM nonce); under
a ``--policy`` it is judged only as an add-on claim, never as an island TEE.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from atoll.cli._common import console, fail, out_console
from atoll.errors import AtollError, ConfigError, InputError
from atoll.island.evidence import EvidenceType, verify_evidence
from atoll.island.policy import evaluate, evaluate_gpu_addon, load_policy
from atoll.island.verdict import (
    GPU_NONCE_SIZE,
    GPU_TEE_TYPES,
    REPORT_DATA_SIZE,
    AttestationError,
    PolicyRejected,
    Verdict,
)

app = typer.Typer(
    help="Verify TEE attestation evidence (SGX, TDX, SEV-SNP; NVIDIA H100 as an add-on claim).",
    no_args_is_help=True,
)

_TYPES = ("sgx", "tdx", "sev-snp", "nvidia-h100")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", source=str(path)) from None


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at {text!r} is not an ISO-8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _emit(doc: dict[str, Any]) -> None:
    out_console.print_json(json.dumps(doc))


@app.command("verify")
def verify(
    evidence: Annotated[
        Path,
        typer.Option(help="Quote (SGX/TDX), SEV-SNP report or NVIDIA SPDM report (hex) file."),
    ],
    collateral: Annotated[
        Path | None,
        typer.Option(
            help="DCAP collateral JSON (SGX/TDX), the VCEK certificate (SEV-SNP) or the "
            "GPU device certificate chain PEM, leaf first (nvidia-h100)."
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Verification time, ISO-8601 (default: now, UTC).")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Attestation policy TOML.")] = None,
    tee: Annotated[
        str | None,
        typer.Option("--type", help="Force the evidence type: sgx, tdx, sev-snp, nvidia-h100."),
    ] = None,
    cert_chain: Annotated[
        Path | None, typer.Option(help="SEV-SNP: ASK/ARK PEM (default: the shipped AMD chain).")
    ] = None,
    report_data: Annotated[
        str | None, typer.Option(help="Expected 64-byte report data, hex (policy binding check).")
    ] = None,
    nonce: Annotated[
        str | None, typer.Option(help="nvidia-h100: the expected 32-byte SPDM nonce, hex.")
    ] = None,
) -> None:
    """Verify evidence (+ collateral) at a time, optionally under a policy; print JSON.

    Exit code 0: accepted; 1: rejected (the JSON names the stage and reason);
    2: the inputs could not be read.
    """
    try:
        when = _parse_at(at)
        if tee is not None and tee not in _TYPES:
            raise ConfigError(f"--type must be one of {', '.join(_TYPES)} (got {tee!r})")
        kind: EvidenceType | None = tee  # type: ignore[assignment]
        expected: bytes | None = None
        if report_data is not None:
            try:
                expected = bytes.fromhex(report_data)
            except ValueError:
                raise ConfigError("--report-data must be hex") from None
            if len(expected) != REPORT_DATA_SIZE:
                raise ConfigError(f"--report-data must be {REPORT_DATA_SIZE} bytes")
        gpu_nonce: bytes | None = None
        if nonce is not None:
            try:
                gpu_nonce = bytes.fromhex(nonce)
            except ValueError:
                raise ConfigError("--nonce must be hex") from None
            if len(gpu_nonce) != GPU_NONCE_SIZE:
                raise ConfigError(f"--nonce must be {GPU_NONCE_SIZE} bytes")
        rules = load_policy(policy) if policy is not None else None
        raw = _read(evidence, "evidence")
        extra = _read(collateral, "collateral") if collateral is not None else None
        chain = _read(cert_chain, "certificate chain") if cert_chain is not None else None
    except AtollError as exc:
        raise fail(exc) from None
    verdict: Verdict | None = None
    try:
        verdict = verify_evidence(
            raw, extra, at=when, tee=kind, cert_chain=chain, expected_nonce=gpu_nonce
        )
        if rules is not None and verdict.tee in GPU_TEE_TYPES:
            evaluate_gpu_addon(verdict, rules, expected_nonce=gpu_nonce, now=when)
        elif rules is not None:
            evaluate(verdict, rules, expected_report_data=expected, now=when)
    except AttestationError as exc:
        doc: dict[str, Any] = {
            "accepted": False,
            "stage": exc.stage,
            "field": exc.field,
            "reason": exc.reason,
        }
        if isinstance(exc, PolicyRejected) and verdict is not None:
            doc["verdict"] = verdict.to_dict()
        _emit(doc)
        console.print(f"[bold red]rejected:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1) from None
    except AtollError as exc:
        raise fail(exc) from None
    assert verdict is not None
    _emit(
        {
            "accepted": True,
            "policy": str(policy) if policy is not None else None,
            "claim": "gpu-add-on" if verdict.tee in GPU_TEE_TYPES else "tee",
            "verdict": verdict.to_dict(),
        }
    )
    if rules is None:
        console.print("evidence verified; no --policy given, so no policy was evaluated")
    if verdict.tee in GPU_TEE_TYPES:
        console.print(
            "GPU evidence: chain, signature"
            + (" and nonce" if gpu_nonce is not None else " (nonce NOT checked: no --nonce)")
            + " verified offline; RIM appraisal and OCSP need NVIDIA services and were not done"
        )
