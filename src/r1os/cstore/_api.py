"""CSTORE's HTTP routes (`/v1/cstore/...`), on the router the node gives the service.

Every route uses the service's public methods only, raises `CStoreError` for a refusal (the node
answers it as `{"error", "cause", "hint"}` with the refusal's status) and names its answer's model,
so /openapi.json describes every answer.

The write and replication routes read their bodies themselves (signed batches, capped as they stream)
and answer with bytes they have at hand: they run as `DirectRoute`s, documented like the others but
served without FastAPI's parameter solving and response validation, which would add about two thirds
to the HTTP handling of each request (the write path is what `bench/cstore.py` measures).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

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
from r1os.node._api import ERROR_RESPONSES

if TYPE_CHECKING:
    from r1os.cstore._service import CStoreService

#: Largest body of a request carrying many batches (`/batches`, `/push`) or digests (`/sync`).
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_BATCHES_PER_REQUEST = 1_000  # POST /v1/cstore/batches
LOCAL_CLIENTS = ("127.0.0.1", "::1", "localhost")

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


def op_from_json(o: dict[str, Any], now_ms: int) -> Op:
    """An op of an unsigned write request: `{"op", "key", "field", "value", "ttl"}` (ttl in seconds)."""
    kind = o["op"]
    if kind not in ("set", "del", "hset", "hdel"):
        raise ValueError(f"unknown op {kind!r}")
    ttl = o.get("ttl")
    expires = None if ttl is None else now_ms + max(1, int(float(ttl) * 1000))
    return Op(kind, o["key"], o.get("field"), o.get("value"), expires)


def add_routes(router: APIRouter, svc: CStoreService) -> None:
    """Put CSTORE's routes on `router`, each answering from `svc`."""
    errors = ERROR_RESPONSES

    # -- reads ---------------------------------------------------------------------------------

    @router.get("/v1/cstore/get", response_model=GetAnswer, responses=errors)
    async def get(key: str) -> GetAnswer:
        return GetAnswer(key=key, found=await svc.exists(key), value=await svc.get(key))

    @router.get("/v1/cstore/keys", response_model=KeysAnswer, responses=errors)
    async def keys(prefix: str = "") -> KeysAnswer:
        return KeysAnswer(prefix=prefix, keys=await svc.keys(prefix))

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
        return WaitAnswer(key=key, field=field, value=await svc.wait(key, field, timeout))

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
        b = await svc.submit(await read_body(request, svc.limits.max_batch_bytes))
        return _json(orjson.dumps({"id": b.id, "ops": len(b.ops), "hlc": list(svc.hlc)}))

    async def batches(request: Request) -> Response:
        """Several signed batches in one request, one per line (canonical JSON has no newlines).
        Each is accepted or refused on its own, like the commands of a Redis pipeline."""
        try:
            body = await read_body(request, MAX_REQUEST_BYTES)
            raws = [line for line in body.split(b"\n") if line.strip()]
            if not 1 <= len(raws) <= MAX_BATCHES_PER_REQUEST:
                raise CStoreError("too_large", f"a request holds 1 to {MAX_BATCHES_PER_REQUEST} batches")
        except CStoreError as exc:
            svc.refused(exc)
            raise
        results = [
            {"error": str(r), "cause": r.cause, "hint": r.hint}
            if isinstance(r, CStoreError)
            else {"id": r.id, "ops": len(r.ops)}
            for r in await svc.submit_many(raws)
        ]
        return _json(orjson.dumps({"results": results, "hlc": list(svc.hlc)}))

    async def write(request: Request) -> Response:
        """Unsigned writes from apps on this machine (`{"ops": [{"op", "key", "field", "value",
        "ttl"}, ...]}`): the node signs them as itself."""
        client = request.client.host if request.client else ""
        if client not in LOCAL_CLIENTS:
            raise CStoreError(
                "forbidden",
                "unsigned writes are only accepted from this machine",
                hint="sign batches with your own key (r1os.Session(key=...)): POST /v1/cstore/batch",
            )
        try:
            body = orjson.loads(await read_body(request, svc.limits.max_batch_bytes))
            now = time.time_ns() // 1_000_000
            ops = [op_from_json(o, now) for o in body["ops"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CStoreError("malformed", f"bad write request: {exc}") from None
        b = await svc.write(ops)
        return _json(orjson.dumps({"id": b.id, "ops": len(b.ops), "writer": b.writer}))

    # -- between replicas ----------------------------------------------------------------------

    async def sync(request: Request) -> Response:
        """An anti-entropy round: `{"digests": base64 bucket digests, "horizon": ms}`."""
        try:
            body = orjson.loads(await read_body(request, MAX_REQUEST_BYTES))
            horizon = body.get("horizon")
            if horizon is not None and type(horizon) is not int:
                raise TypeError("horizon must be an integer")
            digests = body["digests"]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise CStoreError("malformed", f"bad sync request: {exc}") from None
        return _json(orjson.dumps(svc.answer_sync(digests, horizon)))

    async def push(request: Request) -> Response:
        """Batches a peer pushes in an anti-entropy round: `{"batches": [signed batch, ...]}`."""
        try:
            body = orjson.loads(await read_body(request, MAX_REQUEST_BYTES))
            batches = body["batches"]
            if not isinstance(batches, list):
                raise TypeError("batches must be a list")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise CStoreError("malformed", f"bad push request: {exc}") from None
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
    async def get_batch(batch_id: str) -> Response:
        """A signed batch by id, as its writer signed it (replicas pull the batches too large to be
        broadcast inline)."""
        raw = svc.batch(batch_id)
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
