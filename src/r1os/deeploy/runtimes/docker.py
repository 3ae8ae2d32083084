"""The `docker` runtime: each replica is a container on a Docker engine, driven through the Docker SDK.

How a replica runs:

- the image is `launch.image`, which must already be on the engine: a node never pulls unless it was
  built with `pull=True` (many networks reach no registry; `docker load` or `docker import` the image on
  the node, or build `busybox:local` with `build_busybox_image`);
- the command is `launch.command` when given, else the image's own;
- host networking, so the replica serves on 127.0.0.1:`launch.port` like a process or plugin replica;
- the app folder is bind-mounted read-write at `/app`, which is also the working directory (one path
  whatever the node's own layout, so a spec can name `/app/...` in its command);
- `launch.env` is the whole environment the node adds (the image's own variables stay);
- `cpu` becomes a CPU quota (nano-CPUs), `memory_mb` a hard memory limit, `gpu` a device request;
- an init process (`docker-init`) runs first, so a replica that ignores SIGTERM (busybox as PID 1 does)
  still stops at once, and zombies are reaped;
- labels `r1os.replica`, `r1os.app` and `r1os.scope` (the node, when given) mark every container, so
  `cleanup()` finds what a crashed node left behind; the container's name is derived from the replica
  id and the scope, so two nodes sharing one engine never collide.

The SDK is blocking: every call runs in a worker thread. Neither the SDK nor an engine is needed to
import this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import logging
import math
import os
import re
import shutil
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from r1os.deeploy.runtimes._base import AppRuntime, ReplicaLaunch, ReplicaStatus, RuntimeFailure

log = logging.getLogger("r1os.deeploy.docker")

#: Where the app folder appears inside every container (and its working directory).
APP_DIR = "/app"
LABEL = "r1os.replica"
LABEL_APP = "r1os.app"
LABEL_SCOPE = "r1os.scope"
#: The log file a stopped replica's last lines are kept in (inside `launch.run_dir`).
KEPT_LOG = "container.log"
KEPT_LINES = 1000
FOLLOW_QUEUE = 1024

_NAME_OK = re.compile(r"[^a-zA-Z0-9_.-]")
_NO_IMAGE_HINT = (
    "the engine has no registry to pull from here: put the image on this node with "
    "`docker load -i image.tar` or `docker import rootfs.tar NAME:TAG` "
    "(r1os.deeploy.runtimes.docker.build_busybox_image builds busybox:local)"
)


def _engine_error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _make_client(base_url: str | None, timeout: float = 60.0) -> Any:
    """A `docker.DockerClient` for `base_url` (None: `DOCKER_HOST`, else the default socket)."""
    import docker

    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=int(math.ceil(timeout)), max_pool_size=32)
    return docker.DockerClient.from_env(timeout=int(math.ceil(timeout)), max_pool_size=32)


def engine_unavailable(base_url: str | None = None, timeout: float = 3.0) -> str | None:
    """None if a Docker engine answers at `base_url` (None: `DOCKER_HOST` or the default socket),
    else one line saying why not."""
    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if where.startswith("unix://") and not os.path.exists(where[len("unix://") :]):
        # no engine socket: answered without importing the SDK (megabytes in every node that has no Docker)
        return f"no Docker engine answers at {where}: the socket does not exist"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker package is not installed (pip install 'docker>=7')"
    try:
        client = _make_client(base_url, timeout)
    except Exception as exc:  # the SDK asks the engine its API version as it is built
        return f"no Docker engine answers at {where}: {_engine_error_text(exc)}"
    try:
        client.ping()
    except Exception as exc:
        return f"the Docker engine at {where} does not answer: {_engine_error_text(exc)}"
    finally:
        client.close()
    return None


class _EngineCheck:
    """`DockerRuntime.unavailable(base_url=None)` asks the engine at `base_url` (None: `DOCKER_HOST`
    or the default socket); `runtime.unavailable()` asks the runtime's own engine."""

    def __get__(self, obj: DockerRuntime | None, objtype: type | None = None) -> Any:
        own = obj.base_url if obj is not None else None

        def unavailable(base_url: str | None = None) -> str | None:
            return engine_unavailable(base_url or own)

        return unavailable


