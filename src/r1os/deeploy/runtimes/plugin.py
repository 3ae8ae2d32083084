"""The `plugin` runtime: a replica is r1os's plugin worker (`_worker.py`) serving the app's Python
class, in the same sandbox and with the same limits as a `process` replica.

The worker runs on the node's own Python (`sys.executable`, so the packages installed beside r1os,
such as scikit-learn, are importable), with the app folder first on `sys.path`. The health path the
worker answers on comes from `R1OS_HEALTH_PATH` in the launch's env (default "/").

Warm workers ("spares"): starting Python and importing a model library (scikit-learn: about two
seconds) is most of a plugin's start. With `spares=N` the runtime keeps N workers started ahead of
time, each in a sandbox and cgroup of its own exactly as a replica's (the same allow-list and hidden
paths), with an empty folder of its own (`<spare_dir>/spare-<pid>-<n>`) as its app folder and cwd,
no app env, no secret and no port. A spare imports the node's `preload` modules and waits on its
stdin. `start()` takes a spare when one runs (its imports may still be going on), and:

1. sets the launch's CPU and memory limits on the spare's groups (it was counted in them from its
   first instruction); a spare already past the launch's memory is not used;
2. moves the app's files from `launch.folder` into the spare's folder, then renames that folder to
   `launch.folder`: the sandbox binds the directory itself, not its name, so the worker's cwd now
   holds the app's files, and the folder the agent later deletes is the one the app wrote in;
3. sends the claim (`{"plugin", "env"}`) on the worker's stdin: the worker replaces its whole
   environment with the launch's, puts its cwd first on `sys.path`, and serves the plugin as a
   worker started for the app does (`_worker.spare`).

From then on the replica is the app's like any other (its log in `launch.run_dir`, stopped with its
whole tree). A spare serves one app, once; another one is started in the background a moment after a
claim (`refill_delay`, so that it does not take the CPU from the app's own setup). A spare that dies
is replaced, with a line in the node's log and a back-off doubling from 1 s to 60 s. Spares are never
replicas: `status()` of a spare's name is `stopped`. When no spare is running, or one cannot be used
(say the spare folder and the app folder lie on different file systems), the replica starts cold.

What a warm start cannot give exactly as a cold one: the cwd's path inside the sandbox is the spare
folder's (the app's files, and only those, are in it), `/tmp` is sized for `SPARE_MEMORY_MB`, and a
preloaded module read its environment variables (thread counts, say) before the app's env was set.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from r1os.deeploy.runtimes import _sandbox
from r1os.deeploy.runtimes._base import ReplicaLaunch, RuntimeFailure
from r1os.deeploy.runtimes._worker import SPARE_READY, SPARE_SKIPPED
from r1os.deeploy.runtimes.process import LOG_NAME, ProcessRuntime, _LogFile, _Replica

log = logging.getLogger("r1os.deeploy")

#: Run by path, not with `-m`: `-m` would import r1os's packages (pydantic among them) first.
WORKER = Path(__file__).with_name("_worker.py")
#: The limits a spare waits under (an app's own apply from its claim on).
SPARE_CPU = 0.5
SPARE_MEMORY_MB = 1024
SPARE_BACKOFF_START_S = 1.0
SPARE_BACKOFF_MAX_S = 60.0
#: A spare that lived this long before dying resets the back-off.
SPARE_STABLE_S = 60.0


#: Spare numbers, unique in the node's process (a spare's name is its cgroup's too).
_SEQ = itertools.count(1)


class _NoClaim(Exception):
    """A spare cannot be used for this launch (the replica starts cold)."""


class PluginRuntime(ProcessRuntime):
    """Serves each replica's `plugin` class (`module.path:ClassName`) with the plugin worker."""

    name = "plugin"
    #: Seconds after a claim before a new spare starts.
    refill_delay = 1.0

    def __init__(
        self,
        *,
        limits: Literal["auto", "cgroup", "rlimit"] = "auto",
        hidden: Sequence[Path] = (),
        spares: int = 0,
        preload: Sequence[str] = (),
        spare_dir: Path | None = None,
    ) -> None:
        """`spares`: warm workers kept ready (0: none); `preload`: modules they import while they
        wait; `spare_dir`: where their folders are made, on the file system of the app folders (by
        default a temporary folder, removed by `aclose`). See the module's doc."""
        super().__init__(limits=limits, hidden=hidden)
        self._spare_count = max(0, spares)
        self._preload = list(preload)
        self._own_spare_dir = spare_dir is None
        self._spare_dir = spare_dir
        self._spares: dict[str, _Replica] = {}
        self._ready: set[str] = set()
        self._born: dict[str, float] = {}
        self._warned: set[str] = set()
        self._wake = asyncio.Event()
        self._manager: asyncio.Task[None] | None = None
        self._closed = False
        with contextlib.suppress(RuntimeError):  # no loop yet: the first start() begins
            asyncio.get_running_loop()
            self._ensure_spares()

    def command_for(self, launch: ReplicaLaunch) -> list[str]:
        if not launch.plugin:
            raise RuntimeFailure(f"replica {launch.replica_id}: runtime 'plugin' needs plugin: module:Class")
        # -P: the worker's own folder is not put on sys.path (the worker puts the app folder there).
        return [sys.executable, "-P", str(WORKER), launch.plugin]

    @property
    def spares_ready(self) -> int:
        """Spares running that have imported their modules."""
        return sum(1 for n, s in self._spares.items() if n in self._ready and not s.done.is_set())

    # -- start: warm when a spare runs, else cold ----------------------------------------------

    async def start(self, launch: ReplicaLaunch) -> None:
        self._ensure_spares()
        rid = launch.replica_id
        old = self._replicas.get(rid)
        if old is not None and old.state == "running":
            raise RuntimeFailure(f"replica {rid} is already running")
        self.command_for(launch)
        if not launch.folder.is_dir():
            raise RuntimeFailure(f"replica {rid}: app folder {launch.folder} does not exist")
        spare = self._take_spare()
        if spare is not None:
            try:
                await self._claim(spare, launch)
                return
            except _NoClaim as exc:
                log.info("deeploy: %s starts cold: spare %s not used: %s", rid, spare.launch.replica_id, exc)
                await self._discard(spare)
        await super().start(launch)

    def _take_spare(self) -> _Replica | None:
        live = [s for s in self._spares.values() if not s.done.is_set() and s.proc.returncode is None]
        if not live:
            return None
        # The one furthest along: ready first, then the oldest.
        spare = next((s for s in live if s.launch.replica_id in self._ready), live[0])
        name = spare.launch.replica_id
        del self._spares[name]
        self._ready.discard(name)
        self._born.pop(name, None)
        self._wake.set()
        return spare

    async def _claim(self, spare: _Replica, launch: ReplicaLaunch) -> None:
        rid, name = launch.replica_id, spare.launch.replica_id
        if spare.done.is_set() or spare.proc.returncode is not None:
            raise _NoClaim("it ended")
        pids = [spare.proc.pid, *self._app_pids(spare)] if self._limiter.mode == "rlimit" else []
        try:
            self._limiter.update(spare.confinement, launch.cpu, launch.memory_mb, pids)
        except (OSError, ValueError) as exc:
            raise _NoClaim(f"cannot set its limits: {exc}") from None
        try:
            await asyncio.to_thread(_move_in, launch.folder, spare.launch.folder)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                # No spare could ever be used here: stop keeping them.
                log.warning("deeploy: plugin spares turned off: %s (%s)", exc.strerror, self._spare_dir)
                self._spare_count = 0
                self._wake.set()
            raise _NoClaim(f"cannot give it the app's files: {exc}") from None
        # The folder is the app's now: from here on the spare is the replica.
        old_log, old_run = spare.log, spare.launch.run_dir
        try:
            launch.run_dir.mkdir(parents=True, exist_ok=True)
            spare.log = _LogFile(launch.run_dir / LOG_NAME)
        except OSError as exc:
            raise _NoClaim(f"cannot open the replica's log: {exc}") from None
        old_log.close()
        await asyncio.to_thread(shutil.rmtree, old_run, True)
        spare.launch = launch
        self._replicas[rid] = spare
        self._note(
            spare,
            f"started (pid {spare.proc.pid}, a warm worker; "
            f"limits: {launch.cpu:g} cpu, {launch.memory_mb} MiB)",
        )
        log.info("deeploy: %s runs on plugin spare %s", rid, name)
        claim = json.dumps({"plugin": launch.plugin, "env": self.env_for(launch)}).encode() + b"\n"
        stdin = spare.proc.stdin
        try:
            if stdin is None:
                raise ConnectionError("no pipe to the worker")
            stdin.write(claim)
            await stdin.drain()
            stdin.close()
        except (OSError, ConnectionError) as exc:
            # It died just now: its files are in place, so a cold worker takes over.
            del self._replicas[rid]
            spare.stopping = True
            await self._stop(spare, 1.0)
            raise _NoClaim(f"it ended before the claim: {exc}") from None

    # -- keeping spares ------------------------------------------------------------------------

    def _ensure_spares(self) -> None:
        if self._spare_count == 0 or self._closed or self.unavailable() is not None:
            return
        if self._manager is None or self._manager.done():
            self._manager = asyncio.create_task(self._keep_spares(), name="plugin-spares")

    async def _keep_spares(self) -> None:
        if self._spare_dir is None:
            self._spare_dir = Path(tempfile.mkdtemp(prefix="r1os-spares-"))
        await asyncio.to_thread(_sweep_spares, self._spare_dir)
        backoff = SPARE_BACKOFF_START_S
        while True:
            while len(self._spares) > self._spare_count:  # turned off
                name, extra = self._spares.popitem()
                self._ready.discard(name)
                await self._discard(extra)
            while len(self._spares) < self._spare_count:
                try:
                    spare = await self._start_spare()
                except (RuntimeFailure, OSError) as exc:
                    log.warning("deeploy: cannot start a plugin spare: %s (again in %g s)", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, SPARE_BACKOFF_MAX_S)
                    continue
                self._spares[spare.launch.replica_id] = spare
            self._wake.clear()
            waits = [asyncio.ensure_future(s.done.wait()) for s in self._spares.values()]
            waits.append(asyncio.ensure_future(self._wake.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            died = [s for s in self._spares.values() if s.done.is_set()]
            for s in died:
                name = s.launch.replica_id
                del self._spares[name]
                self._ready.discard(name)
                if time.monotonic() - self._born.pop(name, 0.0) > SPARE_STABLE_S:
                    backoff = SPARE_BACKOFF_START_S
                log.warning(
                    "deeploy: plugin spare %s ended (%s): another one in %g s", name, s.detail, backoff
                )
                await asyncio.to_thread(_remove_spare_dirs, s)
            if died:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, SPARE_BACKOFF_MAX_S)
            elif len(self._spares) < self._spare_count:
                backoff = SPARE_BACKOFF_START_S  # claimed: a spare that worked
                await asyncio.sleep(self.refill_delay)

    async def _start_spare(self) -> _Replica:
        assert self._spare_dir is not None
        name = f"spare-{os.getpid()}-{next(_SEQ)}"
        folder = self._spare_dir / name
        try:
            folder = await asyncio.to_thread(_fresh_dir, folder)
        except OSError as exc:
            raise RuntimeFailure(f"cannot make {folder}: {exc}") from None
        launch = ReplicaLaunch(
            replica_id=name,
            app="",
            runtime="plugin",
            folder=folder,
            run_dir=self._spare_dir / f"{name}.run",
            port=0,
            cpu=SPARE_CPU,
            memory_mb=SPARE_MEMORY_MB,
        )
        command = [sys.executable, "-P", str(WORKER), "--spare", *self._preload]
        # No app env: the sandbox's base only (an app's env comes with its claim).
        spare = await self._spawn(launch, command, _sandbox.sandbox_env({}), stdin=True)
        self._born[name] = time.monotonic()
        self._note(spare, f"spare started (pid {spare.proc.pid})")
        return spare

    def _emit(self, rep: _Replica, raw: bytes) -> None:
        super()._emit(rep, raw)
        name = rep.launch.replica_id
        if self._spares.get(name) is not rep:
            return
        line = raw.decode(errors="replace")
        if SPARE_READY in line:
            self._ready.add(name)
            log.info("deeploy: plugin spare %s ready %s", name, line.split(SPARE_READY, 1)[1].strip())
        elif SPARE_SKIPPED in line:
            what = line.split(SPARE_SKIPPED, 1)[1]
            module = what.split(":", 1)[0]
            if module not in self._warned:  # once per node, not once per spare
                self._warned.add(module)
                log.warning("deeploy: plugin spares cannot preload %s; skipped", what)

    async def _discard(self, spare: _Replica) -> None:
        spare.stopping = True
        try:
            await self._stop(spare, 1.0)
        except RuntimeFailure as exc:
            log.warning("deeploy: plugin spare %s: %s", spare.launch.replica_id, exc)
        await asyncio.to_thread(_remove_spare_dirs, spare)

    async def aclose(self) -> None:
        self._closed = True
        if self._manager is not None:
            self._manager.cancel()
            await asyncio.gather(self._manager, return_exceptions=True)
        spares, self._spares = list(self._spares.values()), {}
        self._ready.clear()
        await asyncio.gather(*(self._discard(s) for s in spares))
        await super().aclose()
        if self._own_spare_dir and self._spare_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._spare_dir, True)


