"""The chain side of a session: the deployment, licences, rewards, PoAI jobs and tokens.

These groups talk to the r1os contracts through `r1os.chain.ChainClient` (web3.py), which loads on the
first call that needs it, never on `import r1os.sdk`. The contracts are found as the CLI finds them:

- `deployment=`: a deployment JSON (what `r1os chain deploy` writes) or a `Deployment`;
- else `devnet=`: a devnet folder, whose `chain/deployment.json` is read (default `~/.r1os/devnet`,
  i.e. `$R1OS_HOME/devnet`, where `./dev demo` and `r1os devnet up` put it).

Transactions are signed by the session's `key` (the CLI's `--key-file` / `$R1OS_PRIVATE_KEY`); reads
of another address need no key. Amounts are integers in the token's smallest unit (R1 and ETH: 18
decimals, USDC: 6); `r1os.chain.units.parse_units` / `format_units` convert for people.

Every group is async (`AsyncLicences`, ...) with a blocking twin (`Licences`, ...) that runs the same
coroutine to completion; the blocking twins may not be called from inside a running event loop.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from r1os.chain.deployment import Deployment
from r1os.chain.digests import SignedAvailability
from r1os.errors import ChainError, R1osError
from r1os.identity import NodeKey
from r1os.paths import default_devnet_dir

if TYPE_CHECKING:  # web3 loads only when a method talks to the chain
    from r1os.chain.client import ChainClient, Job, Licence

T = TypeVar("T")

PRIVATE_KEY_ENV = "R1OS_PRIVATE_KEY"
ETH = 10**18


def key_from_env() -> NodeKey | None:
    """The key in $R1OS_PRIVATE_KEY (hex), the one the CLI signs with when given no --key-file; None if
    it is not set. (An encrypted keystore: `r1os.identity.load_keystore(path, password)`.)"""
    import os

    text = os.environ.get(PRIVATE_KEY_ENV, "").strip()
    return NodeKey.from_hex(text) if text else None


def deployment_path(devnet: Path | str | None = None) -> Path:
    """Where a devnet keeps its deployment: `DEVNET/chain/deployment.json` (default devnet folder:
    `~/.r1os/devnet`)."""
    return Path(devnet or default_devnet_dir()) / "chain" / "deployment.json"


class ChainAccess:
    """One deployment and one signing key, and the `ChainClient` for them (made on first use).

    `deployment`: a `Deployment` or the path of its JSON; else the deployment of the devnet in `devnet`
    (default `~/.r1os/devnet`). `key`: signs transactions (None: reads only)."""

    def __init__(
        self,
        key: NodeKey | None = None,
        deployment: Deployment | Path | str | None = None,
        devnet: Path | str | None = None,
    ) -> None:
        self.key = key
        self._deployment_arg = deployment
        self._devnet = devnet
        self._client: ChainClient | None = None

    @property
    def deployment(self) -> Deployment:
        """The deployment (read from its file on first use)."""
        arg = self._deployment_arg
        if not isinstance(arg, Deployment):
            arg = Deployment.load(Path(arg) if arg is not None else deployment_path(self._devnet))
            self._deployment_arg = arg
        return arg

    def client(self, *, signer: bool = False) -> ChainClient:
        """The chain client; `signer=True` insists on a key (the call sends a transaction)."""
        if signer and self.key is None:
            raise ChainError(
                "this sends a transaction and needs a key",
                hint=f"make the session with key=... (the CLI: --key-file, or set {PRIVATE_KEY_ENV})",
            )
        if self._client is None:
            from r1os.chain.client import ChainClient

            self._client = ChainClient(self.deployment, self.key)
        return self._client

    def sender(self) -> str:
        """The key's address (ChainError without a key)."""
        return self.client(signer=True).sender


def _blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a chain coroutine for a blocking twin."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise R1osError(
        "a blocking Session's chain call inside a running event loop",
        hint="use AsyncSession (await s.licences.list(), ...) in async code",
    )


def same_claim(signed: SignedAvailability, node: str, first_epoch: int, values: Sequence[int]) -> bool:
    """Whether `signed` is a claim for this node, range and availability (so a signature adds to it)."""
    return (signed.node.lower(), signed.first_epoch, signed.availabilities) == (
        node.lower(),
        first_epoch,
        list(values),
    )


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainInfo:
    """A deployment and the chain's state: the current epoch, the oracles, the ND price (R1 wei)."""

    deployment: Deployment
    current_epoch: int
    oracles: list[str]
    min_signatures: int
    nd_price: int


