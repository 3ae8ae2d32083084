"""The node daemon and its plugin seam."""

# First, before any module imports httpx: keeps httpx's command-line client out of node processes.
from r1os.node import _memory  # noqa: F401

# isort: split
from r1os.node._api import ERROR_RESPONSES, ErrorAnswer, install_error_handlers
from r1os.node._assembly import ENTRY_POINT_GROUP, ServicePlugin, build_services, installed_plugins
from r1os.node._auth import ApiAuth, Caller, Forbidden, Unauthenticated
from r1os.node._config import (
    DEFAULT_BROKER,
    DEFAULT_HTTP,
    CStoreSettings,
    DeeploySettings,
    EdilSettings,
    NodeConfig,
    OracleSyncSettings,
    R1fsSettings,
)
from r1os.node._daemon import HEARTBEAT, PROTOCOL_TYPES, Node, read_node_state
from r1os.node._netmap import Heartbeat, NetworkMap, Peer
from r1os.node._resources import Resources, collect_resources
from r1os.node._run import config_from, run_node, setup_logging
from r1os.node._service import MessageHandler, Service, ServiceContext, cancel_tasks, woken

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_HTTP",
    "ENTRY_POINT_GROUP",
    "ERROR_RESPONSES",
    "ErrorAnswer",
    "ApiAuth",
    "Caller",
    "Forbidden",
    "Unauthenticated",
    "HEARTBEAT",
    "PROTOCOL_TYPES",
    "CStoreSettings",
    "DeeploySettings",
    "EdilSettings",
    "Heartbeat",
    "MessageHandler",
    "NetworkMap",
    "Node",
    "NodeConfig",
    "OracleSyncSettings",
    "Peer",
    "R1fsSettings",
    "Resources",
    "Service",
    "ServiceContext",
    "ServicePlugin",
    "build_services",
    "cancel_tasks",
    "collect_resources",
    "config_from",
    "install_error_handlers",
    "installed_plugins",
    "read_node_state",
    "run_node",
    "setup_logging",
    "woken",
]
