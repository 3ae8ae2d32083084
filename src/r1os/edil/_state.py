"""What EDIL keeps in CSTORE: a job's state (written by the owner's node), each participant's update
pointer, each aggregate. Blobs (models, the public CKKS context, ciphertexts) live in R1FS; CSTORE holds
their CIDs. Each record sits in the namespace of the node that writes it (`node:<address>:edil:...`), so
every replica of CSTORE checks who wrote it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JobPhase = Literal["training", "done", "failed", "stopped"]


def job_key(owner_node: str, job_id: str) -> str:
    return f"node:{owner_node.lower()}:edil:job:{job_id}"


def update_key(participant: str, job_id: str) -> str:
    """Hash of a participant's updates for a job; field: the round."""
    return f"node:{participant.lower()}:edil:upd:{job_id}"


def aggregate_key(aggregator: str, job_id: str) -> str:
    """Hash of an aggregator's results for a job; field: the round."""
    return f"node:{aggregator.lower()}:edil:agg:{job_id}"


def dropped_key(aggregator: str, job_id: str) -> str:
    """Hash where an aggregator names, per round, the participants whose masks must be recovered."""
    return f"node:{aggregator.lower()}:edil:drop:{job_id}"


def encoder_key(participant: str, job_id: str) -> str:
    """Where the first participant of a job on encodings names its shared encoder's CID."""
    return f"node:{participant.lower()}:edil:enc:{job_id}"


def recovery_key(participant: str, job_id: str) -> str:
    """Hash of a survivor's mask-recovery terms for a job; field: the round."""
    return f"node:{participant.lower()}:edil:rec:{job_id}"


class RoundResult(BaseModel):
    round: int
    included: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict, description="participant -> cause")
    samples: int = 0
    test_accuracy: float | None = None
    model_cid: str | None = None
    seconds: float = 0.0
    update_bytes: dict[str, int] = Field(default_factory=dict, description="participant -> bytes sent")


class JobState(BaseModel):
    """A training job as its owner's node publishes it (`node:<owner node>:edil:job:<id>`)."""

    job_id: str
    name: str
    owner: str = Field(description="the address that asked for the job")
    owner_node: str
    aggregator: str
    participants: list[str]
    spec: dict[str, Any]
    privacy: str
    context_cid: str | None = None
    context_fingerprint: str | None = None
    round: int = 1
    phase: JobPhase = "training"
    model_cid: str
    round_started_ms: int
    deadline_ms: int
    history: list[RoundResult] = Field(default_factory=list)
    error: str = ""
    created_ms: int
    updated_ms: int

    @property
    def rounds(self) -> int:
        return int(self.spec.get("rounds", 1))


class UpdatePointer(BaseModel):
    """A participant's update for one round: the signed header and the CID of the blob (sealed to
    the aggregator's key)."""

    update: dict[str, Any]
    blob_cid: str
    size: int


class AggregatePointer(BaseModel):
    """An aggregator's sum for one round (sealed to the owner's node) and what went into it."""

    blob_cid: str | None
    included: list[str]
    samples: int
    refused: dict[str, str] = Field(default_factory=dict)
    dropped: list[str] = Field(default_factory=list)
    update_bytes: dict[str, int] = Field(default_factory=dict, description="participant -> blob bytes")


class DroppedNotice(BaseModel):
    dropped: list[str]
    survivors: list[str]


class RecoveryPointer(BaseModel):
    """A survivor's mask terms for the dropped participants (sealed to the aggregator)."""

    update: dict[str, Any]
    blob_cid: str