@dataclass(frozen=True)
class NdPrice:
    """The current ND tier and its price in R1 wei (0: sold out)."""

    tier: int
    price: int


@dataclass(frozen=True)
class Purchase:
    """A bought ND licence, what it cost (R1 wei) and the node it was linked to, if any."""

    token_id: int
    price: int
    node: str | None
    type: str = "ND"


@dataclass(frozen=True)
class LicenceRewards:
    """One licence's mining state, what it releases per epoch at full availability, its cap."""

    licence: Licence
    epoch_release: int
    max_reward: int
    current_epoch: int

    def json(self) -> dict[str, Any]:
        """Flat JSON: the licence's fields and the three numbers."""
        return {
            **self.licence.model_dump(),
            "epoch_release": self.epoch_release,
            "max_reward": self.max_reward,
            "current_epoch": self.current_epoch,
        }


@dataclass(frozen=True)
class Claimable:
    """What a node's licence can claim now: the oracles' signed availability, the licence, and the
    R1 (wei) a claim would mint now."""

    signed: SignedAvailability
    licence: Licence
    amount: int


@dataclass(frozen=True)
class Claim:
    """A claim made: R1 (wei) minted to the licence owner for epochs first..last, and its balance."""

    type: str
    token_id: int
    owner: str
    first_epoch: int
    last_epoch: int
    amount: int
    balance_before: int
    balance: int

    def json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Balances:
    """An address's R1 (wei), ETH (wei, gas) and USDC (units, pays PoAI jobs)."""

    address: str
    r1: int
    eth: int
    usdc: int

    def json(self) -> dict[str, Any]:
        return {"address": self.address, "R1": self.r1, "ETH": self.eth, "USDC": self.usdc}


@dataclass(frozen=True)
class JobStatus:
    """A PoAI job as the escrow keeps it, and the chain's current epoch."""

    job: Job
    current_epoch: int

    def json(self) -> dict[str, Any]:
        return {**self.job.model_dump(), "current_epoch": self.current_epoch}


# -- async groups ----------------------------------------------------------------------------------


class AsyncChain:
    """The deployment a session's chain groups use (`session.chain`)."""

    def __init__(self, access: ChainAccess) -> None:
        self.access = access

    @property
    def deployment(self) -> Deployment:
        """The deployment: contract addresses, RPC URL, chain id, genesis time, epoch length."""
        return self.access.deployment

    def client(self, *, signer: bool = False) -> ChainClient:
        """The underlying `ChainClient`, for a contract call this SDK has no method for."""
        return self.access.client(signer=signer)

    async def info(self) -> ChainInfo:
        """The deployment with the current epoch, the oracles, the claim threshold and the ND price."""
        c = self.access.client()
        return ChainInfo(
            deployment=c.deployment,
            current_epoch=await c.current_epoch(),
            oracles=await c.oracles(),
            min_signatures=await c.min_signatures(),
            nd_price=await c.nd_price(),
        )

    async def current_epoch(self) -> int:
        """The chain's current epoch."""
        return await self.access.client().current_epoch()


class AsyncLicences:
    """Node Deeds (ND), master licences (MND, GND): buy, link to a node, unlink, list (`session.licences`)."""

    def __init__(self, access: ChainAccess) -> None:
        self.access = access

    async def price(self) -> NdPrice:
        """The current ND tier and price (R1 wei; 0 when sold out)."""
        c = self.access.client()
        return NdPrice(tier=await c.nd_tier(), price=await c.nd_price())

    async def buy(self, max_price: int | None = None, *, link: str | None = None) -> Purchase:
        """Buy the next ND with the key's R1 (approved first), at most `max_price` wei (default: the
        current price); with `link`, also link it to that node address."""
        c = self.access.client(signer=True)
        price = await c.nd_price()
        token_id = await c.buy_nd(max_price)
        if link:
            await c.link(token_id, link)
        return Purchase(token_id=token_id, price=price, node=link)

    async def link(self, token_id: int, node: str, type: str = "ND") -> None:
        """Link a licence the key owns to a node address (0x... or 0xai_...), so the node may mine."""
        await self.access.client(signer=True).link(token_id, node, type)

    async def unlink(self, token_id: int, type: str = "ND") -> None:
        """Unlink a licence from its node (claim its rewards first)."""
        await self.access.client(signer=True).unlink(token_id, type)

    async def get(self, token_id: int, type: str = "ND") -> Licence:
        """One licence: owner, node, next claimable epoch, ended epochs waiting, R1 claimed."""
        return await self.access.client().licence(token_id, type)

    async def of_node(self, node: str) -> Licence | None:
        """The licence linked to `node`, or None."""
        return await self.access.client().licence_of(node)

    async def list(self, owner: str | None = None) -> builtins.list[Licence]:
        """Every ND, MND and GND licence `owner` (default: the key's address) holds."""
        return await self.access.client(signer=owner is None).licences(owner)


