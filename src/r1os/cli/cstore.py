"""`r1os cstore`: read and write the network's replicated key-value store through a node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from r1os.cli._common import KeyFileOpt, console, handle_errors, load_key, print_json

if TYPE_CHECKING:
    from r1os.sdk import Session

app = typer.Typer(no_args_is_help=True)

NodeOpt = typer.Option(
    None, "--node", help="Node API URL (default: $R1OS_API_URL or http://127.0.0.1:31234)."
)
TtlOpt = typer.Option(None, "--ttl", help="Expire after this many seconds.")
RawOpt = typer.Option(False, "--string", help="Store VALUE as a string even if it parses as JSON.")


def _session(node: str | None, key_file: Path | None) -> Session:
    from r1os.sdk import Session

    return Session(node, key=load_key(key_file))


def _value(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _show(value: Any) -> None:
    if value is None:
        raise typer.Exit(1)
    print_json(value) if not isinstance(value, str) else print(value)


@app.command("set")
@handle_errors
def set_(
    key: str,
    value: str,
    node: str | None = NodeOpt,
    key_file: Path | None = KeyFileOpt,
    ttl: float | None = TtlOpt,
    as_string: bool = RawOpt,
) -> None:
    """Set KEY to VALUE (JSON if it parses, else a string). Signed with your key if one is given."""
    with _session(node, key_file) as s:
        s.cstore.set(key, _value(value, as_string), ttl=ttl)
    console.print(f"set {key}")


@app.command("get")
@handle_errors
def get(key: str, node: str | None = NodeOpt) -> None:
    """Print KEY's value (exit code 1 if there is none)."""
    with _session(node, None) as s:
        _show(s.cstore.get(key))


@app.command("del")
@handle_errors
def delete(key: str, node: str | None = NodeOpt, key_file: Path | None = KeyFileOpt) -> None:
    """Delete KEY."""
    with _session(node, key_file) as s:
        s.cstore.delete(key)
    console.print(f"deleted {key}")


@app.command("keys")
@handle_errors
def keys(
    prefix: str = typer.Argument("", help="Only keys starting with this."), node: str | None = NodeOpt
) -> None:
    """List live keys (plain keys and hashes) by prefix."""
    with _session(node, None) as s:
        for k in s.cstore.keys(prefix):
            print(k)


@app.command("hset")
@handle_errors
def hset(
    key: str,
    field: str,
    value: str,
    node: str | None = NodeOpt,
    key_file: Path | None = KeyFileOpt,
    ttl: float | None = TtlOpt,
    as_string: bool = RawOpt,
) -> None:
    """Set FIELD of hash KEY to VALUE."""
    with _session(node, key_file) as s:
        s.cstore.hset(key, field, _value(value, as_string), ttl=ttl)
    console.print(f"set {key} {field}")


@app.command("hget")
@handle_errors
def hget(key: str, field: str, node: str | None = NodeOpt) -> None:
    """Print FIELD of hash KEY (exit code 1 if there is none)."""
    with _session(node, None) as s:
        _show(s.cstore.hget(key, field))


@app.command("hgetall")
@handle_errors
def hgetall(key: str, node: str | None = NodeOpt) -> None:
    """Print every field of hash KEY as JSON."""
    with _session(node, None) as s:
        print_json(s.cstore.hgetall(key))


@app.command("hdel")
@handle_errors
def hdel(key: str, field: str, node: str | None = NodeOpt, key_file: Path | None = KeyFileOpt) -> None:
    """Delete FIELD of hash KEY."""
    with _session(node, key_file) as s:
        s.cstore.hdel(key, field)
    console.print(f"deleted {key} {field}")


@app.command("whoami")
@handle_errors
def whoami(key_file: Path | None = KeyFileOpt) -> None:
    """Print the namespace your key may write (app:<address>:)."""
    k = load_key(key_file)
    if k is None:
        console.print("no key: writes are signed by the node itself (node:<node address>:...)")
    else:
        print(f"app:{k.address.lower()}:")
