"""`r1os job`: PoAI jobs paid in a stablecoin through the escrow (mock USDC on a devnet).

A job is paid in full when it is created (nodes x epochs x price per node-epoch) and can be topped up
with more epochs while it runs (`extend`); oracles attest each ended epoch and the escrow pays the
serving nodes' operators; the owner can end it early and take back what was not paid out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from r1os.chain.units import USDC_DECIMALS, format_units, parse_units
from r1os.cli._common import JsonOpt, KeyFileOpt, console, handle_errors, print_json, run
from r1os.cli.chain import DeploymentOpt, DirOpt, access

if TYPE_CHECKING:
    from r1os.sdk import AsyncJobs

app = typer.Typer(no_args_is_help=True)


def usdc(units: int) -> str:
    return format_units(units, USDC_DECIMALS)


def jobs(
    deployment: Path | None, dir: Path | None, key_file: Path | None = None, *, signer: bool = False
) -> AsyncJobs:
    """The SDK's PoAI job group for the chosen deployment and key."""
    from r1os.sdk import AsyncJobs

    return AsyncJobs(access(deployment, dir, key_file, signer=signer))


@app.command("fund")
@handle_errors
def fund(
    amount: str = typer.Argument(..., help="USDC to get, e.g. 100."),
    to: str | None = typer.Option(None, "--to", help="Recipient (default: the key's address)."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
) -> None:
    """Get stablecoin to pay for jobs: mints mock USDC (devnet faucet; on a public chain buy USDC)."""
    units = parse_units(amount, USDC_DECIMALS)
    who = run(jobs(deployment, dir, key_file, signer=True).fund(units, to))
    console.print(f"minted {usdc(units)} USDC to {who}", highlight=False)


@app.command("create")
@handle_errors
def create(
    nodes: int = typer.Option(..., "--nodes", help="How many nodes the job runs on."),
    epochs: int = typer.Option(..., "--epochs", help="How many epochs it runs."),
    price: str = typer.Option(..., "--price", help="USDC per node per epoch, e.g. 2.5."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Create a job and pay nodes x epochs x price into the escrow."""
    units = parse_units(price, USDC_DECIMALS)
    job_id = run(jobs(deployment, dir, key_file, signer=True).create(nodes, epochs, units))
    if json_out:
        print_json({"job_id": job_id, "paid_in": nodes * epochs * units})
    else:
        console.print(
            f"job [bold]{job_id}[/] created: {nodes} nodes x {epochs} epochs x {usdc(units)} USDC"
            f" = {usdc(nodes * epochs * units)} USDC in escrow",
            highlight=False,
        )


@app.command("status")
@handle_errors
def status(
    job_id: int = typer.Argument(..., help="Job id."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show a job: epochs, what is left in escrow, paid out and burned."""
    data = run(jobs(deployment, dir).status(job_id)).json()
    if json_out:
        print_json(data)
        return
    state = "closed" if data["closed"] else "open"
    console.print(f"job {job_id} ({state}) owned by {data['owner']}", highlight=False)
    console.print(
        f"  epochs {data['start_epoch']}..{data['end_epoch'] - 1} (now {data['current_epoch']}),"
        f" {data['nodes']} nodes x {usdc(data['price_per_node_epoch'])} USDC",
        highlight=False,
    )
    console.print(
        f"  in escrow {usdc(data['balance'])} USDC, paid {usdc(data['paid'])} USDC,"
        f" burned {usdc(data['burned'])} USDC",
        highlight=False,
    )


@app.command("extend")
@handle_errors
def extend(
    job_id: int = typer.Argument(..., help="Job id."),
    epochs: int = typer.Option(..., "--epochs", min=1, help="How many more epochs to pay for."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Top up a running job: pay nodes x epochs x its price into the escrow for more epochs."""
    end_epoch = run(jobs(deployment, dir, key_file, signer=True).extend(job_id, epochs))
    if json_out:
        print_json({"job_id": job_id, "end_epoch": end_epoch})
    else:
        console.print(
            f"job {job_id} extended by {epochs} epochs; it now runs until epoch {end_epoch - 1}",
            highlight=False,
        )


@app.command("end")
@handle_errors
def end(
    job_id: int = typer.Argument(..., help="Job id."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
) -> None:
    """Stop a job after the current epoch (which is still paid)."""
    end_epoch = run(jobs(deployment, dir, key_file, signer=True).end(job_id))
    console.print(f"job {job_id} ends before epoch {end_epoch}; refund after it", highlight=False)


@app.command("refund")
@handle_errors
def refund(
    job_id: int = typer.Argument(..., help="Job id."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Take back what an ended job did not pay out, and close it."""
    amount = run(jobs(deployment, dir, key_file, signer=True).refund(job_id))
    if json_out:
        print_json({"job_id": job_id, "refunded": amount})
    else:
        console.print(f"refunded {usdc(amount)} USDC; job {job_id} closed", highlight=False)
