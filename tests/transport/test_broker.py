"""The embedded broker: free port, admission hook, restart, and running as its own process."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from r1os.errors import TransportError
from r1os.transport import EmbeddedBroker, MosquittoBroker, MqttTransport, heartbeat_topic

from .conftest import HAVE_MOSQUITTO, Collector


async def test_port_zero_exposes_the_bound_port() -> None:
    async with EmbeddedBroker(port=0) as broker:
        assert broker.port > 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        # Same port again: a clear error, not a traceback from amqtt.
        with pytest.raises(TransportError, match="cannot start the embedded broker") as info:
            await EmbeddedBroker(port=broker.port).start()
        assert info.value.hint and "--port" in info.value.hint
    assert not broker.running
    await broker.stop()  # idempotent


async def test_authorize_hook_admits_and_refuses(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[tuple[str, str | None, str | None]] = []

    async def authorize(client_id: str, username: str | None, password: str | None) -> bool:
        asked.append((client_id, username, password))
        return username == "admitted"

    async with EmbeddedBroker(port=0, authorize=authorize) as broker:
        good = MqttTransport(broker.url, "good", username="admitted", password="pw")
        bad = MqttTransport(broker.url, "bad", username="stranger")
        col = Collector()
        good.subscribe(heartbeat_topic("net"), col)
        async with good, bad:
            await good.wait_connected(10)
            with pytest.raises(TransportError, match="not connected"):
                await bad.wait_connected(1.0)
            await good.publish(heartbeat_topic("net"), b"hi")
            await col.wait_for(1)
        assert ("good", "admitted", "pw") in asked
        assert any(cid == "bad" for cid, _, _ in asked)
    assert "refused client 'bad'" in caplog.text


async def test_authorize_hook_that_raises_refuses() -> None:
    def authorize(client_id: str, username: str | None, password: str | None) -> bool:
        raise RuntimeError("allow-list unavailable")

    async with EmbeddedBroker(port=0, authorize=authorize) as broker:
        async with MqttTransport(broker.url, "n") as t:
            with pytest.raises(TransportError, match="not connected"):
                await t.wait_connected(1.0)


def test_bad_port_is_refused() -> None:
    with pytest.raises(TransportError, match="invalid broker port"):
        EmbeddedBroker(port=70000)


async def _url_from(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    url = line.decode().strip()
    assert url.startswith("mqtt://127.0.0.1:"), (url, await _stderr(proc))
    return url


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        return ""
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode()


@pytest.mark.parametrize(
    "argv",
    [
        # the CLI group, as `r1os broker start --port 0` runs it
        ["-c", "import sys; from r1os.cli.broker import app; app(sys.argv[1:])", "start"],
        # the module entry point, for a broker with no CLI around it
        ["-m", "r1os.transport.broker"],
    ],
    ids=["cli", "module"],
)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_standalone_process_serves_and_stops_cleanly(argv: list[str], sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = await _url_from(proc)
        col = Collector()
        async with MqttTransport(url, "client") as t:
            await t.subscribe("r1/net/b/+", col).ready(10)
            await t.publish("r1/net/b/x", b"through a separate broker process")
            await col.wait_for(1)
        proc.send_signal(sig)
        code = await asyncio.wait_for(proc.wait(), 20)
        assert code == 0, await _stderr(proc)
        assert "Traceback" not in await _stderr(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_port_in_use_gives_one_line_error() -> None:
    async with EmbeddedBroker(port=0) as broker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from r1os.cli.broker import app; app(sys.argv[1:])",
            "start",
            "--port",
            str(broker.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    text = err.decode()
    assert "error:" in text and "cannot start the embedded broker" in text
    assert "Traceback" not in text


@pytest.mark.mosquitto
@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto binary not installed")
async def test_mosquitto_on_a_busy_port_says_why() -> None:
    async with EmbeddedBroker(port=0) as busy:
        m = MosquittoBroker(port=busy.port)
        with pytest.raises(TransportError, match="mosquitto did not start") as info:
            await m.start()
        assert "Address already in use" in str(info.value)
        assert not m.running
        m.cleanup()


@pytest.mark.mosquitto
@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto binary not installed")
async def test_mosquitto_restarts_on_the_same_port() -> None:
    async with MosquittoBroker() as m:
        port = m.port
        await m.stop()
        assert not m.running
        await m.start()
        assert m.running and m.port == port
        async with MqttTransport(m.url, "n") as t:
            await t.wait_connected(10)


def test_missing_mosquitto_binary_is_a_clear_error() -> None:
    with pytest.raises(TransportError, match="mosquitto not found") as info:
        MosquittoBroker(binary="/nonexistent/mosquitto")
    assert info.value.hint and "apt-get install mosquitto" in info.value.hint


@pytest.mark.parametrize("clean_session", [True, False])
async def test_a_refused_connect_with_a_victims_client_id_leaves_the_victim_connected(
    clean_session: bool,
) -> None:
    """The attack: client ids are public, so an outsider sends CONNECT with the victim's id and a wrong
    password. The broker must refuse it without dropping the victim's session or subscriptions."""
    import aiomqtt

    def authorize(client_id: str, username: str | None, password: str | None) -> bool:
        return password == f"key-of-{client_id}"

    async with EmbeddedBroker(port=0, authorize=authorize) as broker:
        victim = MqttTransport(broker.url, "victim", username="victim", password="key-of-victim")
        sender = MqttTransport(broker.url, "sender", username="sender", password="key-of-sender")
        got = Collector()
        victim.subscribe("r1/net/#", got)
        async with victim, sender:
            await victim.wait_connected(10)
            await sender.wait_connected(10)
            await sender.publish("r1/net/b/x", b"before")
            await got.wait_for(1)
            for _ in range(3):
                with pytest.raises(aiomqtt.MqttError):
                    async with aiomqtt.Client(
                        "127.0.0.1", broker.port, identifier="victim", username="victim",
                        password="guessed", clean_session=clean_session, timeout=5,
                    ):  # fmt: skip
                        pass
            await sender.publish("r1/net/b/x", b"after")
            await got.wait_for(2)
            assert got.payloads == [b"before", b"after"]
            assert victim.connected and victim.stats.reconnects == 0
