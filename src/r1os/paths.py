"""Default locations on disk: everything r1os keeps lives under one home folder."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "R1OS_HOME"
#: The file in a node's home that holds its operator's API token (the node writes it, local clients read it).
API_TOKEN_FILE = "api-token"


def r1os_home() -> Path:
    """`$R1OS_HOME`, or `~/.r1os`."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".r1os")


def default_key_path() -> Path:
    return r1os_home() / "keys" / "default.json"


def default_node_home(network: str, name: str = "node") -> Path:
    return r1os_home() / network / name


def default_devnet_dir() -> Path:
    return r1os_home() / "devnet"
