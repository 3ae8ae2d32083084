"""Transport: move opaque (already signed) bytes between nodes over an MQTT broker.

`Transport` is the seam; `MqttTransport` the implementation for any MQTT 3.1.1 broker;
`EmbeddedBroker` runs amqtt inside the process; `MosquittoBroker` runs a real mosquitto.
Topic names come from `r1os.transport.topics`.
"""

from r1os.transport.base import (
    DEFAULT_QUEUE_LIMIT,
    Handler,
    Subscription,
    Transport,
    TransportStats,
)
from r1os.transport.broker import Authorize, EmbeddedBroker
from r1os.transport.mosquitto import MosquittoBroker, find_mosquitto
from r1os.transport.mqtt import MqttTransport, parse_broker_url
from r1os.transport.topics import (
    HEARTBEAT_CHANNEL,
    TopicError,
    broadcast_topic,
    heartbeat_topic,
    inbox_topic,
    parse_topic,
)

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "HEARTBEAT_CHANNEL",
    "Authorize",
    "EmbeddedBroker",
    "Handler",
    "MosquittoBroker",
    "MqttTransport",
    "Subscription",
    "TopicError",
    "Transport",
    "TransportStats",
    "broadcast_topic",
    "find_mosquitto",
    "heartbeat_topic",
    "inbox_topic",
    "parse_broker_url",
    "parse_topic",
]
