"""The node's IPFS gateway, `GET/HEAD /ipfs/<cid>[/<path>]`, and CAR import (`POST /v1/r1fs/import`).

One route answers three kinds of request (IPFS Path Gateway and Trustless Gateway specs,
https://specs.ipfs.tech/http-gateways/):

- **raw block** (`?format=raw` or `Accept: application/vnd.ipld.raw`): the block's bytes, which the
  client hashes itself; no path allowed.
- **CAR** (`?format=car` or `Accept: application/vnd.ipld.car`): a CARv1 stream of the blocks along the
  path, then those of the entity at its end as `dag-scope` says (`block`, `entity`, `all`; `entity-bytes`
  for a byte range of a file), in depth-first order, each distinct block once (`dups=n`, or `dups=y`
  on request). Streamed as the walk goes: a block is read, written and let go.
- **deserialized** (anything else): the file's bytes (one `Range`, `HEAD`, ETag), a folder's
  `index.html`, or a plain HTML listing of the folder.

Every walk is bounded by the node's `DagLimits` (depth, blocks); what a block declares is checked
before it is acted on (`read_file_node`). Blocks the node lacks are fetched from providers. Refusals
raise `R1fsError`s answered in the node's error shape; a walk that fails after the status went out
cuts the stream short (a CAR client detects the missing blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from r1os.errors import R1osError, error_body
from r1os.node import ERROR_RESPONSES, ErrorAnswer
from r1os.r1fs._car import PROBE_CID, PROBE_CID_BYTES, BadCar, CarReader, encode_header, encode_section
from r1os.r1fs._dag import (
    RAW,
    UNIXFS_DIRECTORY,
    UNIXFS_FILE,
    UNIXFS_RAW,
    Cid,
    DagLimits,
    _fields,
    decode_pbnode,
    decode_unixfs,
    parse_cid,
    read_file_node,
)
from r1os.r1fs._errors import (
    BadRequest,
    BadUpload,
    BlockNotFound,
    CorruptBlock,
    DagRefused,
    R1fsError,
    TooLarge,
)
from r1os.r1fs._fetcher import LOCAL_ONLY, RUNS_HEADER
from r1os.r1fs._limits import REPLICAS_CEILING
from r1os.r1fs._meter import UploadMeter
from r1os.r1fs._unixfs_dir import BadPath, read_dir_block

if TYPE_CHECKING:
    from r1os.node import Caller
    from r1os.r1fs._service import R1fsService
    from r1os.r1fs._store import Hold

log = logging.getLogger("r1os.r1fs.api")

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
IMMUTABLE = "public, max-age=29030400, immutable"
#: Deserialized answers (a file's bytes, a folder's page) come from the node's own origin, which also
#: serves its dashboard: a sandbox makes any HTML or script in R1FS content a page of an opaque origin
#: of its own, with no access to the node's storage or API answers.
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-downloads"

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,20})\s*-\s*(\d{0,20})\s*$")
#: Longest Range header looked at: one `bytes=a-b` of 20-digit numbers fits; longer ones (many ranges,
#: numbers past any file) are ignored, as RFC 9110 lets a server do, and the whole file is sent.
MAX_RANGE_HEADER = 64
#: Longest path under a CID (characters; cause `bad_request`), and most segments in it.
MAX_PATH = 4096
MAX_SEGMENTS = 64
#: Longest Accept header looked at (longer: the deserialized answer, as if none was sent).
MAX_ACCEPT = 1024
#: Longest `entity-bytes` value (two signed 20-digit numbers).
MAX_ENTITY_BYTES = 48
#: Deepest a CAR walk goes, folders and file trees together (cause `dag_limit`).
MAX_WALK_DEPTH = 128
#: Blocks a CAR may hold besides those of one `max_upload` file (`DagLimits.max_blocks`): folder blocks,
#: HAMT shards and the other files of a tree (a tree holds at most 100,000 entries, `TreeLimits`).
TREE_BLOCKS = 200_000
#: Most entries a folder's HTML listing shows (the rest are counted; `?format=car` has them all).
MAX_LISTING = 10_000

UNIXFS_METADATA = 3
UNIXFS_SYMLINK = 4
UNIXFS_HAMT = 5


class Unsatisfiable(Exception):
    pass


class NotAcceptable(R1fsError):
    """The client accepts only response types this gateway does not make."""

    cause = "not_acceptable"
    status = 406
    hint = "this gateway answers application/vnd.ipld.raw, application/vnd.ipld.car (version=1) and files"


class NotCached(R1fsError):
    """`Cache-Control: only-if-cached` and the root block is not on this node."""

    cause = "not_cached"
    status = 412


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
def refusals(what: str, *, quiet: bool = False) -> Iterator[None]:
    """Log a refusal a route ends with (the node's handler answers it, and logs failures of 500 and
    up itself); an OS error becomes an R1FS one, so its message reaches the caller. `quiet` leaves out
    404s: peers ask around for blocks, and a miss is normal."""
    try:
        yield
    except R1osError as exc:
        if exc.status < 500 and not (quiet and exc.status == 404) and not getattr(exc, "_logged", False):
            log.warning("r1fs %s refused (%d): %s", what, exc.status, exc)
            exc._logged = True  # type: ignore[attr-defined]  # nested refusals log it once
        raise
    except OSError as exc:
        raise R1fsError(f"{what}: {exc}", cause="io", hint="see the node's log") from exc


# -- what a request asks for --------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """The response a gateway request asks for: `file` (deserialized), `raw` or `car` (with the CAR's
    `dups` and the DAG's scope and byte range)."""

    kind: str
    dups: bool = False
    scope: str = "all"
    entity_bytes: tuple[int, int | None] | None = None  # (from, to); negative: from the end; None: `*`


def _media(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an Accept header with their parameters, most preferred first (by `q`,
    then order)."""
    out: list[tuple[float, int, str, dict[str, str]]] = []
    for i, part in enumerate(accept.split(",")):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        params: dict[str, str] = {}
        for b in bits[1:]:
            k, _, v = b.partition("=")
            params[k.strip().lower()] = v.strip().strip('"').lower()
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            out.append((-q, i, bits[0].lower(), params))
    out.sort()
    return [(m, p) for _, _, m, p in out]


def _car_variant(params: dict[str, str]) -> bool | None:
    """The `dups` of a CAR variant this gateway makes (True: y), None if it makes none of it."""
    if params.get("version", "1") != "1" or params.get("order", "dfs") not in ("dfs", "unk", ""):
        return None
    dups = params.get("dups", "n")
    return None if dups not in ("y", "n") else dups == "y"


def _entity_bytes(text: str) -> tuple[int, int | None]:
    if len(text) > MAX_ENTITY_BYTES:
        raise BadRequest(f"entity-bytes {text[:60]!r} is too long")
    m = re.fullmatch(r"(-?\d{1,20}):(\*|-?\d{1,20})", text)
    if m is None:
        raise BadRequest(
            f"entity-bytes {text!r} is not from:to", hint="e.g. entity-bytes=0:1023, 1024:*, -1024:*"
        )
    first = int(m.group(1))
    last = None if m.group(2) == "*" else int(m.group(2))
    return first, last


def wanted(request: Request) -> Want:
    """Read `format`, `Accept`, `dag-scope`, `entity-bytes` and `car-*` of a gateway request; the
    `format` parameter wins over `Accept` (Trustless Gateway spec)."""
    q = request.query_params
    fmt = (q.get("format") or "").lower()
    kind = ""
    dups: bool | None = False
    if fmt in ("raw", "car"):
        kind = fmt
    elif fmt:
        raise BadRequest(
            f"format {fmt[:40]!r} is not served here", hint="format=raw (a block) or format=car (a CAR)"
        )
    accept = request.headers.get("accept", "")
    if not kind and accept and len(accept) <= MAX_ACCEPT:
        refused_car = False
        for media, params in _media(accept):
            if media == RAW_TYPE:
                kind = "raw"
            elif media == CAR_TYPE:
                dups = _car_variant(params)
                if dups is None:
                    refused_car = True
                    continue
                kind = "car"
            else:
                break  # the client prefers something else first: the deserialized answer
            break
        if not kind and refused_car and all(m in (RAW_TYPE, CAR_TYPE) for m, _ in _media(accept)):
            raise NotAcceptable(f"no CAR variant this gateway makes is accepted ({accept[:100]!r})")
    if kind == "car":
        if q.get("car-version", "1") != "1" or q.get("car-order", "dfs") not in ("dfs", "unk"):
            raise NotAcceptable("this gateway makes CARv1 in order=dfs only")
        if "car-dups" in q:
            if q["car-dups"] not in ("y", "n"):
                raise BadRequest(f"car-dups {q['car-dups'][:10]!r} is not y or n")
            dups = q["car-dups"] == "y"
        scope = q.get("dag-scope", "all")
        if scope not in ("all", "entity", "block"):
            raise BadRequest(f"dag-scope {scope[:20]!r} is not block, entity or all")
        rng = None
        if "entity-bytes" in q:
            rng = _entity_bytes(q["entity-bytes"])
            scope = "entity"
        return Want("car", dups=bool(dups), scope=scope, entity_bytes=rng)
    return Want(kind or "file")


def split_path(path: str) -> list[str]:
    """The segments of a path under a CID (an empty last one dropped, as in a folder's URL); refuses
    `.`, `..` and empty segments, and paths past the bounds (cause `bad_path`)."""
    if len(path) > MAX_PATH:
        raise BadPath(f"path of {len(path)} characters, more than {MAX_PATH}")
    if not path:
        return []
    segments = path[:-1].split("/") if path.endswith("/") else path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise BadPath(f"path of {len(segments)} segments, more than {MAX_SEGMENTS}")
    for s in segments:
        if s in ("", ".", ".."):
            raise BadPath(f"path {path[:200]!r} has an empty, '.' or '..' segment")
    return segments


# -- blocks and nodes -----------------------------------------------------------------------------


@dataclass
class Node:
    """What the gateway needs to know of a block: its kind and links (`read_file_node` for files)."""

    cid: Cid
    block: bytes
    kind: str  # raw | file | directory | hamt | symlink | dag-pb (not UnixFS, or metadata)
    links: list[tuple[Cid, str, int]] = field(default_factory=list)
    fanout: int = 0


def classify(cid: Cid, block: bytes) -> Node:
    if cid.codec == RAW:
        return Node(cid, block, "raw")
    pb = decode_pbnode(block)
    if pb.data is None:
        return Node(cid, block, "dag-pb", pb.links)
    fs = decode_unixfs(pb.data)
    kinds = {UNIXFS_RAW: "file", UNIXFS_FILE: "file", UNIXFS_DIRECTORY: "directory", UNIXFS_HAMT: "hamt"}
    kind = kinds.get(fs.type, "symlink" if fs.type == UNIXFS_SYMLINK else "dag-pb")
    fanout = 0
    if kind == "hamt":
        for num, _w, value in _fields(pb.data):
            if num == 6 and isinstance(value, int):
                fanout = value
        if fanout < 2 or fanout > 1024 or fanout & (fanout - 1):
            raise CorruptBlock(f"HAMT shard {cid} has fanout {fanout}, not a power of two up to 1024")
    return Node(cid, block, kind, pb.links, fanout)


class Blocks:
    """Blocks for one request: local ones from the store (held from GC while the request lasts),
    others fetched from providers (each checked against its CID); a file's leaves through one fetch
    of the file (`use_fetch`), which gets them in runs rather than one by one."""

    def __init__(self, svc: R1fsService, hold: Hold) -> None:
        self.svc = svc
        self.hold = hold
        self.fetching: dict[Cid, asyncio.Future[None] | None] = {}
        self.current: asyncio.Future[None] | None = None

    async def get(self, cid: Cid) -> bytes:
        store = self.svc.store
        if self.hold.keep(cid):
            return store.get(cid)
        if self.current is not None:
            await self.svc.fetcher.until_here(cid, self.current)
            return store.get(cid)
        return await self.svc.fetcher.fetch_root(cid)

    async def node(self, cid: Cid) -> Node:
        return classify(cid, await self.get(cid))

    async def use_fetch(self, root: Cid, span: tuple[int, int] | None = None) -> None:
        """Blocks of the file under `root` (the bytes of `span`) come through one fetch of it, started
        now unless its children are here already."""
        self.current = None
        node = read_file_node(root, await self.get(root))
        if all(self.svc.store.has(c) for c, _ in node.children):
            return
        self.current = await self.svc.fetcher.fetch_running(root, span)


# -- paths through folders --------------------------------------------------------------------------


@dataclass
class Resolved:
    """A path resolved: the blocks read on the way (for a CAR), the CID of each segment's node (for
    X-Ipfs-Roots) and the node at its end."""

    path_blocks: list[tuple[Cid, bytes]]
    roots: list[Cid]
    node: Node
    name: str  # the last segment ("" for the root)


async def lookup(blocks: Blocks, folder: Node, name: str, seen: list[tuple[Cid, bytes]]) -> Cid | None:
    """The CID `name` links to in a folder (a plain one, or a HAMT-sharded one through its shards); the
    shard blocks read on the way are appended to `seen`."""
    if folder.kind == "directory":
        for entry in read_dir_block(folder.cid, folder.block).entries:  # names checked
            if entry.name == name:
                return entry.cid
        return None
    if folder.kind == "hamt":
        from r1os.r1fs import _dirs  # the folder reader (HAMT hashing); loaded on first use

        found: Cid | None = await _dirs.hamt_lookup(folder.cid, folder.block, name, blocks.get, seen)
        return found
    raise BlockNotFound(
        f"no {name!r} under {folder.cid}: it is a {folder.kind}, not a folder", hint="ask for it alone"
    )


async def resolve(blocks: Blocks, root: Cid, segments: list[str]) -> Resolved:
    node = await blocks.node(root)
    path_blocks: list[tuple[Cid, bytes]] = []
    roots = [root]
    for i, name in enumerate(segments):
        path_blocks.append((node.cid, node.block))
        child = await lookup(blocks, node, name, path_blocks)
        if child is None:
            where = "/".join(segments[: i + 1])
            raise BlockNotFound(
                f"no {where!r} under {root}", hint="list the folder: /ipfs/<cid>/ or r1os fs ls"
            )
        node = await blocks.node(child)
        roots.append(child)
    return Resolved(path_blocks, roots, node, segments[-1] if segments else "")


async def entries(blocks: Blocks, folder: Node) -> AsyncIterator[tuple[str, Cid, int]]:
    """A folder's entries (name, CID, DAG size) in order, through HAMT shards too."""
    if folder.kind == "directory":
        for e in read_dir_block(folder.cid, folder.block).entries:  # names checked
            yield e.name, e.cid, e.tsize
        return
    from r1os.r1fs import _dirs

    async for entry in _dirs.hamt_entries(folder.cid, folder.block, blocks.get):
        yield entry


# -- CAR walk -----------------------------------------------------------------------------------


async def car_blocks(
    blocks: Blocks,
    resolved: Resolved,
    want: Want,
    limits: DagLimits,
    span: tuple[int, int] | None,
) -> AsyncIterator[tuple[Cid, bytes]]:
    """The blocks of a CAR answer in depth-first order: those read to resolve the path, then the entity
    at its end as `want.scope` says (`span`: the file bytes `entity-bytes` asked for, or None). Each
    distinct block once unless `want.dups`; at most `limits.max_blocks + TREE_BLOCKS` blocks (cause
    `dag_limit`), `MAX_WALK_DEPTH` deep."""
    seen: set[Cid] = set()
    emitted = 0

    def emit(cid: Cid) -> bool:
        nonlocal emitted
        if not want.dups:
            if cid in seen:
                return False
            seen.add(cid)
        emitted += 1
        if emitted > limits.max_blocks + TREE_BLOCKS:
            raise DagRefused(f"a CAR of more than {limits.max_blocks + TREE_BLOCKS} blocks")
        return True

    for cid, block in resolved.path_blocks:
        if emit(cid):
            yield cid, block
    top = resolved.node
    if want.scope == "block" or (span is not None and span[0] > span[1]):
        if emit(top.cid):
            yield top.cid, top.block
        return
    # (cid, depth, depth within its file, file offset of its first byte, file bytes under it, mode)
    stack: list[tuple[Cid, int, int, int, int | None, str]] = [(top.cid, 0, 0, 0, None, want.scope)]
    while stack:
        cid, depth, fdepth, base, expect, mode = stack.pop()
        if depth > MAX_WALK_DEPTH:
            raise DagRefused(f"the DAG under {top.cid} is deeper than {MAX_WALK_DEPTH} levels")
        if mode != "file":
            blocks.current = None  # a file's fetch serves its own blocks only
        block = await blocks.get(cid)
        if mode != "file":
            node = classify(cid, block)
            if node.kind in ("file", "raw"):
                mode, fdepth = "file", 0
                if node.kind == "file":
                    await blocks.use_fetch(cid, span if cid == top.cid else None)
        if not emit(cid):
            continue
        yield cid, block
        if mode == "file":
            if cid.codec == RAW:
                if expect is not None and len(block) != expect:
                    raise CorruptBlock(f"leaf {cid} is {len(block)} bytes where its parent says {expect}")
                continue
            fnode = read_file_node(cid, block)
            if expect is not None and fnode.filesize != expect:
                raise CorruptBlock(f"{cid} holds {fnode.filesize} bytes where its parent says {expect}")
            if fnode.children:
                limits.check_depth(cid, fdepth + 1)
            pos = base + len(fnode.data)
            children = []
            for child, size in fnode.children:
                if span is None or (pos <= span[1] and pos + size > span[0]):
                    children.append((child, depth + 1, fdepth + 1, pos, size, "file"))
                pos += size
            stack.extend(reversed(children))
        elif mode == "all":
            stack.extend((c, depth + 1, 0, 0, None, "all") for c, _n, _t in reversed(node.links))
        elif mode == "entity" and node.kind == "hamt":
            pad = len(f"{node.fanout - 1:X}")
            shards = [(c, depth + 1, 0, 0, None, "entity") for c, n, _t in node.links if len(n) == pad]
            stack.extend(reversed(shards))


# -- the answers ------------------------------------------------------------------------------------


def content_location(request: Request, want: Want) -> dict[str, str]:
    """`Content-Location` for a raw or CAR answer chosen by `Accept` alone: the same URL with `format`
    (Path Gateway spec), so caches that ignore `Vary` keep the kinds apart."""
    if want.kind not in ("raw", "car") or "format" in request.query_params:
        return {}
    query = urlencode([*request.query_params.multi_items(), ("format", want.kind)])
    return {"Content-Location": f"{request.url.path}?{query}"}


def _base_headers(path: str, roots: list[Cid]) -> dict[str, str]:
    return {
        "Cache-Control": IMMUTABLE,
        "X-Ipfs-Path": path,
        "X-Ipfs-Roots": ",".join(str(r) for r in roots),
        "Vary": "Accept",
    }


def _not_modified(request: Request, etag: str) -> bool:
    got = request.headers.get("if-none-match")
    return got is not None and (got.strip() == "*" or etag in got)


async def serve_file(
    svc: R1fsService,
    request: Request,
    cid_text: str | Cid,
    what: str,
    *,
    download: bool = False,
    name: str = "",
    ipfs_path: str | None = None,
    roots: list[Cid] | None = None,
) -> Response:
    """A file's bytes (`Range`, `HEAD`, ETag = its CID), fetched from providers when not here; `name`
    (its last path segment) sets the Content-Type. A peer's block run (`X-R1fs-Local-Only`) is served
    from local blocks only, to admitted nodes when the node runs dAuth."""
    with refusals(what):
        cid = cid_text if isinstance(cid_text, Cid) else parse_cid(cid_text)
        etag = f'"{cid}"'
        if _not_modified(request, etag):
            return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept"})
        local_only = request.headers.get(LOCAL_ONLY) is not None
        if local_only:  # a peer's block run: the network's own traffic
            await svc.check_peer(request)
            size = await svc.size(cid)
        else:  # the size is in the root: enough for HEAD and Range
            size = svc.size_of(cid, await svc.fetcher.fetch_root(cid))
    headers = _base_headers(ipfs_path or f"/ipfs/{cid}", roots or [cid])
    headers.update({"ETag": etag, "Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"})
    media = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{cid}"'
    elif not local_only:
        headers["Content-Security-Policy"] = SANDBOX
    if local_only and svc.runs is not None and svc.runs.port is not None:
        headers[RUNS_HEADER] = str(svc.runs.port)  # where runs go by sendfile (_runs.py)
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
        return Response(status_code=status, headers=headers, media_type=media)
    fetching = None
    if not local_only and length:  # only the blocks of the bytes asked for (all without a Range)
        with refusals(what):
            span = None if rng is None else (start, start + length - 1)
            fetching = await svc.fetcher.fetch_running(cid, span)

    async def body(c: Cid = cid) -> AsyncIterator[bytes]:
        try:
            async for piece in svc.read(c, start, length, fetching=fetching):
                yield piece
        except R1fsError as exc:  # headers are gone: all we can do is cut the stream short
            log.error("r1fs %s: %s failed mid-stream: %s", what, c, exc)
            raise

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media)


def _probe(want: Want, request: Request) -> Response:
    """`/ipfs/bafkqaaa`, the empty identity CID: how clients check that a URL is a trustless gateway."""
    headers = {
        "Cache-Control": IMMUTABLE,
        "X-Ipfs-Roots": PROBE_CID,
        "Vary": "Accept",
        "ETag": f'"{PROBE_CID}"',
    }
    if want.kind == "car":
        body = encode_header([PROBE_CID_BYTES])
        media = f"{CAR_TYPE}; version=1; order=dfs; dups=n"
    else:
        body, media = b"", RAW_TYPE if want.kind == "raw" else "application/octet-stream"
    headers["Content-Length"] = str(len(body))
    return Response(b"" if request.method == "HEAD" else body, headers=headers, media_type=media)


def _listing(ipfs_path: str, folder: Cid, items: list[tuple[str, Cid, int]], more: int) -> bytes:
    """A folder's plain HTML listing; every name is escaped (text) and percent-encoded (links)."""
    title = html.escape(ipfs_path)
    rows = ['<tr><td><a href="../">..</a></td><td></td><td></td></tr>']
    for name, cid, tsize in items:
        href = html.escape(quote(name, safe=""), quote=True)
        rows.append(
            f'<tr><td><a href="{href}">{html.escape(name)}</a></td><td>{tsize}</td>'
            f"<td><code>{html.escape(str(cid))}</code></td></tr>"
        )
    if more:
        rows.append(f"<tr><td colspan=3>... and {more} more (?format=car has them all)</td></tr>")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>'
        f"{title}</title></head><body><h1>Index of {title}</h1><p><code>{html.escape(str(folder))}</code></p>"
        f"<table><tr><th>name</th><th>size</th><th>CID</th></tr>{''.join(rows)}</table></body></html>\n"
    ).encode()


