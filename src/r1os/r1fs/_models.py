"""The answers of R1FS's HTTP API, as pydantic models: the routes return them (so `/openapi.json`
describes every answer) and the service builds them. Plain pydantic: clients may import this module."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class AddAnswer(BaseModel):
    cid: str
    size: int
    blocks: int
    pinned: bool
    replicas: int


class PinAnswer(BaseModel):
    cid: str
    size: int
    replicas: int


class UnpinAnswer(BaseModel):
    cid: str
    unpinned: bool
    """False when the caller held no pin of the CID here (nothing was released)."""
    released: list[str] = []
    """Whose pins went (the operator may release several at once)."""
    pinners_left: int = 0
    """Pinners still holding the CID here: it stays pinned while any does."""


class PinEntry(BaseModel):
    """One local pin: `user` (added or pinned here) or `replica` (a copy held for the network)."""

    cid: str
    kind: str
    size: int = 0
    replicas: int = 1
    ts: float = 0.0
    pinners: list[str] | None = None
    """Addresses holding a pin of it (the node's operator sees them; null for other callers)."""


class PinList(BaseModel):
    pins: list[PinEntry]
    next: str | None = None
    """Ask again with `after=<next>` for the following page (null: this was the last)."""


class ProviderInfo(BaseModel):
    """A node's provider record for a CID; `alive` is judged from the network map, not the record."""

    address: str
    alive: bool
    size: int | None = None
    replica: bool | None = None


class StatAnswer(BaseModel):
    cid: str
    codec: Literal["raw", "dag-pb"]
    size: int | None
    """The file's size, None when its root block is not on this node."""
    links: int | None = None
    local: bool
    """The root block is here."""
    complete: bool
    """Every block of the file is here."""
    pinned: str | None
    """The local pin's kind, or None."""
    providers: list[ProviderInfo] | None = None
    """None on a node without CSTORE (no provider records)."""
    replicas_wanted: int | None = None
    replicas_live: int | None = None


class StoreStats(BaseModel):
    blocks: int
    bytes: int
    """Bytes of the live blocks."""
    packs: int
    pack_bytes: int


class StatsAnswer(BaseModel):
    store: StoreStats
    pins: int
    fetched_blocks: int
    """Blocks pulled from other nodes (each verified)."""
    fetch_retries: int
    corrupt_from_peer: int
    local_served: int
    local_refused: int


class GcAnswer(BaseModel):
    kept: int
    removed: int
    freed: int
    busy: bool
    """True when another collection was running: this one did nothing."""
    held: int = 0
    """Blocks no pin reaches, kept because an upload or fetch under way holds them."""


class LocalAnswer(BaseModel):
    socket: str | None
    """The abstract Unix socket local clients hand files over (None: off)."""
