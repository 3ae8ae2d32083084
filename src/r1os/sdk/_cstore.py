"""CSTORE from outside a node: the same operations over a node's HTTP API, async and sync.

With a key, the client signs its own batches (so it writes as itself: `app:<its address>:...`,
its own fields in `pub:` hashes); without one, it asks the node to sign (`/v1/cstore/write`), which only
the node's operator may (a session with the node's API token). The session's client puts the caller's
`Authorization` on every request (`_auth.NodeAuth`), so nothing here deals with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx

from r1os.cstore._hlc import HybridClock, Timestamp
from r1os.cstore._ops import CStoreError, Op, sign_batch
from r1os.errors import R1osError, RemoteError
from r1os.identity import NodeKey
from r1os.sdk._http import answer, remote_error, unreachable


class CStoreRefused(CStoreError, RemoteError):
    """A node refused a CSTORE request. Both a `CStoreError` (as the same refusal raised inside a node)
    and a `RemoteError` (as every error a node answers), with the node's message, cause, hint and status."""

    def __init__(self, remote: RemoteError) -> None:
        # Not CStoreError's constructor: everything comes from the node's answer as it is.
        R1osError.__init__(self, str(remote), hint=remote.hint, cause=remote.cause, status=remote.status)


#: Keys asked for per page when listing (the node's default page; it allows up to 10,000).
KEYS_PAGE = 1000


def _expires(ttl: float | None) -> int | None:
    return None if ttl is None else time.time_ns() // 1_000_000 + max(1, int(ttl * 1000))


class _Ops:
    """Collects ops for one batch."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.ops.append(Op("set", key, None, value, _expires(ttl)))

    def delete(self, key: str) -> None:
        self.ops.append(Op("del", key))

    def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None:
        self.ops.append(Op("hset", key, field, value, _expires(ttl)))

    def hdel(self, key: str, field: str) -> None:
        self.ops.append(Op("hdel", key, field))


class _Codec:
    """Everything but the I/O: request building and response checking, shared by both clients."""

    def __init__(self, key: NodeKey | None) -> None:
        self.key = key
        self.clock = HybridClock()

    @property
    def namespace(self) -> str:
        """`app:<address>:`, the namespace this client's key owns."""
        if self.key is None:
            raise CStoreError("forbidden", "a session without a key owns no namespace")
        return f"app:{self.key.address.lower()}:"

    def write_request(self, ops: list[Op]) -> tuple[str, bytes]:
        if self.key is None:
            import orjson

            now_ms = time.time() * 1000
            body = [
                {"op": o.kind, "key": o.key, "field": o.field, "value": o.value,
                 "ttl": None if o.expires_ms is None else max(0.001, (o.expires_ms - now_ms) / 1000)}
                for o in ops
            ]  # fmt: skip
            return "/v1/cstore/write", orjson.dumps({"ops": body})
        ts = self.clock.reserve(len(ops))
        return "/v1/cstore/batch", sign_batch(self.key, ops, ts.wall_ms, ts.counter)

    def check(self, r: httpx.Response) -> dict[str, Any]:
        if r.status_code >= 400:
            raise CStoreRefused(remote_error(r))
        data: dict[str, Any] = answer(r)
        hlc = data.get("hlc")
        if isinstance(hlc, list) and len(hlc) == 2:
            self.clock.observe(Timestamp(int(hlc[0]), int(hlc[1])))
        return data


