"""`r1os token`: R1 (and gas / stablecoin) balances and R1 transfers."""

from __future__ import annotations

from pathlib import Path

import typer

from r1os.chain.units import R1_DECIMALS, USDC_DECIMALS, format_units, parse_units
from r1os.cli._common import JsonOpt, KeyFileOpt, console, handle_errors, print_json, run
from r1os.cli.chain import DeploymentOpt, DirOpt, client, r1
from r1os.errors import ChainError

app = typer.Typer(no_args_is_help=True)


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
    c = client(deployment, dir, key_file, signer=address is None)
    who = address or c.sender

    async def go() -> dict[str, int]:
        return {
            "R1": await c.balance(who),
            "ETH": await c.eth_balance(who),
            "USDC": await c.usdc_balance(who),
        }

    data = run(go())
    if json_out:
        print_json({"address": who, **data})
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
    c = client(deployment, dir, key_file, signer=True)
    receipt = run(c.transfer(to, wei))
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
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
    from r1os.chain.anvil import DEFAULT_CHAIN_ID, dev_private_key

    c = client(deployment, dir).with_key(dev_private_key(0))
    if c.deployment.chain_id != DEFAULT_CHAIN_ID or c.deployment.deployer != c.sender:
        raise ChainError(
            "the faucet only works on a local devnet deployed by anvil's dev account",
            hint="on a public chain, get R1 and ETH from an exchange or a holder",
        )

    async def go() -> int:
        wei = (
            parse_units(r1_amount, R1_DECIMALS)
            if r1_amount is not None
            else await c.nd_price() + 100 * 10**R1_DECIMALS
        )
        await c.send_eth(address, parse_units(eth, 18))
        if not await c.call("R1", "is_minter", c.sender):
            await c.transact("R1", "set_minter", c.sender, True)  # the deployer owns R1
        await c.mint_r1(address, wei)
        return wei

    wei = run(go())
    console.print(f"sent {eth} ETH and {r1(wei)} R1 to {address}", highlight=False)
