"""HTTP routes of R1FS on the node: the read-only `/ipfs/<cid>` gateway and the `/v1/r1fs/*` API.

Routes raise `R1fsError`s; the node's error handler answers them with their status and
`{"error", "cause", "hint"}`, like every error of every route of a node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from r1os.errors import R1osError, error_body
from r1os.node import ERROR_RESPONSES, ErrorAnswer
from r1os.r1fs._dag import Cid, parse_cid
from r1os.r1fs._errors import BadUpload, R1fsError, TooLarge
from r1os.r1fs._fetcher import LOCAL_ONLY
from r1os.r1fs._models import (
    AddAnswer,
    GcAnswer,
    LocalAnswer,
    PinAnswer,
    PinList,
    StatAnswer,
    StatsAnswer,
    UnpinAnswer,
)

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


@contextlib.contextmanager
def _refusals(what: str, *, quiet: bool = False) -> Iterator[None]:
    """Log a refusal a route ends with (the node's handler answers it, and logs failures of 500 and
    up itself); an OS error becomes an R1FS one, so its message reaches the caller. `quiet` leaves out
    404s: peers ask around for blocks, and a miss is normal."""
    try:
        yield
    except R1osError as exc:
        if exc.status < 500 and not (quiet and exc.status == 404):
            log.warning("r1fs %s refused (%d): %s", what, exc.status, exc)
        raise
    except OSError as exc:
        raise R1fsError(f"{what}: {exc}", cause="io", hint="see the node's log") from exc


class PinBody(BaseModel):
    cid: str
    replicas: int = Field(1, ge=1, le=64)


class UnpinBody(BaseModel):
    cid: str


_FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "the file (206: the Range asked for)"},
    416: {"model": ErrorAnswer, "description": "the Range lies past the end (`Content-Range: bytes */size`)"},
}


def mount(router: APIRouter, svc: R1fsService) -> None:
    async def serve_file(request: Request, cid_text: str, what: str, download: bool) -> Response:
        with _refusals(what):
            cid = parse_cid(cid_text)
            etag = f'"{cid}"'
            if (
                etag in request.headers.get("if-none-match", "")
                or request.headers.get("if-none-match") == "*"
            ):
                return Response(status_code=304, headers={"ETag": etag})
            local_only = request.headers.get(LOCAL_ONLY) is not None
            if not local_only:
                await svc.fetcher.fetch_root(cid)  # the size is in the root: enough for HEAD and Range
            size = await svc.size(cid)
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
            header = request.headers["range"]
            log.info("r1fs %s: unsatisfiable range %r for %s (%d bytes)", what, header, cid, size)
            # The error shape, but answered here: a 416 carries the file's size in Content-Range.
            answer = error_body(f"range {header!r} lies past the end of the file ({size} bytes)", "bad_range")
            headers["Content-Range"] = f"bytes */{size}"
            return JSONResponse(answer, status_code=416, headers=headers)
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
            with _refusals(what):
                span = None if rng is None else (start, start + length - 1)
                fetching = await svc.fetcher.fetch_running(cid, span)

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

    # GET and HEAD as two routes (one `api_route` for both gives them one operation id in the schema).
    @router.get("/ipfs/{cid}", response_class=Response, responses={**_FILE, **ERROR_RESPONSES})
    @router.head(
        "/ipfs/{cid}",
        response_class=Response,
        responses={**_FILE, **ERROR_RESPONSES},
        operation_id="gateway_head",
    )
    async def gateway(cid: str, request: Request) -> Response:
        """Read-only IPFS path gateway for files (with Range, ETag = the CID)."""
        return await serve_file(request, cid, "gateway", False)

    @router.get("/ipfs/{cid}/{path:path}", response_class=Response, responses=ERROR_RESPONSES)
    async def gateway_path(cid: str, path: str) -> Response:
        """Always 404: R1FS holds files, not directories."""
        raise R1fsError(
            "R1FS holds files, not directories: no paths under a CID",
            cause="not_found",
            status=404,
            hint="ask for /ipfs/<cid> itself",
        )

    @router.get("/v1/r1fs/get", response_class=Response, responses={**_FILE, **ERROR_RESPONSES})
    @router.head(
        "/v1/r1fs/get",
        response_class=Response,
        responses={**_FILE, **ERROR_RESPONSES},
        operation_id="get_head",
    )
    async def get(cid: str, request: Request) -> Response:
        """The file under `cid` (fetched from providers if needed), Range supported."""
        return await serve_file(request, cid, "get", True)

    @router.get(
        "/v1/r1fs/block/{cid}",
        response_class=Response,
        responses={200: {"content": {"application/vnd.ipld.raw": {}}, "description": "the block"},
                   **ERROR_RESPONSES},
    )  # fmt: skip
    async def block(cid: str) -> Response:
        """One raw block, for peers (they verify its hash)."""
        with _refusals("block", quiet=True):
            data = await svc.get_block(parse_cid(cid))
        return Response(data, media_type="application/vnd.ipld.raw")

    @router.post("/v1/r1fs/add", responses=ERROR_RESPONSES)
    async def add(
        request: Request, pin: bool = True, replicas: Annotated[int, Query(ge=1, le=64)] = 1
    ) -> AddAnswer:
        """Store the request body as a file; the body streams through, never held whole."""
        limit = svc.settings.max_upload
        declared = request.headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        with _refusals("add"):
            if size is not None and size > limit:
                raise TooLarge(f"upload of {size} bytes exceeds the limit of {limit}")
            try:
                result = await svc.add_stream(request.stream(), pin=pin, replicas=replicas, expect_size=size)
            except ClientDisconnect:
                raise BadUpload("upload ended early (client disconnected)") from None
        return AddAnswer(
            cid=str(result.cid), size=result.size, blocks=result.blocks, pinned=pin, replicas=replicas
        )

    @router.get("/v1/r1fs/local", responses=ERROR_RESPONSES)
    async def local() -> LocalAnswer:
        """The Unix socket where clients on this machine hand over open files (null when off)."""
        return LocalAnswer(socket=svc.local.name if svc.local is not None else None)

    @router.post("/v1/r1fs/pin", responses=ERROR_RESPONSES)
    async def pin(body: PinBody) -> PinAnswer:
        """Keep the file here (fetching it if needed) and ask for `replicas` copies in all."""
        with _refusals("pin"):
            return await svc.pin(body.cid, body.replicas)

    @router.post("/v1/r1fs/unpin", responses=ERROR_RESPONSES)
    async def unpin(body: UnpinBody) -> UnpinAnswer:
        """Release this node's pin and its replication request."""
        with _refusals("unpin"):
            return await svc.unpin(body.cid)

    @router.get("/v1/r1fs/ls", responses=ERROR_RESPONSES)
    async def ls() -> PinList:
        """This node's pins."""
        return PinList(pins=svc.ls())

    @router.get("/v1/r1fs/stat", responses=ERROR_RESPONSES)
    async def stat(cid: str) -> StatAnswer:
        """Size, local/complete, pin kind, providers and replicas of a file."""
        with _refusals("stat"):
            return await svc.stat(cid)

    @router.post("/v1/r1fs/gc", responses=ERROR_RESPONSES)
    async def gc() -> GcAnswer:
        """Collect garbage now (`busy` if an import or fetch was writing)."""
        r = await asyncio.to_thread(svc.gc)
        return GcAnswer(kept=r.kept, removed=r.removed, freed=r.freed, busy=r.busy)

    @router.get("/v1/r1fs/stats", responses=ERROR_RESPONSES)
    async def stats() -> StatsAnswer:
        """Store size and fetch counters."""
        return await svc.stats()