class AsyncRewards:
    """What licences mined and may claim, and claiming it with the oracles' signatures
    (`session.rewards`). `oracle`: any oracle node's URL; the session's node by default."""

    def __init__(self, access: ChainAccess, oracle: str | None = None) -> None:
        self.access = access
        self.oracle = oracle

    def _oracle(self, oracle: str | None) -> str:
        url = oracle or self.oracle
        if not url:
            raise ChainError("no oracle to ask", hint="pass oracle=URL (any oracle node's HTTP API)")
        return url.rstrip("/")

    async def show(self, token_id: int, type: str = "ND") -> LicenceRewards:
        """A licence's claim state with its release per epoch and its reward cap."""
        c = self.access.client()
        lic = await c.licence(token_id, type)
        name = "NDLicence" if lic.type == "ND" else "MNDLicence"
        return LicenceRewards(
            licence=lic,
            epoch_release=int(await c.call(name, "epoch_release", token_id)),
            max_reward=int(await c.call(name, "max_reward", token_id)),
            current_epoch=await c.current_epoch(),
        )

    async def signed(self, node: str, *, oracle: str | None = None) -> SignedAvailability:
        """The oracles' signed availability for everything `node`'s licence can claim now
        (`NothingToClaim`, a `ChainError`, if no ended and agreed epoch waits)."""
        from r1os.oracle import fetch_signed

        signed, _ = await fetch_signed(self._oracle(oracle), self.access.client(), node)
        return signed

    async def claimable(self, node: str, *, oracle: str | None = None) -> Claimable:
        """What `node`'s licence can claim now and the R1 a claim would mint (`NothingToClaim` if
        nothing waits)."""
        from r1os.oracle import fetch_signed

        c = self.access.client()
        signed, lic = await fetch_signed(self._oracle(oracle), c, node)
        amount = await c.compute_reward(lic.token_id, signed.availabilities, lic.type)
        return Claimable(signed=signed, licence=lic, amount=amount)

    async def claim(
        self,
        signed: SignedAvailability | None = None,
        *,
        node: str | None = None,
        oracle: str | None = None,
        token_id: int | None = None,
        type: str | None = None,
    ) -> Claim:
        """Claim a licence's rewards; the R1 goes to the licence owner (anyone may send the claim).

        Either `signed` (a signatures file's content) or `node`: then everything claimable is fetched
        from the oracle. The licence is `token_id`/`type`, else the signed one, else the node's."""
        if signed is None:
            if node is None:
                raise ChainError("nothing to claim with", hint="pass node=ADDRESS or signed=...")
            signed = await self.signed(node, oracle=oracle)
        c = self.access.client(signer=True)
        sigs = signed.signature_bytes()
        tid, kind = token_id or signed.token_id, type or signed.type
        if tid is None:
            linked = await c.licence_of(signed.node)
            if linked is None:
                raise ChainError(f"no licence is linked to {signed.node}")
            tid, kind = linked.token_id, linked.type
        lic = await c.licence(tid, kind or "ND")
        before = await c.balance(lic.owner)
        amount = await c.claim_rewards(tid, signed.first_epoch, signed.availabilities, sigs, lic.type)
        return Claim(
            type=lic.type,
            token_id=tid,
            owner=lic.owner,
            first_epoch=signed.first_epoch,
            last_epoch=signed.last_epoch,
            amount=amount,
            balance_before=before,
            balance=await c.balance(lic.owner),
        )

    def sign(
        self,
        node: str,
        first_epoch: int,
        availabilities: Sequence[int],
        into: SignedAvailability | None = None,
    ) -> SignedAvailability:
        """Oracle side, by hand: sign `node`'s availability (0..255 per epoch from `first_epoch`) with
        the session's key; added to `into` (a claim for the same node, range and values) if given."""
        from r1os.chain.digests import sign_availability

        key = self.access.key
        if key is None:
            raise ChainError("signing needs the oracle's key", hint="make the session with key=...")
        values = list(availabilities)
        sig = "0x" + sign_availability(key, node, first_epoch, values).hex()
        if into is None:
            return SignedAvailability(
                node=node, first_epoch=first_epoch, availabilities=values, signatures=[sig]
            )
        if not same_claim(into, node, first_epoch, values):
            raise ChainError("that claim is for another node, range or availability")
        if sig not in into.signatures:
            into.signatures.append(sig)
        return into


