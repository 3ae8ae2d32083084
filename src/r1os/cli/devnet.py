"""`r1os devnet`: a whole local network (broker, nodes, oracles, chain) on this machine."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from r1os.cli._common import console, err_console, handle_errors, print_json
from r1os.paths import default_devnet_dir

if TYPE_CHECKING:
    from r1os.devnet import Devnet

app = typer.Typer(no_args_is_help=True)

DirOpt = typer.Option(None, "--dir", help="Devnet folder (default: ~/.r1os/devnet).")


def _devnet(dir: Path | None) -> Devnet:
    from r1os.devnet import Devnet

    return Devnet(dir or default_devnet_dir())


_T0 = time.monotonic()


def _progress(msg: str) -> None:
    err_console.print(f"[dim]{time.monotonic() - _T0:5.1f}s[/] {msg}", highlight=False)


def _table(status: dict[str, Any]) -> Table:
    table = Table(title=f"devnet {status['network']} — broker {status['broker']['url']}")
    for col in ("node", "role", "address", "url", "status", "peers", "licence"):
        table.add_column(col)
    for n in status["nodes"]:
        colour = {"online": "green", "stopped": "red"}.get(n["status"], "yellow")
        lic = n.get("licence")
        table.add_row(
            n["name"],
            "oracle" if n["oracle"] else "edge",
            n["address"],
            n["url"],
            f"[{colour}]{n['status']}[/]",
            "-" if n["peers_online"] is None else str(n["peers_online"]),
            f"{lic['type']} #{lic['token_id']}" if lic else "-",
        )
    return table


@app.command("up")
@handle_errors
def up(
    nodes: int = typer.Option(5, "--nodes", "-n", help="How many nodes in all."),
    oracles: int = typer.Option(3, "--oracles", help="How many of them are oracles."),
    dir: Path | None = DirOpt,
    broker: str | None = typer.Option(None, "--broker", help="Use this MQTT broker instead of starting one."),
    heartbeat: float = typer.Option(10.0, "--heartbeat", help="Heartbeat interval in seconds."),
    epoch_seconds: int = typer.Option(60, "--epoch-seconds", help="Epoch length on the devnet chain."),
    chain: bool = typer.Option(
        True, "--chain/--no-chain", help="Start anvil with the contracts and licences."
    ),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the network to form."),
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops the devnet."),
    brokers: int = typer.Option(
        1, "--brokers", help="Start this many mosquitto brokers, bridged, with the nodes spread over them."
    ),
) -> None:
    """Start a devnet and return once every node sees every other node."""
    devnet = _devnet(dir)
    try:
        devnet.up(
            nodes=nodes,
            oracles=oracles,
            broker=broker,
            heartbeat=heartbeat,
            chain=chain,
            epoch_seconds=epoch_seconds,
            timeout=timeout,
            brokers=brokers,
            progress=_progress,
        )
    except BaseException:
        # Leave nothing half-started behind.
        try:
            devnet.down()
        except Exception:
            pass
        raise
    status = devnet.status()
    console.print(_table(status))
    if status.get("chain"):
        c = status["chain"]
        console.print(f"chain: {c['rpc']} (chain id {c['chain_id']})")
    flag = f" --dir {devnet.dir}" if dir else ""
    if not foreground:
        console.print(
            f"The devnet runs in the background. [bold]r1os devnet status{flag}[/] shows it, "
            f"[bold]r1os devnet logs NODE{flag}[/] tails a node, [bold]r1os devnet down{flag}[/] stops it."
        )
        return
    console.print("Running in the foreground: Ctrl-C stops the devnet.")
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    devnet.down(progress=_progress)


@app.command("status")
@handle_errors
def status(
    dir: Path | None = DirOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the devnet's nodes, their addresses, URLs and state."""
    data = _devnet(dir).status()
    if json_out:
        print_json(data)
    else:
        console.print(_table(data))


@app.command("logs")
@handle_errors
def logs(
    node: str = typer.Argument(..., help="Node name (node-03), number (3) or address prefix; or 'broker'."),
    dir: Path | None = DirOpt,
    lines: int = typer.Option(50, "--lines", "-n", help="How many lines from the end."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """Print a node's log (or the broker's)."""
    devnet = _devnet(dir)
    state = devnet.state()
    path = Path(state.dir) / "broker.log" if node == "broker" else state.node(node).log_path
    if not path.exists():
        from r1os.errors import DevnetError

        raise DevnetError(f"no log yet at {path}")
    args = ["tail", "-n", str(lines)] + (["-f"] if follow else []) + [str(path)]
    try:
        subprocess.run(args, check=False)
    except KeyboardInterrupt:
        pass


@app.command("stop-node")
@handle_errors
def stop_node(
    node: str = typer.Argument(..., help="Node name, number or address prefix."),
    dir: Path | None = DirOpt,
    kill: bool = typer.Option(False, "--kill", help="SIGKILL instead of a clean stop."),
) -> None:
    """Stop one node of the devnet (its state stays in its home)."""
    n = _devnet(dir).stop_node(node, kill=kill)
    console.print(f"{n.name} ({n.address}) {'killed' if kill else 'stopped'}")


@app.command("start-node")
@handle_errors
def start_node(
    node: str = typer.Argument(..., help="Node name, number or address prefix."),
    dir: Path | None = DirOpt,
) -> None:
    """Start a stopped node again with the same home (and so the same address)."""
    n = _devnet(dir).start_node(node)
    console.print(f"{n.name} ({n.address}) started, pid {n.pid}")


@app.command("add-node")
@handle_errors
def add_node(
    dir: Path | None = DirOpt,
    licence: bool = typer.Option(
        True, "--licence/--no-licence", help="Buy and link an ND for it first (chain devnets)."
    ),
) -> None:
    """Start one more edge node (without a licence it waits, refused by dAuth, until one is linked)."""
    n = _devnet(dir).add_node(licence=licence)
    console.print(f"{n.name} ({n.address}) started, pid {n.pid}, {n.url}")
    if not licence:
        console.print(
            f"It has no licence: [bold]r1os token faucet {n.address}[/], then "
            f"[bold]r1os licence buy --link {n.address} -k {n.home}/keys/node.json[/] admits it."
        )


@app.command("down")
@handle_errors
def down(dir: Path | None = DirOpt) -> None:
    """Stop every process of the devnet (data stays in --dir)."""
    devnet = _devnet(dir)
    devnet.down(progress=_progress)
    console.print(f"devnet in {devnet.dir} stopped")


from r1os.cli.demo import demo  # noqa: E402  (the story on a devnet: its own module)

app.command("demo")(demo)
