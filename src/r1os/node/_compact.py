"""Compact heartbeats (`heartbeat_mode = "oracle"`), as pure cores a test drives.

In oracle mode only the oracles hear heartbeats, and most of a heartbeat does not change from one
interval to the next: version, URL, services, what the services report, the machine's size. So a node
sends its whole heartbeat (`hb`, with `fp`: its fingerprint, the same one the published map uses) when
that content changes, at least every `FULL_EVERY` intervals, and when an oracle asks; in between it
sends a compact one (`hbc`): its uptime, the fingerprint of the heartbeat it stands for, and the figures
that move every interval (CPU load, free memory and disk).

An oracle keeps the fingerprint of the last whole heartbeat of each sender. A compact heartbeat whose
fingerprint matches is expanded into that heartbeat with the new figures and handled exactly as a whole
one (availability, replica health, the map); one that does not match (the oracle restarted, or missed
the whole one) is not counted, and the oracle asks the sender (`hbq`, to its inbox, at most once per
interval) to send its whole heartbeat at once. Compact heartbeats are signed envelopes like every other
message; they carry nothing a whole one does not.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from r1os.node._netmap import Heartbeat
from r1os.node._netmap_sync import DYNAMIC_RESOURCES, fingerprint

COMPACT_HEARTBEAT: Final = "hbc"
HEARTBEAT_REQUEST: Final = "hbq"
FULL_EVERY = 30
"""A whole heartbeat at least every this many intervals (5 minutes at 10 s), whatever happens."""
MAX_SENDERS = 1_000_000
"""Fingerprints an oracle keeps (one per sender heard); past this it starts over."""


class CompactHeartbeat(BaseModel):
    """The payload of an `hbc` message."""

    model_config = ConfigDict(extra="forbid")

    uptime: float = Field(ge=0, le=1e10)
    fp: str = Field(pattern=r"^[0-9a-f]{16}$", description="fingerprint of the whole heartbeat it stands for")
    resources: dict[str, float] = Field(default_factory=dict, max_length=len(DYNAMIC_RESOURCES))

    @field_validator("resources")
    @classmethod
    def _only_moving_figures(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - DYNAMIC_RESOURCES
        if unknown:
            raise ValueError(f"not a figure that moves every interval: {sorted(unknown)[:3]}")
        return v


class CompactSender:
    """A node's side: which heartbeat to send this interval, the whole one or a compact one."""

    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self.full_every = full_every
        self.fp: str | None = None
        self.since_full = 0
        self.asked = False
        self.sent: dict[str, int] = {"hb": 0, COMPACT_HEARTBEAT: 0}

    def next(self, payload: dict[str, Any]) -> tuple[Literal["hb", "hbc"], dict[str, Any]]:
        """The message type and payload to send for the node's heartbeat `payload`."""
        fp = fingerprint(Heartbeat.model_validate(payload))
        if fp != self.fp or self.asked or self.since_full + 1 >= self.full_every:
            self.fp, self.since_full, self.asked = fp, 0, False
            self.sent["hb"] += 1
            return "hb", {**payload, "fp": fp}
        self.since_full += 1
        self.sent[COMPACT_HEARTBEAT] += 1
        resources = payload.get("resources", {})
        moving = {k: resources[k] for k in sorted(DYNAMIC_RESOURCES) if k in resources}
        return COMPACT_HEARTBEAT, {"uptime": payload["uptime"], "fp": fp, "resources": moving}

    def ask(self) -> None:
        """An oracle asked for the whole heartbeat: the next one is whole."""
        self.asked = True


class CompactReceiver:
    """An oracle's side: the fingerprint of each sender's last whole heartbeat; expands compact ones."""

    def __init__(self, interval: float, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.fps: dict[str, str] = {}
        self._asked: dict[str, float] = {}
        self.expanded = 0
        self.unmatched = 0

    def whole(self, sender: str, payload: dict[str, Any]) -> None:
        """A whole heartbeat was heard from `sender` (its `fp`, if it carries one, is kept)."""
        fp = payload.get("fp")
        if not isinstance(fp, str) or len(fp) != 16:
            # no fingerprint (an oracle's reply straight to an inbox, a broadcast-mode node): the last
            # one kept still names what the sender's compact heartbeats stand for
            return
        if len(self.fps) >= MAX_SENDERS and sender not in self.fps:
            self.fps.clear()
        self.fps[sender] = fp

    def expand(self, sender: str, known: Heartbeat | None, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The whole heartbeat a compact `payload` stands for, or None if this oracle does not hold it.
        Raises `ValueError` on a malformed payload."""
        try:
            msg = CompactHeartbeat.model_validate(payload)
        except ValidationError as exc:
            raise ValueError(f"bad compact heartbeat from {sender}: {exc.error_count()} error(s)") from None
        if known is None or self.fps.get(sender) != msg.fp:
            self.unmatched += 1
            return None
        self.expanded += 1
        whole = known.model_dump(exclude={"reply"})
        whole["uptime"] = msg.uptime
        whole["resources"] = {**whole["resources"], **msg.resources}
        whole["fp"] = msg.fp
        return whole

    def should_ask(self, sender: str) -> bool:
        """True at most once per interval per sender: whether to ask it for its whole heartbeat."""
        now = self.clock()
        if now - self._asked.get(sender, -1e18) < self.interval:
            return False
        if len(self._asked) >= MAX_SENDERS:
            self._asked.clear()
        self._asked[sender] = now
        return True
