"""r1os on-chain side: licences, R1 rewards and PoAI escrow through web3.py.

`ChainClient` talks to a `Deployment` of the contracts on any EVM RPC; `r1os.chain.deploy.deploy`
makes one; the oracle signing helpers live in `r1os.chain.digests`, anvil control in
`r1os.chain.anvil`, the devnet chain in `r1os.chain.devnet`. web3 loads on first use of a name that
needs it, so importing a light submodule (`digests`, `units`, `deployment`) stays cheap for node
processes and the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient, Job, Licence
    from r1os.chain.deployment import Deployment

_LAZY = {
    "ChainClient": "r1os.chain.client",
    "Job": "r1os.chain.client",
    "Licence": "r1os.chain.client",
    "Deployment": "r1os.chain.deployment",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'r1os.chain' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["ChainClient", "Deployment", "Job", "Licence"]
