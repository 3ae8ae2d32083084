"""What a node process keeps in memory, paid once per node: dozens of nodes share one machine on a devnet.

Imported first by `r1os.node` (before anything imports httpx), which marks httpx's command-line client as
absent: `import httpx` imports `httpx._main` when click, rich and pygments are installed (they are: the
`r1os` command is built on typer and rich) and that loads all three in every process that only wants an
HTTP client. Marked absent, httpx keeps a stub `httpx.main` that says how to install the client, and
nothing else changes; the `httpx` command itself is a separate program that never imports r1os. A node
saves rich and pygments, ~3.5 MiB (click stays: `import uvicorn` loads uvicorn's own command line).

`skip_unused_event_loops` is for node processes only (`run_node`).

(glibc's `malloc_trim(0)` after start was measured too and left out: it gave back nothing measurable,
as what start-up allocates stays in use.)
"""

from __future__ import annotations

import sys

# None in sys.modules makes `import` raise ImportError, which httpx answers with its stub (see above).
# setdefault: where httpx was imported before r1os.node, it already has its client and keeps it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def skip_unused_event_loops() -> None:
    """In a node process only: httpcore imports trio, when it is installed, to serve trio event loops; a
    node runs on asyncio (or uvloop), never on trio, and trio with its dependencies is ~3 MiB. (A process
    that also runs trio code, such as a test driving a browser, must not call this.)"""
    if "trio" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]
