"""EDIL from outside a node: train a model over the network's nodes, follow its rounds, download it.

A job is submitted to one node, which becomes its owner's node: it holds the job's secret (the CKKS
context), decrypts each round's aggregate, tests the model on its held-out split and keeps the model. The
caller owns the job: the session's key (the request is signed), or, with a token and no key, the node's
operator (the job's owner is then the node's address). Only the owner, or that node's operator, stops a
job or downloads its model, and only from the owner's node (`GET /v1/edil/jobs/{id}/model`, a signed read).
Job records replicate to every node, so `status` and `list` work anywhere and need no key.

The spec is loaded and checked here first (`SpecError` naming the bad field), so nothing is sent for a
spec the node would refuse; its `@edgeN` placeholders are left for the owner's node to resolve against the
nodes it sees online.

`AsyncEdil` is `session.edil` of an `AsyncSession`; `Edil` its blocking twin on a `Session`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from r1os.errors import R1osError, RemoteError
from r1os.sdk._auth import NodeAuth
from r1os.sdk._http import Api, AsyncApi
from r1os.sdk._specs import read_spec_like

if TYPE_CHECKING:
    from r1os.edil._spec import JobSpec

SpecLike: TypeAlias = "JobSpec | str | Path | dict[str, Any]"
"""A `JobSpec`, a spec file's path, the spec's YAML/JSON text, or the parsed spec (a dict)."""

#: How often `wait` asks for the job's state.
WAIT_INTERVAL = 0.25
#: The phases a job ends in.
FINAL_PHASES = frozenset({"done", "failed", "stopped"})


class RoundView(BaseModel):
    """One finished round, as the owner's node recorded it."""

    model_config = ConfigDict(extra="allow")

    round: int
    included: list[str] = Field(default_factory=list, description="participants whose update was used")
    dropped: list[str] = Field(default_factory=list, description="participants that sent nothing in time")
    refused: dict[str, str] = Field(default_factory=dict, description="participant -> why its update was not")
    samples: int = 0
    test_accuracy: float | None = Field(default=None, description="on the owner's held-out split")
    model_cid: str | None = None
    seconds: float = 0.0
    update_bytes: dict[str, int] = Field(default_factory=dict)


class JobView(BaseModel):
    """A training job as every node serves it (`GET /v1/edil/jobs/{id}`)."""

    model_config = ConfigDict(extra="allow")  # a newer node's fields are kept (and printed by --json)

    job_id: str
    name: str
    phase: str = Field(description="training, done, failed or stopped")
    owner: str = Field(description="the address that submitted the job")
    owner_node: str = Field(description="the node it was submitted to: it keeps the model")
    aggregator: str
    participants: list[str]
    privacy: str
    round: int
    rounds: int
    rounds_done: int
    test_accuracy: float | None = Field(default=None, description="the latest round's, on the owner's split")
    model_cid: str
    error: str = ""
    history: list[RoundView] = Field(default_factory=list)
    created_ms: int
    updated_ms: int

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_PHASES


OnRound: TypeAlias = Callable[[JobView, RoundView], None]


class NoCaller(R1osError):
    """A request that only a job's owner (or the node's operator) may make, from a session that is neither."""

    cause = "no_caller"
    status = 401


class NotFinished(R1osError):
    """A job was still training when the wait ran out (it goes on)."""

    cause = "timeout"
    status = 504


class JobFailed(R1osError):
    """A job ended without finishing its rounds: it failed, or it was stopped. `job` is its last state."""

    cause = "job_failed"
    status = 500

    def __init__(self, message: str, job: JobView, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, cause="job_stopped" if job.phase == "stopped" else None)
        self.job = job


class NotOwnersNode(R1osError):
    """A job's model (or a stop) asked of a node that is not the job's owner's node."""

    cause = "not_owner"
    status = 404


# -- what both clients share: no I/O ------------------------------------------------------------------


def read_spec(spec: SpecLike) -> JobSpec:
    """A `JobSpec` from a spec, a parsed spec, a path to a spec file, or spec text; `SpecError` naming the
    bad field (`participants.1.data: ...`)."""
    from r1os.edil._spec import JobSpec, load_spec, parse_spec, spec_from_data

    if isinstance(spec, dict):
        return spec_from_data(spec)
    return read_spec_like(spec, JobSpec, load_spec, parse_spec)


