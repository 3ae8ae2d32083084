"""`r1os chain`: deploy the contracts to any EVM chain and inspect a deployment.

Also holds the options every chain command shares (where the deployment is, which key signs), so
`licence`, `rewards`, `token` and `job` read them the same way:
- the deployment from `--deployment FILE`, else `--dir DEVNET_DIR` (`DIR/chain/deployment.json`,
  default `~/.r1os/devnet`);
- the key from `--key-file` (an encrypted keystore, password from `R1OS_PASSWORD` or a prompt), else the
  `R1OS_PRIVATE_KEY` environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from r1os.chain.deployment import Deployment
from r1os.chain.units import R1_DECIMALS, USDC_DECIMALS, format_units, parse_units
from r1os.cli._common import (
    PRIVATE_KEY_ENV,
    JsonOpt,
    KeyFileOpt,
    console,
    handle_errors,
    load_key,
    print_json,
    run,
)
from r1os.errors import ChainError

if TYPE_CHECKING:  # web3 loads only when a command talks to a chain
    from r1os.sdk import ChainAccess

app = typer.Typer(no_args_is_help=True)

DeploymentOpt = typer.Option(None, "--deployment", help="Deployment JSON (from `r1os chain deploy`).")
DirOpt = typer.Option(
    None, "--dir", help="Devnet folder; reads DIR/chain/deployment.json (default ~/.r1os/devnet)."
)


def load_deployment(deployment: Path | None, dir: Path | None) -> Deployment:
    return access(deployment, dir).deployment


def access(
    deployment: Path | None,
    dir: Path | None,
    key_file: Path | None = None,
    *,
    signer: bool = False,
    why: str = "this command sends a transaction and needs a key",
) -> ChainAccess:
    """The SDK's view of the chosen deployment, signing with the key of `--key-file` / $R1OS_PRIVATE_KEY;
    `signer=True` insists on a key (`why` says what it is needed for). The `licence`, `rewards`, `job`
    and `token` commands call the SDK's chain groups (`r1os.sdk.AsyncLicences`, ...) over it."""
    from r1os.sdk import ChainAccess
    from r1os.sdk._chain import deployment_path

    key = load_key(key_file)
    if signer and key is None:
        raise ChainError(
            why,
            hint=f"pass --key-file (password in R1OS_PASSWORD) or set {PRIVATE_KEY_ENV}",
        )
    return ChainAccess(key, deployment if deployment is not None else deployment_path(dir))


def r1(wei: int) -> str:
    return format_units(wei, R1_DECIMALS)


@app.command("deploy")
@handle_errors
def deploy(
    rpc: str = typer.Option(..., "--rpc", help="JSON-RPC URL of any EVM chain."),
    key_file: Path | None = KeyFileOpt,
    epoch_seconds: int = typer.Option(86400, "--epoch-seconds", help="Epoch length (devnet: 60)."),
    genesis_time: int | None = typer.Option(
        None, "--genesis-time", help="Unix time of epoch 0 (default: now)."
    ),
    oracle: list[str] = typer.Option([], "--oracle", help="Oracle address (repeat for each)."),
    min_signatures: int | None = typer.Option(
        None, "--min-signatures", help="Oracle signatures a claim needs (default: a majority)."
    ),
    mnd_cliff_epochs: int = typer.Option(223, "--mnd-cliff-epochs", help="MND vesting cliff."),
    stablecoin: str | None = typer.Option(
        None, "--stablecoin", help="ERC-20 that pays PoAI jobs (default: deploy a mock USDC)."
    ),
    burn_receiver: str | None = typer.Option(
        None, "--burn-receiver", help="Where the PoAI burn share goes (default: burned)."
    ),
    uniswap: str | None = typer.Option(
        None,
        "--uniswap",
        help="R1/USDC pool: 'deploy' (Uniswap V2 from the npm artifacts) or an existing Router02 address"
        " (Base: 0x4752ba5DBc23f44D87826276BF6Fd6b1C372aD24). Default: none, the owner-set ND price.",
    ),
    pool_r1: str | None = typer.Option(
        None, "--pool-r1", help="R1 of the pool's first liquidity (with --pool-usdc)."
    ),
    pool_usdc: str | None = typer.Option(None, "--pool-usdc", help="USDC of the pool's first liquidity."),
    mint_seed: bool = typer.Option(
        False, "--mint-seed", help="Test networks: mint the seed's R1 (and mock USDC) to the deployer."
    ),
    out: Path = typer.Option(Path("deployment.json"), "--out", help="Where to write the deployment."),
    json_out: bool = JsonOpt,
) -> None:
    """Deploy and wire every r1os contract; write the deployment JSON."""
    from r1os.chain.deploy import deploy as deploy_contracts

    key = load_key(key_file)
    if key is None:
        raise ChainError(
            "deploying needs a funded key",
            hint=f"pass --key-file (password in R1OS_PASSWORD) or set {PRIVATE_KEY_ENV}",
        )
    dep = run(
        deploy_contracts(
            rpc,
            key,
            epoch_seconds=epoch_seconds,
            genesis_time=genesis_time,
            oracles=oracle,
            min_signatures=min_signatures,
            mnd_cliff_epochs=mnd_cliff_epochs,
            stablecoin=stablecoin,
            burn_receiver=burn_receiver,
            uniswap=uniswap,
            seed_pool=(
                (parse_units(pool_r1 or 0, R1_DECIMALS), parse_units(pool_usdc or 0, USDC_DECIMALS))
                if pool_r1 or pool_usdc
                else None
            ),
            mint_seed=mint_seed,
            out=out,
        )
    )
    if json_out:
        print_json(dep.model_dump())
        return
    table = Table(title=f"r1os contracts on chain {dep.chain_id}", show_header=True)
    table.add_column("contract")
    table.add_column("address")
    for name, address in dep.contracts.items():
        table.add_row(name, address)
    console.print(table)
    console.print(f"deployment written to [bold]{out}[/]")


@app.command("info")
@handle_errors
def info(
    deployment: Path | None = DeploymentOpt, dir: Path | None = DirOpt, json_out: bool = JsonOpt
) -> None:
    """Show a deployment: endpoint, contracts, current epoch, oracles and threshold."""
    from r1os.sdk import AsyncChain

    got = run(AsyncChain(access(deployment, dir)).info())
    data: dict[str, Any] = {
        **got.deployment.model_dump(),
        "current_epoch": got.current_epoch,
        "oracles": got.oracles,
        "min_signatures": got.min_signatures,
        "nd_price_r1": r1(got.nd_price),
    }
    if json_out:
        print_json(data)
        return
    for k in ("rpc", "chain_id", "genesis_time", "epoch_seconds", "current_epoch", "nd_price_r1"):
        console.print(f"[dim]{k:>15}[/] {data[k]}", highlight=False)
    console.print(f"[dim]{'oracles':>15}[/] {data['min_signatures']} of {len(data['oracles'])}")
    for o in data["oracles"]:
        console.print(f"{'':>16}{o}", highlight=False)
    for name, address in data["contracts"].items():
        console.print(f"[dim]{name:>15}[/] {address}", highlight=False)