class DockerRuntime(AppRuntime):
    """Replicas as containers on one Docker engine.

    `base_url`: the engine (`unix:///path/docker.sock`, `tcp://host:2375`); None reads `DOCKER_HOST`,
    else the default socket. `scope`: who owns these containers on a shared engine (the node's
    address); it labels and names them. `pull`: pull a missing image instead of refusing it.
    `init`: run docker-init as PID 1 in each container.
    """

    name = "docker"
    unavailable = _EngineCheck()

    def __init__(
        self,
        base_url: str | None = None,
        *,
        scope: str = "",
        pull: bool = False,
        init: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.scope = scope
        self.pull = pull
        self.init = init
        self.timeout = timeout
        self._client_obj: Any = None
        self._client_lock = threading.Lock()
        self._run_dirs: dict[str, Path] = {}
        self._started: set[str] = set()
        self._follows: set[Any] = set()

    # -- names and the engine -------------------------------------------------------------------------

    def container_name(self, replica_id: str) -> str:
        """The container's name for `replica_id` (unique per scope on one engine)."""
        rid = _NAME_OK.sub("-", replica_id)
        if len(rid) > 180 or rid != replica_id:
            rid = f"{rid[:160]}-{hashlib.sha256(replica_id.encode()).hexdigest()[:12]}"
        if self.scope:
            return f"r1os-{hashlib.sha256(self.scope.encode()).hexdigest()[:8]}-{rid}"
        return f"r1os-{rid}"

    def _labels(self) -> list[str]:
        return [f"{LABEL_SCOPE}={self.scope}"]

    def _client(self) -> Any:
        """The SDK client (made on first use, in a worker thread: making it asks the engine)."""
        with self._client_lock:
            if self._client_obj is None:
                try:
                    self._client_obj = _make_client(self.base_url, self.timeout)
                except Exception as exc:
                    where = self.base_url or os.environ.get("DOCKER_HOST") or "the default socket"
                    raise RuntimeFailure(
                        f"no Docker engine answers at {where}: {_engine_error_text(exc)}",
                        cause="no_engine",
                        hint="start dockerd, or give the node the engine's URL (DOCKER_HOST)",
                    ) from None
            return self._client_obj

    def _api(self) -> Any:
        return self._client().api

    # -- start ------------------------------------------------------------------------------------------

    async def start(self, launch: ReplicaLaunch) -> None:
        if not launch.image:
            raise RuntimeFailure(
                f"replica {launch.replica_id}: runtime 'docker' needs an image", cause="no_image"
            )
        await asyncio.to_thread(self._start, launch)

    def _start(self, launch: ReplicaLaunch) -> None:
        import docker.errors
        from docker.types import DeviceRequest, LogConfig, Mount

        client = self._client()
        api = client.api
        image = launch.image
        assert image is not None
        name = self.container_name(launch.replica_id)
        host_config = api.create_host_config(
            network_mode="host",
            mounts=[Mount(target=APP_DIR, source=str(launch.folder), type="bind", read_only=False)],
            nano_cpus=max(1, int(launch.cpu * 1e9)),
            mem_limit=f"{launch.memory_mb}m",
            init=self.init or None,
            security_opt=["no-new-privileges"],
            log_config=LogConfig(type="json-file", config={"max-size": "8m", "max-file": "2"}),
            device_requests=(
                [DeviceRequest(count=launch.gpu, capabilities=[["gpu"]])] if launch.gpu else None
            ),
        )
        labels = {LABEL: launch.replica_id, LABEL_APP: launch.app, LABEL_SCOPE: self.scope}

        def create() -> Any:
            return api.create_container(
                image,
                command=list(launch.command) or None,
                name=name,
                environment=dict(launch.env),
                working_dir=APP_DIR,
                labels=labels,
                host_config=host_config,
            )

        # The common case costs one request; a missing image or a leftover of the same replica (a node
        # restarted after a crash) is dealt with when the engine reports it.
        for _ in range(3):
            try:
                created = create()
                break
            except docker.errors.ImageNotFound:
                self._pull_or_refuse(image, launch.replica_id)
            except docker.errors.APIError as exc:
                if getattr(exc, "status_code", None) != 409:  # 409: the name is taken
                    raise self._failure(launch.replica_id, "cannot create its container", exc) from None
                self._remove_quietly(name)
        else:
            raise RuntimeFailure(
                f"replica {launch.replica_id}: cannot create its container", cause="start_failed"
            )
        cid = created["Id"]
        self._started.add(launch.replica_id)
        self._run_dirs[launch.replica_id] = launch.run_dir
        try:
            api.start(cid)
        except docker.errors.APIError as exc:
            self._remove_quietly(cid)
            self._started.discard(launch.replica_id)
            raise self._failure(launch.replica_id, "its container does not start", exc) from None
        log.info("replica %s: container %s (%s) started from %s", launch.replica_id, name, cid[:12], image)

    def _pull_or_refuse(self, image: str, replica_id: str) -> None:
        if self.pull:
            try:
                self._client().images.pull(image)
                return
            except Exception as exc:
                log.warning("replica %s: pulling %s failed: %s", replica_id, image, exc)
                raise RuntimeFailure(
                    f"replica {replica_id}: image {image} is not on this node's engine and pulling "
                    f"it failed: {_engine_error_text(exc)}",
                    cause="no_image",
                    hint=_NO_IMAGE_HINT,
                ) from None
        log.warning("replica %s: image %s is not on the engine", replica_id, image)
        raise RuntimeFailure(
            f"replica {replica_id}: image {image} is not on this node's Docker engine",
            cause="no_image",
            hint=_NO_IMAGE_HINT,
        )

    def _failure(self, replica_id: str, what: str, exc: BaseException) -> RuntimeFailure:
        text = getattr(exc, "explanation", None) or _engine_error_text(exc)
        log.warning("replica %s: %s: %s", replica_id, what, text)
        return RuntimeFailure(f"replica {replica_id}: {what}: {text}", cause="start_failed")

    def _remove_quietly(self, ref: str) -> None:
        import docker.errors

        try:
            self._api().remove_container(ref, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if getattr(exc, "status_code", None) != 409:  # 409: already being removed
                raise

    # -- status -----------------------------------------------------------------------------------------

    async def status(self, replica_id: str) -> ReplicaStatus:
        return await asyncio.to_thread(self._status, replica_id)

    def _status(self, replica_id: str) -> ReplicaStatus:
        import docker.errors

        name = self.container_name(replica_id)
        try:
            info = self._api().inspect_container(name)
        except docker.errors.NotFound:
            return ReplicaStatus(state="stopped", detail="no such container")
        state = info.get("State") or {}
        status = str(state.get("Status", ""))
        cid = str(info.get("Id", ""))[:12]
        pid = int(state.get("Pid") or 0) or None
        if status in ("running", "restarting", "paused"):
            return ReplicaStatus(state="running", pid=pid, container=cid, detail=status)
        if status == "created":
            return ReplicaStatus(state="starting", container=cid, detail=status)
        if status in ("exited", "dead"):
            code = int(state.get("ExitCode", -1))
            why = [f"exit code {code}"]
            if state.get("OOMKilled"):
                why.append("killed: out of memory")
            if state.get("Error"):
                why.append(str(state["Error"])[:300])
            failed = code != 0 or status == "dead" or bool(state.get("OOMKilled"))
            return ReplicaStatus(
                state="failed" if failed else "exited", exit_code=code, container=cid, detail="; ".join(why)
            )
        return ReplicaStatus(state="stopped", container=cid, detail=status or "unknown")

    # -- stop -------------------------------------------------------------------------------------------

    async def stop(self, replica_id: str, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self._stop, replica_id, timeout)

    def _stop(self, replica_id: str, timeout: float) -> None:
        import docker.errors

        name = self.container_name(replica_id)
        api = self._api()
        try:
            api.stop(name, timeout=max(0, math.ceil(timeout)))
        except docker.errors.NotFound:
            self._started.discard(replica_id)
            return
        except docker.errors.APIError as exc:
            log.warning("replica %s: stopping %s: %s", replica_id, name, exc)
        self._keep_logs(replica_id, name)
        self._remove_quietly(name)
        self._started.discard(replica_id)
        log.info("replica %s: container %s stopped and removed", replica_id, name)

    def _keep_logs(self, replica_id: str, name: str) -> None:
        """Keep the last lines of a container about to be removed, so `logs()` still shows them."""
        run_dir = self._run_dirs.get(replica_id)
        if run_dir is None:
            return
        try:
            data = self._api().logs(name, stdout=True, stderr=True, tail=KEPT_LINES)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / KEPT_LOG).write_bytes(data)
        except Exception as exc:  # keeping logs must never stop a stop
            log.debug("replica %s: cannot keep logs: %s", replica_id, exc)

    # -- logs -------------------------------------------------------------------------------------------

    async def logs(self, replica_id: str, tail: int = 100) -> list[str]:
        return await asyncio.to_thread(self._logs, replica_id, tail)

    def _logs(self, replica_id: str, tail: int) -> list[str]:
        import docker.errors

        if tail <= 0:
            return []
        try:
            data: bytes = self._api().logs(
                self.container_name(replica_id), stdout=True, stderr=True, tail=tail
            )
        except docker.errors.NotFound:
            run_dir = self._run_dirs.get(replica_id)
            kept = run_dir / KEPT_LOG if run_dir is not None else None
            if kept is None or not kept.is_file():
                return []
            data = kept.read_bytes()
        lines = data.decode("utf-8", "replace").splitlines()
        return lines[-tail:]

    def follow(self, replica_id: str) -> AsyncIterator[str]:
        """Lines the replica writes from now on (even before the engine is asked), until its container
        stops or the caller stops iterating (closing the iterator closes the engine's stream)."""
        return self._follow(replica_id, time.time())

    async def _follow(self, replica_id: str, since: float) -> AsyncIterator[str]:
        import docker.errors

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue(FOLLOW_QUEUE)
        closed = threading.Event()
        holder: dict[str, Any] = {}
        name = self.container_name(replica_id)

        def put(item: str | None) -> bool:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    fut.result(timeout=0.5)
                    return True
                except concurrent.futures.TimeoutError:
                    if closed.is_set():
                        fut.cancel()
                        return False
                except Exception:  # the loop is gone
                    return False

        def pump() -> None:
            buf = b""
            try:
                stream = self._api().logs(
                    name, stdout=True, stderr=True, stream=True, follow=True, since=since
                )
            except docker.errors.NotFound:
                put(None)
                return
            except Exception as exc:
                log.warning("replica %s: cannot follow logs: %s", replica_id, exc)
                put(None)
                return
            holder["stream"] = stream
            self._follows.add(stream)
            try:
                if closed.is_set():
                    return
                for chunk in stream:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if not put(line.decode("utf-8", "replace")):
                            return
                    if closed.is_set():
                        return
                if buf and not closed.is_set():
                    put(buf.decode("utf-8", "replace"))
            except Exception as exc:
                if not closed.is_set():
                    log.debug("replica %s: log stream ended: %s", replica_id, exc)
            finally:
                self._follows.discard(stream)
                _close_stream(stream)
                if not closed.is_set():
                    put(None)

        thread = threading.Thread(target=pump, name=f"r1os-docker-follow-{replica_id}", daemon=True)
        thread.start()
        try:
            while True:
                line = await queue.get()
                if line is None:
                    return
                yield line
        finally:
            closed.set()
            stream = holder.get("stream")
            if stream is not None:
                _close_stream(stream)

    # -- cleanup ----------------------------------------------------------------------------------------

    async def cleanup(self) -> list[str]:
        """Remove every container labeled with this runtime's scope, running or not (what a node that
        crashed left behind). Returns their names."""
        return await asyncio.to_thread(self._cleanup)

    def _cleanup(self) -> list[str]:
        api = self._api()
        found = api.containers(all=True, filters={"label": self._labels()})
        names: list[str] = []
        for c in found:
            cname = str((c.get("Names") or ["/" + str(c["Id"])])[0]).lstrip("/")
            self._remove_quietly(str(c["Id"]))
            names.append(cname)
        if names:
            log.info("removed %d leftover container(s): %s", len(names), ", ".join(names))
        return names

    async def aclose(self) -> None:
        """Stop and remove every container this runtime started, close open log streams and the
        engine connection."""
        for stream in list(self._follows):
            _close_stream(stream)
        if self._client_obj is None:
            return
        started = list(self._started)
        if started:
            await asyncio.gather(*(self.stop(rid, timeout=2.0) for rid in started), return_exceptions=True)
        client, self._client_obj = self._client_obj, None
        await asyncio.to_thread(client.close)


def _close_stream(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # already closed, or the socket went away with the engine
        pass


# -- a test image with no registry ----------------------------------------------------------------------

#: Where Debian's static busybox is (`busybox-static`); the dynamic `busybox` package will not run in
#: an image that holds no C library.
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no program interpreter (statically linked)."""
    import struct

    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            return False
        end = "<" if head[5] == 1 else ">"
        phoff = struct.unpack_from(end + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_static_busybox() -> Path:
    """The static busybox binary on this machine, or `RuntimeFailure` saying how to get one."""
    for candidate in BUSYBOX_PATHS:
        p = Path(candidate)
        if p.is_file() and _is_static_elf(p):
            return p
    which = shutil.which("busybox")
    if which and _is_static_elf(Path(which)):
        return Path(which)
    raise RuntimeFailure(
        "no statically linked busybox on this machine",
        cause="no_busybox",
        hint="apt-get install busybox-static",
    )


def busybox_rootfs(busybox: Path | None = None) -> bytes:
    """A tar of a minimal root file system: busybox with a link per applet in /bin, /etc/passwd,
    /tmp and /app. Reproducible (fixed times), so importing it twice gives the same layer."""
    import subprocess

    binary = busybox or find_static_busybox()
    applets = subprocess.run(
        [str(binary), "--list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    out = io.BytesIO()
    mtime = 1_700_000_000

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, mtime
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, mtime
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "etc", "app", "proc", "sys", "dev", "root"):
            add_dir(tar, d)
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, "bin/busybox", binary.read_bytes(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            if "/" in applet or not applet:
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, mtime
            tar.addfile(info)
        add_file(
            tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return out.getvalue()


def build_busybox_image(
    client_or_url: Any = None, tag: str = "busybox:local", busybox: Path | None = None
) -> str:
    """Import a busybox image into an engine with no registry (`docker import` of `busybox_rootfs`),
    tagged `tag`; returns its image id. `client_or_url`: a `docker.DockerClient`, an engine URL, or
    None for `DOCKER_HOST`/the default socket. Blocking."""
    own = not hasattr(client_or_url, "api")
    client = _make_client(client_or_url) if own else client_or_url
    try:
        repository, _, version = tag.rpartition(":")
        if not repository or "/" in version:
            repository, version = tag, "latest"
        client.api.import_image_from_data(
            busybox_rootfs(busybox),
            repository=repository,
            tag=version,
            changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]', "WORKDIR /"],
        )
        return str(client.api.inspect_image(tag)["Id"])
    finally:
        if own:
            client.close()