async def serve_folder(
    svc: R1fsService, request: Request, blocks: Blocks, resolved: Resolved, ipfs_path: str
) -> Response:
    """A folder: redirect to the path with a slash, then its `index.html`, else a listing."""
    if not request.url.path.endswith("/"):
        target = request.url.path + "/" + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(target, status_code=301, headers={"Vary": "Accept"})
    index = await lookup(blocks, resolved.node, "index.html", [])
    if index is not None:
        node = await blocks.node(index)
        if node.kind in ("file", "raw"):
            return await serve_file(
                svc, request, index, "gateway", name="index.html", ipfs_path=ipfs_path,
                roots=[*resolved.roots, index],
            )  # fmt: skip
    etag = f'"DirIndex-{resolved.node.cid}"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept"})
    items: list[tuple[str, Cid, int]] = []
    more = 0
    async for entry in entries(blocks, resolved.node):
        if len(items) < MAX_LISTING:
            items.append(entry)
        else:
            more += 1
    page = _listing(ipfs_path, resolved.node.cid, items, more)
    headers = _base_headers(ipfs_path, resolved.roots)
    headers.update({"ETag": etag, "Content-Security-Policy": SANDBOX, "X-Content-Type-Options": "nosniff"})
    headers["Content-Length"] = str(len(page))
    return Response(
        b"" if request.method == "HEAD" else page, headers=headers, media_type="text/html; charset=utf-8"
    )


