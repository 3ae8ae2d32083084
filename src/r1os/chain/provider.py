"""The chain seam: where the JSON-RPC endpoint comes from.

`ChainClient` talks to any EVM JSON-RPC URL. A `ChainProvider` says which one, and whether it can do
what only a local devnet chain can (move time forward, set balances): `RpcProvider` for any URL (a public
chain such as Base, or a devnet started elsewhere), `AnvilProvider` for an anvil this process starts.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from web3 import Web3

from r1os.chain.anvil import Anvil
from r1os.errors import ChainError


class ChainProvider(ABC):
    """One JSON-RPC endpoint, plus devnet powers where the chain has them."""

    @property
    @abstractmethod
    def rpc_url(self) -> str: ...

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Make the endpoint ready (no-op for a remote chain)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `start` took."""

    async def advance_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block (devnet only)."""
        raise ChainError(f"{self.rpc_url} cannot move time forward: it is not a local devnet chain")

    async def set_balance(self, address: str, wei: int) -> None:
        """Set an account's ETH balance (devnet only)."""
        raise ChainError(f"{self.rpc_url} cannot set balances: it is not a local devnet chain")


class RpcProvider(ChainProvider):
    """Any EVM JSON-RPC URL. `devnet=True` unlocks the anvil/hardhat test methods."""

    def __init__(self, url: str, *, devnet: bool = False) -> None:
        self._url = url
        self.devnet = devnet

    @property
    def rpc_url(self) -> str:
        return self._url

    async def _rpc(self, method: str, params: list[Any]) -> Any:
        w3 = Web3(Web3.HTTPProvider(self._url, request_kwargs={"timeout": 10}))
        try:
            return await asyncio.to_thread(w3.provider.make_request, method, params)  # type: ignore[arg-type]
        except Exception as exc:
            raise ChainError(f"{method} failed on {self._url}: {exc}") from exc

    async def advance_time(self, seconds: int) -> None:
        if not self.devnet:
            await super().advance_time(seconds)
        await self._rpc("evm_increaseTime", [int(seconds)])
        await self._rpc("evm_mine", [])

    async def set_balance(self, address: str, wei: int) -> None:
        if not self.devnet:
            await super().set_balance(address, wei)
        await self._rpc("anvil_setBalance", [address, hex(wei)])


class AnvilProvider(RpcProvider):
    """An anvil started (and stopped) by this provider: the tests' and tools' local chain."""

    def __init__(self, anvil: Anvil | None = None) -> None:
        self.anvil = anvil or Anvil()
        super().__init__(self.anvil.rpc_url, devnet=True)

    async def start(self) -> None:
        await self.anvil.start()

    async def close(self) -> None:
        await self.anvil.stop()
