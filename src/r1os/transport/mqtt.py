"""MQTT transport on aiomqtt: reconnects by itself, queues while offline, isolates slow handlers.

One background task owns the connection: it connects, renews every subscription, flushes what was
queued while offline, then reads messages until the connection drops, and starts again after an
exponential backoff with jitter. Each subscription has its own bounded queue and worker task, so a
slow or failing handler only ever delays (or loses, counted) its own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import socket
import ssl
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from r1os.errors import TransportError
from r1os.transport.base import (
    DEFAULT_QUEUE_LIMIT,
    Handler,
    Subscription,
    Transport,
    TransportStats,
)

log = logging.getLogger(__name__)
# paho's own log lines (packet traces at DEBUG, socket errors at ERROR) under our namespace.
paho_log = logging.getLogger(f"{__name__}.paho")

_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """The parts of an `mqtt://` or `mqtts://` URL."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _bad_input(message: str, hint: str | None = None) -> TransportError:
    """A `TransportError` for bad caller input, logged once here so it never goes unseen."""
    log.warning("%s", message)
    return TransportError(message, hint=hint)


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse `mqtt://[user[:password]@]host[:port]` (or `mqtts://`); `TransportError` if bad."""
    try:
        return _parse_broker_url(url)
    except TransportError as exc:
        log.warning("%s", exc)
        raise


def _parse_broker_url(url: str) -> BrokerAddress:
    hint = "use mqtt://HOST:PORT, e.g. mqtt://127.0.0.1:1883 (or mqtts:// for TLS)"
    if not isinstance(url, str) or not url.strip():
        raise TransportError(f"broker URL is empty: {url!r}", hint=hint)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TransportError(f"bad broker URL {url!r}: {exc}", hint=hint) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise TransportError(
            f"bad broker URL {url!r}: scheme must be mqtt or mqtts, not {parts.scheme or 'missing'!r}",
            hint=hint,
        )
    if not parts.hostname:
        raise TransportError(f"bad broker URL {url!r}: no host", hint=hint)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TransportError(f"bad broker URL {url!r}: unexpected path or query", hint=hint)
    if port == 0:
        raise TransportError(f"bad broker URL {url!r}: port 0", hint=hint)
    return BrokerAddress(
        host=parts.hostname,
        port=port if port is not None else _SCHEMES[scheme],
        tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def covers(broad: str, narrow: str) -> bool:
    """True if every topic matching filter `narrow` also matches filter `broad`."""
    b_levels, n_levels = broad.split("/"), narrow.split("/")
    for i, b in enumerate(b_levels):
        if b == "#":
            return True
        if i >= len(n_levels):
            return False
        n = n_levels[i]
        if b == "+":
            if n == "#":
                return False
        elif b != n:
            return False
    return len(b_levels) == len(n_levels)


def backoff_delays(
    initial: float = 0.2, maximum: float = 10.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Reconnect waits: `initial` doubling up to `maximum`, each drawn in [delay/2, delay].

    The jitter keeps nodes that lost the same broker from all coming back at the same instant.
    """
    uniform = (rng or random).uniform
    delay = initial
    while True:
        yield uniform(delay / 2, delay)
        delay = min(delay * 2, maximum)


