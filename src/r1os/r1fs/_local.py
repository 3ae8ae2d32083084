"""The local fast path for whole files: a client on the node's machine hands the node an open file.

Streaming a large file through HTTP costs more CPU in the two Python processes than hashing it
(measured: an upload ran at a third of the rate of the same import done in the node). A client on the
same machine can instead pass the node an open file descriptor over a Unix socket (SCM_RIGHTS): the
node imports straight from it, or writes a fetched file straight into it. Passing a descriptor also
settles who may read or write what: the kernel let the client open that file, so the node never
opens a path on anyone's behalf (a node running as root must not read /etc/shadow for a caller).

The socket is in Linux's abstract namespace (`@r1os-r1fs-<node address>`), so it needs no folder and
has no path-length limit; it is reachable only from the node's network namespace (an app in its own
container uses HTTP). An abstract socket has no file permissions: any process in that namespace, of any
user, may connect. So it asks what the loopback HTTP API asks, no less: a `get` is anonymous (as
`/v1/r1fs/get` is; the node writes only into a descriptor the client opened), an `add` carries in
`auth` what an HTTP request's `Authorization` would (a signature by the caller's key, or the node's
operator token) for the request line `local_path(request)` (`POST /v1/r1fs/local/add?pin=..&replicas=..`,
body UNSIGNED), checked by the node's `ctx.auth` like any request (time, nonce, target node), and
counted against the signer's quota. One exchange per connection, each one SOCK_SEQPACKET message:

    client -> node   {"op": "add", "pin": true, "replicas": 1, "auth": "R1OS-SIG ..."}
                                                                + one fd open for reading
                     {"op": "get", "cid": "bafy..."}            + one fd open for writing
    node -> client   {"progress": <bytes done>}   (any number, about every 32 MiB)
                     {"ok": true, "result": {...}}
                     or {"ok": false, "error": "...", "cause": "not_found", "hint": ..., "status": 404}

A refusal carries what an HTTP error answer would (`error`, `cause`, `hint`, and the `status` the same
error gets over HTTP), so the client raises the same error either way.

Bounds: a request is one message of at most MAX_MESSAGE bytes carrying exactly one descriptor (a longer
message, or more descriptors, is refused, not cut and read); it must arrive within REQUEST_WAIT seconds;
at most MAX_LOCAL_REQUESTS are handled at once (past that a connection is answered `busy`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from r1os.errors import STATUS_CAUSES, R1osError, first_invalid
from r1os.r1fs._dag import MAX_CID_LENGTH
from r1os.r1fs._errors import BadRequest, R1fsError, remote_error

if TYPE_CHECKING:
    from r1os.node import Caller
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs.local")

#: Starts a background task the node cancels and awaits when it stops (`ServiceContext.spawn`).
Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]

#: Largest request message (cause `bad_request`): a request is ~100 bytes, 1 KiB of it a signature.
MAX_MESSAGE = 64 * 1024
PROGRESS_EVERY = 32 * 1024 * 1024
#: Seconds a connection has to send its request (cause `timeout`).
REQUEST_WAIT = 10.0
#: Requests handled at once (cause `busy`): each holds a descriptor and, for a get, a fetch.
MAX_LOCAL_REQUESTS = 64


def socket_name(address: str) -> str:
    """The abstract socket name of the node with this address (shown with a leading @)."""
    return f"@r1os-r1fs-{address.lower()}"


def _raw(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


class LocalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["add", "get"]
    pin: bool = True
    replicas: int = Field(default=1, ge=1, le=64)
    cid: str | None = Field(default=None, max_length=MAX_CID_LENGTH)
    auth: str | None = Field(default=None, max_length=1024)
    """What an HTTP request's `Authorization` would carry, for `local_path(request)` (an add needs it)."""