def _fresh_dir(folder: Path) -> Path:
    """An empty `folder`, by its real path (the sandbox binds that)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return Path(os.path.realpath(folder))


def _remove_spare_dirs(spare: _Replica) -> None:
    """A spare's folder and run dir (never a claimed one's: its launch is the app's then)."""
    if spare.launch.app == "":
        shutil.rmtree(spare.launch.folder, ignore_errors=True)
        shutil.rmtree(spare.launch.run_dir, ignore_errors=True)


def _sweep_spares(root: Path) -> None:
    """Make `root`, and remove what spares of nodes that are gone left in it (`spare-<pid>-...`)."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        pid = entry.name.split("-")[1] if entry.name.startswith("spare-") else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def _move_in(folder: Path, spare_folder: Path) -> None:
    """Move the app's files from `folder` into the (empty) `spare_folder`, then rename that to
    `folder`; on failure, the files are put back."""
    if os.stat(folder).st_dev != os.stat(spare_folder).st_dev:
        raise OSError(errno.EXDEV, "the spare folder is on another file system than the app folder")
    if any(spare_folder.iterdir()):
        raise OSError(errno.ENOTEMPTY, "the spare's folder is not empty")
    moved: list[str] = []
    try:
        for entry in sorted(os.listdir(folder)):
            os.rename(folder / entry, spare_folder / entry)
            moved.append(entry)
        os.rename(spare_folder, folder)  # over the app folder, empty now
    except OSError:
        for entry in moved:
            with contextlib.suppress(OSError):
                os.rename(spare_folder / entry, folder / entry)
        raise
