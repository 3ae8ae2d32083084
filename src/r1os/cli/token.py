"""`r1os token`: R1 (and gas / stablecoin) balances and R1 transfers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from r1os.chain.units import R1_DECIMALS, USDC_DECIMALS, format_units, parse_units
from r1os.cli._common import JsonOpt, KeyFileOpt, console, handle_errors, print_json, run
from r1os.cli.chain import DeploymentOpt, DirOpt, access, r1

if TYPE_CHECKING:
    from r1os.sdk import AsyncToken

app = typer.Typer(no_args_is_help=True)


def tokens(
    deployment: Path | None, dir: Path | None, key_file: Path | None = None, *, signer: bool = False
) -> AsyncToken:
    """The SDK's token group for the chosen deployment and key."""
    from r1os.sdk import AsyncToken

    return AsyncToken(access(deployment, dir, key_file, signer=signer))


@app.command("balance")
@handle_errors
def balance(
    address: str | None = typer.Argument(None, help="Address (default: the key's)."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show R1, ETH (gas) and USDC (PoAI jobs) balances."""
    data = run(tokens(deployment, dir, key_file, signer=address is None).balances(address)).json()
    who = data["address"]
    if json_out:
        print_json(data)
        return
    console.print(f"[dim]address[/] {who}", highlight=False)
    console.print(f"[dim]     R1[/] {r1(data['R1'])}", highlight=False)
    console.print(f"[dim]    ETH[/] {format_units(data['ETH'], 18)}", highlight=False)
    console.print(f"[dim]   USDC[/] {format_units(data['USDC'], USDC_DECIMALS)}", highlight=False)


@app.command("transfer")
@handle_errors
def transfer(
    to: str = typer.Argument(..., help="Recipient address."),
    amount: str = typer.Argument(..., help="Amount of R1, e.g. 12.5."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Send R1 to an address."""
    wei = parse_units(amount, R1_DECIMALS)
    tx = run(tokens(deployment, dir, key_file, signer=True).transfer(to, wei))
    if json_out:
        print_json({"to": to, "amount": wei, "tx": tx})
    else:
        console.print(f"sent {r1(wei)} R1 to {to} (tx {tx})", highlight=False)


@app.command("faucet")
@handle_errors
def faucet(
    address: str = typer.Argument(..., help="Address to fund."),
    r1_amount: str | None = typer.Option(
        None, "--r1", help="R1 to mint (default: one ND licence's price + 100)."
    ),
    eth: str = typer.Option("10", "--eth", help="ETH for gas."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
) -> None:
    """Devnet only: give an address ETH and R1 from the devnet's deployer (anvil dev account 0)."""
    r1_wei = parse_units(r1_amount, R1_DECIMALS) if r1_amount is not None else None
    wei = run(tokens(deployment, dir).faucet(address, r1_wei, parse_units(eth, 18)))
    console.print(f"sent {eth} ETH and {r1(wei)} R1 to {address}", highlight=False)
