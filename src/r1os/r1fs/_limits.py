"""The bounds R1FS puts on what callers ask of a node: who may hold how much, how many copies a pin may
ask for, how much disk stays free, how many fetches run at once. Every one is named here with its
default and the `cause` of its refusal (docs/r1fs.md, Bounds).

The values are the node's `R1fsSettings` (`R1OS_R1FS__QUOTA_BYTES`, ...); this module holds the
refusals and the disk check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from r1os.r1fs._errors import R1fsError

if TYPE_CHECKING:
    from r1os.node import R1fsSettings


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


def check_space(path: Path, adding: int, limits: R1fsSettings) -> None:
    """Raise `NoSpace` if writing `adding` more bytes under `path` would leave less than min_free_disk."""
    free = disk_free(path)
    if free - adding < limits.min_free_disk:
        raise NoSpace(
            f"{adding} more bytes would leave {max(free - adding, 0)} free on the store's disk, "
            f"less than the {limits.min_free_disk} this node keeps"
        )
