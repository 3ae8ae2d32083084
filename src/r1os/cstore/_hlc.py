"""Hybrid logical clock: wall-clock milliseconds plus a counter, so causally later writes always
order after earlier ones even when machines' clocks disagree by a little.

Stamps from other writers move the clock on (`observe`), so both parts are bounded where they enter:
a counter never passes `MAX_COUNTER` (the clock rolls into the next millisecond instead, so taking a
stamp never fails), and the clock follows a remote stamp at most `MAX_LEAD_MS` ahead of this machine's
own wall clock, so an outsider's far-future stamp cannot drag this node's own stamps (and with them
every write it makes) into the future.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

#: The largest counter a stamp may carry (also the largest a batch's last op may reach). Counters
#: restart at 0 every millisecond; four billion events within one is no honest writer, and below
#: 2**32 a stamp stays exact in every JSON reader (JavaScript's included).
MAX_COUNTER = 2**32 - 1

#: How far ahead of this machine's wall clock the clock follows a remote stamp. Batches may be
#: stamped a little further ahead than this (`Limits.max_future_ms`), so the stamps this node issues
#: after seeing one stay well inside what every peer accepts, even with a few seconds of skew.
MAX_LEAD_MS = 1_000


class Timestamp(NamedTuple):
    wall_ms: int
    counter: int


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    def __init__(self, now_ms: Callable[[], int] = _wall_ms, *, max_lead_ms: int = MAX_LEAD_MS) -> None:
        self._now = now_ms
        self.max_lead_ms = max_lead_ms
        self._last = Timestamp(0, 0)

    @property
    def last(self) -> Timestamp:
        return self._last

    def reserve(self, n: int = 1) -> Timestamp:
        """A fresh timestamp for `n` consecutive events (counters t.counter .. t.counter + n - 1).

        Never fails for `1 <= n <= MAX_COUNTER + 1`: when the counter would pass `MAX_COUNTER` the
        stamp moves to the next millisecond (a stamp a millisecond early is still later than every
        earlier one, which is all the order needs)."""
        if not 1 <= n <= MAX_COUNTER + 1:
            raise ValueError(f"a stamp covers 1 to {MAX_COUNTER + 1} events, not {n}")
        wall = self._now()
        last = self._last
        if wall > last.wall_ms:
            ts = Timestamp(wall, 0)
        elif last.counter + n <= MAX_COUNTER:
            ts = Timestamp(last.wall_ms, last.counter + 1)
        else:
            ts = Timestamp(last.wall_ms + 1, 0)
        self._last = Timestamp(ts.wall_ms, ts.counter + n - 1)
        return ts

    def observe(self, remote: Timestamp) -> None:
        """Move past a timestamp seen from another writer, but never further than `max_lead_ms`
        ahead of the wall clock, nor past `MAX_COUNTER` (callers refuse such stamps anyway)."""
        if remote <= self._last:
            return
        wall, counter = remote
        cap = self._now() + self.max_lead_ms
        if wall > cap:
            wall, counter = cap, 0
        self._last = max(self._last, Timestamp(wall, min(counter, MAX_COUNTER)))