def _car_etag(cid: Cid, path: str, want: Want) -> str:
    key = f"{path}|{want.scope}|{want.entity_bytes}|{want.dups}".encode()
    return f'"{cid}.car.{hashlib.sha256(key).hexdigest()[:16]}"'


def _span(want: Want, node: Node) -> tuple[int, int] | None:
    """The file bytes (first, last) `entity-bytes` asks of the entity, None for all of it; first > last
    for a range of no bytes (the answer is then the entity's root block, as dag-scope=block)."""
    if want.entity_bytes is None or node.kind not in ("file", "raw"):
        return None
    size = len(node.block) if node.kind == "raw" else read_file_node(node.cid, node.block).filesize
    first, last = want.entity_bytes
    first = max(size + first, 0) if first < 0 else first
    end = size - 1 if last is None else (size + last if last < 0 else min(last, size - 1))
    if first >= size and size > 0:
        raise R1fsError(
            f"entity-bytes {want.entity_bytes[0]}:{'*' if last is None else last} lies past the end "
            f"of the file ({size} bytes)",
            cause="bad_range",
            status=400,
        )
    return first, end


async def serve_car(
    svc: R1fsService,
    request: Request,
    root: Cid,
    segments: list[str],
    want: Want,
    ipfs_path: str,
) -> Response:
    """A CARv1 of the path's blocks and its entity (see `car_blocks`), streamed."""
    etag = _car_etag(root, ipfs_path, want)
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept"})
    stack = contextlib.ExitStack()
    hold = stack.enter_context(svc.store.holding())
    try:
        blocks = Blocks(svc, hold)
        with refusals("gateway car"):
            resolved = await resolve(blocks, root, segments)
            span = _span(want, resolved.node)
    except BaseException:
        stack.close()
        raise
    dups = "y" if want.dups else "n"
    headers = _base_headers(ipfs_path, resolved.roots)
    headers.update({
        "ETag": etag,
        "Content-Disposition": f'attachment; filename="{resolved.node.cid}.car"',
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "none",
        **content_location(request, want),
    })  # fmt: skip
    media = f"{CAR_TYPE}; version=1; order=dfs; dups={dups}"
    if request.method == "HEAD":
        stack.close()
        return Response(headers=headers, media_type=media)

    async def body() -> AsyncIterator[bytes]:
        with stack:
            yield encode_header([resolved.node.cid.raw])
            try:
                async for cid, block in car_blocks(blocks, resolved, want, svc.dag, span):
                    yield encode_section(cid, block)
            except R1fsError as exc:  # the status went out: the CAR ends short, which its reader sees
                log.error("r1fs gateway: CAR of %s cut short: %s", ipfs_path, exc)
                raise

    return StreamingResponse(body(), headers=headers, media_type=media)


