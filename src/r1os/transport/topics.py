"""Topic layout: everything of one network lives under `r1/<network>/`.

- `r1/<network>/b/<channel>`: broadcast channels every node may listen to (heartbeats use "hb").
- `r1/<network>/o/<channel>`: channels only the oracles listen to (heartbeats, when the network runs
  with `heartbeat_mode = "oracle"`: edge nodes then learn the network from the map the oracles
  publish on the broadcast channel "nm").
- `r1/<network>/n/<address>`: one node's inbox for direct messages (address in lower case, so
  EIP-55 and lower-case spellings of the same address reach the same inbox).

Names are checked here so a typo or a stray `/`, `+` or `#` fails loudly instead of silently
publishing to, or subscribing to, the wrong place.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from r1os.errors import TransportError

log = logging.getLogger(__name__)

ROOT = "r1"
BROADCAST = "b"
INBOX = "n"
ORACLE = "o"
HEARTBEAT_CHANNEL = "hb"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


class TopicError(TransportError):
    """A network name, channel, address or topic does not fit the topic layout."""


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        log.warning("invalid %s for a topic: %r", kind, value)
        raise TopicError(
            f"invalid {kind} {value!r}: use 1-64 letters, digits, '_', '.', '-' "
            "(no '/', '+', '#' or spaces), starting with a letter or digit"
        )
    return value


def validate_network(network: str) -> str:
    """Return `network` if it is a valid network name, else raise `TopicError`."""
    return _check_name("network name", network)


def validate_channel(channel: str) -> str:
    """Return `channel` if it is a valid broadcast channel name, else raise `TopicError`."""
    return _check_name("channel", channel)


def normalize_address(address: str) -> str:
    """Return the lower-case form of a `0x` + 40 hex node address, else raise `TopicError`."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        log.warning("invalid node address for a topic: %r", address)
        raise TopicError(f"invalid node address {address!r}: expected 0x followed by 40 hex digits")
    return address.lower()


def network_prefix(network: str) -> str:
    """`r1/<network>`: the root of every topic of one network."""
    return f"{ROOT}/{validate_network(network)}"


def broadcast_topic(network: str, channel: str) -> str:
    """`r1/<network>/b/<channel>`: where every node of the network may listen."""
    return f"{network_prefix(network)}/{BROADCAST}/{validate_channel(channel)}"


def heartbeat_topic(network: str) -> str:
    """The broadcast topic of heartbeats."""
    return broadcast_topic(network, HEARTBEAT_CHANNEL)


def oracle_topic(network: str, channel: str) -> str:
    """`r1/<network>/o/<channel>`: where only the oracles listen."""
    return f"{network_prefix(network)}/{ORACLE}/{validate_channel(channel)}"


def all_oracle_channels_pattern(network: str) -> str:
    """A subscription pattern matching every oracle-only channel of a network."""
    return f"{network_prefix(network)}/{ORACLE}/+"


def inbox_topic(network: str, address: str) -> str:
    """`r1/<network>/n/<address lower>`: direct messages to one node."""
    return f"{network_prefix(network)}/{INBOX}/{normalize_address(address)}"


def all_broadcasts_pattern(network: str) -> str:
    """A subscription pattern matching every broadcast channel of a network."""
    return f"{network_prefix(network)}/{BROADCAST}/+"


def network_pattern(network: str) -> str:
    """A subscription pattern matching every topic of a network."""
    return f"{network_prefix(network)}/#"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic split into its parts by `parse_topic`."""

    network: str
    kind: Literal["broadcast", "oracle", "inbox"]
    name: str
    """The channel for a broadcast or oracle channel, the lower-case address for an inbox."""


def parse_topic(topic: str) -> ParsedTopic:
    """Split an `r1/...` topic into network, kind and channel/address (`TopicError` if foreign)."""
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) != 4 or parts[0] != ROOT or parts[2] not in (BROADCAST, ORACLE, INBOX):
        raise TopicError(
            f"topic {topic!r} is not in the r1 layout "
            "(r1/<network>/b/<channel>, r1/<network>/o/<channel> or r1/<network>/n/<address>)"
        )
    network = validate_network(parts[1])
    if parts[2] == BROADCAST:
        return ParsedTopic(network, "broadcast", validate_channel(parts[3]))
    if parts[2] == ORACLE:
        return ParsedTopic(network, "oracle", validate_channel(parts[3]))
    return ParsedTopic(network, "inbox", normalize_address(parts[3]))


def topic_matches(pattern: str, topic: str) -> bool:
    """True if `topic` (no wildcards) matches the MQTT filter `pattern` (`+` one level, `#` the rest)."""
    p_levels, t_levels = pattern.split("/"), topic.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels) or (p != "+" and p != t_levels[i]):
            return False
    return len(p_levels) == len(t_levels)
