"""R1FS errors: all derive from `R1osError`, so the CLI prints them as one line plus a hint, and a route
that raises one answers with its `status` and `{"error", "cause", "hint"}` (the node's error handler)."""

from __future__ import annotations

from r1os.errors import R1osError


class R1fsError(R1osError):
    """Storing, finding or reading a file failed."""

    cause = "r1fs"
    status = 500


class BadRequest(R1fsError):
    """A request to R1FS is malformed (e.g. a local request without a descriptor, or an unknown op)."""

    cause = "bad_request"
    status = 400


class BadCid(R1fsError):
    """A CID is malformed or of a kind R1FS does not hold."""

    hint = "R1FS CIDs are CIDv1 base32 (bafy.../bafk...) with sha2-256"
    cause = "bad_cid"
    status = 400


class CorruptBlock(R1fsError):
    """A block's bytes do not match its CID, or a block does not decode."""

    cause = "corrupt_block"
    status = 502  # the bytes came from a disk or a peer that failed us, not from the caller


class DagRefused(R1fsError):
    """A file's DAG is beyond what this node walks: too deep, too many blocks or references for its
    size, a root declaring more than the largest file (see `DagLimits`)."""

    hint = "R1FS holds files as kubo builds them (256 KiB leaves, 174 links per node)"
    cause = "dag_limit"
    status = 422


class BlockNotFound(R1fsError):
    """No local copy and no provider answered with a valid copy."""

    cause = "not_found"
    status = 404


class TooLarge(R1fsError):
    """An upload exceeds the node's size limit."""

    hint = "the node's limit is R1OS_R1FS__MAX_UPLOAD"
    cause = "too_large"
    status = 413


class BadUpload(R1fsError):
    """An upload's body does not match what its headers promised (truncated or too long)."""

    cause = "bad_upload"
    status = 400


class StoreBusy(R1fsError):
    """The block store's folder is already open for writing (by another node or tool)."""

    hint = "stop the node that uses this home, or open the store read-only"
    cause = "store_busy"
    status = 409


#: The error class a client raises for a node's answer, by its `cause` (others raise `R1fsError`).
BY_CAUSE: dict[str, type[R1fsError]] = {
    cls.cause: cls
    for cls in (BadRequest, BadCid, CorruptBlock, DagRefused, BlockNotFound, TooLarge, BadUpload, StoreBusy)
}


def remote_error(message: str, *, status: int, cause: str, hint: str | None) -> R1fsError:
    """A node's error answer as the R1FS error it stands for, e.g. cause `not_found` -> `BlockNotFound`
    (a client that asked for a file catches that one); the node's cause, status and hint are kept."""
    cls = BY_CAUSE.get(cause, BlockNotFound if status == 404 else R1fsError)
    return cls(message, hint=hint, cause=cause, status=status)
