"""CSTORE: the network's replicated, signed, persistent key-value store.

The pure parts (ops and batches, the clock, the CRDT state) import nothing of a node: clients such as
the SDK use them without loading a server. The replica a node runs (`CStoreService`, and `MSG_BATCH`,
the type of its messages) is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from r1os.cstore._hlc import HybridClock, Timestamp
from r1os.cstore._ops import Batch, CStoreError, Limits, Op, check_namespace, decode_batch, sign_batch
from r1os.cstore._state import BUCKETS, CStoreState

if TYPE_CHECKING:
    from r1os.cstore._fanout import MSG_BATCH
    from r1os.cstore._service import CStoreService, Watcher

_LAZY = {
    "CStoreService": "r1os.cstore._service",
    "Watcher": "r1os.cstore._service",
    "MSG_BATCH": "r1os.cstore._fanout",
}


def __getattr__(name: str) -> Any:
    # The service module imports the node (FastAPI, uvicorn): only a node needs it.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "BUCKETS",
    "MSG_BATCH",
    "Batch",
    "CStoreError",
    "CStoreService",
    "CStoreState",
    "HybridClock",
    "Limits",
    "Op",
    "Timestamp",
    "Watcher",
    "check_namespace",
    "decode_batch",
    "sign_batch",
]
