"""`r1os rewards`: what your licences have mined and may claim, and claiming it with oracle signatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from r1os.chain.digests import SignedAvailability
from r1os.cli._common import JsonOpt, KeyFileOpt, console, handle_errors, print_json, run
from r1os.cli.chain import DeploymentOpt, DirOpt, access, r1
from r1os.cli.licence import licence_table, show_licences
from r1os.errors import ChainError

app = typer.Typer(no_args_is_help=True)


@app.command("show")
@handle_errors
def show(
    token_id: int | None = typer.Argument(None, help="One licence (default: all you hold)."),
    type: str = typer.Option("ND", "--type", "-t", help="Licence type of TOKEN_ID: ND, MND, GND."),
    owner: str | None = typer.Option(None, "--owner", help="Whose licences (default: the key's)."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show claimed rewards, the next claimable epoch and how many ended epochs wait."""
    from r1os.sdk import AsyncLicences, AsyncRewards

    why = "whose rewards? Without a licence id or --owner this shows your key's, and no key was given"
    chain = access(deployment, dir, key_file, signer=token_id is None and owner is None, why=why)
    if token_id is not None:
        got = run(AsyncRewards(chain).show(token_id, type))
        if json_out:
            print_json(got.json())
            return
        console.print(licence_table([got.licence], f"{got.licence.type} #{token_id}"))
        console.print(
            f"release per epoch {r1(got.epoch_release)} R1 at full availability;"
            f" at most {r1(got.max_reward)} R1 in all; current epoch {got.current_epoch}",
            highlight=False,
        )
        return
    rows = show_licences(AsyncLicences(chain), owner, json_out, "rewards of")
    if rows and not json_out:
        console.print(f"claimed in all: {r1(sum(lic.claimed for lic in rows))} R1")


def read_signed(path: Path) -> SignedAvailability:
    try:
        return SignedAvailability.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ChainError(f"no signatures file at {path}") from None
    except (OSError, ValueError, ValidationError) as exc:
        raise ChainError(
            f"invalid signatures file {path}: {exc}",
            hint='expected JSON {"node", "first_epoch", "availabilities": [..], "signatures": ["0x.."]}',
        ) from None


@app.command("claim")
@handle_errors
def claim(
    signatures: Path | None = typer.Option(
        None, "--signatures", "-s", help="JSON with node, first_epoch, availabilities, signatures."
    ),
    node: str | None = typer.Option(
        None, "--node", help="Fetch the signatures for this node from an oracle (address or devnet name)."
    ),
    oracle: str | None = typer.Option(None, "--oracle", help="Oracle HTTP URL (default: one of --dir's)."),
    token_id: int | None = typer.Option(
        None, "--token-id", help="Licence to claim for (default: the one linked to the node)."
    ),
    type: str | None = typer.Option(None, "--type", "-t", help="ND, MND or GND (with --token-id)."),
    deployment: Path | None = DeploymentOpt,
    dir: Path | None = DirOpt,
    key_file: Path | None = KeyFileOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Claim a licence's rewards for epochs the oracles signed; the R1 goes to the licence owner.

    With --node, everything claimable is fetched from an oracle instead of a --signatures file."""
    if signatures is None and node is None:
        raise ChainError(
            "nothing to claim with", hint="pass --node ADDRESS (ask an oracle) or --signatures FILE"
        )
    from r1os.sdk import AsyncRewards

    signed = read_signed(signatures) if signatures is not None else None
    rewards = AsyncRewards(access(deployment, dir, key_file, signer=True))
    address = oracle_at = None
    if signed is None:
        from r1os.cli.oracle import node_address, oracle_url

        address = node_address(node or "", dir, oracle is None)
        oracle_at = oracle_url(oracle, dir)
    got = run(rewards.claim(signed, node=address, oracle=oracle_at, token_id=token_id, type=type))
    data: dict[str, Any] = got.json()
    if json_out:
        print_json(data)
        return
    console.print(
        f"claimed [bold]{r1(data['amount'])} R1[/] for {data['type']} #{data['token_id']}"
        f" (epochs {data['first_epoch']}..{data['last_epoch']}) to {data['owner']};"
        f" balance {r1(data['balance'])} R1",
        highlight=False,
    )


@app.command("sign")
@handle_errors
def sign(
    node: str = typer.Option(..., "--node", help="Node address the availability is for."),
    first_epoch: int = typer.Option(..., "--first-epoch", help="First epoch of the range."),
    availability: str = typer.Option(
        ..., "--availability", "-a", help="Comma-separated 0..255 values, one per epoch."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Signatures file to create or add to."),
    key_file: Path | None = KeyFileOpt,
) -> None:
    """Oracle side, by hand: sign a node's availability and add the signature to a claim file."""
    from r1os.cli._common import load_key
    from r1os.sdk import AsyncRewards, ChainAccess
    from r1os.sdk._chain import same_claim

    try:
        values = [int(v) for v in availability.split(",") if v.strip()]
    except ValueError:
        raise ChainError(f"--availability must be integers 0..255, got {availability!r}") from None
    key = load_key(key_file)
    if key is None:
        raise ChainError("signing needs the oracle's key", hint="pass --key-file or set R1OS_PRIVATE_KEY")
    into = read_signed(out) if out.exists() else None
    if into is not None and not same_claim(into, node, first_epoch, values):
        raise ChainError(f"{out} holds a claim for another node, range or availability")
    signed = AsyncRewards(ChainAccess(key)).sign(node, first_epoch, values, into)
    out.write_text(signed.model_dump_json(indent=2) + "\n")
    console.print(f"{key.address} signed; {out} has {len(signed.signatures)} signature(s)", highlight=False)
