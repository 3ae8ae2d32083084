"""Node settings: from CLI flags, `R1OS_*` environment variables, or defaults.

One `NodeConfig` holds everything; each service's knobs sit in a nested model of their own, set from
the environment with a double underscore: `R1OS_CSTORE__SYNC_INTERVAL=2`, `R1OS_R1FS__GRACE=30`. The
nested models live here, beside the node, so a node's whole configuration is one validated object and
services (above the node) import their settings from below instead of the node reaching up to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from r1os.paths import default_node_home
from r1os.transport.topics import validate_network

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_HTTP = "127.0.0.1:31234"


class CStoreSettings(BaseModel):
    """CSTORE replica knobs (`R1OS_CSTORE__*`)."""

    fsync: bool = Field(default=True, description="fsync the CSTORE log before acknowledging a write")
    sync_interval: float = Field(default=5.0, gt=0, description="seconds between anti-entropy rounds")


class R1fsSettings(BaseModel):
    """R1FS knobs (`R1OS_R1FS__*`)."""

    grace: float = Field(
        default=120.0, gt=0, description="seconds a holder may be unseen before it is replaced"
    )
    reconcile_interval: float = Field(default=5.0, gt=0, description="seconds between replication passes")
    gc_interval: float = Field(default=600.0, gt=0, description="seconds between garbage collections")
    max_upload: int = Field(default=64 * 1024**3, gt=0, description="largest file accepted by /v1/r1fs/add")
    parallel: int = Field(default=8, ge=1, le=64, description="runs of blocks fetched at once")
    verify_reads: bool = Field(default=False, description="re-hash every block read from disk")
    fsync: bool = Field(default=False, description="fsync each block written")
    fetch_timeout: float = Field(
        default=30.0, gt=0, description="seconds without data before a provider is given up"
    )
    local_socket: bool = Field(default=True, description="serve local clients' open files over a Unix socket")
    quota_bytes: int = Field(
        default=16 * 1024**3,
        ge=0,
        description="bytes one signed address may hold on this node: its pinned files' sizes times their "
        "replicas, plus its unpinned adds since the last GC (the node's operator has no quota)",
    )
    quota_pins: int = Field(default=1000, ge=0, description="pins one signed address may hold on this node")
    max_pins: int = Field(
        default=100_000, ge=0, description="pins all signed addresses together may hold on this node"
    )
    max_replicas: int = Field(default=16, ge=1, le=64, description="largest replicas a pin may ask for")
    min_free_disk: int = Field(
        default=1024**3,
        ge=0,
        description="free bytes left on the store's disk: adds, pins and fetches stop (507) below it",
    )
    max_fetches: int = Field(
        default=64, ge=1, description="files fetched from peers at once; past it a new fetch is 503 busy"
    )


class OracleSyncSettings(BaseModel):
    """OracleSync knobs on oracle nodes (`R1OS_ORACLE_SYNC__*`); unset ones follow from the epoch length
    and heartbeat interval (see docs/oracle.md)."""

    close_delay: float | None = Field(
        default=None, ge=0, description="seconds after an epoch ends before it closes"
    )
    phase_timeout: float | None = Field(
        default=None, gt=0, description="seconds to wait for other oracles per phase"
    )
    poai_min_availability: int = Field(
        default=128,
        ge=0,
        le=255,
        description="availability a PoAI job's node needs in an epoch to be attested",
    )


class DeeploySettings(BaseModel):
    """What this node offers to Deeploy apps (`R1OS_DEEPLOY__*`); see docs/deeploy.md."""

    host_apps: bool = Field(default=True, description="run app replicas the oracles place here")
    runtimes: list[str] | None = Field(
        default=None,
        description="runtimes offered (process, plugin, docker); default: every one that works here",
    )
    tags: list[str] = Field(default_factory=list, description="labels apps can ask for in placement.tags")
    cpu: float | None = Field(default=None, gt=0, description="cores offered to apps (default: all)")
    memory_mb: int | None = Field(
        default=None, gt=0, description="memory offered to apps (default: 80% of RAM)"
    )
    gpu: int | None = Field(default=None, ge=0, description="GPUs offered (default: as detected)")
    docker_url: str | None = Field(
        default=None, description="Docker engine to use (default: DOCKER_HOST or the local socket)"
    )
    plugin_spares: int = Field(
        default=1,
        ge=0,
        le=16,
        description="warm plugin workers kept ready: a plugin app starts without starting Python (0: none)",
    )
    plugin_preload: list[str] = Field(
        default_factory=list,
        description='modules the warm plugin workers import while they wait (["numpy", "sklearn.svm"])',
    )

    @field_validator("plugin_preload")
    @classmethod
    def _preload(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name (write package.module)")
        return v


class EdilSettings(BaseModel):
    """What this node offers to federated-learning jobs (`R1OS_EDIL__*`); see docs/edil.md."""

    datasets: dict[str, Path] = Field(
        default_factory=dict,
        description="data sets jobs may name as data:NAME (name -> .npz file on this node)",
    )
    data_folders: list[Path] = Field(
        default_factory=list, description="folders whose .npz files jobs may name as path:/abs/file.npz"
    )
    max_jobs: int = Field(default=8, ge=1, le=256, description="jobs this node takes part in at once")


class ApiSettings(BaseModel):
    """Bounds on the node's HTTP API connections (`R1OS_API__*`); see docs/security.md."""

    max_connections: int = Field(default=1024, ge=8, description="open connections; 503 past it")
    max_head: int = Field(default=64 * 1024, ge=4096, description="bytes of request line + headers")
    head_timeout: float = Field(default=20.0, gt=0, description="seconds to send a request's head")
    body_idle_timeout: float = Field(default=60.0, gt=0, description="seconds without a body byte")
    keep_alive: int = Field(default=5, gt=0, description="seconds an idle connection stays open")


