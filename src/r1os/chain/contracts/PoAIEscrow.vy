# pragma version ~=0.4.3
"""
@title PoAIEscrow: pay-per-epoch escrow for Proof-of-AI jobs
@notice A job owner deposits `nodes x epochs x price` of a stablecoin. After each epoch, oracles
        sign the list of nodes that served the job; `attest` then pays each node's licence owner the
        price minus the 15% burn share. With an R1/USDC pool set (`set_dex`) the burn share buys R1 on
        the pool and that R1 is burned; without one it is burned as stablecoin (MockUSDC) or sent
        to a buy-back-and-burn receiver. A job can be ended early; whatever was not paid out is refunded once the last
        payable epoch has had a full epoch to be attested.
"""

interface IStablecoin:
    def transfer(to: address, amount: uint256) -> bool: nonpayable
    def transferFrom(owner: address, to: address, amount: uint256) -> bool: nonpayable
    def burn(amount: uint256): nonpayable


interface IR1:
    def burn(amount: uint256): nonpayable


interface IUniswapV2Router:
    def factory() -> address: view
    def swapExactTokensForTokens(
        amount_in: uint256,
        amount_out_min: uint256,
        path: DynArray[address, 2],
        to: address,
        deadline: uint256,
    ) -> DynArray[uint256, 2]: nonpayable


interface IUniswapV2Factory:
    def getPair(token_a: address, token_b: address) -> address: view


interface INDPrice:
    def price_check() -> (uint256, uint256, bool): view


interface IApprove:
    def approve(spender: address, amount: uint256) -> bool: nonpayable


interface IController:
    def genesis_time() -> uint256: view
    def epoch_seconds() -> uint256: view
    def node_owner(node: address) -> address: view
    def nd_licence() -> address: view
    def verify_attestation(
        escrow: address,
        job_id: uint256,
        epoch: uint256,
        nodes: DynArray[address, 32],
        signatures: DynArray[Bytes[65], 32],
    ) -> bool: view


MAX_NODES: public(constant(uint256)) = 32
BURN_PERCENT: public(constant(uint256)) = 15

struct Job:
    owner: address
    nodes: uint256
    start_epoch: uint256
    end_epoch: uint256
    price_per_node_epoch: uint256
    balance: uint256
    paid: uint256
    burned: uint256
    closed: bool

stablecoin: public(immutable(IStablecoin))
controller: public(immutable(IController))
burn_receiver: public(immutable(address))
_GENESIS: immutable(uint256)
_EPOCH_SECONDS: immutable(uint256)
_DEPLOYER: immutable(address)

# the R1/USDC pool the burn share buys R1 on (zero: no pool); set once by the deployer
router: public(address)
r1: public(address)
# R1 bought on the pool with burn shares and burned, in all
total_r1_burned: public(uint256)
# burn shares (stablecoin) waiting for the pool's price to be within the ND sale's guard
pending_burn: public(uint256)

job_count: public(uint256)
# stablecoin (its units: 6 decimals for USDC) deposited by job owners, creates and top-ups together
total_volume: public(uint256)
_jobs: HashMap[uint256, Job]
is_attested: public(HashMap[uint256, HashMap[uint256, bool]])


event JobCreated:
    job_id: indexed(uint256)
    owner: indexed(address)
    nodes: uint256
    epochs: uint256
    price_per_node_epoch: uint256
    start_epoch: uint256

event NodePaid:
    job_id: indexed(uint256)
    node: indexed(address)
    operator: indexed(address)
    epoch: uint256
    amount: uint256

event EpochAttested:
    job_id: indexed(uint256)
    epoch: uint256
    nodes_paid: uint256
    paid: uint256
    burned: uint256

event R1BoughtAndBurned:
    job_id: indexed(uint256)
    epoch: uint256
    stablecoin_in: uint256
    r1_burned: uint256

event BurnDeferred:
    job_id: indexed(uint256)
    epoch: uint256
    pending: uint256

event DexSet:
    router: address
    r1: address

event JobEnded:
    job_id: indexed(uint256)
    end_epoch: uint256

event JobExtended:
    job_id: indexed(uint256)
    epochs: uint256
    end_epoch: uint256
    amount: uint256

event JobRefunded:
    job_id: indexed(uint256)
    owner: indexed(address)
    amount: uint256


@deploy
def __init__(stablecoin_: address, controller_: address, burn_receiver_: address):
    """
    @param burn_receiver_ Where the burn share goes; the zero address means "burn it with the
           stablecoin's own `burn`" (MockUSDC on devnet).
    """
    assert stablecoin_ != empty(address) and controller_ != empty(address), "escrow: zero address"
    stablecoin = IStablecoin(stablecoin_)
    controller = IController(controller_)
    burn_receiver = burn_receiver_
    _GENESIS = staticcall controller.genesis_time()
    _EPOCH_SECONDS = staticcall controller.epoch_seconds()
    _DEPLOYER = msg.sender


