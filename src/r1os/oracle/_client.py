"""Asking oracles over HTTP, and claiming rewards with their signatures (the CLI and auto-claim).

A claim must start at the licence's first unclaimed epoch and end at an ended epoch, so the range is
read from the chain, cut at the last epoch the oracles closed, and the oracle gathers the range
signatures of the other oracles it can reach. Client side only: nothing here loads the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from r1os.chain.digests import MAX_EPOCHS_PER_CLAIM, SignedAvailability
from r1os.errors import ChainError, error_from_body
from r1os.oracle._errors import OracleError
from r1os.oracle._models import NodeAvailability, OracleStatus

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient, Licence

#: Seconds an oracle may take to answer: gathering a claim asks the other oracles (5 s each) first.
TIMEOUT = 30.0


class NothingToClaim(ChainError):
    """No ended, agreed epoch is waiting to be claimed."""

    cause = "nothing_to_claim"
    status = 409


async def oracle_get(
    url: str, path: str, params: dict[str, Any] | None = None, *, http: httpx.AsyncClient | None = None
) -> Any:
    """GET an oracle API path and return its JSON. An error answer becomes an `OracleError` with the
    oracle's own message, cause, hint and status. `http`: a client to reuse (a node's shared one);
    without it a client is made for this request."""
    if http is None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as own:
            return await _get(own, url, path, params)
    return await _get(http, url, path, params)


async def _get(http: httpx.AsyncClient, url: str, path: str, params: dict[str, Any] | None) -> Any:
    try:
        r = await http.get(f"{url.rstrip('/')}{path}", params=params, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise OracleError(
            f"cannot reach the oracle at {url}: {exc}", hint="is it running?", cause="unreachable", status=503
        ) from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        remote = error_from_body(r.status_code, body, fallback=r.text)
        raise OracleError(
            f"oracle {url}: {remote}", hint=remote.hint, cause=remote.cause, status=remote.status
        )
    if body is None:
        raise OracleError(f"oracle {url}: the answer to {path} is not JSON", cause="bad_answer", status=502)
    return body


async def fetch_signed(
    oracle_url: str,
    chain: ChainClient,
    node: str,
    *,
    max_epochs: int | None = None,
    http: httpx.AsyncClient | None = None,
) -> tuple[SignedAvailability, Licence]:
    """The signed availability for everything `node`'s licence can claim now, and that licence."""
    lic = await chain.licence_of(node)
    if lic is None:
        raise ChainError(f"no licence is linked to {node}")
    status = OracleStatus.model_validate(await oracle_get(oracle_url, "/v1/oracle/epochs", http=http))
    last_closed = status.last_closed
    first = lic.next_claim_epoch
    last = first + lic.claimable_epochs - 1
    if last_closed is not None:
        last = min(last, last_closed)
    last = min(last, first + (max_epochs or MAX_EPOCHS_PER_CLAIM) - 1)
    if lic.claimable_epochs == 0 or last_closed is None or last < first:
        raise NothingToClaim(
            f"nothing to claim for {node}: next epoch {first}, {lic.claimable_epochs} ended,"
            f" oracles closed up to {last_closed}"
        )
    raw = await oracle_get(
        oracle_url, f"/v1/oracle/availability/{node}", {"epochs": f"{first}:{last}"}, http=http
    )
    claim = NodeAvailability.model_validate(raw).claim
    if claim is None:
        raise OracleError(f"oracle {oracle_url} gave no claim signatures", cause="bad_answer", status=502)
    signed = SignedAvailability.model_validate(
        {**claim.model_dump(), "token_id": lic.token_id, "type": lic.type}
    )
    need = await chain.min_signatures()
    if len(signed.signatures) < need:
        raise ChainError(
            f"the oracles gave {len(signed.signatures)} signature(s), the contract needs {need}",
            hint="wait for the other oracles to come back, or ask another oracle",
        )
    return signed, lic
