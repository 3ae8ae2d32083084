"""EDIL's HTTP routes on every node (see docs/edil.md)."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from r1os.edil._errors import EdilError
from r1os.edil._spec import spec_from_data
from r1os.edil._state import JobState
from r1os.node import ERROR_RESPONSES, Forbidden

if TYPE_CHECKING:
    from r1os.edil._service import EdilService

MAX_SPEC_BYTES = 256 * 1024


class JobView(BaseModel):
    """A job, with what a user asks first: how far it got and how good the model is."""

    job_id: str
    name: str
    phase: str
    owner: str
    owner_node: str
    aggregator: str
    participants: list[str]
    privacy: str
    round: int
    rounds: int
    rounds_done: int
    test_accuracy: float | None
    model_cid: str
    error: str = ""
    history: list[dict[str, Any]]
    created_ms: int
    updated_ms: int


class JobList(BaseModel):
    jobs: list[JobView]


def view(job: JobState) -> JobView:
    done = job.history
    accuracy = next((h.test_accuracy for h in reversed(done) if h.test_accuracy is not None), None)
    return JobView(
        job_id=job.job_id,
        name=job.name,
        phase=job.phase,
        owner=job.owner,
        owner_node=job.owner_node,
        aggregator=job.aggregator,
        participants=job.participants,
        privacy=job.privacy,
        round=job.round,
        rounds=job.rounds,
        rounds_done=len(done),
        test_accuracy=accuracy,
        model_cid=job.model_cid,
        error=job.error,
        history=[h.model_dump(mode="json") for h in done],
        created_ms=job.created_ms,
        updated_ms=job.updated_ms,
    )


def install_routes(router: APIRouter, svc: EdilService) -> None:
    ctx = svc.ctx
    ctx.allow_body("/v1/edil/jobs", MAX_SPEC_BYTES)

    async def owner_or_operator(request: Request, job: JobState) -> None:
        caller = await ctx.auth.require(request)
        if not caller.local and (caller.address or "").lower() != job.owner:
            raise Forbidden(
                "this is for the job's owner (or this node's operator)", hint="sign with the owner's key"
            )

    @router.post("/v1/edil/jobs", response_model=JobView, responses=ERROR_RESPONSES, tags=["edil"])
    async def submit(request: Request) -> JobView:
        """Start a training job with this node as the owner's node: the caller (signed, or the operator)
        owns it. Body: {"spec": {...}} (the job spec as JSON)."""
        caller = await ctx.auth.require(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise EdilError("the body is not JSON", cause="bad_request") from None
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise EdilError('the body is {"spec": {...}}', cause="bad_request")
        spec = spec_from_data(body["spec"])
        state = await svc.submit(spec, caller.address or ctx.address)
        return view(state)

    @router.get("/v1/edil/jobs", response_model=JobList, responses=ERROR_RESPONSES, tags=["edil"])
    async def jobs() -> JobList:
        """Every job this node knows of (job records replicate to every node)."""
        return JobList(jobs=[view(j) for j in sorted(svc.jobs.values(), key=lambda j: -j.created_ms)])

    @router.get("/v1/edil/jobs/{job_id}", response_model=JobView, responses=ERROR_RESPONSES, tags=["edil"])
    async def job(job_id: str) -> JobView:
        """One job: phase, rounds done, the owner's test accuracy per round, the model's CID."""
        return view(svc.job(job_id))

    @router.post(
        "/v1/edil/jobs/{job_id}/stop", response_model=JobView, responses=ERROR_RESPONSES, tags=["edil"]
    )
    async def stop(request: Request, job_id: str) -> JobView:
        """Stop a job (on its owner's node; the owner or the operator)."""
        await owner_or_operator(request, svc.job(job_id))
        return view(await svc.stop_job(job_id))

    @router.get("/v1/edil/jobs/{job_id}/model", responses=ERROR_RESPONSES, tags=["edil"])
    async def model(request: Request, job_id: str) -> Response:
        """The current global model as an .npz (`params`, and the spec's model section as JSON), on the
        owner's node, for the owner or the operator."""
        await owner_or_operator(request, svc.job(job_id))
        state, params = svc.model_of(job_id)
        import numpy as np

        buf = io.BytesIO()
        spec = spec_from_data(state.spec)
        n_in, classes = spec.model_shape()
        meta = {
            "job": state.job_id,
            "round": len(state.history),
            "inputs": n_in,
            "classes": classes,
            "model": spec.model.model_dump(mode="json"),
        }
        np.savez(buf, params=params, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return Response(
            buf.getvalue(),
            media_type="application/octet-stream",
            headers={"content-disposition": f'attachment; filename="{state.name}-{state.job_id}.npz"'},
        )
