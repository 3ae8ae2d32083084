"""The answers of a node's CSTORE routes, as /openapi.json describes them (clients may parse with them).

Errors are not here: every route answers them in the node's one shape, `{"error", "cause", "hint"}`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GetAnswer(BaseModel):
    key: str
    found: bool = Field(description="the key has a live value (which may be null)")
    value: Any = None


class KeysAnswer(BaseModel):
    prefix: str
    keys: list[str] = Field(description="live plain keys and hashes under the prefix, sorted, one page")
    next: str | None = Field(
        default=None, description="pass as `after` for the next page; null on the last page"
    )


class HGetAnswer(BaseModel):
    key: str
    field: str
    found: bool
    value: Any = None


class HGetAllAnswer(BaseModel):
    key: str
    fields: dict[str, Any]


class WaitAnswer(BaseModel):
    key: str
    field: str | None
    value: Any


class HlcAnswer(BaseModel):
    """The newest hybrid-clock stamp this replica has issued or seen."""

    wall_ms: int
    counter: int


class StatsAnswer(BaseModel):
    digest: str = Field(description="hash of the whole state: equal on replicas that hold the same")
    entries: int
    batches: int = Field(description="batches that still hold a winning op")
    applied_batches: int
    syncs: int = Field(description="anti-entropy rounds this replica started and finished")
    sync_batches: dict[str, int] = Field(description="batches anti-entropy pulled, pushed and answered")
    rejected: dict[str, int] = Field(description="refused batches and requests, by cause")
    log_bytes: int
    hlc: list[int] = Field(description="[wall_ms, counter] of the clock")


class LagAnswer(BaseModel):
    """Replication lag of batches that arrived by broadcast: from the writer stamping a batch to
    this replica applying it."""

    n: int
    lag_ms: list[int]
    batch: list[str] = Field(description="the id of each sample's batch")


class BatchAnswer(BaseModel):
    """A signed batch accepted and durable on this node (and on its way to every replica)."""

    id: str
    ops: int
    hlc: list[int] = Field(description="[wall_ms, counter] of the node's clock: a client stamps later")


class BatchAccepted(BaseModel):
    id: str
    ops: int


class BatchRefused(BaseModel):
    error: str
    cause: str
    hint: str | None = None


class BatchesAnswer(BaseModel):
    results: list[BatchAccepted | BatchRefused] = Field(description="one per batch sent, in order")
    hlc: list[int]


class WriteAnswer(BaseModel):
    """Unsigned ops accepted: the node signed them as its own batch."""

    id: str
    ops: int
    writer: str


class SyncAnswer(BaseModel):
    batches: list[str] = Field(description="our signed batches in the buckets that differ")
    want: list[int] = Field(description="buckets the asker should push its batches for")
    horizon: int | None = Field(None, description="set when the round is skipped: our horizon differs")


class PushAnswer(BaseModel):
    applied: int
    refused: int


class SignedBatch(BaseModel):
    """A batch as its writer signed it (canonical JSON)."""

    v: int
    writer: str
    hlc: list[int]
    ops: list[list[Any]] = Field(description="[kind, key, field, value, expires_ms] per op")
    sig: str
