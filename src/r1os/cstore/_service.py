"""The CSTORE replica that runs inside every node.

Writes arrive signed (from this node, from SDK/CLI clients through the HTTP API, or from peers),
are checked, merged into the CRDT state, made durable, and broadcast. A background anti-entropy
loop compares bucket digests with a random online peer over HTTP and swaps the batches that differ,
so replicas that missed broadcasts (down, partitioned, new) converge without replaying history.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection
from itertools import repeat
from typing import Any

import httpx
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Histogram

from r1os.cstore._hlc import HybridClock, Timestamp
from r1os.cstore._log import BatchLog, read_log
from r1os.cstore._ops import Batch, CStoreError, Limits, Op, decode_batch, sign_batch
from r1os.cstore._state import BUCKETS, CStoreState, EntryId
from r1os.node import Service, ServiceContext, cancel_tasks
from r1os.wire import Envelope

log = logging.getLogger("r1os.cstore")

MSG_BATCH = "cstore.batch"
INLINE_LIMIT = 256 * 1024  # larger batches are announced and pulled over HTTP
MAX_SYNC_BATCHES = 1_000  # per anti-entropy answer
MAX_BATCHES_PER_REQUEST = 1_000  # POST /v1/cstore/batches
SETTLE_MS = 1_000
HORIZON_STEP_MS = 1_000  # how long a write is left to the fast path before anti-entropy compares it
Watcher = Callable[[str, str | None, Any], Awaitable[None] | None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _namespace(key: str) -> str | None:
    """The owned namespace a key counts against (`node:<addr>` / `app:<addr>`), if any."""
    ns, _, rest = key.partition(":")
    if ns in ("node", "app"):
        return f"{ns}:{rest.partition(':')[0].lower()}"
    return None


def _count_namespaces(keys: Collection[str], writer: str | None = None) -> Counter[str]:
    """How many of `keys` fall in each owned namespace.

    Keys of one writer are nearly always in its own `app:`/`node:` namespace: those are counted with
    one C-level pass per prefix. The rest are tallied per `ns:owner` prefix, whose namespace is then
    worked out once."""
    counts: Counter[str] = Counter()
    rest: Collection[str] = keys
    if writer is not None:
        w = writer.lower()
        own = (f"app:{w}:", f"node:{w}:")
        for prefix in own:
            n = sum(map(str.startswith, keys, repeat(prefix)))
            if n:
                counts[prefix[:-1]] += n
        if sum(counts.values()) == len(keys):
            return counts
        rest = [k for k in keys if not k.startswith(own)]
    by_prefix: dict[str, int] = {}
    get = by_prefix.get
    for key in rest:
        cut = key.find(":", key.find(":") + 1)
        prefix = key if cut < 0 else key[:cut]
        by_prefix[prefix] = get(prefix, 0) + 1
    for prefix, n in by_prefix.items():
        ns = _namespace(prefix)  # only the first two parts of a key matter
        if ns is not None:
            counts[ns] += n
    return counts


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
        self.max_keys_per_namespace = max_keys_per_namespace
        self.fsync = fsync
        self.oracles = frozenset(a.lower() for a in oracles)
        self.state = CStoreState()
        self.clock = HybridClock()
        self.rejections: Counter[str] = Counter()
        self.applied_batches = 0
        self.syncs = 0
        self.sync_batches: Counter[str] = Counter()  # batches anti-entropy pulled / pushed / answered
        self._ns_count: Counter[str] = Counter()  # keys (live or tombstoned) per owned namespace
        self._watchers: list[tuple[str, Watcher]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._last_log: dict[str, float] = {}
        self._last_broadcast_applied = 0.0
        self._outgoing: list[tuple[Batch, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.lags: deque[tuple[int, int, str]] = deque(maxlen=10_000)  # (applied at ms, lag ms, batch id)
        self._lag_hist = Histogram(
            "r1os_cstore_replication_lag_seconds",
            "Time from a writer stamping a batch to this replica applying it (fast path)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=None,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.key = ctx.key
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
        self.log = BatchLog(path, fsync=self.fsync)
        if loaded:
            log.info("cstore: loaded %d batches, %d entries from %s", loaded, len(self.state), path)
        ctx.on(MSG_BATCH, self._on_batch_message)
        ctx.metrics.register(self._lag_hist)
        self._http = httpx.AsyncClient(timeout=10)
        _routes(ctx.router, self)
        for route in ("/v1/cstore/batch", "/v1/cstore/push", "/v1/cstore/sync", "/v1/cstore/write"):
            ctx.allow_body(route, None)  # each caps its body itself as it reads (`_body`)
        self._tasks.append(asyncio.create_task(self._anti_entropy_loop(), name="cstore-sync"))
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="cstore-gc"))

    async def stop(self) -> None:
        await cancel_tasks(self._tasks + ([self._sender] if self._sender is not None else []))
        if self._http is not None:
            await self._http.aclose()
        if hasattr(self, "log"):
            await self.log.close()

    # -- in-process API ----------------------------------------------------------------------

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self.write([self._op("set", key, None, value, ttl)])

    async def get(self, key: str) -> Any | None:
        return self.state.get(key, _now_ms())

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

    def watch(self, prefix: str, callback: Watcher) -> None:
        """Call `callback(key, field, value)` after any change under `prefix` (value None = deleted)."""
        self._watchers.append((prefix, callback))

    def unwatch(self, callback: Watcher) -> None:
        self._watchers = [(p, cb) for p, cb in self._watchers if cb is not callback]

    def _op(self, kind: str, key: str, field: str | None, value: Any, ttl: float | None) -> Op:
        expires = None if ttl is None else _now_ms() + max(1, int(ttl * 1000))
        return Op(kind, key, field, value, expires)  # type: ignore[arg-type]

    async def write(self, ops: list[Op]) -> Batch:
        """Sign `ops` as this node, then submit them like any client batch."""
        ts = self.clock.reserve(len(ops))
        return await self.submit(sign_batch(self.key, ops, ts.wall_ms, ts.counter), new_keys_limited=True)

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
                    self._check_namespace_quota(batch)
            except CStoreError as exc:
                self._reject(exc)
                results.append(exc)
                continue
            if self._apply(batch):
                fresh.append(batch)
            results.append(batch)
        if fresh:
            # Replicas get the batches while our own fsync runs; the caller is answered only once
            # they are durable here, so an acknowledged write survives a crash of this node right after.
            sent = asyncio.gather(*(self._broadcast(b) for b in fresh))
            try:
                await asyncio.gather(*(self.log.append(b.raw) for b in fresh))
            finally:
                await sent
            self._settle()
        return results

    def _settle(self) -> None:
        """Merge what has settled after every write (cheap: whole milliseconds at a time), so a peer
        asking for digests never finds a backlog."""
        self.state.settle(self._horizon())

    def _check_namespace_quota(self, batch: Batch) -> None:
        strings, hashes = self.state.strings, self.state.hashes
        new_keys = {
            op[1]
            for op in batch.ops
            if (op[0] == "set" or op[0] == "hset") and op[1] not in strings and op[1] not in hashes
        }
        for ns, n in _count_namespaces(new_keys, batch.writer).items():
            if self._ns_count[ns] + n > self.max_keys_per_namespace:
                raise CStoreError(
                    "quota", f"namespace {ns} would exceed {self.max_keys_per_namespace} keys",
                    hint="delete keys you no longer need",
                )  # fmt: skip

    def _apply(self, batch: Batch) -> list[EntryId]:
        changed = self.state.apply(batch)
        self.clock.observe(Timestamp(batch.wall_ms, batch.counter + len(batch.ops) - 1))
        if changed:
            self.applied_batches += 1
            if self.state.new_keys:
                self._ns_count.update(_count_namespaces(self.state.new_keys, batch.writer))
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
                            asyncio.ensure_future(result)
                    except Exception:
                        log.exception("cstore watcher for %r failed", prefix)

    async def _broadcast(self, batch: Batch) -> None:
        """Send `batch` to every replica; returns once it is handed to the broker.

        Batches accepted while an earlier broadcast is still on its way travel together in the next
        message (`{"batches": [...]}`), so concurrent writers share one envelope signature, one
        broker message and, on every replica, one envelope check. Each batch keeps its own signature
        and every replica still checks each one."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outgoing.append((batch, fut))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_outgoing(), name="cstore-broadcast")
        await fut

    async def _send_outgoing(self) -> None:
        group: list[tuple[Batch, asyncio.Future[None]]] = []
        try:
            while self._outgoing:
                group, self._outgoing = self._outgoing, []
                for payload, members in _broadcast_payloads(group, self.ctx.url):
                    try:
                        await self.ctx.broadcast(MSG_BATCH, payload)
                    except Exception as exc:
                        for fut in members:
                            if not fut.done():
                                fut.set_exception(exc)
                    else:
                        for fut in members:
                            if not fut.done():
                                fut.set_result(None)
        finally:
            # Stopped midway (the node is shutting down): whoever waits is not left hanging.
            for _, fut in group + self._outgoing:
                if not fut.done():
                    fut.cancel()
            self._outgoing = []

    async def _on_batch_message(self, env: Envelope) -> None:
        payload = env.payload
        try:
            batches = payload.get("batches")
            if isinstance(batches, list):
                raws = batches
            elif isinstance(payload.get("batch"), str):
                raws = [payload["batch"]]
            elif isinstance(payload.get("id"), str) and isinstance(payload.get("url"), str):
                raws = [await self._pull_one(payload["url"], payload["id"])]
            else:
                raise CStoreError("malformed", "cstore.batch message without a batch")
        except CStoreError as exc:
            self._reject(exc, sender=env.sender)
            return
        for raw in raws:
            try:
                if isinstance(raw, str):
                    raw = raw.encode()
                elif not isinstance(raw, bytes):
                    raise CStoreError("malformed", "a broadcast batch is not a string")
                self.receive(raw, broadcast=True)
            except CStoreError as exc:
                self._reject(exc, sender=env.sender)

    def receive(self, raw: bytes, *, broadcast: bool = False) -> list[EntryId]:
        """Merge a batch from a peer; persisted by the next group commit."""
        now = _now_ms()
        batch = decode_batch(raw, limits=self.limits, now_ms=now, oracles=self.oracles)
        if broadcast:
            self._last_broadcast_applied = time.monotonic()
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

    async def _pull_one(self, url: str, batch_id: str) -> bytes:
        assert self._http is not None
        try:
            r = await self._http.get(f"{url}/v1/cstore/batch/{batch_id}")
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise CStoreError("unreachable", f"cannot pull batch {batch_id[:12]} from {url}: {exc}") from None
        return r.content

    def _reject(self, exc: CStoreError, sender: str | None = None) -> None:
        self.rejections[exc.cause] += 1
        now = time.monotonic()
        if now - self._last_log.get(exc.cause, -1e9) >= 60:
            self._last_log[exc.cause] = now
            log.warning(
                "cstore refused a batch%s: %s (%s)", f" from {sender}" if sender else "", exc.cause, exc
            )

    # -- anti-entropy ------------------------------------------------------------------------

    async def _anti_entropy_loop(self) -> None:
        deferred = 0
        while True:
            await asyncio.sleep(self.sync_interval * random.uniform(0.8, 1.2))
            # While broadcasts keep arriving the fast path is doing the work; a round now would mostly
            # ship batches already queued for us. Defer, but never more than a few rounds in a row.
            if time.monotonic() - self._last_broadcast_applied < self.sync_interval / 2 and deferred < 3:
                deferred += 1
                continue
            deferred = 0
            peers = [
                p for p in self.ctx.netmap.online()
                if p.heartbeat.url and "cstore" in p.heartbeat.services
            ]  # fmt: skip
            if not peers:
                continue
            peer = random.choice(peers)
            try:
                await self.sync_with(peer.heartbeat.url)  # type: ignore[arg-type]
            except Exception as exc:
                log.debug("anti-entropy with %s failed: %s", peer.address, exc)

    async def sync_with(self, url: str) -> tuple[int, int]:
        """One anti-entropy round with the node at `url`; returns (batches pulled, batches pushed)."""
        assert self._http is not None
        horizon = self._horizon()
        digests = base64.b64encode(self.state.bucket_digests(horizon)).decode()
        r = await self._http.post(f"{url}/v1/cstore/sync", json={"digests": digests, "horizon": horizon})
        r.raise_for_status()
        answer = r.json()
        pulled = 0
        for raw in answer.get("batches", []):
            try:
                if self.receive(raw.encode()):
                    pulled += 1
            except CStoreError as exc:
                self._reject(exc, sender=url)
        want = [b for b in answer.get("want", []) if isinstance(b, int) and 0 <= b < BUCKETS]
        pushed = 0
        if want:
            mine = self.state.batches_in(want)[:MAX_SYNC_BATCHES]
            if mine:
                body = orjson.dumps({"batches": [b.decode() for b in mine]})
                r = await self._http.post(
                    f"{url}/v1/cstore/push", content=body, headers={"content-type": "application/json"}
                )
                r.raise_for_status()
                pushed = len(mine)
        self.syncs += 1
        self.sync_batches.update(pulled=pulled, pushed=pushed)
        return pulled, pushed

    def answer_sync(self, digests_b64: str, horizon: int | None = None) -> dict[str, Any]:
        mine = self._horizon()
        if horizon is not None and horizon != mine:
            # The two sides would compare different sets of entries and see differences that are only
            # writes still in flight. Skip this round; with whole-second horizons this is rare.
            return {"batches": [], "want": [], "horizon": mine}
        try:
            remote = base64.b64decode(digests_b64, validate=True)
            diff = self.state.differing_buckets(remote, mine)
        except (ValueError, TypeError) as exc:
            raise CStoreError("malformed", f"bad digests: {exc}") from None
        # Bounded answers keep one round from stalling the node; the rest comes next round.
        batches = self.state.batches_in(diff)[:MAX_SYNC_BATCHES]
        self.sync_batches["answered"] += len(batches)
        return {"batches": [b.decode() for b in batches], "want": diff}

    def _horizon(self) -> int:
        """Entries younger than this are still on the fast path: anti-entropy leaves them alone.
        Whole steps, so two replicas comparing at nearly the same moment use the same horizon."""
        return (_now_ms() - SETTLE_MS) // HORIZON_STEP_MS * HORIZON_STEP_MS

    # -- maintenance -------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                await self.maintain()
            except Exception:
                log.exception("cstore maintenance failed")

    async def maintain(self) -> None:
        """Forget old tombstones and compact the log when most of it is dead weight."""
        removed = self.state.gc(_now_ms() - self.tombstone_ttl_ms)
        if removed:
            self._ns_count = _count_namespaces(set(self.state.strings) | set(self.state.hashes))
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

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self.state),
            "batches": len(self.state.live_batches()),
            "applied_batches": self.applied_batches,
            "syncs": self.syncs,
            "sync_batches": dict(self.sync_batches),
            "rejected": dict(self.rejections),
            "log_bytes": self.log.size,
            "hlc": list(self.clock.last),
        }


