"""An in-process transport, for tests and tools that need messaging but no broker.

As httpx's `MockTransport` lets a client run without a network, `MemoryTransport` lets nodes and
services exchange messages inside one process: transports attached to the same `MemoryHub` see each
other's publications, matched with MQTT's filter rules. It keeps the `Transport` contract: `publish`
never fails (while disconnected, messages wait in a bounded queue, oldest dropped and counted), each
subscription gets its messages in order from its own bounded queue (a slow handler loses messages, it
does not stall the others), and handler errors are counted and logged, never fatal. `MemoryHub.disconnect`
and `reconnect` cut a transport off and bring it back, for partition tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from dataclasses import dataclass, field

from r1os.errors import TransportError
from r1os.transport.base import DEFAULT_QUEUE_LIMIT, Handler, Subscription, Transport, TransportStats
from r1os.transport.topics import topic_matches

log = logging.getLogger("r1os.transport.memory")


class MemoryHub:
    """The in-process "broker": delivers each publication to every attached, connected transport."""

    def __init__(self) -> None:
        self._transports: list[MemoryTransport] = []
        self.delivered = 0

    def attach(self, transport: MemoryTransport) -> None:
        if transport not in self._transports:
            self._transports.append(transport)

    def detach(self, transport: MemoryTransport) -> None:
        with contextlib.suppress(ValueError):
            self._transports.remove(transport)

    def route(self, topic: str, payload: bytes) -> None:
        for transport in list(self._transports):
            if transport.connected:
                self.delivered += transport._deliver(topic, payload)

    async def disconnect(self, transport: MemoryTransport) -> None:
        """Cut `transport` off: it stops receiving, and what it publishes waits in its offline queue."""
        transport._online.clear()

    async def reconnect(self, transport: MemoryTransport) -> None:
        transport._online.set()
        transport._reconnects += 1
        transport._flush()


@dataclass
class _Worker:
    queue: asyncio.Queue[tuple[str, bytes]]
    task: asyncio.Task[None] | None = None
    dropped: int = 0


@dataclass
class _Counters:
    published: int = 0
    received: int = 0
    handler_errors: int = 0
    dropped_offline: int = 0
    dropped_slow: int = 0
    offline: deque[tuple[str, bytes]] = field(default_factory=deque)


class MemoryTransport(Transport):
    """A transport attached to a `MemoryHub` (one hub stands for one broker)."""

    def __init__(
        self,
        hub: MemoryHub,
        *,
        client_id: str = "memory",
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        handler_queue_limit: int = DEFAULT_QUEUE_LIMIT,
    ) -> None:
        self.hub = hub
        self.client_id = client_id
        self._queue_limit = queue_limit
        self._handler_queue_limit = handler_queue_limit
        self._subs: list[Subscription] = []
        self._workers: dict[Subscription, _Worker] = {}
        self._online = asyncio.Event()
        self._started = False
        self._stopped = False
        self._reconnects = 0
        self._c = _Counters()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._stopped:
            raise TransportError("transport is stopped")
        if self._started:
            return
        self._started = True
        for sub in self._subs:
            self._start_worker(sub)
        self.hub.attach(self)
        self._online.set()
        self._flush()

    async def stop(self) -> None:
        self._stopped = True
        self._online.clear()
        self.hub.detach(self)
        workers = [w.task for w in self._workers.values() if w.task is not None]
        self._workers.clear()
        for sub in self._subs:
            sub._active.clear()
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the Transport contract -------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        if "+" in topic or "#" in topic:
            raise TransportError(f"cannot publish to a filter: {topic!r}")
        if not self.connected:
            self._queue_offline(topic, payload)
            return
        self._c.published += 1
        self.hub.route(topic, payload)

    def subscribe(self, pattern: str, handler: Handler) -> Subscription:
        sub = Subscription(pattern, handler)
        self._subs.append(sub)
        if self._started and not self._stopped:
            self._start_worker(sub)
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(subscription)
        subscription._active.clear()
        worker = self._workers.pop(subscription, None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()

    @property
    def connected(self) -> bool:
        return self._started and not self._stopped and self._online.is_set()

    @property
    def stats(self) -> TransportStats:
        c = self._c
        return TransportStats(
            published=c.published,
            received=c.received,
            queued=len(c.offline),
            dropped_offline=c.dropped_offline,
            reconnects=self._reconnects,
            handler_errors=c.handler_errors,
            dropped_slow=c.dropped_slow,
        )

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self._await_connection(
            self._online,
            started=self._started,
            stopped=self._stopped,
            timeout=timeout,
            where="the in-memory hub",
        )

    # -- inside ------------------------------------------------------------------------------

    def _queue_offline(self, topic: str, payload: bytes) -> None:
        if len(self._c.offline) >= self._queue_limit:
            self._c.offline.popleft()
            self._c.dropped_offline += 1
        self._c.offline.append((topic, payload))

    def _flush(self) -> None:
        while self._c.offline and self.connected:
            topic, payload = self._c.offline.popleft()
            self._c.published += 1
            self.hub.route(topic, payload)

    def _start_worker(self, sub: Subscription) -> None:
        worker = _Worker(asyncio.Queue(self._handler_queue_limit))
        worker.task = asyncio.create_task(self._work(sub, worker), name=f"memory-sub-{sub.pattern}")
        self._workers[sub] = worker
        sub._active.set()  # no broker to confirm it: it holds from now on

    def _deliver(self, topic: str, payload: bytes) -> int:
        """Queue a publication for each matching subscription; how many got it."""
        matched = [s for s in self._subs if topic_matches(s.pattern, topic)]
        if not matched:
            return 0
        self._c.received += 1
        given = 0
        for sub in matched:
            worker = self._workers.get(sub)
            if worker is None:
                continue
            try:
                worker.queue.put_nowait((topic, payload))
                given += 1
            except asyncio.QueueFull:
                self._c.dropped_slow += 1
                worker.dropped += 1
                if worker.dropped == 1 or worker.dropped % 1000 == 0:
                    log.warning("memory %s: handler for %r is too slow; %d dropped", self.client_id,
                                sub.pattern, worker.dropped)  # fmt: skip
        return given

    async def _work(self, sub: Subscription, worker: _Worker) -> None:
        while True:
            topic, payload = await worker.queue.get()
            try:
                result = sub.handler(topic, payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self._c.handler_errors += 1
                log.exception("memory %s: handler for %r failed", self.client_id, sub.pattern)
