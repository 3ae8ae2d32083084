"""What a node process keeps in memory, paid once per node: dozens of nodes share one machine on a devnet.

Imported first by `r1os.node` (before anything imports httpx), which marks httpx's command-line client as
absent: `import httpx` imports `httpx._main` when click, rich and pygments are installed (they are: the
`r1os` command is built on typer and rich) and that loads all three in every process that only wants an
HTTP client. Marked absent, httpx keeps a stub `httpx.main` that says how to install the client, and
nothing else changes; the `httpx` command itself is a separate program that never imports r1os. A node
saves rich and pygments, ~3.5 MiB (click stays: `import uvicorn` loads uvicorn's own command line).

`skip_unused_modules` and `trim_heap` are for node processes only (`run_node`, `Node.start`).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("r1os.node.memory")

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


def trim_heap() -> int:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim(0)`); returns 1 if memory
    was released, 0 if none was or this is not glibc. Start-up allocates and frees a lot (imports,
    building the app and its schemas); glibc keeps freed pages inside its heaps for reuse. Measured on
    an idle devnet node it gives back little (10 nodes: RSS -0.1, PSS -0.6 MiB, within the noise): what
    start-up allocates mostly stays in use."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes  # here: only a node that trims needs it

    try:
        # the process's own symbols, the C library's among them (no library search, no subprocess)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return 0
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    released = int(trim(0))
    log.debug("malloc_trim released memory: %s", bool(released))
    return released
