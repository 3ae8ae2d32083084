"""`r1os licence`: buy Node Deeds, link licences to node addresses, list what you hold."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from r1os.chain.units import R1_DECIMALS, parse_units
from r1os.cli._common import JsonOpt, KeyFileOpt, console, handle_errors, print_json, run
from r1os.cli.chain import DeploymentOpt, DirOpt, access, r1

if TYPE_CHECKING:
    from r1os.chain.client import Licence
    from r1os.sdk import AsyncLicences

app = typer.Typer(no_args_is_help=True)

TypeOpt = typer.Option("ND", "--type", "-t", help="Licence type: ND, MND or GND.")


def licences(
    deployment: Path | None,
    dir: Path | None,
    key_file: Path | None = None,
    *,
    signer: bool = False,
    why: str | None = None,
) -> AsyncLicences:
    """The SDK's licence group for the chosen deployment and key."""
    from r1os.sdk import AsyncLicences

    if why is None:
        return AsyncLicences(access(deployment, dir, key_file, signer=signer))
    return AsyncLicences(access(deployment, dir, key_file, signer=signer, why=why))


@app.command("buy")
@handle_errors
def buy(
    max_price: str | None = typer.Option(
        None, "--max-price", help="Highest price in R1 you accept (default: the current price)."
    ),
    link: str | None = typer.Option(None, "--link", help="Also link the new licence to this node."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Buy the next Node Deed (ND) with R1 at the current tier price."""
    limit = parse_units(max_price, R1_DECIMALS) if max_price is not None else None
    got = run(licences(deployment, dir, key_file, signer=True).buy(limit, link=link))
    if json_out:
        print_json({"type": got.type, "token_id": got.token_id, "price": got.price, "node": got.node})
        return
    console.print(f"bought ND [bold]#{got.token_id}[/] for {r1(got.price)} R1")
    if link:
        console.print(f"linked to {link}")


@app.command("link")
@handle_errors
def link(
    token_id: int = typer.Argument(..., help="Licence token id."),
    node: str = typer.Argument(..., help="Node address (0x... or 0xai_...)."),
    type: str = TypeOpt,
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
) -> None:
    """Link a licence you own to a node, so the node may join and mine."""
    run(licences(deployment, dir, key_file, signer=True).link(token_id, node, type))
    console.print(f"{type.upper()} #{token_id} linked to {node}", highlight=False)


@app.command("unlink")
@handle_errors
def unlink(
    token_id: int = typer.Argument(..., help="Licence token id."),
    type: str = TypeOpt,
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
) -> None:
    """Unlink a licence from its node (claim its rewards first)."""
    run(licences(deployment, dir, key_file, signer=True).unlink(token_id, type))
    console.print(f"{type.upper()} #{token_id} unlinked", highlight=False)


def licence_table(rows: list[Licence], title: str) -> Table:
    table = Table(title=title)
    for col in ("type", "id", "node", "next epoch", "claimable epochs", "claimed R1"):
        table.add_column(col, justify="right" if col != "node" else "left")
    for lic in rows:
        table.add_row(
            lic.type,
            str(lic.token_id),
            lic.node or "-",
            str(lic.next_claim_epoch),
            str(lic.claimable_epochs),
            r1(lic.claimed),
        )
    return table


@app.command("ls")
@handle_errors
def ls(
    owner: str | None = typer.Option(None, "--owner", help="Whose licences (default: the key's)."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List the ND, MND and GND licences an address holds."""
    why = "whose licences? Without --owner this lists your key's, and no key was given"
    chosen = licences(deployment, dir, key_file, signer=owner is None, why=why)
    show_licences(chosen, owner, json_out, "licences of")


def show_licences(group: AsyncLicences, owner: str | None, json_out: bool, title: str) -> list[Licence]:
    """Print the licences `owner` (default: the signer) holds, as JSON or a table; returns them."""
    rows = run(group.list(owner))
    who = owner or group.access.sender()
    if json_out:
        print_json([lic.model_dump() for lic in rows])
    elif not rows:
        console.print(f"{who} holds no licence", highlight=False)
    else:
        console.print(licence_table(rows, f"{title} {who}"))
    return rows


@app.command("price")
@handle_errors
def price(
    deployment: Path | None = DeploymentOpt, dir: Path | None = DirOpt, json_out: bool = JsonOpt
) -> None:
    """Show the current ND tier and price."""
    got = run(licences(deployment, dir).price())
    tier, wei = got.tier, got.price
    if json_out:
        print_json({"tier": tier, "price": wei})
    else:
        console.print(f"ND tier {tier}: {r1(wei)} R1" if wei else "ND licences are sold out")
