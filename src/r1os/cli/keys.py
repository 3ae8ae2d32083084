"""`r1os keys`: create and inspect encrypted node keys."""

from __future__ import annotations

from pathlib import Path

import typer

from r1os.cli._common import console, handle_errors, print_json
from r1os.errors import IdentityError
from r1os.identity import (
    NodeKey,
    keystore_address,
    load_keystore,
    password_from_env_or_prompt,
    save_keystore,
)
from r1os.paths import default_key_path

app = typer.Typer(no_args_is_help=True)

KeyFile = typer.Option(None, "--key-file", "-k", help="Keystore file (default: ~/.r1os/keys/default.json).")


@app.command("new")
@handle_errors
def new(
    key_file: Path | None = KeyFile,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key file."),
    light: bool = typer.Option(False, "--light", help="Faster, weaker key derivation (devnets)."),
) -> None:
    """Create a new secp256k1 key, saved encrypted (keystore v3)."""
    path = key_file or default_key_path()
    if path.exists() and not force:
        raise IdentityError(f"{path} already exists", hint="pass --force to overwrite it")
    password = password_from_env_or_prompt(confirm=True)
    key = NodeKey.generate()
    save_keystore(key, path, password, strength="light" if light else "standard")
    console.print(f"created [bold]{key.address}[/] in {path}")


@app.command("address")
@handle_errors
def address(key_file: Path | None = KeyFile) -> None:
    """Print the key's Ethereum address (no password needed)."""
    path = key_file or default_key_path()
    addr = keystore_address(path)
    if addr is None:
        raise IdentityError(f"no readable key file at {path}", hint="create one with `r1os keys new`")
    print(addr)


@app.command("show")
@handle_errors
def show(
    key_file: Path | None = KeyFile,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Decrypt the key and show its address, 0xai_ form and public key."""
    path = key_file or default_key_path()
    key = load_keystore(path, password_from_env_or_prompt())
    info = {
        "address": key.address,
        "ai_address": key.ai_address,
        "public_key": "0x" + key.public_key.hex(),
        "file": str(path),
    }
    if json_out:
        print_json(info)
    else:
        for k, v in info.items():
            console.print(f"[dim]{k:>11}[/] {v}", highlight=False)
