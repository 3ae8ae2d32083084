"""`r1os cstore`: read and write the network's replicated key-value store through a node.

Writes with a key (`--key`, $R1OS_KEY, $R1OS_PRIVATE_KEY, your default key) are batches the key signs,
in its own namespace `app:<address>:`; without one, the node's operator (its API token, found by
itself on the node's machine) has the node sign them (`node:<node address>:...`). See `_access.py`.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from r1os.cli._access import CallerKeyOpt, NodeOpt, TokenOpt, access, node_session, open_session
from r1os.cli._common import console, handle_errors, print_json

if TYPE_CHECKING:
    from r1os.sdk import Session

app = typer.Typer(no_args_is_help=True)

TtlOpt = typer.Option(None, "--ttl", help="Expire after this many seconds.")
RawOpt = typer.Option(False, "--string", help="Store VALUE as a string even if it parses as JSON.")


def _session(
    node: str | None, key_file: Path | None, token: str | None, *, writes: bool = False
) -> AbstractContextManager[Session]:
    return node_session(node, key_file, token, writes=writes)


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
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
    ttl: float | None = TtlOpt,
    as_string: bool = RawOpt,
) -> None:
    """Set KEY to VALUE (JSON if it parses, else a string): signed by your key (in app:<address>:), or
    without one by the node for its operator (node:<node address>:)."""
    with _session(node, key_file, token, writes=True) as s:
        s.cstore.set(key, _value(value, as_string), ttl=ttl)
    console.print(f"set {key}")


@app.command("get")
@handle_errors
def get(
    key: str, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Print KEY's value (exit code 1 if there is none)."""
    with _session(node, key_file, token) as s:
        _show(s.cstore.get(key))


@app.command("del")
@handle_errors
def delete(
    key: str, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Delete KEY."""
    with _session(node, key_file, token, writes=True) as s:
        s.cstore.delete(key)
    console.print(f"deleted {key}")


@app.command("keys")
@handle_errors
def keys(
    prefix: str = typer.Argument("", help="Only keys starting with this."),
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of keys)."),
) -> None:
    """List live keys (plain keys and hashes) by prefix."""
    with _session(node, key_file, token) as s:
        found = s.cstore.keys(prefix)
    if json_out:
        print_json(found)
        return
    for k in found:
        print(k)


@app.command("hset")
@handle_errors
def hset(
    key: str,
    field: str,
    value: str,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
    ttl: float | None = TtlOpt,
    as_string: bool = RawOpt,
) -> None:
    """Set FIELD of hash KEY to VALUE."""
    with _session(node, key_file, token, writes=True) as s:
        s.cstore.hset(key, field, _value(value, as_string), ttl=ttl)
    console.print(f"set {key} {field}")


@app.command("hget")
@handle_errors
def hget(
    key: str,
    field: str,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Print FIELD of hash KEY (exit code 1 if there is none)."""
    with _session(node, key_file, token) as s:
        _show(s.cstore.hget(key, field))


@app.command("hgetall")
@handle_errors
def hgetall(
    key: str, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Print every field of hash KEY as JSON."""
    with _session(node, key_file, token) as s:
        print_json(s.cstore.hgetall(key))


@app.command("hdel")
@handle_errors
def hdel(
    key: str,
    field: str,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Delete FIELD of hash KEY."""
    with _session(node, key_file, token, writes=True) as s:
        s.cstore.hdel(key, field)
    console.print(f"deleted {key} {field}")


@app.command("whoami")
@handle_errors
def whoami(
    node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Print the namespace your writes go to (app:<your address>:, or node:<node address>: as the node's
    operator)."""
    caller = access(node, key_file, token, writes=True)
    if caller.key is not None:
        print(f"app:{caller.key.address.lower()}:")
        return
    if caller.token is None:
        console.print(
            "no key and no API token for this node: you cannot write",
            "(pass --key KEYSTORE, or --token on the node's machine)",
        )
        raise typer.Exit(1)
    with open_session(caller) as s:
        print(f"node:{str(s.node()['address']).lower()}:")
