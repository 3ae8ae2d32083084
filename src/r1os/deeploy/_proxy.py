"""The `/apps/...` reverse proxy: every node serves every app from a healthy replica, wherever it runs.

Routes (all HTTP methods, and websockets on the same paths):

- `/apps/<name>/<path>`: the app of that name, when exactly one owner has one (409 `ambiguous_app`
  listing the owners otherwise);
- `/apps/<owner>/<name>/<path>`: the app of that owner (`0x` + 40 hex digits; a name never starts
  with `0x`, so the first segment tells the two forms apart).

`/apps/<name>` without the slash after it is redirected (308) to `/apps/<name>/`, so relative links
of an app's pages resolve under its prefix.

Mounting: `AppProxy.mount(router)` adds the routes to a service's router; `AppProxy.wrap(app)` puts
the proxy in front of the node's whole ASGI app instead, which spares every proxied request the web
framework's middleware and routing (the proxy's answers and errors are the same either way).

Where a request goes is not decided here: `AppProxy` calls a resolver the Deeploy service provides,
`resolve(ref: AppRef, hop: bool) -> list[Upstream]` (sync or async), which returns the app's healthy
replicas, local ones first, or raises `NoSuchApp` (404), `AmbiguousApp` (409) or `NoReplica` (503).
A local replica is called directly (`http://127.0.0.1:<port>/<path>`); a replica on another node is
reached through that node's own proxy (`<node url>/apps/<owner>/<name>/<path>`) with the header
`x-r1os-hop: 1`, on which the hosting node serves from its local replicas only (`hop=True`), so a
request crosses at most two nodes.

Forwarding:

- Method, path (as the client encoded it), query, body and headers go to the replica, minus the
  hop-by-hop headers (`connection` and the headers it names, `keep-alive`, `te`, `trailers`,
  `transfer-encoding`, `upgrade`, `proxy-*`), `host` (the replica's own) and `expect` (the node
  answers `100 Continue` itself). Added: `x-forwarded-for` (the client's address appended),
  `x-forwarded-host`, `x-forwarded-proto` and `x-forwarded-prefix` (`/apps/<name>` as the client
  wrote it); on a hop, the entry node's values of the last three are kept.
- `Authorization` is forwarded: an app's API is its owner's, and its clients authenticate to it. The
  one exception is the node's own operator token (`Bearer <token>`, when the service passes
  `node_token`): an SDK session with a token attaches it to every request, and it must never reach
  an app.
- Bodies stream both ways: an upload is sent on as it arrives (never held whole in memory), and the
  answer, with its status and headers (hop-by-hop ones dropped), is passed back chunk by chunk as the
  replica sends it, so server-sent events and chunked answers are not buffered.

Retries: when a replica fails before answering (connection refused or timed out, connection reset
or closed before the answer's headers, or a hop to a node whose proxy answers that it has no
replica (`x-r1os-proxy-error: no_replica` / `upstream_unreachable`)), the next replica is tried, if
the request's body can be sent again: no body, or a body of at most `REPLAY_LIMIT` bytes read whole
before the first try. A larger body streams on its first try and is not retried. Once a replica has
answered (status and headers), the request is never sent again. A replica that failed this way is
tried last for `PENALTY_S` seconds. Timeouts: `CONNECT_TIMEOUT` to connect, `READ_TIMEOUT` of silence
while waiting for or reading an answer (apps may stream slowly); 502 `upstream_unreachable` when every
replica failed before answering, 504 `upstream_timeout` when the one that took the request said
nothing for too long.

Websockets: the client's handshake is accepted once a replica's is (with the subprotocol the replica
chose); messages (text and binary) are pumped both ways; when one side closes, the other is closed
with the same code and reason where the protocol allows it. A failed connect moves on to the next
replica as for HTTP. A refusal before the handshake is answered as an HTTP error (status and the
usual JSON body) where the server supports it.

Replicas and peers are called over the proxy's own pool of keep-alive HTTP/1.1 connections (asyncio
and httptools; TLS for `https` URLs); a pooled connection the other side had just closed is replaced
by a new one once, when the request can be sent again.

Error answers have the node's usual shape `{"error", "cause", "hint"}` and the header
`x-r1os-proxy-error: <cause>`, which is how an entry node tells its peer's "no replica here" from an
app's own 503. Counters (`requests`, `retried`, `failed`, ...) are plain attributes for the
service's metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote, urlsplit

import httptools
import orjson
from starlette.routing import BaseRoute, Route, WebSocketRoute

from r1os.errors import R1osError, error_body

if TYPE_CHECKING:
    from fastapi import APIRouter
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("r1os.deeploy.proxy")

#: Header an entry node sets when it forwards to the node hosting a replica; that node then serves
#: from its local replicas only.
HOP_HEADER = "x-r1os-hop"
#: Header on the proxy's own error answers, carrying their cause.
ERROR_HEADER = "x-r1os-proxy-error"
#: Largest request body read whole before the first try, so that it can be sent again to another
#: replica; a larger one streams and is tried once.
REPLAY_LIMIT = 1 << 20
CONNECT_TIMEOUT = 2.0
#: Seconds without a byte from a replica (waiting for its answer, or between chunks of it).
READ_TIMEOUT = 300.0
#: Seconds without progress while sending a request body to a replica.
WRITE_TIMEOUT = 60.0
#: Idle keep-alive connections kept per replica or peer.
MAX_KEEPALIVE = 256
#: Idle keep-alive connections are closed after this many seconds (below the 5 s after which uvicorn
#: closes them on its side, so the proxy rarely picks one the replica is closing).
KEEPALIVE_EXPIRY = 4.0
#: Seconds a replica that failed before answering is tried after the others.
PENALTY_S = 5.0
#: Largest websocket message passed through (as uvicorn's default).
WS_MAX_MESSAGE = 16 << 20
#: Answers with a known length up to this many bytes are passed on without watching for the client
#: leaving; longer or open-ended ones stop reading the replica as soon as the client goes.
WATCH_AFTER = 64 << 10

OWNER_RE = re.compile(r"^0x[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")

_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade"}
)
#: Request headers never passed to a replica: hop-by-hop ones, those the proxy sets itself, and the
#: websocket handshake's own (the proxy makes its own handshake with the replica).
_DROP_REQUEST = _HOP_BY_HOP | {
    b"host",
    b"expect",
    HOP_HEADER.encode(),
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-forwarded-prefix",
    b"content-length",
}
_WS_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
#: Response headers not passed back: hop-by-hop ones, and those the node's server sets itself.
_DROP_RESPONSE = _HOP_BY_HOP | {b"date", b"server"}
_RETRY_CAUSES = frozenset({b"no_replica", b"upstream_unreachable"})


# -- errors ----------------------------------------------------------------------------------------


class ProxyError(R1osError):
    """The proxy cannot serve a request to an app; `cause` and `status` say why."""

    cause = "proxy"
    status = 502


class NoSuchApp(ProxyError):
    """No app of that name (and owner)."""

    cause = "no_app"
    status = 404

    def __init__(self, app: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"no app {app!r} on this network",
            hint=hint
            or "GET /v1/apps lists the apps; a path is /apps/<name>/... or /apps/<owner>/<name>/...",
        )
        self.app = app


class NoReplica(ProxyError):
    """The app exists but no replica of it is healthy (or, on a hop, none runs on this node)."""

    cause = "no_replica"
    status = 503

    def __init__(self, app: str, *, detail: str = "", hint: str | None = None) -> None:
        message = f"no healthy replica of {app!r}" + (f": {detail}" if detail else "")
        super().__init__(
            message,
            hint=hint or f"GET /v1/apps/{app} shows its replicas; try again once one is healthy",
        )
        self.app = app


class AmbiguousApp(ProxyError):
    """Several owners have an app of that name: the path must name the owner."""

    cause = "ambiguous_app"
    status = 409

    def __init__(self, name: str, owners: Iterable[str]) -> None:
        self.name = name
        self.owners = sorted(owners)
        super().__init__(
            f"{len(self.owners)} owners have an app named {name!r}: {', '.join(self.owners)}",
            hint="name the owner: " + ", ".join(f"/apps/{o}/{name}/" for o in self.owners),
        )


class UpstreamUnreachable(ProxyError):
    """Every replica tried failed before answering."""

    cause = "upstream_unreachable"
    status = 502


class UpstreamTimeout(ProxyError):
    """The replica that took the request did not answer in time."""

    cause = "upstream_timeout"
    status = 504


# -- what the resolver works with ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppRef:
    """An app as a request's path names it: `owner` is None for `/apps/<name>/...`."""

    name: str
    owner: str | None = None

    @property
    def prefix(self) -> str:
        """The path prefix the client used: `/apps/<name>` or `/apps/<owner>/<name>`."""
        return f"/apps/{self.owner}/{self.name}" if self.owner else f"/apps/{self.name}"

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}" if self.owner else self.name


