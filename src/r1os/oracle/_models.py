"""What the oracle's HTTP API answers (`/v1/oracle/...`): pydantic models, so `/openapi.json` describes
every answer and clients can validate them. No server code here: the CLI and the SDK import it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClosedEpoch(BaseModel):
    """One epoch this oracle closed, in the status summary."""

    epoch: int
    nodes: int = Field(description="nodes in the agreed table")
    voters: list[str]
    signers: list[str]
    table_hash: str
    cid: str | None = Field(description="R1FS CID of the full audit record")
    closed_at: float


class OracleStatus(BaseModel):
    """`GET /v1/oracle/epochs`: the epoch clock, the oracle set, and what was closed or failed."""

    oracle: str
    network: str
    genesis_time: float
    epoch_seconds: float
    heartbeat: float
    current_epoch: int
    oracles: list[str]
    quorum: int
    last_closed: int | None
    epochs: list[ClosedEpoch]
    failed: dict[str, str] = Field(description="epoch -> why it did not close")


class EpochAvailability(BaseModel):
    """A node's agreed availability in one epoch, with every oracle's signature over it."""

    epoch: int
    value: int = Field(ge=0, le=255)
    measured: bool = Field(description="false for epochs before the oracles' first agreed epoch (count 0)")
    signatures: dict[str, str] = Field(description="oracle -> signature over (node, epoch, epoch, value)")


class RangeSignature(BaseModel):
    """`GET /v1/oracle/sign/<node>`: this oracle's signature over a node's bytes for a range."""

    oracle: str
    node: str
    first_epoch: int
    availabilities: list[int]
    signature: str


class ClaimSignatures(BaseModel):
    """A range signed by every oracle that could be reached: what a reward claim sends."""

    node: str
    first_epoch: int
    availabilities: list[int]
    signatures: list[str]


class NodeAvailability(BaseModel):
    """`GET /v1/oracle/availability/<node>`: per epoch, and (unless claim=false) the claim signatures."""

    node: str
    first_epoch: int
    last_epoch: int
    epochs: list[EpochAvailability]
    claim: ClaimSignatures | None = None


class MisbehaviourEntry(BaseModel):
    """One report of an oracle that misbehaved, by one reporting oracle."""

    model_config = ConfigDict(extra="allow")

    epoch: int
    oracle: str
    reason: str
    reporter: str
    at: float
    nodes: int | None = Field(default=None, description="nodes it disagreed on")
    reported: dict[str, int] | None = Field(default=None, description="a sample: node -> its value")
    agreed: dict[str, int] | None = Field(default=None, description="the same nodes: node -> agreed value")


class MisbehaviourList(BaseModel):
    """`GET /v1/oracle/misbehaviour`: field `<epoch>:<oracle>:<reporter>` -> report."""

    entries: dict[str, MisbehaviourEntry]
