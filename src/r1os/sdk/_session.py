"""`Session` and `AsyncSession`: one node URL and (optionally) one key, and every service behind them
(`.cstore`, `.r1fs`)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

import httpx

from r1os.identity import NodeKey
from r1os.r1fs import R1fs, R1fsClient
from r1os.sdk._cstore import AsyncCStore, CStore

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
        self.cstore = AsyncCStore(self._http, self.url, key)
        self.r1fs = R1fsClient(self.url)

    async def node(self) -> dict[str, object]:
        r = await self._http.get(f"{self.url}/v1/node")
        r.raise_for_status()
        return dict(r.json())

    async def aclose(self) -> None:
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
        self.cstore = CStore(self._http, self.url, key)
        self.r1fs = R1fs(self.url)

    def node(self) -> dict[str, object]:
        r = self._http.get(f"{self.url}/v1/node")
        r.raise_for_status()
        return dict(r.json())

    def close(self) -> None:
        self.r1fs.close()
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
