"""HTTP routes of R1FS on the node: the read-only `/ipfs/<cid>` gateway and the `/v1/r1fs/*` API."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from r1os.r1fs._dag import Cid, parse_cid
from r1os.r1fs._errors import BadCid, BadUpload, BlockNotFound, CorruptBlock, R1fsError, TooLarge
from r1os.r1fs._service import LOCAL_ONLY

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs.api")

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` range as (start, end inclusive); None means "send it all" (no, or unusable,
    Range: RFC 9110 lets a server ignore what it does not support, e.g. several ranges);
    `Unsatisfiable` when the range lies past the end."""
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(size - n, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # invalid range spec: ignored
    if start >= size:
        raise Unsatisfiable
    return start, end


def _error(status: int, exc: Exception, what: str) -> JSONResponse:
    log.warning("r1fs %s refused (%d): %s", what, status, exc)
    body: dict[str, Any] = {"error": str(exc)}
    hint = getattr(exc, "hint", None)
    if hint:
        body["hint"] = hint
    return JSONResponse(body, status_code=status)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, (BadCid, BadUpload)):
        return 400
    if isinstance(exc, BlockNotFound):
        return 404
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, CorruptBlock):
        return 502
    return 500


class PinBody(BaseModel):
    cid: str
    replicas: int = Field(1, ge=1, le=64)


class UnpinBody(BaseModel):
    cid: str


def mount(router: APIRouter, svc: R1fsService) -> None:
    async def serve_file(request: Request, cid_text: str, what: str, download: bool) -> Response:
        try:
            cid = parse_cid(cid_text)
            etag = f'"{cid}"'
            if (
                etag in request.headers.get("if-none-match", "")
                or request.headers.get("if-none-match") == "*"
            ):
                return Response(status_code=304, headers={"ETag": etag})
            local_only = request.headers.get(LOCAL_ONLY) is not None
            if not local_only:
                await svc.fetch_root(cid)  # the size is in the root: enough for HEAD and Range
            size = await svc.size(cid)
        except (R1fsError, OSError) as exc:
            return _error(_status_of(exc), exc, what)
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "public, max-age=29030400, immutable",
            "X-Ipfs-Path": f"/ipfs/{cid}",
        }
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{cid}"'
        try:
            rng = parse_range(request.headers.get("range"), size)
        except Unsatisfiable:
            log.info(
                "r1fs %s: unsatisfiable range %r for %s (%d bytes)", what, request.headers["range"], cid, size
            )
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if rng is None:
            start, length, status = 0, size, 200
        else:
            start, length, status = rng[0], rng[1] - rng[0] + 1, 206
            headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type="application/octet-stream")
        fetching = None
        if not local_only and length:  # only the blocks of the bytes asked for (all without a Range)
            try:
                fetching = await svc.fetch_running(cid, None if rng is None else (start, start + length - 1))
            except (R1fsError, OSError) as exc:
                return _error(_status_of(exc), exc, what)

        async def body(c: Cid = cid) -> AsyncIterator[bytes]:
            try:
                async for piece in svc.read(c, start, length, fetching=fetching):
                    yield piece
            except R1fsError as exc:  # headers are gone: all we can do is cut the stream short
                log.error("r1fs %s: %s failed mid-stream: %s", what, c, exc)
                raise

        return StreamingResponse(
            body(), status_code=status, headers=headers, media_type="application/octet-stream"
        )

    @router.api_route("/ipfs/{cid}", methods=["GET", "HEAD"])
    async def gateway(cid: str, request: Request) -> Response:
        """Read-only IPFS path gateway for files (with Range, ETag = the CID)."""
        return await serve_file(request, cid, "gateway", False)

    @router.get("/ipfs/{cid}/{path:path}")
    async def gateway_path(cid: str, path: str) -> Response:
        return _error(404, R1fsError("R1FS holds files, not directories: no paths under a CID"), "gateway")

    @router.api_route("/v1/r1fs/get", methods=["GET", "HEAD"])
    async def get(cid: str, request: Request) -> Response:
        """The file under `cid` (fetched from providers if needed), Range supported."""
        return await serve_file(request, cid, "get", True)

    @router.get("/v1/r1fs/block/{cid}")
    async def block(cid: str) -> Response:
        """One raw block, for peers (they verify its hash)."""
        try:
            data = svc.store.get(parse_cid(cid))
        except (R1fsError, OSError) as exc:
            status = _status_of(exc)
            if status == 404:  # peers ask around: a miss is normal, not worth a log line
                return JSONResponse({"error": str(exc)}, status_code=404)
            return _error(status, exc, "block")
        return Response(data, media_type="application/vnd.ipld.raw")

    @router.post("/v1/r1fs/add")
    async def add(request: Request, pin: bool = True, replicas: int = 1) -> Response:
        """Store the request body as a file; the body streams through, never held whole."""
        limit = svc.settings.max_upload
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, TooLarge(f"upload of {declared} bytes exceeds the limit of {limit}"), "add")
        if not 1 <= replicas <= 64:
            return _error(400, R1fsError("replicas must be between 1 and 64"), "add")
        try:
            size = int(declared) if declared is not None and declared.isdigit() else None
            result = await svc.add_stream(request.stream(), pin=pin, replicas=replicas, expect_size=size)
        except ClientDisconnect:
            return _error(400, R1fsError("upload ended early (client disconnected)"), "add")
        except R1fsError as exc:
            return _error(_status_of(exc), exc, "add")
        if declared is not None and declared.isdigit() and int(declared) != result.size:
            return _error(
                400, R1fsError(f"body had {result.size} bytes, Content-Length said {declared}"), "add"
            )
        return JSONResponse(
            {"cid": str(result.cid), "size": result.size, "blocks": result.blocks, "pinned": pin,
             "replicas": replicas}
        )  # fmt: skip

    @router.get("/v1/r1fs/local")
    async def local() -> dict[str, Any]:
        """The Unix socket where clients on this machine hand over open files (null when off)."""
        return {"socket": svc.local.name if svc.local is not None else None}

    @router.post("/v1/r1fs/pin")
    async def pin(body: PinBody) -> Response:
        try:
            return JSONResponse(await svc.pin(body.cid, body.replicas))
        except R1fsError as exc:
            return _error(_status_of(exc), exc, "pin")

    @router.post("/v1/r1fs/unpin")
    async def unpin(body: UnpinBody) -> Response:
        try:
            return JSONResponse(await svc.unpin(body.cid))
        except R1fsError as exc:
            return _error(_status_of(exc), exc, "unpin")

    @router.get("/v1/r1fs/ls")
    async def ls() -> dict[str, Any]:
        return {"pins": svc.ls()}

    @router.get("/v1/r1fs/stat")
    async def stat(cid: str) -> Response:
        try:
            return JSONResponse(await svc.stat(cid))
        except R1fsError as exc:
            return _error(_status_of(exc), exc, "stat")

    @router.post("/v1/r1fs/gc")
    async def gc() -> dict[str, Any]:
        r = await asyncio.to_thread(svc.gc)
        return {"kept": r.kept, "removed": r.removed, "freed": r.freed, "busy": r.busy}

    @router.get("/v1/r1fs/stats")
    async def stats() -> dict[str, Any]:
        return {"store": await asyncio.to_thread(svc.store.stats), "pins": len(svc.pins), **svc.counters}
