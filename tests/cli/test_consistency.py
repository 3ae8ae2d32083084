"""The CLI is one tool, not a dozen: every command and group answers `--help` and says what it does, every
command that talks to a node takes `--node` (default $R1OS_API_URL), every command that finds what it needs
in a devnet's folder takes `--dir`, and every listing takes `--json`, whose output parses (run against a
real one-node devnet: an oracle, CSTORE, R1FS; no chain).

The rules are read off the typer app itself, so a new command is checked without touching this file; the
exceptions below say why each one is one. Commands that need an EVM chain (groups `chain`, `licence`,
`rewards`, `token`, `job`) get `--help` here only: tests/chain/test_cli.py runs them against anvil."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner, Result

from r1os.cli import app
from r1os.devnet import Devnet
from r1os.devnet._state import DevnetState

runner = CliRunner()

CmdPath = tuple[str, ...]


def _walk(cmd: Any, path: CmdPath = ()) -> Iterator[tuple[CmdPath, Any]]:
    yield path, cmd
    if isinstance(cmd, TyperGroup):
        for name, sub in sorted(cmd.commands.items()):
            yield from _walk(sub, (*path, name))


ALL = dict(_walk(typer.main.get_command(app)))
COMMANDS = {path: cmd for path, cmd in ALL.items() if not isinstance(cmd, TyperGroup)}


def _options(cmd: Any) -> dict[str, TyperOption]:
    return {flag: p for p in cmd.params if isinstance(p, TyperOption) for flag in p.opts}


def _ids(paths: Any) -> list[str]:
    return [" ".join(p) or "r1os" for p in paths]


# -- which commands talk to a node -----------------------------------------------------------------------
# Rule: a command talks to a node if it takes `--token` (a node's API token: of no use otherwise) or
# `--oracle` (an oracle node), or if it is defined in a module that uses `r1os.cli._access` (the one place
# the CLI opens sessions with a node).

#: Commands the rule names that do not talk to a node, and why.
NOT_A_NODE_CLIENT = {
    ("node", "start"): "runs a node in the foreground; it does not call one",
    ("chain", "deploy"): "talks to a chain only; its --oracle is an oracle's address the contracts register",
}
#: Commands that talk to a node but whose `--node` is not its URL, and why.
NODE_IS_AN_ADDRESS = {
    ("rewards", "claim"): "talks to an oracle named by --oracle (or found in --dir); its --node is the node "
    "whose rewards are claimed, an address (docs/chain.md, docs/oracle.md)",
}


def _uses_access(cmd: Any) -> bool:
    module = inspect.getmodule(inspect.unwrap(cmd.callback))
    return any(getattr(v, "__module__", None) == "r1os.cli._access" for v in vars(module).values())


NODE_CLIENTS = sorted(
    path
    for path, cmd in COMMANDS.items()
    if ({"--token", "--oracle"} & set(_options(cmd)) or _uses_access(cmd)) and path not in NOT_A_NODE_CLIENT
)

# -- which commands find a devnet ------------------------------------------------------------------------
# Rule: the commands of these groups look a devnet up (its state, its oracles, its chain deployment) and
# take `--dir DEVNET_DIR` to name which one.
DEVNET_GROUPS = {"devnet", "chain", "licence", "rewards", "token", "job", "oracle"}
#: Commands of those groups that use no devnet, and why.
NO_DEVNET = {
    ("chain", "deploy"): "deploys to the chain --rpc names and writes --out; it reads no devnet",
    ("rewards", "sign"): "signs an availability with a key, offline: no devnet, no node, no chain",
}
DEVNET_AWARE = sorted(p for p in COMMANDS if p[0] in DEVNET_GROUPS and p not in NO_DEVNET)

# -- which commands are listings ------------------------------------------------------------------------
# Rule: a command whose name says it shows state is a listing; a listing takes `--json`.
LISTING_NAMES = {
    "ls",
    "list",
    "keys",
    "status",
    "show",
    "info",
    "stat",
    "peers",
    "epochs",
    "availability",
    "misbehaviour",
    "admission",
    "balance",
    "price",
    "nodes",
}
#: Listings that print JSON whatever the flags, and so need no `--json`.
ALWAYS_JSON = {("cstore", "hgetall"): "a hash's fields, printed as one JSON object"}
LISTINGS = sorted(path for path in COMMANDS if path[-1] in LISTING_NAMES)
#: Groups whose commands need an EVM chain: `--help` only here (tests/chain/test_cli.py runs them).
CHAIN_GROUPS = {"chain", "licence", "rewards", "token", "job"}


def test_the_walk_finds_every_group() -> None:
    groups = {path[0] for path in COMMANDS}
    assert {"keys", "node", "devnet", "cstore", "fs", "oracle", "broker", "app", *CHAIN_GROUPS} <= groups
    assert ("cstore", "keys") in LISTINGS and ("fs", "ls") in LISTINGS and ("oracle", "epochs") in LISTINGS
    assert {("cstore", "set"), ("oracle", "epochs"), ("rewards", "claim")} <= set(NODE_CLIENTS)


def test_exceptions_name_real_commands() -> None:
    """An exception for a command that was renamed or removed would hide nothing and mislead."""
    for path in [*NOT_A_NODE_CLIENT, *NODE_IS_AN_ADDRESS, *ALWAYS_JSON, *NO_DEVNET]:
        assert path in COMMANDS, f"`r1os {' '.join(path)}` is listed as an exception but does not exist"


@pytest.mark.parametrize("path", list(ALL), ids=_ids(ALL))
def test_help(path: CmdPath) -> None:
    cmd = ALL[path]
    assert (cmd.help or "").strip(), f"`r1os {' '.join(path)}` has no help text (a docstring, or help=)"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and (cmd.help or "").split()[0] in result.output


@pytest.mark.parametrize("path", NODE_CLIENTS, ids=_ids(NODE_CLIENTS))
def test_node_clients_take_node(path: CmdPath) -> None:
    """`--node URL`, default None: so $R1OS_API_URL (then the local node) applies, as everywhere else."""
    node = _options(COMMANDS[path]).get("--oracle" if path in NODE_IS_AN_ADDRESS else "--node")
    assert node is not None, f"`r1os {' '.join(path)}` talks to a node but takes no --node"
    assert node.default is None, (
        f"`r1os {' '.join(path)} --node` defaults to {node.default!r}, not $R1OS_API_URL"
    )


@pytest.mark.parametrize("path", DEVNET_AWARE, ids=_ids(DEVNET_AWARE))
def test_devnet_aware_commands_take_dir(path: CmdPath) -> None:
    """`--dir DIR`, default None: so the default devnet (~/.r1os/devnet) applies."""
    found = _options(COMMANDS[path]).get("--dir")
    assert found is not None, f"`r1os {' '.join(path)}` looks a devnet up but takes no --dir"
    assert found.default is None, f"`r1os {' '.join(path)} --dir` defaults to {found.default!r}"


@pytest.mark.parametrize("path", LISTINGS, ids=_ids(LISTINGS))
def test_listings_take_json(path: CmdPath) -> None:
    if path in ALWAYS_JSON:
        return
    assert "--json" in _options(COMMANDS[path]), f"`r1os {' '.join(path)}` is a listing without --json"


# -- every listing's --json, against a real node --------------------------------------------------------


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    """One node (an oracle: CSTORE, R1FS, dAuth, oracle API), under R1OS_HOME as `r1os devnet up` puts it,
    so the CLI finds the node's operator token by itself for `cstore set` and `fs gc`."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("R1OS_HOME", str(home))
        mp.setenv("R1OS_PASSWORD", "pw")
        for name in ("R1OS_API_TOKEN", "R1OS_KEY", "R1OS_PRIVATE_KEY", "R1OS_API_URL"):
            mp.delenv(name, raising=False)
        dn = Devnet(home / "devnet")
        try:
            yield dn, dn.up(nodes=1, oracles=1, heartbeat=1.0, chain=False, timeout=60)
        finally:
            dn.down()


