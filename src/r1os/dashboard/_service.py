"""`DashboardService`: the page at `/`, its files, the live event stream and the availability relay.

Routes (all anonymous, all read-only; what a signed-in user changes from the page goes to the other
services' routes, signed by the user's wallet):
- `GET /`: the page (`static/index.html`);
- `GET /dashboard/static/<name>`: its scripts, styles and icon, by plain file name (see `_static`);
- `GET /v1/dashboard/events`: server-sent events, one `snapshot` event (JSON, see `_snapshot`) at once,
  then every `interval` seconds and as soon as a peer appears, goes offline or changes; at most
  `max_clients` streams at a time (503 `busy` past it); every stream ends when the node stops;
- `GET /v1/dashboard/availability?epochs=N`: the last N closed epochs' agreed availability, asked of an
  oracle by this node (see `_relay`);
- `GET /v1/dashboard/licences`: each node's licence and rewards, read from the chain by this node (see
  `_licences`).

Nothing runs while nobody watches: a stream builds snapshots only while it is open, and streams share
one snapshot built at most every `min_gap` seconds, so 32 open tabs cost about what one does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Receive, Scope, Send

from r1os.dashboard._errors import Busy, DashboardError
from r1os.dashboard._licences import LicenceReader
from r1os.dashboard._relay import DEFAULT_EPOCHS, MAX_EPOCHS, AvailabilityRelay
from r1os.dashboard._snapshot import build_snapshot, peer_fingerprint
from r1os.dashboard._static import INDEX, SECURITY_HEADERS, StaticFile, StaticFiles
from r1os.errors import error_body
from r1os.node import ERROR_RESPONSES, HEARTBEAT, Service, ServiceContext
from r1os.wire import Envelope

log = logging.getLogger("r1os.dashboard")

MAX_CLIENTS = 32
INTERVAL = 2.0
MIN_GAP = 0.25
RETRY_MS = 3000  # what a browser waits before it reconnects a stream that ended (node restarting)


class _EventStream(StreamingResponse):
    """A stream that takes one of the service's client slots when it starts and gives it back when it
    ends, however it ends (client gone, node stopping). Taking the slot here rather than in the route
    means no slot is held by a response that never ran."""

    def __init__(self, service: DashboardService) -> None:
        super().__init__(
            service._events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self.service
        if service.clients >= service.max_clients or service.closing:
            exc = Busy(
                f"{service.clients} dashboard streams are open on this node (at most {service.max_clients})"
                if not service.closing
                else "the node is stopping"
            )
            service.refused[exc.cause] += 1
            log.info("dashboard: event stream refused: %s", exc)
            answer = JSONResponse(error_body(str(exc), exc.cause, exc.hint), status_code=exc.status)
            await answer(scope, receive, send)
            return
        service.clients += 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            service.clients -= 1


class _Metrics(Collector):
    def __init__(self, service: DashboardService) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        clients = GaugeMetricFamily("r1os_dashboard_streams", "Open dashboard event streams")
        clients.add_metric([], self.service.clients)
        yield clients
        refused = CounterMetricFamily(
            "r1os_dashboard_refused", "Dashboard requests refused, by cause", labels=["cause"]
        )
        for cause, n in sorted(self.service.refused.items()):
            refused.add_metric([cause], n)
        yield refused


class DashboardService(Service):
    """The node's web dashboard (its own routes are read-only)."""

    name = "dashboard"

    def __init__(
        self, *, max_clients: int = MAX_CLIENTS, interval: float = INTERVAL, min_gap: float = MIN_GAP
    ) -> None:
        self.max_clients = max_clients
        self.interval = interval
        self.min_gap = min_gap
        self.files = StaticFiles()
        self.clients = 0
        self.closing = False
        self.refused: Counter[str] = Counter()
        self._ctx: ServiceContext | None = None
        self.relay: AvailabilityRelay | None = None
        self.licence_reader: LicenceReader | None = None
        self._seq = 0
        self._snapshot: tuple[float, bytes] | None = None  # (monotonic time built, event bytes)
        self._wake = asyncio.Event()
        self._fingerprints: dict[str, tuple[Any, ...]] = {}

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise DashboardError("the dashboard has not started")
        return self._ctx

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.relay = AvailabilityRelay(ctx)
        self.licence_reader = LicenceReader(ctx, self.relay)
        ctx.on(HEARTBEAT, self._on_heartbeat)
        ctx.metrics.register(_Metrics(self))
        self._routes(ctx)

    async def stop(self) -> None:
        # Streams are not tasks of the service (the HTTP server runs them): tell them to end, so the
        # server's shutdown does not wait on them.
        self.closing = True
        self._signal()

    # -- changes -------------------------------------------------------------------------------

    def _signal(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def _on_heartbeat(self, env: Envelope) -> None:
        # The node's own handler ran first (registered before any service's), so the map is current.
        peer = self.ctx.netmap.get(env.sender)
        if peer is None:
            return
        fingerprint = peer_fingerprint(peer)
        if self._fingerprints.get(peer.address) != fingerprint:
            self._fingerprints[peer.address] = fingerprint
            self._snapshot = None  # the next event shows it
            if self.clients:
                self._signal()

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A fresh snapshot (what the stream sends, as a dict)."""
        self._seq += 1
        return build_snapshot(self.ctx, self._seq, self.clients, self.max_clients)

    def _event(self) -> bytes:
        """The current snapshot as one SSE event, shared by every stream for `min_gap` seconds."""
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] >= self.min_gap:
            data = self.snapshot()
            # forget fingerprints of peers the map forgot, so the table stays the map's size
            netmap = self.ctx.netmap
            for address in [a for a in self._fingerprints if netmap.get(a) is None]:
                del self._fingerprints[address]
            self._snapshot = (
                now,
                b"event: snapshot\nid: %d\ndata: %s\n\n" % (data["seq"], orjson.dumps(data)),
            )
        return self._snapshot[1]

    def _statuses(self) -> list[tuple[str, str]]:
        return [(p.address, p.status) for p in self.ctx.netmap.peers()]

    def _until_offline(self) -> float:
        """Seconds until the first online peer would count as offline if it stays silent."""
        netmap = self.ctx.netmap
        now = time.time()
        deadlines = [
            p.last_seen + netmap.missed_limit * p.heartbeat.interval
            for p in netmap.peers()
            if p.status == "online"
        ]
        return max(0.05, min(deadlines) - now + 0.05) if deadlines else self.interval

    async def _events(self) -> AsyncIterator[bytes]:
        yield b"retry: %d\n\n" % RETRY_MS
        while not self.closing:
            yield self._event()
            sent = time.monotonic()
            statuses = self._statuses()
            while not self.closing:
                left = self.interval - (time.monotonic() - sent)
                if left <= 0:
                    break
                wake = self._wake
                try:
                    async with asyncio.timeout(min(left, self._until_offline())):
                        await wake.wait()
                except TimeoutError:
                    if self._statuses() != statuses:  # a peer fell silent: offline now
                        self._snapshot = None
                        break
                    continue
                # a change was signalled: wait out the gap, so a burst of them becomes one event
                await asyncio.sleep(max(0.0, self.min_gap - (time.monotonic() - sent)))
                break

    # -- routes --------------------------------------------------------------------------------

    def _file(self, request: Request, f: StaticFile) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": f.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == f.etag:
            return Response(status_code=304, headers=headers)
        return Response(f.body, media_type=f.media_type, headers=headers)

    def _routes(self, ctx: ServiceContext) -> None:
        router = ctx.router
        page = {200: {"content": {"text/html": {}}, "description": "the dashboard page"}, **ERROR_RESPONSES}

        @router.get("/", response_class=Response, responses=page, include_in_schema=True)
        async def index(request: Request) -> Response:
            """The dashboard (read-only; see docs/dashboard.md)."""
            return self._file(request, self.files.get(INDEX))

        @router.get("/dashboard/static/{name:path}", response_class=Response, responses=ERROR_RESPONSES)
        async def static(name: str, request: Request) -> Response:
            """One of the page's files, by plain name (no folders: 400 `invalid_request`)."""
            try:
                return self._file(request, self.files.get(name))
            except DashboardError as exc:
                self.refused[exc.cause] += 1
                raise

        events_doc: dict[int | str, dict[str, Any]] = {
            200: {"content": {"text/event-stream": {}}, "description": "`snapshot` events, JSON"},
            **ERROR_RESPONSES,
        }

        @router.get("/v1/dashboard/events", response_class=Response, responses=events_doc)
        async def events() -> Response:
            """Server-sent events: a snapshot of this node and its network map at once, then every
            ~2 s and on changes; at most 32 streams at a time (503 `busy`)."""
            return _EventStream(self)

        @router.get("/v1/dashboard/availability", responses=ERROR_RESPONSES)
        async def availability(
            epochs: int = Query(DEFAULT_EPOCHS, ge=1, le=MAX_EPOCHS),
        ) -> dict[str, Any]:
            """The last `epochs` closed epochs' agreed availability per node, from an oracle (this node
            if it is one, else one it knows); 503 `no_oracle` when none answers."""
            assert self.relay is not None
            try:
                return await self.relay.availability(epochs)
            except DashboardError as exc:
                self.refused[exc.cause] += 1
                raise

        @router.get("/v1/dashboard/licences", responses=ERROR_RESPONSES)
        async def licences() -> dict[str, Any]:
            """Each node's licence (type, token id, owner) and rewards (claimed, claimable now, earned),
            read from the chain by this node, at most every 10 s; `{"chain": false}` without a chain;
            502 `unreachable` when the chain does not answer."""
            assert self.licence_reader is not None
            try:
                return await self.licence_reader.licences()
            except DashboardError as exc:
                self.refused[exc.cause] += 1
                raise
