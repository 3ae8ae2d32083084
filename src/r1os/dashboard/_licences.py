"""Licences and rewards per node, for the page, read from the chain by this node.

For each node this node knows (itself first, then online peers, at most `MAX_NODES`): the licence linked
to it on the chain (ND, MND or GND: token id, owner), what it has claimed, how many ended epochs wait to
be claimed, and what claiming them would pay now: the licence contract's own `compute_reward` over the
oracles' agreed availability for those epochs (from the availability relay: the consecutive ones the
oracles have closed; unknown when the first is not among the relay's last `MAX_EPOCHS`). Earned =
claimed + claimable.

A node without a chain (`chain_deployment` not set) answers `{"chain": false}` and the page says so.
Cost bound for anonymous callers: the route takes no input; one refresh at a time (concurrent callers
wait for it and share its result), at most one per `TTL` seconds and `READ_TIMEOUT` long, and a failure
is answered again for `TTL` seconds rather than asked of the chain at once. Amounts are decimal strings
of wei (R1 has 18 decimals; JSON numbers in browsers stop being exact at 2^53).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from r1os.dashboard._errors import DashboardError, NoOracle
from r1os.errors import R1osError
from r1os.node import ServiceContext

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient
    from r1os.dashboard._relay import AvailabilityRelay

log = logging.getLogger("r1os.dashboard")

MAX_NODES = 64
TTL = 5.0
CHAIN_TIMEOUT = 10.0  # each call (sequential: one worker thread at a time)
READ_TIMEOUT = 30.0  # a whole read


class ChainUnreachable(DashboardError):
    """The chain (or its deployment file) could not be read."""

    cause = "unreachable"
    status = 502
    hint = "check the node's chain_deployment setting and that its RPC endpoint answers"


class LicenceReader:
    def __init__(self, ctx: ServiceContext, relay: AvailabilityRelay) -> None:
        self.ctx = ctx
        self.relay = relay
        self._lock = asyncio.Lock()
        self._client: ChainClient | None = None
        self._answer: dict[str, Any] | None = None
        self._failure: ChainUnreachable | None = None
        self._at = -TTL
        self.refreshes = 0  # reads of the chain (a test checks concurrent callers share one)

    @property
    def configured(self) -> bool:
        return self.ctx.config.chain_deployment is not None

    def _chain(self) -> ChainClient:
        if self._client is None:
            from r1os.chain.client import ChainClient
            from r1os.chain.deployment import Deployment

            path = self.ctx.config.chain_deployment
            assert path is not None
            try:
                deployment = Deployment.load(path)
            except (OSError, ValueError, R1osError) as exc:
                raise ChainUnreachable(f"cannot read the chain deployment {path.name}: {exc}") from None
            self._client = ChainClient(deployment, timeout=CHAIN_TIMEOUT)
        return self._client

    def nodes(self) -> list[str]:
        """This node, then the online peers, then the others; at most `MAX_NODES`."""
        out = [self.ctx.address]
        peers = sorted(self.ctx.netmap.peers(), key=lambda p: (p.status != "online", p.address))
        out.extend(p.address for p in peers if p.address != self.ctx.address)
        return out[:MAX_NODES]

    async def licences(self) -> dict[str, Any]:
        if not self.configured:
            return {"chain": False, "reason": "no chain configured on this node", "nodes": []}
        async with self._lock:
            if time.monotonic() - self._at < TTL:
                if self._failure is not None:
                    raise ChainUnreachable(str(self._failure))
                assert self._answer is not None
                return self._answer
            self.refreshes += 1
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    self._answer, self._failure = await self._read(), None
            except TimeoutError:
                exc = ChainUnreachable(f"the chain did not answer within {READ_TIMEOUT:g} s")
                log.info("dashboard: licences: %s", exc)
                self._answer, self._failure = None, exc
            except ChainUnreachable as exc:
                log.info("dashboard: licences: %s", exc)
                self._answer, self._failure = None, exc
            self._at = time.monotonic()
            if self._answer is None:
                raise ChainUnreachable(str(self._failure))
            return self._answer

    async def _agreed(self) -> tuple[dict[int, dict[str, int]], str | None]:
        """The relay's agreed tables by epoch (lower-case node addresses), and why there are none."""
        try:
            data = await self.relay.availability(48)
        except NoOracle as exc:
            return {}, str(exc)
        return {
            row["epoch"]: {n.lower(): v for n, v in row["values"].items()} for row in data["epochs"]
        }, None

    async def _read(self) -> dict[str, Any]:
        chain = self._chain()
        agreed, no_availability = await self._agreed()
        rows = []
        try:
            current = await chain.current_epoch()
            for node in self.nodes():
                rows.append(await self._row(chain, node, agreed))
        except R1osError as exc:
            raise ChainUnreachable(f"the chain did not answer: {str(exc)[:300]}") from None
        return {
            "chain": True,
            "chain_id": chain.deployment.chain_id,
            "current_epoch": current,
            "availability": no_availability or "ok",
            "nodes": rows,
            "at": time.time(),
        }

    async def _row(self, chain: ChainClient, node: str, agreed: dict[int, dict[str, int]]) -> dict[str, Any]:
        lic = await chain.licence_of(node)
        if lic is None:
            return {"node": node, "licence": None}
        first, n = lic.next_claim_epoch, lic.claimable_epochs
        # the ended epochs the oracles have agreed on, from the first unclaimed one on (a claim covers
        # consecutive epochs from there); the newest ones may still be closing
        values: list[int] = []
        for epoch in range(first, first + n):
            if epoch not in agreed:
                break
            values.append(agreed[epoch].get(node.lower(), 0))
        claimable: int | None
        if values:
            claimable = await chain.compute_reward(lic.token_id, values, lic.type)
        else:
            claimable = 0 if n == 0 else None  # none agreed yet, or older than the relay keeps
        return {
            "node": node,
            "licence": {"type": lic.type, "token_id": lic.token_id, "owner": lic.owner},
            "next_claim_epoch": first,
            "claimable_epochs": n,
            "claimed": str(lic.claimed),
            "claimable": None if claimable is None else str(claimable),
            "earned": None if claimable is None else str(lic.claimed + claimable),
            "agreed_epochs": len(values),
            "waiting_availability": values,
        }
