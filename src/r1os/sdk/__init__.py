"""The r1os SDK: talk to a node (and through it, the network) from any Python program.

A light client: importing it loads HTTP clients and the client side of each service, never a node.
Every error a node answers is raised as a `RemoteError` with the node's message, `cause` and `hint`
(a CSTORE refusal as `CStoreRefused`, which is both a `RemoteError` and a `CStoreError`).
"""

from r1os.errors import R1osError, RemoteError
from r1os.r1fs._client import R1fs, R1fsClient
from r1os.sdk._clients import AsyncDauth, AsyncOracle, Dauth, Oracle
from r1os.sdk._cstore import AsyncCStore, CStore, CStoreRefused
from r1os.sdk._session import API_URL_ENV, DEFAULT_URL, AsyncSession, Session

__all__ = [
    "API_URL_ENV",
    "DEFAULT_URL",
    "AsyncCStore",
    "AsyncDauth",
    "AsyncOracle",
    "AsyncSession",
    "CStore",
    "CStoreRefused",
    "Dauth",
    "Oracle",
    "R1fs",
    "R1fsClient",
    "R1osError",
    "RemoteError",
    "Session",
]
