# pragma version ~=0.4.3
"""
@title NDLicence: Ratio1 Node Deeds (ERC-721)
@notice A Node Deed lets one node address mine R1. Deeds are bought with R1 at the price of the
        current tier (12 tiers, 46,224 deeds), converted from USD at the R1/USDC Uniswap V2 pool's
        price (guarded against a price moved within the block); the payment is split 20% burned,
        50% added to the pool's liquidity (half swapped to USDC; the LP tokens to the liquidity
        wallet), 30% swapped to USDC for the company wallet. Without a pool (`set_dex` not called)
        the price comes from the owner-set `r1_usd_price` and the shares are paid in R1. A deed links to exactly one node; the owner may relink
        only after the cooldown and only once the ended epochs are claimed. Claims pay, per epoch,
        the deed's release times the oracle-signed availability / 255, up to the per-deed cap.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc721

initializes: ownable
initializes: erc721[ownable := ownable]

exports: (
    erc721.balanceOf,
    erc721.ownerOf,
    erc721.approve,
    erc721.getApproved,
    erc721.setApprovalForAll,
    erc721.isApprovedForAll,
    erc721.tokenURI,
    erc721.totalSupply,
    erc721.tokenByIndex,
    erc721.tokenOfOwnerByIndex,
    erc721.supportsInterface,
    erc721.name,
    erc721.symbol,
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


interface IR1:
    def mint(owner: address, amount: uint256): nonpayable
    def burn(amount: uint256): nonpayable
    def transfer(to: address, amount: uint256) -> bool: nonpayable
    def transferFrom(owner: address, to: address, amount: uint256) -> bool: nonpayable


interface IERC20:
    def approve(spender: address, amount: uint256) -> bool: nonpayable
    def transfer(to: address, amount: uint256) -> bool: nonpayable


interface IUniswapV2Factory:
    def getPair(token_a: address, token_b: address) -> address: view


interface IUniswapV2Pair:
    def getReserves() -> (uint112, uint112, uint32): view
    def token0() -> address: view
    def price0CumulativeLast() -> uint256: view
    def price1CumulativeLast() -> uint256: view


interface IUniswapV2Router:
    def factory() -> address: view
    def swapExactTokensForTokens(
        amount_in: uint256,
        amount_out_min: uint256,
        path: DynArray[address, 2],
        to: address,
        deadline: uint256,
    ) -> DynArray[uint256, 2]: nonpayable
    def addLiquidity(
        token_a: address,
        token_b: address,
        amount_a_desired: uint256,
        amount_b_desired: uint256,
        amount_a_min: uint256,
        amount_b_min: uint256,
        to: address,
        deadline: uint256,
    ) -> (uint256, uint256, uint256): nonpayable


interface IController:
    def genesis_time() -> uint256: view
    def epoch_seconds() -> uint256: view
    def link_cooldown() -> uint256: view
    def register_link(node: address, token_id: uint256): nonpayable
    def unregister_link(node: address): nonpayable
    def verify_availability(
        node: address,
        first_epoch: uint256,
        last_epoch: uint256,
        availabilities: Bytes[1080],
        signatures: DynArray[Bytes[65], 32],
    ) -> bool: view


MAX_SUPPLY: constant(uint256) = 161_803_398 * 10**18
MAX_LICENCES: public(constant(uint256)) = 46_224
MAX_MINING_PER_LICENCE: public(constant(uint256)) = MAX_SUPPLY * 4_500 // 10_000 // MAX_LICENCES
MINING_EPOCHS: public(constant(uint256)) = 36 * 30
RELEASE_PER_EPOCH: public(constant(uint256)) = MAX_MINING_PER_LICENCE // MINING_EPOCHS
MAX_AVAILABILITY: constant(uint256) = 255
MAX_CLAIM_EPOCHS: constant(uint256) = 1080
N_TIERS: constant(uint256) = 12
TIER_USD: constant(uint256[N_TIERS]) = [500, 750, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 7000, 9500]
TIER_UNITS: constant(uint256[N_TIERS]) = [
    89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946, 17711
]
BURN_PERCENT: public(constant(uint256)) = 20
LP_PERCENT: public(constant(uint256)) = 50
DEFAULT_MAX_PRICE_DIFF_BPS: public(constant(uint256)) = 1_000
# USD per R1 with 18 decimals from USDC units (6 decimals) per R1 wei (18): x 10**(18 - 6 + 18)
_USD18_PER_USDC_PER_WEI: constant(uint256) = 10**30

struct Licence:
    node: address
    next_epoch: uint256
    claimed: uint256
    last_link_time: uint256

R1: public(immutable(IR1))
CONTROLLER: public(immutable(IController))
_GENESIS: immutable(uint256)
_EPOCH_SECONDS: immutable(uint256)
_LINK_COOLDOWN: immutable(uint256)

lp_wallet: public(address)
company_wallet: public(address)
r1_usd_price: public(uint256)
current_tier: public(uint256)
total_minted: public(uint256)
_sold: HashMap[uint256, uint256]
_licences: HashMap[uint256, Licence]
licence_of: public(HashMap[address, uint256])

# The R1/USDC pool (all zero: no pool, the owner-set price applies)
router: public(address)
pair: public(address)
usdc: public(address)
_r1_is_token0: bool
max_price_diff_bps: public(uint256)
# Price observation: the pool's cumulative R1 price (UQ112x112 seconds) at `observed_at`, and the
# reference price (USD per R1, 18 decimals) the guard compares with while no time has passed since.
_observed_cumulative: uint256
observed_at: public(uint256)
reference_price: public(uint256)


event LicenceBought:
    buyer: indexed(address)
    token_id: indexed(uint256)
    tier: uint256
    price: uint256
    burned: uint256

event SaleSwapped:
    token_id: indexed(uint256)
    r1_to_pool: uint256
    usdc_to_pool: uint256
    liquidity: uint256
    r1_sold_for_company: uint256
    usdc_to_company: uint256

event DexSet:
    router: address
    pair: address
    usdc: address

event Linked:
    token_id: indexed(uint256)
    node: indexed(address)
    owner: indexed(address)

event Unlinked:
    token_id: indexed(uint256)
    node: indexed(address)

event RewardsClaimed:
    token_id: indexed(uint256)
    owner: indexed(address)
    first_epoch: uint256
    last_epoch: uint256
    amount: uint256


@deploy
def __init__(r1: address, controller: address, lp_wallet_: address, company_wallet_: address):
    assert r1 != empty(address) and controller != empty(address), "nd: zero address"
    assert lp_wallet_ != empty(address) and company_wallet_ != empty(address), "nd: zero address"
    ownable.__init__()
    erc721.__init__("Ratio1 Node Deed", "ND", "", "Ratio1 Node Deed", "1")
    # snekmate's minter role is unused here: deeds are only minted by `buy`.
    erc721.is_minter[msg.sender] = False
    R1 = IR1(r1)
    CONTROLLER = IController(controller)
    _GENESIS = staticcall CONTROLLER.genesis_time()
    _EPOCH_SECONDS = staticcall CONTROLLER.epoch_seconds()
    _LINK_COOLDOWN = staticcall CONTROLLER.link_cooldown()
    self.lp_wallet = lp_wallet_
    self.company_wallet = company_wallet_
    self.r1_usd_price = 10**18
    self.current_tier = 1
    self.max_price_diff_bps = DEFAULT_MAX_PRICE_DIFF_BPS


# --- buying -------------------------------------------------------------------------------------


@internal
@view
def _reserves() -> (uint256, uint256, uint256):
    """
    @dev (R1 reserve, USDC reserve, the pair's last update time mod 2**32).
    """
    r0: uint112 = 0
    r1: uint112 = 0
    last: uint32 = 0
    r0, r1, last = staticcall IUniswapV2Pair(self.pair).getReserves()
    if self._r1_is_token0:
        return convert(r0, uint256), convert(r1, uint256), convert(last, uint256)
    return convert(r1, uint256), convert(r0, uint256), convert(last, uint256)


@internal
@view
def _pool_prices() -> (uint256, uint256, uint256):
    """
    @dev (spot, reference, cumulative): the spot price from the reserves now, the time-weighted
         average since the last observation (the stored reference if no time has passed), both in
         USD per R1 with 18 decimals, and the pool's cumulative R1 price now. The cumulative
         price only moves with reserves as they stood at the end of earlier blocks, so a swap in
         this block moves the spot price but not the reference.
    """
    r1_reserve: uint256 = 0
    usdc_reserve: uint256 = 0
    last: uint256 = 0
    r1_reserve, usdc_reserve, last = self._reserves()
    assert r1_reserve > 0 and usdc_reserve > 0, "nd: pool is empty"
    spot: uint256 = usdc_reserve * _USD18_PER_USDC_PER_WEI // r1_reserve
    cumulative: uint256 = 0
    if self._r1_is_token0:
        cumulative = staticcall IUniswapV2Pair(self.pair).price0CumulativeLast()
    else:
        cumulative = staticcall IUniswapV2Pair(self.pair).price1CumulativeLast()
    now32: uint256 = block.timestamp % 2**32
    if now32 != last:
        # the pair was not touched in this block: accrue its current (end of last block) price
        elapsed: uint256 = unsafe_sub(now32 + 2**32, last) % 2**32
        cumulative = unsafe_add(cumulative, unsafe_mul((usdc_reserve << 112) // r1_reserve, elapsed))
    reference: uint256 = self.reference_price
    if block.timestamp > self.observed_at:
        average: uint256 = unsafe_sub(cumulative, self._observed_cumulative) // (
            block.timestamp - self.observed_at
        )
        reference = average * _USD18_PER_USDC_PER_WEI >> 112
    return spot, reference, cumulative


@internal
def _observe() -> uint256:
    """
    @dev Check the spot price against the reference (`nd: pool price moved` beyond
         `max_price_diff_bps`), start a new observation window, and return the spot price.
    """
    spot: uint256 = 0
    reference: uint256 = 0
    cumulative: uint256 = 0
    spot, reference, cumulative = self._pool_prices()
    diff: uint256 = spot - reference if spot > reference else reference - spot
    assert diff * 10_000 <= reference * self.max_price_diff_bps, "nd: pool price moved"
    if block.timestamp > self.observed_at:
        self._observed_cumulative = cumulative
        self.observed_at = block.timestamp
        self.reference_price = reference
    return spot


@internal
@view
def _usd_per_r1() -> uint256:
    if self.pair == empty(address):
        return self.r1_usd_price
    spot: uint256 = 0
    reference: uint256 = 0
    cumulative: uint256 = 0
    spot, reference, cumulative = self._pool_prices()
    return spot


@internal
@pure
def _price_at(tier: uint256, usd_per_r1: uint256) -> uint256:
    if tier > N_TIERS:
        return 0
    return TIER_USD[tier - 1] * 10**36 // usd_per_r1


@external
@view
def current_price() -> uint256:
    """
    @notice R1 (wei) asked for one deed now: the tier's USD price at the pool's spot R1/USDC price
            (or the owner-set `r1_usd_price` without a pool); 0 when sold out.
    """
    if self.current_tier > N_TIERS:
        return 0
    return self._price_at(self.current_tier, self._usd_per_r1())


@external
@view
def r1_price() -> uint256:
    """
    @notice USD per R1 (18 decimals) the sale uses now: the pool's spot price, or `r1_usd_price`.
    """
    return self._usd_per_r1()


@external
@view
def price_check() -> (uint256, uint256, bool):
    """
    @notice (spot, reference, within the guard) of the pool now; a buy refuses when the last is
            false. Without a pool: (r1_usd_price, r1_usd_price, True).
    """
    if self.pair == empty(address):
        return self.r1_usd_price, self.r1_usd_price, True
    spot: uint256 = 0
    reference: uint256 = 0
    cumulative: uint256 = 0
    spot, reference, cumulative = self._pool_prices()
    diff: uint256 = spot - reference if spot > reference else reference - spot
    return spot, reference, diff * 10_000 <= reference * self.max_price_diff_bps


@external
def observe():
    """
    @notice Anyone: start a new price observation window now (what each buy does), so that the
            reference follows a price that moved slowly over a long time without sales. Refused
            like a buy when the spot price is off the reference by more than the guard.
    """
    assert self.pair != empty(address), "nd: no pool"
    self._observe()


@external
@view
def tier(t: uint256) -> (uint256, uint256, uint256):
    """
    @notice (USD price, units, units sold) of tier `t` (1..12).
    """
    assert t >= 1 and t <= N_TIERS, "nd: no such tier"
    return TIER_USD[t - 1], TIER_UNITS[t - 1], self._sold[t]


@external
def set_r1_usd_price(price: uint256):
    """
    @notice Owner: USD per R1 with 18 decimals (stands in for the R1/USDC pool price).
    """
    ownable._check_owner()
    assert price > 0, "nd: price is zero"
    self.r1_usd_price = price


@external
def set_dex(router_: address, usdc_: address):
    """
    @notice Owner: price deeds from the R1/USDC pair of Uniswap V2 router `router_` (the pair must
            exist and hold liquidity) and move the sale's shares through it; zero addresses go back
            to the owner-set price. Starts a fresh observation at the pool's spot price.
    """
    ownable._check_owner()
    if router_ == empty(address):
        self.router = empty(address)
        self.pair = empty(address)
        self.usdc = empty(address)
        log DexSet(router=empty(address), pair=empty(address), usdc=empty(address))
        return
    assert usdc_ != empty(address), "nd: zero address"
    pair_: address = staticcall IUniswapV2Factory(staticcall IUniswapV2Router(router_).factory()).getPair(
        R1.address, usdc_
    )
    assert pair_ != empty(address), "nd: no R1/USDC pool"
    self.router = router_
    self.pair = pair_
    self.usdc = usdc_
    self._r1_is_token0 = staticcall IUniswapV2Pair(pair_).token0() == R1.address
    spot: uint256 = 0
    reference: uint256 = 0
    cumulative: uint256 = 0
    spot, reference, cumulative = self._pool_prices()
    self._observed_cumulative = cumulative
    self.observed_at = block.timestamp
    self.reference_price = spot
    assert extcall IERC20(R1.address).approve(router_, max_value(uint256))
    assert extcall IERC20(usdc_).approve(router_, max_value(uint256))
    log DexSet(router=router_, pair=pair_, usdc=usdc_)


@external
def set_max_price_diff(bps: uint256):
    """
    @notice Owner: how far (basis points of the reference) the pool's spot price may be from its
            time-weighted reference for a sale to go through.
    """
    ownable._check_owner()
    assert bps > 0 and bps <= 10_000, "nd: bad price difference"
    self.max_price_diff_bps = bps


@external
def set_wallets(lp: address, company: address):
    ownable._check_owner()
    assert lp != empty(address) and company != empty(address), "nd: zero address"
    self.lp_wallet = lp
    self.company_wallet = company


@external
def buy(max_price: uint256) -> uint256:
    """
    @notice Buy the next deed for `current_price()` R1 (approve this contract first).
    @param max_price The most R1 (wei) the buyer accepts to pay; guards against a tier step or a
           price update between signing and inclusion.
    @return The new token id.
    """
    t: uint256 = self.current_tier
    assert t <= N_TIERS, "nd: sold out"
    pooled: bool = self.pair != empty(address)
    usd_per_r1: uint256 = self.r1_usd_price
    if pooled:
        usd_per_r1 = self._observe()
    price: uint256 = self._price_at(t, usd_per_r1)
    assert price <= max_price, "nd: price above max"
    sold: uint256 = self._sold[t] + 1
    self._sold[t] = sold
    if sold == TIER_UNITS[t - 1]:
        self.current_tier = t + 1
    token_id: uint256 = self.total_minted + 1
    self.total_minted = token_id

    burned: uint256 = price * BURN_PERCENT // 100
    to_lp: uint256 = price * LP_PERCENT // 100
    assert extcall R1.transferFrom(msg.sender, self, price)
    extcall R1.burn(burned)
    if pooled:
        self._swap_shares(token_id, to_lp, price - burned - to_lp)
    else:
        assert extcall R1.transfer(self.lp_wallet, to_lp)
        assert extcall R1.transfer(self.company_wallet, price - burned - to_lp)

    log LicenceBought(buyer=msg.sender, token_id=token_id, tier=t, price=price, burned=burned)
    erc721._safe_mint(msg.sender, token_id, b"")
    return token_id


@internal
def _swap_shares(token_id: uint256, to_lp: uint256, to_company: uint256):
    """
    @dev The liquidity share: half swapped to USDC, both halves added to the pool (LP tokens and
         any unused remainder to the liquidity wallet). Then the company share swapped to USDC,
         straight to the company wallet.
    """
    usdc_: address = self.usdc
    router_: IUniswapV2Router = IUniswapV2Router(self.router)
    half: uint256 = to_lp // 2
    r1_in: uint256 = to_lp - half
    got: DynArray[uint256, 2] = extcall router_.swapExactTokensForTokens(
        half, 0, [R1.address, usdc_], self, block.timestamp
    )
    usdc_in: uint256 = got[1]
    used_r1: uint256 = 0
    used_usdc: uint256 = 0
    liquidity: uint256 = 0
    used_r1, used_usdc, liquidity = extcall router_.addLiquidity(
        R1.address, usdc_, r1_in, usdc_in, 0, 0, self.lp_wallet, block.timestamp
    )
    if r1_in > used_r1:
        assert extcall R1.transfer(self.lp_wallet, r1_in - used_r1)
    if usdc_in > used_usdc:
        assert extcall IERC20(usdc_).transfer(self.lp_wallet, usdc_in - used_usdc)
    sold: DynArray[uint256, 2] = extcall router_.swapExactTokensForTokens(
        to_company, 0, [R1.address, usdc_], self.company_wallet, block.timestamp
    )
    log SaleSwapped(
        token_id=token_id,
        r1_to_pool=used_r1,
        usdc_to_pool=used_usdc,
        liquidity=liquidity,
        r1_sold_for_company=to_company,
        usdc_to_company=sold[1],
    )


# --- epochs and linking -------------------------------------------------------------------------


@internal
@view
def _current_epoch() -> uint256:
    assert block.timestamp >= _GENESIS, "nd: before genesis"
    return (block.timestamp - _GENESIS) // _EPOCH_SECONDS


@internal
def _unlink(token_id: uint256):
    lic: Licence = self._licences[token_id]
    assert lic.node != empty(address), "nd: licence not linked"
    assert (
        lic.next_epoch >= self._current_epoch() or lic.claimed >= MAX_MINING_PER_LICENCE
    ), "nd: claim rewards before unlinking"
    self.licence_of[lic.node] = 0
    self._licences[token_id].node = empty(address)
    extcall CONTROLLER.unregister_link(lic.node)
    log Unlinked(token_id=token_id, node=lic.node)


@internal
@view
def _check_owner_of(token_id: uint256):
    assert erc721._owner_of(token_id) == msg.sender, "nd: not the licence owner"


@external
def link(token_id: uint256, node: address):
    """
    @notice Link deed `token_id` to `node` (relinks if already linked). Mining starts at the
            current epoch.
    """
    self._check_owner_of(token_id)
    assert node != empty(address), "nd: zero node address"
    assert self.licence_of[node] == 0, "nd: node already linked"
    last: uint256 = self._licences[token_id].last_link_time
    assert last == 0 or block.timestamp > last + _LINK_COOLDOWN, "nd: link cooldown"
    if self._licences[token_id].node != empty(address):
        self._unlink(token_id)
    self._licences[token_id].node = node
    self._licences[token_id].next_epoch = self._current_epoch()
    self._licences[token_id].last_link_time = block.timestamp
    self.licence_of[node] = token_id
    extcall CONTROLLER.register_link(node, token_id)
    log Linked(token_id=token_id, node=node, owner=msg.sender)


@external
def unlink(token_id: uint256):
    self._check_owner_of(token_id)
    self._unlink(token_id)


@external
@view
def node_of(token_id: uint256) -> address:
    return self._licences[token_id].node


@external
@view
def last_link_time(token_id: uint256) -> uint256:
    return self._licences[token_id].last_link_time


# --- transfers (a linked deed is unlinked first) ------------------------------------------------


@internal
def _before_transfer(token_id: uint256):
    assert erc721._is_approved_or_owner(msg.sender, token_id), "erc721: caller is not token owner or approved"
    if self._licences[token_id].node != empty(address):
        self._unlink(token_id)


@external
@payable
def transferFrom(owner: address, to: address, token_id: uint256):
    self._before_transfer(token_id)
    erc721._transfer(owner, to, token_id)


@external
@payable
def safeTransferFrom(owner: address, to: address, token_id: uint256, data: Bytes[1_024] = b""):
    self._before_transfer(token_id)
    erc721._safe_transfer(owner, to, token_id, data)


# --- rewards ------------------------------------------------------------------------------------


@internal
@pure
def _reward(availabilities: Bytes[MAX_CLAIM_EPOCHS], release: uint256, remaining: uint256) -> uint256:
    """
    @dev sum(release * a // 255) over the epochs (rounded per epoch), capped at `remaining`. Reads
         32 availability bytes per word (the buffer is zero-padded so the last word is whole).
    """
    n: uint256 = len(availabilities)
    padded: Bytes[MAX_CLAIM_EPOCHS + 32] = concat(availabilities, empty(bytes32))
    total: uint256 = 0
    for w: uint256 in range((n + 31) // 32, bound=(MAX_CLAIM_EPOCHS + 31) // 32):
        word: uint256 = extract32(padded, w * 32, output_type=uint256)
        in_word: uint256 = min(n - w * 32, 32)
        for j: uint256 in range(in_word, bound=32):
            a: uint256 = (word >> unsafe_sub(248, unsafe_mul(j, 8))) & 255
            # release * 255 cannot overflow: release is at most the supply
            total = unsafe_add(total, unsafe_div(unsafe_mul(release, a), MAX_AVAILABILITY))
    return min(total, remaining)


@external
def claim(
    token_id: uint256,
    first_epoch: uint256,
    availabilities: Bytes[MAX_CLAIM_EPOCHS],
    signatures: DynArray[Bytes[65], 32],
) -> uint256:
    """
    @notice Pay the deed owner for epochs first_epoch..first_epoch+len-1 of its linked node, given
            the availabilities (one byte each, 0..255) signed by enough distinct oracles.
    @return The R1 (wei) minted to the owner.
    """
    lic: Licence = self._licences[token_id]
    assert lic.node != empty(address), "nd: licence not linked"
    n: uint256 = len(availabilities)
    assert n > 0, "nd: no epochs"
    assert first_epoch >= lic.next_epoch, "nd: epochs already claimed"
    assert first_epoch == lic.next_epoch, "nd: epochs skipped"
    last_epoch: uint256 = first_epoch + n - 1
    assert last_epoch < self._current_epoch(), "nd: epoch not ended"
    assert staticcall CONTROLLER.verify_availability(
        lic.node, first_epoch, last_epoch, availabilities, signatures
    )
    amount: uint256 = self._reward(
        availabilities, RELEASE_PER_EPOCH, MAX_MINING_PER_LICENCE - lic.claimed
    )
    self._licences[token_id].next_epoch = last_epoch + 1
    self._licences[token_id].claimed = lic.claimed + amount
    owner: address = erc721._owner_of(token_id)
    if amount > 0:
        extcall R1.mint(owner, amount)
    log RewardsClaimed(
        token_id=token_id, owner=owner, first_epoch=first_epoch, last_epoch=last_epoch, amount=amount
    )
    return amount


@external
@view
def claimable_epochs(token_id: uint256) -> (uint256, uint256):
    """
    @notice (first unclaimed epoch, number of ended epochs from it); (0, 0) if not linked.
    """
    lic: Licence = self._licences[token_id]
    if lic.node == empty(address):
        return 0, 0
    current: uint256 = self._current_epoch()
    if current <= lic.next_epoch:
        return lic.next_epoch, 0
    return lic.next_epoch, current - lic.next_epoch


@external
@view
def next_claim_epoch(token_id: uint256) -> uint256:
    return self._licences[token_id].next_epoch


@external
@view
def claimed_amount(token_id: uint256) -> uint256:
    return self._licences[token_id].claimed


@external
@view
def epoch_release(token_id: uint256) -> uint256:
    return RELEASE_PER_EPOCH


@external
@view
def max_reward(token_id: uint256) -> uint256:
    return MAX_MINING_PER_LICENCE


@external
@view
def compute_reward(token_id: uint256, availabilities: Bytes[MAX_CLAIM_EPOCHS]) -> uint256:
    """
    @notice What a claim of `availabilities` from the next unclaimed epoch would pay now.
    """
    return self._reward(
        availabilities, RELEASE_PER_EPOCH, MAX_MINING_PER_LICENCE - self._licences[token_id].claimed
    )
