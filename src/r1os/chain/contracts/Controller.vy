# pragma version ~=0.4.3
"""
@title Controller: epochs, oracle registry, signature threshold and node links
@notice The one place that knows the epoch clock, which addresses are oracles, how many of them must
        sign, and which licence (ND, MND or GND) each node address is linked to. Licence contracts
        register and drop links here, so `is_node_active` and the "one licence per node" rule hold
        across both licence contracts with a single lookup.
"""

from snekmate.auth import ownable
from snekmate.utils import message_hash_utils

initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


interface ILicence:
    def ownerOf(token_id: uint256) -> address: view


MAX_ORACLES: public(constant(uint256)) = 32
MAX_CLAIM_EPOCHS: public(constant(uint256)) = 1080
# secp256k1n / 2: signatures with a larger `s` are the malleated twin of a valid one.
_MAX_S: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

genesis_time: public(immutable(uint256))
epoch_seconds: public(immutable(uint256))
link_cooldown: public(immutable(uint256))
mnd_cliff_epochs: public(immutable(uint256))

is_oracle: public(HashMap[address, bool])
_oracles: DynArray[address, MAX_ORACLES]
min_signatures: public(uint256)

nd_licence: public(address)
mnd_licence: public(address)
# node -> (token_id << 160) | licence contract: one storage slot per link. Only the licence
# contracts register links, and their token ids stay below 46,225 (far below 2**96).
_links: HashMap[address, uint256]


event OracleAdded:
    oracle: indexed(address)

event OracleRemoved:
    oracle: indexed(address)

event MinSignaturesSet:
    n: uint256

event LicenceContractsSet:
    nd: address
    mnd: address


@deploy
def __init__(
    genesis_time_: uint256, epoch_seconds_: uint256, link_cooldown_: uint256, mnd_cliff_epochs_: uint256
):
    """
    @param genesis_time_ Unix time at which epoch 0 starts.
    @param epoch_seconds_ Epoch length (production: 86400; devnet: 60).
    @param link_cooldown_ Seconds a licence must wait after a link before it may link again.
    @param mnd_cliff_epochs_ Epochs (since genesis) before MND licences start to mine.
    """
    assert epoch_seconds_ > 0, "controller: epoch length is zero"
    ownable.__init__()
    genesis_time = genesis_time_
    epoch_seconds = epoch_seconds_
    link_cooldown = link_cooldown_
    mnd_cliff_epochs = mnd_cliff_epochs_
    self.min_signatures = 1


# --- epochs -------------------------------------------------------------------------------------


@internal
@view
def _epoch_of(timestamp: uint256) -> uint256:
    assert timestamp >= genesis_time, "controller: before genesis"
    return (timestamp - genesis_time) // epoch_seconds


@external
@view
def current_epoch() -> uint256:
    return self._epoch_of(block.timestamp)


@external
@view
def epoch_of(timestamp: uint256) -> uint256:
    return self._epoch_of(timestamp)


# --- oracles ------------------------------------------------------------------------------------


@external
def add_oracle(oracle: address):
    ownable._check_owner()
    assert oracle != empty(address), "controller: zero address"
    assert not self.is_oracle[oracle], "controller: already an oracle"
    assert len(self._oracles) < MAX_ORACLES, "controller: too many oracles"
    self.is_oracle[oracle] = True
    self._oracles.append(oracle)
    log OracleAdded(oracle=oracle)


@external
def remove_oracle(oracle: address):
    ownable._check_owner()
    assert self.is_oracle[oracle], "controller: not an oracle"
    self.is_oracle[oracle] = False
    n: uint256 = len(self._oracles)
    for i: uint256 in range(n, bound=MAX_ORACLES):
        if self._oracles[i] == oracle:
            self._oracles[i] = self._oracles[n - 1]
            self._oracles.pop()
            break
    log OracleRemoved(oracle=oracle)


@external
def set_min_signatures(n: uint256):
    ownable._check_owner()
    assert n >= 1, "controller: threshold must be >= 1"
    self.min_signatures = n
    log MinSignaturesSet(n=n)


@external
@view
def get_oracles() -> DynArray[address, MAX_ORACLES]:
    return self._oracles


# --- signatures ---------------------------------------------------------------------------------


@internal
@pure
def _recover(digest: bytes32, sig: Bytes[65]) -> address:
    """
    @dev 65-byte r || s || v only, low s, v in {27, 28}: exactly one valid encoding per signature.
    """
    assert len(sig) == 65, "controller: invalid signature"
    r: uint256 = extract32(sig, 0, output_type=uint256)
    s: uint256 = extract32(sig, 32, output_type=uint256)
    v: uint256 = convert(slice(sig, 64, 1), uint256)
    assert s <= _MAX_S and (v == 27 or v == 28), "controller: invalid signature"
    signer: address = ecrecover(digest, v, r, s)
    assert signer != empty(address), "controller: invalid signature"
    return signer


