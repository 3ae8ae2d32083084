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

import contextlib
import logging
import math
import os
import struct
import time
from pathlib import Path

from r1os.identity import normalize_address
from r1os.oracle._availability import HeartbeatLog

log = logging.getLogger("r1os.oracle.journal")

_RECORD = struct.Struct("<20sd")


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
        """Replay the journal's heartbeats from `since` on; returns how many were kept."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        now = time.time() + 60.0
        kept = bad = 0
        names: dict[bytes, str] = {}  # addresses as senders carry them (EIP-55), computed once each
        whole = len(data) - len(data) % _RECORD.size
        for raw, t in _RECORD.iter_unpack(data[:whole]):
            if not math.isfinite(t) or t > now:
                bad += 1
                continue
            if t >= since:
                name = names.get(raw)
                if name is None:
                    name = names[raw] = normalize_address("0x" + raw.hex())
                into.record(name, t)
                kept += 1
        if bad or whole != len(data):
            log.warning(
                "heartbeat journal %s: %d bad records, %d torn bytes; ignored",
                self.path,
                bad,
                len(data) - whole,
            )
        return kept

    def rewrite(self, source: HeartbeatLog) -> None:
        """Replace the file with what `source` still holds (after a prune)."""
        self._pending.clear()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            for node, times in list(source.times.items()):
                with contextlib.suppress(ValueError):
                    raw = bytes.fromhex(node.removeprefix("0x"))
                    if len(raw) == 20:
                        fh.write(b"".join(_RECORD.pack(raw, t) for t in times))
        os.replace(tmp, self.path)
