"""Re-replication: every node looks at the network's pin requests now and then and fetches or drops its
copies so that each pinned CID has the wanted number of live holders (the choice itself is the pure
`plan` in `_providers.py`; see docs/r1fs.md, Replication)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from r1os.r1fs._dag import parse_cid
from r1os.r1fs._providers import Directory, plan, wanted_replicas

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs")


class Replication:
    """The reconcile loop of one node's R1FS, over the provider and pin records in `directory`."""

    def __init__(self, svc: R1fsService, directory: Directory) -> None:
        self.svc = svc
        self.dir = directory
        self.wake = asyncio.Event()
        """Set to run a pass now (a pin request came or went) rather than at the next interval."""
        self._replicating: set[str] = set()
        self._started = time.time()

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

    async def reconcile(self) -> dict[str, str]:
        """One pass over the pinned CIDs; returns the action taken per CID (for logs and tests)."""
        svc, me = self.svc, self.svc.me
        now = time.time()
        actions: dict[str, str] = {}
        cids = set(await self.dir.pinned_cids())
        cids.update(c for c, p in svc.pins.items() if p.get("kind") == "replica")
        candidates = self.candidates()
        for cid in sorted(cids):
            requests = await self.dir.pin_requests(cid)
            wanted = min(wanted_replicas(requests), len(candidates))
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
            await svc.fetcher.fetch(root)
            size = await svc.size(root)
            svc.keep(cid, size, kind="replica")
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
