"""Anti-entropy: replicas that missed broadcasts (down, partitioned, new) catch up without replaying
history.

Every few seconds a replica posts its bucket digests to a random online peer (`/v1/cstore/sync`);
the peer answers with its batches for the buckets that differ and names the buckets it wants, which
the asker then pushes (`/v1/cstore/push`). Both sides check every batch like a fresh write. Only
entries older than the horizon take part: younger ones are still on the fast path.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from r1os.cstore._ops import CStoreError
from r1os.cstore._state import BUCKETS, CStoreState

log = logging.getLogger("r1os.cstore")

MAX_SYNC_BATCHES = 1_000  # per answer and per push: one round never stalls a node, the rest comes next round
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

    async def run(self, interval: float, peers: Callable[[], list[str]], http: httpx.AsyncClient) -> None:
        """Every `interval` seconds (jittered), a round with a random one of `peers()` (their URLs)."""
        deferred = 0
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            # While broadcasts keep arriving a round now would mostly ship batches already queued for
            # us. Defer, but never more than a few rounds in a row.
            if time.monotonic() - self.last_fast_path < interval / 2 and deferred < MAX_DEFERRED_ROUNDS:
                deferred += 1
                continue
            deferred = 0
            urls = peers()
            if not urls:
                continue
            url = random.choice(urls)
            try:
                await self.round(http, url)
            except Exception as exc:
                log.debug("anti-entropy with %s failed: %s", url, exc)

    async def round(self, http: httpx.AsyncClient, url: str) -> tuple[int, int]:
        """One round with the node at `url`; returns (batches pulled, batches pushed)."""
        mine = horizon(_now_ms())
        digests = base64.b64encode(self.state.bucket_digests(mine)).decode()
        r = await http.post(f"{url}/v1/cstore/sync", json={"digests": digests, "horizon": mine})
        r.raise_for_status()
        answer = r.json()
        pulled = 0
        for raw in answer.get("batches", []):
            try:
                if self._merge(raw.encode()):
                    pulled += 1
            except CStoreError as exc:
                self._refuse(exc, url)
        want = [b for b in answer.get("want", []) if isinstance(b, int) and 0 <= b < BUCKETS]
        pushed = 0
        if want:
            batches = self.state.batches_in(want)[:MAX_SYNC_BATCHES]
            if batches:
                body = orjson.dumps({"batches": [b.decode() for b in batches]})
                r = await http.post(
                    f"{url}/v1/cstore/push", content=body, headers={"content-type": "application/json"}
                )
                r.raise_for_status()
                pushed = len(batches)
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
        batches = self.state.batches_in(diff)[:MAX_SYNC_BATCHES]
        self.batches["answered"] += len(batches)
        return {"batches": [b.decode() for b in batches], "want": diff}
