"""The node's HTTP connections, bounded: request heads by size and time, bodies by idleness, connections
by count.

uvicorn (on httptools) keeps a request's head in memory until its last header line arrives and waits
for it without a deadline: four sockets each sending 64 MiB of one unfinished header held 256 MiB of a
node, and a connection that sends nothing, or a body that stops halfway, was kept open for ever. This
protocol wraps uvicorn's own and adds:

- `max_head` bytes for the request line and headers (431 and close past it: cause `head_too_large`);
- `head_timeout` seconds from a request's first byte (or the connection's opening) to its last header
  (closed: `head_timeout`), which also closes connections that never send anything;
- `body_idle_timeout` seconds without a byte while a request body is still due (closed: `body_idle`),
  unless the node itself paused reading because the route is not consuming yet;
- the number of open connections (uvicorn's `limit_concurrency`: 503 past it), set by the node.

Refusals are counted in `HttpLimits.refused` (exported as r1os_http_refused_total{cause}) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("r1os.node.http")


@dataclass
class HttpLimits:
    max_head: int = 64 * 1024
    head_timeout: float = 20.0
    body_idle_timeout: float = 60.0
    refused: Counter[str] = field(default_factory=Counter)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above; `limits` is set per server (see `bounded`)."""

    limits: HttpLimits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ------------------------------------------------------------------------------

    def _arm(self, delay: float, why: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, self._expire, why)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, why: str) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if why == "body_idle" and self.flow is not None and self.flow.read_paused:
            # the route has not taken what arrived yet: the client is not the one who is slow
            self._arm(self.limits.body_idle_timeout, why)
            return
        self._refuse(why, f"no progress within the limit ({why})", status=None)

    def _refuse(self, cause: str, why: str, status: int | None) -> None:
        self.limits.refused[cause] += 1
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info("http: closed a connection from %s: %s", client, why)
        if status is not None and (self.cycle is None or self.cycle.response_complete):
            body = f'{{"error": "{why}", "cause": "{cause}", "hint": null}}'.encode()
            self.transport.write(
                b"HTTP/1.1 %d Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, len(body), body)
            )
        self.transport.close()

    # -- uvicorn's protocol, with counting ------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout, "head_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            self._arm(self.limits.body_idle_timeout, "body_idle")
        while data:
            if not self._in_head:
                super().data_received(data)
                return
            # feed the head no more than its allowance; once the parser says the head is complete,
            # the rest of the chunk (body, pipelined requests) goes through unbounded by this rule
            room = self.limits.max_head - self._head_bytes
            if room <= 0:
                self._refuse("head_too_large", f"request head over {self.limits.max_head} bytes", 431)
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self.parser is None:
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._in_body, self._head_bytes = True, False, 0
        self._arm(self.limits.head_timeout, "head_timeout")

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        self._arm(self.limits.body_idle_timeout, "body_idle")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # a new request may follow on this connection: its head is bounded again from its first byte,
        # and uvicorn's keep-alive timeout closes the connection if none comes. A route may answer
        # before its body has all arrived (a 413): what still comes is that body, not a new head.
        if not self._in_body:
            self._in_head, self._head_bytes = True, 0
        super().on_response_complete()


def bounded(limits: HttpLimits) -> type[BoundedHttpProtocol]:
    """A protocol class for one server, carrying that server's limits and counters."""
    return type("NodeHttpProtocol", (BoundedHttpProtocol,), {"limits": limits})


# -- the node's client ---------------------------------------------------------------------------------


class _PeerTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, in two pools: plain HTTP, and TLS made on the first `https://` request.

    httpx builds a TLS context with the CA certificates (certifi's, or SSL_CERT_FILE/SSL_CERT_DIR) when a
    client is made, ~1 MiB that a node talking plain HTTP to its peers (a devnet, a LAN) never uses. The
    TLS pool here is the one httpx would have made, with the same settings, only later. The plain pool's
    TLS context trusts nothing: it only ever sees `http://` URLs."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._plain = httpx.AsyncHTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), limits=limits)
        self._tls: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return await self._plain.handle_async_request(request)
        if self._tls is None:
            self._tls = httpx.AsyncHTTPTransport(limits=self._limits)
        return await self._tls.handle_async_request(request)

    async def aclose(self) -> None:
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()


def peer_client(*, timeout: float = 10.0, max_connections: int = 256) -> httpx.AsyncClient:
    """The client a node's services share for requests to peers and oracles: httpx's defaults (proxies from
    the environment, certificate checks on https), with its TLS set up only when an https URL is asked
    for. `max_connections` bounds each of the two pools (plain, TLS)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        transport=_PeerTransport(httpx.Limits(max_connections=max_connections)),
    )


# -- websockets ------------------------------------------------------------------------------------------


class LazyWebSockets(asyncio.Protocol):
    """uvicorn's websocket protocol (what `ws="auto"` picks), imported on the first websocket upgrade: for
    `uvicorn.Config(ws=LazyWebSockets)`. With "auto", uvicorn imports websockets when the server is
    configured, ~0.5-1 MiB per node, while websockets are used only by Deeploy's app proxy (`/apps/...`)."""

    def __new__(cls, **kwargs: Any) -> asyncio.Protocol:  # type: ignore[misc]
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

        if AutoWebSocketsProtocol is None:
            # websockets comes with the node's dependencies (web3); without it and wsproto, say so
            log.warning("http: refused a websocket upgrade: no websocket library (install websockets)")
            return _Refused()
        return AutoWebSocketsProtocol(**kwargs)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
