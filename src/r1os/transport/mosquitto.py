"""Run a real mosquitto broker as a child process (tests, benchmarks, external-broker devnets).

Production networks use an external broker; this helper lets the same code be exercised against
mosquitto on a free local port with a throw-away config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from r1os.errors import TransportError
from r1os.transport.base import StartStop

log = logging.getLogger(__name__)

DEFAULT_BINARY = "/usr/sbin/mosquitto"


def find_mosquitto(binary: str | None = None) -> str | None:
    """The path of the mosquitto binary, or None if it is not installed."""
    if binary:
        return binary if Path(binary).is_file() else shutil.which(binary)
    if Path(DEFAULT_BINARY).is_file():
        return DEFAULT_BINARY
    return shutil.which("mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS may hand it out again; use it promptly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def wait_for_port(host: str, port: int, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until something accepts TCP connections on host:port (TransportError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise TransportError(f"nothing accepts connections on {host}:{port}") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@dataclass(frozen=True)
class BridgeSpec:
    """One mosquitto bridge: this broker connects to `address` (host:port) as a client with the
    credentials and forwards `topic` both ways at `qos` (mosquitto's `topic r1/# both 1`)."""

    name: str
    address: str
    username: str
    password: str
    topic: str = "r1/#"
    qos: int = 1

    def config_lines(self) -> list[str]:
        for text in (self.name, self.address, self.username, self.password, self.topic):
            if not text or any(c.isspace() for c in text):
                raise TransportError(f"bridge setting {text!r} is empty or has spaces")
        return [
            f"connection {self.name}",
            f"address {self.address}",
            f"topic {self.topic} both {self.qos}",
            f"remote_username {self.username}",
            f"remote_password {self.password}",
            f"remote_clientid {self.name}",
            "cleansession true",
            # tells the remote broker this client is a bridge, so it does not send our own
            # messages back to us (no loops)
            "try_private true",
            "bridge_protocol_version mqttv311",
            "start_type automatic",
            "restart_timeout 1 10",
            "keepalive_interval 15",
            "notifications false",
        ]


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """A mosquitto password file (hashed by `mosquitto_passwd`) for `users` (name -> password)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = [tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password]
        try:
            subprocess.run(args, check=True, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise TransportError(
                f"mosquitto_passwd failed: {exc}", hint="install it: apt-get install mosquitto"
            ) from None
    path.chmod(0o600)


def mosquitto_config(
    *,
    port: int | None,
    host: str = "127.0.0.1",
    socket_path: Path | None = None,
    log_path: Path,
    bridge_port: int | None = None,
    password_file: Path | None = None,
    bridges: Sequence[BridgeSpec] = (),
    sys_interval: int | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> str:
    """The text of a mosquitto.conf: an anonymous client listener on host:port, or on the Unix
    socket `socket_path` instead (only processes that may open the file reach it: put a gate in
    front of it where clients must be checked), optionally a bridge listener that needs a user of
    `password_file`, and bridges to other brokers."""
    if (port is None) == (socket_path is None):
        raise TransportError("a client listener is a TCP port or a Unix socket, one of the two")
    lines = [
        "per_listener_settings true",
        # Started as root, mosquitto would switch to the `mosquitto` user and could
        # then read neither this folder nor our key files: stay who we are.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        "persistence false",
        f"log_dest file {log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",  # without it Nagle adds ~20 ms to small messages
        *([f"sys_interval {sys_interval}"] if sys_interval else []),
        f"listener 0 {socket_path}" if socket_path is not None else f"listener {port} {host}",
        "allow_anonymous true",
        *([f"certfile {certfile}", f"keyfile {keyfile}"] if certfile and keyfile else []),
    ]
    if bridge_port is not None:
        if password_file is None:
            raise TransportError("a bridge listener needs a password file")
        lines += [f"listener {bridge_port} {host}", "allow_anonymous false", f"password_file {password_file}"]
    for bridge in bridges:
        lines += bridge.config_lines()
    return "\n".join([*lines, ""])


class MosquittoBroker(StartStop):
    """A mosquitto child process on 127.0.0.1 with anonymous access and no persistence.

    `port=0` picks a free port once; `stop()` then `start()` restarts on that same port.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        start_timeout: float = 10.0,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        bridge_port: int | None = None,
        bridge_users: Mapping[str, str] | None = None,
        bridges: Sequence[BridgeSpec] = (),
        sys_interval: int | None = None,
    ) -> None:
        found = find_mosquitto(binary)
        if found is None:
            raise TransportError(
                f"mosquitto not found ({binary or DEFAULT_BINARY})",
                hint="install it: apt-get install mosquitto",
            )
        self.binary = found
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        if (certfile is None) != (keyfile is None):
            raise TransportError("TLS needs both certfile and keyfile")
        self.certfile = Path(certfile) if certfile else None
        self.keyfile = Path(keyfile) if keyfile else None
        self.bridge_port = bridge_port
        self.bridge_users = dict(bridge_users or {})
        if (bridge_port is None) != (not self.bridge_users):
            raise TransportError("a bridge listener needs bridge_port and bridge_users together")
        self.bridges = list(bridges)
        self.sys_interval = sys_interval
        self._dir = tempfile.TemporaryDirectory(prefix="r1os-mosquitto-")
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.certfile else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def log_path(self) -> Path:
        return Path(self._dir.name) / "mosquitto.log"

    def _write_config(self) -> Path:
        conf = Path(self._dir.name) / "mosquitto.conf"
        passwords = None
        if self.bridge_users:
            passwords = Path(self._dir.name) / "passwd"
            write_password_file(passwords, self.bridge_users)
        conf.write_text(
            mosquitto_config(
                port=self.port,
                host=self.host,
                log_path=self.log_path,
                bridge_port=self.bridge_port,
                password_file=passwords,
                bridges=self.bridges,
                sys_interval=self.sys_interval,
                certfile=self.certfile,
                keyfile=self.keyfile,
            )
        )
        return conf

    async def start(self) -> None:
        if self.running:
            return
        conf = self._write_config()
        stderr = self._stderr_file()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-c",
                str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        finally:
            os.close(stderr)
        try:
            await asyncio.wait_for(self._wait_ready(), self.start_timeout)
        except (TimeoutError, TransportError) as exc:
            tail = self._log_tail()
            await self.stop()
            raise TransportError(
                f"mosquitto did not start on {self.host}:{self.port}: {exc or 'timeout'}"
                + (f"; log: {tail}" if tail else ""),
                hint="is the port already in use?",
            ) from None
        log.info("mosquitto (pid %s) listening on %s", self._proc.pid, self.url)

    async def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            if proc.returncode is not None:
                raise TransportError(f"mosquitto exited with code {proc.returncode}")
            # Ready once *this* process listens on the port: a TCP probe alone would be fooled
            # by another server already holding it.
            if self._listening(proc.pid):
                await wait_for_port(self.host, self.port, timeout=1.0)
                return
            await asyncio.sleep(0.02)

    def _listening(self, pid: int) -> bool:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)

    def _stderr_file(self) -> int:
        # Errors from before mosquitto opens its log file (bad config) land here.
        return os.open(Path(self._dir.name) / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    def _log_tail(self) -> str:
        lines: list[str] = []
        for path in (Path(self._dir.name) / "stderr.log", self.log_path):
            try:
                lines += path.read_text().strip().splitlines()
            except OSError:
                pass
        return " | ".join(lines[-3:])

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("mosquitto on %s stopped", self.url)

    def cleanup(self) -> None:
        """Remove the temporary config folder (call after the last stop)."""
        self._dir.cleanup()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        self.cleanup()
