"""Pairwise masks: participants hide their updates so that only the sum of all of them comes out.

Each pair of participants (i, j) agrees on a seed without talking: ECDH between i's node key and j's
public key (the same point both ways; public keys are known from heartbeats' `0xai_` addresses), then
HKDF-SHA256 with the network, job, round and the pair's two addresses (sorted) in the info, so each
round of each job has fresh seeds. Participants are ordered by address (lowercase hex); participant i
adds `PRG(s_ij)` for every j after it and subtracts it for every j before it:

    mask_i = sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)

so the masks of all participants cancel in the sum. The update i sends is `x_i + mask_i` (in clear
for `masked`, encrypted for `ckks+masked`: then even the owner, who decrypts, sees only the sum).

PRG: SHAKE-256 of the seed, read as unsigned 64-bit little-endian words; each word's top 47 bits give
an integer u in [0, 2^47), and the value is (u - 2^46) * 2^-24: uniform over the multiples of 2^-24 in
[-R, R) with R = `MASK_RANGE` = 2^22. Values on that grid add exactly in float64 while sums stay below
2^29 (2^53 grid steps): a mask (up to 127 terms) is exact, and the masks of up to 22 participants
cancel to exactly 0 (beyond, to within float64 rounding); and SHAKE-256 is the same on every machine
(unlike numpy's generators, whose streams may change between versions).

What it hides, and what not: each coordinate of a masked update is the value plus a sum of uniform
terms of range R = 2^22 (about 4.2e6), so the masked value's distribution moves by at most about
|x| / (2R) in statistical distance: values much smaller than R (weights times sample counts, up to
1e3-1e4: a distance of 1e-4 to 1e-3 per coordinate) are statistically hidden, not information-
theoretically; values near R or larger are not. A mask with two participants is the one pairwise term
both know: with two participants each learns the other's update from the sum anyway.

Precision: masks cancel exactly; what is left is float64 rounding of `x_i + mask_i` (|mask_i| up to
(n - 1) R, so about 2^-30 (n - 1) per value) and, under CKKS, CKKS noise (`r1os.edil._ckks.PRECISION`;
measured the same with and without masks). Under CKKS, `x_i + mask_i` must stay inside the context's
`max_input` (2^28 by default): guaranteed for up to 63 participants with |x_i| < 2^22 (a mask of
n - 1 terms rarely comes near (n - 1) R: its spread is R sqrt((n - 1) / 3)).

Dropout: if participant d's update never arrives, the survivors' masks no longer cancel: each survivor
i still holds its term +-PRG(s_id) with d. Each survivor reveals that term alone (`recovery_term`,
nothing about its own update), and `unmask_sum` subtracts them. The service must then never accept d's
update for that round (with the survivors' terms, d's mask is known and its late update would be open),
must ask for recovery terms only for participants that really dropped, and must not aggregate fewer
than two updates (the sum of one update is that update). Unlike Bonawitz et al.'s SecAgg, there is no
second self-mask, so an aggregator that lies about who dropped to get d's terms and also holds d's
masked update learns d's update: recovery terms go only to the owner's aggregation, after the deadline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import coincurve
import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from r1os.edil._errors import EdilError
from r1os.errors import R1osError
from r1os.identity import NodeKey, address_from_public_key

#: Range of one pairwise mask term: uniform over [-MASK_RANGE, MASK_RANGE).
MASK_RANGE = 2.0**22
#: Mask values are multiples of 2^-MASK_FRACTION_BITS.
MASK_FRACTION_BITS = 24
#: Most participants whose masks are guaranteed to add exactly and stay inside the CKKS range.
MAX_PARTICIPANTS = 128
#: Longest vector masked (SHAKE output of 8 bytes per value).
MAX_LENGTH = 1 << 24
_INT_BITS = 47  # log2(2 * MASK_RANGE * 2^MASK_FRACTION_BITS)
_INFO = "r1os edil mask v1"


class MaskError(EdilError):
    """Masks cannot be made as asked."""

    cause = "bad_mask"


@dataclass(frozen=True)
class MaskContext:
    """What a round's masks are bound to: every participant uses the same one."""

    network: str
    job: str
    round: int
    length: int

    def __post_init__(self) -> None:
        if not 1 <= self.length <= MAX_LENGTH:
            raise MaskError(f"a masked vector has 1..{MAX_LENGTH} values, not {self.length}")
        if self.round < 0:
            raise MaskError(f"round {self.round} is negative")
        for name, value in (("network", self.network), ("job", self.job)):
            if not value or len(value) > 256 or "\n" in value:
                raise MaskError(f"{name} is 1-256 characters on one line")