class AsyncJobs:
    """PoAI jobs paid in a stablecoin through the escrow (mock USDC on a devnet) (`session.jobs`)."""

    def __init__(self, access: ChainAccess) -> None:
        self.access = access

    async def fund(self, amount: int, to: str | None = None) -> str:
        """Mint `amount` mock USDC units to `to` (default: the key's address); devnet faucet (on a
        public chain, buy USDC). Returns the recipient."""
        c = self.access.client(signer=True)
        await c.usdc_faucet(amount, to)
        return to or c.sender

    async def create(self, nodes: int, epochs: int, price: int) -> int:
        """Create a job on `nodes` nodes for `epochs` epochs at `price` USDC units per node-epoch, paying
        nodes x epochs x price into the escrow; returns the job id."""
        return await self.access.client(signer=True).create_job(nodes, epochs, price)

    async def status(self, job_id: int) -> JobStatus:
        """A job: its epochs, what is left in escrow, paid out and burned."""
        c = self.access.client()
        return JobStatus(job=await c.job(job_id), current_epoch=await c.current_epoch())

    async def extend(self, job_id: int, epochs: int) -> int:
        """Pay for `epochs` more epochs of a running job; returns its new end epoch (exclusive)."""
        return await self.access.client(signer=True).extend_job(job_id, epochs)

    async def end(self, job_id: int) -> int:
        """Stop a job after the current epoch (still paid); returns its end epoch (exclusive)."""
        return await self.access.client(signer=True).end_job(job_id)

    async def refund(self, job_id: int) -> int:
        """Take back what an ended job did not pay out, and close it; returns the USDC units."""
        return await self.access.client(signer=True).refund(job_id)


class AsyncToken:
    """R1, ETH (gas) and USDC balances, R1 transfers, the devnet faucet (`session.token`)."""

    def __init__(self, access: ChainAccess) -> None:
        self.access = access

    async def balances(self, address: str | None = None) -> Balances:
        """R1, ETH and USDC of `address` (default: the key's)."""
        c = self.access.client(signer=address is None)
        who = address or c.sender
        return Balances(
            address=who, r1=await c.balance(who), eth=await c.eth_balance(who), usdc=await c.usdc_balance(who)
        )

    async def transfer(self, to: str, amount: int) -> str:
        """Send `amount` R1 wei to `to`; returns the transaction hash (0x...)."""
        receipt = await self.access.client(signer=True).transfer(to, amount)
        return "0x" + bytes(receipt["transactionHash"]).hex()

    async def faucet(self, address: str, r1: int | None = None, eth: int = 10 * ETH) -> int:
        """Devnet only: give `address` `eth` wei of ETH and `r1` R1 wei (default: one ND's price + 100
        R1) from the devnet's deployer (anvil dev account 0); returns the R1 sent."""
        from r1os.chain.anvil import DEFAULT_CHAIN_ID, dev_private_key

        c = self.access.client().with_key(dev_private_key(0))
        if c.deployment.chain_id != DEFAULT_CHAIN_ID or c.deployment.deployer != c.sender:
            raise ChainError(
                "the faucet only works on a local devnet deployed by anvil's dev account",
                hint="on a public chain, get R1 and ETH from an exchange or a holder",
            )
        wei = r1 if r1 is not None else await c.nd_price() + 100 * ETH
        if eth:
            await c.send_eth(address, eth)
        if wei:
            if not await c.call("R1", "is_minter", c.sender):
                await c.transact("R1", "set_minter", c.sender, True)  # the deployer owns R1
            await c.mint_r1(address, wei)
        return wei


# -- blocking twins --------------------------------------------------------------------------------


class Chain:
    """The blocking twin of `AsyncChain`."""

    def __init__(self, access: ChainAccess) -> None:
        self._a = AsyncChain(access)

    @property
    def deployment(self) -> Deployment:
        """The deployment: contract addresses, RPC URL, chain id, genesis time, epoch length."""
        return self._a.deployment

    def client(self, *, signer: bool = False) -> ChainClient:
        """The underlying (async) `ChainClient`."""
        return self._a.client(signer=signer)

    def info(self) -> ChainInfo:
        """See `AsyncChain.info`."""
        return _blocking(self._a.info())

    def current_epoch(self) -> int:
        """The chain's current epoch."""
        return _blocking(self._a.current_epoch())


