"""`Session` and `AsyncSession`: one node URL, one caller (a key, the node's operator token, or nobody),
and every service behind them (`.cstore`, `.r1fs`, `.dauth`, `.oracle`, `.apps`, `.edil`), and the
chain side (`.chain`, `.licences`, `.rewards`, `.jobs`, `.token`: see `r1os.sdk._chain`).

Who the caller is, and how each request proves it, is decided in one place: `NodeAuth` (`_auth.py`),
the httpx `Auth` of the session's client.

A light client: it imports the client side of each service only (`r1os.cstore._ops`,
`r1os.r1fs._client`), never a service, the node or its HTTP server.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from r1os.chain.deployment import Deployment
from r1os.identity import NodeKey
from r1os.r1fs._client import R1fs, R1fsClient
from r1os.sdk._apps import Apps, AsyncApps
from r1os.sdk._auth import NodeAuth, find_token
from r1os.sdk._chain import (
    AsyncChain,
    AsyncJobs,
    AsyncLicences,
    AsyncRewards,
    AsyncToken,
    Chain,
    ChainAccess,
    Jobs,
    Licences,
    Rewards,
    Token,
)
from r1os.sdk._clients import AsyncDauth, AsyncOracle, Dauth, Oracle
from r1os.sdk._cstore import AsyncCStore, CStore
from r1os.sdk._edil import AsyncEdil, Edil
from r1os.sdk._http import Api, AsyncApi, json_body

API_URL_ENV = "R1OS_API_URL"
DEFAULT_URL = "http://127.0.0.1:31234"


def _url(url: str | None) -> str:
    return (url or os.environ.get(API_URL_ENV) or DEFAULT_URL).rstrip("/")


def _auth(
    url: str, key: NodeKey | None, token: str | None, home: Path | str | None, sign_reads: bool
) -> NodeAuth:
    # With a key the token is never used, so it is not looked for (a missing token file is no error).
    token = None if key is not None else find_token(token, home)
    return NodeAuth(url, key=key, token=token, sign_reads=sign_reads)


class AsyncSession:
    """`async with AsyncSession(url, key=...) as s: await s.cstore.set(...)` (URL defaults to
    $R1OS_API_URL).

    The caller, the same for every request of the session (see `r1os.sdk._auth`):
    - `key`: requests that change something are signed by it (reads too with `sign_reads=True`);
      CSTORE writes go to its own namespace `app:<address>:`.
    - `token` (else the `api-token` file in the node home folder `home`, else `$R1OS_API_TOKEN`): the
      node's local operator; used only without a key (passing a key means acting as that key).
    - neither: anonymous, for reads of public data.

    The chain groups (`.chain`, `.licences`, `.rewards`, `.jobs`, `.token`) use the contracts of
    `deployment` (a `Deployment` or its JSON file), else of the devnet in `devnet` (its
    `chain/deployment.json`, default ~/.r1os/devnet); they sign transactions with `key`, and
    `.rewards` asks this session's node for the oracles' signatures (pass `oracle=` to ask another).
    Nothing chain-side loads until a chain method is called.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key: NodeKey | None = None,
        token: str | None = None,
        home: Path | str | None = None,
        sign_reads: bool = False,
        timeout: float = 30.0,
        deployment: Deployment | Path | str | None = None,
        devnet: Path | str | None = None,
    ) -> None:
        self.url = _url(url)
        self.key = key
        self.auth = _auth(self.url, key, token, home, sign_reads)
        self._http = httpx.AsyncClient(timeout=timeout, auth=self.auth)
        self._api = AsyncApi(self._http, self.url)
        self.cstore = AsyncCStore(self._http, self.url, key)
        self.dauth = AsyncDauth(self._api)
        self.oracle = AsyncOracle(AsyncApi(self._http, self.url, "oracle"))
        self.apps = AsyncApps(self._api, key, self.auth)
        self.edil = AsyncEdil(self._api, self.auth)
        chain = ChainAccess(key, deployment, devnet)
        self.chain = AsyncChain(chain)
        self.licences = AsyncLicences(chain)
        self.rewards = AsyncRewards(chain, oracle=self.url)
        self.jobs = AsyncJobs(chain)
        self.token = AsyncToken(chain)

    @cached_property
    def r1fs(self) -> R1fsClient:
        # Made on first use: it keeps its own client (streams, the node's local socket), and signs its
        # own requests (a streamed upload as UNSIGNED), as the same caller as the session.
        return R1fsClient(self.url, key=self.auth.key, token=self.auth.token)

    async def node(self) -> dict[str, Any]:
        """What the node reports about itself (address, network, version, uptime, ...)."""
        return await self._api.get("/v1/node")

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        """Any JSON route of the node (one this SDK has no client for, e.g. a newer service's), as the
        session's caller: `await s.request("POST", "/v1/x/y", json={...})`."""
        return await self._api.request(method, path, params=params, **json_body(json))

    async def aclose(self) -> None:
        if "r1fs" in self.__dict__:
            await self.r1fs.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Session:
    """`with Session(url, key=...) as s: s.cstore.set(...)`: the blocking twin of `AsyncSession`, with
    the same arguments and the same caller rules."""

    def __init__(
        self,
        url: str | None = None,
        *,
        key: NodeKey | None = None,
        token: str | None = None,
        home: Path | str | None = None,
        sign_reads: bool = False,
        timeout: float = 30.0,
        deployment: Deployment | Path | str | None = None,
        devnet: Path | str | None = None,
    ) -> None:
        self.url = _url(url)
        self.key = key
        self.auth = _auth(self.url, key, token, home, sign_reads)
        self._http = httpx.Client(timeout=timeout, auth=self.auth)
        self._api = Api(self._http, self.url)
        self.cstore = CStore(self._http, self.url, key)
        self.dauth = Dauth(self._api)
        self.oracle = Oracle(Api(self._http, self.url, "oracle"))
        self.apps = Apps(self._api, key, self.auth)
        self.edil = Edil(self._api, self.auth)
        chain = ChainAccess(key, deployment, devnet)
        self.chain = Chain(chain)
        self.licences = Licences(chain)
        self.rewards = Rewards(chain, oracle=self.url)
        self.jobs = Jobs(chain)
        self.token = Token(chain)

    @cached_property
    def r1fs(self) -> R1fs:
        return R1fs(self.url, key=self.auth.key, token=self.auth.token)

    def node(self) -> dict[str, Any]:
        """What the node reports about itself (address, network, version, uptime, ...)."""
        return self._api.get("/v1/node")

    def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        """Any JSON route of the node, as the session's caller (see `AsyncSession.request`)."""
        return self._api.request(method, path, params=params, **json_body(json))

    def close(self) -> None:
        if "r1fs" in self.__dict__:
            self.r1fs.close()
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
