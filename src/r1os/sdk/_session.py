"""`Session` and `AsyncSession`: one node URL and (optionally) one key, and every service behind them
(`.cstore`, `.r1fs`, `.dauth`, `.oracle`).

A light client: it imports the client side of each service only (`r1os.cstore._ops`,
`r1os.r1fs._client`), never a service, the node or its HTTP server.
"""

from __future__ import annotations

import os
from functools import cached_property
from types import TracebackType
from typing import Any, Self

import httpx

from r1os.identity import NodeKey
from r1os.r1fs._client import R1fs, R1fsClient
from r1os.sdk._clients import AsyncDauth, AsyncOracle, Dauth, Oracle
from r1os.sdk._cstore import AsyncCStore, CStore
from r1os.sdk._http import Api, AsyncApi

API_URL_ENV = "R1OS_API_URL"
DEFAULT_URL = "http://127.0.0.1:31234"


def _url(url: str | None) -> str:
    return (url or os.environ.get(API_URL_ENV) or DEFAULT_URL).rstrip("/")


class AsyncSession:
    """`async with AsyncSession(url, key=...) as s: await s.cstore.set(...)`"""

    def __init__(self, url: str | None = None, *, key: NodeKey | None = None, timeout: float = 30.0) -> None:
        self.url = _url(url)
        self.key = key
        self._http = httpx.AsyncClient(timeout=timeout)
        self._api = AsyncApi(self._http, self.url)
        self.cstore = AsyncCStore(self._http, self.url, key)
        self.dauth = AsyncDauth(self._api)
        self.oracle = AsyncOracle(AsyncApi(self._http, self.url, "oracle"))

    @cached_property
    def r1fs(self) -> R1fsClient:
        # Made on first use: it keeps its own client (streams, the node's local socket).
        return R1fsClient(self.url)

    async def node(self) -> dict[str, Any]:
        """What the node reports about itself (address, network, version, uptime, ...)."""
        return await self._api.get("/v1/node")

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
    """`with Session(url, key=...) as s: s.cstore.set(...)` (URL defaults to $R1OS_API_URL)."""

    def __init__(self, url: str | None = None, *, key: NodeKey | None = None, timeout: float = 30.0) -> None:
        self.url = _url(url)
        self.key = key
        self._http = httpx.Client(timeout=timeout)
        self._api = Api(self._http, self.url)
        self.cstore = CStore(self._http, self.url, key)
        self.dauth = Dauth(self._api)
        self.oracle = Oracle(Api(self._http, self.url, "oracle"))

    @cached_property
    def r1fs(self) -> R1fs:
        return R1fs(self.url)

    def node(self) -> dict[str, Any]:
        """What the node reports about itself (address, network, version, uptime, ...)."""
        return self._api.get("/v1/node")

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
