"""Calls and transactions through web3.py, with every failure turned into a readable `ChainError`.

web3.py's synchronous API runs in a worker thread (`asyncio.to_thread`), so the public client is
async without tying an HTTP session to one event loop; transactions from one client are serialised
by a lock, which keeps nonces right without a nonce manager.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception, Web3RPCError
from web3.types import TxReceipt

from r1os.chain.compile import compile_contract
from r1os.chain.units import format_units, parse_units  # noqa: F401 - re-exported
from r1os.errors import ChainError
from r1os.identity import NodeKey

log = logging.getLogger(__name__)
T = TypeVar("T")

_NO_GAS_MONEY = ("insufficient funds", "lack of funds", "exceeds allowance: 0")

GAS_MARGIN = 1.25
"""Multiplier on estimated gas: block time moves between estimate and inclusion (epoch maths)."""


# Deployment names -> contract whose ABI they use (the stablecoin is any ERC-20; MockUSDC's ABI covers it).
_ABI_NAME = {"USDC": "MockUSDC"}


@cache
def abi_of(name: str) -> list[dict[str, Any]]:
    """ABI of a contract (or deployment name), from the (cached) compiler; Uniswap's from its artifacts."""
    from r1os.chain import dex

    if name in dex.ABI_NAMES:
        return dex.abi(name)
    return compile_contract(_ABI_NAME.get(name, name)).abi


def to_account(key: LocalAccount | NodeKey | str | bytes | None) -> LocalAccount | None:
    """Accept the key forms the project uses: eth_account, NodeKey, hex or raw bytes."""
    if key is None or isinstance(key, LocalAccount):
        return key
    if isinstance(key, NodeKey):
        key = key.private_key
    try:
        acct: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise ChainError(f"invalid private key: {exc}") from None
    return acct


def revert_reason(exc: ContractLogicError) -> str:
    """The revert string a contract gave (`assert cond, "reason"`), or a plain description."""
    msg = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else "")
    msg = msg.removeprefix("execution reverted").lstrip(": ").strip()
    return msg or "reverted without a reason"


