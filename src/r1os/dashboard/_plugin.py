"""The dashboard's offer to nodes (entry point `r1os.services`): every node serves it, last, since it
only reads what the other services publish."""

from __future__ import annotations

from r1os.dashboard._service import DashboardService
from r1os.node import NodeConfig, ServicePlugin


def _build(config: NodeConfig) -> list[DashboardService]:
    return [DashboardService()]


PLUGIN = ServicePlugin("dashboard", 90, _build)