def local_path(request: dict[str, Any]) -> str:
    """The request line a local add is signed for (method POST, body UNSIGNED): the node rebuilds it
    from the request's own fields, so a signature covers what it asks for."""
    pin = "true" if request.get("pin", True) else "false"
    return f"/v1/r1fs/local/{request['op']}?pin={pin}&replicas={int(request.get('replicas', 1))}"


class LocalServer:
    """Accepts local requests for one R1FS service; each connection is one request."""

    def __init__(self, svc: R1fsService, name: str, spawn: Spawn) -> None:
        self.svc = svc
        self.name = name
        self._spawn = spawn  # each request is a node task: the node ends them when it stops
        self._sock: socket.socket | None = None
        self.refused = 0
        self.handling = 0

    def open(self) -> bool:
        """Bind the socket; False (and a log line) if another process holds the name."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.bind(_raw(self.name))
        except OSError as exc:
            sock.close()
            log.warning("r1fs: local socket %s unavailable (%s); clients will use HTTP", self.name, exc)
            return False
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        return True

    def close(self) -> None:
        """Stop listening (the node calls this when it stops, after `serve` has ended)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def serve(self) -> None:
        """Accept requests until cancelled, each handled by a task of its own."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            if self.handling >= MAX_LOCAL_REQUESTS:
                self._spawn(self._refuse_busy(conn), "local-busy")
                continue
            self.handling += 1
            self._spawn(self._handle(conn), "local-request")

    async def _refuse_busy(self, conn: socket.socket) -> None:
        """Answer a connection past MAX_LOCAL_REQUESTS without reading its request."""
        self.refused += 1
        self.svc.counters["local_refused"] += 1
        reply = {"ok": False, "error": f"the node handles {MAX_LOCAL_REQUESTS} local requests already",
                 "cause": "busy", "hint": "try again in a moment", "status": 503}  # fmt: skip
        conn.setblocking(False)
        try:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_sendall(conn, json.dumps(reply).encode())
        finally:
            conn.close()

    async def _handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            try:
                msg, fds = await self._receive(conn, loop)
                request = self._parse(msg, fds)
                caller = await self._caller(request)
                result = await self._run(request, fds[0], conn, caller)
                reply: dict[str, Any] = {"ok": True, "result": result}
                self.svc.counters["local_served"] += 1
            except (R1fsError, OSError) as exc:
                self.refused += 1
                self.svc.counters["local_refused"] += 1
                log.info("r1fs local request refused: %s", exc)
                if isinstance(exc, R1fsError):
                    reply = {"ok": False, "error": str(exc), "cause": exc.cause, "hint": exc.hint}
                    reply["status"] = exc.status
                else:  # e.g. a descriptor open for writing handed over for an add
                    reply = {"ok": False, "error": str(exc), "cause": "io", "hint": None, "status": 500}
            with contextlib.suppress(OSError):
                await loop.sock_sendall(conn, json.dumps(reply).encode())
        finally:
            self.handling -= 1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    async def _caller(self, request: LocalRequest) -> Caller | None:
        """Who sent an add (its `auth`, checked by the node's `ctx.auth` as an HTTP request's header for
        `POST local_path(request)`); a get needs nobody. Refusals are the node's own (401, 403)."""
        if request.op != "add":
            return None
        from starlette.requests import Request  # server side only: clients import this module too

        path, _, query = local_path(request.model_dump()).partition("?")
        headers = [] if request.auth is None else [(b"authorization", request.auth.encode())]
        scope = {"type": "http", "method": "POST", "path": path, "query_string": query.encode(),
                 "headers": headers, "client": ("local-socket", 0)}  # fmt: skip
        try:
            return await self.svc.ctx.auth.require(Request(scope), signed_body=False)
        except R1osError as exc:
            raise R1fsError(str(exc), cause=exc.cause, status=exc.status, hint=exc.hint) from None

    @staticmethod
    async def _receive(conn: socket.socket, loop: asyncio.AbstractEventLoop) -> tuple[bytes, list[int]]:
        """The request packet and its descriptors, waited for on the loop (no thread held by a
        client that connects and says nothing), 10 s at most."""
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(conn.fileno(), ready)
        try:
            async with asyncio.timeout(REQUEST_WAIT):  # not wait_for: it can drop a cancellation (3.11)
                await readable
        except TimeoutError:
            raise BadRequest(
                f"no local request within {REQUEST_WAIT:g} s", cause="timeout", status=408
            ) from None
        finally:
            loop.remove_reader(conn.fileno())
        msg, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, 2)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):  # the kernel cut it: never act on a part
            for fd in fds:
                os.close(fd)
            raise BadRequest(
                f"a local request is one message of at most {MAX_MESSAGE} bytes and one descriptor"
            )
        return msg, fds

    @staticmethod
    def _parse(msg: bytes, fds: list[int]) -> LocalRequest:
        if len(fds) != 1:
            raise BadRequest(f"a local request carries exactly one file descriptor, not {len(fds)}")
        if not msg:
            raise BadRequest("empty local request")
        try:
            return LocalRequest.model_validate_json(msg)
        except ValidationError as exc:
            where, why = first_invalid(exc, "request")
            raise BadRequest(f"bad local request: {where}: {why}") from None

    async def _run(
        self, request: LocalRequest, fd: int, conn: socket.socket, caller: Caller | None
    ) -> dict[str, Any]:
        progress = _Progress(conn)
        info = os.fstat(fd)
        if request.op == "add":
            if not stat.S_ISREG(info.st_mode):
                raise BadRequest("add: the descriptor is not a regular file")
            result = await self.svc.add_fd(
                fd, pin=request.pin, replicas=request.replicas, progress=progress, caller=caller
            )
            return {
                "cid": str(result.cid), "size": result.size, "blocks": result.blocks,
                "pinned": request.pin, "replicas": request.replicas,
            }  # fmt: skip
        if request.cid is None:
            raise BadRequest("get: no cid in the request")
        if not stat.S_ISREG(info.st_mode):
            raise BadRequest("get: the descriptor is not a regular file")
        size = await self.svc.get_to_fd(request.cid, fd, progress=progress)
        return {"cid": request.cid, "size": size}