@external
def set_dex(router_: address, r1_: address):
    """
    @notice Deployer, once: from now on the burn share buys R1 on the R1/stablecoin pair of
            Uniswap V2 router `router_` and burns it. The pair must exist.
    """
    assert msg.sender == _DEPLOYER, "escrow: not the deployer"
    assert self.router == empty(address), "escrow: dex already set"
    assert router_ != empty(address) and r1_ != empty(address), "escrow: zero address"
    pair: address = staticcall IUniswapV2Factory(staticcall IUniswapV2Router(router_).factory()).getPair(
        r1_, stablecoin.address
    )
    assert pair != empty(address), "escrow: no R1 pool"
    self.router = router_
    self.r1 = r1_
    assert extcall IApprove(stablecoin.address).approve(router_, max_value(uint256))
    log DexSet(router=router_, r1=r1_)


@internal
@view
def _current_epoch() -> uint256:
    assert block.timestamp >= _GENESIS, "escrow: before genesis"
    return (block.timestamp - _GENESIS) // _EPOCH_SECONDS


@internal
@view
def _job(job_id: uint256) -> Job:
    job: Job = self._jobs[job_id]
    assert job.owner != empty(address), "escrow: unknown job"
    assert not job.closed, "escrow: job closed"
    return job


@external
def create_job(nodes: uint256, epochs: uint256, price_per_node_epoch: uint256) -> uint256:
    """
    @notice Open a job for `nodes` nodes over `epochs` epochs starting now, paying the whole budget
            up front (approve this contract for nodes x epochs x price first).
    @return The job id (1, 2, ...).
    """
    assert nodes > 0, "escrow: zero nodes"
    assert nodes <= MAX_NODES, "escrow: too many nodes"
    assert epochs > 0, "escrow: zero epochs"
    assert price_per_node_epoch > 0, "escrow: zero price"
    budget: uint256 = nodes * epochs * price_per_node_epoch
    job_id: uint256 = self.job_count + 1
    self.job_count = job_id
    start: uint256 = self._current_epoch()
    self._jobs[job_id] = Job(
        owner=msg.sender,
        nodes=nodes,
        start_epoch=start,
        end_epoch=start + epochs,
        price_per_node_epoch=price_per_node_epoch,
        balance=budget,
        paid=0,
        burned=0,
        closed=False,
    )
    self.total_volume += budget
    assert extcall stablecoin.transferFrom(msg.sender, self, budget)
    log JobCreated(
        job_id=job_id,
        owner=msg.sender,
        nodes=nodes,
        epochs=epochs,
        price_per_node_epoch=price_per_node_epoch,
        start_epoch=start,
    )
    return job_id


@external
def attest(
    job_id: uint256,
    epoch: uint256,
    nodes: DynArray[address, MAX_NODES],
    signatures: DynArray[Bytes[65], 32],
) -> uint256:
    """
    @notice Pay for one ended epoch of a job to the operators (licence owners) of the nodes the
            oracles attest served it. Nodes with no linked licence are skipped.
    @return The stablecoin paid to operators (after the burn share).
    """
    job: Job = self._job(job_id)
    assert epoch >= job.start_epoch and epoch < job.end_epoch, "escrow: epoch outside job"
    assert epoch < self._current_epoch(), "escrow: epoch not ended"
    assert not self.is_attested[job_id][epoch], "escrow: epoch already attested"
    assert len(nodes) > 0, "escrow: no nodes"
    assert len(nodes) <= job.nodes, "escrow: too many nodes"
    for i: uint256 in range(1, MAX_NODES):
        if i >= len(nodes):
            break
        for j: uint256 in range(MAX_NODES):
            if j >= i:
                break
            assert nodes[i] != nodes[j], "escrow: duplicate node"
    assert staticcall controller.verify_attestation(self, job_id, epoch, nodes, signatures)
    self.is_attested[job_id][epoch] = True

    price: uint256 = job.price_per_node_epoch
    burn_share: uint256 = price * BURN_PERCENT // 100
    net: uint256 = price - burn_share
    operators: DynArray[address, MAX_NODES] = []
    served: DynArray[address, MAX_NODES] = []
    for node: address in nodes:
        operator: address = staticcall controller.node_owner(node)
        if operator != empty(address):
            operators.append(operator)
            served.append(node)
    count: uint256 = len(operators)
    paid: uint256 = net * count
    burned: uint256 = burn_share * count
    self._jobs[job_id].balance = job.balance - paid - burned
    self._jobs[job_id].paid = job.paid + paid
    self._jobs[job_id].burned = job.burned + burned

    for i: uint256 in range(count, bound=MAX_NODES):
        assert extcall stablecoin.transfer(operators[i], net)
        log NodePaid(job_id=job_id, node=served[i], operator=operators[i], epoch=epoch, amount=net)
    if burned > 0:
        if self.router != empty(address):
            self.pending_burn += burned
            if self._pool_price_ok():
                self._buy_and_burn(job_id, epoch)
            else:
                log BurnDeferred(job_id=job_id, epoch=epoch, pending=self.pending_burn)
        elif burn_receiver == empty(address):
            extcall stablecoin.burn(burned)
        else:
            assert extcall stablecoin.transfer(burn_receiver, burned)
    log EpochAttested(job_id=job_id, epoch=epoch, nodes_paid=count, paid=paid, burned=burned)
    return paid


