# pragma version ~=0.4.3
"""
@title MNDLicence: Ratio1 Master Node Deeds and the Genesis Node Deed (ERC-721, soulbound)
@notice The owner assigns MNDs (up to 500) with an amount of R1 each (at most 2% of the supply per
        holder, 26.1% in all). An MND vests after a cliff (`mnd_cliff_epochs` since genesis, or its
        assignment epoch if later), then earns along a logistic (S-shaped) per-epoch release over
        900 epochs, scaled by the node's oracle-signed availability / 255. What it has earned is
        paid in proportion to the network's adoption = mean(ND sold / 7,500, PoAI volume / $5M),
        capped at 1, read from the ND licence and PoAI escrow counters; the rest is withheld and
        paid as adoption rises (`release_withheld`). Token 1 is the Genesis Node Deed (28.9% of the
        supply, released linearly over 365 epochs from epoch 1, not scaled by adoption), minted to
        the deployer. Linking and claiming work as for Node Deeds. The exact curve and formulas are
        in docs/economy.md.
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


interface INDSales:
    def total_minted() -> uint256: view


interface IPoAIVolume:
    def total_volume() -> uint256: view


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

# Adoption, 18-decimal fixed point: mean(ND sold / 7,500, PoAI volume / 5M USD), capped at 1.
ADOPTION_ONE: public(constant(uint256)) = 10**18
ADOPTION_ND_TARGET: public(constant(uint256)) = 7_500
ADOPTION_VOLUME_TARGET: public(constant(uint256)) = 5_000_000 * 10**6  # stablecoin with 6 decimals

# The MND release curve: weight w(x) of epoch x = 0..899 after mining starts is
# floor(2**32 / (1 + exp(-5 * ((x + 1/2) / 900 - 0.7)))), a logistic rising from 0.029 to 0.82
# of its plateau, with its midpoint at 70% of the 900 epochs. Eight 32-bit weights per word, the
# weight of epoch 8j + i at bits 32i..32i+31 of word j. An MND's release at offset x is
# assigned * w(min(x, 899)) // MND_CURVE_SUM: the 900 releases add up to the assignment (less
# rounding), and later epochs keep the last rate until the assignment is reached.
MND_CURVE_SUM: public(constant(uint256)) = 1_292_352_595_788
MND_CURVE_WORDS: constant(uint256) = 113
MND_CURVE_PACKED: constant(bytes32[MND_CURVE_WORDS]) = [
    0x07d03ea007c57fd707bacf6007b02d2707a5991d079b132e07909b4a0786315e,
    0x082840bf081d0ce40811e7ea0806d1c107fbca5507f0d19407e5e76c07db0bcc,
    0x088400280878529b086cb485086125d60855a678084a3659083ed56808338390,
    0x08e3a27a08d7767608cb5a8508bf4e9308b3528e08a76660089b89f8088fbd41,
    0x09474e8a093a9f24092e00710921725c0914f4d1090887bc08fc2b0908efdea4,
    0x09af2c6709a1f48c0994ce080987b8c6097ab4b2096dc1b60960dfbf09540eb7,
    0x0a1b65580a0d9fce09ffec4409f24aa509e4badc09d73cd309c9d07509bc75ad,
    0x0a8c23e50a7dcb490a6f855c0a6152080a5331360a4522d20a3726c40a293cf8,
    0x0b0193d20af2a29a0ae3c4c50ad4fa3b0ac642e60ab79eb00aa90d820a9a8f46,
    0x0b7be2240b6c529e0b5cd7330b4d6fcc0b3e1c510b2edcac0b1fb0c40b109883,
    0x0bfb3d1d0beb09700bdaea9c0bcae0870bbaeb1b0bab0a3f0b9b3ddd0b8b85db,
    0x0c7fd4400c6ef66a0c5e2e2f0c4d7b750c3cde250c2c56260c1be3600c0b85bb,
    0x0d09d8470cf84a1f0ce6d25a0cd570dd0cc4258f0cb2f0580ca1d11e0c90c7c9,
    0x0d997b230d87365b0d7508c10d62f23b0d50f2af0d3f0a040d2d381f0d1b7ce9,
    0x0e2eeff90e1bee1c0e09043d0df632420de378110dd0d58f0dbe4aa30dabd732,
    0x0eca6b160eb6a5890ea2f8d10e8f64d10e7be96e0e68868f0e553c180e4209ef,
    0x0f6c21e90f5791f00f431ba40f2ebeea0f1a7ba60f0651be0ef241150ede4990,
    0x10144af90ffee9b40fe9a2fa0fd476ae0fbf64b60faa6cf50f958f500f80cbaa,
    0x10c31dd810ace4471096c6211080c34d106adbac10550f22103f5d941029c6e5,
    0x1178d3161161ba18114abd6d1133dcf7111d18991106703710efe3b410d972f3,
    0x1235a42d121da4881205c21e11edfcd211d6548611bec91e11a75a7c11900883,
    0x12f9cb7312e0ddd112c80e5512af5ce31296c95d127e53a61265fb9f124dc12b,
    0x13c5840113aba0f41391dcfd137837fe135eb1d913454a70132c01a51312d75b,
    0x1499099d147e29a4146369b21448c9a9142e496b1413e8d913f9a7d613df8642,
    0x1574989d1558b426153cf0aa15214e091505cc2614ea6ae114cf2a1d14b409bb,
    0x16586dce163b7d3b161eae97160201c215e5769f15c90d0f15acc4f315909e2c,
    0x1744c64f1726c1f81708e08516eb21d716cd85d016b00c511692b53a1675806e,
    0x1839df6e181abfa917fbc3bc17dceb8b17be36f5179fa5dc178138221762eda8,
    0x1937f6851917b3a618f7959618d79c3518b7c7661898170918788b001859232c,
    0x1a3f48c91a1ddb2e19fc935519db712019ba747019999d271978eb2719585e50,
    0x1b5013231b2d73351b0af9fa1ae8a7561ac67b2a1aa475571a8295bf1a60dc45,
    0x1c6a91fa1c46b8341c2306111bff7b741bdc183f1bb8dc541b95c7951b72d9e4,
    0x1d8f01011d69e5f81d44f37f1d2029781cfb87c51cd70e491cb2bce71c8e9381,
    0x1ebd9afb1e9737671e70fd491e4aec851e2504fe1dff46971dd9b1331db444b5,
    0x1ff699851fcee6441fa75d5b1f7ffeae1f58ca211f31bf981f0adef71ee42822,
    0x213a34d021112af220e84c4720bf98b52097101f206eb26a20467f7c201e7739,
    0x2288a362225e3c31223401052209f1c721e00e5a21b656a6218cca8f216369fb,
    0x23e219cf23b64ed5238ab0ac235f3f3b2333fa6a2308e21e22ddf63f22b336b4,
    0x2546ca6f2519958324ec8e2924bfb449249307cc24668899243a3699240e11b3,
    0x26b6e50e2688405d2659c9f4262b81bb25fd679d25cf7b8425a1bd5825742d03,
    0x283296a328027cb927d291bf27a2d5a1277348492743e9a42714b99c26e5b81c,
    0x29ba08f7298874ca295710282925dafe28f4d53a28c3fec9289357972862df91,
    0x2b4d62552b1a4f4f2ae76c602ab4b9782a8236852a4fe3772a1dc03b29ebccc1,
    0x2cecc5302cb82f3c2c83c9db2c4f94fd2c1b90942be7bc922bb418e62b80a582,
    0x2e984fd12e6233632e2c47f12df68d6f2dc103d02d8bab072d5683082d218bc5,
    0x30501bf6301876192fe1018e2fa9be4b2f72ac472f3bcb762f051bcf2ece9d47,
    0x32143e7f31db0cde31a20cd131693e503130a15330f835d530bffbcb3087f32f,
    0x33e4c71233aa0805336f7ab633351f2232faf54432c0fd1732873695324da1ba,
    0x35c1bfc435857259354956c0350d6cf834d1b50034962ed6345ada78341fb7e2,
    0x37ab2cc1376d50c8372fa69c36f22e3f36b4e7b43677d2fb363af01535fe3f03,
    0x39a10bf83961a20d392269d038e3634738a48e773865eb6438277a1237e93a85,
    0x3ba354c93b625e5e3b2199683ae105ef3aa0a3fb3a6073943a2074c239e0a78b,
    0x3db1f7b93d6f77213d2d27a73ceb09563ca91c3b3c6760623c25d5d43be47c9e,
    0x3fccde273f88d69d3f44ffbb3f0159933ebde4343e7a9fac3e378c0c3df4a961,
    0x41f3ea0a41ae5fb84169057c4123db6a40dee196409a181340557ef44011164a,
    0x4426f5b343dfedbc4399152943526c12430bf28f42c5a8b6427f8e9e4239a45e,
    0x4665d399461d541e45d50334458ce0f94544ed8744fd28fa44b5936b446e2cf6,
    0x48b04e2b48665e4f481c9c1347d307964789a0f74740685746f75dd346ae818a,
    0x4b0627ac4abacf9b4a6fa4154a24a53f49d9d33c498f2e304944b63d48fa6b85,
    0x4d671a174d1a63064ccdd74b4c81770e4c3542774be939af4b9d5cdb4b51ac23,
    0x4fd2d7164f84cb444f36e9724ee931cb4e9ba47d4e4e41b34e0109984db3fc56,
    0x524907f451f9b2ad51aa85ed515b81e6510ca6c750bdf4c1506f6c0250210cba,
    0x54c94dae5478bb4654284fcc53d80b765387ee785337f90652e82b5252988591,
    0x5753410257017ed456afe1db565e6a4f560d186a55bbec64556ae673551a06cf,
    0x59e6729459938efb5940cebe58ee3219589bb9495849648a57f7341757a5282c,
    0x5c826b195c2e756c5bdaa1225b86ee7c5b335dbb5adfef1d5a8ca2e35a39794b,
    0x5f26ab975ed1b41e5e7cdbf25e2823585dd38a945d7f11e95d2ab99a5cd681e9,
    0x61d2adac617cc5986126fa9f60d14d09607bbd1d60264b225fd0f75f5f7bc219,
    0x6485e3e5642f1d4463d871716381e0b6632b6b5f62d511b6627ed4046228b293,
    0x673fba2666e827d56690adec66394cb865e20486658ad5a66533c06264dcc509,
    0x69ff961469a74bb2694f173968f6f8fb689ef1486847006f67ef26c26797648f,
    0x6cc4d7986c6be9746c130ea66bba47816b61945a6b08f5836ab06b4e6a57f60e,
    0x6f8ed9656f355c6c6edbf0236e8294e16e294afa6dd012c56d76ec956d1dd8bf,
    0x725cf1897202fb3571a912db714f38d470f56d75709bb117704204116fe866b9,
    0x752e720e74d418517479c9ca741f86d273c54fc3736b24f5731106c272b6f580,
    0x7802a99a77a802c8774d645d76f2ceb476984226763dbf0e75e345c77588d6a9,
    0x7ad8e41a7a7e06d67a232f2179c85d57796d91d27912ccef78b80f08785d5878,
    0x7db06b7a7d556e9c7cfa74717c9f7d537c44899f7be999b07b8eade37b33c692,
    0x80888854802d82d67fd27d297f7777ab7f1c72b67ec16ea87e666bdc7e0b6aae,
    0x836082ac83058b8e82aa9163824f948581f4955181999423813e915780e38d49,
    0x8637a2a885dcd0de8581f92985271be584cc396d8471521c8416664f83bb7660,
    0x890d314b88b29ba28857fd3787fd566587a2a7878747f0f786ed331086926e2d,
    0x8be0792d8b8636358b2be7ae8ad18df18a7729568a1cba3889c240f18967bdd9,
    0x8eb0c72b8e56ed248dfd04ca8da30e768d490a7f8ceef93d8c94db0a8c3ab03c,
    0x917d6b1e91240fdc90caa3939071269a901799468fbdfbee8f644ee88f0a928a,
    0x9445b87e93ecf1599394168b933b286792e227409289136a922fed3a91d6b505,
    0x9709070496b0e8c69658b44d960069eb95a809f1954f94b194f70a7c949e6ba5,
    0x99c6b347996f52139917d82a98c045d998689b709810d93d97b8ff9097610eb7,
    0x9c7e1f499c278e8e9bd0e2bb9b7a1c1a9b233af69acc3f9d9a752a599a1dfb79,
    0x9f2eb2f69ed905609e833a679e2d52539dd74d6c9d812bfb9d2aee499cd494a0,
    0xa1d7dca7a183240da12e4be1a0d95468a0843de6a02f08a09fd9b4dd9f8442e2,
    0xa4791183a4255edda3d18a93a37d94e6a3297e16a2d54665a280ee16a22c756b,
    0xa711cde6a6bf3141a66c7104a6198d6ba5c686b4a5735d1ca52010e2a4cca244,
    0xa9a195b0a9501e24a8fe812ba8acbefda85ad7d3a808cbe8a7b69b75a76446b6,
    0xac27f489abd7b033ab8744b9ab36b251aae5f930aa95198caa44139ba9f2e795,
    0xaea47e19ae557a12ae064d52adb6f80bad677a6ead17d4adacc806f9ac781187,
    0xb116ce34b0c9168db07b34bbb02d28e9afdef345af9093fdaf420b3eaef35938,
    0xb37e88f1b33228b4b2e59cf9b298e5e8b24c03a9b1fef667b1b1be4cb1645b82,
    0xb5db5ac0b5905beab5453064b4f9d853b4ae53dcb462a324b416c650b3cabd88,
    0xb82cf869b7e363ecb799a1b0b74fb1d4b705947ab6bb49c2b670d1cfb6262cc3,
    0xba731f06ba2afccbb9e2abe1b99a2c66b9517e75b908a22cb8bf97a8b8765f08,
    0xbcad93edbc66ead6bc201243bbd90a4cbb91d309bb4a6c94bb02d705babb1278,
    0xbedc2495be96fa83be51a047be0c15f5bdc65ba1bd807161bd3a5749bcf40d70,
    0xc0fea66cc0bb0044c0772962c03321d8bfeee9b5bfaa810bbf65e7ecbf211e69,
    0xc314f6a9c2d2d858c29088dec24e0846c20b569ec1c873f3c1856053c1421bcb,
    0xc51efa10c4de6697c49da1a1c45cab36c41b8361c3da2a2bc3989f9dc356e3c4,
    0xc71c9cb8c6dd962fc69e5df2c65ef407c61f5874c5df8b3dc59f8c6bc55f5c04,
    0xc90dd1c0c8d05963c892af37c854d33ec816c57ac7d885edc79a149bc75b7188,
    0xcaf29307cab6a93fca7a8da6ca3e403bca01c0fcc9c50feac9882d04c94b184b,
    0xcccae0ddcc908549cc55f7facc1b38edcbe0481dcba52587cb69d129cb2e4aff,
    0xce96c1afce5df32ece24f321cdebc180cdb25e45cd78c96acd3f02e8cd050abb,
    0xd05641b4d01efe71cfe789e6cfafe409cf780cd0cf400434cf07ca2acecf5eac,
    0x00000000000000000000000000000000d13162b8d0fae430d0c43489d08d53b8,
]

struct Licence:
    node: address
    next_epoch: uint256
    claimed: uint256
    last_link_time: uint256
    assigned: uint256
    release: uint256
    mining_start: uint256
    earned: uint256

R1: public(immutable(IR1))
CONTROLLER: public(immutable(IController))
_GENESIS: immutable(uint256)
_EPOCH_SECONDS: immutable(uint256)
_LINK_COOLDOWN: immutable(uint256)
_CLIFF_EPOCHS: immutable(uint256)
_CURVE: immutable(bytes32[MND_CURVE_WORDS])

adoption_nd: public(address)
adoption_escrow: public(address)
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

event AdoptionSourcesSet:
    nd: address
    escrow: address

event WithheldReleased:
    token_id: indexed(uint256)
    owner: indexed(address)
    amount: uint256

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
    _CURVE = MND_CURVE_PACKED
    self._licences[GND_TOKEN_ID] = Licence(
        node=empty(address),
        next_epoch=0,
        claimed=0,
        last_link_time=0,
        assigned=GND_TOTAL,
        release=GND_TOTAL // GND_MINING_EPOCHS,
        mining_start=GND_FIRST_EPOCH,
        earned=0,
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
        release=0,
        mining_start=start,
        earned=0,
    )
    log MndAssigned(to=to, token_id=token_id, assigned_amount=assigned_amount, first_mining_epoch=start)
    erc721._safe_mint(to, token_id, b"")
    return token_id


# --- adoption -----------------------------------------------------------------------------------


@external
def set_adoption_sources(nd: address, escrow: address):
    """
    @notice Owner: the contracts whose counters make the adoption: `nd.total_minted()` (Node
            Deeds sold) and `escrow.total_volume()` (stablecoin paid into PoAI jobs). A zero address
            counts as 0.
    """
    ownable._check_owner()
    self.adoption_nd = nd
    self.adoption_escrow = escrow
    log AdoptionSourcesSet(nd=nd, escrow=escrow)


@internal
@view
def _adoption_inputs() -> (uint256, uint256):
    sold: uint256 = 0
    volume: uint256 = 0
    if self.adoption_nd != empty(address):
        sold = staticcall INDSales(self.adoption_nd).total_minted()
    if self.adoption_escrow != empty(address):
        volume = staticcall IPoAIVolume(self.adoption_escrow).total_volume()
    return sold, volume


@internal
@view
def _adoption() -> uint256:
    sold: uint256 = 0
    volume: uint256 = 0
    sold, volume = self._adoption_inputs()
    nd_score: uint256 = sold * ADOPTION_ONE // ADOPTION_ND_TARGET
    volume_score: uint256 = volume * ADOPTION_ONE // ADOPTION_VOLUME_TARGET
    return min((nd_score + volume_score) // 2, ADOPTION_ONE)


@external
@view
def adoption() -> uint256:
    """
    @notice The adoption now, 10**18 = 1: mean(ND sold / 7,500, volume / 5M USD), capped at 1.
    """
    return self._adoption()


@external
@view
def adoption_inputs() -> (uint256, uint256):
    """
    @notice (Node Deeds sold, PoAI volume in stablecoin units) as the adoption reads them now.
    """
    return self._adoption_inputs()


# --- linking ------------------------------------------------------------------------------------


@internal
@view
def _claim_from(lic: Licence) -> uint256:
    return max(lic.next_epoch, lic.mining_start)


@internal
@pure
def _fully_earned(lic: Licence) -> bool:
    # the GND has no withheld part: what it has claimed is what it has earned
    if lic.release != 0:
        return lic.claimed >= lic.assigned
    return lic.earned >= lic.assigned


@internal
def _unlink(token_id: uint256):
    lic: Licence = self._licences[token_id]
    assert lic.node != empty(address), "mnd: licence not linked"
    assert (
        self._claim_from(lic) >= self._current_epoch() or self._fully_earned(lic)
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
@view
def _curve_weight(x: uint256) -> uint256:
    i: uint256 = min(x, MND_MINING_EPOCHS - 1)
    return (convert(_CURVE[i // 8], uint256) >> ((i % 8) * 32)) % 2**32


@internal
@view
def _earn(availabilities: Bytes[MAX_CLAIM_EPOCHS], lic: Licence, first_epoch: uint256) -> uint256:
    """
    @dev sum(release(e) * a_e // 255) over the epochs (rounded per epoch), where release(e) is the
         GND's constant rate, or an MND's curve release at offset e - mining_start. Reads 32
         availability bytes per word (the buffer is zero-padded so the last word is whole).
    """
    n: uint256 = len(availabilities)
    padded: Bytes[MAX_CLAIM_EPOCHS + 32] = concat(availabilities, empty(bytes32))
    total: uint256 = 0
    release: uint256 = lic.release
    gnd: bool = release != 0
    x: uint256 = first_epoch - lic.mining_start
    for w: uint256 in range((n + 31) // 32, bound=(MAX_CLAIM_EPOCHS + 31) // 32):
        word: uint256 = extract32(padded, w * 32, output_type=uint256)
        in_word: uint256 = min(n - w * 32, 32)
        for j: uint256 in range(in_word, bound=32):
            a: uint256 = (word >> unsafe_sub(248, unsafe_mul(j, 8))) & 255
            if not gnd:
                # assigned <= 2% of the supply and w < 2**32: the product stays far below 2**256
                release = unsafe_div(unsafe_mul(lic.assigned, self._curve_weight(x)), MND_CURVE_SUM)
                x = unsafe_add(x, 1)
            # release * 255 cannot overflow: release is at most the supply
            total = unsafe_add(total, unsafe_div(unsafe_mul(release, a), MAX_AVAILABILITY))
    return total


@internal
@view
def _settle(lic: Licence, earned: uint256) -> (uint256, uint256):
    """
    @dev (new earned, payout). An MND's earned amount stops at its assignment and is paid in
         proportion to the adoption: it is owed earned * adoption // 10**18 in all, of which it has
         had `claimed`. The adoption counters only grow, so the owed amount never falls. The GND is
         paid what it earns, up to its total.
    """
    if lic.release != 0:
        pay: uint256 = min(earned, lic.assigned - lic.claimed)
        return lic.earned + pay, pay
    total: uint256 = min(lic.earned + earned, lic.assigned)
    owed: uint256 = total * self._adoption() // ADOPTION_ONE
    if owed <= lic.claimed:
        return total, 0
    return total, owed - lic.claimed


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
            An MND's payout also releases what adoption withheld from its earlier epochs.
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
    earned: uint256 = 0
    amount: uint256 = 0
    earned, amount = self._settle(lic, self._earn(availabilities, lic, first_epoch))
    self._licences[token_id].next_epoch = last_epoch + 1
    self._licences[token_id].earned = earned
    self._licences[token_id].claimed = lic.claimed + amount
    owner: address = erc721._owner_of(token_id)
    if amount > 0:
        extcall R1.mint(owner, amount)
    log RewardsClaimed(
        token_id=token_id, owner=owner, first_epoch=first_epoch, last_epoch=last_epoch, amount=amount
    )
    return amount


@external
def release_withheld(token_id: uint256) -> uint256:
    """
    @notice Pay an MND's owner what adoption withheld from the epochs it already claimed and the
            adoption now allows (anyone may call; linked or not).
    @return The R1 (wei) minted to the owner.
    """
    lic: Licence = self._licences[token_id]
    assert lic.assigned != 0, "mnd: no such licence"
    earned: uint256 = 0
    amount: uint256 = 0
    earned, amount = self._settle(lic, 0)
    owner: address = erc721._owner_of(token_id)
    if amount > 0:
        self._licences[token_id].claimed = lic.claimed + amount
        extcall R1.mint(owner, amount)
        log WithheldReleased(token_id=token_id, owner=owner, amount=amount)
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
    """
    @notice R1 (wei) the licence earns for its next claimable epoch at full availability (for an
            MND: its curve release, before adoption).
    """
    lic: Licence = self._licences[token_id]
    if lic.release != 0 or lic.assigned == 0:
        return lic.release
    x: uint256 = self._claim_from(lic) - lic.mining_start
    return lic.assigned * self._curve_weight(x) // MND_CURVE_SUM


@external
@view
def curve_weight(x: uint256) -> uint256:
    """
    @notice The MND curve's weight of offset `x` (epochs since mining start; 899 and later share
            the last weight). An MND's release there is assigned * weight // MND_CURVE_SUM.
    """
    return self._curve_weight(x)


@external
@view
def earned_amount(token_id: uint256) -> uint256:
    """
    @notice R1 (wei) the licence has earned over its claimed epochs, before adoption (for the GND:
            what it has claimed).
    """
    lic: Licence = self._licences[token_id]
    if lic.release != 0:
        return lic.claimed
    return lic.earned


@external
@view
def withheld_amount(token_id: uint256) -> uint256:
    """
    @notice R1 (wei) earned but not yet paid: what adoption has held back so far.
    """
    lic: Licence = self._licences[token_id]
    if lic.release != 0:
        return 0
    return lic.earned - lic.claimed


@external
@view
def max_reward(token_id: uint256) -> uint256:
    return self._licences[token_id].assigned


@external
@view
def compute_reward(token_id: uint256, availabilities: Bytes[MAX_CLAIM_EPOCHS]) -> uint256:
    """
    @notice What a claim of `availabilities` from the first claimable epoch would pay now (at the
            adoption now, withheld amounts included).
    """
    lic: Licence = self._licences[token_id]
    earned: uint256 = 0
    amount: uint256 = 0
    earned, amount = self._settle(lic, self._earn(availabilities, lic, self._claim_from(lic)))
    return amount
