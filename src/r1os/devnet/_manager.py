"""A whole r1os network on one machine: a broker, N node processes (K of them oracles) and,
when the chain part is available, a local EVM node with the contracts and a licence per node.

Everything runs as detached processes so `devnet up` can return with the network running; the
record in `<dir>/devnet.json` lets `status`, `logs` and `down` find it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from r1os.devnet._state import DevnetBroker, DevnetNode, DevnetState, load_state, pid_alive, save_state
from r1os.errors import DevnetError
from r1os.identity import NodeKey, load_or_create
from r1os.node import read_node_state

log = logging.getLogger("r1os.devnet")

PASSWORD_FILE = "password"
ORACLE_URLS_FILE = "oracle-urls"  # read by the dAuth broker: oracles bind free ports, known once started
BRIDGE_USER = "r1os-bridge"
Progress = Callable[[str], None]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _password(dir: Path) -> str:
    """The devnet's own key password, made once and kept (mode 0600) beside the nodes."""
    path = dir / PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    pw = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pw)
    return pw


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a detached process (own session, so Ctrl-C on the CLI does not reach it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            close_fds=True,
        )
    return proc.pid


def _terminate(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL whatever is left."""
    live = [p for p in pids if pid_alive(p)]
    for pid in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in live):
        _reap()
        time.sleep(0.05)
    for pid in live:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap()


def _reap() -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_port(host: str, port: int, timeout: float, what: str, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise DevnetError(f"{what} exited during start-up")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DevnetError(f"{what} did not listen on {host}:{port} within {timeout:g} s")


class Devnet:
    """Start, inspect and stop the devnet kept in `dir`."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir.expanduser().resolve()

    # -- up ----------------------------------------------------------------------------------

    def up(
        self,
        *,
        nodes: int = 5,
        oracles: int = 3,
        broker: str | None = None,
        network: str = "devnet",
        heartbeat: float = 10.0,
        sync_interval: float = 2.0,
        fsync: bool = True,
        chain: bool = True,
        epoch_seconds: int = 60,
        timeout: float = 60.0,
        brokers: int = 1,
        progress: Progress = lambda _msg: None,
    ) -> DevnetState:
        """Start everything and wait until every node sees every other one.

        `brokers` > 1 starts that many mosquitto brokers bridged to the first (mosquitto's own
        bridge configuration), each behind a dAuth gate when there is a chain, and spreads the
        nodes over them in turn."""
        if nodes < 1 or not 0 <= oracles <= nodes:
            raise DevnetError(f"need nodes >= 1 and 0 <= oracles <= nodes (got {nodes}, {oracles})")
        if not 1 <= brokers <= 16 or (brokers > 1 and broker is not None):
            raise DevnetError(
                f"--brokers must be 1..16 (got {brokers}) and cannot be combined with --broker",
                hint="several brokers are started by the devnet itself",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.dir / "devnet.json").exists():
            old = load_state(self.dir)
            if any(pid_alive(n.pid) for n in old.nodes) or any(pid_alive(p) for p in old.pids()):
                raise DevnetError(
                    f"a devnet is already running in {self.dir}",
                    hint=f"stop it with `r1os devnet down --dir {self.dir}` or use another --dir",
                )
        started = time.monotonic()
        password = _password(self.dir)

        # 1. Keys first: the chain part needs the node addresses before the nodes start.
        progress(f"creating {nodes} node keys")
        planned: list[tuple[DevnetNode, NodeKey]] = []
        for i in range(1, nodes + 1):
            name = f"node-{i:02d}"
            home = self.dir / "nodes" / name
            key, _ = load_or_create(home / "keys" / "node.json", password, strength="light")
            # Port 0: each node binds a free port itself and reports its URL (no race with other processes).
            node = DevnetNode(
                name=name, address=key.address, home=str(home), http_port=0, url="", oracle=i <= oracles
            )
            planned.append((node, key))

        # 2. Broker(s).
        broker_pid: int | None = None
        bridged: list[DevnetBroker] = []
        if chain:
            (self.dir / ORACLE_URLS_FILE).write_text("")
        if brokers > 1:
            oracle_addrs = [n.address for n, _ in planned if n.oracle]
            bridged = self._start_brokers(brokers, network, oracle_addrs if chain else None, progress)
            broker = bridged[0].url
            for j, (node, _) in enumerate(planned):
                node.broker_url = bridged[j % brokers].url
        elif broker is None:
            port = free_port()
            progress(f"starting the embedded MQTT broker on port {port}")
            args = [sys.executable, "-m", "r1os.transport.broker", "--port", str(port)]
            if chain:  # dAuth at the broker too: only oracles and admitted nodes may connect
                oracle_nodes = [n for n, _ in planned if n.oracle]
                args = [sys.executable, "-m", "r1os.dauth.broker", "--port", str(port),
                        "--network", network,
                        "--oracles", ",".join(n.address for n in oracle_nodes),
                        "--oracle-urls", f"@{self.dir / ORACLE_URLS_FILE}"]  # fmt: skip
            broker_pid = _spawn(args, self.dir / "broker.log")
            broker = f"mqtt://127.0.0.1:{port}"
            _wait_port("127.0.0.1", port, 20, "the broker", broker_pid)

        state = DevnetState(
            network=network,
            dir=str(self.dir),
            broker_url=broker,
            broker_pid=broker_pid,
            heartbeat_interval=heartbeat,
            sync_interval=sync_interval,
            fsync=fsync,
            nodes=[n for n, _ in planned],
            started_at=time.time(),
            brokers=bridged,
        )
        save_state(state)

        # 3. Chain (anvil, contracts, licences) when its part is installed.
        if chain:
            state.chain = self._setup_chain(planned, epoch_seconds, progress)
            save_state(state)

        # 4. Nodes: oracles first, so the others can be told where to ask for admission.
        progress(f"starting {nodes} nodes ({oracles} oracles)")
        everyone = [n for n, _ in planned]
        groups = (
            [[n for n in everyone if n.oracle], [n for n in everyone if not n.oracle]]
            if chain
            else [everyone]
        )
        for group in groups:
            for node in group:
                node.pid = self._spawn_node(state, node)
            save_state(state)
            self._await_urls(group)
            save_state(state)
            self._write_oracle_urls(state)

        # 5. Wait for the full mesh.
        progress("waiting until every node sees every other node")
        asyncio.run(self._wait_mesh(state, timeout, progress))
        progress(f"devnet ready in {time.monotonic() - started:.1f} s")
        return state

    def _start_brokers(
        self, n: int, network: str, oracles: list[str] | None, progress: Progress
    ) -> list[DevnetBroker]:
        """`n` mosquitto processes, brokers 2..n bridged to broker 1 (`topic r1/# both 1`, a bridge
        user in a password file); with `oracles` (a chain devnet) each behind its own dAuth gate."""
        from r1os.transport import BridgeSpec, find_mosquitto, mosquitto_config, write_password_file

        binary = find_mosquitto()
        if binary is None:
            raise DevnetError("--brokers needs mosquitto", hint="install it: apt-get install mosquitto")
        root = self.dir / "brokers"
        root.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(18)
        passwd = root / "passwd"
        write_password_file(passwd, {BRIDGE_USER: secret})
        hub_bridge_port = free_port()
        out: list[DevnetBroker] = []
        for i in range(n):
            name = f"broker-{i + 1}"
            d = root / name
            d.mkdir(exist_ok=True)
            port, bridge_port = free_port(), hub_bridge_port if i == 0 else free_port()
            bridges = (
                [BridgeSpec(f"r1os-bridge-{i + 1}", f"127.0.0.1:{hub_bridge_port}", BRIDGE_USER, secret)]
                if i
                else []
            )
            # Behind a gate, mosquitto's client listener is a Unix socket in the devnet's folder, so
            # no one can reach it around the gate (a TCP port on 127.0.0.1 would be open to every
            # local process); 108 bytes is the longest socket path Linux takes.
            sock = d / "mqtt.sock"
            unix = oracles is not None and len(str(sock)) < 100
            conf = d / "mosquitto.conf"
            conf.write_text(
                mosquitto_config(
                    port=None if unix else port,
                    socket_path=sock if unix else None,
                    log_path=d / "mosquitto.log",
                    bridge_port=bridge_port,
                    password_file=passwd,
                    bridges=bridges,
                    sys_interval=1,
                )  # fmt: skip
            )
            conf.chmod(0o600)  # it holds the bridge password
            where = f"socket {sock}" if unix else f"port {port}"
            bridged = f", bridged to {out[0].name}" if i else ""
            progress(f"starting mosquitto {name} on {where}{bridged}")
            pid = _spawn([binary, "-c", str(conf)], d / "stderr.log")
            _wait_port("127.0.0.1", bridge_port, 20, f"mosquitto {name}", pid)
            own = f"unix://{sock}" if unix else f"mqtt://127.0.0.1:{port}"
            entry = DevnetBroker(name=name, url=own, mosquitto_url=own, bridge_port=bridge_port, pid=pid,
                                 dir=str(d))  # fmt: skip
            out.append(entry)
            if oracles is not None:
                gate_port = free_port()
                args = [sys.executable, "-m", "r1os", "broker", "gate", "--port", str(gate_port),
                        "--upstream", entry.mosquitto_url, "--network", network,
                        "--oracles", ",".join(oracles),
                        "--oracle-urls", f"@{self.dir / ORACLE_URLS_FILE}"]  # fmt: skip
                entry.gate_pid = _spawn(args, d / "gate.log")
                _wait_port("127.0.0.1", gate_port, 30, f"the dAuth gate of {name}", entry.gate_pid)
                entry.url = f"mqtt://127.0.0.1:{gate_port}"
        return out

    def _setup_chain(
        self, planned: list[tuple[DevnetNode, NodeKey]], epoch_seconds: int, progress: Progress
    ) -> dict[str, Any] | None:
        try:
            from r1os.chain.devnet import setup_devnet_chain
        except ImportError as exc:
            progress(f"chain part unavailable ({exc}); running without a chain")
            return None
        progress("starting anvil, deploying contracts, buying and linking licences")
        edge = [key.private_key_hex for node, key in planned if not node.oracle]
        oracle_addrs = [node.address for node, _ in planned if node.oracle]
        info = setup_devnet_chain(self.dir, edge, oracle_addrs, epoch_seconds=epoch_seconds)
        return info.model_dump() if hasattr(info, "model_dump") else dict(info)

    def _spawn_node(self, state: DevnetState, node: DevnetNode) -> int:
        # `python -m r1os.node` takes its whole configuration from R1OS_* variables (see NodeConfig).
        env = {
            "R1OS_PASSWORD": _password(self.dir),
            "PYTHONUNBUFFERED": "1",
            "R1OS_HOME": str(node.home),
            "R1OS_NETWORK": state.network,
            "R1OS_BROKER": node.broker_url or state.broker_url,
            "R1OS_HTTP": f"127.0.0.1:{node.http_port}",
            "R1OS_HEARTBEAT_INTERVAL": str(state.heartbeat_interval),
            "R1OS_CSTORE__SYNC_INTERVAL": str(state.sync_interval),
            "R1OS_CSTORE__FSYNC": "1" if state.fsync else "0",
            "R1OS_ORACLES": json.dumps([n.address for n in state.nodes if n.oracle]),
            "R1OS_ORACLE": "1" if node.oracle else "0",
            # glibc gives each thread that allocates its own malloc arena (up to 8 per core), and pages
            # freed in one arena are not reused by another; two arenas per node process are plenty for
            # an asyncio node and keep dozens of them on one machine smaller. Changes no behaviour;
            # a value in the caller's environment wins.
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
        }
        if state.chain and state.chain.get("deployment_file"):  # epochs and contracts for oracles
            env.setdefault("R1OS_CHAIN_DEPLOYMENT", str(state.chain["deployment_file"]))
            # dAuth: every node asks the oracles for admission
            env["R1OS_ORACLE_URLS"] = json.dumps([n.url for n in state.nodes if n.oracle])
        return _spawn([sys.executable, "-m", "r1os.node"], node.log_path, env)

    def _write_oracle_urls(self, state: DevnetState) -> None:
        (self.dir / ORACLE_URLS_FILE).write_text(
            "".join(f"{n.url}\n" for n in state.nodes if n.oracle and n.url)
        )

    def _await_urls(self, nodes: list[DevnetNode], timeout: float = 60.0) -> None:
        """Wait until each node reports the URL it listens on (in its home's node.json)."""
        deadline = time.monotonic() + timeout
        pending = list(nodes)
        while pending:
            for node in list(pending):
                info = read_node_state(Path(node.home))
                if info and info.get("pid") == node.pid and info.get("status") == "running":
                    node.url = str(info["url"])
                    node.http_port = int(node.url.rsplit(":", 1)[1])
                    pending.remove(node)
                elif not pid_alive(node.pid):
                    raise DevnetError(
                        f"{node.name} exited during start-up",
                        hint=f"see `r1os devnet logs {node.name} --dir {self.dir}`",
                    )
            if pending and time.monotonic() > deadline:
                names = ", ".join(n.name for n in pending)
                raise DevnetError(f"node(s) did not start within {timeout:g} s: {names}")
            if pending:
                time.sleep(0.05)

    async def _wait_mesh(self, state: DevnetState, timeout: float, progress: Progress) -> None:
        want = len(state.nodes) - 1
        deadline = time.monotonic() + timeout
        last_report = ""
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                seen = await asyncio.gather(*(self._online_peers(client, n) for n in state.nodes))
                ready = sum(1 for s in seen if s is not None and s >= want)
                report = f"{ready}/{len(state.nodes)} nodes see all {want} peers"
                if report != last_report:
                    progress(report)
                    last_report = report
                if ready == len(state.nodes):
                    return
                dead = [n.name for n in state.nodes if not pid_alive(n.pid)]
                if dead:
                    raise DevnetError(
                        f"node(s) exited during start-up: {', '.join(dead)}",
                        hint=f"see `r1os devnet logs {dead[0]} --dir {state.dir}`",
                    )
                if time.monotonic() > deadline:
                    raise DevnetError(
                        f"the network did not converge within {timeout:g} s ({report})",
                        hint=f"check `r1os devnet status --dir {state.dir}` and the node logs",
                    )
                await asyncio.sleep(0.25)

    @staticmethod
    async def _online_peers(client: httpx.AsyncClient, node: DevnetNode) -> int | None:
        try:
            r = await client.get(f"{node.url}/v1/peers")
            return int(r.json()["online"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    # -- status ------------------------------------------------------------------------------

    def state(self) -> DevnetState:
        return load_state(self.dir)

    def status(self) -> dict[str, Any]:
        state = self.state()
        return asyncio.run(self._status(state))

    async def _status(self, state: DevnetState) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=2) as client:

            async def one(node: DevnetNode) -> dict[str, Any]:
                entry: dict[str, Any] = {
                    "name": node.name,
                    "address": node.address,
                    "url": node.url,
                    "oracle": node.oracle,
                    "pid": node.pid,
                    "status": "stopped",
                    "peers_online": None,
                    "licence": None,
                    "broker": node.broker_url or state.broker_url,
                }
                if pid_alive(node.pid):
                    entry["status"] = "unreachable"
                    try:
                        r = await client.get(f"{node.url}/v1/peers")
                        entry["peers_online"] = r.json()["online"]
                        entry["status"] = "online"
                    except (httpx.HTTPError, ValueError, KeyError):
                        pass
                return entry

            nodes = await asyncio.gather(*(one(n) for n in state.nodes))
        chain = None
        if state.chain is not None:
            chain = {k: state.chain.get(k) for k in ("rpc", "chain_id", "contracts")}
            try:
                from r1os.chain.devnet import licence_of

                for entry in nodes:
                    entry["licence"] = await asyncio.to_thread(licence_of, self.dir, entry["address"])
            except Exception as exc:  # the chain may be down; status still answers
                log.debug("licence lookup failed: %s", exc)
        return {
            "dir": state.dir,
            "network": state.network,
            "broker": {"url": state.broker_url, "pid": state.broker_pid,
                       "running": state.broker_pid is None or pid_alive(state.broker_pid)},
            "brokers": [{"name": b.name, "url": b.url, "bridge_port": b.bridge_port,
                         "running": pid_alive(b.pid) and (b.gate_pid is None or pid_alive(b.gate_pid))}
                        for b in state.brokers],
            "heartbeat_interval": state.heartbeat_interval,
            "nodes": list(nodes),
            "chain": chain,
        }  # fmt: skip

    # -- single nodes ------------------------------------------------------------------------

    def stop_node(self, ref: str, *, kill: bool = False) -> DevnetNode:
        state = self.state()
        node = state.node(ref)
        if pid_alive(node.pid):
            assert node.pid is not None
            if kill:
                os.kill(node.pid, signal.SIGKILL)
                _reap()
            else:
                _terminate([node.pid])
        return node

    def start_node(self, ref: str) -> DevnetNode:
        state = self.state()
        node = state.node(ref)
        if pid_alive(node.pid):
            raise DevnetError(f"{node.name} is already running (pid {node.pid})")
        if node.http_port and not _port_free(node.http_port):
            node.http_port = 0  # its old port was taken meanwhile: any free one
        node.pid = self._spawn_node(state, node)
        save_state(state)
        self._await_urls([node])
        save_state(state)
        if node.oracle:
            self._write_oracle_urls(state)
        return node

    def add_node(self, *, licence: bool = True) -> DevnetNode:
        """Start one more edge node; with `licence`, buy an ND and link it first (chain devnets)."""
        state = self.state()
        taken = {n.name for n in state.nodes}
        i = len(state.nodes) + 1
        while f"node-{i:02d}" in taken:
            i += 1
        name = f"node-{i:02d}"
        home = self.dir / "nodes" / name
        key, _ = load_or_create(home / "keys" / "node.json", _password(self.dir), strength="light")
        node = DevnetNode(name=name, address=key.address, home=str(home), http_port=0, url="")
        if state.brokers:  # spread like the others
            node.broker_url = state.brokers[len(state.nodes) % len(state.brokers)].url
        if licence and state.chain is not None:
            from r1os.chain.devnet import setup_devnet_chain

            oracle_addrs = [n.address for n in state.nodes if n.oracle]
            setup_devnet_chain(self.dir, [key.private_key_hex], oracle_addrs,
                               epoch_seconds=int(state.chain["epoch_seconds"]))  # fmt: skip
        state.nodes.append(node)
        node.pid = self._spawn_node(state, node)
        save_state(state)
        self._await_urls([node])
        save_state(state)
        return node

    # -- down --------------------------------------------------------------------------------

    def down(self, progress: Progress = lambda _msg: None) -> None:
        state = self.state()
        pids = [n.pid for n in state.nodes if n.pid]
        progress(f"stopping {len(pids)} nodes")
        _terminate(pids)
        if state.chain is not None:
            try:
                from r1os.chain.devnet import stop_devnet_chain

                progress("stopping the chain")
                stop_devnet_chain(self.dir)
            except ImportError:
                pass
        if state.pids():
            progress("stopping the broker" + ("s" if state.brokers else ""))
            _terminate(state.pids())
        for n in state.nodes:
            n.pid = None
        state.broker_pid = None
        for b in state.brokers:
            b.pid = b.gate_pid = None
        save_state(state)
