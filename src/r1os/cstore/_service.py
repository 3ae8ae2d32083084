"""The CSTORE replica that runs inside every node: the shell around the pure parts.

Writes arrive signed (from this node, from SDK/CLI clients through the HTTP API, or from peers),
are checked (`_ops`), merged into the CRDT state (`_state`), made durable (`_log`) and sent to every
replica (`_fanout`); anti-entropy (`_sync`) brings back what a replica missed. The routes are in
`_api`. This module ties them together and owns what they share: the clock, the counts, the watchers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import Histogram

from r1os.cstore._api import add_routes
from r1os.cstore._fanout import MSG_BATCH, Broadcaster, Payload, received_batches
from r1os.cstore._hlc import HybridClock, Timestamp
from r1os.cstore._log import BatchLog, read_log
from r1os.cstore._models import StatsAnswer
from r1os.cstore._ops import Batch, CStoreError, Limits, Op, OpKind, decode_batch, sign_batch
from r1os.cstore._quota import NamespaceQuota
from r1os.cstore._state import CStoreState, EntryId
from r1os.cstore._sync import AntiEntropy, horizon
from r1os.errors import NodeError
from r1os.node import Service, ServiceContext
from r1os.wire import Envelope

log = logging.getLogger("r1os.cstore")

__all__ = ["MSG_BATCH", "CStoreService", "Watcher"]

MAINTENANCE_INTERVAL = 60.0
REFUSAL_LOG_INTERVAL = 60.0  # one log line per cause and minute: a hostile peer cannot flood the log
Watcher = Callable[[str, str | None, Any], Awaitable[None] | None]


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
        self._ctx: ServiceContext | None = None
        self._log: BatchLog | None = None
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
            self._apply(batch)
            loaded += 1
        self._log = BatchLog(path, fsync=self.fsync)
        # After the tasks that append to it have ended (the node cancels them before stop callbacks).
        ctx.on_stop(self._log.close)
        if loaded:
            log.info("cstore: loaded %d batches, %d entries from %s", loaded, len(self.state), path)
        self._fanout.url = ctx.url
        ctx.on(MSG_BATCH, self._on_batch_message)
        ctx.metrics.register(self._lag_hist)
        add_routes(ctx.router, self)
        for route in ("/v1/cstore/batch", "/v1/cstore/push", "/v1/cstore/sync", "/v1/cstore/write"):
            ctx.allow_body(route, None)  # each caps its body itself as it reads it (`_api.read_body`)
        ctx.spawn(self._sync.run(self.sync_interval, self._sync_peers, ctx.http), "sync")
        ctx.spawn(self._maintenance_loop(), "maintenance")

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
        expires = None if ttl is None else _now_ms() + max(1, int(ttl * 1000))
        return Op(kind, key, field, value, expires)

    async def write(self, ops: list[Op]) -> Batch:
        """Sign `ops` as this node, then submit them like any client batch."""
        ts = self.clock.reserve(len(ops))
        return await self.submit(sign_batch(self.ctx.key, ops, ts.wall_ms, ts.counter), new_keys_limited=True)

    # -- the write path ----------------------------------------------------------------------

    async def submit(self, raw: bytes, *, new_keys_limited: bool = True) -> Batch:
        """Check, merge, persist (fsync) and broadcast a signed batch; returns once it is durable."""
        (result,) = await self.submit_many([raw], new_keys_limited=new_keys_limited)
        if isinstance(result, CStoreError):
            raise result
        return result

    async def submit_many(
        self, raws: list[bytes], *, new_keys_limited: bool = True
    ) -> list[Batch | CStoreError]:
        """`submit` for several signed batches at once, in order; each is checked on its own and
        either accepted or refused (its error in its place). Returns once the accepted ones are
        durable: they share one fsync and travel to the replicas in one message."""
        results: list[Batch | CStoreError] = []
        fresh: list[Batch] = []
        for raw in raws:
            try:
                batch = decode_batch(raw, limits=self.limits, now_ms=_now_ms(), oracles=self.oracles)
                if new_keys_limited:
                    self._quota.check(batch, self.state.strings, self.state.hashes)
            except CStoreError as exc:
                self.refused(exc)
                results.append(exc)
                continue
            if self._apply(batch):
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

    def _apply(self, batch: Batch) -> list[EntryId]:
        changed = self.state.apply(batch)
        self.clock.observe(Timestamp(batch.wall_ms, batch.counter + len(batch.ops) - 1))
        if changed:
            self.applied_batches += 1
            if self.state.new_keys:
                self._quota.add(self.state.new_keys, batch.writer)
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
            raws = await received_batches(env.payload, self.ctx.http)
        except CStoreError as exc:
            self.refused(exc, sender=env.sender)
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

    def receive(self, raw: bytes, *, broadcast: bool = False) -> list[EntryId]:
        """Merge a batch from a peer (`CStoreError` if refused); persisted by the next group commit.
        Returns the entries it changed."""
        now = _now_ms()
        batch = decode_batch(raw, limits=self.limits, now_ms=now, oracles=self.oracles)
        if broadcast:
            self._sync.last_fast_path = time.monotonic()
            # Replication lag: from the writer stamping the batch to it being readable here.
            lag = now - batch.wall_ms
            if 0 <= lag < 60_000:
                self.lags.append((now, lag, batch.id))
                self._lag_hist.observe(lag / 1000)
        changed = self._apply(batch)
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
                "cstore refused a batch%s: %s (%s)", f" from {sender}" if sender else "", exc.cause, exc
            )

    # -- anti-entropy ------------------------------------------------------------------------

    def _sync_peers(self) -> list[str]:
        return [
            p.heartbeat.url for p in self.ctx.netmap.online()
            if p.heartbeat.url and "cstore" in p.heartbeat.services
        ]  # fmt: skip

    async def sync_with(self, url: str) -> tuple[int, int]:
        """One anti-entropy round with the node at `url`; returns (batches pulled, batches pushed)."""
        return await self._sync.round(self.ctx.http, url)

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
            self._quota.recount(set(self.state.strings) | set(self.state.hashes))
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
