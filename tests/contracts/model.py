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


# --- MND release: logistic curve scaled by adoption ---------------------------------------------
# From docs/economy.md ("Master Node Deeds"): after the cliff an MND earns, for the epoch x epochs
# after its mining start, assigned * w(min(x, 899)) // sum(w) at full availability, where
# w(x) = floor(2^32 * logistic(5 * ((x + 1/2) / 900 - 0.7))); each epoch's release is weighted by
# availability / 255 (rounded per epoch); the earned total stops at the assignment; what is paid
# in all is earned * adoption // 10^18, adoption = min(1, (sold / 7,500 + volume / 5e12) / 2) in
# 18-decimal fixed point (each ratio rounded down, then the mean).

ADOPTION_ONE = 10**18
ADOPTION_ND_TARGET = 7_500
ADOPTION_VOLUME_TARGET = 5_000_000 * 10**6
MND_CURVE_K = 5
MND_CURVE_MIDPOINT = "0.7"


def _mnd_curve() -> tuple[int, ...]:
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 80
        n = Decimal(MND_MINING_EPOCHS)
        weights = []
        for x in range(MND_MINING_EPOCHS):
            z = MND_CURVE_K * ((Decimal(x) + Decimal("0.5")) / n - Decimal(MND_CURVE_MIDPOINT))
            logistic = 1 / (1 + (-z).exp())
            weights.append(int((logistic * 2**32).to_integral_value(rounding="ROUND_FLOOR")))
    return tuple(weights)


MND_CURVE = _mnd_curve()
MND_CURVE_SUM = sum(MND_CURVE)


def mnd_curve_release(assigned: int, offset: int) -> int:
    """R1 an MND earns at full availability in the epoch `offset` epochs after its mining start."""
    return assigned * MND_CURVE[min(offset, MND_MINING_EPOCHS - 1)] // MND_CURVE_SUM


def adoption(nd_sold: int, volume: int) -> int:
    nd_score = nd_sold * ADOPTION_ONE // ADOPTION_ND_TARGET
    volume_score = volume * ADOPTION_ONE // ADOPTION_VOLUME_TARGET
    return min((nd_score + volume_score) // 2, ADOPTION_ONE)


def mnd_earned(assigned: int, first_offset: int, availabilities: Sequence[int]) -> int:
    """Curve release x availability / 255 over consecutive epochs from `first_offset`, uncapped."""
    total = 0
    for i, a in enumerate(availabilities):
        if not 0 <= a <= MAX_AVAILABILITY:
            raise ValueError("availability out of range")
        total += mnd_curve_release(assigned, first_offset + i) * a // MAX_AVAILABILITY
    return total


@dataclass
class MndAccount:
    """One MND's state in the model: what it has earned (capped) and been paid."""

    assigned: int
    earned: int = 0
    paid: int = 0
    offset: int = 0  # next epoch to claim, counted from the mining start

    def owed(self, adoption_now: int) -> int:
        return self.earned * adoption_now // ADOPTION_ONE

    def claim(self, availabilities: Sequence[int], adoption_now: int) -> int:
        self.earned = min(self.earned + mnd_earned(self.assigned, self.offset, availabilities), self.assigned)
        self.offset += len(availabilities)
        return self.release(adoption_now)

    def release(self, adoption_now: int) -> int:
        pay = max(0, self.owed(adoption_now) - self.paid)
        self.paid += pay
        return pay

    @property
    def withheld(self) -> int:
        return self.earned - self.paid


# --- the R1/USDC pool (Uniswap V2's constant-product rules, from its whitepaper) --------------

UNI_FEE_PER_MILLE = 3  # 0.3% of every swap's input stays in the pool


def uni_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """Output of a swap: x * y = k on the input after the fee, rounded down (the pair's check)."""
    kept = amount_in * (1000 - UNI_FEE_PER_MILLE)
    return kept * reserve_out // (reserve_in * 1000 + kept)


@dataclass(frozen=True)
class Pool:
    r1: int
    usdc: int
    lp_supply: int

    def usd_per_r1(self) -> int:
        """Spot price, USD per R1 with 18 decimals (USDC has 6)."""
        return self.usdc * 10**30 // self.r1

    def sell_r1(self, amount: int) -> tuple[Pool, int]:
        out = uni_amount_out(amount, self.r1, self.usdc)
        return Pool(self.r1 + amount, self.usdc - out, self.lp_supply), out

    def buy_r1(self, usdc_in: int) -> tuple[Pool, int]:
        out = uni_amount_out(usdc_in, self.usdc, self.r1)
        return Pool(self.r1 - out, self.usdc + usdc_in, self.lp_supply), out

    def add(self, r1_max: int, usdc_max: int) -> tuple[Pool, int, int, int]:
        """The router's addLiquidity: (pool, R1 used, USDC used, LP tokens minted)."""
        usdc_for_all_r1 = r1_max * self.usdc // self.r1
        if usdc_for_all_r1 <= usdc_max:
            r1_used, usdc_used = r1_max, usdc_for_all_r1
        else:
            r1_used, usdc_used = usdc_max * self.r1 // self.usdc, usdc_max
        minted = min(r1_used * self.lp_supply // self.r1, usdc_used * self.lp_supply // self.usdc)
        return (
            Pool(self.r1 + r1_used, self.usdc + usdc_used, self.lp_supply + minted),
            r1_used,
            usdc_used,
            minted,
        )


@dataclass(frozen=True)
class PoolSale:
    burned: int
    r1_to_pool: int
    usdc_to_pool: int
    liquidity: int
    lp_r1_left: int  # unused by addLiquidity: sent to the liquidity wallet
    lp_usdc_left: int
    company_r1: int
    company_usdc: int
    pool: Pool


def nd_sale_on_pool(price: int, pool: Pool) -> PoolSale:
    """A deed sold for `price` R1 with a pool: 20% burned; of the 50% liquidity share, half sold
    for USDC and both halves added to the pool; then the 30% company share sold for USDC."""
    split = nd_split(price)
    half = split.lp // 2
    pool, usdc_in = pool.sell_r1(half)
    pool, r1_used, usdc_used, minted = pool.add(split.lp - half, usdc_in)
    pool, company_usdc = pool.sell_r1(split.company)
    return PoolSale(
        burned=split.burned,
        r1_to_pool=r1_used,
        usdc_to_pool=usdc_used,
        liquidity=minted,
        lp_r1_left=split.lp - half - r1_used,
        lp_usdc_left=usdc_in - usdc_used,
        company_r1=split.company,
        company_usdc=company_usdc,
        pool=pool,
    )


def nd_price_on_pool(tier: int, pool: Pool) -> int:
    return nd_price(tier, pool.usd_per_r1())