@dataclass(frozen=True, slots=True)
class Upstream:
    """One replica to send a request to.

    `node`: the address of the node running it. `url`: with `local=True`, the replica itself
    (`http://127.0.0.1:<port>`, called as `<url>/<path>`); with `local=False`, the API URL of the node
    hosting it (called as `<url>/apps/<app>/<path>` with `x-r1os-hop: 1`). `app`: the app's id,
    `<owner>/<name>` (needed for hops: the client may have named the app without its owner).
    """

    node: str
    url: str
    local: bool
    app: str


Resolver = Callable[[AppRef, bool], "Sequence[Upstream] | Awaitable[Sequence[Upstream]]"]


def parse_app_path(path: str) -> tuple[AppRef, str]:
    """Split a path under `/apps/` (as the client encoded it, without `/apps/`) into the app and the
    rest: `echo/a/b` -> (echo, `a/b`); `0xab../echo/` -> (0xab../echo, ``). The rest is None when
    the path stops right after the app (no slash): the caller redirects. Raises `NoSuchApp` for a
    path that cannot name an app."""
    first, _, rest = path.partition("/")
    first_text = unquote(first)
    if first_text[:2].lower() == "0x":
        owner = first_text.lower()
        if not OWNER_RE.fullmatch(owner):
            raise NoSuchApp(
                first_text[:60], hint="an owner is 0x and 40 hex digits: /apps/<owner>/<name>/..."
            )
        name, slash, rest = rest.partition("/")
        name_text = unquote(name)
        if not name_text:
            raise NoSuchApp(owner + "/", hint="name the app after its owner: /apps/<owner>/<name>/...")
        ref = AppRef(name_text, owner)
    else:
        name_text, slash = first_text, "/" if "/" in path else ""
        ref = AppRef(name_text)
    if not NAME_RE.fullmatch(ref.name):
        raise NoSuchApp(
            ref.name[:60], hint="an app name is 1-40 of a-z, 0-9 and '-', not starting or ending with '-'"
        )
    if not slash:
        raise _Redirect(ref)
    return ref, rest


