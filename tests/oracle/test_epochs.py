"""Epoch arithmetic, ranges, and where an oracle takes its epoch parameters from."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1os.chain.deployment import Deployment
from r1os.errors import ConfigError
from r1os.node import NodeConfig
from r1os.oracle import EpochClock, parse_range, settings_from
from r1os.oracle._epochs import DAY, MAINNET_GENESIS


def test_epoch_clock_matches_the_controller_rule() -> None:
    c = EpochClock(1000, 60)
    assert [c.epoch_at(t) for t in (0, 1000, 1059.9, 1060, 1000 + 60 * 7 + 1)] == [0, 0, 0, 1, 7]
    assert (c.start(3), c.end(3)) == (1180, 1240)
    with pytest.raises(ConfigError):
        EpochClock(0, 0)


def test_parse_range() -> None:
    assert parse_range("3:7") == (3, 7)
    assert parse_range("5") == (5, 5)
    assert parse_range(":4", default=(1, 9)) == (1, 4)
    assert parse_range("4:", default=(1, 9)) == (4, 9)
    assert parse_range(None, default=(2, 3)) == (2, 3)
    for bad in ("7:3", "-1:2", "a:b", "1:x"):
        with pytest.raises(ValueError, match="bad epoch range"):
            parse_range(bad)
    with pytest.raises(ValueError):
        parse_range(None)


def test_settings_come_from_config_then_deployment_then_mainnet(tmp_path: Path) -> None:
    dep = Deployment(
        rpc="http://x", chain_id=1, contracts={}, genesis_time=1234, epoch_seconds=8, deployer="0x0"
    )
    path = dep.save(tmp_path / "deployment.json")
    s = settings_from(NodeConfig(heartbeat_interval=1, chain_deployment=path))
    assert (s.genesis_time, s.epoch_seconds, s.heartbeat, s.deployment) == (1234, 8, 1, dep)
    s = settings_from(NodeConfig(chain_deployment=path, genesis_time=5, epoch_seconds=30))
    assert (s.genesis_time, s.epoch_seconds) == (5, 30)
    s = settings_from(NodeConfig())
    assert (s.genesis_time, s.epoch_seconds) == (MAINNET_GENESIS, DAY)
    # hb = 10 s keeps Ratio1's 5 s slack; faster heartbeats get hb (one late heartbeat forgiven)
    assert (s.gap_slack, settings_from(NodeConfig(heartbeat_interval=1)).gap_slack) == (5.0, 1.0)


def test_unreadable_deployment_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "deployment.json"
    bad.write_text("{not json")
    s = settings_from(NodeConfig(chain_deployment=bad))
    assert s.deployment is None and s.epoch_seconds == DAY
    assert "cannot read the chain deployment" in caplog.text


def test_protocol_knobs_come_from_the_nested_oracle_sync_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from(NodeConfig(epoch_seconds=60, heartbeat_interval=2))
    assert (s.close_delay, s.phase_timeout, s.poai_min_availability) == (None, None, 128)
    # within 2 hb + 0.5 s and the largest gap a run bridges (hb + slack, slack min(5 s, hb)); epoch/10
    assert (s.delay, s.timeout) == (4.0, 6.0)
    monkeypatch.setenv("R1OS_ORACLE_SYNC__CLOSE_DELAY", "3")
    monkeypatch.setenv("R1OS_ORACLE_SYNC__PHASE_TIMEOUT", "1.5")
    monkeypatch.setenv("R1OS_ORACLE_SYNC__POAI_MIN_AVAILABILITY", "200")
    s = settings_from(NodeConfig(epoch_seconds=60, heartbeat_interval=2))
    assert (s.close_delay, s.phase_timeout, s.poai_min_availability) == (3, 1.5, 200)
    assert (s.delay, s.timeout) == (3, 1.5)


def test_dauth_network_config_sets_the_epoch_clock() -> None:
    from r1os.dauth import NetworkConfig

    config = NodeConfig(genesis_time=5, epoch_seconds=30, heartbeat_interval=1)
    network = NetworkConfig(network="devnet", genesis_time=777, epoch_seconds=12)
    s = settings_from(config, network)
    assert (s.genesis_time, s.epoch_seconds, s.heartbeat) == (777, 12, 1)
    assert settings_from(config).with_network(network) == s
    assert settings_from(config).with_network(None) == settings_from(config)
