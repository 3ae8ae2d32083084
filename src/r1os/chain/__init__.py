"""r1os on-chain side: licences, R1 rewards and PoAI escrow through web3.py.

`ChainClient` talks to a `Deployment` of the contracts on any EVM RPC; `deploy` makes one; the oracle
signing helpers live in `r1os.chain.digests`, anvil control in `r1os.chain.anvil`, the devnet chain in
`r1os.chain.devnet`.
"""

from r1os.chain.client import ChainClient, Job, Licence
from r1os.chain.deploy import deploy
from r1os.chain.deployment import Deployment

__all__ = ["ChainClient", "Deployment", "Job", "Licence", "deploy"]
