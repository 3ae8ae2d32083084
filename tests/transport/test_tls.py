"""mqtts:// against both brokers, with a throw-away self-signed certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from r1os.errors import TransportError
from r1os.transport import MosquittoBroker, MqttTransport, heartbeat_topic
from tests._certs import self_signed

from .conftest import BROKER_KINDS, Collector, new_broker


@pytest.mark.parametrize("kind", BROKER_KINDS)
async def test_mqtts_round_trip(kind: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    broker = new_broker(kind, certfile=cert, keyfile=key)
    await broker.start()
    try:
        assert broker.url.startswith("mqtts://")
        trusting = ssl.create_default_context(cafile=str(cert))
        col = Collector()
        async with MqttTransport(broker.url, "tls-node", tls_context=trusting) as t:
            t.subscribe(heartbeat_topic("net"), col)
            await t.wait_connected(10)
            await t.publish(heartbeat_topic("net"), b"over tls", qos=1)
            await col.wait_for(1)
        assert col.payloads == [b"over tls"]

        # Without trusting the certificate (system CAs only) the transport never connects.
        async with MqttTransport(broker.url, "untrusting") as t:
            with pytest.raises(TransportError, match="not connected"):
                await t.wait_connected(1.0)
    finally:
        await broker.stop()
        if isinstance(broker, MosquittoBroker):
            broker.cleanup()
