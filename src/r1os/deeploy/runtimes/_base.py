"""The seam between the node agent and whatever runs a replica (a sandboxed process, a container, a
plugin worker), as httpx keeps one base class for its transports and one module per transport.

The agent owns everything about an app that is not "run this here": placement, files, ports, health
checks, restarts and reporting. A runtime only starts a replica, says whether it still runs, stops it,
and keeps its output.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from r1os.errors import R1osError

ReplicaState = Literal["starting", "running", "exited", "failed", "stopped"]


class RuntimeFailure(R1osError):
    """A runtime cannot start, watch or stop a replica (`cause` says why: `no_engine`, `no_image`, ...)."""

    cause = "runtime"
    status = 503


class ReplicaLaunch(BaseModel):
    """Everything a runtime needs to start one replica, already resolved by the agent."""

    model_config = ConfigDict(frozen=True)

    replica_id: str = Field(description="unique on the node: '<owner>-<name>-<version>', safe as a file name")
    app: str = Field(description="'<owner address>/<name>'")
    runtime: Literal["process", "docker", "plugin"]
    command: list[str] = Field(default_factory=list, description="{port} already replaced")
    image: str | None = None
    plugin: str | None = None
    folder: Path = Field(description="the app's own folder, files already in it; the replica's cwd")
    run_dir: Path = Field(
        description="the runtime's own folder for this replica (logs, pid): outside `folder`"
    )
    port: int = Field(description="the TCP port on 127.0.0.1 the replica must serve on")
    env: dict[str, str] = Field(
        default_factory=dict, description="complete: PORT, R1OS_API_URL, secrets, ..."
    )
    cpu: float = 0.5
    memory_mb: int = 256
    gpu: int = 0


class ReplicaStatus(BaseModel):
    state: ReplicaState
    exit_code: int | None = None
    detail: str = ""
    pid: int | None = None
    container: str | None = None


class AppRuntime(abc.ABC):
    """Starts, watches and stops replicas of one kind. One instance per node, shared by its replicas."""

    name: str = "runtime"

    @classmethod
    def unavailable(cls) -> str | None:
        """None if this runtime can run replicas on this machine, else one line saying why not
        (nodes advertise only the runtimes they can run)."""
        return None

    @abc.abstractmethod
    async def start(self, launch: ReplicaLaunch) -> None:
        """Start the replica and return once it was launched (not once it answers: the agent checks
        health). Raises `RuntimeFailure` with a clear message if it cannot be launched."""

    @abc.abstractmethod
    async def status(self, replica_id: str) -> ReplicaStatus:
        """Whether the replica still runs; `stopped` for one this runtime does not know."""

    @abc.abstractmethod
    async def stop(self, replica_id: str, timeout: float = 5.0) -> None:
        """Stop the replica (gracefully, then by force after `timeout`); no error if it is gone."""

    @abc.abstractmethod
    async def logs(self, replica_id: str, tail: int = 100) -> list[str]:
        """The last `tail` lines the replica wrote (stdout and stderr interleaved)."""

    @abc.abstractmethod
    def follow(self, replica_id: str) -> AsyncIterator[str]:
        """New lines as the replica writes them, until it stops or the caller stops iterating."""

    async def cleanup(self) -> list[str]:
        """Remove what an earlier run of this node left behind (containers of a node that crashed);
        the names of what was removed. Default: nothing (sandboxed processes die with their node)."""
        return []

    async def aclose(self) -> None:
        """Stop every replica this runtime started, and release what it holds."""
