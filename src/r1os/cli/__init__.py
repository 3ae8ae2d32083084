"""The `r1os` command line: one module per command group, each thin over the library."""

from r1os.cli.main import app, main

__all__ = ["app", "main"]
