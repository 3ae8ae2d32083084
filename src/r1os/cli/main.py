"""The root `r1os` command: registers each command group."""

from __future__ import annotations

import typer

from r1os import __version__

app = typer.Typer(
    name="r1os",
    help="r1os: turn machines into one decentralized cloud for AI (a Ratio1 meta-OS).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"r1os {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """r1os command line."""


def _register() -> None:
    # One line per command group; each module exposes `app: typer.Typer`.
    from r1os.cli import broker, devnet, keys, node

    app.add_typer(keys.app, name="keys", help="Create and inspect node keys.")
    app.add_typer(broker.app, name="broker", help="Run an MQTT broker (embedded amqtt).")
    app.add_typer(node.app, name="node", help="Run an edge or oracle node.")
    app.add_typer(devnet.app, name="devnet", help="A whole local network on this machine.")
    from r1os.cli import cstore

    app.add_typer(cstore.app, name="cstore", help="The replicated key-value store (via a node).")
    from r1os.cli import fs

    app.add_typer(fs.app, name="fs", help="R1FS files: add, get, pin (IPFS-compatible CIDs).")
    from r1os.cli import chain, job, licence, rewards, token

    app.add_typer(chain.app, name="chain", help="Deploy the contracts to an EVM chain; inspect one.")
    app.add_typer(licence.app, name="licence", help="Buy, link and list node licences.")
    app.add_typer(rewards.app, name="rewards", help="Show and claim licence mining rewards.")
    app.add_typer(token.app, name="token", help="R1 balances and transfers.")
    app.add_typer(job.app, name="job", help="PoAI jobs paid through the escrow.")
    from r1os.cli import oracle

    app.add_typer(oracle.app, name="oracle", help="Agreed epochs and signed node availability.")
    # `apps`, not `app`: `r1os.cli.app` is the root command (see `r1os.cli.__getattr__`).
    from r1os.cli import apps

    app.add_typer(apps.app, name="app", help="Deploy and run apps on the network (Deeploy).")
    from r1os.cli import edil

    app.add_typer(edil.app, name="edil", help="Train models over the network, privately (EDIL).")
    from r1os.cli import economy

    app.add_typer(economy.app, name="economy", help="Simulate the token economy on the real contracts.")


_register()


def main() -> None:
    app()
