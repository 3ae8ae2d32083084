"""dAuth's offer to nodes (entry point `r1os.services`): every node, after CSTORE (it keeps its records there)."""

from __future__ import annotations

from r1os.dauth._service import DauthService
from r1os.node import NodeConfig, ServicePlugin


def _build(config: NodeConfig) -> list[DauthService]:
    return [
        DauthService(
            network=config.network,
            oracle=config.oracle,
            oracles=config.oracles,
            oracle_urls=config.oracle_urls,
            deployment=config.chain_deployment,
            broker_url=config.broker,
        )
    ]


PLUGIN = ServicePlugin("dauth", 20, _build)
