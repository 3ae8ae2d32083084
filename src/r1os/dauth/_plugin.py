"""dAuth's offer to nodes (entry point `r1os.services`): every node runs it, after CSTORE (which keeps
its records)."""

from __future__ import annotations

from r1os.dauth._service import DauthService
from r1os.node import NodeConfig, ServicePlugin


def _build(config: NodeConfig) -> list[DauthService]:
    return [DauthService.from_config(config)]


PLUGIN = ServicePlugin("dauth", 20, _build)
