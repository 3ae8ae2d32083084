"""The network map the oracles publish (`heartbeat_mode = "oracle"`), as pure cores a test drives.

In this mode heartbeats go to an oracle-only topic, and edge nodes learn the network from the map
the lowest online oracle publishes on the broadcast channel `nm` once per heartbeat interval:

- a **delta** carries only what changed since the previous message of the same stream: peers that
  came online or whose heartbeat changed (the full heartbeat), and peers that went offline (`gone`);
  in a steady network it is a few hundred bytes whatever the network's size;
- a **snapshot** (`full: true`) carries the whole map; an oracle sends one to a node's inbox when it
  first hears the node, when the node asks (`nmq`: after a gap in the sequence, a new publisher, or a
  digest that does not match), and, if configured, to everyone every M intervals;
- every message carries the number of peers and a digest of the whole map (address and heartbeat
  fingerprint of each), so a node that applied a delta checks that it holds the publisher's map. Each
  entry carries its fingerprint as the publisher computed it: what counts as a change is the
  publisher's choice, so nodes of another version that would count changes differently still follow;
- a message too big for one envelope (a snapshot of more than ~1,500 peers, a delta when that many join
  at once) travels as up to `MAX_PARTS` parts of the same stream and sequence number (`part`, `parts`),
  each a signed envelope of its own; a node applies the message once it holds every part.

What counts as a change leaves out what moves every interval (uptime, CPU load, free memory and
disk): a node's copy of those is as of the last time its peer's heartbeat changed. (Counting them even
in coarse steps was measured and dropped: nodes cross step boundaries at some rate each, so the deltas
grew with the network again, x1.83 per edge node from 10 to 20 nodes. The oracles, which place apps,
hear every heartbeat and hold the live figures.)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from r1os.node._netmap import Heartbeat, NetworkMap

log = logging.getLogger("r1os.node.netmap")

NETMAP = "nm"
NETMAP_REQUEST = "nmq"
MAX_PEERS = 100_000
"""Peers one map message may name (the envelope's size limit binds long before this)."""
DYNAMIC_RESOURCES = frozenset({"cpu_load", "memory_available_mb", "disk_free_gb"})
"""Resource fields that move every interval: not a change of the map."""
_ADDRESS_LEN = 42
MAX_PARTS = 64
"""Parts one map message may be split into (64 x 640 KiB: ~100,000 peers)."""
PART_BUDGET = 640 * 1024
"""Bytes of peers and `gone` entries per part: with the envelope around it, well within 1 MiB."""
_PENDING = 2
"""Split messages a node assembles at once (a snapshot and the next delta): only oracles can send parts."""

Outcome = Literal["applied", "stale", "resync", "refused", "malformed", "ignored", "partial"]


def fingerprint(hb: Heartbeat) -> str:
    """What identifies a heartbeat's content for the map: everything but uptime, reply and the
    resource figures that move every interval."""
    d = hb.model_dump(exclude={"uptime", "reply"})
    d["resources"] = {k: v for k, v in d["resources"].items() if k not in DYNAMIC_RESOURCES}
    return hashlib.sha256(orjson.dumps(d, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def map_digest(fps: dict[str, str]) -> str:
    """Digest of a whole map: lower-case address and fingerprint of every peer, in address order."""
    h = hashlib.sha256()
    for address in sorted(fps):
        h.update(f"{address}={fps[address]};".encode())
    return h.hexdigest()[:16]


class MapEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hb: Heartbeat
    fp: str = Field(
        pattern=r"^[0-9a-f]{16}$", description="the heartbeat's fingerprint, as the publisher counts changes"
    )
    age: float = Field(0.0, ge=0, le=86_400, description="seconds since the oracle last heard the peer")


class NetmapPayload(BaseModel):
    """The payload of an `nm` message."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[2] = 2
    stream: int = Field(ge=0, description="the publisher's stream: sequence numbers count within it")
    seq: int = Field(ge=0)
    full: bool = False
    peers: dict[str, MapEntry] = Field(default_factory=dict, max_length=MAX_PEERS)
    gone: list[str] = Field(default_factory=list, max_length=MAX_PEERS)
    count: int = Field(ge=0, le=MAX_PEERS)
    digest: str = Field(pattern=r"^[0-9a-f]{16}$")
    part: int = Field(0, ge=0, lt=MAX_PARTS)
    parts: int = Field(1, ge=1, le=MAX_PARTS)

    @model_validator(mode="after")
    def _part_in_range(self) -> NetmapPayload:
        if self.part >= self.parts:
            raise ValueError(f"part {self.part} of {self.parts}")
        return self


def split_message(payload: dict[str, Any], budget: int = PART_BUDGET) -> list[dict[str, Any]]:
    """`payload` as it is if it fits `budget` bytes, else as parts that each do (same stream, seq,
    count and digest; the peers and `gone` entries spread over them). Raises `ValueError` past
    `MAX_PARTS`."""
    if len(orjson.dumps(payload)) <= budget:
        return [payload]
    chunks: list[tuple[dict[str, Any], list[str]]] = [({}, [])]
    used = 0
    entries: list[tuple[str, Any]] = [*payload["peers"].items(), *((a, None) for a in payload["gone"])]
    for address, entry in entries:
        size = _ADDRESS_LEN + 8 + (len(orjson.dumps(entry)) if entry is not None else 0)
        if used and used + size > budget:
            chunks.append(({}, []))
            used = 0
        peers, gone = chunks[-1]
        if entry is None:
            gone.append(address)
        else:
            peers[address] = entry
        used += size
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"a map of {payload['count']} peers needs {len(chunks)} parts (at most {MAX_PARTS})")
    n = len(chunks)
    return [{**payload, "peers": p, "gone": g, "part": i, "parts": n} for i, (p, g) in enumerate(chunks)]


def _check_address(address: str) -> str:
    if len(address) != _ADDRESS_LEN or not address.startswith("0x"):
        raise ValueError(f"{address[:50]!r} is not an address")
    int(address[2:], 16)
    return address


class MapPublisher:
    """The oracle side: turns the oracle's view (online peers and itself) into snapshots and deltas.

    `state` is the map as last published, so a snapshot sent to one node between two deltas is exactly
    the base the next delta applies to.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.stream = time.time_ns() // 1000
        self.seq = 0
        self.state: dict[str, tuple[Heartbeat, str]] = {}  # address -> (heartbeat, fingerprint)
        self.published = 0

    def _payload(self, full: bool, peers: dict[str, dict[str, Any]], gone: list[str]) -> dict[str, Any]:
        fps = {a.lower(): fp for a, (_, fp) in self.state.items()}
        return {
            "v": 2,
            "stream": self.stream,
            "seq": self.seq,
            "full": full,
            "peers": peers,
            "gone": gone,
            "count": len(fps),
            "digest": map_digest(fps),
        }

    def next_message(self, view: dict[str, tuple[Heartbeat, float]], *, full: bool = False) -> dict[str, Any]:
        """The next message of the stream for `view` (address -> heartbeat, seconds since heard)."""
        new = {a: (hb, fingerprint(hb)) for a, (hb, _) in view.items()}
        if full:
            changed = list(new)
            gone: list[str] = []
        else:
            changed = [a for a, (_, fp) in new.items() if a not in self.state or self.state[a][1] != fp]
            gone = sorted(a for a in self.state if a not in new)
        self.state = new
        self.seq += 1
        self.published += 1
        peers = {
            a: {"hb": _hb_dict(new[a][0]), "fp": new[a][1], "age": round(view[a][1], 3)}
            for a in sorted(changed)
        }
        return self._payload(full, peers, gone)

    def snapshot(self, ages: Callable[[str], float] | None = None) -> dict[str, Any]:
        """The map as last published, whole (same `seq`: the next delta applies to it)."""
        peers = {
            a: {"hb": _hb_dict(hb), "fp": fp, "age": round(max(0.0, ages(a)) if ages else 0.0, 3)}
            for a, (hb, fp) in sorted(self.state.items())
        }
        return self._payload(True, peers, [])


def _hb_dict(hb: Heartbeat) -> dict[str, Any]:
    return hb.model_dump(exclude={"reply"}, exclude_defaults=True)


class MapFollower:
    """The edge side: applies the map messages of one publisher to the node's `NetworkMap`.

    `accept` returns what happened: `applied`; `stale` (a replayed or old sequence number: dropped);
    `resync` (a delta without its base, a new publisher, a digest that does not match: ask the
    publisher for a snapshot); `refused` (not from a registered oracle); `malformed`; `ignored` (a
    higher oracle while the followed one is publishing); `partial` (a part of a split message, kept
    until the others come).
    """

    def __init__(
        self,
        me: str,
        netmap: NetworkMap,
        oracles: Callable[[], set[str]],
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.me = me.lower()
        self.netmap = netmap
        self.oracles = oracles
        self.interval = interval
        self.clock = clock
        self.source: str | None = None
        self.stream: int | None = None
        self.seq = -1
        self.fps: dict[str, str] = {}  # lower-case address -> fingerprint, this node included
        self._names: dict[str, str] = {}  # lower-case -> address as the map spells it
        self._heard: dict[str, float] = {}  # oracle -> when its last map message came
        self._parts: dict[tuple[str, int, int, bool], dict[int, NetmapPayload]] = {}
        self.outcomes: dict[str, int] = {}
        self._since = clock()  # a node that just started has heard no map yet, and is not alone yet

    def quiet(self, intervals: float, now: float | None = None) -> bool:
        """True when no registered oracle's map has come for `intervals` heartbeat intervals (counted
        from this follower's start if none ever came): every oracle is gone or cut off."""
        now = self.clock() if now is None else now
        return now - max(self._heard.values(), default=self._since) > intervals * self.interval

    def _fresh(self, oracle: str, now: float) -> bool:
        return now - self._heard.get(oracle, -1e18) <= self.netmap.missed_limit * self.interval

    def accept(self, sender: str, payload: dict[str, Any]) -> Outcome:
        outcome = self._accept(sender.lower(), payload)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    def _accept(self, sender: str, payload: dict[str, Any]) -> Outcome:
        if sender not in self.oracles():
            log.warning("network map from %s refused: not a registered oracle", sender)
            return "refused"
        try:
            msg = NetmapPayload.model_validate(payload)
            for address in (*msg.peers, *msg.gone):
                _check_address(address)
        except (ValidationError, ValueError) as exc:
            n = exc.error_count() if isinstance(exc, ValidationError) else 1
            log.warning("network map from %s refused: malformed (%d error(s))", sender, n)
            return "malformed"
        now = self.clock()
        self._heard[sender] = now
        if msg.parts > 1:
            whole = self._assemble(sender, msg)
            if whole is None:
                return "partial"
            if whole is False:
                log.warning("network map from %s refused: its parts do not agree", sender)
                return "malformed"
            msg = whole
        if self.source is not None and sender != self.source:
            if sender > self.source and self._fresh(self.source, now - 1e-9):
                return "ignored"  # the lower oracle we follow is still publishing
            if not msg.full:
                # a new publisher (lower, or the one we followed went quiet): start from its snapshot
                self.source, self.stream, self.seq = sender, None, -1
                return "resync"
        if self.source is None and not msg.full:
            self.source = sender
            return "resync"
        same_stream = sender == self.source and msg.stream == self.stream
        if msg.full:
            if same_stream and msg.seq < self.seq:
                return "stale"
            fps = {a.lower(): e.fp for a, e in msg.peers.items()}
            if len(fps) != msg.count or map_digest(fps) != msg.digest:
                log.warning("network map snapshot from %s refused: digest or count does not match", sender)
                return "malformed"
            self._apply(msg, fps, full=True, now=now)
        else:
            if not same_stream:
                return "resync"
            if msg.seq <= self.seq:
                return "stale"
            if msg.seq != self.seq + 1:
                return "resync"
            fps = dict(self.fps)
            for a in msg.gone:
                fps.pop(a.lower(), None)
            for a, e in msg.peers.items():
                fps[a.lower()] = e.fp
            if len(fps) != msg.count or map_digest(fps) != msg.digest:
                log.info("network map delta from %s does not match our copy: asking for a snapshot", sender)
                self.seq = -1
                return "resync"
            self._apply(msg, fps, full=False, now=now)
        self.source, self.stream, self.seq = sender, msg.stream, msg.seq
        return "applied"

    def _assemble(self, sender: str, part: NetmapPayload) -> NetmapPayload | None | Literal[False]:
        """The whole message once every part of it is here (None until then; False if parts disagree)."""
        key = (sender, part.stream, part.seq, part.full)
        got = self._parts.get(key)
        if got is None:
            while len(self._parts) >= _PENDING:  # an older message that never completed: given up
                del self._parts[next(iter(self._parts))]
            got = self._parts[key] = {}
        first = next(iter(got.values()), part)
        if (first.parts, first.count, first.digest) != (part.parts, part.count, part.digest):
            del self._parts[key]
            return False
        got[part.part] = part
        if len(got) < part.parts:
            return None
        del self._parts[key]
        peers: dict[str, MapEntry] = {}
        gone: list[str] = []
        for i in range(part.parts):
            peers.update(got[i].peers)
            gone.extend(got[i].gone)
        return part.model_copy(update={"peers": peers, "gone": gone, "part": 0, "parts": 1})

    def _apply(self, msg: NetmapPayload, fps: dict[str, str], *, full: bool, now: float) -> None:
        gone = set(self.fps) - set(fps) if full else {a.lower() for a in msg.gone}
        for a in gone:
            name = self._names.pop(a, None)
            if name is not None:
                self.netmap.mark_offline(name)
        for address, entry in msg.peers.items():
            low = address.lower()
            self._names[low] = address
            if low != self.me:
                self.netmap.put(address, entry.hb, now - entry.age)
        self.fps = fps
        # the publisher lists these as online now: keep them online for another interval or so
        self.netmap.touch([self._names[a] for a in fps if a != self.me and a in self._names], now)