async def serve_raw(svc: R1fsService, request: Request, cid: Cid, ipfs_path: str) -> Response:
    etag = f'"{cid}.raw"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept"})
    with refusals("gateway raw"):
        block = await svc.fetcher.fetch_root(cid)  # local, or from a provider (checked against the CID)
    headers = _base_headers(ipfs_path, [cid])
    headers.update({
        "ETag": etag,
        "Content-Disposition": f'attachment; filename="{cid}.bin"',
        "X-Content-Type-Options": "nosniff",
        "Content-Length": str(len(block)),
        **content_location(request, Want("raw")),
    })  # fmt: skip
    return Response(b"" if request.method == "HEAD" else block, headers=headers, media_type=RAW_TYPE)


async def gateway(svc: R1fsService, request: Request, cid_text: str, path: str) -> Response:
    """`GET/HEAD /ipfs/<cid>[/<path>]`: a block, a CAR, a file or a folder (see the module's docstring)."""
    with refusals("gateway"):
        want = wanted(request)
        if cid_text == PROBE_CID:
            if path:
                raise BadRequest("no path under the probe CID")
            return _probe(want, request)
        cid = parse_cid(cid_text)
        segments = split_path(path)
        ipfs_path = f"/ipfs/{cid}" + (f"/{'/'.join(segments)}" if segments else "")
        if "only-if-cached" in request.headers.get("cache-control", "") and not svc.store.has(cid):
            raise NotCached(f"{cid} is not on this node", hint="ask without Cache-Control: only-if-cached")
        if want.kind == "raw":
            if segments:
                raise BadRequest(
                    "a raw block is asked for by CID alone, without a path",
                    hint="use ?format=car for the blocks of a path",
                )
            return await serve_raw(svc, request, cid, ipfs_path)
        if want.kind == "car":
            return await serve_car(svc, request, cid, segments, want, ipfs_path)
        if request.headers.get(LOCAL_ONLY) is not None and not segments:
            return await serve_file(svc, request, cid, "gateway")  # a peer's block run
        with svc.store.holding() as hold:
            blocks = Blocks(svc, hold)
            resolved = await resolve(blocks, cid, segments)
            kind = resolved.node.kind
            if kind in ("directory", "hamt"):
                return await serve_folder(svc, request, blocks, resolved, ipfs_path + "/")
        if kind not in ("file", "raw"):
            raise R1fsError(
                f"{resolved.node.cid} is a {kind} node: no bytes to serve",
                cause="not_acceptable",
                status=406,
                hint="ask for ?format=car or ?format=raw",
            )
        return await serve_file(
            svc, request, resolved.node.cid, "gateway", name=resolved.name, ipfs_path=ipfs_path,
            roots=resolved.roots,
        )  # fmt: skip


