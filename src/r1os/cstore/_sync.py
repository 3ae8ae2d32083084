"""Anti-entropy: replicas that missed broadcasts (down, partitioned, new) catch up without replaying
history.

Every few seconds a replica posts its bucket digests to a random online peer (`/v1/cstore/sync`), and
at once (as soon as it knows a peer) when it starts or comes back to the broker, having missed the
broadcasts meanwhile (`nudge`);
the peer answers with its batches for the buckets that differ and names the buckets it wants, which
the asker then pushes (`/v1/cstore/push`). Both sides check every batch like a fresh write. Only
entries older than the horizon take part: younger ones are still on the fast path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from r1os.cstore._ops import CStoreError
from r1os.cstore._peer import PeerClient, PeerRef
from r1os.cstore._state import BUCKETS, CStoreState

log = logging.getLogger("r1os.cstore")

#: Batches per answer and per push: one round never stalls a node, the rest comes next round.
MAX_SYNC_BATCHES = 1_000
#: Bytes of batches per answer and per push (the batches' own size; at least one batch always goes).
MAX_SYNC_BYTES = 16 * 1024 * 1024
#: The largest answer or push body read: the batches travel as JSON strings, and escaping their quotes
#: and backslashes at most doubles them.
MAX_SYNC_BODY = 2 * MAX_SYNC_BYTES + 64 * 1024
#: The largest `/v1/cstore/sync` request: 1,024 bucket digests in base64 (about 22 KB) and a horizon.
MAX_SYNC_REQUEST = 64 * 1024
SETTLE_MS = 1_000
HORIZON_STEP_MS = 1_000  # how long a write is left to the fast path before anti-entropy compares it
MAX_DEFERRED_ROUNDS = 3

Merge = Callable[[bytes], object]
"""Checks and merges one batch from a peer; truthy if it changed anything, `CStoreError` if refused."""
Refuse = Callable[[CStoreError, str | None], None]
"""Counts (and logs) a refused batch, with the peer it came from."""


def horizon(now_ms: int) -> int:
    """Entries younger than this are still on the fast path: anti-entropy leaves them alone.
    Whole steps, so two replicas comparing at nearly the same moment use the same horizon."""
    return (now_ms - SETTLE_MS) // HORIZON_STEP_MS * HORIZON_STEP_MS


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AntiEntropy:
    """Both sides of a round, asking (`round`) and answering (`answer`), and what they moved.

    `last_fast_path` is the monotonic time a broadcast batch last arrived (the service sets it): while
    broadcasts keep coming the fast path is doing the work and rounds are deferred."""

    def __init__(self, state: CStoreState, merge: Merge, refuse: Refuse) -> None:
        self.state = state
        self._merge = merge
        self._refuse = refuse
        self.rounds = 0
        self.batches: Counter[str] = Counter()  # batches pulled / pushed / answered
        self.last_fast_path = 0.0
        self.nudged_rounds = 0
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """A round soon rather than at the next interval: once the horizon has passed this moment (2 s:
        what was missed until now takes part) and there is a peer to ask (within one interval). For a
        replica that has just started, or come back to the broker, and missed broadcasts."""
        self._nudged.set()

    async def _peers_soon(self, peers: Callable[[], list[PeerRef]], within: float) -> list[PeerRef]:
        # the network map fills in as heartbeats (or a published map) arrive: look every 0.1 s
        for _ in range(max(1, int(within / 0.1))):
            if found := peers():
                return found
            await asyncio.sleep(0.1)
        return peers()

    async def run(self, interval: float, peers: Callable[[], list[PeerRef]], client: PeerClient) -> None:
        """Every `interval` seconds (jittered), a round with a random one of `peers()`; now if nudged."""
        deferred = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval * random.uniform(0.8, 1.2)):
                    await self._nudged.wait()
            if self._nudged.is_set():
                self._nudged.clear()
                # what was missed is older than the horizon once it has moved past this moment
                await asyncio.sleep((SETTLE_MS + HORIZON_STEP_MS) / 1000)
                candidates = await self._peers_soon(peers, interval)
                if candidates:
                    self.nudged_rounds += 1
            else:
                # While broadcasts keep arriving a round now would mostly ship batches already queued
                # for us. Defer, but never more than a few rounds in a row.
                recent = time.monotonic() - self.last_fast_path < interval / 2
                if recent and deferred < MAX_DEFERRED_ROUNDS:
                    deferred += 1
                    continue
                candidates = peers()
            deferred = 0
            if not candidates:
                continue
            peer = random.choice(candidates)
            try:
                await self.round(client, peer)
            except CStoreError as exc:
                self._refuse(exc, peer.url)
            except Exception as exc:
                log.debug("anti-entropy with %s failed: %s", peer.url, exc)

    async def round(self, client: PeerClient, peer: PeerRef) -> tuple[int, int]:
        """One round with `peer`; returns (batches pulled, batches pushed). `CStoreError` if the peer's
        answer is refused as a whole (too large, malformed, unreachable)."""
        mine = horizon(_now_ms())
        digests = base64.b64encode(self.state.bucket_digests(mine)).decode()
        request = orjson.dumps({"digests": digests, "horizon": mine})
        body = await client.request(peer, "POST", "/v1/cstore/sync", request, limit=MAX_SYNC_BODY)
        batches, want = parse_answer(body)
        pulled = 0
        for raw in batches:
            try:
                if not isinstance(raw, str):
                    raise CStoreError("malformed", "a batch in a sync answer is not a string")
                if self._merge(raw.encode()):
                    pulled += 1
            except CStoreError as exc:
                self._refuse(exc, peer.url)
        pushed = 0
        if want:
            batches_out = pick(self.state.batches_in(want))
            if batches_out:
                push = orjson.dumps({"batches": [b.decode() for b in batches_out]})
                await client.request(peer, "POST", "/v1/cstore/push", push, limit=MAX_SYNC_REQUEST)
                pushed = len(batches_out)
        self.rounds += 1
        self.batches.update(pulled=pulled, pushed=pushed)
        return pulled, pushed

    def answer(self, digests_b64: str, their_horizon: int | None = None) -> dict[str, Any]:
        """The answer to a peer's round: our batches in the buckets whose digests differ from
        `digests_b64`, and those buckets (`want`: the peer pushes its batches there)."""
        mine = horizon(_now_ms())
        if their_horizon is not None and their_horizon != mine:
            # The two sides would compare different sets of entries and see differences that are only
            # writes still in flight. Skip this round; with whole-second horizons this is rare.
            return {"batches": [], "want": [], "horizon": mine}
        try:
            remote = base64.b64decode(digests_b64, validate=True)
            diff = self.state.differing_buckets(remote, mine)
        except (ValueError, TypeError) as exc:
            raise CStoreError("malformed", f"bad digests: {exc}") from None
        batches = pick(self.state.batches_in(diff))
        self.batches["answered"] += len(batches)
        return {"batches": [b.decode() for b in batches], "want": diff}


def pick(batches: list[bytes]) -> list[bytes]:
    """The batches one answer or push carries: all of them if they fit `MAX_SYNC_BATCHES` and
    `MAX_SYNC_BYTES`, else a random selection that does (a fixed one could be the same batches, already
    held by the peer, every round, and the rest would never travel)."""
    if len(batches) > MAX_SYNC_BATCHES or sum(map(len, batches)) > MAX_SYNC_BYTES:
        batches = random.sample(batches, len(batches))
    out: list[bytes] = []
    size = 0
    for raw in batches:
        if len(out) == MAX_SYNC_BATCHES or (out and size + len(raw) > MAX_SYNC_BYTES):
            break
        out.append(raw)
        size += len(raw)
    return out


def parse_answer(body: bytes) -> tuple[list[Any], list[int]]:
    """The batches and wanted buckets of a peer's sync answer, bounded: `CStoreError` if it is not an
    answer or carries more batches than any answer may."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CStoreError("malformed", f"sync answer is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise CStoreError("malformed", "sync answer is not an object")
    batches, want = answer.get("batches", []), answer.get("want", [])
    if not isinstance(batches, list) or not isinstance(want, list):
        raise CStoreError("malformed", "sync answer: batches and want must be lists")
    if len(batches) > MAX_SYNC_BATCHES or len(want) > BUCKETS:
        raise CStoreError("too_large", f"sync answer over {MAX_SYNC_BATCHES} batches or {BUCKETS} buckets")
    buckets = sorted({b for b in want if type(b) is int and 0 <= b < BUCKETS})
    return batches, buckets
