"""R1FS errors: all derive from `R1osError`, so the CLI prints them as one line plus a hint."""

from __future__ import annotations

from r1os.errors import R1osError


class R1fsError(R1osError):
    """Storing, finding or reading a file failed."""


class BadCid(R1fsError):
    """A CID is malformed or of a kind R1FS does not hold."""

    hint = "R1FS CIDs are CIDv1 base32 (bafy.../bafk...) with sha2-256"


class CorruptBlock(R1fsError):
    """A block's bytes do not match its CID, or a block does not decode."""


class BlockNotFound(R1fsError):
    """No local copy and no provider answered with a valid copy."""


class TooLarge(R1fsError):
    """An upload exceeds the node's size limit."""


class BadUpload(R1fsError):
    """An upload's body does not match what its headers promised (truncated or too long)."""


class StoreBusy(R1fsError):
    """The block store's folder is already open for writing (by another node or tool)."""

    hint = "stop the node that uses this home, or open the store read-only"
