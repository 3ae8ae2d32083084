"""The plugin seam: services (CSTORE, R1FS, oracle, ...) register with a node and get its parts."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from r1os.identity import NodeKey
from r1os.transport import Transport
from r1os.wire import Envelope

if TYPE_CHECKING:
    from r1os.node._netmap import NetworkMap

MessageHandler = Callable[[Envelope], Awaitable[None]]


async def cancel_tasks(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel background tasks and wait until they have finished, whatever they raise on the way out."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


@dataclass
class ServiceContext:
    """What a node hands each service: identity, messaging, HTTP routes, metrics and a data folder."""

    name: str
    key: NodeKey
    network: str
    transport: Transport
    router: APIRouter
    data_dir: Path
    metrics: CollectorRegistry
    netmap: NetworkMap
    _publish: Callable[[str, dict[str, Any]], Awaitable[None]]
    _send: Callable[[str, str, dict[str, Any]], Awaitable[None]]
    _on: Callable[[str, MessageHandler], None]
    _services: dict[str, Service]
    url: str = ""
    _body_limits: dict[str, int | None] = field(default_factory=dict)

    def allow_body(self, prefix: str, limit: int | None) -> None:
        """Let requests to paths under `prefix` carry bodies up to `limit` bytes (None: no cap, the
        route enforces its own) instead of the node's default cap of 1 MiB."""
        self._body_limits[prefix] = limit

    async def broadcast(self, type: str, payload: dict[str, Any]) -> None:
        """Sign and publish a message to every node of the network."""
        await self._publish(type, payload)

    async def send(self, address: str, type: str, payload: dict[str, Any]) -> None:
        """Sign and publish a message to one node's inbox."""
        await self._send(address, type, payload)

    def on(self, type: str, handler: MessageHandler) -> None:
        """Receive verified messages of `type` (broadcast or sent to this node)."""
        self._on(type, handler)

    def service(self, name: str) -> Service:
        """Another service of the same node (started before this one), e.g. `ctx.service("cstore")`."""
        try:
            return self._services[name]
        except KeyError:
            raise LookupError(f"no service {name!r} on this node (have: {sorted(self._services)})") from None


class Service(abc.ABC):
    """A part of the node with its own lifecycle. Subclasses set `name` and implement start/stop."""

    name: str = "service"

    @abc.abstractmethod
    async def start(self, ctx: ServiceContext) -> None:
        """Register handlers and routes, load state, start background tasks."""

    async def stop(self) -> None:
        """Stop background tasks and flush state; the default does nothing."""
