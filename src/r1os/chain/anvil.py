"""Run anvil, the local EVM node a devnet and the tests use.

anvil comes from the npm package `@foundry-rs/anvil` (`npm install` at the repo root). The binary is
looked up in `R1OS_ANVIL`, then `PATH`, then `<repo>/node_modules`; under node_modules the native
platform binary is preferred over the `.bin/anvil` node wrapper so the pid we hold is anvil itself.

Two ways to run it:
- `async with Anvil() as node: ...` starts it on a free port and stops it on exit (tests, tools);
- `Anvil(state_dir=d).start_detached()` leaves it running in the background with a pid file and an
  `anvil.json` (port, rpc) in `d`, so another process can find or stop it (`stop_detached(d)`). Its
  chain state is saved to `d/state.json` on shutdown and loaded on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import psutil
from eth_account import Account

from r1os.errors import ChainError

log = logging.getLogger(__name__)

#: The mnemonic anvil derives its funded dev accounts from (public; never use on a real chain).
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_CHAIN_ID = 31337
_NOT_FOUND_HINT = "run `npm install` at the repo root (or ./dev setup), or set R1OS_ANVIL to the binary"


def dev_private_key(index: int = 0) -> str:
    """Private key (0x hex) of anvil's funded dev account `index`, derived from `DEV_MNEMONIC`."""
    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(acct.key).hex()


def _repo_roots() -> list[Path]:
    here = Path(__file__).resolve()
    roots = [p for p in here.parents if (p / "package.json").is_file()]
    cwd = Path.cwd()
    roots += [p for p in (cwd, *cwd.parents) if (p / "package.json").is_file()]
    return roots


def _native_package() -> str:
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "amd64"
    system = {"darwin": "darwin", "windows": "win32"}.get(platform.system().lower(), "linux")
    return f"anvil-{system}-{arch}"


