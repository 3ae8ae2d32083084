"""What Deeploy stores in CSTORE and answers on the HTTP API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from r1os.deeploy._spec import AppSpec

if TYPE_CHECKING:
    from r1os.cstore import CStoreService

log = logging.getLogger("r1os.deeploy")
M = TypeVar("M", bound=BaseModel)

APP_PREFIX = "net:deeploy:app:"
PLAN_PREFIX = "net:deeploy:plan:"
NONCE_PREFIX = "net:deeploy:nonce:"
POAI_JOB_PREFIX = "net:poai:job:"


def replicas_key(node: str) -> str:
    """The hash where a node reports its replicas (field: app id)."""
    return f"node:{node}:deeploy:replicas"


def app_key(app_id: str) -> str:
    owner, name = app_id.split("/", 1)
    return f"{APP_PREFIX}{owner}:{name}"


def plan_key(app_id: str) -> str:
    owner, name = app_id.split("/", 1)
    return f"{PLAN_PREFIX}{owner}:{name}"


async def read_all(cstore: CStoreService, prefix: str, model: type[M], what: str = "") -> list[M]:
    """Every value stored under `prefix` that is a valid `model`; one that is not is skipped (and logged as
    an unreadable `what`, when `what` is given)."""
    out: list[M] = []
    for key in await cstore.keys(prefix):
        try:
            out.append(model.model_validate(await cstore.get(key)))
        except ValidationError:
            if what:
                log.warning("deeploy: skipping unreadable %s %s", what, key)
    return out


class AppRecord(BaseModel):
    """An app as the oracles keep it (`net:deeploy:app:<owner>:<name>`)."""

    owner: str
    name: str
    version: int = Field(ge=1, description="bumped by every update; replicas run one version each")
    spec: dict[str, Any] = Field(description="the spec, secret values replaced by a marker")
    sealed: dict[str, dict[str, str]] = Field(default_factory=dict, description="node -> sealed secrets")
    created_ms: int
    updated_ms: int

    @property
    def app_id(self) -> str:
        return f"{self.owner.lower()}/{self.name}"

    def app_spec(self) -> AppSpec:
        return AppSpec.model_validate(self.spec)


class Slot(BaseModel):
    """One replica the plan puts on one node."""

    node: str
    version: int


class Plan(BaseModel):
    """Where an app's replicas run (`net:deeploy:plan:<owner>:<name>`), written by the leading oracle."""

    app: str
    version: int
    replicas: list[Slot] = Field(default_factory=list)
    updated_ms: int = 0
    note: str = Field(
        default="", description="why the plan last changed (placed, failover, rolling update, ...)"
    )

    def nodes(self) -> list[str]:
        return sorted({s.node for s in self.replicas})


ReplicaPhase = Literal["starting", "running", "unhealthy", "restarting", "failed", "stopped"]


class ReplicaReport(BaseModel):
    """A node's report on one of its replicas (`node:<node>:deeploy:replicas`, field = app id)."""

    app: str
    version: int
    state: ReplicaPhase
    healthy: bool = False
    port: int | None = None
    restarts: int = 0
    since_ms: int = 0
    detail: str = ""


class ReplicaView(BaseModel):
    node: str
    version: int
    state: str
    healthy: bool
    restarts: int = 0
    detail: str = ""
    url: str | None = None


class AppView(BaseModel):
    """`GET /v1/apps/<owner>/<name>`: the app, its spec, and each replica's node, state and health."""

    app: str
    owner: str
    name: str
    version: int
    runtime: str
    replicas_wanted: int
    replicas: list[ReplicaView]
    healthy: int
    job: int | None = None
    spec: dict[str, Any]
    note: str = ""
    updated_ms: int = 0


class AppList(BaseModel):
    apps: list[AppView]


class HostNode(BaseModel):
    """A node that can run apps, as its heartbeats describe it (and what is already reserved on it)."""

    address: str
    ai_address: str | None = None
    oracle: bool = False
    url: str | None = None
    runtimes: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    cpu: float = 0.0
    memory_mb: int = 0
    gpu: int = 0
    free_cpu: float = 0.0
    free_memory_mb: int = 0
    free_gpu: int = 0


class HostList(BaseModel):
    nodes: list[HostNode]
