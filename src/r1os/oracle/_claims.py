"""Claiming rewards with oracle signatures fetched over HTTP (the CLI and the auto-claim service).

A claim must start at the licence's first unclaimed epoch and end at an ended epoch, so the range is
read from the chain, cut at the last epoch the oracles closed, and the oracle gathers the range
signatures of the other oracles it can reach.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from r1os.chain.digests import MAX_EPOCHS_PER_CLAIM, SignedAvailability
from r1os.errors import ChainError
from r1os.node import Service, ServiceContext

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient

log = logging.getLogger("r1os.oracle.claims")


class NothingToClaim(ChainError):
    """No ended, agreed epoch is waiting to be claimed."""


async def oracle_get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET an oracle API path; errors become ChainError with the oracle's own message."""
    async with httpx.AsyncClient(timeout=30) as http:
        try:
            r = await http.get(f"{url.rstrip('/')}{path}", params=params)
        except httpx.HTTPError as exc:
            raise ChainError(f"cannot reach the oracle at {url}: {exc}", hint="is it running?") from None
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise ChainError(f"oracle {url}: {detail}")
    return r.json()


async def fetch_signed(
    oracle_url: str, chain: ChainClient, node: str, *, max_epochs: int | None = None
) -> tuple[SignedAvailability, Any]:
    """The signed availability for everything `node`'s licence can claim now, and that licence."""
    lic = await chain.licence_of(node)
    if lic is None:
        raise ChainError(f"no licence is linked to {node}")
    summary = await oracle_get(oracle_url, "/v1/oracle/epochs")
    last_closed = summary.get("last_closed")
    first = lic.next_claim_epoch
    last = first + lic.claimable_epochs - 1
    if last_closed is not None:
        last = min(last, int(last_closed))
    last = min(last, first + (max_epochs or MAX_EPOCHS_PER_CLAIM) - 1)
    if lic.claimable_epochs == 0 or last_closed is None or last < first:
        raise NothingToClaim(
            f"nothing to claim for {node}: next epoch {first}, {lic.claimable_epochs} ended,"
            f" oracles closed up to {last_closed}"
        )
    data = await oracle_get(oracle_url, f"/v1/oracle/availability/{node}", {"epochs": f"{first}:{last}"})
    signed = SignedAvailability.model_validate({**data["claim"], "token_id": lic.token_id, "type": lic.type})
    need = await chain.min_signatures()
    if len(signed.signatures) < need:
        raise ChainError(
            f"the oracles gave {len(signed.signatures)} signature(s), the contract needs {need}",
            hint="wait for the other oracles to come back, or ask another oracle",
        )
    return signed, lic


class AutoClaimService(Service):
    """Claims this node's rewards every `every` epochs, paid to the licence owner (a node setting).

    The node's own key sends the transaction (it needs gas money); oracles are found in the network
    map."""

    name = "autoclaim"

    def __init__(self, every: int, deployment: Path | None) -> None:
        self.every = every
        self.deployment_path = deployment
        self.claims: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        if self.deployment_path is None:
            log.error("auto-claim needs the chain deployment (chain_deployment setting); disabled")
            return
        from r1os.chain.client import ChainClient
        from r1os.chain.deployment import Deployment

        self.deployment = Deployment.load(self.deployment_path)
        self.chain = ChainClient(self.deployment, ctx.key)
        self._task = asyncio.create_task(self._loop(), name="autoclaim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _oracle_urls(self) -> list[str]:
        return [p.heartbeat.url for p in self.ctx.netmap.online() if p.heartbeat.oracle and p.heartbeat.url]

    async def _loop(self) -> None:
        dep = self.deployment
        while True:
            now = time.time()
            epoch = dep.epoch_at(now)
            # wake a little after the oracles close epoch boundaries that are multiples of `every`
            target = (epoch // self.every + 1) * self.every
            wake = dep.genesis_time + target * dep.epoch_seconds + dep.epoch_seconds / 2
            await asyncio.sleep(max(0.5, wake - now))
            await self.claim_once()

    async def claim_once(self) -> dict[str, Any] | None:
        for url in self._oracle_urls():
            try:
                signed, lic = await fetch_signed(url, self.chain, self.ctx.key.address)
                amount = await self.chain.claim_rewards(
                    lic.token_id, signed.first_epoch, signed.availabilities, signed.signatures, lic.type
                )
            except NothingToClaim as exc:
                log.info("auto-claim: %s", exc)
                return None
            except Exception as exc:
                log.warning("auto-claim via %s failed: %s", url, exc)
                continue
            entry = {"first_epoch": signed.first_epoch, "last_epoch": signed.last_epoch, "amount": amount}
            self.claims.append(entry)
            log.info("auto-claim: %s R1 wei for epochs %d..%d", amount, signed.first_epoch, signed.last_epoch)
            return entry
        log.warning("auto-claim: no oracle could provide signatures")
        return None