def _address(public_key: bytes) -> str:
    try:
        return address_from_public_key(bytes(public_key)).lower()
    except R1osError:
        raise MaskError("a peer's public key is not a valid secp256k1 key") from None


def pair_seed(me: NodeKey, peer_public_key: bytes, ctx: MaskContext) -> bytes:
    """The 32-byte seed `me` shares with the peer for this round (the peer derives the same)."""
    peer = _address(peer_public_key)
    mine = me.address.lower()
    if peer == mine:
        raise MaskError("a participant shares no mask with itself")
    try:
        shared = coincurve.PublicKey(bytes(peer_public_key)).multiply(me.private_key).format(compressed=True)
    except (ValueError, TypeError):
        raise MaskError("a peer's public key is not a valid secp256k1 key") from None
    lo, hi = sorted((mine, peer))
    info = f"{_INFO}\nnetwork: {ctx.network}\njob: {ctx.job}\nround: {ctx.round}\npair: {lo} {hi}".encode()
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared)


def prg(seed: bytes, length: int) -> np.ndarray:
    """`length` values uniform over the multiples of 2^-24 in [-MASK_RANGE, MASK_RANGE), from `seed`."""
    if not 1 <= length <= MAX_LENGTH:
        raise MaskError(f"1..{MAX_LENGTH} values, not {length}")
    words = np.frombuffer(hashlib.shake_256(seed).digest(8 * length), dtype="<u8")
    ints = (words >> np.uint64(64 - _INT_BITS)).astype(np.int64) - (1 << (_INT_BITS - 1))
    return ints.astype(np.float64) * 2.0**-MASK_FRACTION_BITS


def _term(me: NodeKey, peer_public_key: bytes, ctx: MaskContext) -> np.ndarray:
    """The term `me` adds for this peer: +PRG when `me` comes first by address, -PRG otherwise."""
    values = prg(pair_seed(me, peer_public_key, ctx), ctx.length)
    return values if me.address.lower() < _address(peer_public_key) else -values


def mask_for(me: NodeKey, peers_public_keys: Iterable[bytes], ctx: MaskContext) -> np.ndarray:
    """The mask `me` adds to its update this round (`peers_public_keys` may include `me`'s own key)."""
    mine = me.address.lower()
    peers: dict[str, bytes] = {}
    for pk in peers_public_keys:
        address = _address(pk)
        if address != mine:
            peers[address] = bytes(pk)
    if not peers:
        raise MaskError("masks need at least one other participant")
    if len(peers) + 1 > MAX_PARTICIPANTS:
        raise MaskError(f"{len(peers) + 1} participants, masks support at most {MAX_PARTICIPANTS}")
    mask = np.zeros(ctx.length, dtype=np.float64)
    for _, pk in sorted(peers.items()):
        mask += _term(me, pk, ctx)
    return mask


def recovery_term(me: NodeKey, dropped_public_key: bytes, ctx: MaskContext) -> np.ndarray:
    """What `me`'s mask holds for the dropped participant: the service subtracts it from the sum of the
    survivors' updates (`unmask_sum`). Reveals nothing of `me`'s own update."""
    return _term(me, dropped_public_key, ctx)


def unmask_sum(total: np.ndarray, recovery_terms: Sequence[np.ndarray]) -> np.ndarray:
    """The sum of the survivors' updates: their masked sum minus every survivor's term with every
    dropped participant."""
    out = np.array(total, dtype=np.float64, copy=True)
    if out.ndim != 1:
        raise MaskError(f"a sum is a 1-dimensional vector, not of shape {out.shape}")
    for term in recovery_terms:
        arr = np.asarray(term, dtype=np.float64)
        if arr.shape != out.shape:
            raise MaskError(
                f"a recovery term of shape {arr.shape}, the sum is {out.shape}", cause="wrong_size"
            )
        if not np.all(np.isfinite(arr)) or float(np.max(np.abs(arr), initial=0.0)) > MASK_RANGE:
            raise MaskError("a recovery term holds values beyond the mask range", cause="malformed")
        out -= arr
    return out