def _job(job_id: str, node: str) -> dict[str, Any]:
    """A finished one-round job owned by `node` (the record `r1os.edil` keeps in CSTORE)."""
    other = "0x" + "11" * 20
    return {
        "job_id": job_id,
        "name": "digits",
        "owner": node.lower(),
        "owner_node": node.lower(),
        "aggregator": "0x" + "22" * 20,
        "participants": [other],
        "spec": {"name": "digits", "rounds": 1},
        "privacy": "plain",
        "phase": "done",
        "model_cid": "bafy",
        "round_started_ms": 1,
        "deadline_ms": 2,
        "history": [
            {"round": 1, "included": [other], "samples": 10, "test_accuracy": 0.9, "model_cid": "bafy"}
        ],
        "created_ms": 1,
        "updated_ms": 2,
    }


def _json(args: list[str], env: dict[str, str] | None = None) -> Any:
    result: Result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, f"r1os {' '.join(args)}: {result.output}"
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"`r1os {' '.join(args)}` printed no JSON: {result.stdout!r}") from exc


def test_every_listing_prints_json(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    dn, state = devnet
    url, name, address = state.nodes[0].url, state.nodes[0].name, state.nodes[0].address
    # Something to list: a CSTORE key and hash (the node's operator writes in the node's namespace), an R1FS
    # file, a key.
    ns = f"node:{address.lower()}:"
    for args in (["cstore", "set", f"{ns}greeting", "hello"], ["cstore", "hset", f"{ns}h", "f", "1"]):
        result = runner.invoke(app, [*args, "--node", url])
        assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["keys", "new", "--light"]).exit_code == 0
    (tmp_path / "f.txt").write_text("consistency\n")
    cid = _json(["fs", "add", str(tmp_path / "f.txt"), "--node", url, "--json"])["cid"]
    # An app of no replica (so it needs no runtime here), deployed as the default key.
    (tmp_path / "app.yaml").write_text("name: hello\nruntime: process\ncommand: [run]\nreplicas: 0\n")
    deployed = runner.invoke(app, ["app", "deploy", str(tmp_path / "app.yaml"), "--node", url])
    assert deployed.exit_code == 0, deployed.output
    # A finished training job's record, as an owner's node publishes it in its namespace (a real job needs
    # three nodes or more: tests/cli/test_edil.py trains some); written here by the node's operator.
    job_id = "00c0ffee00c0ffee"
    job_key = f"{ns}edil:job:{job_id}"
    written = runner.invoke(app, ["cstore", "set", job_key, json.dumps(_job(job_id, address)), "--node", url])
    assert written.exit_code == 0, written.output

    runs: dict[CmdPath, list[list[str]]] = {
        ("keys", "show"): [[]],
        ("node", "info"): [["--node", url]],
        ("node", "admission"): [["--node", url], ["--dir", str(dn.dir)], [name, "--dir", str(dn.dir)]],
        ("devnet", "status"): [["--dir", str(dn.dir)]],
        ("cstore", "keys"): [["--node", url], [ns, "--node", url]],
        ("cstore", "hgetall"): [[f"{ns}h", "--node", url]],
        ("fs", "ls"): [["--node", url]],
        ("fs", "stat"): [[cid, "--node", url]],
        ("oracle", "epochs"): [["--node", url], ["--oracle", url], ["--dir", str(dn.dir)]],
        # A range: without one the oracle answers every closed epoch, and a fresh devnet has closed none.
        ("oracle", "availability"): [
            [address, "--epochs", "0:0", "--node", url],
            [name, "--epochs", "0:0", "--dir", str(dn.dir)],
        ],
        ("oracle", "misbehaviour"): [["--node", url]],
        ("app", "ls"): [["--node", url]],
        ("app", "status"): [["hello", "--node", url]],
        ("app", "nodes"): [["--node", url]],
        ("edil", "ls"): [["--node", url]],
        ("edil", "status"): [[job_id, "--node", url]],
    }
    # A new listing (outside the chain groups) must be run here too.
    to_run = {p for p in [*LISTINGS, *ALWAYS_JSON] if p[0] not in CHAIN_GROUPS}
    assert to_run == set(runs), f"listings not run against the node: {sorted(to_run - set(runs))}"

    out: dict[CmdPath, list[Any]] = {}
    for path, variants in runs.items():
        json_flag = [] if path in ALWAYS_JSON else ["--json"]
        out[path] = [_json([*path, *args, *json_flag]) for args in variants]

    # The JSON is the data, not just any JSON.
    assert out[("node", "info")][0]["address"] == address
    assert {f"{ns}greeting", f"{ns}h"} <= set(out[("cstore", "keys")][0])
    assert sorted(out[("cstore", "keys")][1]) == [job_key, f"{ns}greeting", f"{ns}h"]
    assert out[("cstore", "hgetall")][0] == {"f": 1}
    assert cid in {p["cid"] for p in out[("fs", "ls")][0]}
    assert out[("fs", "stat")][0]["cid"] == cid
    assert out[("devnet", "status")][0]["nodes"][0]["address"] == address
    assert out[("oracle", "epochs")][0] == out[("oracle", "epochs")][1]
    assert all(a["node"].lower() == address.lower() for a in out[("oracle", "availability")])
    by_url, whole_devnet, one_by_name = out[("node", "admission")]
    assert by_url["address"] == address and one_by_name["address"] == address
    assert [n["address"] for n in whole_devnet] == [address]
    assert out[("keys", "show")][0]["address"].startswith("0x")
    owner = out[("keys", "show")][0]["address"].lower()
    assert [a["app"] for a in out[("app", "ls")][0]] == [f"{owner}/hello"]
    assert out[("app", "status")][0]["replicas"] == [] and out[("app", "status")][0]["version"] == 1
    assert all(h["address"] == address.lower() for h in out[("app", "nodes")][0])
    assert [j["job_id"] for j in out[("edil", "ls")][0]] == [job_id]
    job = out[("edil", "status")][0]
    assert (job["phase"], job["rounds_done"], job["test_accuracy"]) == ("done", 1, 0.9)
    assert job["model_cid"] == "bafy" and job["history"][0]["samples"] == 10

    # Without --node, $R1OS_API_URL names the node.
    env = {"R1OS_API_URL": url}
    assert _json(["node", "info", "--json"], env)["address"] == address
    assert _json(["node", "admission", "--json"], env)["address"] == address
    assert f"{ns}greeting" in _json(["cstore", "keys", "--json"], env)