# -- CAR import --------------------------------------------------------------------------------------


class CarImportAnswer(BaseModel):
    roots: list[str]
    blocks: int
    size: int
    """Bytes of the CAR read."""
    pinned: bool
    replicas: int


@dataclass
class CarImport:
    roots: list[Cid]
    blocks: int
    size: int
    sizes: dict[Cid, int]


def _root_state(svc: R1fsService, root: Cid, hold: Hold) -> tuple[list[Cid], int]:
    """The blocks of the DAG under `root` not in the store (the store's own walk: what a pin, GC and
    replication will follow, within the node's bounds; each block held), and the root's size: a file's
    bytes, or for a folder its DAG's distinct block bytes (what a pin of it counts against a quota)."""
    store = svc.store
    missing = store.missing(root, verify=False, hold=hold)
    if missing:
        return missing, 0
    kind = classify(root, store.get(root)).kind
    if kind == "raw":
        return [], store.size_of(root) or 0
    if kind == "file":
        return [], read_file_node(root, store.get(root)).filesize
    return [], sum(store.size_of(c) or 0 for c in store.dag_blocks(root))


async def import_car(
    svc: R1fsService,
    source: AsyncIterator[bytes],
    *,
    pin: bool = True,
    replicas: int = 1,
    expect_size: int | None = None,
    caller: Caller | None = None,
) -> CarImport:
    """Store the blocks of a CAR stream (each checked against its CID as it arrives), then pin its
    roots as the caller, once each root's whole DAG is here. Counts against the caller's quota like an
    add (the CAR's bytes), within `max_upload`; a CAR that is malformed, cut short, holds a block that
    does not match its CID, or lacks blocks of a root is refused (`bad_car`) and nothing is pinned."""
    who = svc._who(caller)
    address = who.address or svc.me
    svc._replicas(replicas)
    book, limit = svc.book, svc.settings.max_upload
    meter = UploadMeter(svc, address, pin=pin, replicas=replicas, expect_size=expect_size)
    reader = CarReader()
    try:
        with svc.store.holding() as hold:

            def store_blocks(piece: bytes) -> None:
                for b in reader.feed(piece):
                    hold.put_replace(b.cid, b.data)

            async for piece in source:
                if meter.total + len(piece) > limit:
                    raise TooLarge(f"CAR of more than {limit} bytes")
                meter.count(len(piece))
                await asyncio.to_thread(store_blocks, piece)
            reader.close()
            if expect_size is not None and meter.total != expect_size:
                raise BadUpload(f"upload had {meter.total} bytes where Content-Length said {expect_size}")
            roots = reader.roots or []
            if not roots:
                raise BadCar("the CAR names no root: nothing to pin")
            sizes: dict[Cid, int] = {}
            for root in roots:
                missing, size = await asyncio.to_thread(_root_state, svc, root, hold)
                if missing:
                    raise BadCar(
                        f"the CAR lacks {len(missing)} block(s) of its root {root} (first: {missing[0]})",
                        hint="export the whole DAG (dag-scope=all)",
                    )
                sizes[root] = size
            meter.release()
            for root in roots:
                text = str(root)
                asked = svc._asked(text)
                if pin:
                    book.pin(text, sizes[root], address, replicas)
                else:
                    book.added_unpinned(address, sizes[root])
                if pin:
                    await svc._publish(text, sizes[root], asked)
    finally:
        meter.release()
    log.info(
        "r1fs: imported a CAR of %d blocks, roots %s (pin=%s)", reader.blocks, [str(r) for r in roots], pin
    )
    return CarImport(roots, reader.blocks, reader.offset, sizes)