@internal
@view
def _pool_price_ok() -> bool:
    """
    @dev The ND sale's guard: the pool's spot price is within its limit of the time-weighted
         reference (so a swap in this block did not move the price the burn buys at).
    """
    nd: address = staticcall controller.nd_licence()
    if nd == empty(address):
        return True
    spot: uint256 = 0
    reference: uint256 = 0
    ok: bool = False
    spot, reference, ok = staticcall INDPrice(nd).price_check()
    return ok


@internal
def _buy_and_burn(job_id: uint256, epoch: uint256):
    amount: uint256 = self.pending_burn
    self.pending_burn = 0
    r1_: address = self.r1
    got: DynArray[uint256, 2] = extcall IUniswapV2Router(self.router).swapExactTokensForTokens(
        amount, 0, [stablecoin.address, r1_], self, block.timestamp
    )
    extcall IR1(r1_).burn(got[1])
    self.total_r1_burned += got[1]
    log R1BoughtAndBurned(job_id=job_id, epoch=epoch, stablecoin_in=amount, r1_burned=got[1])


@external
def burn_pending():
    """
    @notice Anyone: buy R1 with the burn shares deferred while the pool's price was off its
            reference, and burn it (what the next attestation would do).
    """
    assert self.pending_burn > 0, "escrow: nothing to burn"
    assert self._pool_price_ok(), "escrow: pool price moved"
    self._buy_and_burn(0, 0)


@external
def end_job(job_id: uint256):
    """
    @notice Job owner: stop the job after the current epoch (which remains payable).
    """
    job: Job = self._job(job_id)
    assert job.owner == msg.sender, "escrow: not the job owner"
    end: uint256 = self._current_epoch() + 1
    assert end < job.end_epoch, "escrow: job already over"
    self._jobs[job_id].end_epoch = end
    log JobEnded(job_id=job_id, end_epoch=end)


@external
def extend_job(job_id: uint256, epochs: uint256) -> uint256:
    """
    @notice Job owner: pay for `epochs` more epochs on the same nodes at the same price, while the
            job still runs (approve this contract for nodes x epochs x price first).
    @return The new end epoch.
    """
    job: Job = self._job(job_id)
    assert job.owner == msg.sender, "escrow: not the job owner"
    assert epochs > 0, "escrow: zero epochs"
    assert self._current_epoch() < job.end_epoch, "escrow: job already over"
    amount: uint256 = job.nodes * epochs * job.price_per_node_epoch
    end: uint256 = job.end_epoch + epochs
    self._jobs[job_id].end_epoch = end
    self._jobs[job_id].balance = job.balance + amount
    self.total_volume += amount
    assert extcall stablecoin.transferFrom(msg.sender, self, amount)
    log JobExtended(job_id=job_id, epochs=epochs, end_epoch=end, amount=amount)
    return end


@external
def refund(job_id: uint256) -> uint256:
    """
    @notice Job owner: once the last payable epoch has had a full epoch to be attested, take back
            what was not paid out and close the job.
    @return The amount refunded.
    """
    job: Job = self._job(job_id)
    assert job.owner == msg.sender, "escrow: not the job owner"
    assert self._current_epoch() > job.end_epoch, "escrow: settlement window open"
    self._jobs[job_id].closed = True
    self._jobs[job_id].balance = 0
    if job.balance > 0:
        assert extcall stablecoin.transfer(msg.sender, job.balance)
    log JobRefunded(job_id=job_id, owner=msg.sender, amount=job.balance)
    return job.balance


@external
@view
def get_job(job_id: uint256) -> Job:
    return self._jobs[job_id]
