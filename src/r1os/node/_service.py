"""The plugin seam: services (CSTORE, R1FS, oracle, ...) register with a node and get its parts.

A service is a thin shell: it implements `start(ctx)` and takes everything else from its
`ServiceContext`: background tasks (`spawn`, cancelled and awaited by the node on stop), clean-up
callbacks (`on_stop`), one shared HTTP client for talking to peers (`http`), typed lookups of the
other services of the node (`require(CStoreService)`), messaging and its HTTP router. Optional hooks
(`admits`, `heartbeat_fields`) are methods of `Service` with do-nothing defaults, so the node calls
them without looking for them.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from r1os.errors import NodeError
from r1os.identity import NodeKey
from r1os.node._auth import ApiAuth
from r1os.transport import Transport
from r1os.wire import Envelope

if TYPE_CHECKING:
    from r1os.node._config import NodeConfig
    from r1os.node._netmap import NetworkMap

log = logging.getLogger("r1os.node")

MessageHandler = Callable[[Envelope], Awaitable[None]]
StopCallback = Callable[[], Awaitable[None] | None]
S = TypeVar("S", bound="Service")

#: Seconds a task gets to finish after it was cancelled before the node stops waiting for it.
TASK_STOP_TIMEOUT = 5.0


async def woken(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set or `timeout` seconds pass, then clear it: one tick of a loop that runs
    every `timeout` seconds, or at once when woken."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
    event.clear()


async def cancel_tasks(tasks: Iterable[asyncio.Future[Any]], timeout: float = TASK_STOP_TIMEOUT) -> None:
    """Cancel background tasks and wait until they have finished, whatever they raise on the way out;
    a task still running `timeout` seconds after its cancellation is left behind with a log line."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        log.warning("task %s did not stop within %g s of its cancellation", t, timeout)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved, so asyncio does not log it a second time


@dataclass
class ServiceContext:
    """What a node hands each service: identity, messaging, HTTP routes, metrics, a data folder, the
    node's configuration, a shared HTTP client, and the lifecycle of its background work."""

    name: str
    key: NodeKey
    network: str
    transport: Transport
    router: APIRouter
    data_dir: Path
    metrics: CollectorRegistry
    netmap: NetworkMap
    config: NodeConfig
    http: httpx.AsyncClient
    """One client for every request a service makes to peers (connection pools shared, closed by the node)."""
    auth: ApiAuth
    """Who is calling a route: `await ctx.auth.caller(request)`, `await ctx.auth.require(request, ...)`."""
    _publish: Callable[[str, dict[str, Any]], Awaitable[None]]
    _send: Callable[[str, str, dict[str, Any]], Awaitable[None]]
    _on: Callable[[str, MessageHandler], None]
    _services: list[Service]
    url: str = ""
    _body_limits: dict[str, int | None] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _stop_callbacks: list[StopCallback] = field(default_factory=list)
    _stopping: bool = False

    @property
    def address(self) -> str:
        return self.key.address

    # -- lifecycle -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` in the background for as long as the node runs: the node cancels it, and waits for
        it, when it stops. A task that fails is logged with its name (it is not restarted)."""
        if self._stopping:
            coro.close()
            raise NodeError(f"service {self.name} is stopping: cannot start task {name!r}")
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    def on_stop(self, callback: StopCallback) -> None:
        """Call `callback` (sync or async) when the node stops, after this service's tasks have ended and
        its `stop()` has returned; callbacks run in reverse order of registration."""
        self._stop_callbacks.append(callback)

    async def close(self) -> None:
        """Cancel and await this service's tasks (the node calls this before the service's `stop()`, and
        `run_stop_callbacks` after it)."""
        self._stopping = True
        await cancel_tasks(list(self._tasks))

    async def run_stop_callbacks(self) -> None:
        while self._stop_callbacks:
            callback = self._stop_callbacks.pop()
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("stop callback %r of service %s failed", callback, self.name)

    # -- messaging and HTTP ----------------------------------------------------------------

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

    # -- other services --------------------------------------------------------------------

    def services_info(self) -> dict[str, dict[str, Any]]:
        """What this node's services add to its heartbeat (`services_info`), as the next heartbeat will
        carry it: a node's own heartbeats never come back to it, so a service that reads heartbeats
        (OracleSync) reads its own node's here."""
        return collect_services_info(self._services)

    def find(self, kind: type[S]) -> S | None:
        """The node's service of class `kind` (or a subclass), or None if the node runs none."""
        for service in self._services:
            if isinstance(service, kind):
                return service
        return None

    def require(self, kind: type[S]) -> S:
        """The node's service of class `kind`, e.g. `ctx.require(CStoreService)`; raises `NodeError` if
        the node runs none. Services start in order, so ask only for ones listed before this one."""
        service = self.find(kind)
        if service is None:
            have = ", ".join(s.name for s in self._services) or "none"
            raise NodeError(
                f"service {self.name} needs {kind.__name__}, which this node does not run (services: {have})",
                hint="add it to the node's services, before this one",
            )
        return service


def collect_services_info(services: Iterable[Service]) -> dict[str, dict[str, Any]]:
    """Each service's heartbeat fields under its name (a service that fails is logged and left out)."""
    info: dict[str, dict[str, Any]] = {}
    for service in services:
        if service.adds_heartbeat_fields:
            try:
                info[service.name] = service.heartbeat_fields()
            except Exception:
                log.exception("service %s failed to give its heartbeat fields", service.name)
    return info


class Service(abc.ABC):
    """A part of the node with its own lifecycle. Subclasses set `name` and implement `start`.

    Hooks with no-op defaults, overridden where a service has something to say:
    - `admits(sender, type)`: whether a message from `sender` is accepted at all (dAuth). Only services
      that override it are asked.
    - `heartbeat_fields()`: what this service adds to the node's heartbeat, under its own name (Deeploy
      advertises runtimes and free resources this way); keep it small, it is sent every interval.
    """

    name: str = "service"

    @abc.abstractmethod
    async def start(self, ctx: ServiceContext) -> None:
        """Register handlers and routes, load state, start background tasks with `ctx.spawn`."""

    async def stop(self) -> None:
        """Flush state; runs after the service's tasks were cancelled and awaited. Default: nothing."""

    def admits(self, sender: str, type: str = "") -> bool:
        """True if a message of `type` from `sender` may be accepted; the default admits everyone."""
        return True

    def heartbeat_fields(self) -> dict[str, Any]:
        """Fields this service adds to the node's heartbeat (under `services_info[<name>]`)."""
        return {}

    @property
    def gates_admission(self) -> bool:
        """True if this service overrides `admits` (so the node asks it about every sender)."""
        return type(self).admits is not Service.admits

    @property
    def adds_heartbeat_fields(self) -> bool:
        return type(self).heartbeat_fields is not Service.heartbeat_fields