@internal
@view
def _verify(digest: bytes32, signatures: DynArray[Bytes[65], MAX_ORACLES]) -> address:
    """
    @dev At least `min_signatures` signatures, each from a distinct registered oracle. Duplicates are
         detected by signer, not by signature bytes, so a re-encoded signature cannot count twice.
    """
    assert len(signatures) >= self.min_signatures, "controller: not enough signatures"
    seen: DynArray[address, MAX_ORACLES] = []
    for sig: Bytes[65] in signatures:
        signer: address = self._recover(digest, sig)
        assert self.is_oracle[signer], "controller: signer is not an oracle"
        assert signer not in seen, "controller: duplicate signer"
        seen.append(signer)
    return seen[0]


@internal
@pure
def _availability_digest(
    node: address, first_epoch: uint256, last_epoch: uint256, availabilities: Bytes[MAX_CLAIM_EPOCHS]
) -> bytes32:
    inner: bytes32 = keccak256(
        concat(
            convert(node, bytes20),
            convert(first_epoch, bytes32),
            convert(last_epoch, bytes32),
            availabilities,
        )
    )
    return message_hash_utils._to_eth_signed_message_hash(inner)


@external
@pure
def availability_digest(
    node: address, first_epoch: uint256, last_epoch: uint256, availabilities: Bytes[MAX_CLAIM_EPOCHS]
) -> bytes32:
    """
    @notice The EIP-191 digest oracles sign for an availability claim.
    """
    return self._availability_digest(node, first_epoch, last_epoch, availabilities)


@internal
@pure
def _attestation_digest(
    escrow: address, job_id: uint256, epoch: uint256, nodes: DynArray[address, MAX_ORACLES]
) -> bytes32:
    # nodes as 32-byte words (what Solidity's abi.encodePacked(address[]) gives): the ABI encoding
    # of the array minus its offset and length words.
    words: Bytes[1088] = slice(abi_encode(nodes), 64, 32 * len(nodes))
    inner: bytes32 = keccak256(
        concat(convert(escrow, bytes20), convert(job_id, bytes32), convert(epoch, bytes32), words)
    )
    return message_hash_utils._to_eth_signed_message_hash(inner)


@external
@pure
def attestation_digest(
    escrow: address, job_id: uint256, epoch: uint256, nodes: DynArray[address, MAX_ORACLES]
) -> bytes32:
    """
    @notice The EIP-191 digest oracles sign for a PoAI job attestation.
    """
    return self._attestation_digest(escrow, job_id, epoch, nodes)


@external
@view
def verify_attestation(
    escrow: address,
    job_id: uint256,
    epoch: uint256,
    nodes: DynArray[address, MAX_ORACLES],
    signatures: DynArray[Bytes[65], MAX_ORACLES],
) -> bool:
    self._verify(self._attestation_digest(escrow, job_id, epoch, nodes), signatures)
    return True


@external
@view
def verify_signatures(digest: bytes32, signatures: DynArray[Bytes[65], MAX_ORACLES]) -> address:
    """
    @notice Reverts unless enough distinct registered oracles signed `digest`; returns the first signer.
    """
    return self._verify(digest, signatures)


@external
@view
def verify_availability(
    node: address,
    first_epoch: uint256,
    last_epoch: uint256,
    availabilities: Bytes[MAX_CLAIM_EPOCHS],
    signatures: DynArray[Bytes[65], MAX_ORACLES],
) -> bool:
    self._verify(self._availability_digest(node, first_epoch, last_epoch, availabilities), signatures)
    return True


# --- node links ---------------------------------------------------------------------------------


@external
def set_licence_contracts(nd: address, mnd: address):
    ownable._check_owner()
    assert nd != empty(address) and mnd != empty(address), "controller: zero address"
    self.nd_licence = nd
    self.mnd_licence = mnd
    log LicenceContractsSet(nd=nd, mnd=mnd)


@internal
@view
def _check_licence_contract():
    assert msg.sender != empty(address) and (
        msg.sender == self.nd_licence or msg.sender == self.mnd_licence
    ), "controller: caller is not a licence contract"


@internal
@pure
def _link_licence(packed: uint256) -> address:
    return convert(packed & (2**160 - 1), address)


@external
def register_link(node: address, token_id: uint256):
    self._check_licence_contract()
    assert self._links[node] == 0, "controller: node already linked"
    self._links[node] = (token_id << 160) | convert(msg.sender, uint256)


@external
def unregister_link(node: address):
    self._check_licence_contract()
    assert self._link_licence(self._links[node]) == msg.sender, "controller: node not linked here"
    self._links[node] = 0


@external
@view
def is_node_active(node: address) -> bool:
    return self._links[node] != 0


@external
@view
def isNodeActive(node: address) -> bool:
    """
    @notice Same as `is_node_active`, under the name Ratio1's Controller uses, for tools that speak it.
    """
    return self._links[node] != 0


@external
@view
def node_licence(node: address) -> (address, uint256):
    link: uint256 = self._links[node]
    return self._link_licence(link), link >> 160


@external
@view
def node_owner(node: address) -> address:
    link: uint256 = self._links[node]
    if link == 0:
        return empty(address)
    return staticcall ILicence(self._link_licence(link)).ownerOf(link >> 160)
