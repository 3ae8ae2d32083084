"""dAuth's HTTP routes (`/v1/dauth/...`), on the service's public methods only.

Refusals are raised as `DauthError` (cause and status); the node's error handler answers them as
`{"error": message, "cause": word, "hint": ...}` like every other error of a node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from r1os.dauth._models import AdmissionRequest, AdmitAnswer, AdmittedAnswer, DauthStatus, RetryAnswer
from r1os.node._api import ERROR_RESPONSES

if TYPE_CHECKING:
    from r1os.dauth._service import DauthService
    from r1os.node import ApiAuth

# The body is read raw (not as a model): the signature covers the request exactly as the node sent it,
# and a model would re-encode it (e.g. an integer `ts` as a float). Documented here for /openapi.json.
_ADMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["request", "sig"],
                    "additionalProperties": False,
                    "properties": {
                        "request": AdmissionRequest.model_json_schema(),
                        "sig": {
                            "type": "string",
                            "pattern": "^0x[0-9a-f]{130}$",
                            "description": "EIP-191 signature over SHA-256 of the canonical JSON of request",
                        },
                    },
                }
            }
        },
    }
}


def install_routes(router: APIRouter, svc: DauthService, auth: ApiAuth) -> None:
    @router.post(
        "/v1/dauth/admit", response_model=AdmitAnswer, responses=ERROR_RESPONSES, openapi_extra=_ADMIT_BODY
    )
    async def admit(request: Request) -> AdmitAnswer:
        """Ask this oracle to admit the node that signed the request (oracles only)."""
        try:
            data = await request.json()
        except ValueError:
            data = None  # refused as `malformed` with the shape it should have
        return await svc.admit(data)

    @router.get("/v1/dauth/admitted", response_model=AdmittedAnswer, responses=ERROR_RESPONSES)
    async def admitted() -> AdmittedAnswer:
        """The admission records this node holds (every node)."""
        return svc.admitted_answer()

    @router.post("/v1/dauth/retry", response_model=RetryAnswer, responses=ERROR_RESPONSES)
    async def retry(request: Request) -> RetryAnswer:
        """Make a waiting edge node ask an oracle now instead of at its next backoff step (the node's
        operator only: each call makes the node write to an oracle)."""
        await auth.require(request, local=True)
        return RetryAnswer(retrying=svc.retry(), state=svc.state)

    @router.get("/v1/dauth/status", response_model=DauthStatus, responses=ERROR_RESPONSES)
    async def status() -> DauthStatus:
        """This node's admission state: admitted or waiting, why, until when."""
        return svc.status()
