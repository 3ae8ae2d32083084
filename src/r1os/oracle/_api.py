"""The oracle's HTTP API (`/v1/oracle/...`): epochs, records, signed availability, misbehaviour.

Routes are thin: they call the service's public methods and return its models; a refusal is an
`OracleError` raised by the service, which the node answers as `{"error", "cause", "hint"}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Query

from r1os.node import ERROR_RESPONSES
from r1os.oracle._consensus import EpochRecord
from r1os.oracle._models import MisbehaviourList, NodeAvailability, OracleStatus, RangeSignature

if TYPE_CHECKING:
    from r1os.oracle._service import OracleSyncService

EPOCHS_HELP = "A:B, inclusive (A: or :B take the other end from the epochs this oracle holds)"


def install_routes(router: APIRouter, svc: OracleSyncService) -> None:
    """Add the oracle's routes to `router` (the service's own, mounted by the node)."""

    @router.get("/v1/oracle/epochs", response_model=OracleStatus, responses=ERROR_RESPONSES)
    async def epochs() -> OracleStatus:
        """The epoch clock, the oracle set and quorum, the epochs closed and the ones that failed."""
        return svc.status()

    @router.get("/v1/oracle/epochs/{epoch}", response_model=EpochRecord, responses=ERROR_RESPONSES)
    async def epoch(epoch: int) -> EpochRecord:
        """The agreed record of one epoch (404 `epoch_not_agreed` if this oracle has none)."""
        return await svc.record(epoch)

    @router.get("/v1/oracle/availability/{node}", response_model=NodeAvailability, responses=ERROR_RESPONSES)
    async def availability(
        node: str,
        epochs: str | None = Query(None, description=EPOCHS_HELP),
        claim: bool = Query(True, description="also gather range signatures for a claim"),
    ) -> NodeAvailability:
        """A node's agreed availability per epoch, with every oracle's signatures; and, unless
        claim=false, a claim-ready range signed by this oracle and every other oracle it reaches."""
        first, last = svc.epoch_range(epochs)
        return await svc.node_availability(node, first, last, claim=claim)

    @router.get("/v1/oracle/sign/{node}", response_model=RangeSignature, responses=ERROR_RESPONSES)
    async def sign(node: str, epochs: str = Query(..., description=EPOCHS_HELP)) -> RangeSignature:
        """This oracle's signature over a node's agreed bytes for a range (what claims carry)."""
        first, last = svc.epoch_range(epochs)
        return await svc.sign_range(node, first, last)

    @router.get(
        "/v1/oracle/misbehaviour",
        response_model=MisbehaviourList,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
    )
    async def misbehaviour() -> MisbehaviourList:
        """Oracles reported as misbehaving: strong disagreement, equivocation, bad signatures."""
        return MisbehaviourList(entries=await svc.misbehaviour())
