"""The node daemon and its plugin seam."""

from r1os.node._config import DEFAULT_BROKER, DEFAULT_HTTP, NodeConfig
from r1os.node._daemon import HEARTBEAT, PROTOCOL_TYPES, Node, read_node_state
from r1os.node._netmap import Heartbeat, NetworkMap, Peer
from r1os.node._resources import Resources, collect_resources
from r1os.node._service import MessageHandler, Service, ServiceContext, cancel_tasks

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_HTTP",
    "HEARTBEAT",
    "PROTOCOL_TYPES",
    "Heartbeat",
    "MessageHandler",
    "NetworkMap",
    "Node",
    "NodeConfig",
    "Peer",
    "Resources",
    "Service",
    "ServiceContext",
    "cancel_tasks",
    "collect_resources",
    "read_node_state",
]
