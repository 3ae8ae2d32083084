"""Node settings: from CLI flags, `R1OS_*` environment variables, or defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from r1os.paths import default_node_home
from r1os.transport.topics import validate_network

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_HTTP = "127.0.0.1:31234"


class NodeConfig(BaseSettings):
    """Everything a node needs to start; its state lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="R1OS_", extra="ignore")

    network: str = "devnet"
    home: Path | None = None
    name: str = "node"
    broker: str = DEFAULT_BROKER
    http: str = DEFAULT_HTTP
    public_url: str | None = Field(None, description="URL other nodes use to reach this one's HTTP API")
    oracle: bool = False
    heartbeat_interval: float = Field(10.0, gt=0, le=3600)
    missed_heartbeats_offline: int = Field(3, ge=1)
    key_strength: str = Field("standard", pattern="^(standard|light)$")
    max_message_size: int = Field(1024 * 1024, ge=1024)
    max_clock_skew: float = Field(30.0, gt=0)
    oracles: list[str] = Field(
        default_factory=list, description="oracle addresses (until dAuth supplies them)"
    )
    oracle_urls: list[str] = Field(
        default_factory=list, description="HTTP URLs of oracles to ask for dAuth admission (seed list)"
    )
    cstore_fsync: bool = Field(True, description="fsync the CSTORE log before acknowledging a write")
    cstore_sync_interval: float = Field(5.0, gt=0, description="seconds between anti-entropy rounds")
    chain_deployment: Path | None = Field(
        None, description="deployment JSON of the network's contracts (oracles read the chain with it)"
    )
    genesis_time: int | None = Field(None, description="unix time of epoch 0 (else: deployment)")
    epoch_seconds: int | None = Field(None, gt=0, description="epoch length (else: deployment)")
    auto_claim_epochs: int = Field(0, ge=0, description="claim this node's rewards every K epochs (0: never)")

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        return validate_network(v)

    @field_validator("http")
    @classmethod
    def _http(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {v!r}")
        return v

    @property
    def home_dir(self) -> Path:
        return self.home or default_node_home(self.network, self.name)

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0]

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])
