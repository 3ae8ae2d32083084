"""R1FS: content-addressed file storage whose CIDs are the same as kubo's `ipfs add --cid-version=1`.

The client side (CIDs, import, encryption, the HTTP clients) loads with the package; the node service
(`R1fsService`) and its settings (`R1fsSettings`, from `r1os.node`) load on first use, so a client
pulls in no server (no fastapi, no uvicorn, no node).
"""

from typing import TYPE_CHECKING, Any

from r1os.r1fs._client import API_URL_ENV, R1fs, R1fsClient, default_api_url
from r1os.r1fs._crypto import (
    Decryptor,
    Encryptor,
    decrypt_bytes,
    encrypt_bytes,
    new_key,
    unwrap_key,
    wrap_key,
)
from r1os.r1fs._dag import CHUNK_SIZE, MAX_LINKS, Cid, parse_cid, read_file_node, verify_block
from r1os.r1fs._errors import (
    BadCid,
    BadRequest,
    BadUpload,
    BlockNotFound,
    CorruptBlock,
    R1fsError,
    StoreBusy,
    TooLarge,
)
from r1os.r1fs._exporter import read_range
from r1os.r1fs._importer import DagBuilder, ImportResult, import_bytes, import_file, import_stream
from r1os.r1fs._providers import Directory, KeyValue
from r1os.r1fs._store import BlockStore, GcResult

if TYPE_CHECKING:
    from r1os.node import R1fsSettings
    from r1os.r1fs._service import R1fsService


def __getattr__(name: str) -> Any:
    # Server-side names, imported on first use (see the module's docstring).
    if name == "R1fsService":
        from r1os.r1fs._service import R1fsService

        return R1fsService
    if name == "R1fsSettings":
        from r1os.node import R1fsSettings

        return R1fsSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "API_URL_ENV",
    "CHUNK_SIZE",
    "MAX_LINKS",
    "BadCid",
    "BadRequest",
    "BadUpload",
    "BlockNotFound",
    "BlockStore",
    "Cid",
    "CorruptBlock",
    "DagBuilder",
    "Decryptor",
    "Directory",
    "Encryptor",
    "GcResult",
    "ImportResult",
    "KeyValue",
    "R1fs",
    "R1fsClient",
    "R1fsError",
    "R1fsService",
    "R1fsSettings",
    "StoreBusy",
    "TooLarge",
    "decrypt_bytes",
    "default_api_url",
    "encrypt_bytes",
    "import_bytes",
    "import_file",
    "import_stream",
    "new_key",
    "parse_cid",
    "read_file_node",
    "read_range",
    "unwrap_key",
    "verify_block",
    "wrap_key",
]
