"""The r1os SDK: talk to a node (and through it, the network) from any Python program.

A light client: importing it loads HTTP clients and the client side of each service, never a node.
Every error a node answers is raised as a `RemoteError` with the node's message, `cause` and `hint`
(a CSTORE refusal as `CStoreRefused`, which is both a `RemoteError` and a `CStoreError`).

A session is one caller for all its requests: a key that signs them (`key=`), the node's operator
(`token=`, `home=` or $R1OS_API_TOKEN), or nobody (reads); see `AsyncSession` and `r1os.sdk._auth`.

The chain side (licences, rewards, PoAI jobs, tokens) takes a deployment (`deployment=` or a devnet
folder `devnet=`) and loads web3 only on its first call; see `r1os.sdk._chain`.
"""

from r1os.errors import R1osError, RemoteError
from r1os.identity import NodeKey
from r1os.r1fs._client import R1fs, R1fsClient
from r1os.sdk._apps import Apps, AsyncApps, NotReady
from r1os.sdk._auth import TOKEN_ENV, NodeAuth, NodeIdentity, NoToken, read_token
from r1os.sdk._chain import (
    AsyncChain,
    AsyncJobs,
    AsyncLicences,
    AsyncRewards,
    AsyncToken,
    Balances,
    Chain,
    ChainAccess,
    ChainInfo,
    Claim,
    Claimable,
    Jobs,
    JobStatus,
    LicenceRewards,
    Licences,
    NdPrice,
    Purchase,
    Rewards,
    Token,
    key_from_env,
)
from r1os.sdk._clients import AsyncDauth, AsyncOracle, Dauth, Oracle
from r1os.sdk._cstore import AsyncCStore, CStore, CStoreRefused
from r1os.sdk._edil import AsyncEdil, Edil, JobFailed
from r1os.sdk._session import API_URL_ENV, DEFAULT_URL, AsyncSession, Session

__all__ = [
    "API_URL_ENV",
    "DEFAULT_URL",
    "TOKEN_ENV",
    "Apps",
    "AsyncApps",
    "AsyncCStore",
    "AsyncChain",
    "AsyncDauth",
    "AsyncEdil",
    "AsyncJobs",
    "AsyncLicences",
    "AsyncOracle",
    "AsyncRewards",
    "AsyncSession",
    "AsyncToken",
    "Balances",
    "CStore",
    "CStoreRefused",
    "Chain",
    "ChainAccess",
    "ChainInfo",
    "Claim",
    "Claimable",
    "Dauth",
    "Edil",
    "JobFailed",
    "JobStatus",
    "Jobs",
    "LicenceRewards",
    "Licences",
    "NdPrice",
    "NoToken",
    "NodeAuth",
    "NodeIdentity",
    "NodeKey",
    "NotReady",
    "Oracle",
    "Purchase",
    "R1fs",
    "R1fsClient",
    "R1osError",
    "RemoteError",
    "Rewards",
    "Session",
    "Token",
    "key_from_env",
    "read_token",
]
