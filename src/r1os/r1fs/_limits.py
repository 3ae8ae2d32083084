"""The bounds R1FS puts on what callers ask of a node: who may hold how much, how many copies a pin may
ask for, how much disk stays free, how many fetches run at once. Every one is named here with its
default and the `cause` of its refusal (docs/r1fs.md, Bounds).

The node's `R1fsSettings` carries them (`R1OS_R1FS__QUOTA_BYTES`, ...): the service reads them from
there (`R1fsLimits.from_settings`, by name); `R1fsLimits(...)` sets them directly in tests and scripts.
The defaults here are the settings' own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from r1os.r1fs._errors import R1fsError


class R1fsLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    quota_bytes: int = Field(
        default=16 * 1024**3,
        ge=0,
        description="bytes one signed address may hold on this node: its pinned files' sizes times their "
        "replicas, plus its unpinned adds since the last GC (the node's operator has no quota)",
    )
    quota_pins: int = Field(default=1000, ge=0, description="pins one signed address may hold on this node")
    max_pins: int = Field(
        default=100_000, ge=0, description="pins all signed addresses together may hold on this node"
    )
    max_replicas: int = Field(default=16, ge=1, le=64, description="largest replicas a pin may ask for")
    min_free_disk: int = Field(
        default=1024**3,
        ge=0,
        description="free bytes left on the store's disk: adds, pins and fetches stop (507) below it",
    )
    max_fetches: int = Field(
        default=64, ge=1, description="files fetched from peers at once; past it a new fetch is 503 busy"
    )

    @classmethod
    def from_settings(cls, settings: BaseModel) -> R1fsLimits:
        """The limits named in `settings` (the node's R1fsSettings), the defaults for the others."""
        values: dict[str, Any] = settings.model_dump()
        return cls.model_validate({k: v for k, v in values.items() if k in cls.model_fields})


#: Most replicas any request may name (the HTTP routes' and local socket's schema bound; the node's
#: `max_replicas` is at most this and refuses above itself with cause `too_many_replicas`).
REPLICAS_CEILING = 64


class QuotaExceeded(R1fsError):
    """A signed address would hold more than its quota on this node."""

    cause = "quota"
    status = 429
    hint = "unpin files you no longer need (r1os fs unpin), or ask the node's operator"


class TooManyReplicas(R1fsError):
    cause = "too_many_replicas"
    status = 422


class NoSpace(R1fsError):
    """The store's disk would fall below the free space the node keeps."""

    cause = "no_space"
    status = 507
    hint = "the node keeps R1OS_R1FS__MIN_FREE_DISK bytes free; its operator can run gc or add disk"


class Busy(R1fsError):
    """The node runs as many fetches as it allows."""

    cause = "busy"
    status = 503
    hint = "try again in a moment"


def disk_free(path: Path) -> int:
    """Bytes free for this process on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_space(path: Path, adding: int, limits: R1fsLimits) -> None:
    """Raise `NoSpace` if writing `adding` more bytes under `path` would leave less than min_free_disk."""
    free = disk_free(path)
    if free - adding < limits.min_free_disk:
        raise NoSpace(
            f"{adding} more bytes would leave {max(free - adding, 0)} free on the store's disk, "
            f"less than the {limits.min_free_disk} this node keeps"
        )