def _broadcast_payloads(
    group: list[tuple[Batch, asyncio.Future[None]]], url: str
) -> list[tuple[dict[str, Any], list[asyncio.Future[None]]]]:
    """Messages for a group of batches: inline ones packed together up to `INLINE_LIMIT` bytes per
    message, larger ones announced one by one (replicas pull them over HTTP)."""
    out: list[tuple[dict[str, Any], list[asyncio.Future[None]]]] = []
    pack: list[str] = []
    waiting: list[asyncio.Future[None]] = []
    size = 0

    def flush() -> None:
        if pack:
            payload = {"batch": pack[0]} if len(pack) == 1 else {"batches": list(pack)}
            out.append((payload, list(waiting)))
            pack.clear()
            waiting.clear()

    for batch, fut in group:
        if size + len(batch.raw) > INLINE_LIMIT:
            flush()  # in order: what came first is sent first
            size = 0
        if len(batch.raw) > INLINE_LIMIT:
            out.append(({"id": batch.id, "url": url}, [fut]))
            continue
        pack.append(batch.raw.decode())
        waiting.append(fut)
        size += len(batch.raw)
    flush()
    return out


#: Largest body of a request carrying many batches (`/batches`, `/push`) or digests (`/sync`).
MAX_REQUEST_BYTES = 64 * 1024 * 1024


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (declared or streamed), so a
    huge body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise CStoreError("too_large", f"request body of {declared} bytes exceeds {limit}")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CStoreError("too_large", f"request body exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _error(exc: CStoreError) -> JSONResponse:
    status = {"forbidden": 403, "bad_signature": 403, "too_large": 413, "quota": 429}.get(exc.cause, 400)
    return JSONResponse({"error": str(exc), "cause": exc.cause, "hint": exc.hint}, status_code=status)


def _routes(router: APIRouter, svc: CStoreService) -> None:
    now = _now_ms

    @router.get("/v1/cstore/get")
    async def get(key: str) -> dict[str, Any]:
        value = svc.state.get(key, now())
        return {"key": key, "found": svc.state.exists(key, now()), "value": value}

    @router.get("/v1/cstore/keys")
    async def keys(prefix: str = "") -> dict[str, Any]:
        return {"prefix": prefix, "keys": svc.state.keys(prefix, now())}

    @router.get("/v1/cstore/hget")
    async def hget(key: str, field: str) -> dict[str, Any]:
        value = svc.state.hget(key, field, now())
        return {"key": key, "field": field, "found": value is not None, "value": value}

    @router.get("/v1/cstore/hgetall")
    async def hgetall(key: str) -> dict[str, Any]:
        return {"key": key, "fields": svc.state.hgetall(key, now())}

    @router.get("/v1/cstore/wait")
    async def wait(key: str, field: str | None = None, timeout: float = 10.0) -> Response:
        """Long-poll until KEY (or hash FIELD) has a live value; 408 after `timeout` seconds."""

        def value() -> Any:
            return svc.state.get(key, now()) if field is None else svc.state.hget(key, field, now())

        found = value()
        if found is None:
            event = asyncio.Event()

            def wake(k: str, f: str | None, v: Any) -> None:
                if k == key and (field is None or f == field) and v is not None:
                    event.set()

            svc.watch(key, wake)
            try:
                await asyncio.wait_for(event.wait(), min(max(timeout, 0.0), 60.0))
            except TimeoutError:
                return JSONResponse({"error": "timed out", "cause": "timeout"}, status_code=408)
            finally:
                svc.unwatch(wake)
            found = value()
        return JSONResponse({"key": key, "field": field, "value": found})

    @router.get("/v1/cstore/hlc")
    async def hlc() -> dict[str, Any]:
        return {"wall_ms": svc.clock.last.wall_ms, "counter": svc.clock.last.counter}

    @router.get("/v1/cstore/stats")
    async def stats() -> dict[str, Any]:
        return {"digest": svc.state.digest(), **svc.stats()}

    @router.get("/v1/cstore/lag")
    async def lag(since_ms: int = 0) -> dict[str, Any]:
        """Replication lag samples (ms) of batches applied from broadcasts since `since_ms`."""
        samples = [(lag, batch_id) for at, lag, batch_id in svc.lags if at >= since_ms]
        return {"n": len(samples), "lag_ms": [s[0] for s in samples], "batch": [s[1] for s in samples]}

    async def batch(request: Request) -> Response:
        try:
            raw = await _body(request, svc.limits.max_batch_bytes)
            b = await svc.submit(raw)
        except CStoreError as exc:
            return _error(exc)
        body = orjson.dumps({"id": b.id, "ops": len(b.ops), "hlc": list(svc.clock.last)})
        return Response(body, media_type="application/json")

    async def batches(request: Request) -> Response:
        """Several signed batches in one request, one per line (canonical JSON has no newlines).
        Each is accepted or refused on its own, like the commands of a Redis pipeline."""
        try:
            body = await _body(request, MAX_REQUEST_BYTES)
            raws = [line for line in body.split(b"\n") if line.strip()]
            if not 1 <= len(raws) <= MAX_BATCHES_PER_REQUEST:
                raise CStoreError("too_large", f"a request holds 1 to {MAX_BATCHES_PER_REQUEST} batches")
        except CStoreError as exc:
            svc._reject(exc)
            return _error(exc)
        results = [
            {"error": str(r), "cause": r.cause, "hint": r.hint}
            if isinstance(r, CStoreError)
            else {"id": r.id, "ops": len(r.ops)}
            for r in await svc.submit_many(raws)
        ]
        body = orjson.dumps({"results": results, "hlc": list(svc.clock.last)})
        return Response(body, media_type="application/json")

    # The write path: plain routes, without FastAPI's parameter and response-model machinery (the
    # body is signed batches that `submit_many` checks in full).
    router.add_route("/v1/cstore/batch", batch, methods=["POST"])
    router.add_route("/v1/cstore/batches", batches, methods=["POST"])

    @router.post("/v1/cstore/write")
    async def write(request: Request) -> Response:
        """Unsigned writes from apps on this machine: the node signs them as itself."""
        client = request.client.host if request.client else ""
        if client not in ("127.0.0.1", "::1", "localhost"):
            return _error(CStoreError("forbidden", "unsigned writes are only accepted from this machine"))
        try:
            body = orjson.loads(await _body(request, svc.limits.max_batch_bytes))
            ops = [_op_from_json(o) for o in body["ops"]]
            b = await svc.write(ops)
        except CStoreError as exc:
            return _error(exc)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _error(CStoreError("malformed", f"bad write request: {exc}"))
        return JSONResponse({"id": b.id, "ops": len(b.ops), "writer": b.writer})

    @router.post("/v1/cstore/sync")
    async def sync(request: Request) -> Response:
        try:
            body = orjson.loads(await _body(request, MAX_REQUEST_BYTES))
            horizon = body.get("horizon")
            if horizon is not None and type(horizon) is not int:
                raise TypeError("horizon must be an integer")
            answer = svc.answer_sync(body["digests"], horizon)
            return Response(orjson.dumps(answer), media_type="application/json")
        except CStoreError as exc:
            return _error(exc)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return _error(CStoreError("malformed", f"bad sync request: {exc}"))

    @router.post("/v1/cstore/push")
    async def push(request: Request) -> Response:
        try:
            body = orjson.loads(await _body(request, MAX_REQUEST_BYTES))
            batches = body["batches"]
            if not isinstance(batches, list):
                raise TypeError("batches must be a list")
        except CStoreError as exc:
            return _error(exc)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return _error(CStoreError("malformed", f"bad push request: {exc}"))
        applied = refused = 0
        for raw in batches:
            try:
                if not isinstance(raw, str):
                    raise CStoreError("malformed", "a pushed batch is not a string")
                applied += bool(svc.receive(raw.encode()))
            except CStoreError as exc:
                svc._reject(exc)
                refused += 1
        return JSONResponse({"applied": applied, "refused": refused})

    @router.get("/v1/cstore/batch/{batch_id}")
    async def get_batch(batch_id: str) -> Response:
        for raw in svc.state.batches_by_id(batch_id):
            return Response(raw, media_type="application/json")
        return JSONResponse({"error": "no such batch", "cause": "not_found"}, status_code=404)


def _op_from_json(o: dict[str, Any]) -> Op:
    kind = o["op"]
    if kind not in ("set", "del", "hset", "hdel"):
        raise ValueError(f"unknown op {kind!r}")
    ttl = o.get("ttl")
    expires = None if ttl is None else _now_ms() + max(1, int(float(ttl) * 1000))
    return Op(kind, o["key"], o.get("field"), o.get("value"), expires)
