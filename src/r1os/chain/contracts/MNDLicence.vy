# pragma version ~=0.4.3
"""
@title MNDLicence: Ratio1 Master Node Deeds and the Genesis Node Deed (ERC-721, soulbound)
@notice The owner assigns MNDs (up to 500) with an amount of R1 each (at most 2% of the supply per
        holder, 26.1% in all). An MND vests after a cliff (`mnd_cliff_epochs` since genesis, or its
        assignment epoch if later), then releases amount / 900 per epoch, scaled by the node's
        oracle-signed availability / 255. Token 1 is the Genesis Node Deed (28.9% of the supply,
        released over 365 epochs from epoch 1), minted to the deployer. Linking and claiming work as
        for Node Deeds.
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


interface IController:
    def genesis_time() -> uint256: view
    def epoch_seconds() -> uint256: view
    def link_cooldown() -> uint256: view
    def mnd_cliff_epochs() -> uint256: view
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
GND_TOKEN_ID: public(constant(uint256)) = 1
GND_TOTAL: public(constant(uint256)) = MAX_SUPPLY * 2_890 // 10_000
GND_MINING_EPOCHS: public(constant(uint256)) = 365
GND_FIRST_EPOCH: public(constant(uint256)) = 1
MND_MINING_EPOCHS: public(constant(uint256)) = 30 * 30
MAX_MND: public(constant(uint256)) = 500
MAX_ASSIGNED_PER_LICENCE: public(constant(uint256)) = MAX_SUPPLY * 200 // 10_000
MAX_TOTAL_ASSIGNED: public(constant(uint256)) = MAX_SUPPLY * 2_610 // 10_000
MAX_AVAILABILITY: constant(uint256) = 255
MAX_CLAIM_EPOCHS: constant(uint256) = 1080

struct Licence:
    node: address
    next_epoch: uint256
    claimed: uint256
    last_link_time: uint256
    assigned: uint256
    release: uint256
    mining_start: uint256

R1: public(immutable(IR1))
CONTROLLER: public(immutable(IController))
_GENESIS: immutable(uint256)
_EPOCH_SECONDS: immutable(uint256)
_LINK_COOLDOWN: immutable(uint256)
_CLIFF_EPOCHS: immutable(uint256)

mnd_count: public(uint256)
total_assigned: public(uint256)
holder_assigned: public(HashMap[address, uint256])
_licences: HashMap[uint256, Licence]
licence_of: public(HashMap[address, uint256])


event MndAssigned:
    to: indexed(address)
    token_id: indexed(uint256)
    assigned_amount: uint256
    first_mining_epoch: uint256

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
def __init__(r1: address, controller: address):
    assert r1 != empty(address) and controller != empty(address), "mnd: zero address"
    ownable.__init__()
    erc721.__init__("Ratio1 Master Node Deed", "MND", "", "Ratio1 Master Node Deed", "1")
    # snekmate's minter role is unused here: deeds are only minted by the owner via `mint_mnd`.
    erc721.is_minter[msg.sender] = False
    R1 = IR1(r1)
    CONTROLLER = IController(controller)
    _GENESIS = staticcall CONTROLLER.genesis_time()
    _EPOCH_SECONDS = staticcall CONTROLLER.epoch_seconds()
    _LINK_COOLDOWN = staticcall CONTROLLER.link_cooldown()
    _CLIFF_EPOCHS = staticcall CONTROLLER.mnd_cliff_epochs()
    self._licences[GND_TOKEN_ID] = Licence(
        node=empty(address),
        next_epoch=0,
        claimed=0,
        last_link_time=0,
        assigned=GND_TOTAL,
        release=GND_TOTAL // GND_MINING_EPOCHS,
        mining_start=GND_FIRST_EPOCH,
    )
    erc721._mint(msg.sender, GND_TOKEN_ID)
    log MndAssigned(
        to=msg.sender, token_id=GND_TOKEN_ID, assigned_amount=GND_TOTAL, first_mining_epoch=GND_FIRST_EPOCH
    )


# --- epochs -------------------------------------------------------------------------------------


@internal
@view
def _current_epoch() -> uint256:
    assert block.timestamp >= _GENESIS, "mnd: before genesis"
    return (block.timestamp - _GENESIS) // _EPOCH_SECONDS


# --- assignment ---------------------------------------------------------------------------------


@external
def mint_mnd(to: address, assigned_amount: uint256) -> uint256:
    """
    @notice Owner: assign a new MND worth `assigned_amount` R1 (wei) to `to`.
    @return The new token id (2, 3, ...; 1 is the GND).
    """
    ownable._check_owner()
    assert to != empty(address), "mnd: zero address"
    assert assigned_amount > 0 and assigned_amount <= MAX_ASSIGNED_PER_LICENCE, "mnd: invalid amount"
    held: uint256 = self.holder_assigned[to] + assigned_amount
    assert held <= MAX_ASSIGNED_PER_LICENCE, "mnd: holder cap exceeded"
    total: uint256 = self.total_assigned + assigned_amount
    assert total <= MAX_TOTAL_ASSIGNED, "mnd: total assigned cap exceeded"
    count: uint256 = self.mnd_count + 1
    assert count <= MAX_MND, "mnd: all licences assigned"
    self.mnd_count = count
    self.total_assigned = total
    self.holder_assigned[to] = held
    token_id: uint256 = GND_TOKEN_ID + count
    start: uint256 = max(self._current_epoch(), _CLIFF_EPOCHS)
    self._licences[token_id] = Licence(
        node=empty(address),
        next_epoch=0,
        claimed=0,
        last_link_time=0,
        assigned=assigned_amount,
        release=assigned_amount // MND_MINING_EPOCHS,
        mining_start=start,
    )
    log MndAssigned(to=to, token_id=token_id, assigned_amount=assigned_amount, first_mining_epoch=start)
    erc721._safe_mint(to, token_id, b"")
    return token_id


# --- linking ------------------------------------------------------------------------------------


@internal
@view
def _claim_from(lic: Licence) -> uint256:
    return max(lic.next_epoch, lic.mining_start)


@internal
def _unlink(token_id: uint256):
    lic: Licence = self._licences[token_id]
    assert lic.node != empty(address), "mnd: licence not linked"
    assert (
        self._claim_from(lic) >= self._current_epoch() or lic.claimed >= lic.assigned
    ), "mnd: claim rewards before unlinking"
    self.licence_of[lic.node] = 0
    self._licences[token_id].node = empty(address)
    extcall CONTROLLER.unregister_link(lic.node)
    log Unlinked(token_id=token_id, node=lic.node)


@internal
@view
def _check_owner_of(token_id: uint256):
    assert erc721._owner_of(token_id) == msg.sender, "mnd: not the licence owner"


@external
def link(token_id: uint256, node: address):
    """
    @notice Link licence `token_id` to `node` (relinks if already linked). Rewards count from the
            current epoch (or the end of the cliff, if later).
    """
    self._check_owner_of(token_id)
    assert node != empty(address), "mnd: zero node address"
    assert self.licence_of[node] == 0, "mnd: node already linked"
    last: uint256 = self._licences[token_id].last_link_time
    assert last == 0 or block.timestamp > last + _LINK_COOLDOWN, "mnd: link cooldown"
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


# --- soulbound ----------------------------------------------------------------------------------


@external
@payable
def transferFrom(owner: address, to: address, token_id: uint256):
    raise "mnd: licences are soulbound"


@external
@payable
def safeTransferFrom(owner: address, to: address, token_id: uint256, data: Bytes[1_024] = b""):
    raise "mnd: licences are soulbound"


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
    @notice Pay the licence owner for epochs first_epoch..first_epoch+len-1 of its linked node,
            given the availabilities (one byte each, 0..255) signed by enough distinct oracles.
    @return The R1 (wei) minted to the owner.
    """
    lic: Licence = self._licences[token_id]
    assert lic.node != empty(address), "mnd: licence not linked"
    n: uint256 = len(availabilities)
    assert n > 0, "mnd: no epochs"
    assert first_epoch >= lic.mining_start, "mnd: epoch before mining start"
    assert first_epoch >= lic.next_epoch, "mnd: epochs already claimed"
    assert first_epoch == self._claim_from(lic), "mnd: epochs skipped"
    last_epoch: uint256 = first_epoch + n - 1
    assert last_epoch < self._current_epoch(), "mnd: epoch not ended"
    assert staticcall CONTROLLER.verify_availability(
        lic.node, first_epoch, last_epoch, availabilities, signatures
    )
    amount: uint256 = self._reward(availabilities, lic.release, lic.assigned - lic.claimed)
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
    @notice (first claimable epoch, number of ended epochs from it); (0, 0) if not linked.
    """
    lic: Licence = self._licences[token_id]
    if lic.node == empty(address):
        return 0, 0
    first: uint256 = self._claim_from(lic)
    current: uint256 = self._current_epoch()
    if current <= first:
        return first, 0
    return first, current - first


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
def assigned_amount(token_id: uint256) -> uint256:
    return self._licences[token_id].assigned


@external
@view
def mining_start_epoch(token_id: uint256) -> uint256:
    return self._licences[token_id].mining_start


@external
@view
def epoch_release(token_id: uint256) -> uint256:
    return self._licences[token_id].release


@external
@view
def max_reward(token_id: uint256) -> uint256:
    return self._licences[token_id].assigned


@external
@view
def compute_reward(token_id: uint256, availabilities: Bytes[MAX_CLAIM_EPOCHS]) -> uint256:
    """
    @notice What a claim of `availabilities` from the first claimable epoch would pay now.
    """
    lic: Licence = self._licences[token_id]
    return self._reward(availabilities, lic.release, lic.assigned - lic.claimed)
