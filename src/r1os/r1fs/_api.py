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

import logging
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from r1os.errors import WireError
from r1os.node import ERROR_RESPONSES, Caller, Unauthenticated
from r1os.r1fs._dag import MAX_CID_LENGTH, parse_cid
from r1os.r1fs._errors import BadRequest, BadUpload, TooLarge
from r1os.r1fs._fetcher import RUNS_HEADER
from r1os.r1fs._gateway import FILE_RESPONSES, mount_gateway, serve_file
from r1os.r1fs._gateway import refusals as _refusals
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
from r1os.r1fs._unixfs_dir import NotADirectory
from r1os.wire import UNSIGNED_BODY, parse_authorization

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs.api")

#: Pins one `ls` answers with by default, and at most (cause `invalid_request` past it): a node may hold
#: 100,000 pins of signed callers, which an anonymous reader must not get in one answer.
LS_PAGE = 1000
MAX_LS_PAGE = 10_000
#: Longest path under a CID that `dir` resolves (cause `invalid_request`): 64 folders of long names.
MAX_DIR_PATH = 4096
#: Longest Content-Length taken as a number (20 digits pass any max_upload); longer is a bad request.
MAX_LENGTH_DIGITS = 20


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
    target: str | None = None
    """a symbolic link's target (as stored: never followed by the node)"""


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


async def begin_upload(svc: R1fsService, request: Request, noun: str = "upload") -> tuple[Caller, int | None]:
    """What every streamed upload (a file, a folder's tar, a CAR) checks before it reads a byte: a
    signature over body=UNSIGNED (or the operator's token), and a Content-Length, if any, that is a size
    within `max_upload`. Returns the caller and that length."""
    _streamed_signature(request)
    caller = await svc.ctx.auth.require(request, signed_body=False)
    size = _content_length(request)
    limit = svc.settings.max_upload
    if size is not None and size > limit:
        raise TooLarge(f"{noun} of {size} bytes exceeds the limit of {limit}")
    return caller, size


def mount(router: APIRouter, svc: R1fsService) -> None:
    mount_gateway(router, svc)  # the /ipfs routes and CAR import (_gateway.py)

    @router.get("/v1/r1fs/get", response_class=Response, responses={**FILE_RESPONSES, **ERROR_RESPONSES})
    @router.head(
        "/v1/r1fs/get",
        response_class=Response,
        responses={**FILE_RESPONSES, **ERROR_RESPONSES},
        operation_id="get_head",
    )
    async def get(cid: str, request: Request) -> Response:
        """The file under `cid` (fetched from providers if needed), Range supported."""
        return await serve_file(svc, request, cid, "get", download=True)

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
        headers = {RUNS_HEADER: str(svc.runs.port)} if svc.runs is not None else None
        return Response(data, media_type="application/vnd.ipld.raw", headers=headers)

    @router.post("/v1/r1fs/add", responses=ERROR_RESPONSES)
    async def add(
        request: Request,
        pin: bool = True,
        replicas: Annotated[int, Query(ge=1, le=REPLICAS_CEILING)] = 1,
    ) -> AddAnswer:
        """Store the request body as a file, pinned as the signer (quota); the body streams through,
        never held whole. Signed (body=UNSIGNED) or the operator's token."""
        with _refusals("add"):
            caller, size = await begin_upload(svc, request)
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
        """Store a folder sent as a tar stream (`application/x-tar`: regular files, folders and symbolic
        links; pax and GNU long names) as a UnixFS tree, pinned as the signer (quota); streamed, never
        held whole. Signed (body=UNSIGNED) or the operator's token."""
        with _refusals("add-tree"):
            caller, size = await begin_upload(svc, request)
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
            out = [
                DirEntryAnswer(name=e.name, cid=str(e.cid), type=k, size=size, tsize=e.tsize, target=target)
                for e, k, size, target in await svc.describe(page[:limit])
            ]
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
