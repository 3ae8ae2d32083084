"""The oracle's errors: what a request to `/v1/oracle/...` can be refused for.

Each carries `cause` (one machine word) and `status` (the HTTP status the node answers with), so a
route only raises and the node's handler writes `{"error", "cause", "hint"}`.
"""

from __future__ import annotations

from r1os.errors import R1osError


class OracleError(R1osError):
    """An oracle cannot answer a request."""

    cause = "oracle"
    status = 500


class BadEpochRange(OracleError):
    """An epoch range that is malformed, reversed or longer than one claim may be."""

    cause = "bad_epoch_range"
    status = 400
    hint = "pass epochs=A:B (inclusive, 0 <= A <= B)"


class EpochNotEnded(OracleError):
    """A range reaching into the current epoch (or later): nothing can be signed for it yet."""

    cause = "epoch_not_ended"
    status = 400
    hint = "ask again once the epoch has ended and the oracles have closed it"


class EpochNotAgreed(OracleError):
    """An ended epoch for which this oracle holds no agreed record (and could adopt none)."""

    cause = "epoch_not_agreed"
    status = 404
    hint = "the oracles may not have closed it (GET /v1/oracle/epochs lists the closed and failed ones)"


class BadNodeAddress(OracleError):
    """A node parameter that is not an address."""

    cause = "bad_address"
    status = 400
    hint = "pass the node's 0x... address"
