"""The CSTORE replica that runs inside every node: the shell around the pure parts.

Writes arrive signed (from this node, from SDK/CLI clients through the HTTP API, or from peers),
are checked (`_ops`), merged into the CRDT state (`_state`), made durable (`_log`) and sent to every
replica (`_fanout`); anti-entropy (`_sync`) brings back what a replica missed. The routes are in
`_api`. This module ties them together and owns what they share: the clock, the counts, the watchers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, cast, runtime_checkable

from fastapi import Request
from prometheus_client import Histogram

from r1os.cstore._api import add_routes
from r1os.cstore._fanout import MAX_PULLS, MSG_BATCH, Announced, Broadcaster, Payload, received_batches
from r1os.cstore._hlc import HybridClock, Timestamp
from r1os.cstore._log import BatchLog, read_log
from r1os.cstore._models import StatsAnswer
from r1os.cstore._ops import Batch, CStoreError, Limits, Op, OpKind, decode_batch, sign_batch
from r1os.cstore._peer import PeerClient, PeerRef
from r1os.cstore._quota import NamespaceQuota, new_entries
from r1os.cstore._state import CStoreState, EntryId
from r1os.cstore._sync import AntiEntropy, horizon
from r1os.errors import NodeError
from r1os.node import Service, ServiceContext
from r1os.wire import Envelope

log = logging.getLogger("r1os.cstore")

__all__ = ["MSG_BATCH", "CStoreService", "Watcher"]

MAINTENANCE_INTERVAL = 60.0
BROKER_WATCH_INTERVAL = (
    0.25  # seconds between looks at the broker connection (a reconnect means missed broadcasts)
)
REFUSAL_LOG_INTERVAL = 60.0  # one log line per cause and minute: a hostile peer cannot flood the log
Watcher = Callable[[str, str | None, Any], Awaitable[None] | None]


@runtime_checkable
class Admission(Protocol):
    """What CSTORE asks of the node's admission service (dAuth's `DauthService`): whether it is on, and
    whether an address is admitted (oracles included). Found by what it offers, not by name: dAuth
    imports CSTORE, so CSTORE cannot import dAuth."""

    enabled: bool

    def is_admitted(self, address: str) -> bool: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CStoreService(Service):
    name = "cstore"

    def __init__(
        self,
        *,
        limits: Limits = Limits(),
        sync_interval: float = 5.0,
        tombstone_ttl: float = 24 * 3600.0,
        max_keys_per_namespace: int = 100_000,
        fsync: bool = True,
        oracles: frozenset[str] = frozenset(),
    ) -> None:
        self.limits = limits
        self.sync_interval = sync_interval
        self.tombstone_ttl_ms = int(tombstone_ttl * 1000)
        self.fsync = fsync
        self.oracles = frozenset(a.lower() for a in oracles)
        self.state = CStoreState()
        self.clock = HybridClock()
        self.rejections: Counter[str] = Counter()
        self.applied_batches = 0
        self.lags: deque[tuple[int, int, str]] = deque(maxlen=10_000)  # (applied at ms, lag ms, batch id)
        self._quota = NamespaceQuota(max_keys_per_namespace)
        self._sync = AntiEntropy(self.state, self.receive, self.refused)
        self._fanout = Broadcaster(self._publish, self._spawn_sender)
        self._watchers: list[tuple[str, Watcher]] = []
        self._last_log: dict[str, float] = {}
        self._pulling: set[str] = set()  # ids of announced batches being pulled
        self._admission: Admission | None = None
        self._admission_found = False
        self._ctx: ServiceContext | None = None
        self._log: BatchLog | None = None
        self._peers: PeerClient | None = None
        self._lag_hist = Histogram(
            "r1os_cstore_replication_lag_seconds",
            "Time from a writer stamping a batch to this replica applying it (fast path)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=None,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        path = ctx.data_dir / "batches.log"
        loaded = 0
        for raw in read_log(path):
            try:
                batch = decode_batch(raw, limits=self.limits, now_ms=2**62, oracles=self.oracles)
            except CStoreError as exc:
                log.error("cstore log record refused on load: %s", exc)
                continue
            # What this replica accepted before counts again, over the cap or not.
            self._apply(batch, new_entries(batch, self.state.strings, self.state.hashes))
            loaded += 1
        self._log = BatchLog(path, fsync=self.fsync)
        # After the tasks that append to it have ended (the node cancels them before stop callbacks).
        ctx.on_stop(self._log.close)
        if loaded:
            log.info("cstore: loaded %d batches, %d entries from %s", loaded, len(self.state), path)
        self._fanout.url = ctx.url
        self._peers = PeerClient(ctx.http, ctx.key, ctx.network)
        ctx.on(MSG_BATCH, self._on_batch_message)
        ctx.metrics.register(self._lag_hist)
        for route, cap in add_routes(ctx.router, self).items():
            # Each route caps its body itself as it reads it (`_api.read_body`: counted, with its own
            # message); the node's cap, a little higher, also holds for whoever reads it first (a
            # signed request's body is read to check its hash before the route runs).
            ctx.allow_body(route, cap + 256 * 1024)
        ctx.spawn(self._sync.run(self.sync_interval, self._sync_peers, self._peers), "sync")
        self._sync.nudge()  # what was written while this replica was down: as soon as it knows a peer
        ctx.spawn(self._watch_broker(), "broker-watch")
        ctx.spawn(self._maintenance_loop(), "maintenance")

    async def _watch_broker(self) -> None:
        """Back on the broker (a reconnect, or admitted by dAuth at last): the broadcasts sent meanwhile
        never came, so a round at once rather than at the next interval."""
        was = self.ctx.transport.connected
        while True:
            await asyncio.sleep(BROKER_WATCH_INTERVAL)
            now = self.ctx.transport.connected
            if now and not was:
                log.info("cstore: back on the broker: a sync round now")
                self._sync.nudge()
            was = now

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise NodeError("the cstore service is not started", hint="add it to a node and start the node")
        return self._ctx

    @property
    def log(self) -> BatchLog:
        """The log of this replica's batches (opened by `start`)."""
        if self._log is None:
            raise NodeError("the cstore service is not started", hint="add it to a node and start the node")
        return self._log

    # -- in-process API ----------------------------------------------------------------------

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self.write([self._op("set", key, None, value, ttl)])

    async def get(self, key: str) -> Any | None:
        return self.state.get(key, _now_ms())

    async def exists(self, key: str) -> bool:
        """True if `key` has a live value (which may be null)."""
        return self.state.exists(key, _now_ms())

    async def delete(self, key: str) -> bool:
        existed = self.state.exists(key, _now_ms())
        await self.write([Op("del", key)])
        return existed

    async def keys(self, prefix: str = "") -> list[str]:
        return self.state.keys(prefix, _now_ms())

    async def keys_page(self, prefix: str = "", after: str = "", limit: int = 1000) -> tuple[list[str], bool]:
        """A page of `keys`: at most `limit` keys sorting after `after`, and whether more follow."""
        return self.state.keys_page(prefix, after, limit, _now_ms())

    async def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None:
        await self.write([self._op("hset", key, field, value, ttl)])

    async def hget(self, key: str, field: str) -> Any | None:
        return self.state.hget(key, field, _now_ms())

    async def hgetall(self, key: str) -> dict[str, Any]:
        return self.state.hgetall(key, _now_ms())

    async def hdel(self, key: str, field: str) -> bool:
        existed = self.state.hget(key, field, _now_ms()) is not None
        await self.write([Op("hdel", key, field)])
        return existed

    async def wait(self, key: str, field: str | None = None, timeout: float = 10.0) -> Any:
        """The value of `key` (or of its hash `field`) once it has a live one; `CStoreError` with
        cause `timeout` after `timeout` seconds (at most 60)."""

        def value() -> Any:
            now = _now_ms()
            return self.state.get(key, now) if field is None else self.state.hget(key, field, now)

        found = value()
        if found is not None:
            return found
        event = asyncio.Event()

        def wake(k: str, f: str | None, v: Any) -> None:
            if k == key and (field is None or f == field) and v is not None:
                event.set()

        self.watch(key, wake)
        try:
            # Not wait_for: on Python 3.11 it can swallow a cancellation that comes as the event is set.
            async with asyncio.timeout(min(max(timeout, 0.0), 60.0)):
                await event.wait()
        except TimeoutError:
            raise CStoreError("timeout", f"{key!r} got no value within {timeout:g} s") from None
        finally:
            self.unwatch(wake)
        return value()

    def watch(self, prefix: str, callback: Watcher) -> None:
        """Call `callback(key, field, value)` after any change under `prefix` (value None = deleted)."""
        self._watchers.append((prefix, callback))

    def unwatch(self, callback: Watcher) -> None:
        self._watchers = [(p, cb) for p, cb in self._watchers if cb is not callback]

    def _op(self, kind: OpKind, key: str, field: str | None, value: Any, ttl: float | None) -> Op:
        return Op(kind, key, field, value, self.expires_ms(ttl))

    def expires_ms(self, ttl: Any, now_ms: int | None = None) -> int | None:
        """The absolute expiry of a write with `ttl` seconds (None: never); `CStoreError` for a TTL that
        is not a finite number (`malformed`) or longer than `limits.max_ttl_ms` (`too_large`)."""
        if ttl is None:
            return None
        if type(ttl) not in (int, float) or not math.isfinite(ttl):
            raise CStoreError("malformed", "ttl must be a finite number of seconds")
        if ttl * 1000 > self.limits.max_ttl_ms:
            raise CStoreError("too_large", f"ttl is longer than {self.limits.max_ttl_ms // 1000} s")
        return (_now_ms() if now_ms is None else now_ms) + max(1, int(ttl * 1000))

    async def write(self, ops: list[Op]) -> Batch:
        """Sign `ops` as this node, then submit them like any client batch."""
        if not 1 <= len(ops) <= self.limits.max_ops_per_batch:
            raise CStoreError("too_large", f"a batch holds 1 to {self.limits.max_ops_per_batch} ops")
        ts = self.clock.reserve(len(ops))
        return await self.submit(sign_batch(self.ctx.key, ops, ts.wall_ms, ts.counter))

    # -- the write path ----------------------------------------------------------------------

    async def submit(self, raw: bytes) -> Batch:
        """Check, merge, persist (fsync) and broadcast a signed batch; returns once it is durable."""
        (result,) = await self.submit_many([raw])
        if isinstance(result, CStoreError):
            raise result
        return result

    async def submit_many(self, raws: list[bytes]) -> list[Batch | CStoreError]:
        """`submit` for several signed batches at once, in order; each is checked on its own and
        either accepted or refused (its error in its place). Returns once the accepted ones are
        durable: they share one fsync and travel to the replicas in one message."""
        results: list[Batch | CStoreError] = []
        fresh: list[Batch] = []
        for raw in raws:
            try:
                batch = decode_batch(raw, limits=self.limits, now_ms=_now_ms(), oracles=self.oracles)
                # Where a write enters the network its namespace's cap holds exactly.
                created = self._quota.check(batch, self.state.strings, self.state.hashes)
            except CStoreError as exc:
                self.refused(exc)
                results.append(exc)
                continue
            if self._apply(batch, created):
                fresh.append(batch)
            results.append(batch)
        if fresh:
            # Replicas get the batches while our own fsync runs; the caller is answered only once
            # they are durable here, so an acknowledged write survives a crash of this node right after.
            log_ = self.log
            sent = asyncio.gather(*(self._fanout.send(b) for b in fresh))
            try:
                await asyncio.gather(*(log_.append(b.raw) for b in fresh))
            finally:
                await sent
            self._settle()
        return results

    def _settle(self) -> None:
        """Merge what has settled after every write (cheap: whole milliseconds at a time), so a peer
        asking for digests never finds a backlog."""
        self.state.settle(horizon(_now_ms()))

    def _apply(self, batch: Batch, fresh: Counter[str]) -> list[EntryId]:
        """Merge a checked batch; `fresh` are the entries it creates per namespace (from the quota)."""
        changed = self.state.apply(batch)
        self.clock.observe(Timestamp(batch.wall_ms, batch.counter + len(batch.ops) - 1))
        if fresh:
            self._quota.add(fresh)
        if changed:
            self.applied_batches += 1
            if self._watchers:
                self._notify(changed)
        return changed

    def _notify(self, changed: list[EntryId]) -> None:
        now = _now_ms()
        prefixes = tuple(p for p, _ in self._watchers)
        for key, field in changed:
            if not key.startswith(prefixes):
                continue
            value = self.state.get(key, now) if field is None else self.state.hget(key, field, now)
            for prefix, cb in self._watchers:
                if key.startswith(prefix):
                    try:
                        result = cb(key, field, value)
                        if asyncio.iscoroutine(result):
                            self.ctx.spawn(result, f"watcher {prefix}")
                    except Exception:
                        log.exception("cstore watcher for %r failed", prefix)

    async def _publish(self, payload: Payload) -> None:
        await self.ctx.broadcast(MSG_BATCH, payload)

    def _spawn_sender(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[Any]:
        return self.ctx.spawn(coro, "broadcast")

    # -- from peers --------------------------------------------------------------------------

    async def _on_batch_message(self, env: Envelope) -> None:
        try:
            raws = received_batches(env.payload)
        except CStoreError as exc:
            self.refused(exc, sender=env.sender)
            return
        if isinstance(raws, Announced):
            self._pull_announced(raws, env.sender)
            return
        for raw in raws:
            try:
                if isinstance(raw, str):
                    raw = raw.encode()
                elif not isinstance(raw, bytes):
                    raise CStoreError("malformed", "a broadcast batch is not a string")
                self.receive(raw, broadcast=True)
            except CStoreError as exc:
                self.refused(exc, sender=env.sender)

    def _pull_announced(self, announced: Announced, sender: str) -> None:
        """Pull a batch announced by `sender` in the background (the message handler does not wait on a
        peer), at most `MAX_PULLS` at a time; one already here or on its way is not pulled again."""
        if announced.id in self._pulling or self.state.batches_by_id(announced.id):
            return
        if len(self._pulling) >= MAX_PULLS:
            self.refused(
                CStoreError(
                    "busy", f"{MAX_PULLS} announced batches are being pulled; anti-entropy brings this one"
                ),
                sender=sender,
            )
            return
        self._pulling.add(announced.id)
        self.ctx.spawn(self._pull(announced, sender), "pull")

    async def _pull(self, announced: Announced, sender: str) -> None:
        try:
            path = f"/v1/cstore/batch/{announced.id}"
            peer = PeerRef(sender, announced.url)
            raw = await self.peers.request(peer, "GET", path, b"", limit=self.limits.max_batch_bytes)
            if hashlib.sha256(raw).hexdigest() != announced.id:
                raise CStoreError(
                    "malformed", f"{announced.url} served another batch than {announced.id[:12]}"
                )
            self.receive(raw, broadcast=True)
        except CStoreError as exc:
            self.refused(exc, sender=sender)
        finally:
            self._pulling.discard(announced.id)

    def receive(self, raw: bytes, *, broadcast: bool = False) -> list[EntryId]:
        """Merge a batch from a peer (`CStoreError` if refused, the namespace quota included, with a
        replica's slack); persisted by the next group commit. Returns the entries it changed."""
        now = _now_ms()
        batch = decode_batch(raw, limits=self.limits, now_ms=now, oracles=self.oracles)
        fresh = self._quota.check(batch, self.state.strings, self.state.hashes, replica=True)
        if broadcast:
            self._sync.last_fast_path = time.monotonic()
            # Replication lag: from the writer stamping the batch to it being readable here.
            lag = now - batch.wall_ms
            if 0 <= lag < 60_000:
                self.lags.append((now, lag, batch.id))
                self._lag_hist.observe(lag / 1000)
        changed = self._apply(batch, fresh)
        if changed:
            self.log.append_nowait(batch.raw)
            self._settle()
        return changed

    def refused(self, exc: CStoreError, sender: str | None = None) -> None:
        """Count a refused batch or request under its cause (`stats()["rejected"]`); logged once a
        minute per cause."""
        self.rejections[exc.cause] += 1
        now = time.monotonic()
        if now - self._last_log.get(exc.cause, -1e9) >= REFUSAL_LOG_INTERVAL:
            self._last_log[exc.cause] = now
            log.warning(
                "cstore refused a batch or request%s: %s (%s)",
                f" from {sender}" if sender else "",
                exc.cause,
                exc,
            )

    # -- anti-entropy ------------------------------------------------------------------------

    def _sync_peers(self) -> list[PeerRef]:
        return [
            PeerRef(p.address, p.heartbeat.url.rstrip("/")) for p in self.ctx.netmap.online()
            if p.heartbeat.url and "cstore" in p.heartbeat.services
        ]  # fmt: skip

    @property
    def peers(self) -> PeerClient:
        """Signed, capped requests to other replicas (made by `start`)."""
        if self._peers is None:
            raise NodeError("the cstore service is not started", hint="add it to a node and start the node")
        return self._peers

    async def sync_with(self, peer: PeerRef) -> tuple[int, int]:
        """One anti-entropy round with `peer`; returns (batches pulled, batches pushed)."""
        return await self._sync.round(self.peers, peer)

    # -- who may take part in replication ----------------------------------------------------

    def admission(self) -> Admission | None:
        """The node's admission service (dAuth), if it runs one."""
        if not self._admission_found:
            found: object = self.ctx.find(cast("type[Service]", Admission))
            self._admission = found if isinstance(found, Admission) else None
            self._admission_found = True
        return self._admission

    async def require_peer(self, request: Request) -> None:
        """Let `request` into a route between replicas (anti-entropy, batch pulls). With dAuth on, only
        this node's operator, this node, an oracle or an admitted node, by a signed request (401
        `unauthenticated` without one, 403 `not_admitted` for anyone else); on an open network anyone."""
        gate = self.admission()
        if gate is None or not gate.enabled:
            return
        caller = await self.ctx.auth.require(request)
        address = (caller.address or "").lower()
        if caller.local or address == self.ctx.address.lower() or address in self.oracles:
            return
        if not gate.is_admitted(address):
            exc = CStoreError(
                "not_admitted",
                f"{caller.address} is not admitted to this network: replication routes are for its nodes",
                hint="a node takes part once dAuth admits it (a linked licence)",
            )
            self.refused(exc)
            raise exc

    def answer_sync(self, digests_b64: str, horizon: int | None = None) -> dict[str, Any]:
        """Answer a peer's anti-entropy round (`/v1/cstore/sync`)."""
        return self._sync.answer(digests_b64, horizon)

    @property
    def syncs(self) -> int:
        """Anti-entropy rounds this replica started and finished."""
        return self._sync.rounds

    @property
    def sync_batches(self) -> Counter[str]:
        """Batches anti-entropy pulled, pushed and answered."""
        return self._sync.batches

    # -- maintenance -------------------------------------------------------------------------

    @property
    def max_keys_per_namespace(self) -> int:
        return self._quota.limit

    @max_keys_per_namespace.setter
    def max_keys_per_namespace(self, limit: int) -> None:
        self._quota.limit = limit

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                await self.maintain()
            except Exception:
                log.exception("cstore maintenance failed")

    async def maintain(self) -> None:
        """Forget old tombstones and compact the log when most of it is dead weight."""
        removed = self.state.gc(_now_ms() - self.tombstone_ttl_ms)
        if removed:
            self._quota.recount(self.state.strings, self.state.hashes)
        # Count what has settled even when no peer asks (a lone node), so pending entries stay few.
        self._settle()
        live = self.state.live_batches()
        live_size = sum(len(b) + 8 for b in live)
        if self.log.size > max(2 * live_size, 1 << 20):
            await self.log.drain()
            # Taken again after the wait: batches appended meanwhile must be in the new log too.
            live = self.state.live_batches()
            self.log.rewrite(live)
            log.info("cstore: compacted log to %d batches (%d bytes)", len(live), self.log.size)

    # -- what the routes show ----------------------------------------------------------------

    @property
    def hlc(self) -> Timestamp:
        """The newest stamp this replica's clock has issued or seen."""
        return self.clock.last

    def batch(self, batch_id: str) -> bytes | None:
        """The signed batch `batch_id`, if it still holds a winning op here."""
        for raw in self.state.batches_by_id(batch_id):
            return raw
        return None

    def lag_samples(self, since_ms: int = 0) -> list[tuple[int, str]]:
        """(lag ms, batch id) of batches applied from broadcasts since `since_ms` (wall time)."""
        return [(lag, batch_id) for at, lag, batch_id in self.lags if at >= since_ms]

    def stats(self) -> StatsAnswer:
        return StatsAnswer(
            digest=self.state.digest(),
            entries=len(self.state),
            batches=len(self.state.live_batches()),
            applied_batches=self.applied_batches,
            syncs=self.syncs,
            sync_batches=dict(self.sync_batches),
            rejected=dict(self.rejections),
            log_bytes=self.log.size,
            hlc=list(self.clock.last),
        )
