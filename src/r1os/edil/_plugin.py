"""EDIL's offer to nodes (entry point `r1os.services`): after CSTORE, R1FS and Deeploy."""

from __future__ import annotations

from r1os.edil._service import EdilService
from r1os.node import NodeConfig, ServicePlugin


def _build(config: NodeConfig) -> list[EdilService]:
    return [EdilService(config.edil)]


PLUGIN = ServicePlugin("edil", 60, _build)