def _force_close(client: aiomqtt.Client) -> None:
    """Close a client's socket now (a no-op if it is closed already).

    aiomqtt leaves the socket (and its housekeeping task) open when cancelled while waiting for
    CONNACK, e.g. from a broker that accepts TCP but never answers; paho's socket close runs the
    callbacks that unregister both.
    """
    paho = getattr(client, "_client", None)
    close = getattr(paho, "_sock_close", None) or getattr(paho, "disconnect", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def _check_qos(qos: int) -> int:
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        raise _bad_input(f"invalid QoS {qos!r}: must be 0, 1 or 2")
    return qos


@dataclass(eq=False)
class _Worker:
    """The bounded queue and task that feed one subscription's handler."""

    queue: asyncio.Queue[tuple[str, bytes]]
    task: asyncio.Task[None] | None = None
    errors_logged: int = 0
    drops_logged: int = 0


class MqttTransport(Transport):
    """A `Transport` over one MQTT 3.1.1 connection (mosquitto, EMQX, the embedded amqtt broker).

    Sessions are clean: the broker keeps nothing for us between connections, the transport itself
    renews subscriptions and replays its offline queue on every reconnect.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        handler_queue_limit: int = 1_000,
        keepalive: int = 15,
        connect_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        flush_timeout: float = 5.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address = parse_broker_url(url)
        if not isinstance(client_id, str) or not client_id or len(client_id) > 256:
            raise _bad_input(f"invalid MQTT client id {client_id!r}: need 1-256 characters")
        if queue_limit < 1 or handler_queue_limit < 1:
            raise _bad_input("queue_limit and handler_queue_limit must be at least 1")
        self.url = self.address.url
        self.client_id = client_id
        self._username = username if username is not None else self.address.username
        self._password = password if password is not None else self.address.password
        self._queue_limit = queue_limit
        self._handler_queue_limit = handler_queue_limit
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._flush_timeout = flush_timeout
        self._tls_context = tls_context
        if self.address.tls and tls_context is None:
            self._tls_context = ssl.create_default_context()

        self._subs: list[Subscription] = []
        self._workers: dict[Subscription, _Worker] = {}
        self._outbox: deque[tuple[str, bytes, int]] = deque()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._retry = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._broker_filters: dict[str, int] = {}
        self._sub_lock = asyncio.Lock()
        self._started = False
        self._stopped = False
        self._ever_connected = False
        self._drop_warned = False
        self._dropped_since_connect = 0

        self._published = 0
        self._received = 0
        self._dropped_offline = 0
        self._reconnects = 0
        self._handler_errors = 0
        self._dropped_slow = 0

    # -- public API -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stats(self) -> TransportStats:
        return TransportStats(
            published=self._published,
            received=self._received,
            queued=len(self._outbox),
            dropped_offline=self._dropped_offline,
            reconnects=self._reconnects,
            handler_errors=self._handler_errors,
            dropped_slow=self._dropped_slow,
        )

    async def start(self) -> None:
        if self._stopped:
            raise TransportError("transport was stopped; create a new one to connect again")
        if self._started:
            return
        self._started = True
        for sub in self._subs:
            self._start_worker(sub)
        self._run_task = asyncio.create_task(self._run(), name=f"mqtt-{self.client_id}")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.connected and self._outbox:
            # Give what is queued a bounded chance to leave before we disconnect.
            self._kick_flusher()
            if self._flush_task is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._flush_task), self._flush_timeout)
        # stop() may be called from a handler: never cancel or wait for the caller's own task.
        me = asyncio.current_task()
        mine = [self._flush_task, self._run_task, *self._side_tasks]
        mine += [w.task for w in self._workers.values()]
        tasks: list[asyncio.Task[None]] = []
        for task in mine:
            if task is not None and task is not me and not task.done():
                task.cancel()
                tasks.append(task)
        # The run task leaves its `async with client` block on cancel, which sends DISCONNECT.
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.debug("task ended with %r during stop", result)
        self._connected.clear()
        self._client = None
        log.info("mqtt %s: stopped (%s)", self.client_id, self.stats)

    def retry_now(self) -> None:
        """Skip the current reconnect backoff (e.g. just admitted by the network)."""
        self._retry.set()

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self._await_connection(
            self._connected, started=self._started, stopped=self._stopped, timeout=timeout, where=self.url,
            hint="check that the broker is running and reachable",
        )  # fmt: skip

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        if self._stopped:
            raise TransportError(f"cannot publish to {topic!r}: transport is stopped")
        try:
            aiomqtt.Topic(topic)
        except (TypeError, ValueError):
            raise _bad_input(
                f"invalid topic {topic!r}: must be a non-empty string without '+' or '#'"
            ) from None
        if topic.startswith("$"):
            # Reserved for brokers ($SYS); amqtt even drops the connection of a client that tries.
            raise _bad_input(f"invalid topic {topic!r}: topics starting with '$' are reserved")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise _bad_input(f"payload must be bytes, not {type(payload).__name__} (topic {topic!r})")
        qos = _check_qos(qos)
        data = bytes(payload)
        client = self._client
        if client is not None and self.connected and not self._outbox:
            try:
                await client.publish(topic, data, qos=qos)
            except aiomqtt.MqttError as exc:
                log.debug("publish to %s failed (%s); queued for the next connection", topic, exc)
            else:
                self._published += 1
                return
        self._enqueue(topic, data, qos)

    def subscribe(self, pattern: str, handler: Handler, *, qos: int = 0) -> Subscription:
        """Deliver messages matching `pattern` to `handler`; renewed on every reconnect.

        `qos` is the subscription QoS (the broker delivers at most at this level).
        """
        if self._stopped:
            raise TransportError(f"cannot subscribe to {pattern!r}: transport is stopped")
        try:
            aiomqtt.Wildcard(pattern)
        except (TypeError, ValueError):
            raise _bad_input(
                f"invalid subscription pattern {pattern!r}: '+' and '#' must fill a whole level, "
                "'#' only at the end"
            ) from None
        if not callable(handler):
            raise _bad_input(f"handler for {pattern!r} is not callable")
        sub = Subscription(pattern, handler, _check_qos(qos))
        self._subs.append(sub)
        if self._started:
            self._start_worker(sub)
        self._resync()
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription not in self._subs:
            return
        self._subs.remove(subscription)
        subscription._active.clear()
        worker = self._workers.pop(subscription, None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
        self._resync()

    def __repr__(self) -> str:
        return f"MqttTransport({self.url!r}, {self.client_id!r}, connected={self.connected})"

    # -- connection loop --------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.address.host,
            self.address.port,
            identifier=self.client_id,
            username=self._username,
            password=self._password,
            clean_session=True,
            keepalive=self._keepalive,
            timeout=self._connect_timeout,
            tls_context=self._tls_context,
            logger=paho_log,
            # paho leaves Nagle on: back-to-back small publishes then wait for delayed ACKs
            # (tens of ms on Linux).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _run(self) -> None:
        delays = backoff_delays(self._backoff_initial, self._backoff_max)
        failures = 0
        while True:
            client = self._make_client()
            was_connected = False
            try:
                async with client:
                    await self._on_connect(client)
                    was_connected = True
                    failures = 0
                    delays = backoff_delays(self._backoff_initial, self._backoff_max)
                    await self._read(client)
            except asyncio.CancelledError:
                _force_close(client)
                raise
            except aiomqtt.MqttError as exc:
                failures += 1
                if was_connected:
                    log.warning("mqtt %s: lost connection to %s: %s", self.client_id, self.url, exc)
                elif failures == 1 or failures % 20 == 0:
                    log.warning(
                        "mqtt %s: cannot connect to %s (attempt %d): %s",
                        self.client_id,
                        self.url,
                        failures,
                        exc,
                    )
                else:
                    log.debug("mqtt %s: connect attempt %d failed: %s", self.client_id, failures, exc)
            except Exception:
                # Anything unexpected from the client library: log it, then reconnect as usual;
                # the connection loop must outlive it.
                failures += 1
                _force_close(client)
                log.exception("mqtt %s: unexpected error on %s; reconnecting", self.client_id, self.url)
            finally:
                self._on_disconnect()
            # Wait out the backoff, unless someone knows the broker will now accept us (`retry_now`).
            self._retry.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next(delays)):
                    await self._retry.wait()
            if self._retry.is_set():
                delays = backoff_delays(self._backoff_initial, self._backoff_max)

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        """Renew subscriptions, then mark connected and replay the offline queue."""
        self._broker_filters = {}
        await self._sync_subscriptions(client)
        self._client = client
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._connected.set()
        dropped, self._dropped_since_connect = self._dropped_since_connect, 0
        self._drop_warned = False
        log.info(
            "mqtt %s: connected to %s (%d subscriptions, %d queued%s)",
            self.client_id,
            self.url,
            len(self._subs),
            len(self._outbox),
            f", {dropped} dropped while offline" if dropped else "",
        )
        if self._outbox:
            self._kick_flusher()

    def _on_disconnect(self) -> None:
        self._connected.clear()
        self._client = None
        self._broker_filters = {}
        for sub in self._subs:
            sub._active.clear()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._received += 1
            topic = message.topic.value
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload).encode() if payload is not None else b""
            for sub in self._subs:
                if message.topic.matches(sub.pattern):
                    self._dispatch(sub, topic, payload)

    # -- outbound ---------------------------------------------------------------------------

    def _enqueue(self, topic: str, payload: bytes, qos: int) -> None:
        if len(self._outbox) >= self._queue_limit:
            self._outbox.popleft()
            self._dropped_offline += 1
            self._dropped_since_connect += 1
            if not self._drop_warned:
                self._drop_warned = True
                log.warning(
                    "mqtt %s: offline queue full (%d); dropping the oldest messages",
                    self.client_id,
                    self._queue_limit,
                )
        self._outbox.append((topic, payload, qos))
        if self.connected:
            self._kick_flusher()

    def _kick_flusher(self) -> None:
        client = self._client
        if client is None or (self._flush_task is not None and not self._flush_task.done()):
            return
        self._flush_task = asyncio.create_task(self._flush(client), name="mqtt-flush")

    async def _flush(self, client: aiomqtt.Client) -> None:
        sent = 0
        while self._outbox and self._client is client:
            item = self._outbox.popleft()
            try:
                await client.publish(item[0], item[1], qos=item[2])
            except aiomqtt.MqttError as exc:
                log.debug("mqtt %s: flush interrupted: %s", self.client_id, exc)
                if len(self._outbox) < self._queue_limit:
                    self._outbox.appendleft(item)
                else:
                    self._dropped_offline += 1
                return
            self._published += 1
            sent += 1
        if sent:
            log.debug("mqtt %s: sent %d queued messages", self.client_id, sent)

    # -- inbound ----------------------------------------------------------------------------

    def _start_worker(self, sub: Subscription) -> None:
        if sub in self._workers:
            return
        worker = _Worker(asyncio.Queue(self._handler_queue_limit))
        worker.task = asyncio.create_task(self._work(sub, worker), name=f"mqtt-sub-{sub.pattern}")
        self._workers[sub] = worker

    def _dispatch(self, sub: Subscription, topic: str, payload: bytes) -> None:
        worker = self._workers.get(sub)
        if worker is None:
            return
        try:
            worker.queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self._dropped_slow += 1
            worker.drops_logged += 1
            if worker.drops_logged == 1 or worker.drops_logged % 1000 == 0:
                log.warning(
                    "mqtt %s: handler for %r is too slow; %d messages dropped so far",
                    self.client_id,
                    sub.pattern,
                    worker.drops_logged,
                )

    async def _work(self, sub: Subscription, worker: _Worker) -> None:
        while not self._stopped:  # a handler that stopped the transport ends its own worker
            topic, payload = await worker.queue.get()
            try:
                result = sub.handler(topic, payload)
                if inspect.isawaitable(result):  # plain functions are accepted too
                    await result
            except Exception:
                self._handler_errors += 1
                worker.errors_logged += 1
                if worker.errors_logged == 1:
                    log.exception("mqtt %s: handler for %r failed", self.client_id, sub.pattern)
                else:
                    log.warning(
                        "mqtt %s: handler for %r failed again (%d failures)",
                        self.client_id,
                        sub.pattern,
                        worker.errors_logged,
                    )

    # -- subscriptions on the broker --------------------------------------------------------

    def _wanted_filters(self) -> dict[str, int]:
        """The fewest broker filters covering every pattern, each with the highest QoS it serves.

        A pattern covered by a broader one (`r1/n/b/+` under `r1/n/#`) is not subscribed on its
        own: brokers may send one copy per matching filter (amqtt does), and handlers must see
        each message once.
        """
        qos: dict[str, int] = {}
        for s in self._subs:
            qos[s.pattern] = max(qos.get(s.pattern, 0), s.qos)
        wanted: dict[str, int] = {}
        for pattern in qos:
            if not any(other != pattern and covers(other, pattern) for other in qos):
                wanted[pattern] = max(q for p, q in qos.items() if covers(pattern, p))
        return wanted

    def _resync(self) -> None:
        client = self._client
        if client is not None and self.connected:
            self._spawn(self._sync_or_log(client))

    async def _sync_or_log(self, client: aiomqtt.Client) -> None:
        try:
            await self._sync_subscriptions(client)
        except aiomqtt.MqttError as exc:
            log.debug("mqtt %s: subscription update failed (%s); redone on reconnect", self.client_id, exc)

    async def _sync_subscriptions(self, client: aiomqtt.Client) -> None:
        """Bring the broker's filters in line with the wanted ones; repeat until nothing changed."""
        async with self._sub_lock:
            while True:
                wanted = self._wanted_filters()
                add = {f: q for f, q in wanted.items() if self._broker_filters.get(f) != q}
                drop = [f for f in self._broker_filters if f not in wanted]
                if not add and not drop:
                    break
                for f, q in add.items():  # subscribe first: no gap while a filter is replaced
                    await client.subscribe(f, qos=q)
                    self._broker_filters[f] = q
                for f in drop:
                    await client.unsubscribe(f)
                    del self._broker_filters[f]
            for s in self._subs:
                if any(covers(f, s.pattern) for f in self._broker_filters):
                    s._active.set()
                else:
                    s._active.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
