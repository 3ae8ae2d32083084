"""CSTORE: the network's replicated, signed, persistent key-value store."""

from r1os.cstore._hlc import HybridClock, Timestamp
from r1os.cstore._ops import Batch, CStoreError, Limits, Op, check_namespace, decode_batch, sign_batch
from r1os.cstore._service import MSG_BATCH, CStoreService
from r1os.cstore._state import BUCKETS, CStoreState

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
    "check_namespace",
    "decode_batch",
    "sign_batch",
]
