"""An admission gate in front of an external MQTT broker (mosquitto): checks each client's CONNECT.

mosquitto cannot ask dAuth whether a node is admitted (its password file needs every password in
advance; a node's password is its own signature). `MqttGate` listens where the nodes connect, reads
the first packet of each connection (the MQTT CONNECT, at most `MAX_CONNECT_BYTES`, within
`connect_timeout`), asks `authorize(client_id, username, password)` (sync or async; what
`r1os.dauth.broker.BrokerGate.authorize` is), and then either answers CONNACK "not authorized" and
closes, or opens a connection to the broker (a listener only the gate reaches, e.g. on 127.0.0.1),
forwards the CONNECT and copies bytes both ways. With `allowed(username)` it re-checks every
`sweep_s` seconds and closes the connections of clients no longer admitted.

It counts bytes per client in both directions (`GateStats`), which is what a broker-side traffic
measure needs. Everything after CONNECT is passed through unparsed: the messages themselves are
checked by every receiving node (signatures, dAuth's admitted set).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from r1os.errors import TransportError

log = logging.getLogger("r1os.transport.gate")

MAX_CONNECT_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
MAX_PENDING = 256
"""Connections still before their CONNECT (or its check); more are closed at once."""
Authorize = Callable[[str, str | None, bytes | None], bool | Awaitable[bool]]


class BadConnect(ValueError):
    """The first packet is not a well-formed MQTT CONNECT."""


@dataclass(frozen=True)
class ConnectInfo:
    level: int  # 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0
    client_id: str
    username: str | None
    password: bytes | None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(data):
            raise BadConnect("truncated length")
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise BadConnect("length field longer than 4 bytes")


def packet_length(head: bytes) -> int | None:
    """Total bytes of the packet starting `head` (fixed header included), or None if `head` is too
    short to tell yet. Raises BadConnect if it is not a CONNECT or is larger than allowed."""
    if not head:
        return None
    if head[0] != 0x10:
        raise BadConnect(f"first packet type 0x{head[0]:02x} is not CONNECT")
    try:
        remaining, pos = _varint(head, 1)
    except BadConnect as exc:
        if "truncated" in str(exc) and len(head) < 5:
            return None
        raise
    total = pos + remaining
    if total > MAX_CONNECT_BYTES:
        raise BadConnect(f"CONNECT of {total} bytes exceeds {MAX_CONNECT_BYTES}")
    return total


def parse_connect(packet: bytes) -> ConnectInfo:
    """Client id, username and password of a whole CONNECT packet; BadConnect if malformed."""
    total = packet_length(packet)
    if total is None or total != len(packet):
        raise BadConnect("truncated CONNECT")
    _, pos = _varint(packet, 1)

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(packet):
            raise BadConnect("truncated CONNECT")
        out = packet[pos : pos + n]
        pos += n
        return out

    def field16() -> bytes:
        return take(int.from_bytes(take(2), "big"))

    name = field16()
    if name not in (b"MQTT", b"MQIsdp"):
        raise BadConnect(f"protocol name {name[:10]!r}")
    level = take(1)[0]
    if level not in (3, 4, 5):
        raise BadConnect(f"protocol level {level}")
    flags = take(1)[0]
    take(2)  # keepalive
    if level == 5:
        props, pos = _varint(packet, pos)
        take(props)
    try:
        client_id = field16().decode()
        if flags & 0x04:  # will: (v5 properties,) topic, message
            if level == 5:
                props, pos = _varint(packet, pos)
                take(props)
            field16()
            field16()
        username = field16().decode() if flags & 0x80 else None
        password = field16() if flags & 0x40 else None
    except UnicodeDecodeError:
        raise BadConnect("client id or username is not UTF-8") from None
    return ConnectInfo(level, client_id, username, password)


def connack_refused(level: int) -> bytes:
    """CONNACK "not authorized" in the client's protocol version."""
    return b"\x20\x03\x00\x87\x00" if level == 5 else b"\x20\x02\x00\x05"


@dataclass
class GateStats:
    accepted: int = 0
    refused: int = 0
    malformed: int = 0
    closed_revoked: int = 0
    bytes_from_clients: dict[str, int] = field(default_factory=dict)  # per username (or client id)
    bytes_to_clients: dict[str, int] = field(default_factory=dict)


