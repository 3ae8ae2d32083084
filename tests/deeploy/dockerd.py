"""A private Docker engine for tests: its own dockerd with its own data, state, socket and containerd,
started and stopped by the test that needs it, never touching an engine the machine already runs.

`dockerd --iptables=false --bridge=none --storage-driver=vfs --ip-forward=false` changes nothing on the
host's network (containers use host networking) and needs no kernel storage driver. It needs root.
Where it cannot start, `DockerdUnavailable` says why (with dockerd's own last error line) and the tests
skip with that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
MNT_DETACH = 2


class DockerdUnavailable(Exception):
    """No private engine can run here; the message says why."""


def find_dockerd() -> str:
    """The dockerd binary (the engine, not the `docker` client), or `DockerdUnavailable`."""
    for candidate in DOCKERD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("dockerd")
    if found:
        return found
    raise DockerdUnavailable("no dockerd binary (./dev setup installs Debian's docker.io)")


def _last_error(log_path: Path) -> str:
    """The most telling line of dockerd's log: its last fatal/error line, else its last line."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    for ln in reversed(lines):
        if "level=fatal" in ln or "level=error" in ln or ln.startswith("failed") or "Error" in ln:
            return ln[:400]
    return lines[-1][:400] if lines else "(empty log)"


def _ping(url: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _unmount_under(root: Path) -> None:
    """Detach every mount left under `root` (dockerd's netns file, bind mounts), deepest first."""
    libc = ctypes.CDLL(None, use_errno=True)
    prefix = str(root.resolve())
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, reverse=True):
        libc.umount2(point.encode(), MNT_DETACH)


class Dockerd:
    """One private dockerd under a fresh folder in /tmp (short: unix socket paths are bounded)."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self.root = Path(tempfile.mkdtemp(prefix="r1dk-", dir="/tmp"))
        # containerd namespaces are letters and digits joined by single '.', '_' or '-': a temporary
        # folder's random name may end in '_' (seen: "r1dk-nm_w9eg_"), so the namespace uses a hash of it.
        self.namespace = "r1os-" + hashlib.sha256(self.root.name.encode()).hexdigest()[:12]
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.log_path = self.root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after: float | None = None

    def start(self) -> str:
        """Start dockerd and wait until it answers; its socket URL, or `DockerdUnavailable`."""
        binary = find_dockerd()
        if os.geteuid() != 0:
            raise DockerdUnavailable(f"dockerd needs root here (tests run as uid {os.geteuid()})")
        (self.root / "daemon.json").write_text("{}")
        args = [
            binary,
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
            "--storage-driver=vfs",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--config-file={self.root / 'daemon.json'}",
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
            "--shutdown-timeout=2",
            f"--host={self.url}",
        ]
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = began + self.start_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                reason = _last_error(self.log_path)
                self.stop()
                raise DockerdUnavailable(f"dockerd exited with code {code}: {reason}")
            if self.socket.exists() and _ping(self.url):
                self.ready_after = time.monotonic() - began
                return self.url
            if time.monotonic() > deadline:
                reason = _last_error(self.log_path)
                self.stop()
                raise DockerdUnavailable(f"dockerd did not answer within {self.start_timeout:g} s: {reason}")
            time.sleep(0.05)

    def _remove_containers(self) -> None:
        import docker

        try:
            client = docker.DockerClient(base_url=self.url, timeout=10)
        except Exception:
            return
        try:
            for c in client.containers.list(all=True):
                with contextlib.suppress(Exception):
                    c.remove(force=True)
        except Exception:
            pass
        finally:
            client.close()

    def _own_processes(self) -> list[int]:
        """Pids of processes started for this engine (its containerd and shims name our folder)."""
        pids = []
        mark = str(self.root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if mark in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """Remove the containers, stop dockerd (TERM, then KILL), then its leftovers, mounts and folder."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                self._remove_containers()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            for pid in self._own_processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def private_engine(start_timeout: float = 60.0) -> Iterator[Dockerd]:
    """A running private engine for the block (`DockerdUnavailable` if none can start)."""
    engine = Dockerd(start_timeout)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
