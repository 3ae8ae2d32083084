"""How an oracle measures and agrees: `OracleSettings`, built from the node's configuration.

The knobs of the protocol itself (`close_delay`, `phase_timeout`, `poai_min_availability`) come from
`NodeConfig.oracle_sync` (`R1OS_ORACLE_SYNC__*`); the epoch clock from, in this order, dAuth's signed
network config, the node's own `genesis_time`/`epoch_seconds`, the chain deployment file, and Ratio1's
mainnet values.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from r1os.errors import ChainError
from r1os.oracle._availability import SLACK_S, max_gap
from r1os.oracle._consensus import DISAGREE_BY, ELIGIBLE_FRACTION
from r1os.oracle._epochs import DAY, MAINNET_GENESIS

if TYPE_CHECKING:
    from r1os.chain.deployment import Deployment
    from r1os.dauth import NetworkConfig
    from r1os.node import NodeConfig

log = logging.getLogger("r1os.oracle")


@dataclass(frozen=True)
class OracleSettings:
    """What one oracle runs with. Unset timings follow from the heartbeat interval and epoch length."""

    genesis_time: float
    epoch_seconds: float
    heartbeat: float = 10.0
    """The network's heartbeat interval (hb in the availability rule; not what nodes claim)."""
    oracles: list[str] = field(default_factory=list)
    """The oracle set until dAuth supplies one."""
    close_delay: float | None = None
    """Seconds after an epoch ends before its table is computed (default 2 hb + 0.5 s)."""
    phase_timeout: float | None = None
    """Seconds to wait for the other oracles in each phase (default epoch/10 within 1..30 s)."""
    eligible_fraction: float = ELIGIBLE_FRACTION
    disagree_by: int = DISAGREE_BY
    slack: float | None = None
    """Tolerance over hb before a gap breaks a run (default min(5 s, hb)): Ratio1's 5 s at hb = 10 s;
    with faster heartbeats one late or lost heartbeat is still tolerated, but a devnet outage of a
    few seconds is not bridged."""
    poai_min_availability: int = 128
    """A node listed for a PoAI job is attested for an epoch if it was at least this available."""
    deployment: Deployment | None = None
    """The chain's contracts (PoAI attestations need them); None: no chain."""

    @property
    def delay(self) -> float:
        if self.close_delay is not None:
            return self.close_delay
        return min(2 * self.heartbeat + 0.5, max_gap(self.heartbeat, self.gap_slack))

    @property
    def gap_slack(self) -> float:
        return self.slack if self.slack is not None else min(SLACK_S, self.heartbeat)

    @property
    def timeout(self) -> float:
        if self.phase_timeout is not None:
            return self.phase_timeout
        return min(30.0, max(1.0, self.epoch_seconds / 10))

    def with_network(self, network: NetworkConfig | None) -> OracleSettings:
        """These settings on the epoch clock of dAuth's signed network config (which wins over local
        settings: every oracle must count epochs alike)."""
        if network is None or not network.epoch_seconds:
            return self
        return dataclasses.replace(
            self, genesis_time=float(network.genesis_time), epoch_seconds=float(network.epoch_seconds)
        )


def settings_from(config: NodeConfig, network: NetworkConfig | None = None) -> OracleSettings:
    """An oracle's settings from its node's configuration (and dAuth's network config when known)."""
    deployment = _deployment(config)
    genesis = _first(
        config.genesis_time, deployment.genesis_time if deployment else None, default=MAINNET_GENESIS
    )
    epoch_s = _first(config.epoch_seconds, deployment.epoch_seconds if deployment else None, default=DAY)
    sync = config.oracle_sync
    settings = OracleSettings(
        genesis_time=float(genesis),
        epoch_seconds=float(epoch_s),
        heartbeat=float(config.heartbeat_interval),
        oracles=list(config.oracles),
        close_delay=sync.close_delay,
        phase_timeout=sync.phase_timeout,
        poai_min_availability=sync.poai_min_availability,
        deployment=deployment,
    )
    return settings.with_network(network)


def _deployment(config: NodeConfig) -> Deployment | None:
    if config.chain_deployment is None:
        return None
    from r1os.chain.deployment import Deployment

    try:
        return Deployment.load(config.chain_deployment)
    except ChainError as exc:  # an oracle without the chain still measures and agrees
        log.error("oracle: cannot read the chain deployment %s: %s", config.chain_deployment, exc)
        return None


def _first(*values: float | None, default: float) -> float:
    return next((v for v in values if v is not None), default)