class Licences:
    """The blocking twin of `AsyncLicences`."""

    def __init__(self, access: ChainAccess) -> None:
        self._a = AsyncLicences(access)

    def price(self) -> NdPrice:
        """The current ND tier and price (R1 wei; 0 when sold out)."""
        return _blocking(self._a.price())

    def buy(self, max_price: int | None = None, *, link: str | None = None) -> Purchase:
        """See `AsyncLicences.buy`."""
        return _blocking(self._a.buy(max_price, link=link))

    def link(self, token_id: int, node: str, type: str = "ND") -> None:
        """Link a licence the key owns to a node address."""
        _blocking(self._a.link(token_id, node, type))

    def unlink(self, token_id: int, type: str = "ND") -> None:
        """Unlink a licence from its node."""
        _blocking(self._a.unlink(token_id, type))

    def get(self, token_id: int, type: str = "ND") -> Licence:
        """One licence and its claim state."""
        return _blocking(self._a.get(token_id, type))

    def of_node(self, node: str) -> Licence | None:
        """The licence linked to `node`, or None."""
        return _blocking(self._a.of_node(node))

    def list(self, owner: str | None = None) -> builtins.list[Licence]:
        """Every licence `owner` (default: the key's address) holds."""
        return _blocking(self._a.list(owner))


class Rewards:
    """The blocking twin of `AsyncRewards`."""

    def __init__(self, access: ChainAccess, oracle: str | None = None) -> None:
        self._a = AsyncRewards(access, oracle)

    def show(self, token_id: int, type: str = "ND") -> LicenceRewards:
        """See `AsyncRewards.show`."""
        return _blocking(self._a.show(token_id, type))

    def signed(self, node: str, *, oracle: str | None = None) -> SignedAvailability:
        """See `AsyncRewards.signed`."""
        return _blocking(self._a.signed(node, oracle=oracle))

    def claimable(self, node: str, *, oracle: str | None = None) -> Claimable:
        """See `AsyncRewards.claimable`."""
        return _blocking(self._a.claimable(node, oracle=oracle))

    def claim(
        self,
        signed: SignedAvailability | None = None,
        *,
        node: str | None = None,
        oracle: str | None = None,
        token_id: int | None = None,
        type: str | None = None,
    ) -> Claim:
        """See `AsyncRewards.claim`."""
        return _blocking(self._a.claim(signed, node=node, oracle=oracle, token_id=token_id, type=type))

    def sign(
        self,
        node: str,
        first_epoch: int,
        availabilities: Sequence[int],
        into: SignedAvailability | None = None,
    ) -> SignedAvailability:
        """See `AsyncRewards.sign`."""
        return self._a.sign(node, first_epoch, availabilities, into)


class Jobs:
    """The blocking twin of `AsyncJobs`."""

    def __init__(self, access: ChainAccess) -> None:
        self._a = AsyncJobs(access)

    def fund(self, amount: int, to: str | None = None) -> str:
        """See `AsyncJobs.fund`."""
        return _blocking(self._a.fund(amount, to))

    def create(self, nodes: int, epochs: int, price: int) -> int:
        """See `AsyncJobs.create`."""
        return _blocking(self._a.create(nodes, epochs, price))

    def status(self, job_id: int) -> JobStatus:
        """See `AsyncJobs.status`."""
        return _blocking(self._a.status(job_id))

    def extend(self, job_id: int, epochs: int) -> int:
        """See `AsyncJobs.extend`."""
        return _blocking(self._a.extend(job_id, epochs))

    def end(self, job_id: int) -> int:
        """See `AsyncJobs.end`."""
        return _blocking(self._a.end(job_id))

    def refund(self, job_id: int) -> int:
        """See `AsyncJobs.refund`."""
        return _blocking(self._a.refund(job_id))


class Token:
    """The blocking twin of `AsyncToken`."""

    def __init__(self, access: ChainAccess) -> None:
        self._a = AsyncToken(access)

    def balances(self, address: str | None = None) -> Balances:
        """See `AsyncToken.balances`."""
        return _blocking(self._a.balances(address))

    def transfer(self, to: str, amount: int) -> str:
        """See `AsyncToken.transfer`."""
        return _blocking(self._a.transfer(to, amount))

    def faucet(self, address: str, r1: int | None = None, eth: int = 10 * ETH) -> int:
        """See `AsyncToken.faucet`."""
        return _blocking(self._a.faucet(address, r1, eth))
