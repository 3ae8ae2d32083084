"""The transport seam: move opaque bytes between nodes over topics.

A transport knows nothing about envelopes: the wire layer signs and verifies, the transport only
carries bytes. Keeping this seam small lets the same node run on the embedded broker, an external
mosquitto/EMQX, or anything else that can publish and subscribe.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from r1os.errors import TransportError

Handler = Callable[[str, bytes], Awaitable[None] | None]
"""A callback receiving `(topic, payload)` for each message matching its pattern (async or not)."""

DEFAULT_QUEUE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class TransportStats:
    """A snapshot of a transport's counters (all monotonic except `queued`, the current backlog)."""

    published: int = 0
    """Messages handed to the broker."""
    received: int = 0
    """Messages received from the broker (counted once, before dispatch to handlers)."""
    queued: int = 0
    """Messages waiting in the offline queue right now."""
    dropped_offline: int = 0
    """Oldest queued messages dropped because the offline queue hit its bound."""
    reconnects: int = 0
    """Successful connections after the first one."""
    handler_errors: int = 0
    """Handler calls that raised (logged, never fatal)."""
    dropped_slow: int = 0
    """Messages not given to a handler because its own bounded queue was full."""


class Subscription:
    """A handle returned by `Transport.subscribe`; `ready()` waits for the broker to confirm it."""

    def __init__(self, pattern: str, handler: Handler, qos: int = 0) -> None:
        self.pattern = pattern
        self.handler = handler
        self.qos = qos
        self._active = asyncio.Event()

    @property
    def active(self) -> bool:
        """True while the broker has confirmed this subscription on the current connection."""
        return self._active.is_set()

    async def ready(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the broker confirmed it: messages published after this will arrive."""
        try:
            async with asyncio.timeout(timeout):
                await self._active.wait()
        except TimeoutError:
            raise TransportError(
                f"subscription {self.pattern!r} not confirmed within {timeout:g} s",
                hint="check that the broker is reachable (transport.connected)",
            ) from None

    def __repr__(self) -> str:
        return f"Subscription({self.pattern!r}, active={self.active})"


class StartStop(abc.ABC):
    """`async with` for anything with `start()` and `stop()` (transports, brokers)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Transport(StartStop):
    """Publish/subscribe of opaque bytes; implementations reconnect by themselves.

    `publish` never fails because the broker is down: while offline, messages wait in a bounded
    queue (oldest dropped and counted when full) and are sent once connected again. Subscriptions
    are remembered and renewed on every reconnect.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin connecting in the background; returns without waiting for the broker."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect cleanly and stop all background work; safe to call more than once."""

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        """Send `payload` to `topic` (queued while offline)."""

    @abc.abstractmethod
    def subscribe(self, pattern: str, handler: Handler) -> Subscription:
        """Call `handler(topic, payload)` for each message matching `pattern` (`+`, `#` allowed)."""

    @abc.abstractmethod
    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a subscription returned by `subscribe`."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True while connected to the broker with all subscriptions renewed."""

    @property
    @abc.abstractmethod
    def stats(self) -> TransportStats:
        """A snapshot of the counters."""

    @abc.abstractmethod
    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until `connected`; raise `TransportError` after `timeout` seconds."""

    @staticmethod
    async def _await_connection(
        connected: asyncio.Event, *, started: bool, stopped: bool, timeout: float, where: str,
        hint: str | None = None,
    ) -> None:  # fmt: skip
        """`wait_connected` for implementations that set an event while connected."""
        if stopped:
            raise TransportError("transport is stopped")
        if not started:
            raise TransportError("transport is not started; call start() first")
        try:
            async with asyncio.timeout(timeout):
                await connected.wait()
        except TimeoutError:
            raise TransportError(f"not connected to {where} within {timeout:g} s", hint=hint) from None

    def retry_now(self) -> None:
        """Reconnect at once instead of waiting out a backoff (e.g. just after the broker started to
        admit this node); transports without a backoff ignore it."""
