"""The network map: which peers this node has heard, and whether they are still online."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from r1os.identity import ai_address

PeerStatus = Literal["online", "offline"]


class Heartbeat(BaseModel):
    """The payload of a `hb` message."""

    version: str
    uptime: float
    interval: float
    url: str | None = None
    oracle: bool = False
    ai_address: str | None = None
    reply: bool = False
    services: list[str] = []
    resources: dict[str, Any] = {}
    services_info: dict[str, dict[str, Any]] = {}
    """What services add to the heartbeat (`Service.heartbeat_fields`), by service name."""


class Peer(BaseModel):
    address: str
    ai_address: str | None = None
    last_seen: float
    first_seen: float
    heartbeats: int
    heartbeat: Heartbeat
    heartbeat_at: float = 0.0
    """When `heartbeat` was heard (by this node, or by the oracle whose map brought it): in oracle mode a
    map carries a heartbeat again only when it changes, so its uptime is as of then."""
    status: PeerStatus = "online"

    @property
    def uptime(self) -> float:
        """The peer's uptime when it was last heard of, from the heartbeat's and the time since."""
        return self.heartbeat.uptime + max(0.0, self.last_seen - (self.heartbeat_at or self.last_seen))


class NetworkMap:
    """Peers keyed by address; a peer is online until it misses `missed_limit` heartbeats."""

    def __init__(self, missed_limit: int = 3, clock: Callable[[], float] = time.time) -> None:
        self.missed_limit = missed_limit
        self.clock = clock
        self._peers: dict[str, Peer] = {}

    def observe(self, address: str, payload: dict[str, Any], public_key: bytes | None = None) -> Peer:
        """Record a heartbeat; raises `ValueError` if the payload is not a heartbeat."""
        try:
            hb = Heartbeat.model_validate(payload)
        except ValidationError as exc:
            raise ValueError(f"bad heartbeat from {address}: {exc.error_count()} error(s)") from None
        now = self.clock()
        peer = self._peers.get(address)
        if peer is None:
            peer = Peer(
                address=address,
                ai_address=ai_address(public_key) if public_key else None,
                last_seen=now,
                first_seen=now,
                heartbeats=1,
                heartbeat=hb,
                heartbeat_at=now,
            )
            self._peers[address] = peer
        else:
            peer.last_seen, peer.heartbeat, peer.heartbeat_at, peer.status = now, hb, now, "online"
            peer.heartbeats += 1
        return peer

    def put(self, address: str, hb: Heartbeat, last_seen: float) -> Peer:
        """Record a peer as a published network map describes it (heard `last_seen` by an oracle)."""
        peer = self._peers.get(address)
        if peer is None:
            peer = Peer(
                address=address, ai_address=hb.ai_address, last_seen=last_seen, first_seen=last_seen,
                heartbeats=1, heartbeat=hb, heartbeat_at=last_seen,
            )  # fmt: skip
            self._peers[address] = peer
        else:
            peer.heartbeat, peer.heartbeat_at = hb, last_seen
            peer.last_seen = max(peer.last_seen, last_seen)
            peer.heartbeats += 1
        peer.status = self.status_of(peer)
        return peer

    def touch(self, addresses: list[str], now: float) -> None:
        """Peers a published map lists as online: seen at `now` (unknown addresses are skipped)."""
        for address in addresses:
            peer = self._peers.get(address)
            if peer is not None and peer.last_seen < now:
                peer.last_seen = now

    def mark_offline(self, address: str) -> None:
        """A peer a published map no longer lists: offline from now on, until heard of again."""
        peer = self._peers.get(address)
        if peer is not None:
            peer.last_seen = min(
                peer.last_seen, self.clock() - self.missed_limit * peer.heartbeat.interval - 1e-3
            )
            peer.status = "offline"

    def status_of(self, peer: Peer, now: float | None = None) -> PeerStatus:
        now = self.clock() if now is None else now
        deadline = peer.last_seen + self.missed_limit * peer.heartbeat.interval
        return "online" if now <= deadline else "offline"

    def refresh(self) -> None:
        now = self.clock()
        for peer in self._peers.values():
            peer.status = self.status_of(peer, now)

    def peers(self) -> list[Peer]:
        self.refresh()
        return sorted(self._peers.values(), key=lambda p: p.address)

    def online(self) -> list[Peer]:
        return [p for p in self.peers() if p.status == "online"]

    def get(self, address: str) -> Peer | None:
        peer = self._peers.get(address)
        if peer is not None:
            peer.status = self.status_of(peer)
        return peer

    def forget(self, address: str) -> bool:
        """Drop a peer (e.g. one that lost its admission); True if it was known. Any address case."""
        for known in [a for a in self._peers if a.lower() == address.lower()]:
            del self._peers[known]
            return True
        return False

    def __len__(self) -> int:
        return len(self._peers)
