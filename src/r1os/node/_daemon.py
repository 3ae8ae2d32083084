"""The node daemon: one asyncio process with an identity, a broker connection, heartbeats, a
network map, an HTTP API and the services plugged into it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from r1os import __version__
from r1os.errors import NodeError, R1osError
from r1os.identity import NodeKey, load_or_create, normalize_address, password_from_env_or_prompt
from r1os.node._api import create_app
from r1os.node._auth import ApiAuth
from r1os.node._compact import COMPACT_HEARTBEAT, HEARTBEAT_REQUEST, CompactReceiver, CompactSender
from r1os.node._config import NodeConfig
from r1os.node._http import HttpLimits, LazyWebSockets, bounded, peer_client
from r1os.node._limits import BodyLimit
from r1os.node._metrics import NodeCollector
from r1os.node._netmap import Heartbeat, NetworkMap
from r1os.node._netmap_sync import (
    NETMAP,
    NETMAP_REQUEST,
    PART_BUDGET,
    MapFollower,
    MapPublisher,
    split_message,
)
from r1os.node._resources import collect_resources
from r1os.node._service import MessageHandler, Service, ServiceContext, collect_services_info
from r1os.transport import MqttTransport, Transport, broadcast_topic, inbox_topic
from r1os.transport.auth import broker_client_id, broker_password
from r1os.transport.topics import all_broadcasts_pattern, all_oracle_channels_pattern, oracle_topic
from r1os.wire import Envelope, EnvelopeSigner, EnvelopeVerifier

log = logging.getLogger("r1os.node")

HEARTBEAT = "hb"
FALLBACK_INTERVALS = 2
"""Oracle mode: intervals without a published map after which a node broadcasts its heartbeats."""
#: Message types of the protocol; a node drops anything else as `unknown_type`.
PROTOCOL_TYPES: set[str] = {HEARTBEAT, NETMAP, NETMAP_REQUEST, COMPACT_HEARTBEAT, HEARTBEAT_REQUEST}


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
    # and accepted connections inherit this; with proto 0 every small response waited ~40 ms for an ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class Node:
    """An edge node (or, with `oracle=True`, an oracle node)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        password: str | None = None,
        services: Iterable[Service] = (),
        transport: Transport | None = None,
    ) -> None:
        self.config = config
        self.home = config.home_dir
        self._password = password
        self.services = list(services)
        self._transport = transport
        self.netmap = NetworkMap(config.missed_heartbeats_offline)
        self.verifier = EnvelopeVerifier(
            config.network,
            known_types=PROTOCOL_TYPES,
            max_size=config.max_message_size,
            max_skew_s=config.max_clock_skew,
        )
        # Services that decide who is admitted (dAuth) gate every message from the first one on.
        gates = [s.admits for s in self.services if s.gates_admission]
        if len(gates) == 1:
            self.verifier.admitted = gates[0]
        elif gates:
            self.verifier.admitted = lambda sender, type: all(gate(sender, type) for gate in gates)
        self.metrics = CollectorRegistry(auto_describe=True)
        self.heartbeats_sent = 0
        self.handler_errors = 0
        self._handlers: dict[str, list[MessageHandler]] = defaultdict(list)
        self._started_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._contexts: list[ServiceContext] = []
        api = config.api
        self.http_limits = HttpLimits(api.max_head, api.head_timeout, api.body_idle_timeout)
        self.body_limits: BodyLimit | None = None
        self._http: httpx.AsyncClient | None = None
        self._server: uvicorn.Server | None = None
        self._stop = asyncio.Event()
        self.url = ""
        self.key: NodeKey
        self.signer: EnvelopeSigner
        self.on(HEARTBEAT, self._on_heartbeat)
        # heartbeat_mode "oracle": heartbeats to the oracles only; the oracles publish the network map
        self.oracle_mode = config.effective_heartbeat_mode == "oracle"
        self.map_publisher: MapPublisher | None = None
        self.map_follower: MapFollower | None = None
        self._map_asked: dict[str, float] = {}  # oracle side: requester -> when last answered
        self._map_requested = 0.0  # edge side: when we last asked for a snapshot
        # oracle mode: heartbeats whole only when their content changes, compact in between
        self.compact_sender: CompactSender | None = None
        self.compact_receiver: CompactReceiver | None = None
        self._full_requested = 0.0  # when an oracle last made us send a whole heartbeat at once
        self._was_alone = False  # oracle mode: no oracle publishing the map, heartbeats broadcast
        if self.oracle_mode:
            self.compact_sender = CompactSender()
            self.on(HEARTBEAT_REQUEST, self._on_heartbeat_request)
            if config.oracle:
                self.map_publisher = MapPublisher()
                self.compact_receiver = CompactReceiver(config.heartbeat_interval)
                self.on(NETMAP_REQUEST, self._on_netmap_request)
                self.on(COMPACT_HEARTBEAT, self._on_compact_heartbeat)
            else:
                self.on(NETMAP, self._on_netmap)

    # -- identity and state ----------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.key.address

    @property
    def uptime(self) -> float:
        return time.time() - self._started_at if self._started_at else 0.0

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise NodeError("node not started")
        return self._transport

    def _load_key(self) -> NodeKey:
        path = self.home / "keys" / "node.json"
        password = self._password
        if password is None:
            password = password_from_env_or_prompt(confirm=not path.exists())
        key, created = load_or_create(
            path, password, strength="light" if self.config.key_strength == "light" else "standard"
        )
        if created:
            log.info("created node key %s in %s", key.address, path)
        return key

    def info(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "ai_address": self.key.ai_address,
            "network": self.config.network,
            "version": __version__,
            "url": self.url,
            "oracle": self.config.oracle,
            "uptime": round(self.uptime, 3),
            "heartbeat_interval": self.config.heartbeat_interval,
            "heartbeat_mode": self.config.effective_heartbeat_mode,
            "services": [s.name for s in self.services],
            "broker": self.transport.url if isinstance(self.transport, MqttTransport) else None,
            "broker_connected": self.transport.connected,
            "resources": collect_resources(self.home).model_dump(),
            "wire": self.verifier.stats(),
            "home": str(self.home),
            "pid": os.getpid(),
        }

    # -- messaging -------------------------------------------------------------------------

    def on(self, type: str, handler: MessageHandler) -> None:
        """Deliver verified messages of `type` to `handler`."""
        self._handlers[type].append(handler)
        self.verifier.register_type(type)

    async def broadcast(self, type: str, payload: dict[str, Any], *, ttl: int | None = None) -> None:
        raw = self.signer.seal(type, payload, ttl=ttl)
        await self.transport.publish(broadcast_topic(self.config.network, type), raw)

    async def send(self, address: str, type: str, payload: dict[str, Any], *, ttl: int | None = None) -> None:
        raw = self.signer.seal(type, payload, ttl=ttl)
        await self.transport.publish(inbox_topic(self.config.network, address), raw)

    async def _on_raw(self, topic: str, raw: bytes) -> None:
        env = self.verifier.accept(raw)
        if env is None or env.sender == self.address:
            return
        await self._dispatch(env)

    async def _dispatch(self, env: Envelope) -> None:
        for handler in self._handlers.get(env.type, ()):
            try:
                await handler(env)
            except Exception:
                self.handler_errors += 1
                log.exception("handler for %r failed on a message from %s", env.type, env.sender)

    async def _on_heartbeat(self, env: Envelope) -> None:
        claimed = env.payload.get("ai_address")
        if claimed is not None:
            try:
                if not isinstance(claimed, str) or normalize_address(claimed) != env.sender:
                    raise ValueError("ai_address does not match the sender")
            except (R1osError, ValueError) as exc:
                log.warning("heartbeat from %s refused: %s", env.sender, exc)
                return
        known = self.netmap.get(env.sender)
        was_online = known is not None and known.status == "online"
        try:
            self.netmap.observe(env.sender, env.payload)
        except ValueError as exc:
            log.warning("%s", exc)
            return
        if self.compact_receiver is not None:
            self.compact_receiver.whole(env.sender, env.payload)
        if was_online or env.payload.get("reply"):
            return
        # A peer we did not know (or thought gone): answer straight to its inbox, so a new node learns
        # the whole network at once instead of waiting a full heartbeat interval. In oracle mode only an
        # oracle answers, and only another oracle: a node asks for the map itself (at start and on the
        # first delta it cannot apply), so N nodes joining at once do not make the publisher send N
        # snapshots unasked.
        oracle_to_oracle = self.map_publisher is not None and env.sender.lower() in self.registered_oracles()
        if not self.oracle_mode or oracle_to_oracle:
            await self.send(env.sender, HEARTBEAT, {**self.heartbeat_payload(), "reply": True})

    async def _on_compact_heartbeat(self, env: Envelope) -> None:
        """An oracle: a compact heartbeat, handled as the whole one it stands for (or asked for again)."""
        receiver = self.compact_receiver
        if receiver is None:
            return
        known = self.netmap.get(env.sender)
        try:
            whole = receiver.expand(env.sender, known.heartbeat if known is not None else None, env.payload)
        except ValueError as exc:
            log.warning("%s", exc)
            return
        if whole is None:
            if receiver.should_ask(env.sender):
                await self.send(env.sender, HEARTBEAT_REQUEST, {})
            return
        await self._dispatch(env.model_copy(update={"type": HEARTBEAT, "payload": whole}))

    async def _on_heartbeat_request(self, env: Envelope) -> None:
        """An oracle lacks our whole heartbeat: send it now (at most twice per interval), whole."""
        sender = self.compact_sender
        if sender is None or env.sender.lower() not in self.registered_oracles():
            return
        sender.ask()  # whole, now or (asked again within half an interval) as the next regular one
        now = time.monotonic()
        if now - self._full_requested >= self.config.heartbeat_interval / 2:
            self._full_requested = now
            await self._send_heartbeat()

    def heartbeat_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "version": __version__,
            "uptime": round(self.uptime, 3),
            "interval": self.config.heartbeat_interval,
            "url": self.url,
            "oracle": self.config.oracle,
            "ai_address": self.key.ai_address,
            "services": [s.name for s in self.services],
            "resources": collect_resources(self.home).model_dump(),
        }
        info = collect_services_info(self.services)
        if info:
            payload["services_info"] = info
        return payload

    # -- the published network map (heartbeat_mode "oracle") -----------------------------------

    def registered_oracles(self) -> set[str]:
        """Lower-case addresses of the network's oracles: configured, and dAuth's when it runs."""
        found = {a.lower() for a in self.config.oracles}
        for service in self.services:
            listed = getattr(service, "oracles", None) if service.gates_admission else None
            if callable(listed):
                try:
                    found |= {str(a).lower() for a in listed()}
                except Exception:
                    log.exception("service %s failed to list the oracles", service.name)
        if self.config.oracle:
            found.add(self.address.lower())
        return found

    def is_map_leader(self) -> bool:
        """True if this oracle is the lowest online oracle it knows of: the one that publishes the map."""
        if self.map_publisher is None:
            return False
        registered = self.registered_oracles()
        online = {p.address.lower() for p in self.netmap.online() if p.address.lower() in registered}
        return min(online | {self.address.lower()}) == self.address.lower()

    def _map_view(self, own: dict[str, Any]) -> dict[str, tuple[Heartbeat, float]]:
        now = time.time()
        view = {p.address: (p.heartbeat, max(0.0, now - p.last_seen)) for p in self.netmap.online()}
        view[self.address] = (Heartbeat.model_validate(own), 0.0)
        return view

    def _ages(self, address: str) -> float:
        peer = self.netmap.get(address)
        return time.time() - peer.last_seen if peer is not None else 0.0

    async def _publish_map(self, ttl: int, own: dict[str, Any] | None) -> None:
        """The map's next message, if this oracle publishes it; `own`: this node's heartbeat payload
        as just sent (made again if sending failed)."""
        publisher = self.map_publisher
        if publisher is None or not self.is_map_leader():
            return
        every = self.config.netmap_full_every
        full = bool(every) and publisher.seq % every == 0
        payload = publisher.next_message(self._map_view(own or self.heartbeat_payload()), full=full)
        await self._publish_parts(broadcast_topic(self.config.network, NETMAP), payload, ttl)

    async def _send_snapshot(self, address: str) -> None:
        publisher = self.map_publisher
        if publisher is None or publisher.seq == 0:
            return
        payload = publisher.snapshot(self._ages)
        await self._publish_parts(inbox_topic(self.config.network, address), payload, None)

    async def _publish_parts(self, topic: str, payload: dict[str, Any], ttl: int | None) -> None:
        """A map message as one envelope, or as parts when it would not fit one (a large network)."""
        budget = min(PART_BUDGET, self.config.max_message_size * 5 // 8)
        try:
            parts = split_message(payload, budget)
        except ValueError as exc:
            log.error("network map not sent: %s", exc)
            return
        for part in parts:
            raw = self.signer.seal(NETMAP, part, ttl=ttl)
            if len(raw) > self.config.max_message_size:
                log.error("network map part of %d bytes: over max_message_size", len(raw))
                return
            await self.transport.publish(topic, raw)

    async def _on_netmap_request(self, env: Envelope) -> None:
        """An oracle: a node asks for the whole map (at most one answer per node per interval)."""
        now = time.monotonic()
        if now - self._map_asked.get(env.sender, -1e18) < self.config.heartbeat_interval:
            return
        if len(self._map_asked) > 100_000:
            self._map_asked.clear()
        self._map_asked[env.sender] = now
        await self._send_snapshot(env.sender)

    async def _on_netmap(self, env: Envelope) -> None:
        """A node (not an oracle): apply the map an oracle publishes; ask for a snapshot on a gap."""
        follower = self.map_follower
        if follower is None:
            return
        if follower.accept(env.sender, env.payload) != "resync" or follower.source is None:
            return
        now = time.monotonic()
        if now - self._map_requested < self.config.heartbeat_interval / 2:
            return
        self._map_requested = now
        await self.send(follower.source, NETMAP_REQUEST, {"stream": follower.stream})

    @property
    def _heartbeat_ttl(self) -> int:
        return max(int(self.config.heartbeat_interval * self.config.missed_heartbeats_offline), 10)

    def _alone(self) -> bool:
        """Oracle mode, on a node that follows the map: no oracle has published one for 2 intervals
        (before peers the last map listed go offline, at 3). Until one does, the node's heartbeats go to
        every node, as in broadcast mode, so the network keeps its map without its oracles."""
        follower = self.map_follower
        alone = follower is not None and follower.quiet(FALLBACK_INTERVALS)
        if alone != self._was_alone:
            self._was_alone = alone
            if alone:
                log.warning("no oracle publishes the network map: heartbeats go to every node until one does")
            else:
                log.info("an oracle publishes the network map again: heartbeats go to the oracles")
        return alone

    async def _send_heartbeat(self) -> dict[str, Any]:
        """One heartbeat: to every node (broadcast mode, or no oracle publishing), or to the oracles,
        whole or compact. Returns its whole payload."""
        net = self.config.network
        payload = self.heartbeat_payload()
        if self.compact_sender is None or self._alone():
            raw = self.signer.seal(HEARTBEAT, payload, ttl=self._heartbeat_ttl)
            await self.transport.publish(broadcast_topic(net, HEARTBEAT), raw)
            if self.compact_sender is not None:
                self.compact_sender.ask()  # the oracles' first heartbeat from us once back is whole
        else:
            type_, body = self.compact_sender.next(payload)
            raw = self.signer.seal(type_, body, ttl=self._heartbeat_ttl)
            await self.transport.publish(oracle_topic(net, HEARTBEAT), raw)
        self.heartbeats_sent += 1
        return payload

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        ttl = self._heartbeat_ttl
        if self.map_follower is not None and (oracles := self.registered_oracles()):
            # a node joining asks the lowest oracle for the whole map rather than wait for a delta
            self._map_requested = time.monotonic()
            with contextlib.suppress(Exception):
                await self.send(min(oracles), NETMAP_REQUEST, {"stream": None})
        # Ends on the stop event too: on Python 3.11 a cancel landing as a publish completes can be
        # swallowed by asyncio.wait_for inside aiomqtt, and stop() would wait 5 s for this task.
        while not self._stop.is_set():
            own: dict[str, Any] | None = None
            try:
                own = await self._send_heartbeat()
            except Exception:
                log.exception("heartbeat failed")
            try:
                await self._publish_map(ttl, own)
            except Exception:
                log.exception("network map not published")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the key, connect, serve HTTP, start heartbeats and services; return when running."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.key = await asyncio.to_thread(self._load_key)
        self.signer = EnvelopeSigner(self.key, self.config.network)
        self.auth = ApiAuth(self.config.network, self.key.address, self.home)
        await asyncio.to_thread(self.auth.load_token)
        self.verifier.own_address = self.key.address  # our own messages echoed back: dropped unchecked
        self._started_at = time.time()
        net = self.config.network
        if self._transport is None:
            username, password = self._broker_login()
            self._transport = MqttTransport(
                self.config.broker,
                client_id=broker_client_id(self.address),
                username=username,
                password=password,
            )
        self.transport.subscribe(all_broadcasts_pattern(net), self._on_raw)
        if self.oracle_mode and self.config.oracle:
            self.transport.subscribe(all_oracle_channels_pattern(net), self._on_raw)
        elif self.oracle_mode:
            self.map_follower = MapFollower(
                self.address, self.netmap, self.registered_oracles, self.config.heartbeat_interval
            )
        self.transport.subscribe(inbox_topic(net, self.address), self._on_raw)
        await self.transport.start()

        app = create_app(self)
        self.body_limits = BodyLimit(app, {})
        host = self.config.http_host
        try:
            # Bind here and hand the socket to uvicorn: port 0 then means "any free port" with no race.
            sock = _listen(host, self.config.http_port)
        except OSError as exc:
            raise NodeError(
                f"HTTP API cannot listen on {self.config.http}: {exc.strerror or exc}",
                hint="choose another --http HOST:PORT (port 0 picks a free one)",
            ) from None
        port = int(sock.getsockname()[1])
        self.url = self.config.public_url or f"http://{host}:{port}"
        # One client for every request services make to peers: pooled connections, closed on stop.
        self._http = peer_client(timeout=10.0, max_connections=256)
        for service in self.services:
            router = APIRouter()
            data_dir = self.home / "services" / service.name
            data_dir.mkdir(parents=True, exist_ok=True)
            ctx = ServiceContext(
                name=service.name,
                key=self.key,
                network=net,
                transport=self.transport,
                router=router,
                data_dir=data_dir,
                metrics=self.metrics,
                netmap=self.netmap,
                config=self.config,
                http=self._http,
                auth=self.auth,
                _publish=self.broadcast,
                _send=self.send,
                _on=self.on,
                _services=self.services,
                url=self.url,
                _body_limits=self.body_limits.limits,
            )
            self._contexts.append(ctx)
            await service.start(ctx)
            app.include_router(router)
        self.metrics.register(NodeCollector(self))

        config = uvicorn.Config(
            self.body_limits,
            ws=LazyWebSockets,
            log_level="warning",
            lifespan="off",
            http=bounded(self.http_limits),
            limit_concurrency=self.config.api.max_connections,
            timeout_keep_alive=self.config.api.keep_alive,
        )
        self._server = uvicorn.Server(config)
        # The node owns SIGINT/SIGTERM (it stops services first); uvicorn must not take them over.
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        serve = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        self._tasks.append(serve)
        while not self._server.started:
            if serve.done():
                failure = serve.exception()
                raise NodeError(f"HTTP API could not start on {host}:{port}: {failure or 'exited'}")
            await asyncio.sleep(0.02)
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        self._write_state("running")
        # Everything loaded so far (modules, app, services) lives as long as the process: keep it out of
        # the garbage collector's full passes, which otherwise stall message handling for tens of ms.
        gc.collect()
        gc.freeze()
        # Replicated state is many small long-lived objects: collect young objects less often and full
        # passes rarely (they scan everything), trading a little memory for steadier latency.
        gc.set_threshold(20_000, 20, 50)
        log.info(
            "node %s up: network %s, http %s, broker %s", self.address, net, self.url, self.config.broker
        )

    def _broker_login(self) -> tuple[str | None, str | None]:
        """Credentials a dAuth-gated broker checks (address + signature); the URL's own win if given."""
        if "@" in self.config.broker:
            return None, None
        return self.address, broker_password(self.key, self.config.network)

    def _write_state(self, status: str) -> None:
        state = {
            "address": self.address,
            "url": self.url,
            "network": self.config.network,
            "pid": os.getpid(),
            "status": status,
            "oracle": self.config.oracle,
            "started_at": self._started_at,
        }
        tmp = self.home / "node.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.home / "node.json")

    async def stop(self) -> None:
        """Stop services, heartbeats, HTTP and the broker connection; safe to call twice."""
        self._stop.set()
        # Last started, first stopped: a service's tasks end before it flushes, and it flushes before the
        # services it uses (started earlier) go away.
        for service, ctx in reversed(list(zip(self.services, self._contexts, strict=False))):
            await ctx.close()
            try:
                await service.stop()
            except Exception:
                log.exception("service %s failed to stop cleanly", service.name)
            await ctx.run_stop_callbacks()
        self._contexts.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        self._tasks.clear()
        if self._transport is not None:
            await self._transport.stop()
        if hasattr(self, "key"):
            self._write_state("stopped")

    async def run(self) -> None:
        """Start, then serve until SIGINT/SIGTERM, then stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            await self.start()
            await self._stop.wait()
            log.info("stopping node %s", self.address)
        finally:
            await self.stop()


def read_node_state(home: Path) -> dict[str, Any] | None:
    """The state file a node keeps in its home (address, url, pid, status)."""
    try:
        data: dict[str, Any] = json.loads((home / "node.json").read_text())
        return data
    except (OSError, ValueError):
        return None