def spec_body(spec: JobSpec) -> dict[str, Any]:
    """The submit route's body: the checked spec as JSON."""
    return {"spec": spec.model_dump(mode="json")}


def job_path(job_id: str, tail: str = "") -> str:
    if not job_id or len(job_id) > 128:
        raise R1osError(
            f"{job_id[:40]!r} is not a job id",
            cause="bad_request",
            status=400,
            hint="`r1os edil ls` lists jobs",
        )
    return f"/v1/edil/jobs/{quote(job_id, safe='')}{tail}"


def _view(data: dict[str, Any]) -> JobView:
    return JobView.model_validate(data)


def round_line(job: JobView, r: RoundView) -> str:
    """`round 3/30: 3 included, 0 dropped, 0 refused; test accuracy 0.9123 (1.4 s)`."""
    refused = ""
    if r.refused:
        refused = " (" + ", ".join(f"{p[:10]}: {why}" for p, why in sorted(r.refused.items())) + ")"
    accuracy = f"test accuracy {r.test_accuracy:.4f}" if r.test_accuracy is not None else "no test accuracy"
    return (
        f"round {r.round}/{job.rounds}: {len(r.included)} included, {len(r.dropped)} dropped, "
        f"{len(r.refused)} refused{refused}; {accuracy} ({r.seconds:.1f} s)"
    )


def ended(job: JobView) -> JobView:
    """`job` if it finished its rounds; `JobFailed` if it failed or was stopped."""
    if job.phase == "done":
        return job
    where = f"after {job.rounds_done}/{job.rounds} rounds"
    if job.phase == "stopped":
        raise JobFailed(
            f"job {job.job_id} ({job.name}) was stopped {where}",
            job,
            hint=f"its model so far: `r1os edil model {job.job_id}`, at its owner's node",
        )
    why = f": {job.error}" if job.error else ""
    raise JobFailed(
        f"job {job.job_id} ({job.name}) failed {where}{why}",
        job,
        hint=f"`r1os edil status {job.job_id}` shows each round",
    )


def not_finished(job: JobView, timeout: float) -> NotFinished:
    return NotFinished(
        f"job {job.job_id} ({job.name}): {job.rounds_done}/{job.rounds} rounds after {timeout:g} s, "
        "still training",
        hint=f"it goes on: `r1os edil status {job.job_id}` shows it, `r1os edil stop {job.job_id}` stops it",
    )


def report_new_rounds(job: JobView, seen: int, on_round: OnRound | None) -> int:
    """Call `on_round` for each round of `job` past the first `seen`; how many are seen now."""
    if on_round is not None:
        for r in job.history[seen:]:
            on_round(job, r)
    return max(seen, len(job.history))


class _Wait:
    """One `wait`: `check` each new state of the job until it ends; `NotFinished` once `timeout` passed."""

    def __init__(self, timeout: float | None, on_round: OnRound | None) -> None:
        self.timeout, self.on_round = timeout, on_round
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.seen = 0

    def check(self, job: JobView) -> JobView | None:
        """The job if it finished (`JobFailed` if it failed or was stopped); None to ask again later."""
        self.seen = report_new_rounds(job, self.seen, self.on_round)
        if job.finished:
            return ended(job)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise not_finished(job, self.timeout or 0.0)
        return None


def _need_caller(auth: NodeAuth, what: str) -> None:
    """`NoCaller` unless the session is someone: `what` is for the job's owner or the node's operator."""
    if auth.kind == "anonymous":
        raise NoCaller(
            f"{what} is for the job owner or the node operator, and this caller is neither"
            " (no key nor token)",
            hint="pass --key KEYSTORE or set $R1OS_PRIVATE_KEY, or run it on the node's machine as its "
            "operator (SDK: Session(url, key=...) or Session(url, token=...))",
        )


