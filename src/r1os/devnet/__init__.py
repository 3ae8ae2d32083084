"""A whole local r1os network in one command.

`Devnet` (which starts nodes, so it loads the node) is imported on first use only: the CLI reads the
devnet record (`load_state`: which node listens where, with which home) on every command that talks
to a devnet node, and that should not cost loading a node's HTTP server.
"""

from typing import TYPE_CHECKING, Any

from r1os.devnet._state import DevnetNode, DevnetState, load_state

if TYPE_CHECKING:
    from r1os.devnet._manager import Devnet


def __getattr__(name: str) -> Any:
    if name == "Devnet":
        from r1os.devnet._manager import Devnet

        return Devnet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Devnet", "DevnetNode", "DevnetState", "load_state"]
