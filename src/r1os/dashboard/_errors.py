"""The dashboard's refusals: each an `R1osError` with its cause and status, answered by the node in
its one error shape `{"error", "cause", "hint"}`."""

from __future__ import annotations

from r1os.errors import R1osError


class DashboardError(R1osError):
    cause = "dashboard"
    status = 500


class Busy(DashboardError):
    """Too many live event streams on this node."""

    cause = "busy"
    status = 503
    hint = "close other dashboard tabs of this node, or try again in a moment"


class BadPath(DashboardError):
    """A static file name that is not a plain file name (traversal, separators, odd characters)."""

    cause = "invalid_request"
    status = 400
    hint = "static files are named like /dashboard/static/app.js"


class NotFound(DashboardError):
    cause = "not_found"
    status = 404


class NoOracle(DashboardError):
    """No oracle is known to this node: nothing to show yet (404), or none of those known answered
    with what its route documents (502)."""

    cause = "no_oracle"
    status = 404
    hint = "availability comes from the network's oracles: wait until one is online"
