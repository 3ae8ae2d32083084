"""mqtts:// against both brokers, with a throw-away self-signed certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from r1os.errors import TransportError
from r1os.transport import MosquittoBroker, MqttTransport, heartbeat_topic

from .conftest import BROKER_KINDS, Collector, new_broker


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r1os test broker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.mark.parametrize("kind", BROKER_KINDS)
async def test_mqtts_round_trip(kind: str, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
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
