"""Where a set of r1os contracts lives: the record `r1os chain deploy` writes and every client reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from r1os.errors import ChainError


class Deployment(BaseModel):
    """One deployment of the contracts on one chain (saved as JSON, e.g. `<devnet>/chain/deployment.json`)."""

    rpc: str
    chain_id: int
    contracts: dict[str, str] = Field(
        description="contract name -> EIP-55 address: R1, Controller, NDLicence, MNDLicence, USDC,"
        " PoAIEscrow; with a DEX also UniswapV2Factory, WETH9, UniswapV2Router02, R1USDCPair (the pair)"
    )
    genesis_time: int = Field(description="unix time at which epoch 0 starts")
    epoch_seconds: int
    deployer: str
    block: int = Field(default=0, description="block of the first deployment transaction")

    def address(self, name: str) -> str:
        try:
            return self.contracts[name]
        except KeyError:
            raise ChainError(
                f"the deployment has no {name} contract",
                hint=f"it has: {', '.join(sorted(self.contracts))}",
            ) from None

    @property
    def has_dex(self) -> bool:
        """True if the deployment records a Uniswap V2 router and the R1/USDC pair."""
        return "UniswapV2Router02" in self.contracts and "R1USDCPair" in self.contracts

    def epoch_at(self, unix_time: float) -> int:
        """Epoch number at a wall-clock time (what the Controller computes from block time)."""
        return max(0, int(unix_time - self.genesis_time) // self.epoch_seconds)

    def save(self, path: Path) -> Path:
        """Write atomically, so a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Deployment:
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ChainError(
                f"no deployment file at {path}",
                hint="deploy with `r1os chain deploy` or start a devnet with `r1os devnet up`",
            ) from None
        except (OSError, ValueError, ValidationError) as exc:
            raise ChainError(f"cannot read deployment {path}: {exc}") from None
