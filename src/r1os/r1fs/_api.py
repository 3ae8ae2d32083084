"""HTTP routes of R1FS on the node: the read-only `/ipfs/<cid>` gateway and the `/v1/r1fs/*` API.

Routes raise `R1fsError`s; the node's error handler answers them with their status and
`{"error", "cause", "hint"}`, like every error of every route of a node.

Who may call what (`ctx.auth`): reads (gateway, get, stat, ls, stats, local) are anonymous; add and pin
need a signed request (or the operator's token) and count against the signer's quota; unpin releases
the signer's own pin (the operator's: any); gc is the operator's. Blocks and block runs for peers
(`/v1/r1fs/block/*`, and the gateway with `X-R1fs-Local-Only`) need an admitted node's signature when
the node runs dAuth. Every value a request declares is bounded where it enters (docs/r1fs.md, Bounds).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from r1os.errors import R1osError, WireError, error_body
from r1os.node import ERROR_RESPONSES, ErrorAnswer, Unauthenticated
from r1os.r1fs._dag import MAX_CID_LENGTH, Cid, parse_cid, read_file_node
from r1os.r1fs._errors import BadRequest, BadUpload, R1fsError, TooLarge
from r1os.r1fs._fetcher import LOCAL_ONLY
from r1os.r1fs._limits import REPLICAS_CEILING
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
from r1os.r1fs._unixfs_dir import NotADirectory, kind_of
from r1os.wire import UNSIGNED_BODY, parse_authorization

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs.api")

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,20})\s*-\s*(\d{0,20})\s*$")
#: Longest Range header looked at: one `bytes=a-b` of 20-digit numbers fits; longer ones (many ranges,
#: numbers past any file) are ignored, as RFC 9110 lets a server do, and the whole file is sent.
MAX_RANGE_HEADER = 64
#: Pins one `ls` answers with by default, and at most (cause `invalid_request` past it): a node may hold
#: 100,000 pins of signed callers, which an anonymous reader must not get in one answer.
LS_PAGE = 1000
MAX_LS_PAGE = 10_000
#: Longest path under a CID that `dir` resolves (cause `invalid_request`): 64 folders of long names.
MAX_DIR_PATH = 4096
#: Longest Content-Length taken as a number (20 digits pass any max_upload); longer is a bad request.
MAX_LENGTH_DIGITS = 20


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` range as (start, end inclusive); None means "send it all" (no, or unusable,
    Range: RFC 9110 lets a server ignore what it does not support, e.g. several ranges);
    `Unsatisfiable` when the range lies past the end."""
    if not header or len(header) > MAX_RANGE_HEADER:
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


class AddTreeAnswer(BaseModel):
    """A folder added from a tar upload: its root CID (as `ipfs add -r --cid-version=1`), file bytes,
    blocks written, files and folders (the root included), whether it is pinned and how many copies."""

    cid: str
    size: int
    dag_size: int
    blocks: int
    files: int
    dirs: int
    pinned: bool
    replicas: int


class DirEntryAnswer(BaseModel):
    name: str
    cid: str
    type: str
    """file, directory or symlink"""
    size: int | None
    """a file's size (from its root block); None for a folder or a symlink"""
    tsize: int
    """the link's Tsize: bytes of the entry's whole DAG, as its folder declares"""


class DirListing(BaseModel):
    cid: str
    """the folder listed (the path's end, when a path was given)"""
    entries: list[DirEntryAnswer]
    next: str | None
    """the `after` of the next page; null at the end"""


class PinBody(BaseModel):
    cid: str = Field(max_length=MAX_CID_LENGTH)
    replicas: int = Field(1, ge=1, le=REPLICAS_CEILING)


class UnpinBody(BaseModel):
    cid: str = Field(max_length=MAX_CID_LENGTH)
    pinner: str | None = Field(None, max_length=42)
    """Whose pin to release: the caller's own (signed callers), any (the node's operator; None: all)."""


