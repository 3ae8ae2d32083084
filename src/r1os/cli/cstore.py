"""`r1os cstore`: read and write the network's replicated key-value store through a node.

Writes with a key (`--key`, $R1OS_KEY, $R1OS_PRIVATE_KEY, your default key) are batches the key signs,
in its own namespace `app:<address>:`; without one, the node's operator (its API token, found by
itself on the node's machine) has the node sign them (`node:<node address>:...`). See `_access.py`.

A key in no namespace (`foo`, not `node:`, `app:`, `pub:` or `net:...`) is the caller's own: `set foo bar`
writes `app:<your address>:foo` (`node:<node address>:foo` as the node's operator) and `get foo` reads it
back, with a note on stderr that names the full key; with no key and no token to own one, the command
says how to get one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.markup import escape

from r1os.cli._access import Access, CallerKeyOpt, NodeOpt, TokenOpt, access, node_session, open_session
from r1os.cli._common import console, err_console, fail, handle_errors, print_json

if TYPE_CHECKING:
    from r1os.sdk import Session

app = typer.Typer(no_args_is_help=True)

TtlOpt = typer.Option(None, "--ttl", help="Expire after this many seconds.")
RawOpt = typer.Option(False, "--string", help="Store VALUE as a string even if it parses as JSON.")


#: The namespaces a key can be in (docs/cstore.md, "Who may write where").
NAMESPACES = ("node:", "app:", "pub:", "net:")


def in_a_namespace(key: str, *, prefix: bool = False) -> bool:
    """True if `key` names its namespace; a `prefix` (of `keys`) also if it is empty or could still be
    one (`app`, `no`): it lists across namespaces."""
    if key.startswith(NAMESPACES):
        return True
    return prefix and any(ns.startswith(key) for ns in NAMESPACES)


def _own_namespace(caller: Access, s: Session) -> str:
    """The namespace `caller` writes in: its key's `app:<address>:`, else (the node's operator) the
    node's `node:<address>:`."""
    if caller.key is not None:
        return f"app:{caller.key.address.lower()}:"
    return f"node:{str(s.node()['address']).lower()}:"


def _no_namespace(key: str) -> NoReturn:
    """Fail: `key` is in no namespace and the caller has none of its own."""
    what = f"{key!r} is in no namespace, so it goes in yours, but" if key else "you have no namespace:"
    k = key or "KEY"
    fail(
        f"{what} you have no key (no --key, $R1OS_KEY, $R1OS_PRIVATE_KEY or default key)",
        f"create one with `r1os keys new` (then {k} is app:<your address>:{k}), or pass the node's "
        f"operator token (--token, $R1OS_API_TOKEN; found by itself on the node's machine) for "
        f"node:<node address>:{k}",
    )


def _note(did: str, full: str) -> None:
    """One line on stderr: a key in no namespace went to the caller's own (stdout stays the output)."""
    whose = "the node's namespace, as its operator" if full.startswith("node:") else "your own namespace"
    verb = "write" if did in ("wrote", "deleted") else "read"
    err_console.print(
        escape(
            f"{did} {full} ({whose}: keys without a namespace go there; pass a full key to {verb} elsewhere)"
        ),
        highlight=False,
        soft_wrap=True,
    )


@contextmanager
def _session(
    key: str,
    node: str | None,
    key_file: Path | None,
    token: str | None,
    *,
    writes: bool = False,
    prefix: bool = False,
) -> Iterator[tuple[Session, str]]:
    """A session for a command on `key` and the key in full: a key in no namespace is in the namespace of
    the caller who would write it (a read of `foo` finds what `set foo` wrote)."""
    if in_a_namespace(key, prefix=prefix):
        with node_session(node, key_file, token, writes=writes) as s:
            yield s, key
        return
    caller = access(node, key_file, token, writes=True)
    if caller.key is None and caller.token is None:
        _no_namespace(key)
    with open_session(caller) as s:
        yield s, _own_namespace(caller, s) + key


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
    without one by the node for its operator (node:<node address>:). A KEY in no namespace (not node:,
    app:, pub: or net:...) goes to yours."""
    with _session(key, node, key_file, token, writes=True) as (s, full):
        s.cstore.set(full, _value(value, as_string), ttl=ttl)
    console.print(f"set {full}", highlight=False)
    if full != key:
        _note("wrote", full)


@app.command("get")
@handle_errors
def get(
    key: str, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Print KEY's value (exit code 1 if there is none); a KEY in no namespace is read in yours."""
    with _session(key, node, key_file, token) as (s, full):
        value = s.cstore.get(full)
    if full != key:
        _note("read", full)
    _show(value)


@app.command("del")
@handle_errors
def delete(
    key: str, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Delete KEY (a KEY in no namespace: in yours)."""
    with _session(key, node, key_file, token, writes=True) as (s, full):
        s.cstore.delete(full)
    console.print(f"deleted {full}", highlight=False)
    if full != key:
        _note("deleted", full)


@app.command("keys")
@handle_errors
def keys(
    prefix: str = typer.Argument(
        "", help="Only keys starting with this; one in no namespace (foo, not app:...) is in yours."
    ),
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of keys)."),
) -> None:
    """List live keys (plain keys and hashes) by prefix (a PREFIX in no namespace: in yours)."""
    with _session(prefix, node, key_file, token, prefix=True) as (s, full):
        found = s.cstore.keys(full)
    if full != prefix:
        _note("listed", full + "*")
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
    """Set FIELD of hash KEY to VALUE (a KEY in no namespace: in yours)."""
    with _session(key, node, key_file, token, writes=True) as (s, full):
        s.cstore.hset(full, field, _value(value, as_string), ttl=ttl)
    console.print(f"set {full} {field}", highlight=False)
    if full != key:
        _note("wrote", full)


@app.command("hget")
@handle_errors
def hget(
    key: str,
    field: str,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Print FIELD of hash KEY (exit code 1 if there is none; a KEY in no namespace: in yours)."""
    with _session(key, node, key_file, token) as (s, full):
        value = s.cstore.hget(full, field)
    if full != key:
        _note("read", full)
    _show(value)


@app.command("hgetall")
@handle_errors
def hgetall(
    key: str, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Print every field of hash KEY as JSON (a KEY in no namespace: in yours)."""
    with _session(key, node, key_file, token) as (s, full):
        fields = s.cstore.hgetall(full)
    if full != key:
        _note("read", full)
    print_json(fields)


@app.command("hdel")
@handle_errors
def hdel(
    key: str,
    field: str,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Delete FIELD of hash KEY (a KEY in no namespace: in yours)."""
    with _session(key, node, key_file, token, writes=True) as (s, full):
        s.cstore.hdel(full, field)
    console.print(f"deleted {full} {field}", highlight=False)
    if full != key:
        _note("deleted", full)


@app.command("whoami")
@handle_errors
def whoami(
    node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt, token: str | None = TokenOpt
) -> None:
    """Print the namespace your writes go to (app:<your address>:, or node:<node address>: as the node's
    operator)."""
    caller = access(node, key_file, token, writes=True)
    if caller.key is None and caller.token is None:
        _no_namespace("")
    with open_session(caller) as s:
        print(_own_namespace(caller, s))
