"""A cap on HTTP request bodies for every route of a node.

Most routes take small JSON bodies, and FastAPI/Starlette read a body whole before a handler sees it:
one request with a gigabyte body would be held in memory. So bodies over `DEFAULT_BODY_LIMIT` are
refused (413) before they are read, by their Content-Length, and a body sent without one is refused
as soon as it passes the cap (the read raises a 413 inside the app). Routes that take big bodies on
purpose declare their own cap through `ServiceContext.allow_body(prefix, limit)` (R1FS uploads stream
and enforce their own size limit: they declare `None`, no cap here).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from r1os.errors import error_body

log = logging.getLogger("r1os.node.http")

DEFAULT_BODY_LIMIT = 1024 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimit:
    """Pure ASGI middleware (no buffering of its own); `limits` maps path prefixes to caps."""

    def __init__(self, app: Any, limits: dict[str, int | None], default: int = DEFAULT_BODY_LIMIT) -> None:
        self.app = app
        self.limits = limits
        self.default = default
        self.refused = 0

    def limit_for(self, path: str) -> int | None:
        best: int = -1
        limit: int | None = self.default
        for prefix, cap in self.limits.items():
            if path.startswith(prefix) and len(prefix) > best:
                best, limit = len(prefix), cap
        return limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            self._refuse(scope, f"declared {int(declared)} bytes")
            body = orjson.dumps(
                error_body(f"request body over {limit} bytes", "too_large", "send a smaller body")
            )
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    self._refuse(scope, f"streamed over {limit} bytes")
                    # raised inside the app's read: its exception layer answers 413
                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, capped, send)

    def _refuse(self, scope: Scope, why: str) -> None:
        self.refused += 1
        client = scope.get("client") or ("?", 0)
        log.info("http: body refused on %s from %s: %s", scope["path"], client[0], why)
