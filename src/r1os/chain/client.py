"""`ChainClient`: the one way r1os talks to its contracts (nodes, oracles, SDK and CLI).

It works against any EVM JSON-RPC URL (a devnet anvil or a public chain), given a `Deployment`
(addresses) and, for transactions, a private key. Every method is async; contract reverts come back as
`ChainError("<Contract>.<function> reverted: <reason>")`. Amounts are integers in the token's smallest
unit (R1: 18 decimals, USDC: 6); `parse_units`/`format_units` convert for people.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel
from web3.logs import DISCARD
from web3.types import TxReceipt

from r1os.chain import digests
from r1os.chain._base import Web3Base
from r1os.chain.deployment import Deployment
from r1os.chain.provider import ChainProvider, RpcProvider
from r1os.chain.units import R1_DECIMALS, USDC_DECIMALS, format_units  # noqa: F401
from r1os.errors import ChainError
from r1os.identity import NodeKey, normalize_address

log = logging.getLogger(__name__)

LicenceType = Literal["ND", "MND", "GND"]
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
GND_TOKEN_ID = 1


class Licence(BaseModel):
    """One licence and its mining state."""

    type: LicenceType
    token_id: int
    owner: str
    node: str | None
    next_claim_epoch: int
    claimable_epochs: int
    claimed: int


class Job(BaseModel):
    """A PoAI job as the escrow keeps it (amounts in stablecoin units)."""

    job_id: int
    owner: str
    nodes: int
    start_epoch: int
    end_epoch: int
    price_per_node_epoch: int
    balance: int
    paid: int
    burned: int
    closed: bool


def _licence_contract(kind: str) -> str:
    kind = kind.upper()
    if kind == "ND":
        return "NDLicence"
    if kind in ("MND", "GND"):
        return "MNDLicence"
    raise ChainError(f"unknown licence type {kind!r}", hint="use ND, MND or GND")


def _address(value: str) -> str:
    try:
        return normalize_address(value)
    except Exception as exc:
        raise ChainError(str(exc)) from None


def _event(receipt: TxReceipt, contract: Any, event: str) -> dict[str, Any]:
    """The args of the first `event` the receipt holds (raises if missing: a contract/ABI mismatch)."""
    logs = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
    if not logs:
        raise ChainError(f"transaction {receipt['transactionHash'].hex()} emitted no {event} event")
    return dict(logs[0]["args"])


class ChainClient(Web3Base):
    """Typed access to the r1os contracts of one deployment."""

    def __init__(
        self,
        deployment: Deployment,
        key: LocalAccount | NodeKey | str | bytes | None = None,
        *,
        provider: ChainProvider | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.deployment = deployment
        self.provider = provider or RpcProvider(deployment.rpc)
        super().__init__(self.provider.rpc_url, deployment.contracts, key, timeout=timeout)

    def with_key(self, key: LocalAccount | NodeKey | str | bytes) -> ChainClient:
        """The same deployment and endpoint, signing with another key."""
        return ChainClient(self.deployment, key, provider=self.provider, timeout=self.timeout)

    # -- chain -------------------------------------------------------------------------------

    async def chain_id(self) -> int:
        return int(await self._run("eth_chainId", lambda: self.w3.eth.chain_id))

    async def block_time(self) -> int:
        """Timestamp of the latest block (the chain's clock, which a devnet can move)."""
        block = await self._run("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
        return int(block["timestamp"])

    async def eth_balance(self, address: str | None = None) -> int:
        who = _address(address) if address else self.sender
        return int(await self._run("eth_getBalance", lambda: self.w3.eth.get_balance(who)))  # type: ignore[arg-type]

    # -- epochs and oracles --------------------------------------------------------------------

    async def current_epoch(self) -> int:
        """The epoch a transaction sent now would see."""
        return int(await self.call("Controller", "current_epoch"))

    async def oracles(self) -> list[str]:
        return [str(a) for a in await self.call("Controller", "get_oracles")]

    async def min_signatures(self) -> int:
        return int(await self.call("Controller", "min_signatures"))

    async def is_oracle(self, address: str) -> bool:
        return bool(await self.call("Controller", "is_oracle", _address(address)))

    async def add_oracle(self, address: str) -> TxReceipt:
        return await self.transact("Controller", "add_oracle", _address(address))

    async def remove_oracle(self, address: str) -> TxReceipt:
        return await self.transact("Controller", "remove_oracle", _address(address))

    async def set_min_signatures(self, n: int) -> TxReceipt:
        return await self.transact("Controller", "set_min_signatures", n)

    async def is_node_active(self, node: str) -> bool:
        return bool(await self.call("Controller", "is_node_active", _address(node)))

    async def chain_availability_digest(
        self, node: str, first_epoch: int, availabilities: Iterable[int] | bytes
    ) -> bytes:
        """The controller's own digest for a claim (to check `digests.availability_digest` against)."""
        data = digests.availability_bytes(availabilities)
        last = first_epoch + len(data) - 1
        out = await self.call("Controller", "availability_digest", _address(node), first_epoch, last, data)
        return bytes(out)

    async def chain_attestation_digest(self, job_id: int, epoch: int, nodes: Sequence[str]) -> bytes:
        escrow = self.deployment.address("PoAIEscrow")
        out = await self.call(
            "Controller", "attestation_digest", escrow, job_id, epoch, [_address(n) for n in nodes]
        )
        return bytes(out)

    # -- tokens --------------------------------------------------------------------------------

    async def balance(self, address: str | None = None) -> int:
        """R1 balance (wei)."""
        who = _address(address) if address else self.sender
        return int(await self.call("R1", "balanceOf", who))

    async def transfer(self, to: str, amount: int) -> TxReceipt:
        return await self.transact("R1", "transfer", _address(to), amount)

    async def mint_r1(self, to: str, amount: int) -> TxReceipt:
        """Mint R1 (the caller must be a minter: on a devnet, the deployer)."""
        return await self.transact("R1", "mint", _address(to), amount)

    async def usdc_balance(self, address: str | None = None) -> int:
        who = _address(address) if address else self.sender
        return int(await self.call("USDC", "balanceOf", who))

    async def usdc_faucet(self, amount: int, to: str | None = None) -> TxReceipt:
        """Mint mock USDC (devnet stablecoin; anyone may mint)."""
        return await self.transact("USDC", "mint", _address(to) if to else self.sender, amount)

    async def _ensure_allowance(self, token: str, spender: str, amount: int) -> None:
        spender_addr = self.deployment.address(spender)
        have = int(await self.call(token, "allowance", self.sender, spender_addr))
        if have < amount:
            await self.transact(token, "approve", spender_addr, amount)

    # -- licences ------------------------------------------------------------------------------

    async def nd_price(self) -> int:
        """Current ND price in R1 wei (0 when sold out)."""
        return int(await self.call("NDLicence", "current_price"))

    async def nd_tier(self) -> int:
        return int(await self.call("NDLicence", "current_tier"))

    async def buy_nd(self, max_price: int | None = None) -> int:
        """Buy the next ND licence (approves the R1 first); returns its token id."""
        price = await self.nd_price()
        if price == 0:
            raise ChainError("ND licences are sold out")
        limit = price if max_price is None else max_price
        if price > limit:
            raise ChainError(
                f"ND price is {format_units(price, R1_DECIMALS)} R1,"
                f" above the limit {format_units(limit, R1_DECIMALS)} R1"
            )
        await self._ensure_allowance("R1", "NDLicence", limit)
        receipt = await self.transact("NDLicence", "buy", limit)
        return int(_event(receipt, self.contract("NDLicence"), "LicenceBought")["token_id"])

    async def mint_mnd(self, to: str, assigned_amount: int) -> int:
        """Assign an MND (owner only); returns its token id."""
        receipt = await self.transact("MNDLicence", "mint_mnd", _address(to), assigned_amount)
        return int(_event(receipt, self.contract("MNDLicence"), "MndAssigned")["token_id"])

    async def link(self, token_id: int, node: str, kind: str = "ND") -> TxReceipt:
        """Link a licence we own to a node address (a relink if it was linked)."""
        return await self.transact(_licence_contract(kind), "link", token_id, _address(node))

    async def unlink(self, token_id: int, kind: str = "ND") -> TxReceipt:
        return await self.transact(_licence_contract(kind), "unlink", token_id)

    async def licence(self, token_id: int, kind: str = "ND") -> Licence:
        """One licence's owner, node and claim state."""
        name = _licence_contract(kind)
        try:
            owner = str(await self.call(name, "ownerOf", token_id))
        except ChainError as exc:
            if "invalid token ID" in str(exc):
                raise ChainError(f"there is no {kind.upper()} licence #{token_id}") from None
            raise
        node = str(await self.call(name, "node_of", token_id))
        first, count = await self.call(name, "claimable_epochs", token_id)
        claimed = int(await self.call(name, "claimed_amount", token_id))
        ltype: LicenceType = "ND" if name == "NDLicence" else (
            "GND" if token_id == GND_TOKEN_ID else "MND"
        )  # fmt: skip
        return Licence(
            type=ltype,
            token_id=token_id,
            owner=owner,
            node=None if node == ZERO_ADDRESS else node,
            next_claim_epoch=int(first),
            claimable_epochs=int(count),
            claimed=claimed,
        )

    async def licences(self, owner: str | None = None) -> list[Licence]:
        """Every ND, MND and GND licence `owner` (default: us) holds."""
        who = _address(owner) if owner else self.sender
        out: list[Licence] = []
        for name, kind in (("NDLicence", "ND"), ("MNDLicence", "MND")):
            count = int(await self.call(name, "balanceOf", who))
            for i in range(count):
                token_id = int(await self.call(name, "tokenOfOwnerByIndex", who, i))
                out.append(await self.licence(token_id, kind))
        return out

    async def licence_of(self, node: str) -> Licence | None:
        """The licence linked to `node`, or None."""
        contract, token_id = await self.call("Controller", "node_licence", _address(node))
        if int(token_id) == 0 or str(contract) == ZERO_ADDRESS:
            return None
        kind = "ND" if str(contract) == self.deployment.address("NDLicence") else "MND"
        return await self.licence(int(token_id), kind)

    # -- rewards -------------------------------------------------------------------------------

    async def compute_reward(
        self, token_id: int, availabilities: Iterable[int] | bytes, kind: str = "ND"
    ) -> int:
        """What a claim of these availabilities from the next unclaimed epoch would pay now."""
        data = digests.availability_bytes(availabilities)
        return int(await self.call(_licence_contract(kind), "compute_reward", token_id, data))

    async def claim_rewards(
        self,
        token_id: int,
        first_epoch: int,
        availabilities: Iterable[int] | bytes,
        signatures: Sequence[bytes | str],
        kind: str = "ND",
    ) -> int:
        """Submit oracle-signed availabilities for a licence; returns the R1 minted to its owner."""
        data = digests.availability_bytes(availabilities)
        sigs = [_signature(s) for s in signatures]
        name = _licence_contract(kind)
        receipt = await self.transact(name, "claim", token_id, first_epoch, data, sigs)
        return int(_event(receipt, self.contract(name), "RewardsClaimed")["amount"])

    # -- PoAI jobs -----------------------------------------------------------------------------

    async def create_job(self, nodes: int, epochs: int, price_per_node_epoch: int) -> int:
        """Create and pay for a job (nodes x epochs x price, approved first); returns its id."""
        total = nodes * epochs * price_per_node_epoch
        await self._ensure_allowance("USDC", "PoAIEscrow", total)
        receipt = await self.transact("PoAIEscrow", "create_job", nodes, epochs, price_per_node_epoch)
        return int(_event(receipt, self.contract("PoAIEscrow"), "JobCreated")["job_id"])

    async def job(self, job_id: int) -> Job:
        raw = await self.call("PoAIEscrow", "get_job", job_id)
        fields = list(Job.model_fields)[1:]
        values = dict(zip(fields, raw, strict=True))
        if str(values["owner"]) == ZERO_ADDRESS:
            raise ChainError(f"no PoAI job {job_id}")
        return Job(job_id=job_id, **values)

    async def attest(
        self, job_id: int, epoch: int, nodes: Sequence[str], signatures: Sequence[bytes | str]
    ) -> int:
        """Submit oracle-signed proof that `nodes` served the job in `epoch`; returns the amount paid."""
        receipt = await self.transact(
            "PoAIEscrow",
            "attest",
            job_id,
            epoch,
            [_address(n) for n in nodes],
            [_signature(s) for s in signatures],
        )
        return int(_event(receipt, self.contract("PoAIEscrow"), "EpochAttested")["paid"])

    async def end_job(self, job_id: int) -> int:
        """Stop the job after the current epoch; returns its new end epoch."""
        receipt = await self.transact("PoAIEscrow", "end_job", job_id)
        return int(_event(receipt, self.contract("PoAIEscrow"), "JobEnded")["end_epoch"])

    async def extend_job(self, job_id: int, epochs: int) -> int:
        """Pay for `epochs` more epochs of a running job (approved first); returns its new end epoch."""
        job = await self.job(job_id)
        await self._ensure_allowance("USDC", "PoAIEscrow", job.nodes * epochs * job.price_per_node_epoch)
        receipt = await self.transact("PoAIEscrow", "extend_job", job_id, epochs)
        return int(_event(receipt, self.contract("PoAIEscrow"), "JobExtended")["end_epoch"])

    async def refund(self, job_id: int) -> int:
        """Take back what the job did not pay out (after its settlement window); returns it."""
        receipt = await self.transact("PoAIEscrow", "refund", job_id)
        return int(_event(receipt, self.contract("PoAIEscrow"), "JobRefunded")["amount"])

    async def total_volume(self) -> int:
        """Stablecoin job owners have deposited in all (creates and top-ups)."""
        return int(await self.call("PoAIEscrow", "total_volume"))

    # -- the R1/USDC pool ----------------------------------------------------------------------

    async def r1_supply(self) -> int:
        """R1 in existence (wei): minted by mining, less everything burned."""
        return int(await self.call("R1", "totalSupply"))

    async def has_pool(self) -> bool:
        """True if the ND sale is priced by (and pays into) an R1/USDC pool."""
        if "R1USDCPair" not in self.deployment.contracts:
            return False
        return int(str(await self.call("NDLicence", "pair")), 16) != 0

    async def pool_reserves(self) -> tuple[int, int]:
        """(R1 wei, USDC units) in the R1/USDC pool."""
        from r1os.chain import dex

        return await dex.reserves(self)

    async def r1_price(self) -> int:
        """USD per R1 with 18 decimals the ND sale uses now (the pool's, or the owner-set fallback)."""
        return int(await self.call("NDLicence", "r1_price"))

    async def price_check(self) -> tuple[int, int, bool]:
        """(spot, reference, within the guard): whether an ND purchase would be refused now."""
        spot, reference, ok = await self.call("NDLicence", "price_check")
        return int(spot), int(reference), bool(ok)

    async def total_r1_burned_by_poai(self) -> int:
        """R1 the escrow bought on the pool with PoAI burn shares and burned."""
        return int(await self.call("PoAIEscrow", "total_r1_burned"))

    async def swap(self, token_in: Literal["R1", "USDC"], amount: int, min_out: int = 0) -> int:
        """Swap `amount` of R1 for USDC or USDC for R1 on the pool (approved first); returns what came out."""
        if token_in not in ("R1", "USDC"):
            raise ChainError(f"swap R1 or USDC, not {token_in!r}")
        token_out = "USDC" if token_in == "R1" else "R1"
        await self._ensure_allowance(token_in, "UniswapV2Router02", amount)
        before = int(await self.call(token_out, "balanceOf", self.sender))
        path = [self.deployment.address(token_in), self.deployment.address(token_out)]
        await self.transact(
            "UniswapV2Router02", "swapExactTokensForTokens", amount, min_out, path, self.sender, 2**63
        )
        return int(await self.call(token_out, "balanceOf", self.sender)) - before


def _signature(sig: bytes | str) -> bytes:
    raw = sig if isinstance(sig, bytes) else _hex(sig)
    if len(raw) != 65:
        raise ChainError(f"a signature is 65 bytes (r||s||v), got {len(raw)}")
    return raw


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ChainError(f"not hex: {text[:20]!r}") from None
