"""Pure helpers: topic layout, filter coverage, reconnect backoff (no broker needed)."""

from __future__ import annotations

import logging

import pytest

from r1os.transport.mqtt import covers
from r1os.transport.topics import (
    TopicError,
    all_broadcasts_pattern,
    broadcast_topic,
    heartbeat_topic,
    inbox_topic,
    network_pattern,
    parse_topic,
)

ADDR = "0x52908400098527886E0F7030069857D2E4169EE7"


def test_layout() -> None:
    assert broadcast_topic("devnet", "gossip") == "r1/devnet/b/gossip"
    assert heartbeat_topic("devnet") == "r1/devnet/b/hb"
    assert inbox_topic("devnet", ADDR) == f"r1/devnet/n/{ADDR.lower()}"
    assert inbox_topic("devnet", ADDR.lower()) == inbox_topic("devnet", ADDR)
    assert all_broadcasts_pattern("devnet") == "r1/devnet/b/+"
    assert network_pattern("devnet") == "r1/devnet/#"


def test_parse_topic_round_trip() -> None:
    p = parse_topic(inbox_topic("main-net.v2", ADDR))
    assert (p.network, p.kind, p.name) == ("main-net.v2", "inbox", ADDR.lower())
    p = parse_topic(heartbeat_topic("devnet"))
    assert (p.network, p.kind, p.name) == ("devnet", "broadcast", "hb")
    for foreign in ("r1/devnet/x/hb", "other/devnet/b/hb", "r1/devnet/b", "r1/devnet/b/hb/more"):
        with pytest.raises(TopicError, match="not in the r1 layout"):
            parse_topic(foreign)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "net#", "with space", "-leading", "x" * 65, None, 3])
def test_bad_names_are_refused_clearly(bad: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="r1os.transport.topics"):
        with pytest.raises(TopicError, match="invalid network name"):
            broadcast_topic(bad, "hb")  # type: ignore[arg-type]
        with pytest.raises(TopicError, match="invalid channel"):
            broadcast_topic("devnet", bad)  # type: ignore[arg-type]
    assert "invalid" in caplog.text


@pytest.mark.parametrize("bad", ["", "0x123", ADDR[2:], ADDR + "0", "0x" + "g" * 40, "r1/#"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="invalid node address"):
        inbox_topic("devnet", bad)


@pytest.mark.parametrize(
    ("broad", "narrow", "expected"),
    [
        ("r1/#", "r1/net/b/hb", True),
        ("r1/#", "r1", True),
        ("#", "anything/at/all", True),
        ("r1/net/b/+", "r1/net/b/hb", True),
        ("r1/net/b/+", "r1/net/b/+", True),
        ("r1/+/b/+", "r1/net/b/hb", True),
        ("r1/net/b/hb", "r1/net/b/+", False),
        ("r1/net/b/+", "r1/net/b/#", False),
        ("r1/net/b/+", "r1/net/b", False),
        ("r1/net/b", "r1/net/b/hb", False),
        ("r1/+/n/x", "r1/net/#", False),
        ("r1/net/#", "r1/+/n/x", False),
    ],
)
def test_covers(broad: str, narrow: str, expected: bool) -> None:
    assert covers(broad, narrow) is expected


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    import itertools
    import random

    from r1os.transport.mqtt import backoff_delays

    waits = list(itertools.islice(backoff_delays(0.2, 10.0, random.Random(7)), 12))
    nominal = [min(0.2 * 2**i, 10.0) for i in range(12)]  # 0.2, 0.4, ... 6.4, 10, 10, ...
    assert all(n / 2 <= w <= n for w, n in zip(waits, nominal, strict=True))
    assert nominal[6] == 10.0 and nominal[5] == 6.4
    assert len(set(waits[6:])) == len(waits[6:])  # jittered, not a fixed beat
