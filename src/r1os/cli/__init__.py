"""The `r1os` command line: one module per command group, each thin over the library.

The root app (`r1os.cli.main`) is imported on first use only, so a process that needs a single
group (a node started by the devnet runs `python -m r1os.node`) does not load them all.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "main"):
        import importlib

        # Not `from r1os.cli import main`: that asks this package for `main` and recurses here.
        return getattr(importlib.import_module("r1os.cli.main"), name)
    raise AttributeError(name)


__all__ = ["app", "main"]
