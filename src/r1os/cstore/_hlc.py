"""Hybrid logical clock: wall-clock milliseconds plus a counter, so causally later writes always
order after earlier ones even when machines' clocks disagree by a little."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple


class Timestamp(NamedTuple):
    wall_ms: int
    counter: int


class HybridClock:
    def __init__(self, now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self._now = now_ms
        self._last = Timestamp(0, 0)

    @property
    def last(self) -> Timestamp:
        return self._last

    def reserve(self, n: int = 1) -> Timestamp:
        """A fresh timestamp for `n` consecutive events (counters t.counter .. t.counter + n - 1)."""
        wall = self._now()
        if wall > self._last.wall_ms:
            ts = Timestamp(wall, 0)
        else:
            ts = Timestamp(self._last.wall_ms, self._last.counter + 1)
        self._last = Timestamp(ts.wall_ms, ts.counter + n - 1)
        return ts

    def observe(self, remote: Timestamp) -> None:
        """Move past a timestamp seen from another writer (callers bound how far ahead it may be)."""
        if remote > self._last:
            self._last = remote