class NodeConfig(BaseSettings):
    """Everything a node needs to start; its state lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="R1OS_", env_nested_delimiter="__", extra="ignore")

    network: str = "devnet"
    home: Path | None = None
    name: str = "node"
    broker: str = DEFAULT_BROKER
    http: str = DEFAULT_HTTP
    public_url: str | None = Field(None, description="URL other nodes use to reach this one's HTTP API")
    oracle: bool = False
    heartbeat_interval: float = Field(10.0, gt=0, le=3600)
    missed_heartbeats_offline: int = Field(3, ge=1)
    heartbeat_mode: Literal["auto", "broadcast", "oracle"] = Field(
        "auto",
        description="oracle: heartbeats go to the oracles only and the others learn the network from the "
        "map the oracles publish; broadcast: every node hears every heartbeat (its cost grows with the "
        "network); auto (default): oracle when the node knows its network has oracles (`oracles`, "
        "`oracle_urls` or a chain deployment: dAuth), else broadcast. See docs/node.md",
    )
    netmap_full_every: int = Field(
        0,
        ge=0,
        description="oracle mode: the map publisher also broadcasts a whole snapshot every M intervals "
        "(0: never; nodes ask for one when they join or miss a delta)",
    )
    key_strength: str = Field("standard", pattern="^(standard|light)$")
    max_message_size: int = Field(1024 * 1024, ge=1024)
    max_clock_skew: float = Field(30.0, gt=0)
    oracles: list[str] = Field(
        default_factory=list, description="oracle addresses (until dAuth supplies them)"
    )
    oracle_urls: list[str] = Field(
        default_factory=list, description="HTTP URLs of oracles to ask for dAuth admission (seed list)"
    )
    chain_deployment: Path | None = Field(
        None, description="deployment JSON of the network's contracts (oracles read the chain with it)"
    )
    genesis_time: int | None = Field(None, description="unix time of epoch 0 (else: deployment)")
    epoch_seconds: int | None = Field(None, gt=0, description="epoch length (else: deployment)")
    auto_claim_epochs: int = Field(0, ge=0, description="claim this node's rewards every K epochs (0: never)")
    api: ApiSettings = Field(default_factory=ApiSettings)
    cstore: CStoreSettings = Field(default_factory=CStoreSettings)
    r1fs: R1fsSettings = Field(default_factory=R1fsSettings)
    oracle_sync: OracleSyncSettings = Field(default_factory=OracleSyncSettings)
    deeploy: DeeploySettings = Field(default_factory=DeeploySettings)
    edil: EdilSettings = Field(default_factory=EdilSettings)

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
    def effective_heartbeat_mode(self) -> Literal["broadcast", "oracle"]:
        """The mode `auto` resolves to: a network without oracles has nobody to publish a map."""
        if self.heartbeat_mode != "auto":
            return self.heartbeat_mode
        has_oracles = bool(self.oracles or self.oracle_urls or self.chain_deployment)
        return "oracle" if has_oracles else "broadcast"

    @property
    def home_dir(self) -> Path:
        return self.home or default_node_home(self.network, self.name)

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0]

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])
