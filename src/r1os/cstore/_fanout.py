"""The fast path between replicas: accepted batches go to every node in `cstore.batch` messages.

Batches accepted while an earlier message is still on its way travel together in the next one
(`{"batches": [...]}`), so concurrent writers share one envelope signature, one broker message and,
on every replica, one envelope check; each batch keeps its own signature and every replica still
checks each one. Batches too large to travel inline are announced (`{"id", "url"}`) and pulled over
HTTP by the replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx

from r1os.cstore._ops import Batch, CStoreError

MSG_BATCH = "cstore.batch"
INLINE_LIMIT = 256 * 1024  # larger batches are announced and pulled over HTTP

Waiting = tuple[Batch, asyncio.Future[None]]
Payload = dict[str, Any]


def broadcast_payloads(group: list[Waiting], url: str) -> list[tuple[Payload, list[asyncio.Future[None]]]]:
    """Messages for a group of batches, in order, each with the futures of the batches it carries:
    inline ones packed together up to `INLINE_LIMIT` bytes per message, larger ones announced one by
    one (replicas pull them from `url`)."""
    out: list[tuple[Payload, list[asyncio.Future[None]]]] = []
    pack: list[str] = []
    waiting: list[asyncio.Future[None]] = []
    size = 0

    def flush() -> None:
        if pack:
            payload = {"batch": pack[0]} if len(pack) == 1 else {"batches": list(pack)}
            out.append((payload, list(waiting)))
            pack.clear()
            waiting.clear()

    for batch, fut in group:
        if size + len(batch.raw) > INLINE_LIMIT:
            flush()  # in order: what came first is sent first
            size = 0
        if len(batch.raw) > INLINE_LIMIT:
            out.append(({"id": batch.id, "url": url}, [fut]))
            continue
        pack.append(batch.raw.decode())
        waiting.append(fut)
        size += len(batch.raw)
    flush()
    return out


class Broadcaster:
    """Sends batches to every replica, grouping those that come while a message is on its way.

    `publish(payload)` signs and sends one message; `spawn(coro)` runs the sender in the background
    (the node cancels it on stop). `url` is where replicas pull batches too large to travel inline."""

    def __init__(
        self,
        publish: Callable[[Payload], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
    ) -> None:
        self._publish = publish
        self._spawn = spawn
        self.url = ""
        self._outgoing: list[Waiting] = []
        self._sender: asyncio.Task[Any] | None = None

    async def send(self, batch: Batch) -> None:
        """Send `batch`; returns once it is handed to the broker (raises if that failed)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outgoing.append((batch, fut))
        if self._sender is None or self._sender.done():
            self._sender = self._spawn(self._send_outgoing())
        await fut

    async def _send_outgoing(self) -> None:
        group: list[Waiting] = []
        try:
            while self._outgoing:
                group, self._outgoing = self._outgoing, []
                for payload, members in broadcast_payloads(group, self.url):
                    try:
                        await self._publish(payload)
                    except Exception as exc:
                        for fut in members:
                            if not fut.done():
                                fut.set_exception(exc)
                    else:
                        for fut in members:
                            if not fut.done():
                                fut.set_result(None)
        finally:
            # Stopped midway (the node is shutting down): whoever waits is not left hanging.
            for _, fut in group + self._outgoing:
                if not fut.done():
                    fut.cancel()
            self._outgoing = []


async def received_batches(payload: Payload, http: httpx.AsyncClient) -> list[Any]:
    """The batches a `cstore.batch` message brings (each still to be checked: a replica refuses a bad
    one alone), pulling an announced one from its sender; `CStoreError` if the message is unusable."""
    batches = payload.get("batches")
    if isinstance(batches, list):
        return batches
    if isinstance(payload.get("batch"), str):
        return [payload["batch"]]
    if isinstance(payload.get("id"), str) and isinstance(payload.get("url"), str):
        return [await pull_batch(http, payload["url"], payload["id"])]
    raise CStoreError("malformed", "cstore.batch message without a batch")


async def pull_batch(http: httpx.AsyncClient, url: str, batch_id: str) -> bytes:
    """The signed batch `batch_id` from the node at `url`."""
    try:
        r = await http.get(f"{url}/v1/cstore/batch/{batch_id}")
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise CStoreError("unreachable", f"cannot pull batch {batch_id[:12]} from {url}: {exc}") from None
    return r.content
