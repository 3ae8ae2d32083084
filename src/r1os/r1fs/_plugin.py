"""R1FS's offer to nodes (entry point `r1os.services`): every node holds blocks, after CSTORE (providers)."""

from __future__ import annotations

from r1os.node import NodeConfig, ServicePlugin
from r1os.r1fs._service import R1fsService


def _build(config: NodeConfig) -> list[R1fsService]:
    return [R1fsService(config.r1fs)]


PLUGIN = ServicePlugin("r1fs", 30, _build)
