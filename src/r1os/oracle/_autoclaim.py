"""Auto-claim: a node that claims its own rewards every K epochs with the oracles' signatures."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1os.errors import NodeError
from r1os.node import Service, ServiceContext
from r1os.oracle._client import NothingToClaim, fetch_signed

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient
    from r1os.chain.deployment import Deployment

log = logging.getLogger("r1os.oracle.claims")


class AutoClaimService(Service):
    """Claims this node's rewards every `every` epochs, paid to the licence owner (a node setting).

    The node's own key sends the transaction (it needs gas money); oracles are found in the network
    map."""

    name = "autoclaim"

    def __init__(self, every: int, deployment: Path | None) -> None:
        self.every = every
        self.deployment_path = deployment
        self.claims: list[dict[str, Any]] = []
        self._ctx: ServiceContext | None = None
        self.deployment: Deployment | None = None
        self.chain: ChainClient | None = None

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        if self.deployment_path is None:
            log.error("auto-claim needs the chain deployment (chain_deployment setting); disabled")
            return
        from r1os.chain.client import ChainClient
        from r1os.chain.deployment import Deployment

        self.deployment = Deployment.load(self.deployment_path)
        self.chain = ChainClient(self.deployment, ctx.key)
        ctx.spawn(self._loop(self.deployment), "loop")

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise NodeError("the auto-claim service has not started")
        return self._ctx

    def _oracle_urls(self) -> list[str]:
        return [p.heartbeat.url for p in self.ctx.netmap.online() if p.heartbeat.oracle and p.heartbeat.url]

    async def _loop(self, dep: Deployment) -> None:
        while True:
            now = time.time()
            epoch = dep.epoch_at(now)
            # wake a little after the oracles close epoch boundaries that are multiples of `every`
            target = (epoch // self.every + 1) * self.every
            wake = dep.genesis_time + target * dep.epoch_seconds + dep.epoch_seconds / 2
            await asyncio.sleep(max(0.5, wake - now))
            await self.claim_once()

    async def claim_once(self) -> dict[str, Any] | None:
        """Claim everything claimable now through the first oracle that can sign it; the claim made
        (epochs and amount), or None."""
        if self.chain is None:
            return None
        for url in self._oracle_urls():
            try:
                signed, lic = await fetch_signed(url, self.chain, self.ctx.address, http=self.ctx.http)
                amount = await self.chain.claim_rewards(
                    lic.token_id, signed.first_epoch, signed.availabilities, signed.signatures, lic.type
                )
            except NothingToClaim as exc:
                log.info("auto-claim: %s", exc)
                return None
            except Exception as exc:  # this oracle (or the chain through it) failed: try the next one
                log.warning("auto-claim via %s failed: %s", url, exc)
                continue
            entry = {"first_epoch": signed.first_epoch, "last_epoch": signed.last_epoch, "amount": amount}
            self.claims.append(entry)
            log.info("auto-claim: %s R1 wei for epochs %d..%d", amount, signed.first_epoch, signed.last_epoch)
            return entry
        log.warning("auto-claim: no oracle could provide signatures")
        return None
