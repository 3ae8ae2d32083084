"""Availability of a node in an epoch, from the times an oracle heard its heartbeats.

Ratio1's rule: sort the heartbeat times; a run is a stretch whose consecutive gaps stay within
[hb/2, hb + 5 s]; a larger gap ends the run; the covered time is the sum of the run lengths, and the
stored value is round(covered / epoch_length x 255), one byte.

r1os keeps that rule and fixes two edges of it (docs/economy.md, "Measuring availability"):

- a gap *shorter* than hb/2 (a reply heartbeat, a node with a faster clock) skips that heartbeat
  instead of breaking the run, so extra heartbeats never lower a score;
- runs are measured across the epoch boundaries and then clipped to the epoch, so a node online the
  whole epoch covers all of it (not `epoch - hb`, which would cap short devnet epochs below 255).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

SLACK_S = 5.0
"""Ratio1's tolerance over the heartbeat interval before a gap breaks a run."""


def max_gap(hb: float, slack: float = SLACK_S) -> float:
    return hb + slack


def covered_seconds(
    times: Sequence[float], hb: float, start: float, end: float, *, slack: float = SLACK_S
) -> float:
    """Seconds of [start, end) covered by runs of heartbeats (`times` sorted ascending).

    Pass the heartbeats from `start - max_gap` to `end + max_gap` so runs crossing a boundary count.
    """
    if end <= start or len(times) < 2:
        return 0.0
    lo, hi = hb / 2.0, hb + slack
    gaps = [b - a for a, b in pairwise(times)]
    if min(gaps) < lo:
        return _covered_walk(times, lo, hi, start, end)
    # No heartbeat to skip (the usual case): runs are the stretches between gaps over `hi`, found
    # with builtins instead of a Python-level walk over every heartbeat.
    breaks = [i for i, g in enumerate(gaps) if g > hi] if max(gaps) > hi else []
    total, run_start = 0.0, times[0]
    for i in breaks:
        total += _clip(run_start, times[i], start, end)
        run_start = times[i + 1]
    return total + _clip(run_start, times[-1], start, end)


def _clip(a: float, b: float, start: float, end: float) -> float:
    return max(0.0, min(b, end) - max(a, start))


def _covered_walk(times: Sequence[float], lo: float, hi: float, start: float, end: float) -> float:
    """The general case: heartbeats closer than `lo` to the previous one are skipped."""
    total = 0.0
    it = iter(times)
    run_start = prev = next(it)
    for t in it:
        gap = t - prev
        if gap < lo:
            continue
        if gap > hi:
            total += _clip(run_start, prev, start, end)
            run_start = t
        prev = t
    return total + _clip(run_start, prev, start, end)


def to_byte(fraction: float) -> int:
    """round(fraction x 255), clamped to 0..255."""
    return max(0, min(255, round(fraction * 255)))


def availability(
    times: Sequence[float], hb: float, start: float, end: float, *, slack: float = SLACK_S
) -> int:
    """The availability byte of one node for the epoch [start, end)."""
    return to_byte(covered_seconds(times, hb, start, end, slack=slack) / (end - start))


@dataclass
class HeartbeatLog:
    """Receive times of each node's heartbeats, as one oracle heard them (appended in time order)."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def record(self, node: str, t: float) -> None:
        lst = self.times.get(node)
        if lst is None:
            self.times[node] = [t]
        elif t >= lst[-1]:
            lst.append(t)
        else:  # a clock step back or a late arrival: keep the list sorted
            bisect.insort(lst, t)

    def extend(self, node: str, ts: Iterable[float]) -> None:
        for t in ts:
            self.record(node, t)

    def window(self, node: str, start: float, end: float) -> list[float]:
        lst = self.times.get(node, [])
        return lst[bisect.bisect_left(lst, start) : bisect.bisect_right(lst, end)]

    def table(self, hb: float, start: float, end: float, *, slack: float = SLACK_S) -> dict[str, int]:
        """Availability of every node heard around [start, end)."""
        pad = max_gap(hb, slack)
        out: dict[str, int] = {}
        for node in list(self.times):  # heartbeats may arrive while a thread computes this
            ts = self.window(node, start - pad, end + pad)
            out[node] = availability(ts, hb, start, end, slack=slack) if ts else 0
        return out

    def prune(self, before: float) -> None:
        """Forget heartbeats older than `before` (epochs already closed)."""
        for node in list(self.times):
            lst = self.times[node]
            i = bisect.bisect_left(lst, before)
            if i >= len(lst):
                del self.times[node]
            elif i:
                del lst[:i]
