"""1-of-N oblivious transfer keys over ristretto255 (Chou–Orlandi style).

Why: the covert query's fast mode (``ec``) replaces the seed's N RSA private
operations by an oblivious transfer: the provider derives N slot keys, the
client can compute exactly the one at its chosen position, and the provider
cannot tell which. This is the "simplest OT" of T. Chou and C. Orlandi,
*The Simplest Protocol for Oblivious Transfer*, LATINCRYPT 2015 (ePrint
2015/267), in its 1-out-of-n form, over the prime-order group ristretto255
(RFC 9496) so that no cofactor or small-subgroup check is left to get wrong:

* sender: secret ``a``; sends ``A = aG``; keeps ``T = aA``;
* receiver with choice ``c``: secret ``b``; sends ``B = cA + bG``;
* sender: ``k_i = H(ctx, A, B, a*B - i*T)`` for ``i = 0..N-1``;
* receiver: ``k_c = H(ctx, A, B, b*A)``, since ``aB - cT = abG``.

Receiver privacy is perfect: ``bG`` is uniform, so ``B`` is uniform whatever
``c`` is. Sender privacy (the receiver learns only ``k_c``) holds under the
computational Diffie-Hellman assumption in the random-oracle model; the hash
binds ``(A, B)`` and a caller-supplied context (query id, slot batch index)
so keys of different transfers never coincide. The sender side costs two
scalar multiplications (``aB``; ``T`` is computed once per ``a``) and N point
subtractions -- far below N RSA decryptions. Known caveats of CO15's original
UC claim (Genç–Iovino–Rial, ePrint 2017/370) concern simulation against a
malicious receiver who chooses ``B`` adaptively; the covert query relies
only on the properties above (see docs/protocols/covert-query.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from atoll.crypto import Rng, keyed_hash
from atoll.crypto.group import (
    IDENTITY,
    base_mul,
    is_valid_point,
    point_add,
    point_mul,
    point_sub,
    scalar_from_int,
    scalar_random,
)
from atoll.errors import CryptoError

__all__ = [
    "OT_KEY_SIZE",
    "OtReceiverChoice",
    "OtSender",
    "ot_receiver_choose",
    "ot_receiver_key",
    "slot_mask",
]

#: Size of each derived slot key, in bytes.
OT_KEY_SIZE = 32
_INFO = b"atoll/ot/co15-1ofn/v1"
_PERSON = b"atoll-ot-v1"


def _derive(context: bytes, a_point: bytes, b_point: bytes, shared: bytes) -> bytes:
    # H = keyed BLAKE2b (RFC 7693) keyed by the shared point, over the transcript.
    data = _INFO + len(context).to_bytes(2, "big") + context + a_point + b_point
    return keyed_hash(shared, data, size=OT_KEY_SIZE, person=_PERSON)


@dataclass(frozen=True)
class OtSender:
    """The sender's state: secret ``a``, public ``A = aG`` and ``T = aA``."""

    a: bytes
    A: bytes
    T: bytes

    @classmethod
    def new(cls, *, rng: Rng | None = None) -> OtSender:
        """Fresh sender secrets (one per query, or one per micro-batch)."""
        a = scalar_random(rng=rng)
        big_a = base_mul(a)
        return cls(a, big_a, point_mul(a, big_a))

    def keys(self, b_point: bytes, n: int, *, context: bytes) -> list[bytes]:
        """The N slot keys for the receiver's ``B`` (validated; CryptoError if bad)."""
        if not 1 <= n <= 1 << 20:
            raise CryptoError(f"OT group size out of range: {n}")
        if not is_valid_point(b_point):
            raise CryptoError("peer sent an invalid OT point B")
        current = point_mul(self.a, b_point)  # a*B, then subtract T once per slot
        out = []
        for _ in range(n):
            # a*B - i*T is the identity only if B = iA: still a well-defined key.
            out.append(_derive(context, self.A, b_point, current))
            current = point_sub(current, self.T)
        return out


@dataclass(frozen=True)
class OtReceiverChoice:
    """The receiver's secret ``b``, its choice and the point ``B`` it sends."""

    b: bytes
    choice: int
    B: bytes


def ot_receiver_choose(a_point: bytes, choice: int, *, rng: Rng | None = None) -> OtReceiverChoice:
    """Choose slot ``choice``: ``B = choice*A + bG`` (validates the sender's ``A``)."""
    if not is_valid_point(a_point):
        raise CryptoError("peer sent an invalid OT point A")
    if choice < 0:
        raise CryptoError("OT choice must be non-negative")
    while True:
        b = scalar_random(rng=rng)
        b_g = base_mul(b)
        big_b = b_g if choice == 0 else point_add(point_mul(scalar_from_int(choice), a_point), b_g)
        if big_b != IDENTITY:  # probability ~2^-252; resample rather than send the identity
            return OtReceiverChoice(b, choice, big_b)


def ot_receiver_key(a_point: bytes, chosen: OtReceiverChoice, *, context: bytes) -> bytes:
    """The receiver's key ``H(ctx, A, B, b*A)`` -- equal to the sender's ``k_choice``."""
    return _derive(context, a_point, chosen.B, point_mul(chosen.b, a_point))


_MASK_KEY = b"atoll/covert/slot-mask/v1"


def slot_mask(secret: bytes, *, context: bytes, length: int) -> bytes:
    """``length`` pseudorandom bytes from a slot secret (the covert query's per-slot KDF).

    ``seed = BLAKE2b-512(key=const, len(ctx) || ctx || secret)``, then
    BLAKE2b-512 keyed by ``seed`` over a 32-bit block counter (a PRF in
    counter mode). ``secret`` is an OT key or a decrypted RSA value; the
    context binds the batch, query and slot.
    """
    if not secret or not 0 <= length <= 1 << 24:
        raise CryptoError("slot_mask needs a secret and a length of at most 16 MiB")
    data = len(context).to_bytes(2, "big") + context + secret
    seed = keyed_hash(_MASK_KEY, data, size=64, person=b"atoll-cq-mask")
    blocks = (length + 63) // 64
    out = b"".join(keyed_hash(seed, i.to_bytes(4, "big"), size=64) for i in range(blocks))
    return out[:length]
