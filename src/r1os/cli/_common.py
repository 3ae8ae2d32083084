"""Helpers shared by the CLI command groups: one console, and errors turned into one line + hint."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from r1os.errors import R1osError, RemoteError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from r1os.identity import NodeKey

# Piped output keeps whole addresses and URLs instead of folding them at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")

JsonOpt = typer.Option(False, "--json", help="Print JSON.")


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print one error line (and a hint) to stderr and exit."""
    # Escaped: messages quote URLs, node answers and OS errors ("[Errno 111]"), not rich markup. Not
    # folded (soft_wrap): one line each, however long, for a log or a script to read.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def error_line(exc: R1osError) -> str:
    """The message of `exc` on one line; a node's error also names its cause word (what a script or
    a log search keys on), unless the message already does or the cause says nothing."""
    message = str(exc)
    if isinstance(exc, RemoteError):
        message = " ".join(message.split())
        if exc.cause not in ("error", "") and f"({exc.cause})" not in message:
            message += f" ({exc.cause})"
    return message


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate a command so every `R1osError` becomes one readable line (and a hint) instead of a
    traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except R1osError as exc:
            fail(error_line(exc), exc.hint)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


PRIVATE_KEY_ENV = "R1OS_PRIVATE_KEY"

KeyFileOpt = typer.Option(
    None, "--key-file", "-k", help=f"Encrypted keystore that signs (else ${PRIVATE_KEY_ENV})."
)


def load_key(key_file: Path | None) -> NodeKey | None:
    """The signing key from --key-file or R1OS_PRIVATE_KEY (None if neither is given)."""
    from r1os.identity import NodeKey, load_keystore, password_from_env_or_prompt

    if key_file is not None:
        return load_keystore(key_file, password_from_env_or_prompt())
    env = os.environ.get(PRIVATE_KEY_ENV)
    return NodeKey.from_hex(env.strip()) if env else None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a synchronous command."""
    return asyncio.run(coro)


def print_json(obj: Any) -> None:
    """Print JSON for scripts (plain stdout, no colour)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def table(title: str, columns: Iterable[str], rows: Iterable[Sequence[str]]) -> Table:
    """A table titled `title` with these columns and rows."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    return t


def print_listing(
    items: Sequence[M],
    json_out: bool,
    *,
    title: str,
    columns: Iterable[str],
    row: Callable[[M], Sequence[str]],
    empty: str,
) -> None:
    """What a listing command prints: under --json the items as JSON; with no items the line `empty`
    (dim); else a table with one `row(item)` per item."""
    if json_out:
        print_json([item.model_dump(mode="json") for item in items])
        return
    if not items:
        console.print(f"[dim]{empty}[/]")
        return
    console.print(table(title, columns, (row(item) for item in items)))


@contextlib.contextmanager
def spinner(text: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while waiting (on a terminal); the callback changes its text."""
    if not err_console.is_terminal:
        yield lambda _t: None
        return
    with err_console.status(text) as status:
        yield lambda t: status.update(t)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
