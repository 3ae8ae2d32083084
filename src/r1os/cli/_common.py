"""Helpers shared by the CLI command groups: one console, and errors turned into one line + hint."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from r1os.errors import R1osError

# Piped output keeps whole addresses and URLs instead of folding them at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

P = ParamSpec("P")
T = TypeVar("T")


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print one error line (and a hint) to stderr and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err_console.print(f"[dim]hint:[/] {hint}", highlight=False)
    raise typer.Exit(code)


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate a command so every `R1osError` becomes one readable line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except R1osError as exc:
            fail(str(exc), exc.hint)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a synchronous command."""
    return asyncio.run(coro)


def print_json(obj: Any) -> None:
    """Print JSON for scripts (plain stdout, no colour)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
