"""The oracle services' offer to nodes (entry point `r1os.services`): OracleSync on oracle nodes,
auto-claim on nodes that asked for it; last, since they use CSTORE, dAuth and R1FS."""

from __future__ import annotations

from r1os.node import NodeConfig, Service, ServicePlugin


def _build(config: NodeConfig) -> list[Service]:
    # each service module is imported only on the nodes that run it (edge nodes run neither)
    out: list[Service] = []
    if config.oracle:
        from r1os.oracle._service import OracleSyncService
        from r1os.oracle._settings import settings_from

        # dAuth's network config is not known yet: the service applies it when it starts (after dAuth)
        out.append(OracleSyncService(settings_from(config)))
    if config.auto_claim_epochs:
        from r1os.oracle._autoclaim import AutoClaimService

        out.append(AutoClaimService(config.auto_claim_epochs, config.chain_deployment))
    return out


PLUGIN = ServicePlugin("oracle", 40, _build)