class _Redirect(Exception):
    def __init__(self, ref: AppRef) -> None:
        self.ref = ref


class _ClientGone(Exception):
    """The client disconnected while its request was being read."""


# -- the proxy -------------------------------------------------------------------------------------


class AppProxy:
    """Serves `/apps/...` from the upstreams `resolve` returns (see the module's docstring).

    Replicas and peers are called over the proxy's own keep-alive connections (HTTP/1.1 on asyncio
    and httptools, closed by `aclose`), not through the node's shared `httpx.AsyncClient`: a client
    adds its default headers (`accept-encoding` among them, so replicas would compress answers the
    client never asked to be compressed) and keeps the cookies apps set, and httpx's pool costs more
    than the rest of the proxy together once requests overlap.
    `node_token`: returns the node's operator token; `Authorization: Bearer <it>` is never forwarded.
    """

    def __init__(
        self,
        resolve: Resolver,
        *,
        node_token: Callable[[], str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self._resolve = resolve
        self._pool = _Pool(connect_timeout, read_timeout, write_timeout)
        self._node_token = node_token
        self.connect_timeout = connect_timeout
        self._penalised: dict[str, float] = {}
        self.requests = 0
        """HTTP requests to apps (every one that reached the proxy)."""
        self.retried = 0
        """Tries moved on to another replica after one failed before answering."""
        self.failed = 0
        """Requests the proxy ended with 502/504, or whose answer broke off while streaming."""
        self.unresolved = 0
        """Requests refused before any replica was tried (no such app, ambiguous, no replica)."""
        self.websockets = 0
        """Websocket sessions proxied (handshake accepted on both sides)."""
        self.websocket_failed = 0
        """Websocket handshakes refused because no replica could be reached."""

    # -- mounting ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The HTTP and websocket routes of `/apps/...`."""
        app = _AsgiEndpoint(self)
        return [
            Route("/apps/{path:path}", endpoint=app, include_in_schema=False),
            WebSocketRoute("/apps/{path:path}", endpoint=app),
        ]

    def mount(self, router: APIRouter) -> None:
        """Add the proxy's routes to `router` (the service's `ctx.router`)."""
        router.routes.extend(self.routes())

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app` with `/apps/...` (HTTP and websockets) answered by the proxy before `app` sees it: the
        same as `mount`, without the cost of the web framework's middleware and routing on every
        proxied request (a third of the node's CPU per request, measured by bench/deeploy_proxy.py)."""
        endpoint = _AsgiEndpoint(self)

        async def proxied(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket") and scope["path"].startswith("/apps/"):
                await endpoint(scope, receive, send)
            else:
                await app(scope, receive, send)

        return proxied

    async def aclose(self) -> None:
        """Close the idle connections to replicas and peers."""
        self._pool.close()

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retried": self.retried,
            "failed": self.failed,
            "unresolved": self.unresolved,
            "websockets": self.websockets,
            "websocket_failed": self.websocket_failed,
        }

    # -- resolution ------------------------------------------------------------------------------

    async def _upstreams(self, ref: AppRef, hop: bool) -> list[Upstream]:
        found = self._resolve(ref, hop)
        if inspect.isawaitable(found):
            found = await found
        upstreams = [u for u in found if u.local] if hop else list(found)
        if not upstreams:
            raise NoReplica(str(ref), detail="none on this node" if hop else "")
        if self._penalised:
            now = time.monotonic()
            for url, until in list(self._penalised.items()):
                if until <= now:
                    del self._penalised[url]
            if self._penalised:
                upstreams.sort(key=lambda u: u.url in self._penalised)
        return upstreams

    def _penalise(self, upstream: Upstream) -> None:
        self._penalised[upstream.url] = time.monotonic() + PENALTY_S

    # -- headers -----------------------------------------------------------------------------------

    def _forward_headers(
        self, scope: Scope, ref: AppRef, hop: bool, drop: frozenset[bytes] | set[bytes]
    ) -> tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]]:
        """The headers to send on (without the x-forwarded ones and the hop mark, added per upstream),
        and the client's x-forwarded-* values the proxy reads."""
        headers: list[tuple[bytes, bytes]] = []
        seen: dict[bytes, bytes] = {}
        named: set[bytes] = set()
        token = self._node_token() if self._node_token is not None else ""
        for name, value in scope["headers"]:
            if name in drop or name.startswith(b"proxy-"):
                if name in _FORWARDED_READ:
                    seen[name] = value if name not in seen else seen[name] + b", " + value
                elif name == b"connection":
                    named.update(n.strip().lower() for n in value.split(b","))
                continue
            if token and name == b"authorization" and value.strip() == b"Bearer " + token.encode():
                continue
            headers.append((name, value))
        if named:
            headers = [(n, v) for n, v in headers if n not in named]
        client = scope.get("client")
        address = client[0].encode() if client else b"unknown"
        xff = seen.get(b"x-forwarded-for")
        seen[b"x-forwarded-for"] = xff + b", " + address if xff else address
        if not hop or b"x-forwarded-host" not in seen:
            seen[b"x-forwarded-host"] = seen.get(b"host", b"")
        if not hop or b"x-forwarded-proto" not in seen:
            seen[b"x-forwarded-proto"] = scope.get("scheme", "http").encode()
        if not hop or b"x-forwarded-prefix" not in seen:
            seen[b"x-forwarded-prefix"] = ref.prefix.encode()
        return headers, seen

    @staticmethod
    def _with_forwarded(
        headers: list[tuple[bytes, bytes]], seen: dict[bytes, bytes], upstream: Upstream
    ) -> list[tuple[bytes, bytes]]:
        out = headers + [
            (b"x-forwarded-for", seen[b"x-forwarded-for"]),
            (b"x-forwarded-host", seen[b"x-forwarded-host"]),
            (b"x-forwarded-proto", seen[b"x-forwarded-proto"]),
            (b"x-forwarded-prefix", seen[b"x-forwarded-prefix"]),
        ]
        if not upstream.local:
            out.append((HOP_HEADER.encode(), b"1"))
        return out

    # -- HTTP ----------------------------------------------------------------------------------------

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        try:
            ref, rest = parse_app_path(_app_path(scope))
        except _Redirect as redirect:
            await _send_redirect(scope, send, redirect.ref)
            return
        except ProxyError as exc:
            self.unresolved += 1
            await _send_error(send, exc)
            return
        hop = _is_hop(scope)
        try:
            upstreams = await self._upstreams(ref, hop)
        except R1osError as exc:  # the resolver's refusal, or its own failure (e.g. state unreadable)
            self.unresolved += 1
            log.log(logging.ERROR if exc.status >= 500 and not isinstance(exc, ProxyError) else logging.INFO,
                    "proxy: %s %s refused: %s (%s)", scope["method"], ref.prefix, exc, exc.cause)  # fmt: skip
            await _send_error(send, exc)
            return
        headers, seen = self._forward_headers(scope, ref, hop, _DROP_REQUEST)
        query = scope.get("query_string", b"")
        target = "/" + rest + ("?" + query.decode("latin-1") if query else "")
        try:
            body = await _read_body(scope, receive)
            response = await self._send_to_upstreams(scope, ref, upstreams, target, headers, seen, body)
        except _ClientGone:
            return
        except ProxyError as exc:
            self.failed += 1
            await _send_error(send, exc)
            return
        await self._relay(response, scope, receive, send)

    async def _send_to_upstreams(
        self,
        scope: Scope,
        ref: AppRef,
        upstreams: list[Upstream],
        target: str,
        headers: list[tuple[bytes, bytes]],
        seen: dict[bytes, bytes],
        body: bytes | _BodyStream | None,
    ) -> _Connection:
        """The connection carrying the first answer of a replica (its status and headers; the body
        still to read), trying the next replica while they fail before answering. Raises the
        `ProxyError` to answer with."""
        method = scope["method"]
        failure: ProxyError = UpstreamUnreachable(f"{ref}: no replica to try")
        last = len(upstreams) - 1
        for i, upstream in enumerate(upstreams):
            try:
                origin = _origin(upstream.url)
            except ValueError as exc:
                failure = self._failed_before_answer(upstream, exc, ref)
            else:
                path = origin.base_path + (target if upstream.local else f"/apps/{upstream.app}{target}")
                head, chunked = _request_head(method, path, origin, headers, seen, upstream.local, body)
                try:
                    conn = await self._exchange(origin, head, body, chunked, method == "HEAD")
                except _UpstreamFailure as exc:
                    if exc.timeout:
                        # the replica took the request: sending it again could do its work twice
                        log.warning("proxy: %s %s%s: %s: %s", method, ref.prefix, target, upstream.url, exc)
                        raise UpstreamTimeout(
                            f"{ref}: the replica on {upstream.node} did not answer ({exc})",
                            hint="the app is slow to answer; try again or look at its logs",
                        ) from None
                    failure = self._failed_before_answer(upstream, exc, ref)
                else:
                    cause = b""
                    if not upstream.local and conn.status in (502, 503):
                        cause = next((v for n, v in conn.headers if n == _ERROR_HEADER_B), b"")
                    if cause not in _RETRY_CAUSES:  # an answer, maybe the app's own 502/503
                        if self._penalised:
                            self._penalised.pop(upstream.url, None)
                        return conn
                    conn.close()
                    self._penalise(upstream)
                    failure = UpstreamUnreachable(
                        f"{ref}: node {upstream.node} could not serve it ({cause.decode()})",
                        hint="the app's replicas may be restarting; try again",
                    )
            if i == last or (isinstance(body, _BodyStream) and body.started):
                break
            self.retried += 1
        raise failure

    async def _exchange(
        self, origin: _Origin, head: bytes, body: bytes | _BodyStream | None, chunked: bool, is_head: bool
    ) -> _Connection:
        """Send a request on a pooled connection; a reused connection the peer had just closed is
        replaced by a fresh one, once, if the body can be sent again."""
        conn = await self._pool.connect(origin)
        for fresh in (False, True):
            conn.head = is_head
            try:
                await conn.send(head, body, chunked)
                return conn
            except _UpstreamFailure as exc:
                conn.close()
                stale = conn.reused and not exc.timeout and not fresh
                if not stale or (isinstance(body, _BodyStream) and body.started):
                    raise
            except BaseException:
                conn.close()
                raise
            conn = await self._pool.connect(origin, fresh=True)
        raise AssertionError("unreachable")

    def _failed_before_answer(self, upstream: Upstream, exc: Exception, ref: AppRef) -> ProxyError:
        self._penalise(upstream)
        where = "replica" if upstream.local else f"node {upstream.node}"
        log.info("proxy: %s: %s at %s failed before answering: %s", ref, where, upstream.url, exc)
        return UpstreamUnreachable(
            f"{ref}: no replica could be reached (last: the {where}: {exc})",
            hint="the app's replicas may be restarting; try again",
        )

    async def _relay(self, conn: _Connection, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a replica's answer back as it arrives."""
        headers: list[tuple[bytes, bytes]] = []
        named: set[bytes] = set()
        length: int | None = None
        for name, value in conn.headers:
            if name in _DROP_RESPONSE or name.startswith(b"proxy-"):
                if name == b"connection":
                    named.update(n.strip().lower() for n in value.split(b","))
                continue
            if name == b"content-length" and value.isdigit():
                length = int(value)
            headers.append((name, value))
        if named:
            headers = [(n, v) for n, v in headers if n not in named]
        try:
            await send({"type": "http.response.start", "status": conn.status, "headers": headers})
            if conn.drained or (length is not None and length <= WATCH_AFTER):
                await _pump(conn, send)
            else:
                await _pump_watching(conn, receive, send)
        except _UpstreamFailure as exc:
            # The answer broke off: the client sees a truncated answer (uvicorn closes the connection
            # of a response the app did not complete).
            self.failed += 1
            log.warning("proxy: %s %s: the answer broke off: %s", scope["method"], scope["path"], exc)
        finally:
            conn.release()

    # -- websockets ------------------------------------------------------------------------------------

    async def handle_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        from websockets.asyncio.client import ClientConnection, connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

        try:
            ref, rest = parse_app_path(_app_path(scope))
        except _Redirect as redirect:
            ref, rest = redirect.ref, ""
        except ProxyError as exc:
            await _deny(scope, receive, send, exc)
            return
        hop = _is_hop(scope)
        try:
            upstreams = await self._upstreams(ref, hop)
        except R1osError as exc:
            self.unresolved += 1
            await _deny(scope, receive, send, exc)
            return
        headers, seen = self._forward_headers(scope, ref, hop, _DROP_REQUEST | _WS_HANDSHAKE)
        query = scope.get("query_string", b"")
        target = "/" + rest + ("?" + query.decode("latin-1") if query else "")
        subprotocols = list(scope.get("subprotocols") or [])
        upstream_ws: ClientConnection | None = None
        failure: ProxyError = UpstreamUnreachable(f"{ref}: no replica to try")
        for i, upstream in enumerate(upstreams):
            base = upstream.url if upstream.local else f"{upstream.url}/apps/{upstream.app}"
            url = "ws" + base.removeprefix("http") + target
            try:
                upstream_ws = await connect(
                    url,
                    additional_headers=[
                        (n.decode("latin-1"), v.decode("latin-1"))
                        for n, v in self._with_forwarded(headers, seen, upstream)
                    ],
                    subprotocols=subprotocols or None,
                    open_timeout=WS_OPEN_TIMEOUT,
                    max_size=WS_MAX_MESSAGE,
                    compression=None,
                    user_agent_header=None,
                    proxy=None,
                )
                break
            except InvalidStatus as exc:
                answer = exc.response
                cause = answer.headers.get(ERROR_HEADER, "")
                if upstream.local or cause.encode() not in _RETRY_CAUSES:
                    # the app (or the node hosting it) refused the handshake: pass its answer on
                    await _deny_with(
                        scope, receive, send, answer.status_code, bytes(answer.body or b""),
                        answer.headers.get("content-type", "text/plain"),
                    )  # fmt: skip
                    return
                self._penalise(upstream)
                failure = UpstreamUnreachable(f"{ref}: node {upstream.node} could not serve it ({cause})")
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                failure = self._failed_before_answer(upstream, exc, ref)
            if i < len(upstreams) - 1:
                self.retried += 1
        if upstream_ws is None:
            self.websocket_failed += 1
            await _deny(scope, receive, send, failure)
            return
        self.websockets += 1
        try:
            await _pump_websocket(scope, receive, send, upstream_ws)
        finally:
            await upstream_ws.close()


async def _pump(conn: _Connection, send: Send) -> None:
    while True:
        chunk = await conn.read()
        if conn.drained:
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            return
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _pump_watching(conn: _Connection, receive: Receive, send: Send) -> None:
    """`_pump`, stopped as soon as the client disconnects (an endless event stream would otherwise
    hold the replica's connection until it writes again)."""
    pump = asyncio.ensure_future(_pump(conn, send))
    gone = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            task.cancel()
        await asyncio.gather(pump, gone, return_exceptions=True)
    if pump.done() and not pump.cancelled() and (exc := pump.exception()) is not None:
        raise exc


def _request_head(
    method: str,
    path: str,
    origin: _Origin,
    headers: list[tuple[bytes, bytes]],
    seen: dict[bytes, bytes],
    local: bool,
    body: bytes | _BodyStream | None,
) -> tuple[bytes, bool]:
    """The request line and headers for one upstream, and whether the body goes chunked."""
    parts = [
        b"%b %b HTTP/1.1\r\nhost: %b\r\n" % (method.encode(), path.encode("latin-1"), origin.host_header)
    ]
    parts.extend(b"%b: %b\r\n" % pair for pair in headers)
    parts.append(
        b"x-forwarded-for: %b\r\nx-forwarded-host: %b\r\nx-forwarded-proto: %b\r\nx-forwarded-prefix: %b\r\n"
        % (
            seen[b"x-forwarded-for"],
            seen[b"x-forwarded-host"],
            seen[b"x-forwarded-proto"],
            seen[b"x-forwarded-prefix"],
        )
    )
    if not local:
        parts.append(_HOP_LINE)
    chunked = False
    if isinstance(body, bytes):
        parts.append(b"content-length: %d\r\n" % len(body))
    elif body is None:
        if b"content-length" in seen:
            parts.append(b"content-length: 0\r\n")
    elif b"content-length" in seen:
        parts.append(b"content-length: %b\r\n" % seen[b"content-length"])
    else:
        parts.append(b"transfer-encoding: chunked\r\n")
        chunked = True
    parts.append(b"\r\n")
    return b"".join(parts), chunked


WS_OPEN_TIMEOUT = 10.0


async def _pump_websocket(scope: Scope, receive: Receive, send: Send, upstream: Any) -> None:
    """Accept the client's handshake and pass messages both ways until one side closes."""
    from websockets.exceptions import ConnectionClosed

    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": []})
    closed_by_client: list[tuple[int, str]] = []

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif kind == "websocket.disconnect":
                closed_by_client.append((int(message.get("code", 1000)), str(message.get("reason") or "")))
                return

    async def upstream_to_client() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})

    outbound = asyncio.ensure_future(client_to_upstream())
    inbound = asyncio.ensure_future(upstream_to_client())
    try:
        await asyncio.wait((outbound, inbound), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (outbound, inbound):
            task.cancel()
        results = await asyncio.gather(outbound, inbound, return_exceptions=True)
    if closed_by_client:
        code, reason = closed_by_client[0]
        await upstream.close(code=_sendable_close(code), reason=reason)
        return
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            log.info("proxy: websocket ended: %r", result)
    code = upstream.close_code if upstream.close_code is not None else 1011
    with contextlib.suppress(Exception):  # the client may be gone already
        await send(
            {"type": "websocket.close", "code": _sendable_close(code), "reason": upstream.close_reason or ""}
        )


def _sendable_close(code: int) -> int:
    """A close code one may send on: codes that only describe a lost connection become 1000 (no code
    given) or 1011 (the other side failed)."""
    if code == 1005:
        return 1000
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011


# -- the client to replicas and peers ----------------------------------------------------------------


class _UpstreamFailure(Exception):
    """A replica or peer failed; `answered`: after the status and headers of its answer had come."""

    def __init__(self, why: str, *, answered: bool = False, timeout: bool = False) -> None:
        super().__init__(why)
        self.answered = answered
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    ssl: bool
    host_header: bytes
    base_path: str


@functools.lru_cache(maxsize=4096)
def _origin(url: str) -> _Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    return _Origin(parts.hostname, port, secure, parts.netloc.encode("idna"), parts.path.rstrip("/"))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to an origin, carrying one exchange at a time (parsed by httptools).

    The answer's body is buffered up to `_HIGH_WATER` bytes; past that the connection stops reading
    from the socket until the proxy has passed what it holds on to the client."""

    def __init__(self, pool: _Pool, key: _Origin) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.reused = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._exchange_reset(False)

    def _exchange_reset(self, head: bool) -> None:
        self.head = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.answered: asyncio.Future[None] = self.loop.create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.failure: _UpstreamFailure | None = None
        self.keep_alive = False
        self.until_close = False
        self.reading_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.last_read = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.in_exchange = False

    # -- asyncio ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.in_exchange:
            self.pool.forget(self)
            return
        if not self.answered.done():
            self._fail(f"connection closed before an answer ({exc or 'EOF'})")
        elif not self.complete:
            if self.until_close and exc is None:
                self._finish()
            else:
                self._fail(f"connection closed in the middle of the answer ({exc or 'EOF'})")

    def data_received(self, data: bytes) -> None:
        if not self.in_exchange:  # a peer talking out of turn: this connection cannot be trusted
            self.close()
            return
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad answer: {exc}")
            self.close()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools ----------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the answer comes after
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        if not self.head and status not in (204, 304):
            self.until_close = not any(
                n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in v.lower())
                for n, v in self.headers
            )
        if not self.answered.done():
            self.answered.set_result(None)
        if self.head:  # no body follows, whatever the headers say; the parser would wait for one
            self.keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status >= 200 and not self.complete:
            self._finish()

    # -- the exchange -----------------------------------------------------------------------------------

    def _finish(self) -> None:
        self.complete = True
        self._disarm()
        self._wake()

    def _fail(self, why: str, *, timeout: bool = False) -> None:
        if self.complete or self.failure is not None:
            return
        self.failure = _UpstreamFailure(why, answered=self.answered.done(), timeout=timeout)
        if not self.answered.done():
            self.answered.set_exception(self.failure)
            self.answered.exception()  # retrieved: the waiter may be gone already
        self._disarm()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _arm(self) -> None:
        self.timer = self.loop.call_later(self.pool.read_timeout, self._check_silence)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check_silence(self) -> None:
        self.timer = None
        if self.complete or self.failure is not None:
            return
        silent = self.loop.time() - self.last_read
        if self.reading_paused or silent < self.pool.read_timeout:  # the client is the slow one
            self.timer = self.loop.call_later(max(self.pool.read_timeout - silent, 0.1), self._check_silence)
            return
        self._fail(f"no answer for {self.pool.read_timeout:g} s", timeout=True)
        self.close()

    async def send(self, head: bytes, body: bytes | _BodyStream | None, chunked: bool) -> None:
        """Send a request and return once its answer's status and headers are in `status`/`headers`."""
        assert self.transport is not None
        self.in_exchange = True
        self.last_read = self.loop.time()
        self._arm()
        if body is None or isinstance(body, bytes):
            self.transport.write(head + body if body else head)
        else:
            self.transport.write(head)
            async for chunk in body:
                if self.lost or self.answered.done():
                    # gone, or answered early (a refusal) without reading the rest: stop sending
                    self.keep_alive = False
                    break
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._write_paused:
                    await self._drain()
            else:
                if chunked and not self.lost:
                    self.transport.write(b"0\r\n\r\n")
        await self.answered

    async def _drain(self) -> None:
        self._drained = self.loop.create_future()
        try:
            await asyncio.wait_for(self._drained, self.pool.write_timeout)
        except TimeoutError:
            self._fail(f"the request body was not taken for {self.pool.write_timeout:g} s", timeout=True)
            self.close()
            raise self.failure or _UpstreamFailure("write timeout", timeout=True) from None
        finally:
            self._drained = None

    async def read(self) -> bytes:
        """The next piece of the answer's body; b"" at its end."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.reading_paused and self.buffered <= _LOW_WATER and self.transport is not None:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.failure is not None:
                raise self.failure
            if self.complete:
                return b""
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    @property
    def drained(self) -> bool:
        """True once the whole answer is in hand (nothing more will be read)."""
        return self.complete and not self.chunks

    def release(self) -> None:
        """End the exchange: the connection goes back to the pool if it can carry another one."""
        self._disarm()
        reusable = self.complete and self.keep_alive and not self.lost and self.failure is None
        self.in_exchange = False
        if reusable:
            self._exchange_reset(False)
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self._disarm()
        self.in_exchange = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


#: Bytes of an answer buffered before reading from the replica pauses, and resumes.
_HIGH_WATER = 1 << 20
_LOW_WATER = 256 << 10


class _Pool:
    """Keep-alive connections to replicas and peers, per origin (host, port, TLS). No cap on open
    connections: each holds one request the node's server admitted, and the server caps those."""

    def __init__(self, connect_timeout: float, read_timeout: float, write_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def connect(self, origin: _Origin, fresh: bool = False) -> _Connection:
        stack = self._idle.get(origin)
        if stack and not fresh:
            now = asyncio.get_running_loop().time()
            while stack:
                conn = stack.pop()
                if conn.lost or now - conn.idle_since > KEEPALIVE_EXPIRY:
                    conn.close()
                    continue
                conn.reused = True
                return conn
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.ssl:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin), origin.host, origin.port, ssl=context
                )
        except TimeoutError:
            raise _UpstreamFailure(f"connect: no answer in {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise _UpstreamFailure(f"connect: {exc.strerror or exc}") from None
        return conn

    def put(self, conn: _Connection) -> None:
        stack = self._idle.setdefault(conn.key, [])
        if len(stack) >= MAX_KEEPALIVE:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        stack.append(conn)

    def forget(self, conn: _Connection) -> None:
        stack = self._idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)

    def close(self) -> None:
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()


# -- ASGI plumbing ------------------------------------------------------------------------------------

_FORWARDED_READ = frozenset(
    {
        b"host",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-prefix",
    }
)
_ERROR_HEADER_B = ERROR_HEADER.encode()
_HOP_LINE = HOP_HEADER.encode() + b": 1\r\n"


class _AsgiEndpoint:
    """The ASGI app both routes call (an object, so Starlette passes it the raw scope)."""

    def __init__(self, proxy: AppProxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.proxy.handle_http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.proxy.handle_websocket(scope, receive, send)


def _app_path(scope: Scope) -> str:
    """The path after `/apps/`, as the client encoded it (as decoded, re-encoded, if the raw path
    does not start with `/apps/` itself)."""
    raw: bytes | None = scope.get("raw_path")
    root = scope.get("root_path", "")
    if raw:
        path = raw.decode("latin-1")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path.startswith("/apps/"):
            return path[len("/apps/") :]
    path = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    return quote(path.removeprefix("/apps/"))


def _is_hop(scope: Scope) -> bool:
    hop = HOP_HEADER.encode()
    return any(name == hop and value.strip() == b"1" for name, value in scope["headers"])


async def _read_body(scope: Scope, receive: Receive) -> bytes | _BodyStream | None:
    """The request body: read whole up to `REPLAY_LIMIT` bytes (so it can be sent again), streamed
    past that, or at once when the client declares more."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > REPLAY_LIMIT:
            return _BodyStream([], receive)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            if not chunks:
                return None
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if size > REPLAY_LIMIT:
            return _BodyStream(chunks, receive)


class _BodyStream:
    """A request body passed on as it arrives. It can be given to a second replica only if the first
    took none of it (`started` is False: the connection failed before the body was sent)."""

    def __init__(self, first: list[bytes], receive: Receive) -> None:
        self._first = first
        self._receive = receive
        self.started = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self.started:
            raise RuntimeError("a streamed request body can be sent once")
        self.started = True
        first, self._first = self._first, []
        for chunk in first:
            yield chunk
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _error_answer(exc: R1osError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = orjson.dumps(error_body(str(exc), exc.cause, exc.hint))
    return body, [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (ERROR_HEADER.encode(), exc.cause.encode()),
    ]


async def _send_error(send: Send, exc: R1osError) -> None:
    body, headers = _error_answer(exc)
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_redirect(scope: Scope, send: Send, ref: AppRef) -> None:
    query = scope.get("query_string", b"")
    location = ref.prefix.encode() + b"/" + (b"?" + query if query else b"")
    await send(
        {
            "type": "http.response.start",
            "status": 308,
            "headers": [(b"location", location), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _deny(scope: Scope, receive: Receive, send: Send, exc: R1osError) -> None:
    log.info("proxy: websocket to %s refused: %s", scope.get("path"), exc)
    body, headers = _error_answer(exc)
    await _deny_with(scope, receive, send, exc.status, body, "application/json", headers)


async def _deny_with(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Refuse a websocket handshake: with an HTTP answer where the server supports it, else with the
    server's own 403."""
    message: Message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    if headers is None:
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
