"""Attested key release: a party's dataset key reaches the island only after verification.

Why: "will not run on the wrong program" is really "will not get keys"
(``shared/reference/tee-attestation.md`` §0.3). An island binary can always
be started somewhere -- modified, in debug mode, simulated -- so the
guarantee is that each data owner releases its key only to evidence that
verifies against the owner's own :class:`~atoll.island.policy.AttestationPolicy`
*and* binds the exact public key the key is wrapped to.

Binding (64 bytes, the report-data field SGX/TDX/SEV-SNP sign)::

    report_data = SHA-512 over u32-length-prefixed parts:
        "atoll-island-report-v1", island HPKE public key (32),
        client nonce (32), job-manifest hash (32), island receipt key (32)

The island's HPKE key is ephemeral (one per job session, generated inside
the island and never leaving it); the nonce is the party's own fresh random
value (replay protection); the job-manifest hash pins *what* the key is
released for; the receipt key makes the island's signed receipts
attributable to the attested island.

Flow (one party; every party does the same on its own)::

    party                                   island
      nonce = 32 random bytes  ───────────▶ session(job).attest(nonce)
                               ◀─────────── EvidenceBundle(evidence, hpke_pk, receipt_key)
      verdict = verify_bundle(bundle, policy, nonce, job_hash)   # raises on any failure
      wrapped = wrap_dataset_key(bundle, key, party, dataset, version)
                               ───────────▶ session.unwrap(wrapped, nonce, ...)  (nonce single-use)

The release request is signed with the party's manifest-signing key (the
one the job manifest pins for that party, :func:`sign_release` /
:func:`verify_release`), so nobody else can release -- or overwrite -- a
key in that party's name.

``wrap_dataset_key`` is HPKE (RFC 9180, :mod:`atoll.crypto.hpke`) with
``info`` = SHA-512 transcript of (job hash, nonce, party, dataset id,
version), so a wrapped key cannot be replayed into another job, dataset or
version, and unwrapping it needs the ephemeral private key of *this* session.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atoll.crypto import constant_time_equal
from atoll.crypto.hpke import HpkePrivateKey, hpke_seal, transcript_hash
from atoll.crypto.sign import SigningKey, VerifyKey, open_signed, sign, verify
from atoll.errors import (
    ConfigError,
    CryptoError,
    DecryptionError,
    LocalProtocolError,
    RemoteProtocolError,
)
from atoll.island.evidence import verify_evidence
from atoll.island.evidence.simulated import verify_simulated
from atoll.island.policy import AttestationPolicy, evaluate
from atoll.island.verdict import EvidenceFormatError, Verdict

__all__ = [
    "BUNDLE_VERSION",
    "NONCE_SIZE",
    "RELEASE_CONTEXT",
    "EvidenceBundle",
    "JobSession",
    "new_nonce",
    "release_info",
    "report_data",
    "sign_release",
    "verify_bundle",
    "verify_release",
    "wrap_dataset_key",
]

#: ``atoll_evidence_bundle`` version in the bundle JSON.
BUNDLE_VERSION = 1
#: Size of a client nonce and of a job-manifest hash.
NONCE_SIZE = 32
_REPORT_DOMAIN = b"atoll-island-report-v1"
_RELEASE_DOMAIN = b"atoll-key-release-v1"
_REQUEST_DOMAIN = b"atoll-key-release-request-v1"
#: Signature context of key-release requests.
RELEASE_CONTEXT = b"atoll/key-release/v1"
_ZERO_JOB = bytes(32)


def new_nonce() -> bytes:
    """A fresh 32-byte client nonce."""
    return os.urandom(NONCE_SIZE)


def _check32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ConfigError(f"{what} must be 32 bytes")
    return bytes(value)


def report_data(
    *, hpke_public_key: bytes, nonce: bytes, job_hash: bytes, receipt_key: bytes
) -> bytes:
    """The 64-byte report data binding key, nonce, job and receipt key (module docstring)."""
    return transcript_hash(
        _REPORT_DOMAIN,
        _check32(hpke_public_key, "HPKE public key"),
        _check32(nonce, "nonce"),
        _check32(job_hash, "job hash"),
        _check32(receipt_key, "receipt key"),
    )


def release_info(
    *, job_hash: bytes, nonce: bytes, party: str, dataset_id: str, version: int
) -> bytes:
    """The HPKE ``info`` a dataset key is wrapped under (binds job, nonce, party, dataset)."""
    return transcript_hash(
        _RELEASE_DOMAIN,
        _check32(job_hash, "job hash"),
        _check32(nonce, "nonce"),
        party.encode("utf-8"),
        dataset_id.encode("utf-8"),
        version.to_bytes(8, "big"),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _opt_b64(obj: Mapping[str, Any], key: str) -> bytes | None:
    return None if obj.get(key) is None else _unb64(obj, key)


def _unb64(obj: Mapping[str, Any], key: str) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str):
        raise RemoteProtocolError(f"evidence bundle: field {key!r} missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError(f"evidence bundle: field {key!r} is not base64") from None


@dataclass(frozen=True)
class EvidenceBundle:
    """What the island answers to an attestation request (JSON over the wire)."""

    tee: str
    evidence: bytes
    collateral: bytes | None
    hpke_public_key: bytes
    receipt_key: bytes
    job_hash: bytes
    nonce: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON form (bytes as base64)."""
        return {
            "atoll_evidence_bundle": BUNDLE_VERSION,
            "tee": self.tee,
            "evidence": _b64(self.evidence),
            "collateral": _b64(self.collateral),
            "hpke_public_key": _b64(self.hpke_public_key),
            "receipt_key": _b64(self.receipt_key),
            "job_hash": self.job_hash.hex(),
            "nonce": _b64(self.nonce),
        }

    @classmethod
    def from_json(cls, obj: object) -> EvidenceBundle:
        """Parse a bundle from a (hostile) peer; RemoteProtocolError on malformed input."""
        if not isinstance(obj, dict) or obj.get("atoll_evidence_bundle") != BUNDLE_VERSION:
            raise RemoteProtocolError("not an evidence bundle of version 1")
        tee = obj.get("tee")
        if tee not in ("simulated", "sgx", "tdx", "sev-snp"):
            raise RemoteProtocolError(f"evidence bundle: unknown tee {tee!r}")
        try:
            job_hash = bytes.fromhex(str(obj.get("job_hash")))
        except ValueError:
            raise RemoteProtocolError("evidence bundle: job_hash is not hex") from None
        evidence = _unb64(obj, "evidence")
        hpke_pk = _unb64(obj, "hpke_public_key")
        receipt_key = _unb64(obj, "receipt_key")
        nonce = _unb64(obj, "nonce")
        for name, value in (
            ("hpke_public_key", hpke_pk),
            ("receipt_key", receipt_key),
            ("nonce", nonce),
            ("job_hash", job_hash),
        ):
            if len(value) != 32:
                raise RemoteProtocolError(f"evidence bundle: {name} must be 32 bytes")
        if len(evidence) > 1 << 20:
            raise RemoteProtocolError("evidence bundle: evidence larger than 1 MiB")
        return cls(
            tee=str(tee),
            evidence=evidence,
            collateral=_opt_b64(obj, "collateral"),
            hpke_public_key=hpke_pk,
            receipt_key=receipt_key,
            job_hash=job_hash,
            nonce=nonce,
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (to save next to a verdict)."""
        return json.dumps(self.to_json(), sort_keys=True).encode("utf-8")


def verify_bundle(
    bundle: EvidenceBundle,
    policy: AttestationPolicy,
    *,
    nonce: bytes,
    job_hash: bytes | None,
    now: datetime | None = None,
) -> Verdict:
    """Verify the island's evidence against *our* policy, nonce and job; return the verdict.

    Raises :class:`~atoll.island.verdict.AttestationError` (a
    :class:`~atoll.island.verdict.PolicyRejected` for policy rules) on any
    failure: unverifiable evidence, a measurement the policy does not allow,
    simulated evidence under a policy that refuses it, a stale or foreign
    nonce, another job, or report data that does not bind the presented keys.
    """
    moment = datetime.now(UTC) if now is None else now
    job = _ZERO_JOB if job_hash is None else _check32(job_hash, "job hash")
    if not constant_time_equal(bundle.nonce, _check32(nonce, "nonce")):
        raise EvidenceFormatError("the island answered another nonce (replay?)", stage="binding")
    if not constant_time_equal(bundle.job_hash, job):
        raise EvidenceFormatError(
            "the island's evidence is for another job manifest", stage="binding", field="job_hash"
        )
    if bundle.tee == "simulated":
        verdict = verify_simulated(bundle.evidence, now=moment)
    else:
        verdict = verify_evidence(bundle.evidence, bundle.collateral, at=moment)
        if verdict.tee != bundle.tee:
            raise EvidenceFormatError(
                f"bundle says {bundle.tee} but the evidence is {verdict.tee}", stage="detect"
            )
    expected = report_data(
        hpke_public_key=bundle.hpke_public_key,
        nonce=bundle.nonce,
        job_hash=bundle.job_hash,
        receipt_key=bundle.receipt_key,
    )
    evaluate(verdict, policy, expected_report_data=expected, now=moment)
    return verdict


def wrap_dataset_key(
    bundle: EvidenceBundle, dataset_key: bytes, *, party: str, dataset_id: str, version: int
) -> bytes:
    """HPKE-seal ``dataset_key`` to the attested island key (call after :func:`verify_bundle`)."""
    info = release_info(
        job_hash=bundle.job_hash,
        nonce=bundle.nonce,
        party=party,
        dataset_id=dataset_id,
        version=version,
    )
    return hpke_seal(bundle.hpke_public_key, dataset_key, info=info)


def _request_digest(
    *, job_hash: bytes, nonce: bytes, party: str, dataset_id: str, version: int, wrapped: bytes
) -> bytes:
    return transcript_hash(
        _REQUEST_DOMAIN,
        _check32(job_hash, "job hash"),
        bytes(nonce),
        party.encode("utf-8"),
        dataset_id.encode("utf-8"),
        version.to_bytes(8, "big"),
        bytes(wrapped),
    )


def sign_release(
    key: SigningKey,
    *,
    job_hash: bytes,
    nonce: bytes,
    party: str,
    dataset_id: str,
    version: int,
    wrapped: bytes,
) -> bytes:
    """The party's signature over a key-release request (job, nonce, slot, wrapped key)."""
    digest = _request_digest(
        job_hash=job_hash,
        nonce=nonce,
        party=party,
        dataset_id=dataset_id,
        version=version,
        wrapped=wrapped,
    )
    return sign(key, digest, context=RELEASE_CONTEXT)


def verify_release(
    key: VerifyKey,
    signature: bytes,
    *,
    job_hash: bytes,
    nonce: bytes,
    party: str,
    dataset_id: str,
    version: int,
    wrapped: bytes,
) -> None:
    """Check a key-release request's signature; RemoteProtocolError if it is not ``party``'s."""
    digest = _request_digest(
        job_hash=job_hash,
        nonce=nonce,
        party=party,
        dataset_id=dataset_id,
        version=version,
        wrapped=wrapped,
    )
    try:
        _, _, payload = open_signed(signature)
        verify(key, signature, context=RELEASE_CONTEXT)
    except CryptoError as exc:
        raise RemoteProtocolError(
            f"key release for {party}/{dataset_id} v{version} "
            f"is not signed by {party}'s key ({exc})"
        ) from None
    if not constant_time_equal(payload, digest):
        raise RemoteProtocolError("key release signature covers another request")


class JobSession:
    """The island side of key release for one job: ephemeral HPKE key, nonces, unwrapped keys.

    ``quote`` is the backend's evidence function (report data in, evidence
    out). Nonces are remembered when evidence is issued and consumed by the
    first key release that uses them, per (party, dataset, version).
    """

    def __init__(
        self,
        *,
        job_hash: bytes,
        receipt_key: bytes,
        tee: str,
        quote: Any,
        collateral: bytes | None = None,
        max_nonces: int = 1024,
    ) -> None:
        self.job_hash = _check32(job_hash, "job hash")
        self.receipt_key = _check32(receipt_key, "receipt key")
        self.tee = tee
        self._quote = quote
        self._collateral = collateral
        self._hpke = HpkePrivateKey.generate()
        self._nonces: dict[bytes, set[tuple[str, str, int]]] = {}
        self._keys: dict[tuple[str, str, int], bytearray] = {}
        self._max_nonces = max_nonces
        self._lock = threading.Lock()

    @property
    def hpke_public_key(self) -> bytes:
        """The session's ephemeral HPKE public key."""
        return self._hpke.public_bytes

    def attest(self, nonce: bytes) -> EvidenceBundle:
        """Issue evidence binding this session's keys to ``nonce`` and the job."""
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            raise RemoteProtocolError(f"nonce must be {NONCE_SIZE} bytes")
        # A closed session still attests (recipients verify receipts after the
        # run); it can no longer unwrap anything.
        with self._lock:
            if nonce in self._nonces:
                raise RemoteProtocolError("nonce already used; send a fresh one")
            if len(self._nonces) >= self._max_nonces:
                raise RemoteProtocolError("too many attestation requests for this job")
            self._nonces[nonce] = set()
        data = report_data(
            hpke_public_key=self.hpke_public_key,
            nonce=nonce,
            job_hash=self.job_hash,
            receipt_key=self.receipt_key,
        )
        return EvidenceBundle(
            tee=self.tee,
            evidence=self._quote(data),
            collateral=self._collateral,
            hpke_public_key=self.hpke_public_key,
            receipt_key=self.receipt_key,
            job_hash=self.job_hash,
            nonce=nonce,
        )

    def unwrap(
        self, wrapped: bytes, *, nonce: bytes, party: str, dataset_id: str, version: int
    ) -> None:
        """Unwrap and keep a released dataset key (nonce must be one we issued, unused for it)."""
        slot = (party, dataset_id, version)
        if self._hpke.destroyed:
            raise LocalProtocolError("this job session is closed (its keys were burned)")
        with self._lock:
            used = self._nonces.get(bytes(nonce))
            if used is None:
                raise RemoteProtocolError("key release names a nonce this island never attested")
            if slot in used:
                raise RemoteProtocolError("this nonce was already used to release that key")
            info = release_info(
                job_hash=self.job_hash,
                nonce=bytes(nonce),
                party=party,
                dataset_id=dataset_id,
                version=version,
            )
            try:
                key = self._hpke.open(wrapped, info=info)
            except DecryptionError:
                raise RemoteProtocolError(
                    f"wrapped key for {party}/{dataset_id} v{version} does not open "
                    "(wrapped for another island, job, nonce or dataset)"
                ) from None
            if len(key) != 32:
                raise RemoteProtocolError("a released dataset key must be 32 bytes")
            used.add(slot)
            old = self._keys.get(slot)
            if old is not None:
                old[:] = bytes(len(old))
            self._keys[slot] = bytearray(key)

    def released(self) -> set[tuple[str, str, int]]:
        """The (party, dataset, version) keys released so far."""
        with self._lock:
            return set(self._keys)

    def dataset_key(self, party: str, dataset_id: str, version: int) -> bytes:
        """A released key (LocalProtocolError if it was not released)."""
        with self._lock:
            key = self._keys.get((party, dataset_id, version))
            if key is None:
                raise LocalProtocolError(
                    f"{party} has not released the key of {dataset_id} v{version}"
                )
            return bytes(key)

    @property
    def closed(self) -> bool:
        """True once :meth:`destroy` ran."""
        return self._hpke.destroyed

    def destroy(self) -> None:
        """Zero every released key and the session's HPKE private key (burn after use)."""
        with self._lock:
            for key in self._keys.values():
                key[:] = bytes(len(key))
            self._keys.clear()
            self._hpke.destroy()
