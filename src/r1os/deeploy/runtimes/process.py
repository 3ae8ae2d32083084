"""The `process` runtime: a replica is the app's own command, run in the sandbox of `_sandbox`
(bubblewrap, with CPU and memory limits from cgroups or rlimits).

The node reads the replica's stdout and stderr through one pipe and keeps them in
`<run_dir>/replica.log` (rotated to `replica.log.1` past `LOG_MAX_BYTES`, so a chatty app holds at most
two files), and hands new lines to whoever follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from r1os.deeploy.runtimes import _sandbox
from r1os.deeploy.runtimes._base import (
    AppRuntime,
    ReplicaLaunch,
    ReplicaState,
    ReplicaStatus,
    RuntimeFailure,
)

LOG_NAME = "replica.log"
LOG_MAX_BYTES = 4 << 20
#: A line longer than this is cut into pieces of this size.
LINE_MAX_BYTES = 16 << 10
#: Lines kept for each follower that does not keep up (older ones are dropped, with a notice).
FOLLOW_QUEUE = 1000


class _LogFile:
    """An append-only log with one rotation."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = LOG_MAX_BYTES if max_bytes is None else max_bytes
        self._fh: IO[bytes] = path.open("ab")
        self._size = self._fh.tell()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._fh.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._fh = self.path.open("ab")
            self._size = 0
        self._fh.write(data)
        self._size += len(data)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


def _tail_lines(path: Path, n: int) -> list[str]:
    """The last `n` lines of `path` and, if it holds fewer, of its rotated predecessor."""
    if n <= 0:
        return []
    out: list[str] = []
    for p in (path, path.with_name(path.name + ".1")):
        try:
            with p.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                end = fh.tell()
                pos, chunk, buf = end, 64 << 10, b""
                while pos > 0 and buf.count(b"\n") <= n - len(out):
                    step = min(chunk, pos)
                    pos -= step
                    fh.seek(pos)
                    buf = fh.read(step) + buf
        except OSError:
            continue
        lines = buf.decode(errors="replace").splitlines()
        if pos > 0:
            lines = lines[1:]  # the first one may be cut
        out = lines[-(n - len(out)) :] + out
        if len(out) >= n:
            break
    return out[-n:]


@dataclass
class _Replica:
    launch: ReplicaLaunch
    proc: asyncio.subprocess.Process
    confinement: _sandbox.Confinement
    log: _LogFile
    state: ReplicaState = "running"
    exit_code: int | None = None
    detail: str = ""
    stopping: bool = False
    followers: list[asyncio.Queue[str | None]] = field(default_factory=list)
    last_line: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None


