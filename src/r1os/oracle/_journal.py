"""The oracle's heartbeat journal: receive times on disk, so a restart keeps the epoch so far.

Without it an oracle restarted mid-epoch has lost every heartbeat it heard before, measures every
node (itself included) as absent for that part, and is usually not eligible to vote on the epoch. With
it, the restart costs only the seconds the oracle was really down.

Records are 28 bytes: a node address (20 bytes) and the receive time (float64, seconds). They are
buffered and written about once a second (a crash loses at most that), and the file is rewritten with
only the heartbeats still needed when old epochs are pruned. On load a torn last record is ignored and
times that are not finite or lie in the future are dropped (a damaged file must not invent presence).
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import time
from array import array
from pathlib import Path

from r1os.identity import normalize_address
from r1os.oracle._availability import HeartbeatLog

log = logging.getLogger("r1os.oracle.journal")

_RECORD = struct.Struct("<20sd")
_DTYPE = [("a", "S20"), ("t", "<f8")]  # the same 28 bytes, as a numpy record
_KEYED = [("a0", "<u8"), ("a1", "<u8"), ("a2", "<u4"), ("t", "<f8")]  # the address as numbers
_ADDRESS = struct.Struct("<QQI")


class HeartbeatJournal:
    """Appends what a `HeartbeatLog` records; `load` fills one back in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[bytes] = []

    def add(self, node: str, t: float) -> None:
        try:
            raw = bytes.fromhex(node.removeprefix("0x"))
        except ValueError:
            return  # not an address: never recorded (the wire checks senders anyway)
        if len(raw) == 20:
            self._pending.append(_RECORD.pack(raw, t))

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        with open(self.path, "ab") as fh:
            fh.write(data)

    def load(self, into: HeartbeatLog, since: float) -> int:
        """Replay the journal's heartbeats from `since` on; returns how many were kept.

        Read as one numpy record array and grouped by node (a day of 10,000 nodes is 86 M records)."""
        import numpy as np

        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        now = time.time() + 60.0
        whole = len(data) - len(data) % _RECORD.size
        recs = np.frombuffer(data, dtype=_KEYED, count=whole // _RECORD.size)
        t = recs["t"]
        good = np.isfinite(t) & (t <= now)
        bad = int(len(recs) - np.count_nonzero(good))
        keep = good & (t >= since)
        # Group by node with one stable sort on the address's first 8 bytes (a numeric key: fast);
        # within a node the records stay in arrival order. A group ends where any part changes.
        a0 = recs["a0"][keep]
        order = np.argsort(a0, kind="stable")
        a0, a1, a2, ts = a0[order], recs["a1"][keep][order], recs["a2"][keep][order], t[keep][order]
        change = (np.diff(a0) != 0) | (np.diff(a1) != 0) | (np.diff(a2) != 0)
        bounds = [0, *(np.flatnonzero(change) + 1).tolist(), len(ts)]
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                raw = _ADDRESS.pack(int(a0[lo]), int(a1[lo]), int(a2[lo]))
                self._put(into, raw, ts[lo:hi])
        kept = len(ts)
        if bad or whole != len(data):
            log.warning(
                "heartbeat journal %s: %d bad records, %d torn bytes; ignored",
                self.path,
                bad,
                len(data) - whole,
            )
        return kept

    @staticmethod
    def _put(into: HeartbeatLog, raw: bytes, times: object) -> None:
        import numpy as np

        ts = np.sort(np.asarray(times, dtype=np.float64))  # arrival order: nearly sorted already
        name = normalize_address("0x" + raw.hex())
        if name in into.times:
            into.extend(name, ts.tolist())
        else:
            into.times[name] = array("d", ts.tobytes())

    def rewrite(self, source: HeartbeatLog) -> None:
        """Replace the file with what `source` still holds (after a prune)."""
        import numpy as np

        self._pending.clear()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            for node, times in list(source.times.items()):
                try:
                    raw = bytes.fromhex(node.removeprefix("0x"))
                except ValueError:
                    continue
                if len(raw) != 20:
                    continue
                # a copy first (made under the GIL): heartbeats may be appended meanwhile, and numpy
                # must not hold a buffer on the live array (it could then not grow)
                snap = times[:]
                recs = np.empty(len(snap), dtype=_DTYPE)
                recs["a"] = raw
                recs["t"] = np.frombuffer(snap, dtype=np.float64)
                fh.write(recs.tobytes())
        os.replace(tmp, self.path)
