"""An independent Python model of the r1os economy, to check the contracts to the wei.

Written from the rules in docs/economy.md, not from the Vyper sources: if a contract and this
model disagree, one of them is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import keccak, to_canonical_address

WEI = 10**18
MAX_SUPPLY = 161_803_398 * WEI

# Node Deeds
ND_MAX_LICENCES = 46_224
ND_MAX_MINING = MAX_SUPPLY * 45 // 100 // ND_MAX_LICENCES  # 45% of supply shared by all deeds
ND_MINING_EPOCHS = 36 * 30
ND_RELEASE = ND_MAX_MINING // ND_MINING_EPOCHS
ND_TIERS_USD = (500, 750, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 7000, 9500)
ND_TIERS_UNITS = (89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946, 17711)
ND_BURN_PERCENT, ND_LP_PERCENT = 20, 50  # the company gets the remaining 30%

# Master Node Deeds and the Genesis Node Deed
MND_MAX = 500
MND_MAX_PER_HOLDER = MAX_SUPPLY * 2 // 100
MND_MAX_TOTAL = MAX_SUPPLY * 261 // 1000
MND_MINING_EPOCHS = 30 * 30
MND_PRODUCTION_CLIFF = 223
GND_TOTAL = MAX_SUPPLY * 289 // 1000
GND_MINING_EPOCHS = 365
GND_FIRST_EPOCH = 1

# PoAI
POAI_BURN_PERCENT = 15

MAX_AVAILABILITY = 255


def epoch_of(timestamp: int, genesis: int, epoch_seconds: int) -> int:
    if timestamp < genesis:
        raise ValueError("before genesis")
    return (timestamp - genesis) // epoch_seconds


# --- buying -------------------------------------------------------------------------------------


def tier_of(sold_before: int) -> int | None:
    """Tier (1-based) of the next deed after `sold_before` deeds were sold; None when sold out."""
    boundary = 0
    for i, units in enumerate(ND_TIERS_UNITS):
        boundary += units
        if sold_before < boundary:
            return i + 1
    return None


def nd_price(tier: int, r1_usd_price: int = WEI) -> int:
    """R1 wei for one deed of `tier` when one R1 is worth `r1_usd_price / 1e18` USD."""
    usd = ND_TIERS_USD[tier - 1]
    return usd * WEI * WEI // r1_usd_price


@dataclass(frozen=True)
class Split:
    burned: int
    lp: int
    company: int


def nd_split(price: int) -> Split:
    burned = price * ND_BURN_PERCENT // 100
    lp = price * ND_LP_PERCENT // 100
    return Split(burned, lp, price - burned - lp)


# --- rewards ------------------------------------------------------------------------------------


def reward(availabilities: Sequence[int], release: int, already_claimed: int, cap: int) -> int:
    """Per epoch: release x a / 255 (rounded down); in all: never past the licence's cap."""
    total = 0
    for a in availabilities:
        if not 0 <= a <= MAX_AVAILABILITY:
            raise ValueError("availability out of range")
        total += release * a // MAX_AVAILABILITY
    return min(total, cap - already_claimed)


def mnd_release(assigned: int) -> int:
    return assigned // MND_MINING_EPOCHS


def gnd_release() -> int:
    return GND_TOTAL // GND_MINING_EPOCHS


def mnd_first_mining_epoch(assign_epoch: int, cliff_epochs: int) -> int:
    return max(assign_epoch, cliff_epochs)


def vested(assigned: int, release: int, start: int, epoch: int) -> int:
    """R1 an always-available licence has earned for the ended epochs before `epoch`."""
    return min(max(0, epoch - start) * release, assigned)


# --- PoAI ---------------------------------------------------------------------------------------


def poai_split(price_per_node_epoch: int) -> tuple[int, int]:
    """(paid to the operator, burned) for one node and one epoch."""
    burned = price_per_node_epoch * POAI_BURN_PERCENT // 100
    return price_per_node_epoch - burned, burned


# --- digests ------------------------------------------------------------------------------------


def eip191(inner: bytes) -> bytes:
    assert len(inner) == 32
    return keccak(b"\x19Ethereum Signed Message:\n32" + inner)


def availability_inner(node: str, first_epoch: int, availabilities: Sequence[int]) -> bytes:
    last_epoch = first_epoch + len(availabilities) - 1
    return keccak(
        to_canonical_address(node)
        + first_epoch.to_bytes(32, "big")
        + last_epoch.to_bytes(32, "big")
        + bytes(availabilities)
    )


def attestation_inner(escrow: str, job_id: int, epoch: int, nodes: Sequence[str]) -> bytes:
    words = b"".join(bytes(12) + to_canonical_address(n) for n in nodes)
    return keccak(
        to_canonical_address(escrow) + job_id.to_bytes(32, "big") + epoch.to_bytes(32, "big") + words
    )
