"""Re-replication: every node looks at the network's pin requests now and then and fetches or drops its
copies so that each pinned CID has the wanted number of live holders (the choice itself is the pure
`plan` in `_providers.py`; see docs/r1fs.md, Replication).

A pin request is a CSTORE record anyone with a key can write (its own field of a `pub:` hash), so a
request counts only when its writer is a node this one knows: itself, or a peer of the network map
(with dAuth, an admitted one: unadmitted nodes are not in the map). Nodes make requests only for pins
their callers paid for from their quota, capped at `max_replicas`; a request asking for more counts as
that many. One pass looks at no more than MAX_PASS_CIDS pinned CIDs and yields to the loop as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from r1os.r1fs._dag import parse_cid
from r1os.r1fs._providers import Directory, plan, wanted_replicas

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs")

#: Pinned CIDs one reconcile pass looks at (the rest wait for the next pass, in a rotating order).
MAX_PASS_CIDS = 10_000


class Replication:
    """The reconcile loop of one node's R1FS, over the provider and pin records in `directory`."""

    def __init__(self, svc: R1fsService, directory: Directory) -> None:
        self.svc = svc
        self.dir = directory
        self.wake = asyncio.Event()
        """Set to run a pass now (a pin request came or went) rather than at the next interval."""
        self._replicating: set[str] = set()
        self._started = time.time()
        self._offset = 0

    def alive(self, address: str, now: float) -> bool:
        """A holder counts until it has been unseen for longer than the grace period."""
        if address == self.svc.me:
            return True
        netmap = self.svc.ctx.netmap
        peer = netmap.get(address)
        if peer is None:
            for p in netmap.peers():
                if p.address.lower() == address:
                    peer = p
                    break
        return peer is not None and now - peer.last_seen <= self.svc.settings.grace

    def candidates(self) -> set[str]:
        """The live nodes able to hold a copy, this one included."""
        out = {self.svc.me}
        for p in self.svc.ctx.netmap.online():
            if "r1fs" in p.heartbeat.services and p.heartbeat.url:
                out.add(p.address.lower())
        return out

    def known(self) -> set[str]:
        """The nodes whose pin requests count: this one and the peers of the network map."""
        return {self.svc.me} | {p.address.lower() for p in self.svc.ctx.netmap.peers()}

    def wanted(self, requests: dict[str, dict[str, Any]], known: set[str]) -> int:
        """Copies the network wants: the most a known node asks for, at most max_replicas."""
        counted = {a: r for a, r in requests.items() if a in known}
        return min(wanted_replicas(counted), self.svc.settings.max_replicas)

    async def reconcile(self) -> dict[str, str]:
        """One pass over the pinned CIDs; returns the action taken per CID (for logs and tests)."""
        svc, me = self.svc, self.svc.me
        now = time.time()
        actions: dict[str, str] = {}
        cids = set(await self.dir.pinned_cids())
        cids.update(c for c, p in svc.pins.items() if p.get("kind") == "replica")
        todo = sorted(cids)
        if len(todo) > MAX_PASS_CIDS:  # rotate, so every CID comes up within a few passes
            self._offset = (self._offset + MAX_PASS_CIDS) % len(todo)
            todo = (todo[self._offset :] + todo[: self._offset])[:MAX_PASS_CIDS]
        candidates = self.candidates()
        known = self.known()
        for i, cid in enumerate(todo):
            if i % 100 == 99:
                await asyncio.sleep(0)  # a long pass must not hold the loop
            requests = await self.dir.pin_requests(cid)
            wanted = min(self.wanted(requests, known), len(candidates))
            records = await self.dir.providers(cid)
            local = svc.pins.get(cid)
            holders = {a for a in records if self.alive(a, now)}
            if local is not None:
                holders.add(me)
            replica_holders = {a for a in holders if records.get(a, {}).get("replica")}
            if local is not None and local.get("kind") == "replica":
                replica_holders.add(me)
            elif me in replica_holders:
                replica_holders.discard(me)
            action = plan(
                cid,
                me,
                wanted=wanted,
                holders=holders,
                replica_holders=replica_holders,
                candidates=candidates,
            )
            if action == "fetch" and cid not in self._replicating:
                self._replicating.add(cid)
                svc.ctx.spawn(self._replicate(cid), f"replicate-{cid[-8:]}")
            elif action == "drop":
                log.info(
                    "r1fs: dropping replica of %s (wanted %d, live holders %d)", cid, wanted, len(holders)
                )
                svc.drop_pin(cid)
                with contextlib.suppress(Exception):
                    await self.dir.withdraw(cid)
            if action:
                actions[cid] = action
        return actions

    async def _replicate(self, cid: str) -> None:
        svc = self.svc
        try:
            root = parse_cid(cid)
            log.info("r1fs: replicating %s", cid)
            size = await svc.replicate(root)  # fetched and kept as the node itself, for the network
            await svc.announce(cid, size, replica=svc.pins.get(cid, {}).get("kind") == "replica")
            log.info("r1fs: now holding a replica of %s", cid)
        except Exception as exc:
            log.warning("r1fs: replicating %s failed: %s (will retry)", cid, exc)
        finally:
            self._replicating.discard(cid)

    def _heartbeat(self) -> float:
        return max((p.heartbeat.interval for p in self.svc.ctx.netmap.peers()), default=10.0)

    async def run(self) -> None:
        """Announce what this node holds, then reconcile every interval or when woken (a node task)."""
        svc = self.svc
        # Re-announce: the records may be older than a wipe of the store.
        for cid, pin in list(svc.pins.items()):
            await svc.announce(cid, int(pin.get("size", 0)), replica=pin.get("kind") == "replica")
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that comes as
            # the event is set, and the node's stop would then wait for this loop in vain.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(svc.settings.reconcile_interval):
                    await self.wake.wait()
            self.wake.clear()
            # A fresh node has not heard every peer yet: do not judge holders gone before a grace period.
            if time.time() - self._started < min(svc.settings.grace, 3 * self._heartbeat()):
                continue
            try:
                await self.reconcile()
            except Exception:
                log.exception("r1fs: reconcile failed")