class AsyncCStore:
    def __init__(self, http: httpx.AsyncClient, url: str, key: NodeKey | None) -> None:
        self._http, self._url, self._c = http, url, _Codec(key)

    @property
    def namespace(self) -> str:
        return self._c.namespace

    async def _get(self, path: str, **params: str) -> dict[str, Any]:
        try:
            r = await self._http.get(self._url + path, params=params)
        except httpx.HTTPError as exc:
            raise unreachable(self._url, exc) from None
        return self._c.check(r)

    async def write(self, ops: list[Op]) -> dict[str, Any]:
        path, body = self._c.write_request(ops)
        try:
            r = await self._http.post(
                self._url + path, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise unreachable(self._url, exc) from None
        return self._c.check(r)

    @asynccontextmanager
    async def batch(self) -> Any:
        """`async with cstore.batch() as b: b.set(...); b.hset(...)`: one signed batch."""
        ops = _Ops()
        yield ops
        if ops.ops:
            await self.write(ops.ops)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self.write([Op("set", key, None, value, _expires(ttl))])

    async def get(self, key: str) -> Any | None:
        return (await self._get("/v1/cstore/get", key=key))["value"]

    async def delete(self, key: str) -> None:
        await self.write([Op("del", key)])

    async def keys(self, prefix: str = "") -> list[str]:
        """Every live key under `prefix`, sorted (the node answers in pages; this follows them)."""
        out: list[str] = []
        after = ""
        while True:
            page = await self._get("/v1/cstore/keys", prefix=prefix, after=after, limit=str(KEYS_PAGE))
            out.extend(page["keys"])
            if not page.get("next"):
                return out
            after = page["next"]

    async def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None:
        await self.write([Op("hset", key, field, value, _expires(ttl))])

    async def hget(self, key: str, field: str) -> Any | None:
        return (await self._get("/v1/cstore/hget", key=key, field=field))["value"]

    async def hgetall(self, key: str) -> dict[str, Any]:
        return dict((await self._get("/v1/cstore/hgetall", key=key))["fields"])

    async def hdel(self, key: str, field: str) -> None:
        await self.write([Op("hdel", key, field)])

    async def stats(self) -> dict[str, Any]:
        return await self._get("/v1/cstore/stats")


class CStore:
    """The synchronous twin of `AsyncCStore`."""

    def __init__(self, http: httpx.Client, url: str, key: NodeKey | None) -> None:
        self._http, self._url, self._c = http, url, _Codec(key)

    @property
    def namespace(self) -> str:
        return self._c.namespace

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        try:
            r = self._http.get(self._url + path, params=params)
        except httpx.HTTPError as exc:
            raise unreachable(self._url, exc) from None
        return self._c.check(r)

    def write(self, ops: list[Op]) -> dict[str, Any]:
        path, body = self._c.write_request(ops)
        try:
            r = self._http.post(self._url + path, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise unreachable(self._url, exc) from None
        return self._c.check(r)

    @contextmanager
    def batch(self) -> Iterator[_Ops]:
        """`with cstore.batch() as b: b.set(...); b.hset(...)`: one signed batch."""
        ops = _Ops()
        yield ops
        if ops.ops:
            self.write(ops.ops)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.write([Op("set", key, None, value, _expires(ttl))])

    def get(self, key: str) -> Any | None:
        return self._get("/v1/cstore/get", key=key)["value"]

    def delete(self, key: str) -> None:
        self.write([Op("del", key)])

    def keys(self, prefix: str = "") -> list[str]:
        """Every live key under `prefix`, sorted (the node answers in pages; this follows them)."""
        out: list[str] = []
        after = ""
        while True:
            page = self._get("/v1/cstore/keys", prefix=prefix, after=after, limit=str(KEYS_PAGE))
            out.extend(page["keys"])
            if not page.get("next"):
                return out
            after = page["next"]

    def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None:
        self.write([Op("hset", key, field, value, _expires(ttl))])

    def hget(self, key: str, field: str) -> Any | None:
        return self._get("/v1/cstore/hget", key=key, field=field)["value"]

    def hgetall(self, key: str) -> dict[str, Any]:
        return dict(self._get("/v1/cstore/hgetall", key=key)["fields"])

    def hdel(self, key: str, field: str) -> None:
        self.write([Op("hdel", key, field)])

    def stats(self) -> dict[str, Any]:
        return self._get("/v1/cstore/stats")
