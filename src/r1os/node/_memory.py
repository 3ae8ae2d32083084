"""What a node process keeps in memory, paid once per node: dozens of nodes share one machine on a devnet.

Imported first by `r1os.node` (before anything imports httpx), which marks httpx's command-line client as
absent: `import httpx` imports `httpx._main` when click, rich and pygments are installed (they are: the
`r1os` command is built on typer and rich) and that loads all three in every process that only wants an
HTTP client. Marked absent, httpx keeps a stub `httpx.main` that says how to install the client, and
nothing else changes; the `httpx` command itself is a separate program that never imports r1os. A node
saves rich and pygments, ~3.5 MiB (click stays: `import uvicorn` loads uvicorn's own command line).

`skip_unused_modules` is for node processes only (`run_node`). (glibc's `malloc_trim(0)` once a node is
up was measured and dropped: it gave back next to nothing, RSS -0.1 MiB at idle, and made the memory of a
process that hosts a node in a test move more.)
"""

from __future__ import annotations

import sys

# None in sys.modules makes `import` raise ImportError, which httpx answers with its stub (see above).
# setdefault: where httpx was imported before r1os.node, it already has its client and keeps it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


# Imported by dependencies in a node process although a node never uses them (MiB per node):
# - trio: httpcore imports it, when installed, to serve trio event loops; a node runs on asyncio or
#   uvloop (~3 MiB with its dependencies; installed in development environments, for selenium);
# - pydantic.v1: FastAPI imports it while registering routes, only to refuse pydantic v1 models, which
#   nothing in a node defines (~0.8 MiB).
_UNUSED_IN_NODES = ("trio", "pydantic.v1")


def skip_unused_modules() -> None:
    """In a node process only (`run_node`): mark the modules above absent, so the imports that would
    load them fail and their importers take their "not installed" path. A process that also runs trio
    code or pydantic v1 models, such as a test driving a browser, must not call this."""
    for name in _UNUSED_IN_NODES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
