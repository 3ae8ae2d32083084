"""An in-memory runtime for tests: each replica is a tiny asyncio HTTP server in this process.

A replica listens on 127.0.0.1:<port> and answers any request with 200 and
`{"replica": <id>, "path": <path>, "method": <method>}`, so an agent's health checks and a proxy work
against it as against a real one. A test can make a replica crash (`crash`), answer 500
(`set_unhealthy`), or make starts fail (`fail_starts`), and counts starts in `starts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from r1os.deeploy.runtimes._base import (
    AppRuntime,
    ReplicaLaunch,
    ReplicaState,
    ReplicaStatus,
    RuntimeFailure,
)

MAX_HEAD = 64 << 10
MAX_BODY = 16 << 20


@dataclass
class _Fake:
    launch: ReplicaLaunch
    server: asyncio.Server | None
    state: ReplicaState = "running"
    exit_code: int | None = None
    detail: str = "running"
    unhealthy: bool = False
    lines: list[str] = field(default_factory=list)
    followers: list[asyncio.Queue[str | None]] = field(default_factory=list)
    conns: set[asyncio.StreamWriter] = field(default_factory=set)


class MemoryRuntime(AppRuntime):
    """Stands in for any runtime in tests: `MemoryRuntime("process")` registers as the process runtime."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._replicas: dict[str, _Fake] = {}
        #: replica id -> how many times it was started
        self.starts: Counter[str] = Counter()
        #: every launch, in order
        self.launches: list[ReplicaLaunch] = []
        #: when set, `start` raises `RuntimeFailure` with this message
        self.fail_starts: str | None = None

    def total_starts(self) -> int:
        return sum(self.starts.values())

    def running(self) -> list[str]:
        """The ids of the replicas that run now."""
        return [rid for rid, r in self._replicas.items() if r.state == "running"]

    def launch_of(self, replica_id: str) -> ReplicaLaunch | None:
        rep = self._replicas.get(replica_id)
        return None if rep is None else rep.launch

    async def start(self, launch: ReplicaLaunch) -> None:
        rid = launch.replica_id
        old = self._replicas.get(rid)
        if old is not None and old.state == "running":
            raise RuntimeFailure(f"replica {rid} is already running")
        if self.fail_starts is not None:
            raise RuntimeFailure(self.fail_starts)
        rep = _Fake(launch, None)
        try:
            rep.server = await asyncio.start_server(
                lambda r, w: self._serve(rep, r, w), "127.0.0.1", launch.port
            )
        except OSError as exc:
            raise RuntimeFailure(f"replica {rid}: cannot listen on port {launch.port}: {exc}") from None
        self._replicas[rid] = rep
        self.starts[rid] += 1
        self.launches.append(launch)
        self._line(rep, f"started on port {launch.port}")

    def _line(self, rep: _Fake, text: str) -> None:
        rep.lines.append(text)
        del rep.lines[:-10_000]
        for q in rep.followers:
            q.put_nowait(text)

    async def _serve(self, rep: _Fake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rep.conns.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if len(head) > MAX_HEAD:
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    return
                method, target, _ = parts
                headers = {}
                for h in lines[1:]:
                    k, sep, v = h.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                if length > MAX_BODY:
                    return
                if length:
                    await reader.readexactly(length)
                status = 500 if rep.unhealthy else 200
                body = json.dumps(
                    {"replica": rep.launch.replica_id, "path": target, "method": method}
                ).encode()
                reason = "OK" if status == 200 else "Internal Server Error"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + (b"" if method == "HEAD" else body)
                )
                await writer.drain()
                self._line(rep, f"{method} {target} {status}")
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            rep.conns.discard(writer)
            writer.close()

    async def _end(self, rep: _Fake, state: ReplicaState, code: int | None, detail: str) -> None:
        if rep.state != "running":
            return
        rep.state, rep.exit_code, rep.detail = state, code, detail
        if rep.server is not None:
            rep.server.close()
            for w in list(rep.conns):
                w.close()
            with contextlib.suppress(Exception):
                await rep.server.wait_closed()
        self._line(rep, detail)
        for q in rep.followers:
            q.put_nowait(None)

    async def crash(self, replica_id: str, exit_code: int = 1) -> None:
        """The replica ends as a process would, with `exit_code` (0: exited, else failed)."""
        rep = self._replicas.get(replica_id)
        if rep is None:
            raise KeyError(replica_id)
        state: ReplicaState = "exited" if exit_code == 0 else "failed"
        await self._end(rep, state, exit_code, f"exited with code {exit_code}")

    def set_unhealthy(self, replica_id: str, unhealthy: bool = True) -> None:
        """The replica keeps running but answers every request with 500 (or 200 again)."""
        rep = self._replicas.get(replica_id)
        if rep is None:
            raise KeyError(replica_id)
        rep.unhealthy = unhealthy

    async def status(self, replica_id: str) -> ReplicaStatus:
        rep = self._replicas.get(replica_id)
        if rep is None:
            return ReplicaStatus(state="stopped", detail="not known to this runtime")
        return ReplicaStatus(state=rep.state, exit_code=rep.exit_code, detail=rep.detail)

    async def stop(self, replica_id: str, timeout: float = 5.0) -> None:
        rep = self._replicas.get(replica_id)
        if rep is not None:
            await self._end(rep, "stopped", None, "stopped by the node")

    async def logs(self, replica_id: str, tail: int = 100) -> list[str]:
        rep = self._replicas.get(replica_id)
        return [] if rep is None or tail <= 0 else rep.lines[-tail:]

    async def follow(self, replica_id: str) -> AsyncIterator[str]:
        rep = self._replicas.get(replica_id)
        if rep is None or rep.state != "running":
            return
        q: asyncio.Queue[str | None] = asyncio.Queue()
        rep.followers.append(q)
        try:
            while (line := await q.get()) is not None:
                yield line
        finally:
            rep.followers.remove(q)

    async def aclose(self) -> None:
        for rid in list(self._replicas):
            await self.stop(rid)