# -- routes --------------------------------------------------------------------------------------------

FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "the file (206: the Range asked for)"},
    416: {"model": ErrorAnswer, "description": "the Range lies past the end (`Content-Range: bytes */size`)"},
}
_GATEWAY: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {}, RAW_TYPE: {}, CAR_TYPE: {}, "text/html": {}},
        "description": "a file (206: the Range asked for), a raw block, a CAR, or a folder's page",
    },
    301: {"description": "a folder asked for without a trailing slash"},
    406: {"model": ErrorAnswer, "description": "a response type this gateway does not make"},
    412: {"model": ErrorAnswer, "description": "`Cache-Control: only-if-cached` and the root is not here"},
    416: {"model": ErrorAnswer, "description": "the Range lies past the end (`Content-Range: bytes */size`)"},
}


def mount_gateway(router: APIRouter, svc: R1fsService) -> None:
    """The `/ipfs` routes and `POST /v1/r1fs/import` on the node's router."""

    # GET and HEAD as two routes each (one `api_route` for both gives them one operation id).
    @router.get("/ipfs/{cid}", response_class=Response, responses={**_GATEWAY, **ERROR_RESPONSES})
    @router.head(
        "/ipfs/{cid}", response_class=Response, responses={**_GATEWAY, **ERROR_RESPONSES},
        operation_id="gateway_head",
    )  # fmt: skip
    async def ipfs(cid: str, request: Request) -> Response:
        """IPFS gateway: a file (Range, ETag = the CID), a block (`?format=raw`), a CAR (`?format=car`,
        `dag-scope`, `entity-bytes`), or a folder (redirected to its path with a slash)."""
        return await gateway(svc, request, cid, "")

    @router.get("/ipfs/{cid}/{path:path}", response_class=Response, responses={**_GATEWAY, **ERROR_RESPONSES})
    @router.head(
        "/ipfs/{cid}/{path:path}", response_class=Response, responses={**_GATEWAY, **ERROR_RESPONSES},
        operation_id="gateway_path_head",
    )  # fmt: skip
    async def ipfs_path(cid: str, path: str, request: Request) -> Response:
        """IPFS gateway under a folder: the file or folder at `path` (index.html, else a listing), or
        the CAR of the path's blocks and its entity."""
        return await gateway(svc, request, cid, path)

    svc.ctx.allow_body("/v1/r1fs/import", None)  # streams, with its own limit (max_upload)

    @router.post(
        "/v1/r1fs/import",
        responses={**ERROR_RESPONSES, 200: {"description": "the roots imported"}},
        openapi_extra={"requestBody": {"content": {CAR_TYPE: {}}, "required": True}},
    )
    async def import_route(
        request: Request,
        pin: bool = True,
        replicas: Annotated[int, Query(ge=1, le=REPLICAS_CEILING)] = 1,
    ) -> CarImportAnswer:
        """Import a CARv1 (the body, streamed): every block is checked against its CID, then the roots
        are pinned as the signer (quota, as an add). Signed (body=UNSIGNED) or the operator's token."""
        from r1os.r1fs._api import begin_upload

        with refusals("import"):
            caller, size = await begin_upload(svc, request, "CAR")
            try:
                out = await import_car(
                    svc, request.stream(), pin=pin, replicas=replicas, expect_size=size, caller=caller
                )
            except ClientDisconnect:
                raise BadUpload("upload ended early (client disconnected)") from None
        return CarImportAnswer(
            roots=[str(r) for r in out.roots], blocks=out.blocks, size=out.size, pinned=pin, replicas=replicas
        )