def elsewhere(job: JobView, url: str, peers: dict[str, Any], what: str) -> NotOwnersNode:
    """The error for a request only the owner's node answers (`what`: "its model is kept there only")
    asked of the node at `url`, which does not own `job`: names the owner's node and, when this node knows
    it, its URL."""
    owner_url = ""
    for p in peers.get("peers", []):
        if isinstance(p, dict) and str(p.get("address", "")).lower() == job.owner_node.lower():
            owner_url = str(p.get("url") or "")
    target = f"--node {owner_url}" if owner_url else f"--node with the URL of node {job.owner_node}"
    return NotOwnersNode(
        f"job {job.job_id} ({job.name}) was submitted to node {job.owner_node}; {what}, and {url} is "
        "another node",
        hint=f"ask the owner's node: {target} (SDK: a Session at that URL)",
    )


def _signing_reads(auth: NodeAuth) -> NodeAuth:
    """The session's caller, signing reads too (a model is the owner's: the GET must say who asks)."""
    if auth.key is None or auth.sign_reads:
        return auth
    signing = NodeAuth(auth.url, key=auth.key, sign_reads=True)
    signing.node = auth.node
    return signing


_FILENAME = re.compile(r'filename="([^"/\\]+)"')


def _filename(r: httpx.Response, job_id: str) -> str:
    found = _FILENAME.search(r.headers.get("content-disposition", ""))
    return found.group(1) if found else f"{job_id}.npz"


