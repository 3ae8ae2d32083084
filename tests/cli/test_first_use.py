"""A first-time user's `r1os cstore set foo bar` works: a key in no namespace is the caller's own
(`app:<your address>:foo`, or `node:<node address>:foo` as the node's operator), with a note on stderr
that names the full key, and `cstore get foo` reads it back; with no key and no token the command says in
one line (and a hint) how to get one.

The node is real (HTTP server, request authentication, CSTORE) and runs in this process; "the user's own
machine", where no operator token is found, reaches it through a TCP proxy on 127.0.0.2 (as in
tests/cli/test_access.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from r1os.cli import app as cli_app
from r1os.cstore import CStoreService
from r1os.identity import load_keystore
from r1os.node import Node, NodeConfig
from r1os.paths import default_key_path
from r1os.r1fs import R1fsService
from r1os.transport import MemoryHub, MemoryTransport
from tests.cli.runner import isolate
from tests.cli.test_access import Proxy

WHY = "keys without a namespace go there; pass a full key to {} elsewhere)"
NOTE = "(your own namespace: " + WHY
NODE_NOTE = "(the node's namespace, as its operator: " + WHY


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("R1OS_PASSWORD", "pw")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig.model_validate(
        {"home": tmp_path / "n", "network": "firstuse", "http": "127.0.0.1:0", "key_strength": "light"}
    )
    n = Node(
        config,
        password="pw",
        services=[CStoreService(), R1fsService()],
        transport=MemoryTransport(MemoryHub()),
    )
    await n.start()
    yield n
    await n.stop()


@pytest.fixture
async def elsewhere(node: Node) -> AsyncIterator[str]:
    """The node's URL as seen from a machine that is not the node's: no operator token found there."""
    async with Proxy(int(node.url.rsplit(":", 1)[1])) as url:
        yield url


def _cli(*args: str) -> Result:
    result = CliRunner().invoke(cli_app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def _ok(*args: str) -> Result:
    result = _cli(*args)
    assert result.exit_code == 0, f"r1os {' '.join(args)}: {result.output}"
    return result


async def test_a_fresh_key_sets_and_gets_a_bare_key_in_its_own_namespace(elsewhere: str) -> None:
    url = elsewhere

    def script() -> None:
        _ok("keys", "new", "--light")
        me = load_keystore(default_key_path(), "pw").address.lower()
        ns = f"app:{me}:"

        written = _ok("cstore", "set", "foo", "bar", "--node", url)
        assert written.stdout.splitlines() == [f"set {ns}foo"]
        assert written.stderr.splitlines() == [f"wrote {ns}foo {NOTE.format('write')}"]

        got = _ok("cstore", "get", "foo", "--node", url)
        assert got.stdout.splitlines() == ["bar"]
        assert got.stderr.splitlines() == [f"read {ns}foo {NOTE.format('read')}"]
        # The full key names the same value, and then there is nothing to note.
        full = _ok("cstore", "get", f"{ns}foo", "--node", url)
        assert (full.stdout, full.stderr) == ("bar\n", "")

        # Hashes too; the JSON on stdout parses, the note is on stderr only.
        _ok("cstore", "hset", "h", "f", "1", "--node", url)
        assert _ok("cstore", "hget", "h", "f", "--node", url).stdout == "1\n"
        fields = _ok("cstore", "hgetall", "h", "--node", url)
        assert json.loads(fields.stdout) == {"f": 1} and fields.stderr.startswith(f"read {ns}h ")
        listed = _ok("cstore", "keys", "--json", "--node", url)
        assert {f"{ns}foo", f"{ns}h"} <= set(json.loads(listed.stdout)) and listed.stderr == ""
        mine = _ok("cstore", "keys", "f", "--json", "--node", url)
        assert json.loads(mine.stdout) == [f"{ns}foo"] and mine.stderr.startswith(f"listed {ns}f* ")

        deleted = _ok("cstore", "del", "foo", "--node", url)
        assert deleted.stdout.splitlines() == [f"deleted {ns}foo"]
        assert deleted.stderr.splitlines() == [f"deleted {ns}foo {NOTE.format('write')}"]
        assert _cli("cstore", "get", "foo", "--node", url).exit_code == 1

    await asyncio.to_thread(script)


async def test_someone_elses_namespace_is_still_refused_by_the_node(elsewhere: str) -> None:
    def script() -> None:
        _ok("keys", "new", "--light")
        refused = _cli("cstore", "set", "app:0x" + "11" * 20 + ":foo", "bar", "--node", elsewhere)
        assert refused.exit_code == 1 and refused.stdout == ""
        lines = refused.stderr.splitlines()
        assert lines[0].startswith("error: ") and "may not write" in lines[0], lines

    await asyncio.to_thread(script)


async def test_without_a_key_the_cli_says_how_to_get_one(elsewhere: str) -> None:
    def script() -> None:
        for args in (
            ("set", "foo", "bar"),
            ("get", "foo"),
            ("hset", "h", "f", "1"),
            ("keys", "f"),
            ("whoami",),
        ):
            result = _cli("cstore", *args, "--node", elsewhere)
            assert result.exit_code != 0 and result.stdout == "", result.output
            error, hint = result.stderr.splitlines()  # one line, one hint
            assert error.startswith("error: ") and "no key" in error, error
            assert hint.startswith("hint: ") and "`r1os keys new`" in hint and "--token" in hint, hint
        # Reading a full key needs no key: public data.
        assert _cli("cstore", "get", "app:0x" + "11" * 20 + ":foo", "--node", elsewhere).exit_code == 1

    await asyncio.to_thread(script)


async def test_the_nodes_operator_writes_a_bare_key_in_the_nodes_namespace(
    node: Node, elsewhere: str
) -> None:
    ns = f"node:{node.address.lower()}:"
    token = (node.home / "api-token").read_text().strip()

    def script() -> None:
        # On the node's machine the CLI finds the operator's token by itself...
        written = _ok("cstore", "set", "foo", "bar", "--node", node.url)
        assert written.stdout.splitlines() == [f"set {ns}foo"]
        assert written.stderr.splitlines() == [f"wrote {ns}foo {NODE_NOTE.format('write')}"]
        got = _ok("cstore", "get", "foo", "--node", node.url)
        assert got.stdout == "bar\n" and got.stderr.splitlines() == [
            f"read {ns}foo {NODE_NOTE.format('read')}"
        ]
        assert _ok("cstore", "whoami", "--node", node.url).stdout == f"{ns}\n"
        # ...elsewhere it is given (--token).
        _ok("cstore", "set", "foo", "baz", "--node", elsewhere, "--token", token)
        assert _ok("cstore", "get", f"{ns}foo", "--node", elsewhere).stdout == "baz\n"

    await asyncio.to_thread(script)
