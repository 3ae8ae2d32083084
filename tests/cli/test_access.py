"""Who the CLI is to a node: on the node's machine its operator (the token found by itself, for a devnet
node too), elsewhere a key (`--key`, or your default key), or `--token` / $R1OS_API_TOKEN; refusals are
one line and a hint that says how to get a token.

The node is real (HTTP server, request authentication, CSTORE, R1FS) and runs in this process; "a node
elsewhere" is the same node reached through a TCP proxy on 127.0.0.2, whose URL no record on this machine
names."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1os.cli import _access
from r1os.cli import app as cli_app
from r1os.cstore import CStoreService
from r1os.devnet import DevnetNode, DevnetState
from r1os.devnet._state import save_state
from r1os.identity import NodeKey, save_keystore
from r1os.node import Node, NodeConfig
from r1os.r1fs import R1fsService
from r1os.transport import MemoryHub, MemoryTransport


class Proxy:
    """Forwards 127.0.0.2:<port> to the node: the same node, at a URL of "another machine"."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._pipe_both, "127.0.0.2", 0)
        return f"http://127.0.0.2:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _pipe_both(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1OS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("R1OS_PASSWORD", "pw")
    for name in ("R1OS_API_TOKEN", "R1OS_KEY", "R1OS_PRIVATE_KEY", "R1OS_API_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(home=tmp_path / "n", network="clitest", http="127.0.0.1:0", key_strength="light")
    services = [CStoreService(), R1fsService()]
    n = Node(config, password="pw", services=services, transport=MemoryTransport(MemoryHub()))
    await n.start()
    yield n
    await n.stop()


def _record_devnet(home: Path, node: Node) -> None:
    """The devnet record `r1os devnet up` keeps, naming this node as node-01."""
    (home / "devnet").mkdir(parents=True)
    port = int(node.url.rsplit(":", 1)[1])
    entry = DevnetNode(
        name="node-01", address=node.address, home=str(node.home), http_port=port, url=node.url
    )
    save_state(DevnetState(network="clitest", dir=str(home / "devnet"), broker_url="mqtt://127.0.0.1:1",
                           heartbeat_interval=1.0, nodes=[entry]))  # fmt: skip


def _cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli_app, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output.splitlines()


def _node_ns(node: Node) -> str:
    return f"node:{node.address.lower()}:"


async def test_the_cli_finds_a_devnet_nodes_token_by_itself(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record_devnet(tmp_path / "home", node)

    def not_asked(url: str) -> None:
        raise AssertionError("the devnet record names the node's home: no need to ask the node")

    monkeypatch.setattr(_access, "_home_it_names", not_asked)
    assert _access.node_home(node.url) == node.home
    assert _access.node_home(node.url.replace("127.0.0.1", "localhost")) == node.home
    key = _node_ns(node) + "greeting"

    def script() -> None:
        assert _cli("cstore", "set", key, "hello", "--node", node.url) == (0, [f"set {key}"])
        assert _cli("cstore", "get", key, "--node", node.url) == (0, ["hello"])
        assert _cli("cstore", "whoami", "--node", node.url) == (0, [_node_ns(node)])
        code, lines = _cli("fs", "gc", "--node", node.url)
        assert code == 0 and lines[0].startswith("removed "), lines

    await asyncio.to_thread(script)


async def test_a_node_on_this_machine_is_found_without_a_record(node: Node) -> None:
    # No devnet record, no node under R1OS_HOME: the node names its home, the CLI checks it (node.json).
    assert await asyncio.to_thread(_access.node_home, node.url) == node.home
    key = _node_ns(node) + "x"
    assert await asyncio.to_thread(_cli, "cstore", "set", key, "1", "--node", node.url) == (0, [f"set {key}"])


async def test_elsewhere_an_operator_call_needs_a_token_and_says_how_to_get_one(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = (node.home / "api-token").read_text().strip()
    key = _node_ns(node) + "remote"
    async with Proxy(int(node.url.rsplit(":", 1)[1])) as url:
        assert await asyncio.to_thread(_access.node_home, url) is None

        def refused() -> None:
            code, lines = _cli("cstore", "set", key, "1", "--node", url)
            assert code == 1 and len(lines) == 2, lines
            assert lines[0].startswith("error: ") and lines[0].endswith("(unauthenticated)"), lines
            assert lines[1] == (
                "hint: run this on the node's machine (the CLI then reads the node's api-token), or pass "
                "--token / set $R1OS_API_TOKEN, or --key KEYSTORE to write as yourself "
                "(in app:<your address>:)"
            )
            code, lines = _cli("fs", "gc", "--node", url)
            assert code == 1 and len(lines) == 2, lines
            assert lines[0].startswith("error: gc: POST /v1/r1fs/gc is for the node's operator"), lines
            assert lines[0].endswith("(HTTP 401)"), lines  # R1FS errors name the status, not the cause
            assert lines[1].startswith("hint: the node needs its operator's token: run this on the node's")

        def with_token() -> None:
            assert _cli("cstore", "set", key, "2", "--node", url, "--token", token) == (0, [f"set {key}"])
            code, lines = _cli("cstore", "set", key, "3", "--node", url, "--token", "wrong")
            assert code == 1 and lines[0].endswith("(bad_token)") and "--token" in lines[1], lines
            monkeypatch.setenv("R1OS_API_TOKEN", token)
            assert _cli("fs", "gc", "--node", url)[0] == 0
            assert _cli("cstore", "get", key, "--node", url) == (0, ["2"])

        await asyncio.to_thread(refused)
        await asyncio.to_thread(with_token)


async def test_a_key_writes_as_itself_and_the_default_key_is_used_where_no_token_is(
    node: Node, tmp_path: Path
) -> None:
    mine, default = NodeKey.generate(), NodeKey.generate()
    save_keystore(mine, tmp_path / "mine.json", "pw", strength="light")
    save_keystore(default, tmp_path / "home" / "keys" / "default.json", "pw", strength="light")
    async with Proxy(int(node.url.rsplit(":", 1)[1])) as url:

        def script() -> None:
            ns = f"app:{mine.address.lower()}:"
            assert _cli("cstore", "set", ns + "k", "1", "--node", url, "--key", str(mine_file))[0] == 0
            assert _cli("cstore", "whoami", "--key", str(mine_file)) == (0, [ns])
            # Elsewhere (no token found), writes are signed by your default key...
            assert _cli("cstore", "whoami", "--node", url) == (0, [f"app:{default.address.lower()}:"])
            ns = f"app:{default.address.lower()}:"
            assert _cli("cstore", "set", ns + "k", "2", "--node", url) == (0, [f"set {ns}k"])
            code, lines = _cli("cstore", "set", _node_ns(node) + "k", "2", "--node", url)
            assert code == 1 and "may not write" in lines[0], lines  # the node's refusal, as it said it
            # ...and on the node's machine, its operator's token comes first.
            assert _cli("cstore", "whoami", "--node", node.url) == (0, [_node_ns(node)])
            assert _cli("cstore", "get", ns + "k", "--node", node.url) == (0, ["2"])

        mine_file = tmp_path / "mine.json"
        await asyncio.to_thread(script)
