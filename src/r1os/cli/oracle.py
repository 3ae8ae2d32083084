"""`r1os oracle`: the epochs the oracles agreed on and the signed availability of a node.

The oracle is found with `--node URL` (or `--oracle URL`: any oracle node's HTTP API), else in the
devnet of `--dir` (default ~/.r1os/devnet), where NODE may also be a devnet node name (`node-04`) or
number.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from r1os.cli._access import CallerKeyOpt, TokenOpt, node_session
from r1os.cli._common import JsonOpt, console, handle_errors, print_json
from r1os.errors import ChainError, DevnetError, R1osError
from r1os.paths import default_devnet_dir

if TYPE_CHECKING:
    from r1os.sdk import Session

app = typer.Typer(no_args_is_help=True)

# `--node` as every command that talks to a node names it; `--oracle` as the docs and scripts know it.
OracleOpt = typer.Option(
    None,
    "--node",
    "--oracle",
    help="An oracle node's HTTP API URL (default: an oracle of the devnet in --dir).",
)
DirOpt = typer.Option(None, "--dir", help="Devnet folder to find an oracle in (default ~/.r1os/devnet).")


def oracle_url(oracle: str | None, dir: Path | None) -> str:
    """The given URL, else the first devnet oracle that answers."""
    if oracle:
        return oracle.rstrip("/")
    from r1os.devnet import load_state
    from r1os.sdk import Session

    state = load_state(dir or default_devnet_dir())
    for node in state.nodes:
        if not node.oracle:
            continue
        try:
            with Session(node.url, timeout=2) as s:
                s.oracle.epochs()
            return node.url
        except R1osError:
            continue
    raise DevnetError(f"no oracle of the devnet in {state.dir} answers", hint="is the devnet up?")


def _session(
    oracle: str | None, dir: Path | None, key_file: Path | None, token: str | None
) -> AbstractContextManager[Session]:
    """An SDK session with the oracle the options name."""
    return node_session(oracle_url(oracle, dir), key_file, token)


def node_address(ref: str, dir: Path | None, use_dir: bool) -> str:
    """An address as given, or a devnet node's address from its name or number."""
    if ref.startswith("0x") and len(ref) == 42:
        return ref
    if use_dir:
        from r1os.devnet import load_state

        return load_state(dir or default_devnet_dir()).node(ref).address
    raise ChainError(f"{ref!r} is not a node address", hint="pass 0x... (or a devnet node name with --dir)")


@app.command("epochs")
@handle_errors
def epochs(
    oracle: str | None = OracleOpt,
    dir: Path | None = DirOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """List the epochs the oracles closed: voters, signers, nodes and the audit document's CID."""
    with _session(oracle, dir, key_file, token) as s:
        data = s.oracle.epochs()
    if json_out:
        print_json(data)
        return
    t = Table(title=f"epochs agreed by the oracles (from {data['oracle']})")
    for col in ("epoch", "nodes", "voters", "signers", "table hash", "R1FS CID"):
        t.add_column(col)
    for e in data["epochs"]:
        t.add_row(
            str(e["epoch"]),
            str(e["nodes"]),
            str(len(e["voters"])),
            str(len(e["signers"])),
            e["table_hash"][:18] + "...",
            e.get("cid") or "-",
        )
    console.print(t)
    console.print(
        f"current epoch {data['current_epoch']} ({data['epoch_seconds']:g} s each);"
        f" {len(data['oracles'])} oracle(s), quorum {data['quorum']}",
        highlight=False,
    )
    for e, why in data.get("failed", {}).items():
        console.print(f"[yellow]epoch {e} not closed:[/] {why}", highlight=False)


@app.command("availability")
@handle_errors
def availability(
    node: str = typer.Argument(..., help="Node address (or devnet node name/number)."),
    epochs: str | None = typer.Option(None, "--epochs", help="A:B inclusive (default: all closed)."),
    oracle: str | None = OracleOpt,
    dir: Path | None = DirOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """A node's agreed availability (0..255) per epoch, with the oracles' signatures."""
    address = node_address(node, dir, oracle is None)
    with _session(oracle, dir, key_file, token) as s:
        data = s.oracle.availability(address, epochs)
    if json_out:
        print_json(data)
        return
    console.print(f"availability of {data['node']}", highlight=False)
    t = Table()
    for col in ("epoch", "value", "%", "signatures"):
        t.add_column(col)
    for e in data["epochs"]:
        pct = f"{e['value'] / 255 * 100:.1f}" if e["measured"] else "unmeasured"
        t.add_row(str(e["epoch"]), str(e["value"]), pct, str(len(e["signatures"])))
    console.print(t)
    claim = data.get("claim") or {}
    console.print(
        f"claim over epochs {data['first_epoch']}..{data['last_epoch']}:"
        f" {len(claim.get('signatures', []))} oracle signature(s)",
        highlight=False,
    )


@app.command("misbehaviour")
@handle_errors
def misbehaviour(
    oracle: str | None = OracleOpt,
    dir: Path | None = DirOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Oracles recorded as misbehaving: strong disagreement, equivocation, bad signatures."""
    with _session(oracle, dir, key_file, token) as s:
        entries: dict[str, Any] = s.oracle.misbehaviour()["entries"]
    rows = sorted(entries.values(), key=lambda e: (e["epoch"], e["oracle"], e["reporter"]))
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no misbehaviour recorded")
        return
    t = Table(title="oracle misbehaviour")
    for col in ("epoch", "oracle", "reason", "reported by"):
        t.add_column(col)
    for e in rows:
        t.add_row(str(e["epoch"]), e["oracle"], e["reason"], e["reporter"])
    console.print(t)