class MqttGate:
    """TCP front of a broker that admits a client only if `authorize` accepts its CONNECT;
    `upstream` is (host, port), or the path of the broker's Unix socket."""

    def __init__(
        self,
        upstream: tuple[str, int] | str,
        authorize: Authorize,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed: Callable[[str | None], bool] | None = None,
        sweep_s: float = 5.0,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.upstream = upstream
        self.authorize = authorize
        self.host = host
        self.port = port
        self.allowed = allowed
        self.sweep_s = sweep_s
        self.connect_timeout = connect_timeout
        self.max_pending = max_pending
        self._pending = 0
        self.stats = GateStats()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._live: dict[asyncio.StreamWriter, str | None] = {}  # client writer -> username

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._client, self.host, self.port)
        except OSError as exc:
            raise TransportError(f"the gate cannot listen on {self.host}:{self.port}: {exc}",
                                 hint="is the port already in use?") from None  # fmt: skip
        self.port = int(self._server.sockets[0].getsockname()[1])
        if self.allowed is not None:
            self._sweeper = asyncio.create_task(self._sweep())
        log.info("MQTT gate on %s in front of %s", self.url, self._upstream_text)

    @property
    def _upstream_text(self) -> str:
        if isinstance(self.upstream, str):
            return self.upstream
        return f"{self.upstream[0]}:{self.upstream[1]}"

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for w in list(self._live):
                w.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MqttGate:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _login(
        self, reader: asyncio.StreamReader, peer: object
    ) -> tuple[bool, ConnectInfo | None, bytes]:
        """Read and check the CONNECT: (admitted, the CONNECT or None if malformed, its bytes)."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                data = await self._read_connect(reader)
            total = packet_length(data)
            assert total is not None
            info = parse_connect(data[:total])
        except (BadConnect, TimeoutError, OSError) as exc:
            self.stats.malformed += 1
            log.warning("MQTT gate: refused %s: %s", peer, exc or "no CONNECT in time")
            return False, None, b""
        try:
            ok = self.authorize(info.client_id, info.username, info.password)
            if inspect.isawaitable(ok):
                ok = await ok
        except Exception as exc:  # an authorizer failing refuses, never admits
            log.warning("MQTT gate: authorizer failed on %r: %s", info.client_id[:80], exc)
            ok = False
        return bool(ok), info, data

    async def _read_connect(self, reader: asyncio.StreamReader) -> bytes:
        data = b""
        while True:
            total = packet_length(data)
            if total is not None and len(data) >= total:
                return data  # with anything a client pipelined after CONNECT, for the broker
            chunk = await reader.read(MAX_CONNECT_BYTES)
            if not chunk:
                raise BadConnect("connection closed before CONNECT")
            data += chunk

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self._pending >= self.max_pending:
            self.stats.malformed += 1
            log.warning(
                "MQTT gate: refused %s: %d connections already wait for their login", peer, self._pending
            )
            writer.close()
            return
        self._pending += 1
        try:
            ok, info, data = await self._login(reader, peer)
        finally:
            self._pending -= 1
        if info is None:
            writer.close()
            return
        if not ok:
            self.stats.refused += 1
            with contextlib.suppress(OSError):
                writer.write(connack_refused(info.level))
                await writer.drain()
            writer.close()
            return
        try:
            if isinstance(self.upstream, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("MQTT gate: broker %s unreachable: %s", self._upstream_text, exc)
            writer.close()
            return
        self.stats.accepted += 1
        who = info.username or info.client_id
        self._live[writer] = info.username
        up_writer.write(data)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, who, self.stats.bytes_from_clients),
                self._pipe(up_reader, writer, who, self.stats.bytes_to_clients),
            )
        finally:
            self._live.pop(writer, None)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, who: str, counter: dict[str, int]
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                counter[who] = counter.get(who, 0) + len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _sweep(self) -> None:
        assert self.allowed is not None
        while True:
            await asyncio.sleep(self.sweep_s)
            for w, username in list(self._live.items()):
                try:
                    still = self.allowed(username)
                except Exception:
                    still = True  # cannot tell: keep the connection; the next sweep asks again
                if not still:
                    self.stats.closed_revoked += 1
                    log.warning("MQTT gate: closed the connection of %s: no longer admitted", username)
                    w.close()
