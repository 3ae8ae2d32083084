"""The fast path between replicas: accepted batches go to every node in `cstore.batch` messages.

Batches accepted while an earlier message is still on its way travel together in the next one
(`{"batches": [...]}`), so concurrent writers share one envelope signature, one broker message and,
on every replica, one envelope check; each batch keeps its own signature and every replica still
checks each one. Batches too large to travel inline are announced (`{"id", "url"}`) and pulled over
HTTP by the replicas.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from r1os.cstore._ops import Batch, CStoreError
from r1os.cstore._peer import check_url

MSG_BATCH = "cstore.batch"
INLINE_LIMIT = 256 * 1024  # larger batches are announced and pulled over HTTP
#: Batches one message may carry. The smallest batch is about 260 bytes, so a full inline message holds
#: about a thousand; a replica refuses a message claiming more (each would be checked on its own).
MAX_BATCHES_PER_MESSAGE = 2_000
#: Announced batches a replica pulls at the same time; the rest is left to anti-entropy (`busy`).
MAX_PULLS = 4

_BATCH_ID = re.compile(r"[0-9a-f]{64}")

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
        if len(pack) == MAX_BATCHES_PER_MESSAGE:
            flush()
            size = 0
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


def check_batch_id(batch_id: object) -> str:
    """A batch id as peers name it: the hex SHA-256 of the signed batch."""
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise CStoreError("malformed", "a batch id is 64 lower-case hex digits")
    return batch_id


@dataclass(frozen=True, slots=True)
class Announced:
    """A batch too large to travel inline: pull it (`GET <url>/v1/cstore/batch/<id>`) from its sender."""

    id: str
    url: str


def received_batches(payload: Payload) -> list[Any] | Announced:
    """The batches a `cstore.batch` message brings (each still to be checked: a replica refuses a bad
    one alone), or the batch it announces; `CStoreError` if the message is unusable."""
    batches = payload.get("batches")
    if isinstance(batches, list):
        if len(batches) > MAX_BATCHES_PER_MESSAGE:
            raise CStoreError("too_large", f"a message carries at most {MAX_BATCHES_PER_MESSAGE} batches")
        return batches
    if isinstance(payload.get("batch"), str):
        return [payload["batch"]]
    if "id" in payload or "url" in payload:
        return Announced(check_batch_id(payload.get("id")), check_url(payload.get("url")))
    raise CStoreError("malformed", "cstore.batch message without a batch")
