"""Deeploy's offer to nodes (entry point `r1os.services`): after CSTORE, R1FS and the oracle services."""

from __future__ import annotations

from r1os.deeploy._service import DeeployService
from r1os.node import NodeConfig, ServicePlugin


def _build(config: NodeConfig) -> list[DeeployService]:
    return [DeeployService(config.deeploy)]


PLUGIN = ServicePlugin("deeploy", 50, _build)
