# pragma version ~=0.4.3
"""
@title NDLicence: Ratio1 Node Deeds (ERC-721)
@notice A Node Deed lets one node address mine R1. Deeds are bought with R1 at the price of the
        current tier (12 tiers, 46,224 deeds); the payment is split 20% burned, 50% to the liquidity
        wallet, 30% to the company wallet. A deed links to exactly one node; the owner may relink
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


event LicenceBought:
    buyer: indexed(address)
    token_id: indexed(uint256)
    tier: uint256
    price: uint256
    burned: uint256

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


# --- buying -------------------------------------------------------------------------------------


@internal
@view
def _price(tier: uint256) -> uint256:
    if tier > N_TIERS:
        return 0
    return TIER_USD[tier - 1] * 10**36 // self.r1_usd_price


@external
@view
def current_price() -> uint256:
    """
    @notice R1 (wei) asked for one deed now: the tier's USD price at the configured R1/USD rate.
    """
    return self._price(self.current_tier)


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
    price: uint256 = self._price(t)
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
    assert extcall R1.transfer(self.lp_wallet, to_lp)
    assert extcall R1.transfer(self.company_wallet, price - burned - to_lp)

    log LicenceBought(buyer=msg.sender, token_id=token_id, tier=t, price=price, burned=burned)
    erc721._safe_mint(msg.sender, token_id, b"")
    return token_id


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
