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
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported by the functions that use it: only oracles measure
    import numpy as np
    import numpy.typing as npt

    Times = npt.NDArray[np.float64]

SLACK_S = 5.0
"""Ratio1's tolerance over the heartbeat interval before a gap breaks a run."""


def max_gap(hb: float, slack: float = SLACK_S) -> float:
    return hb + slack


def covered_seconds(
    times: Sequence[float] | Times, hb: float, start: float, end: float, *, slack: float = SLACK_S
) -> float:
    """Seconds of [start, end) covered by runs of heartbeats (`times` sorted ascending).

    Pass the heartbeats from `start - max_gap` to `end + max_gap` so runs crossing a boundary count.
    """
    import numpy as np

    a = np.asarray(times, dtype=np.float64)
    if end <= start or len(a) < 2:
        return 0.0
    return _covered(a, hb / 2.0, hb + slack, start, end)


def _covered(a: Times, lo: float, hi: float, start: float, end: float) -> float:
    """The rule over a sorted float64 array, with array operations instead of a walk in Python: one
    node's day is 8,640 heartbeats, and an oracle of a 10,000-node network measures 86 M of them."""
    import numpy as np

    gaps = np.diff(a)
    short = np.flatnonzero(gaps < lo)
    if len(short):
        a = a[_kept(a, short, lo)]
        gaps = np.diff(a)
    # Runs are the stretches between gaps over `hi`.
    breaks = np.flatnonzero(gaps > hi)
    if not len(breaks):
        return _clip(float(a[0]), float(a[-1]), start, end)
    firsts = np.concatenate((a[:1], a[breaks + 1]))
    lasts = np.concatenate((a[breaks], a[-1:]))
    covered = np.minimum(lasts, end) - np.maximum(firsts, start)
    return float(covered[covered > 0].sum())


def _kept(a: Times, short: npt.NDArray[np.intp], lo: float) -> npt.NDArray[np.bool_]:
    """Which heartbeats the walk keeps: one closer than `lo` to the last kept one is skipped.

    A heartbeat whose gap to its predecessor is at least `lo` is always kept (the last kept one is no
    later than the predecessor), so only those after a short gap (`short` + 1) are looked at."""
    import numpy as np

    keep = np.ones(len(a), dtype=np.bool_)
    for i in short.tolist():
        j = i
        while not keep[j]:
            j -= 1
        if a[i + 1] - a[j] < lo:
            keep[i + 1] = False
    return keep


def _clip(a: float, b: float, start: float, end: float) -> float:
    return max(0.0, min(b, end) - max(a, start))


def _covered_walk(times: Sequence[float], lo: float, hi: float, start: float, end: float) -> float:
    """The rule as a walk over every heartbeat (the reference the array version is tested against)."""
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
    """Receive times of each node's heartbeats, as one oracle heard them (appended in time order).

    Each node's times are an `array("d")`: 8 bytes a heartbeat instead of a list's 32, which is
    0.7 GB rather than 2.8 GB for a day of 10,000 nodes, and read by numpy without conversion."""

    times: dict[str, array[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node, ts in list(self.times.items()):
            if not isinstance(ts, array) or ts.typecode != "d":
                self.times[node] = array("d", sorted(ts))

    def record(self, node: str, t: float) -> None:
        lst = self.times.get(node)
        if lst is None:
            self.times[node] = array("d", (t,))
        elif t >= lst[-1]:
            lst.append(t)
        else:  # a clock step back or a late arrival: keep the list sorted
            bisect.insort(lst, t)

    def extend(self, node: str, ts: Iterable[float]) -> None:
        for t in ts:
            self.record(node, t)

    def window(self, node: str, start: float, end: float) -> array[float]:
        """A copy of the node's heartbeat times within [start, end]."""
        lst = self.times.get(node)
        if lst is None:
            return array("d")
        # A slice is a copy made under the GIL: heartbeats appended meanwhile (the table is computed
        # in a worker thread) neither tear it nor are blocked by a buffer numpy would hold on `lst`.
        return lst[bisect.bisect_left(lst, start) : bisect.bisect_right(lst, end)]

    def table(self, hb: float, start: float, end: float, *, slack: float = SLACK_S) -> dict[str, int]:
        """Availability of every node heard around [start, end)."""
        import numpy as np

        pad = max_gap(hb, slack)
        lo, hi, span = hb / 2.0, hb + slack, end - start
        out: dict[str, int] = {}
        for node in list(self.times):  # heartbeats may arrive while a thread computes this
            ts = self.window(node, start - pad, end + pad)
            if len(ts) < 2 or end <= start:
                out[node] = 0
                continue
            a = np.frombuffer(ts, dtype=np.float64)
            out[node] = to_byte(_covered(a, lo, hi, start, end) / span)
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
