"""Provider and pin records in CSTORE, and the choice of which nodes hold the replicas of a pin.

    pub:r1fs:prov:<cid>  field <holder address>    -> {"size": n, "ts": t, "replica": bool}
    pub:r1fs:pin:<cid>   field <requester address> -> {"replicas": n, "ts": t}

Under `pub:` a hash field is writable only by the node whose address it is, so every node writes only its
own lines and nobody can forge another's. A record outlives its writer; readers judge whether a holder is
still there from the network map, not from the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

PROV = "pub:r1fs:prov:"
PIN = "pub:r1fs:pin:"


#: Called with (key, field, value) after a change under a watched prefix (value None: deleted).
Watcher = Callable[[str, str | None, Any], None]


class KeyValue(Protocol):
    """The part of CSTORE's in-process API that R1FS uses (`CStoreService` is one; tests pass others)."""

    async def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None: ...

    async def hgetall(self, key: str) -> dict[str, Any]: ...

    async def hdel(self, key: str, field: str) -> bool: ...

    async def keys(self, prefix: str = "") -> list[str]: ...

    def watch(self, prefix: str, callback: Watcher) -> None: ...

    def unwatch(self, callback: Watcher) -> None: ...


def rank(cid: str, addresses: set[str] | list[str]) -> list[str]:
    """Rendezvous order of nodes for a CID: every node computes the same order from the same view."""
    return sorted(addresses, key=lambda a: hashlib.sha256(f"{cid}|{a.lower()}".encode()).digest())


class Directory:
    """This node's view of who holds what and which pins the network wants."""

    def __init__(self, kv: KeyValue, address: str) -> None:
        self.kv = kv
        self.me = address.lower()

    async def announce(self, cid: str, size: int, ts: float, *, replica: bool) -> None:
        await self.kv.hset(PROV + cid, self.me, {"size": size, "ts": ts, "replica": replica})

    async def withdraw(self, cid: str) -> None:
        await self.kv.hdel(PROV + cid, self.me)

    async def providers(self, cid: str) -> dict[str, dict[str, Any]]:
        raw = await self.kv.hgetall(PROV + cid)
        return {k.lower(): v for k, v in raw.items() if isinstance(v, dict)}

    async def request_pin(self, cid: str, replicas: int, ts: float) -> None:
        await self.kv.hset(PIN + cid, self.me, {"replicas": replicas, "ts": ts})

    async def cancel_pin(self, cid: str) -> None:
        await self.kv.hdel(PIN + cid, self.me)

    async def pin_requests(self, cid: str) -> dict[str, dict[str, Any]]:
        raw = await self.kv.hgetall(PIN + cid)
        return {k.lower(): v for k, v in raw.items() if isinstance(v, dict)}

    async def pinned_cids(self) -> list[str]:
        return [k[len(PIN) :] for k in await self.kv.keys(PIN)]


def wanted_replicas(requests: dict[str, dict[str, Any]]) -> int:
    """The most copies any requester asked for (0 when nobody pins the CID)."""
    best = 0
    for rec in requests.values():
        n = rec.get("replicas")
        if isinstance(n, int) and not isinstance(n, bool) and n > best:
            best = n
    return best


def plan(
    cid: str,
    me: str,
    *,
    wanted: int,
    holders: set[str],
    replica_holders: set[str],
    candidates: set[str],
) -> str:
    """What this node should do about one pinned CID: "fetch", "drop" or "" (nothing).

    `holders` are the live nodes that announce a full copy, `replica_holders` those of them holding it only
    as a replica (droppable), `candidates` the live nodes able to hold one (this node included).
    """
    if wanted <= 0:
        return "drop" if me in replica_holders else ""
    if me not in holders and len(holders) < wanted:
        need = wanted - len(holders)
        if me in rank(cid, candidates - holders)[:need]:
            return "fetch"
    if me in replica_holders and len(holders) > wanted:
        excess = len(holders) - wanted
        if me in list(reversed(rank(cid, replica_holders)))[:excess]:
            return "drop"
    return ""
