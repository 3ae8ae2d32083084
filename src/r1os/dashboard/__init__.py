"""The web dashboard every node serves at `/`: a read-only page (static files shipped in this package,
no build step, no CDN) fed by the node's public routes and by a stream of snapshots
(`GET /v1/dashboard/events`, server-sent events).

The node does not import this package (it sits above every service): `DashboardService` reaches nodes as
a service plugin, entry point `r1os.services` -> `r1os.dashboard._plugin:PLUGIN`. The service module
loads FastAPI, so it is imported on first use only.
"""

from typing import TYPE_CHECKING, Any

from r1os.dashboard._errors import DashboardError

if TYPE_CHECKING:
    from r1os.dashboard._service import DashboardService


def __getattr__(name: str) -> Any:
    if name == "DashboardService":
        from r1os.dashboard._service import DashboardService

        return DashboardService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DashboardError", "DashboardService"]
