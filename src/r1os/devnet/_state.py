"""The devnet record on disk (`<dir>/devnet.json`): what runs where, so other commands can find it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from r1os.errors import DevnetError

STATE_FILE = "devnet.json"


class DevnetNode(BaseModel):
    name: str
    address: str
    home: str
    http_port: int
    url: str
    oracle: bool = False
    pid: int | None = None
    broker_url: str | None = None  # its broker when the devnet runs several (else the devnet's one)

    @property
    def log_path(self) -> Path:
        return Path(self.home) / "node.log"


class DevnetBroker(BaseModel):
    """One of several bridged mosquitto brokers (`devnet up --brokers N`)."""

    name: str
    url: str = Field(description="where nodes connect: the dAuth gate, or mosquitto without a chain")
    mosquitto_url: str = Field(description="mosquitto's own client listener (unix://<socket> behind a gate)")
    bridge_port: int = Field(description="mosquitto's listener for bridges (password file)")
    pid: int | None = None
    gate_pid: int | None = None
    dir: str = ""


class DevnetState(BaseModel):
    network: str
    dir: str
    broker_url: str
    broker_pid: int | None = None  # None when an external broker was given
    heartbeat_interval: float
    sync_interval: float = 2.0
    fsync: bool = True
    nodes: list[DevnetNode]
    chain: dict[str, Any] | None = None
    started_at: float = 0.0
    brokers: list[DevnetBroker] = Field(default_factory=list)  # empty: one broker (broker_url)

    def pids(self) -> list[int]:
        """Every process of the devnet's brokers (not the nodes, not the chain)."""
        out = [self.broker_pid] if self.broker_pid else []
        for b in self.brokers:
            out += [p for p in (b.gate_pid, b.pid) if p]
        return out

    def node(self, ref: str) -> DevnetNode:
        """Find a node by name (`node-03`), number (`3`) or address prefix."""
        for n in self.nodes:
            if ref in (n.name, n.address) or (ref.isdigit() and n.name == f"node-{int(ref):02d}"):
                return n
        matches = [n for n in self.nodes if n.address.lower().startswith(ref.lower()) and len(ref) >= 4]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(n.name for n in self.nodes)
        raise DevnetError(f"no devnet node {ref!r}", hint=f"nodes are: {names}")


def save_state(state: DevnetState) -> None:
    path = Path(state.dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)


def load_state(dir: Path) -> DevnetState:
    path = dir / STATE_FILE
    try:
        return DevnetState.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DevnetError(f"no devnet in {dir}", hint="start one with `r1os devnet up`") from None
    except (OSError, ValueError) as exc:
        raise DevnetError(f"unreadable devnet record {path}: {exc}") from None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
