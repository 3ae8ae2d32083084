"""CSTORE's HTTP routes (`/v1/cstore/...`), on the router the node gives the service.

Every route uses the service's public methods only, raises `CStoreError` for a refusal (the node
answers it as `{"error", "cause", "hint"}` with the refusal's status) and names its answer's model,
so /openapi.json describes every answer.

Who may call what: reads are anonymous; signed batches (`/batch`, `/batches`) carry their writer's
signature and need nothing more; `/write` has the node sign, so only the node's operator may call it
(its API token); the routes between replicas (`/sync`, `/push`, `GET /batch/<id>`) take signed requests
from admitted nodes only when the node runs dAuth (`CStoreService.require_peer`). Every value a request
declares is bounded where it is read, and every refusal is counted and logged (`CStoreService.refused`).

The write and replication routes read their bodies themselves (signed batches, capped as they stream)
and answer with bytes they have at hand: they run as `DirectRoute`s, documented like the others but
served without FastAPI's parameter solving and response validation, which would add about two thirds
to the HTTP handling of each request (the write path is what `bench/cstore.py` measures).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

from r1os.cstore._fanout import check_batch_id
from r1os.cstore._models import (
    BatchAnswer,
    BatchesAnswer,
    GetAnswer,
    HGetAllAnswer,
    HGetAnswer,
    HlcAnswer,
    KeysAnswer,
    LagAnswer,
    PushAnswer,
    SignedBatch,
    StatsAnswer,
    SyncAnswer,
    WaitAnswer,
    WriteAnswer,
)
from r1os.cstore._ops import CStoreError, Op
from r1os.cstore._sync import MAX_SYNC_BATCHES, MAX_SYNC_BODY, MAX_SYNC_REQUEST
from r1os.node import ERROR_RESPONSES

if TYPE_CHECKING:
    from r1os.cstore._service import CStoreService

#: Largest body of a request carrying many signed batches (`/batches`).
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_BATCHES_PER_REQUEST = 1_000  # POST /v1/cstore/batches
#: The longest a `wait` long-poll may last.
MAX_WAIT_S = 60.0
KEYS_PAGE = 1_000  # GET /v1/cstore/keys: keys per page by default
MAX_KEYS_PAGE = 10_000  # and at most (422 invalid_request past it)

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """A route FastAPI documents in /openapi.json but Starlette serves: `endpoint(request) -> Response`
    runs without parameter solving, response validation or FastAPI's per-request exit stacks
    (measured: 24 us a request, against 23.5 us for a plain Starlette route and 39 us for FastAPI's)."""

    def __init__(self, path: str, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._serve = request_response(endpoint)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            await super().handle(scope, receive, send)  # FastAPI's 405, in the node's error shape
            return
        await self._serve(scope, receive, send)


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _answers(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that builds its answer itself: `model` is declared for /openapi.json
    only, and not validated (on the write path that would cost CPU per request for nothing)."""
    return {200: {"model": model}, **ERROR_RESPONSES}


def _body_doc(media_type: str, description: str) -> dict[str, Any]:
    """`openapi_extra=` describing a body the route reads itself."""
    schema = {"type": "string", "description": description}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (`too_large`) as soon as it passes `limit` bytes, declared or
    streamed, so a huge body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise CStoreError("too_large", f"request body of {declared} bytes exceeds {limit}")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CStoreError("too_large", f"request body exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def write_ops(body: bytes, svc: CStoreService) -> list[Op]:
    """The ops of an unsigned write request, `{"ops": [{"op", "key", "field", "value", "ttl"}, ...]}`
    (ttl in seconds), each value checked for its type and bounds (`malformed`, `too_large`); keys, fields
    and values are checked again, like any batch's, once the node has signed them."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CStoreError("malformed", f"bad write request: not JSON: {exc}") from None
    items = request.get("ops") if isinstance(request, dict) else None
    if not isinstance(items, list):
        raise CStoreError("malformed", 'bad write request: not {"ops": [...]}')
    if not 1 <= len(items) <= svc.limits.max_ops_per_batch:
        raise CStoreError("too_large", f"a write holds 1 to {svc.limits.max_ops_per_batch} ops")
    now = time.time_ns() // 1_000_000
    ops = []
    for o in items:
        if not isinstance(o, dict):
            raise CStoreError("malformed", 'bad write request: an op is not {"op", "key", ...}')
        kind, key, field = o.get("op"), o.get("key"), o.get("field")
        if kind not in ("set", "del", "hset", "hdel"):
            raise CStoreError("malformed", f"bad write request: unknown op {str(kind)[:20]!r}")
        if not isinstance(key, str) or not (field is None or isinstance(field, str)):
            raise CStoreError("malformed", "bad write request: key and field must be strings")
        ops.append(Op(kind, key, field, o.get("value"), svc.expires_ms(o.get("ttl"), now)))
    return ops


def add_routes(router: APIRouter, svc: CStoreService) -> dict[str, int]:
    """Put CSTORE's routes on `router`, each answering from `svc`; returns the body cap of each route
    that takes a body (the node caps them too)."""
    errors = ERROR_RESPONSES

    def refuse(exc: CStoreError) -> CStoreError:
        """Count and log a refusal the route raises."""
        svc.refused(exc)
        return exc

    async def body_of(request: Request, limit: int) -> bytes:
        try:
            return await read_body(request, limit)
        except CStoreError as exc:
            raise refuse(exc) from None

    # -- reads ---------------------------------------------------------------------------------

    @router.get("/v1/cstore/get", response_model=GetAnswer, responses=errors)
    async def get(key: str) -> GetAnswer:
        return GetAnswer(key=key, found=await svc.exists(key), value=await svc.get(key))

    @router.get("/v1/cstore/keys", response_model=KeysAnswer, responses=errors)
    async def keys(
        prefix: str = "",
        after: str = "",
        limit: int = Query(KEYS_PAGE, ge=1, le=MAX_KEYS_PAGE),
    ) -> KeysAnswer:
        """Keys under `prefix` in pages (anyone may ask: an answer is never the whole key set)."""
        page, more = await svc.keys_page(prefix, after, limit)
        return KeysAnswer(prefix=prefix, keys=page, next=page[-1] if more and page else None)

    @router.get("/v1/cstore/hget", response_model=HGetAnswer, responses=errors)
    async def hget(key: str, field: str) -> HGetAnswer:
        value = await svc.hget(key, field)
        return HGetAnswer(key=key, field=field, found=value is not None, value=value)

    @router.get("/v1/cstore/hgetall", response_model=HGetAllAnswer, responses=errors)
    async def hgetall(key: str) -> HGetAllAnswer:
        return HGetAllAnswer(key=key, fields=await svc.hgetall(key))

    @router.get("/v1/cstore/wait", response_model=WaitAnswer, responses=errors)
    async def wait(key: str, field: str | None = None, timeout: float = 10.0) -> WaitAnswer:
        """Long-poll until KEY (or hash FIELD) has a live value; 408 (`timeout`) after `timeout`
        seconds (at most 60)."""
        if math.isnan(timeout):
            raise refuse(CStoreError("malformed", "timeout must be a number of seconds"))
        return WaitAnswer(key=key, field=field, value=await svc.wait(key, field, min(timeout, MAX_WAIT_S)))

    @router.get("/v1/cstore/hlc", response_model=HlcAnswer, responses=errors)
    async def hlc() -> HlcAnswer:
        return HlcAnswer(wall_ms=svc.hlc.wall_ms, counter=svc.hlc.counter)

    @router.get("/v1/cstore/stats", response_model=StatsAnswer, responses=errors)
    async def stats() -> StatsAnswer:
        return svc.stats()

    @router.get("/v1/cstore/lag", response_model=LagAnswer, responses=errors)
    async def lag(since_ms: int = 0) -> LagAnswer:
        """Replication lag samples (ms) of batches applied from broadcasts since `since_ms`."""
        samples = svc.lag_samples(since_ms)
        return LagAnswer(n=len(samples), lag_ms=[s[0] for s in samples], batch=[s[1] for s in samples])

    # -- writes (DirectRoute: see the module's docstring) ------------------------------------------

    async def batch(request: Request) -> Response:
        """One signed batch (canonical JSON, as `r1os.cstore.sign_batch` makes it); answered once it
        is durable on this node."""
        b = await svc.submit(await body_of(request, svc.limits.max_batch_bytes))
        return _json(orjson.dumps({"id": b.id, "ops": len(b.ops), "hlc": list(svc.hlc)}))

    async def batches(request: Request) -> Response:
        """Several signed batches in one request, one per line (canonical JSON has no newlines).
        Each is accepted or refused on its own, like the commands of a Redis pipeline."""
        body = await body_of(request, MAX_REQUEST_BYTES)
        raws = [line for line in body.split(b"\n") if line.strip()]
        if not 1 <= len(raws) <= MAX_BATCHES_PER_REQUEST:
            raise refuse(CStoreError("too_large", f"a request holds 1 to {MAX_BATCHES_PER_REQUEST} batches"))
        results = [
            {"error": str(r), "cause": r.cause, "hint": r.hint}
            if isinstance(r, CStoreError)
            else {"id": r.id, "ops": len(r.ops)}
            for r in await svc.submit_many(raws)
        ]
        return _json(orjson.dumps({"results": results, "hlc": list(svc.hlc)}))

    async def write(request: Request) -> Response:
        """Unsigned writes (`{"ops": [{"op", "key", "field", "value", "ttl"}, ...]}`) that the node
        signs as itself: for the node's operator only (`Authorization: Bearer <the token in
        <home>/api-token>`); anyone else signs batches with their own key (`POST /v1/cstore/batch`)."""
        await svc.ctx.auth.require(request, local=True)
        try:
            ops = write_ops(await read_body(request, svc.limits.max_batch_bytes), svc)
        except CStoreError as exc:
            raise refuse(exc) from None
        b = await svc.write(ops)
        return _json(orjson.dumps({"id": b.id, "ops": len(b.ops), "writer": b.writer}))

    # -- between replicas ----------------------------------------------------------------------

    async def sync(request: Request) -> Response:
        """An anti-entropy round: `{"digests": base64 bucket digests, "horizon": ms}`."""
        await svc.require_peer(request)
        body = await body_of(request, MAX_SYNC_REQUEST)
        try:
            asked = orjson.loads(body)
            if not isinstance(asked, dict):
                raise TypeError("not an object")
            horizon, digests = asked.get("horizon"), asked.get("digests")
            if horizon is not None and type(horizon) is not int:
                raise TypeError("horizon must be an integer")
            if not isinstance(digests, str):
                raise TypeError("digests must be a base64 string")
            answer = svc.answer_sync(digests, horizon)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise refuse(CStoreError("malformed", f"bad sync request: {exc}")) from None
        except CStoreError as exc:
            raise refuse(exc) from None
        return _json(orjson.dumps(answer))

    async def push(request: Request) -> Response:
        """Batches a peer pushes in an anti-entropy round: `{"batches": [signed batch, ...]}`, at most
        `MAX_SYNC_BATCHES`; each is checked (and counted against its namespace) like a broadcast one."""
        await svc.require_peer(request)
        body = await body_of(request, MAX_SYNC_BODY)
        try:
            pushed = orjson.loads(body)
            batches = pushed.get("batches") if isinstance(pushed, dict) else None
            if not isinstance(batches, list):
                raise TypeError("batches must be a list")
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise refuse(CStoreError("malformed", f"bad push request: {exc}")) from None
        if len(batches) > MAX_SYNC_BATCHES:
            raise refuse(CStoreError("too_large", f"a push holds at most {MAX_SYNC_BATCHES} batches"))
        applied = refused = 0
        for raw in batches:
            try:
                if not isinstance(raw, str):
                    raise CStoreError("malformed", "a pushed batch is not a string")
                applied += bool(svc.receive(raw.encode()))
            except CStoreError as exc:
                svc.refused(exc)
                refused += 1
        return _json(orjson.dumps({"applied": applied, "refused": refused}))

    @router.get("/v1/cstore/batch/{batch_id}", responses=_answers(SignedBatch))
    async def get_batch(batch_id: str, request: Request) -> Response:
        """A signed batch by id, as its writer signed it (replicas pull the batches too large to be
        broadcast inline)."""
        await svc.require_peer(request)
        try:
            raw = svc.batch(check_batch_id(batch_id))
        except CStoreError as exc:
            raise refuse(exc) from None
        if raw is None:
            raise CStoreError(
                "not_found", f"no batch {batch_id[:16]} here", hint="it may have been superseded"
            )
        return _json(raw)

    json, ndjson = "application/json", "application/x-ndjson"
    direct: list[tuple[str, Endpoint, type[Any], dict[str, Any]]] = [
        ("/v1/cstore/batch", batch, BatchAnswer, _body_doc(json, "a signed batch")),
        ("/v1/cstore/batches", batches, BatchesAnswer, _body_doc(ndjson, "signed batches, one a line")),
        (
            "/v1/cstore/write",
            write,
            WriteAnswer,
            _body_doc(json, '{"ops": [{"op", "key", "field", "value", "ttl"}]}'),
        ),
        ("/v1/cstore/sync", sync, SyncAnswer, _body_doc(json, '{"digests": base64, "horizon": ms}')),
        ("/v1/cstore/push", push, PushAnswer, _body_doc(json, '{"batches": [signed batch, ...]}')),
    ]
    for path, endpoint, model, body in direct:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            responses=_answers(model),
            openapi_extra=body,
            route_class_override=DirectRoute,
        )
    one_batch = svc.limits.max_batch_bytes
    return {
        "/v1/cstore/batch": one_batch,
        "/v1/cstore/batches": MAX_REQUEST_BYTES,
        "/v1/cstore/write": one_batch,
        "/v1/cstore/sync": MAX_SYNC_REQUEST,
        "/v1/cstore/push": MAX_SYNC_BODY,
    }