class ProcessRuntime(AppRuntime):
    """Runs each replica's `command` in its own bubblewrap sandbox, its folder as cwd."""

    name = "process"

    def __init__(
        self,
        *,
        limits: Literal["auto", "cgroup", "rlimit"] = "auto",
        hidden: Sequence[Path] = (),
    ) -> None:
        """`limits`: how CPU and memory are capped (see `_sandbox`; "auto" picks the best that works);
        `hidden`: paths replicas must never see even where a bound directory holds them (the
        node's home, say)."""
        self._limiter = _sandbox.node_limiter() if limits == "auto" else _sandbox.Limiter(limits)
        self._hidden = [Path(h) for h in hidden]
        self._replicas: dict[str, _Replica] = {}

    @property
    def limits(self) -> str:
        """What caps CPU and memory on this node, in one line."""
        return self._limiter.describe()

    @classmethod
    def unavailable(cls) -> str | None:
        return _sandbox.unavailable()

    def command_for(self, launch: ReplicaLaunch) -> list[str]:
        """What runs inside the sandbox."""
        if not launch.command:
            raise RuntimeFailure(f"replica {launch.replica_id}: runtime 'process' needs a command")
        return list(launch.command)

    def env_for(self, launch: ReplicaLaunch) -> dict[str, str]:
        return _sandbox.sandbox_env(launch.env)

    async def start(self, launch: ReplicaLaunch) -> None:
        rid = launch.replica_id
        old = self._replicas.get(rid)
        if old is not None and old.state == "running":
            raise RuntimeFailure(f"replica {rid} is already running")
        reason = self.unavailable()
        if reason:
            raise RuntimeFailure(f"cannot sandbox replica {rid}: {reason}")
        command = self.command_for(launch)
        if not launch.folder.is_dir():
            raise RuntimeFailure(f"replica {rid}: app folder {launch.folder} does not exist")
        rep = await self._spawn(launch, command, self.env_for(launch))
        self._replicas[rid] = rep
        self._note(rep, f"started (pid {rep.proc.pid}, limits: {launch.cpu:g} cpu, {launch.memory_mb} MiB)")

    async def _spawn(
        self, launch: ReplicaLaunch, command: list[str], env: dict[str, str], *, stdin: bool = False
    ) -> _Replica:
        """Start `command` in the sandbox of `launch` (its folder, limits, log) and watch it; with
        `stdin` the node keeps a pipe to its standard input (else it reads /dev/null)."""
        rid = launch.replica_id
        launch.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            inner = _sandbox.bwrap_command(
                launch.folder, command, hidden=self._hidden, tmp_mb=launch.memory_mb
            )
            confinement = self._limiter.prepare(rid, launch.cpu, launch.memory_mb)
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"replica {rid}: cannot prepare its sandbox: {exc}") from None
        log = _LogFile(launch.run_dir / LOG_NAME)
        try:
            proc = await asyncio.create_subprocess_exec(
                *confinement.prefix,
                *inner,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            confinement.release()
            raise RuntimeFailure(f"replica {rid}: cannot start the sandbox: {exc}") from None
        rep = _Replica(launch, proc, confinement, log)
        rep.watcher = asyncio.create_task(self._watch(rep), name=f"replica-{rid}")
        return rep

    def _note(self, rep: _Replica, text: str) -> None:
        line = f"[r1os] {time.strftime('%Y-%m-%dT%H:%M:%S')} {text}"
        self._emit(rep, line.encode())
        rep.log.flush()

    def _emit(self, rep: _Replica, raw: bytes) -> None:
        rep.log.write(raw + b"\n")
        line = raw.decode(errors="replace")
        if not line.startswith("[r1os]"):
            rep.last_line = line
        for q in rep.followers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(line)

    async def _watch(self, rep: _Replica) -> None:
        assert rep.proc.stdout is not None
        buf = b""
        try:
            while chunk := await rep.proc.stdout.read(64 << 10):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    for i in range(0, max(len(raw), 1), LINE_MAX_BYTES):
                        self._emit(rep, raw[i : i + LINE_MAX_BYTES])
                while len(buf) >= LINE_MAX_BYTES:
                    self._emit(rep, buf[:LINE_MAX_BYTES])
                    buf = buf[LINE_MAX_BYTES:]
                rep.log.flush()
            if buf:
                self._emit(rep, buf)
            code = await rep.proc.wait()
        except BaseException:
            self._kill_all(rep)
            self._finish(rep, -9)
            raise
        self._finish(rep, code)

    def _finish(self, rep: _Replica, code: int) -> None:
        if rep.done.is_set():
            return
        if code < 0:
            code = 128 - code  # killed by a signal, as a shell reports it
        # Whatever the app left behind in its groups goes with it.
        for pid in rep.confinement.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        oom = rep.confinement.oom_killed()
        rep.confinement.release()
        rep.exit_code = code
        if rep.stopping:
            rep.state, rep.detail = "stopped", "stopped by the node"
        elif code == 0:
            rep.state, rep.detail = "exited", "exited with code 0"
        else:
            rep.state = "failed"
            if oom:
                rep.detail = f"killed: went past its memory limit ({rep.launch.memory_mb} MiB)"
            else:
                rep.detail = f"exited with code {code}" + (
                    f": {rep.last_line[-300:]}" if rep.last_line else ""
                )
        self._note(rep, rep.detail)
        rep.log.close()
        for q in rep.followers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(None)
        rep.done.set()

    async def status(self, replica_id: str) -> ReplicaStatus:
        rep = self._replicas.get(replica_id)
        if rep is None:
            return ReplicaStatus(state="stopped", detail="not known to this runtime")
        if rep.state == "running" and rep.proc.returncode is not None:
            # Exited, the last of its output still being read: give it a moment to say how it ended.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rep.done.wait(), 1.0)
        if rep.state == "running":
            return ReplicaStatus(state="running", pid=rep.proc.pid, detail="running")
        return ReplicaStatus(state=rep.state, exit_code=rep.exit_code, detail=rep.detail)

    def _app_pids(self, rep: _Replica) -> list[int]:
        """The replica's own processes: everything under the sandbox except bubblewrap itself (whose
        PID-namespace init would pass a SIGTERM on as a SIGKILL)."""
        try:
            import psutil

            root = psutil.Process(rep.proc.pid)
            kids = root.children(recursive=True)
        except Exception:
            return []
        out = []
        for p in kids:
            try:
                if p.name() == "bwrap" and p.ppid() == rep.proc.pid:
                    continue
            except Exception:
                continue
            out.append(p.pid)
        return out

    def _kill_all(self, rep: _Replica) -> None:
        pids = {rep.proc.pid, *self._app_pids(rep), *rep.confinement.pids()}
        with contextlib.suppress(OSError):
            os.killpg(rep.proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    async def stop(self, replica_id: str, timeout: float = 5.0) -> None:
        rep = self._replicas.get(replica_id)
        if rep is not None:
            await self._stop(rep, timeout)

    async def _stop(self, rep: _Replica, timeout: float) -> None:
        if rep.done.is_set():
            return
        rep.stopping = True
        pids = self._app_pids(rep) if rep.proc.returncode is None else []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        if pids:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rep.done.wait(), timeout)
        if not rep.done.is_set():
            self._kill_all(rep)
            try:
                await asyncio.wait_for(rep.done.wait(), 10.0)
            except TimeoutError:
                if rep.watcher is not None:
                    rep.watcher.cancel()
                raise RuntimeFailure(f"replica {rep.launch.replica_id} did not end after SIGKILL") from None

    async def logs(self, replica_id: str, tail: int = 100) -> list[str]:
        rep = self._replicas.get(replica_id)
        if rep is None:
            return []
        return await asyncio.to_thread(_tail_lines, rep.launch.run_dir / LOG_NAME, tail)

    async def follow(self, replica_id: str) -> AsyncIterator[str]:
        rep = self._replicas.get(replica_id)
        if rep is None or rep.done.is_set():
            return
        q: asyncio.Queue[str | None] = asyncio.Queue(FOLLOW_QUEUE)
        rep.followers.append(q)
        try:
            while True:
                line = await q.get()
                if line is None:
                    return
                yield line
        finally:
            with contextlib.suppress(ValueError):
                rep.followers.remove(q)

    def log_path(self, replica_id: str) -> Path | None:
        """Where the replica's log is kept (None for one this runtime does not know)."""
        rep = self._replicas.get(replica_id)
        return None if rep is None else rep.launch.run_dir / LOG_NAME

    async def aclose(self) -> None:
        await asyncio.gather(*(self.stop(rid, timeout=2.0) for rid in list(self._replicas)))
        self._replicas.clear()