class Web3Base:
    """Holds the Web3 connection, the signing account and the contract handles."""

    def __init__(
        self,
        rpc_url: str,
        contracts: dict[str, str],
        key: LocalAccount | NodeKey | str | bytes | None = None,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.rpc_url = rpc_url
        self.addresses = dict(contracts)
        self.account = to_account(key)
        self.timeout = timeout
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": min(timeout, 30.0)}))
        self._contracts: dict[str, Contract] = {}
        self._tx_lock = threading.Lock()
        self._no_pending = False

    @property
    def sender(self) -> str:
        """Address transactions come from; ChainError if the client has no key."""
        if self.account is None:
            raise ChainError(
                "this needs a private key",
                hint="pass --key-file (with R1OS_PASSWORD) or set R1OS_PRIVATE_KEY",
            )
        return str(self.account.address)

    def contract(self, name: str) -> Contract:
        if name not in self._contracts:
            try:
                address = self.addresses[name]
            except KeyError:
                raise ChainError(
                    f"the deployment has no {name} contract",
                    hint=f"it has: {', '.join(sorted(self.addresses)) or 'nothing'}",
                ) from None
            self._contracts[name] = self.w3.eth.contract(
                address=Web3.to_checksum_address(address), abi=abi_of(name)
            )
        return self._contracts[name]

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        """Run blocking web3 work in a thread and translate its errors."""
        try:
            return await asyncio.to_thread(fn)
        except ChainError:
            raise
        except ContractLogicError as exc:
            reason = revert_reason(exc)
            log.info("%s reverted: %s", what, reason)
            raise ChainError(f"{what} reverted: {reason}") from None
        except Web3RPCError as exc:
            message = getattr(exc, "message", None) or str(exc)
            log.info("%s failed: %s", what, message)
            hint = None
            if any(m in message.lower() for m in _NO_GAS_MONEY) and self.account is not None:
                hint = f"{self.account.address} needs ETH on this chain to pay for gas"
            raise ChainError(f"{what} failed: {message}", hint=hint) from None
        except requests.exceptions.RequestException as exc:
            raise ChainError(
                f"cannot reach the chain at {self.rpc_url}: {type(exc).__name__}",
                hint="is the devnet up (`r1os devnet status`) or the RPC URL right?",
            ) from None
        except TimeExhausted:
            raise ChainError(f"{what}: no receipt within {self.timeout:.0f}s") from None
        except (Web3Exception, ValueError, TypeError) as exc:
            raise ChainError(f"{what} failed: {exc}") from None

    async def call(self, name: str, fn: str, *args: Any, block: str | int | None = None) -> Any:
        """Read a contract view, by default as of the pending block (see `_view_block`)."""
        func: ContractFunction = getattr(self.contract(name).functions, fn)(*args)
        return await self._run(f"{name}.{fn}", lambda: self._call(func, block))

    def _view_block(self) -> str:
        # Views and gas estimates run on the pending block: its timestamp is "now", while an idle
        # devnet's latest block can be minutes old, which makes epoch maths (what has ended, what
        # may be claimed) lag. An RPC that refuses "pending" is asked about "latest" from then on.
        return "latest" if self._no_pending else "pending"

    def _call(self, func: ContractFunction, block: str | int | None) -> Any:
        ident: Any = self._view_block() if block is None else block
        try:
            return func.call(block_identifier=ident)
        except Web3RPCError:
            if block is not None or ident == "latest":
                raise
            self._no_pending = True
            return func.call(block_identifier="latest")

    def _estimate(self, tx: dict[str, Any]) -> int:
        probe: Any = {k: v for k, v in tx.items() if k not in ("gas", "nonce")}
        try:
            return int(self.w3.eth.estimate_gas(probe, self._view_block()))  # type: ignore[arg-type]
        except Web3RPCError:
            if self._no_pending:
                raise
            self._no_pending = True
            return int(self.w3.eth.estimate_gas(probe, "latest"))

    async def transact(self, name: str, fn: str, *args: Any, value: int = 0) -> TxReceipt:
        """Send a contract transaction signed by our key; return the receipt of a successful one."""
        func: ContractFunction = getattr(self.contract(name).functions, fn)(*args)
        return await self._run(f"{name}.{fn}", lambda: self._send(func, value))

    async def send_eth(self, to: str, wei: int) -> TxReceipt:
        """Plain ETH transfer (gas money for nodes)."""
        tx = {"to": Web3.to_checksum_address(to), "value": wei, "gas": 21000}
        return await self._run("ETH transfer", lambda: self._send(None, 0, tx))

    def _send(
        self, func: ContractFunction | None, value: int, raw: dict[str, Any] | None = None
    ) -> TxReceipt:
        sender: Any = self.sender
        assert self.account is not None
        with self._tx_lock:
            base: dict[str, Any] = {
                "from": sender,
                "value": value,
                "nonce": self.w3.eth.get_transaction_count(sender, "pending"),
                "chainId": self.w3.eth.chain_id,
            }
            if func is not None:
                # A placeholder gas stops web3 from estimating on "latest"; we estimate ourselves.
                # Estimation runs the call first, so a revert surfaces here with its reason.
                tx: dict[str, Any] = dict(func.build_transaction({**base, "gas": 1}))  # type: ignore[arg-type]
                tx["gas"] = int(self._estimate(tx) * GAS_MARGIN)
            else:
                tx = {**base, **(raw or {})}
                tx.setdefault("gasPrice", self.w3.eth.gas_price)
            signed = self.account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout)
        if receipt["status"] != 1:
            what = getattr(func, "fn_name", "deploy") if func is not None else "transfer"
            raise ChainError(f"{what}: transaction {tx_hash.hex()} failed on-chain (out of gas?)")
        return receipt

    async def deploy_contract(self, name: str, *args: Any) -> TxReceipt:
        """Deploy `contracts/<name>.vy` with constructor `args`; the receipt has `contractAddress`."""
        compiled = await asyncio.to_thread(compile_contract, name)
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        ctor: Any = factory.constructor(*args)
        return await self._run(f"deploy {name}", lambda: self._send(ctor, 0))
