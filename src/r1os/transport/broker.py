"""An MQTT broker inside the r1os process (amqtt 0.12.1), for devnets and single-machine setups.

Production networks point nodes at an external broker (mosquitto, EMQX); the embedded one exists
so that `r1os devnet up` and the tests need nothing installed. It binds to 127.0.0.1 by default.

Admission seam: `authorize(client_id, username, password) -> bool` (sync or async) is asked for
every CONNECT; the default admits everyone. dAuth can plug an allow-list of admitted node
addresses in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id

from r1os.errors import TransportError
from r1os.transport.base import StartStop

log = logging.getLogger("r1os.transport.broker")  # the same name when run with -m

Authorize = Callable[[str, str | None, str | None], bool | Awaitable[bool]]
"""`(client_id, username, password) -> bool`: may this client connect?"""


class AuthorizePlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt auth plugin that defers to the `authorize` callable given in its config."""

    @dataclass
    class Config:
        authorize: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        authorize = self.config.authorize
        if authorize is None:
            return True
        client_id = session.client_id or ""
        try:
            verdict = authorize(client_id, session.username, session.password)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:
            log.exception("broker: authorize() failed for client %r; refusing it", client_id)
            return False
        if not verdict:
            log.warning("broker: refused client %r (username %r)", client_id, session.username)
        return bool(verdict)


class _GuardedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker with the login checked before a CONNECT touches any session.

    amqtt 0.12.1 reads a CONNECT, then deletes (clean session) or takes over the session of that client
    id, and only then asks the auth plugins; a refused CONNECT carrying someone else's client id (client
    ids are public: `r1os-<address>`) so dropped the victim's session and subscriptions while the victim's
    socket stayed open: it went on publishing and receiving nothing. Here the plugins are asked first
    and a refused client is answered "not authorised" and closed without reaching the session table;
    only a client that proves the id's key (the dAuth gate binds client id to address) can take over.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # sessions checked in _initialize_client_session, by id (amqtt sessions are not hashable), held
        # until _handle_client_session asks about them right after (so the id cannot be reused meanwhile)
        self._checked: dict[int, Session] = {}

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(f"invalid CONNECT from {remote_address}:{remote_port}: {exc}") from exc
        except NoDataError as exc:
            raise AMQTTError(f"no CONNECT from {remote_address}:{remote_port}: {exc}") from exc
        if not session.client_id:
            if not session.clean_session:
                await writer.close()  # MQTT 3.1.1 (3.1.3.1): an empty id needs a clean session
                raise MQTTError("empty client id without clean session")
            session.client_id = gen_client_id()
        if not await super()._authenticate(session, None):
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"client {session.client_id[:80]!r} refused before touching any session")
        if session.clean_session:
            await self._delete_session(session.client_id)
            session.parent = 0
        elif session.client_id in self._sessions:
            # a persistent session resumed by its proven owner: keep its subscriptions and queue
            old, _ = self._sessions[session.client_id]
            for attr in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username",
                         "password"):  # fmt: skip
                setattr(old, attr, getattr(session, attr))
            session = old
            session.parent = 1
        else:
            session.parent = 0
        self._checked[id(session)] = session
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _authenticate(self, session: Session, listener: ListenerConfig | None) -> bool:
        if self._checked.pop(id(session), None) is session:
            return True  # checked in _initialize_client_session, before the session table was touched
        result: bool = await super()._authenticate(session, listener)
        return result


class _DropStartupTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


class EmbeddedBroker(StartStop):
    """amqtt's broker on one TCP listener; `port=0` picks a free port (see `.port` after start).

    `stop()` then `start()` again reuses the same port, so clients can be shown a broker restart.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        authorize: Authorize | None = None,
        max_connections: int = 0,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        quiet: bool = True,
    ) -> None:
        if not 0 <= port <= 65535:
            raise TransportError(f"invalid broker port {port}: must be 0-65535")
        self.host = host
        self.port = port
        self.authorize = authorize
        self.max_connections = max_connections
        if (certfile is None) != (keyfile is None):
            raise TransportError("TLS needs both certfile and keyfile")
        self.certfile = Path(certfile) if certfile else None
        self.keyfile = Path(keyfile) if keyfile else None
        self._broker: Broker | None = None
        if quiet:
            # amqtt logs every connection at INFO; keep that out of node logs unless asked.
            for name in ("amqtt", "transitions"):  # transitions: amqtt's state machines
                noisy = logging.getLogger(name)
                if noisy.level == logging.NOTSET:
                    noisy.setLevel(logging.WARNING)
            # It also logs a full traceback when a client vanishes mid-read; nothing to act on.
            logging.getLogger("amqtt.mqtt.protocol.handler").setLevel(logging.CRITICAL)
            # A failed start is raised as a TransportError with a hint; no traceback needed.
            broker_log = logging.getLogger("amqtt.broker")
            if not any(isinstance(f, _DropStartupTraceback) for f in broker_log.filters):
                broker_log.addFilter(_DropStartupTraceback())

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.certfile else 'mqtt'}://{host}:{self.port}"

    def config(self) -> dict[str, Any]:
        """The amqtt config dict: one TCP listener, our auth plugin, no $SYS or packet logging."""
        listener: dict[str, Any] = {
            "type": "tcp",
            "bind": f"{self.host}:{self.port}",
            "max_connections": self.max_connections,
        }
        if self.certfile and self.keyfile:
            listener |= {"ssl": True, "certfile": str(self.certfile), "keyfile": str(self.keyfile)}
        return {
            "listeners": {"default": listener},
            "plugins": {
                f"{__name__}.AuthorizePlugin": {"authorize": self.authorize},
            },
        }

    async def start(self) -> None:
        if self._broker is not None:
            return
        try:
            broker = _GuardedBroker(self.config())
            await broker.start()
        except Exception as exc:  # amqtt wraps OSError (port in use) in BrokerError
            raise TransportError(
                f"cannot start the embedded broker on {self.host}:{self.port}: {exc}",
                hint="pick another --port (0 picks a free one) or stop what uses this one",
            ) from exc
        self._broker = broker
        if self.port == 0:
            self.port = _bound_port(broker)
        log.info("embedded broker listening on %s", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            await broker.shutdown()
        except Exception:
            log.exception("embedded broker: error during shutdown")
        log.info("embedded broker on %s stopped", self.url)


def _bound_port(broker: Broker) -> int:
    # amqtt has no public accessor for the listening socket; read it from the server it made.
    try:
        server = broker._servers["default"].instance
        sockets = server.sockets
        return int(sockets[0].getsockname()[1])
    except (AttributeError, KeyError, IndexError) as exc:
        raise TransportError(f"cannot find the port amqtt bound: {exc}") from exc


async def serve(
    host: str = "127.0.0.1",
    port: int = 1883,
    *,
    authorize: Authorize | None = None,
    on_ready: Callable[[EmbeddedBroker], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run an embedded broker until SIGINT/SIGTERM (or `stop` is set), then shut it down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with EmbeddedBroker(host, port, authorize=authorize) as broker:
            if on_ready is not None:
                on_ready(broker)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> None:
    """`python -m r1os.transport.broker [--host H] [--port P]`: a broker as its own process."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the r1os embedded MQTT broker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(broker: EmbeddedBroker) -> None:
        print(broker.url, flush=True)

    try:
        asyncio.run(serve(args.host, args.port, on_ready=ready))
    except TransportError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
