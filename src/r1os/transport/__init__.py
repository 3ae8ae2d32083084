"""Transport: move opaque (already signed) bytes between nodes over an MQTT broker.

`Transport` is the seam; `MqttTransport` the implementation for any MQTT 3.1.1 broker;
`EmbeddedBroker` runs amqtt inside the process; `MosquittoBroker` runs a real mosquitto;
`MemoryTransport` carries messages inside one process (tests; no broker); `BridgeSpec` and
`mosquitto_config` configure bridged mosquitto brokers; `MqttGate` checks each client's CONNECT in
front of an external broker.
Topic names come from `r1os.transport.topics`.
"""

from typing import TYPE_CHECKING, Any

from r1os.transport.base import (
    DEFAULT_QUEUE_LIMIT,
    Handler,
    Subscription,
    Transport,
    TransportStats,
)
from r1os.transport.gate import MqttGate
from r1os.transport.memory import MemoryHub, MemoryTransport
from r1os.transport.mosquitto import (
    BridgeSpec,
    MosquittoBroker,
    find_mosquitto,
    mosquitto_config,
    write_password_file,
)
from r1os.transport.mqtt import MqttTransport, parse_broker_url
from r1os.transport.topics import (
    HEARTBEAT_CHANNEL,
    TopicError,
    broadcast_topic,
    heartbeat_topic,
    inbox_topic,
    parse_topic,
    topic_matches,
)

if TYPE_CHECKING:
    from r1os.transport.broker import Authorize, EmbeddedBroker


def __getattr__(name: str) -> Any:
    # The broker module is imported on first use only: nodes need no amqtt, and
    # `python -m r1os.transport.broker` then runs without a second copy in sys.modules.
    if name in ("EmbeddedBroker", "Authorize"):
        from r1os.transport import broker

        return getattr(broker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "HEARTBEAT_CHANNEL",
    "Authorize",
    "BridgeSpec",
    "EmbeddedBroker",
    "Handler",
    "MemoryHub",
    "MemoryTransport",
    "MosquittoBroker",
    "MqttGate",
    "MqttTransport",
    "Subscription",
    "TopicError",
    "Transport",
    "TransportStats",
    "broadcast_topic",
    "find_mosquitto",
    "heartbeat_topic",
    "inbox_topic",
    "mosquitto_config",
    "parse_broker_url",
    "parse_topic",
    "topic_matches",
    "write_password_file",
]