def find_anvil() -> str:
    """Path of the anvil binary, or ChainError saying how to install it."""
    env = os.environ.get("R1OS_ANVIL")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env
        raise ChainError(f"R1OS_ANVIL={env} is not an executable file", hint=_NOT_FOUND_HINT)
    for root in _repo_roots():
        native = root / "node_modules" / "@foundry-rs" / _native_package() / "bin" / "anvil"
        if native.is_file() and os.access(native, os.X_OK):
            return str(native)
    found = shutil.which("anvil")
    if found:
        return found
    for root in _repo_roots():
        wrapper = root / "node_modules" / ".bin" / "anvil"
        if wrapper.is_file():
            return str(wrapper)
    raise ChainError("anvil binary not found", hint=_NOT_FOUND_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_rpc(url: str, within: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> int:
    """Wait until `url` answers `eth_chainId`; return the chain id. Fails fast if `proc` exits."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    try:
        async with asyncio.timeout(within), httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if proc is not None and proc.poll() is not None:
                    raise ChainError(f"anvil exited with code {proc.returncode} before serving RPC")
                try:
                    resp = await http.post(url, json=body)
                    return int(resp.json()["result"], 16)
                except (httpx.HTTPError, KeyError, ValueError):
                    await asyncio.sleep(0.05)
    except TimeoutError:
        raise ChainError(f"no RPC answer from {url} within {within:.0f}s") from None


class Anvil:
    """One anvil process on localhost."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        chain_id: int = DEFAULT_CHAIN_ID,
        accounts: int = 10,
        balance_eth: int = 10_000,
        block_time: float | None = None,
        state_dir: Path | None = None,
        binary: str | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self._auto_port = port is None
        self.port = port or free_port(host)
        self.chain_id = chain_id
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.block_time = block_time
        self.state_dir = Path(state_dir) if state_dir else None
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _argv(self) -> list[str]:
        argv = [
            self.binary or find_anvil(),
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
            "--balance", str(self.balance_eth),
            "--mnemonic", DEV_MNEMONIC,
        ]  # fmt: skip
        if self.block_time:
            argv += ["--block-time", str(self.block_time)]
        if self.state_dir:
            # Saved on a clean stop, and every 30 s so a killed devnet loses little.
            argv += ["--state", str(self.state_dir / "state.json"), "--state-interval", "30"]
        return argv

    def _spawn(self) -> None:
        argv = self._argv()
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._log = open(self.state_dir / "anvil.log", "ab")  # noqa: SIM115
            out: IO[bytes] | int = self._log
        else:
            out = subprocess.DEVNULL
        log.info("starting anvil on %s", self.rpc_url)
        # Own session: a Ctrl-C in the parent's terminal does not reach a background devnet chain,
        # and stop() can signal the whole group (the node wrapper and anvil itself).
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    async def start(self) -> Anvil:
        """Start anvil and wait for its RPC; ChainError if it does not come up in time.

        With an automatically chosen port, a start that loses the port to another process between
        choosing and binding it is retried on a new port.
        """
        if self.proc is not None:
            return self
        for attempt in range(3):
            self._spawn()
            assert self.proc is not None
            try:
                got = await wait_rpc(self.rpc_url, self.ready_timeout, self.proc)
                await self._wait_own_listener()
            except ChainError:
                exited = self.proc is not None and self.proc.poll() is not None
                await self.stop()
                if exited and self._auto_port and attempt < 2:
                    log.info("anvil could not start on port %d; trying another port", self.port)
                    self.port = free_port(self.host)
                    continue
                raise
            if got != self.chain_id:
                await self.stop()
                raise ChainError(f"{self.rpc_url} answered chain id {got}, expected {self.chain_id}")
            return self
        raise AssertionError("unreachable")

    async def _wait_own_listener(self) -> None:
        """The RPC that answered must be our process, not another one on the same port."""
        assert self.proc is not None
        try:
            async with asyncio.timeout(self.ready_timeout):
                while not _listens(self.proc.pid, self.port):
                    if self.proc.poll() is not None:
                        raise ChainError(
                            f"anvil exited with code {self.proc.returncode}"
                            f" (port {self.port} is taken by another process)"
                        )
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise ChainError(f"anvil does not listen on port {self.port}") from None

    async def stop(self, grace: float = 10.0) -> None:
        """Stop anvil (SIGTERM, so it saves its state; SIGKILL after `grace` seconds)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, grace)
            except subprocess.TimeoutExpired:
                log.warning("anvil (pid %d) ignored SIGTERM; killing it", proc.pid)
                _signal_group(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> Anvil:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start_detached(self) -> dict[str, Any]:
        """Start anvil in the background, record it in `state_dir`, and return that record.

        The process outlives this Python process; `stop_detached(state_dir)` stops it.
        """
        if self.state_dir is None:
            raise ChainError("a detached anvil needs a state_dir for its pid file and state")
        running = detached_info(self.state_dir)
        if running is not None:
            raise ChainError(
                f"anvil already runs for {self.state_dir} (pid {running['pid']})",
                hint="stop it first (stop_detached / `r1os devnet down`)",
            )
        await self.start()
        assert self.proc is not None
        info = {"pid": self.proc.pid, "rpc": self.rpc_url, "port": self.port, "chain_id": self.chain_id}
        (self.state_dir / "anvil.json").write_text(json.dumps(info, indent=2))
        (self.state_dir / "anvil.pid").write_text(f"{self.proc.pid}\n")
        # Forget the handle without stopping the process; the pid file is now its owner.
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return info


def _listens(pid: int, port: int) -> bool:
    """Whether `pid` (or a child: the npm wrapper runs anvil as one) listens on TCP `port`."""
    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _is_our_anvil(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return any("anvil" in part for part in proc.cmdline()[:2]) and proc.status() != "zombie"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def detached_info(state_dir: Path) -> dict[str, Any] | None:
    """The record of the background anvil for `state_dir` if it still runs, else None."""
    meta = Path(state_dir) / "anvil.json"
    try:
        info: dict[str, Any] = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return info if _is_our_anvil(int(info.get("pid", 0))) else None


def stop_detached(state_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the background anvil of `state_dir` (state saved); True if one was running."""
    state_dir = Path(state_dir)
    info = detached_info(state_dir)
    stopped = False
    if info is not None:
        pid = int(info["pid"])
        _signal_group(pid, signal.SIGTERM)
        try:
            psutil.Process(pid).wait(timeout)
        except psutil.TimeoutExpired:
            log.warning("anvil (pid %d) ignored SIGTERM; killing it", pid)
            _signal_group(pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
        stopped = True
    for name in ("anvil.pid", "anvil.json"):
        (state_dir / name).unlink(missing_ok=True)
    return stopped