def _streamed_signature(request: Request) -> None:
    """The add route streams its body: a signature must not claim the body's hash (checking it would
    mean holding the whole upload in memory before a byte is stored). Refused before it is read."""
    value = request.headers.get("authorization", "")
    if not value.startswith("R1OS-SIG "):
        return
    try:
        claim = parse_authorization(value)
    except WireError:
        return  # malformed: `require` refuses it with its own cause
    if claim.body != UNSIGNED_BODY:
        raise Unauthenticated(
            "an upload is signed with body=UNSIGNED (what is stored is named by its own hash)",
            cause="bad_auth",
            hint="sign_request(..., body=None)",
        )


def _content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    declared = declared.strip()
    if not declared.isdigit() or len(declared) > MAX_LENGTH_DIGITS:
        raise BadRequest(f"Content-Length {declared[:30]!r} is not a size")
    return int(declared)


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
            if local_only:  # a peer's block run: the network's own traffic
                await svc.check_peer(request)
                size = await svc.size(cid)
            else:  # the size is in the root: enough for HEAD and Range
                size = svc.size_of(cid, await svc.fetcher.fetch_root(cid))
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
    async def block(cid: str, request: Request) -> Response:
        """One raw block, for peers (they verify its hash); admitted nodes only when dAuth is on."""
        with _refusals("block", quiet=True):
            await svc.check_peer(request)
            data = await svc.get_block(parse_cid(cid))
        return Response(data, media_type="application/vnd.ipld.raw")

    @router.post("/v1/r1fs/add", responses=ERROR_RESPONSES)
    async def add(
        request: Request,
        pin: bool = True,
        replicas: Annotated[int, Query(ge=1, le=REPLICAS_CEILING)] = 1,
    ) -> AddAnswer:
        """Store the request body as a file, pinned as the signer (quota); the body streams through,
        never held whole. Signed (body=UNSIGNED) or the operator's token."""
        limit = svc.settings.max_upload
        with _refusals("add"):
            _streamed_signature(request)
            caller = await svc.ctx.auth.require(request, signed_body=False)
            size = _content_length(request)
            if size is not None and size > limit:
                raise TooLarge(f"upload of {size} bytes exceeds the limit of {limit}")
            try:
                result = await svc.add_stream(
                    request.stream(), pin=pin, replicas=replicas, expect_size=size, caller=caller
                )
            except ClientDisconnect:
                raise BadUpload("upload ended early (client disconnected)") from None
        return AddAnswer(
            cid=str(result.cid), size=result.size, blocks=result.blocks, pinned=pin, replicas=replicas
        )

    @router.post("/v1/r1fs/add-tree", responses=ERROR_RESPONSES)
    async def add_tree(
        request: Request,
        pin: bool = True,
        replicas: Annotated[int, Query(ge=1, le=REPLICAS_CEILING)] = 1,
    ) -> AddTreeAnswer:
        """Store a folder sent as a tar stream (`application/x-tar`: regular files and folders; pax
        and GNU long names) as a UnixFS tree, pinned as the signer (quota); streamed, never held whole.
        Signed (body=UNSIGNED) or the operator's token."""
        limit = svc.settings.max_upload
        with _refusals("add-tree"):
            _streamed_signature(request)
            caller = await svc.ctx.auth.require(request, signed_body=False)
            size = _content_length(request)
            if size is not None and size > limit:
                raise TooLarge(f"upload of {size} bytes exceeds the limit of {limit}")
            try:
                result = await svc.add_tar(
                    request.stream(), pin=pin, replicas=replicas, expect_size=size, caller=caller
                )
            except ClientDisconnect:
                raise BadUpload("upload ended early (client disconnected)") from None
        return AddTreeAnswer(
            cid=str(result.cid), size=result.size, dag_size=result.dag_size, blocks=result.blocks,
            files=result.files, dirs=result.dirs, pinned=pin, replicas=replicas,
        )  # fmt: skip

    @router.get("/v1/r1fs/dir", responses=ERROR_RESPONSES)
    async def dir_list(
        cid: Annotated[str, Query(max_length=MAX_CID_LENGTH)],
        path: Annotated[str, Query(max_length=MAX_DIR_PATH)] = "",
        after: Annotated[str, Query(max_length=255 * 4)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LS_PAGE)] = LS_PAGE,
    ) -> DirListing:
        """A folder's entries by name, a page at a time (`path`: a folder under `cid`), each with its
        type and a file's size (the entries' root blocks are fetched if need be)."""
        with _refusals("dir"):
            target, kind = await svc.resolve_path(cid, path)
            if kind != "directory":
                raise NotADirectory(f"{path or cid} is a {kind}, not a folder", hint="r1os fs get it instead")
            page = await svc.list_folder(target, after=after, limit=limit + 1)
            out = []
            for e in page[:limit]:
                block = await svc.fetch_block(e.cid)
                k = kind_of(e.cid, block)
                size = read_file_node(e.cid, block).filesize if k == "file" else None
                out.append(DirEntryAnswer(name=e.name, cid=str(e.cid), type=k, size=size, tsize=e.tsize))
        more = len(page) > limit
        return DirListing(cid=str(target), entries=out, next=page[limit - 1].name if more else None)

    @router.get("/v1/r1fs/local", responses=ERROR_RESPONSES)
    async def local() -> LocalAnswer:
        """The Unix socket where clients on this machine hand over open files (null when off)."""
        return LocalAnswer(socket=svc.local.name if svc.local is not None else None)

    @router.post("/v1/r1fs/pin", responses=ERROR_RESPONSES)
    async def pin(body: PinBody, request: Request) -> PinAnswer:
        """Pin the file here as the signer (fetching it if needed; quota) and ask for `replicas` copies."""
        with _refusals("pin"):
            caller = await svc.ctx.auth.require(request)
            return await svc.pin(body.cid, body.replicas, caller=caller)

    @router.post("/v1/r1fs/unpin", responses=ERROR_RESPONSES)
    async def unpin(body: UnpinBody, request: Request) -> UnpinAnswer:
        """Release the signer's pin (the operator: `pinner`'s, or every pin); the file stays pinned
        while any pinner holds it."""
        with _refusals("unpin"):
            caller = await svc.ctx.auth.require(request)
            return await svc.unpin(body.cid, caller=caller, pinner=body.pinner)

    @router.get("/v1/r1fs/ls", responses=ERROR_RESPONSES)
    async def ls(
        request: Request,
        after: Annotated[str, Query(max_length=MAX_CID_LENGTH)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LS_PAGE)] = LS_PAGE,
    ) -> PinList:
        """This node's pins by CID, a page at a time (`next`: the `after` of the next page; null at the
        end), with their pinners for the node's operator."""
        caller = await svc.ctx.auth.caller(request)
        pins = svc.ls(pinners=caller.local, after=after, limit=limit + 1)
        more = len(pins) > limit
        return PinList(pins=pins[:limit], next=pins[limit - 1].cid if more else None)

    @router.get("/v1/r1fs/stat", responses=ERROR_RESPONSES)
    async def stat(cid: str) -> StatAnswer:
        """Size, local/complete, pin kind, providers and replicas of a file."""
        with _refusals("stat"):
            return await svc.stat(cid)

    @router.post("/v1/r1fs/gc", responses=ERROR_RESPONSES)
    async def gc(request: Request) -> GcAnswer:
        """Collect garbage now: the node's operator only (`busy` if a collection was running)."""
        with _refusals("gc"):
            await svc.ctx.auth.require(request, local=True)
        r = await svc.collect()
        return GcAnswer(kept=r.kept, removed=r.removed, freed=r.freed, busy=r.busy, held=r.held)

    @router.get("/v1/r1fs/stats", responses=ERROR_RESPONSES)
    async def stats() -> StatsAnswer:
        """Store size and fetch counters."""
        return await svc.stats()
