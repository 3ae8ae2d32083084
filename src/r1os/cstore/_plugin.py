"""CSTORE's offer to nodes (entry point `r1os.services`): every node keeps a replica, started first."""

from __future__ import annotations

from r1os.cstore._service import CStoreService
from r1os.node import NodeConfig, ServicePlugin


def _build(config: NodeConfig) -> list[CStoreService]:
    return [
        CStoreService(
            sync_interval=config.cstore.sync_interval,
            fsync=config.cstore.fsync,
            oracles=frozenset(a.lower() for a in config.oracles),
        )
    ]


PLUGIN = ServicePlugin("cstore", 10, _build)