class _Progress:
    """Sends `{"progress": n}` now and then, from whatever thread does the work."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.done = 0
        self.sent = 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.done - self.sent >= PROGRESS_EVERY:
            self.sent = self.done
            with contextlib.suppress(OSError):
                self.conn.send(json.dumps({"progress": self.done}).encode())


def local_call(
    name: str,
    request: dict[str, Any],
    fd: int,
    *,
    timeout: float,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One exchange with a node's local socket (blocking). Raises ConnectionError if nobody listens
    there (the caller then uses HTTP), R1fsError if the node refused the request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(_raw(name))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError(f"no node listens at {name}") from exc
        sock.sendmsg(
            [json.dumps(request).encode()],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
        )
        seen = 0
        while True:
            try:
                msg = sock.recv(MAX_MESSAGE)
            except TimeoutError:
                raise R1fsError(f"the node sent nothing for {timeout:.0f} s") from None
            if not msg:
                raise R1fsError("the node closed the local connection without an answer")
            reply = json.loads(msg)
            if "progress" in reply:
                if progress is not None:
                    progress(int(reply["progress"]) - seen)
                seen = int(reply["progress"])
                continue
            if reply.get("ok"):
                result: dict[str, Any] = reply["result"]
                if progress is not None and "size" in result:
                    progress(int(result["size"]) - seen)
                return result
            status = reply.get("status")
            status = status if isinstance(status, int) else 500
            cause, hint = reply.get("cause"), reply.get("hint")
            raise remote_error(
                str(reply.get("error")),
                status=status,
                cause=cause if isinstance(cause, str) else STATUS_CAUSES.get(status, "error"),
                hint=hint if isinstance(hint, str) else None,
            )