def _write(path: Path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all (a failed download leaves no half file)."""
    path = path.expanduser()
    if path.is_dir():
        raise R1osError(
            f"{path} is a folder", cause="bad_request", status=400, hint="name a file: -o FILE.npz"
        )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise R1osError(f"cannot write {path}: {exc.strerror or exc}", cause="io", status=500) from None
    return path


class AsyncEdil:
    """`session.edil` of an `AsyncSession`: train models over the network's nodes (EDIL)."""

    def __init__(self, api: AsyncApi, auth: NodeAuth) -> None:
        self._api = api
        self._auth = auth

    async def submit(self, spec: SpecLike) -> JobView:
        """Start a job with the session's node as the owner's node, owned by the session's caller; the job as
        it started (round 1 under way). The spec is checked here first (`SpecError`)."""
        job = read_spec(spec)
        _need_caller(self._auth, "submitting a training job")
        return _view(await self._api.post("/v1/edil/jobs", spec_body(job)))

    async def train(
        self,
        spec: SpecLike,
        *,
        wait: bool = True,
        timeout: float | None = None,
        on_round: OnRound | None = None,
    ) -> JobView:
        """Submit a job and (unless `wait=False`) wait until it ends; see `submit` and `wait`."""
        job = await self.submit(spec)
        if not wait:
            return job
        return await self.wait(job.job_id, timeout=timeout, on_round=on_round)

    async def wait(
        self, job_id: str, *, timeout: float | None = None, on_round: OnRound | None = None
    ) -> JobView:
        """Wait until the job ends; `on_round(job, round)` sees each round as it completes (those already
        done first). The finished job; `JobFailed` if it failed or was stopped, `NotFinished` past
        `timeout` seconds (None: no limit; the job goes on either way)."""
        waiting = _Wait(timeout, on_round)
        while True:
            if (done := waiting.check(await self.status(job_id))) is not None:
                return done
            await asyncio.sleep(WAIT_INTERVAL)

    async def status(self, job_id: str) -> JobView:
        """One job: phase, rounds done, each round's updates and test accuracy, the model's CID (any node)."""
        return _view(await self._api.get(job_path(job_id)))

    async def list(self) -> list[JobView]:
        """Every job the node knows of (job records replicate to every node), newest first."""
        return [_view(j) for j in (await self._api.get("/v1/edil/jobs")).get("jobs", [])]

    async def _elsewhere(self, job_id: str, what: str) -> NotOwnersNode:
        job = await self.status(job_id)  # `no_job` if there is no such job at all
        return elsewhere(job, self._api.url, await self._api.get("/v1/peers"), what)

    async def stop(self, job_id: str) -> JobView:
        """Stop a job (the owner or the node's operator, at the owner's node); the job as stopped."""
        _need_caller(self._auth, "stopping a job")
        try:
            return _view(await self._api.post(job_path(job_id, "/stop")))
        except R1osError as exc:
            if exc.cause == "not_owner":
                raise await self._elsewhere(job_id, "only that node stops it") from None
            raise

    async def _download(self, job_id: str) -> httpx.Response:
        _need_caller(self._auth, "a job's model")
        try:
            return await self._api.fetch(job_path(job_id, "/model"), auth=_signing_reads(self._auth))
        except RemoteError as exc:
            if exc.cause == "not_owner":
                raise await self._elsewhere(job_id, "its model is kept there only") from None
            raise

    async def model(self, job_id: str) -> bytes:
        """The job's current global model as .npz bytes: `params` (the flat float64 vector, laid out as
        `r1os.edil.layout(spec)` says) and `meta` (JSON bytes: job, round, inputs, classes, model). From
        the owner's node only, for the owner or its operator."""
        return (await self._download(job_id)).content

    async def save_model(self, job_id: str, path: str | Path | None = None) -> Path:
        """Download the model (see `model`) to `path` (default: `<name>-<job>.npz` here); the path."""
        r = await self._download(job_id)
        return _write(Path(path) if path is not None else Path(_filename(r, job_id)), r.content)


class Edil:
    """`session.edil` of a `Session`: the blocking twin of `AsyncEdil`."""

    def __init__(self, api: Api, auth: NodeAuth) -> None:
        self._api = api
        self._auth = auth

    def submit(self, spec: SpecLike) -> JobView:
        """Start a job owned by the session's caller (see `AsyncEdil.submit`)."""
        job = read_spec(spec)
        _need_caller(self._auth, "submitting a training job")
        return _view(self._api.post("/v1/edil/jobs", spec_body(job)))

    def train(
        self,
        spec: SpecLike,
        *,
        wait: bool = True,
        timeout: float | None = None,
        on_round: OnRound | None = None,
    ) -> JobView:
        """Submit a job and (unless `wait=False`) wait until it ends (see `AsyncEdil.train`)."""
        job = self.submit(spec)
        if not wait:
            return job
        return self.wait(job.job_id, timeout=timeout, on_round=on_round)

    def wait(self, job_id: str, *, timeout: float | None = None, on_round: OnRound | None = None) -> JobView:
        """Wait until the job ends, reporting each round (see `AsyncEdil.wait`)."""
        waiting = _Wait(timeout, on_round)
        while True:
            if (done := waiting.check(self.status(job_id))) is not None:
                return done
            time.sleep(WAIT_INTERVAL)

    def status(self, job_id: str) -> JobView:
        """One job (see `AsyncEdil.status`)."""
        return _view(self._api.get(job_path(job_id)))

    def list(self) -> list[JobView]:
        """Every job the node knows of, newest first."""
        return [_view(j) for j in self._api.get("/v1/edil/jobs").get("jobs", [])]

    def _elsewhere(self, job_id: str, what: str) -> NotOwnersNode:
        job = self.status(job_id)
        return elsewhere(job, self._api.url, self._api.get("/v1/peers"), what)

    def stop(self, job_id: str) -> JobView:
        """Stop a job (see `AsyncEdil.stop`)."""
        _need_caller(self._auth, "stopping a job")
        try:
            return _view(self._api.post(job_path(job_id, "/stop")))
        except R1osError as exc:
            if exc.cause == "not_owner":
                raise self._elsewhere(job_id, "only that node stops it") from None
            raise

    def _download(self, job_id: str) -> httpx.Response:
        _need_caller(self._auth, "a job's model")
        try:
            return self._api.fetch(job_path(job_id, "/model"), auth=_signing_reads(self._auth))
        except RemoteError as exc:
            if exc.cause == "not_owner":
                raise self._elsewhere(job_id, "its model is kept there only") from None
            raise

    def model(self, job_id: str) -> bytes:
        """The job's current global model as .npz bytes (see `AsyncEdil.model`)."""
        return self._download(job_id).content

    def save_model(self, job_id: str, path: str | Path | None = None) -> Path:
        """Download the model to `path` (default: `<name>-<job>.npz` here); the path."""
        r = self._download(job_id)
        return _write(Path(path) if path is not None else Path(_filename(r, job_id)), r.content)


__all__ = [
    "AsyncEdil",
    "Edil",
    "JobFailed",
    "JobView",
    "NoCaller",
    "NotFinished",
    "NotOwnersNode",
    "RoundView",
    "read_spec",
]
