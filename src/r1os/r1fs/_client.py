"""An HTTP client for a node's R1FS API: what the CLI, the SDK and apps on a node use.

Who the client is: with a `key`, every request that changes something (add, pin, unpin) carries an
`Authorization: R1OS-SIG ...` header signed for the node it goes to (the node's address and network
are read once from its `/v1/node`); with a `token` (the node's `<home>/api-token`, on its machine) it
is `Bearer <token>` and the client acts as the node's operator (who alone may run `gc`). Without
either, a client may only read (get, stat, ls).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import posixpath
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from r1os.errors import error_from_body
from r1os.identity import NodeKey
from r1os.r1fs._crypto import Decryptor, Encryptor
from r1os.r1fs._errors import R1fsError, remote_error
from r1os.r1fs._local import local_call, local_path
from r1os.wire import sign_request

#: Apps started by a node find its HTTP API here.
API_URL_ENV = "R1OS_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:31234"
PIECE = 1024 * 1024

Progress = Callable[[int], None]


def default_api_url() -> str:
    return os.environ.get(API_URL_ENV, DEFAULT_API_URL).rstrip("/")


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK or (urlsplit(url).hostname or "").startswith("127.")


def _local_answer(r: httpx.Response) -> str | None:
    """The node's local socket from its `/v1/r1fs/local` answer (None: off, or an older node)."""
    if r.status_code != 200:
        return None
    try:
        name = r.json().get("socket")
    except ValueError:
        return None
    return name if isinstance(name, str) and name else None


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[int | None]:
    """`path` open for reading, to hand to the node; None for what streams over HTTP (pipes, devices)."""
    if not os.path.isfile(path):
        yield None
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


CAR_TYPE = "application/vnd.ipld.car"
#: What `export_car` asks a gateway for: the whole DAG, each block once, in depth-first order.
CAR_PARAMS = {"format": "car", "dag-scope": "all"}
CAR_ACCEPT = {"accept": f"{CAR_TYPE}; version=1; order=dfs; dups=n"}


class _Part:
    """The temp file a download goes to: renamed over `out` by `keep`, removed otherwise, so no half
    files remain."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tmp = out.with_name(f".{out.name}.part")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.written = 0
        self.kept = False

    def __enter__(self) -> _Part:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        if not self.kept:
            self.tmp.unlink(missing_ok=True)

    def write(self, piece: bytes) -> None:
        """Append `piece` (for bytes that pass through this process, e.g. decrypted ones)."""
        view = memoryview(piece)
        while view:
            view = view[os.write(self.fd, view) :]
        self.written += len(piece)

    def keep(self, size: int) -> int:
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.out)
        self.kept = True
        return size


def _raise_for(r: httpx.Response, what: str) -> None:
    if r.status_code >= 400:
        _raise_status(r.status_code, r.content, what)


def _answer(r: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object a node answered, or the error it answered with raised."""
    _raise_for(r, what)
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise R1fsError(
            f"{what}: the answer (HTTP {r.status_code}) is not a JSON object",
            cause="bad_answer",
            status=502,
            hint="is this URL an r1os node's API?",
        )
    return body


def _raise_status(status: int, body: bytes, what: str) -> None:
    """Raise the error a node's answer describes (`{"error", "cause", "hint"}`, or anything else a
    proxy may send) as the R1FS error it stands for, e.g. cause `not_found` -> `BlockNotFound`."""
    text = body.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    err = error_from_body(status, answer, fallback=text)
    raise remote_error(f"{what}: {err} (HTTP {status})", status=status, cause=err.cause, hint=err.hint)


class _Credentials:
    """The `Authorization` a client puts on its requests: a signature by `key` for the node at hand
    (whose address and network are asked once), or the node's operator `token`; nothing without
    either. Used by the async and the blocking client alike (`identify` is given the node's answer)."""

    def __init__(self, key: NodeKey | None, token: str | None) -> None:
        if key is not None and token is not None:
            raise ValueError("give a key or a token, not both")
        self.key = key
        self.token = token.strip() if token is not None else None
        self.node: tuple[str, str] | None = None  # (address, network) of the node, once known

    @property
    def needs_node(self) -> bool:
        """A signature needs the node's address and network, not known yet."""
        return self.key is not None and self.node is None

    def identify(self, answer: dict[str, Any]) -> None:
        address, network = answer.get("address"), answer.get("network")
        if not isinstance(address, str) or not isinstance(network, str):
            raise R1fsError(
                "the node's /v1/node answer has no address and network to sign requests for",
                cause="bad_answer",
                status=502,
            )
        self.node = (address, network)

    def header(self, method: str, path: str, body: bytes | None) -> str | None:
        """The `Authorization` value for `method path` (path with its query; `body=None`: a streamed
        body, signed as UNSIGNED), or None for an anonymous client."""
        if self.token is not None:
            return f"Bearer {self.token}"
        if self.key is None:
            return None
        assert self.node is not None, "identify() the node first"
        address, network = self.node
        return sign_request(self.key, network=network, target=address, method=method, path=path, body=body)

    def sign(self, request: httpx.Request, *, streamed: bool = False) -> None:
        """Put the header on a built request (its URL is final; its body is read unless `streamed`)."""
        value = self.header(request.method, _target_path(request.url), None if streamed else request.read())
        if value is not None:
            request.headers["authorization"] = value


def _target_path(url: httpx.URL) -> str:
    """The path and query of `url` as the node checks it (decoded path, raw query)."""
    query = url.query.decode("ascii")
    return url.path + (f"?{query}" if query else "")


def _download(base_url: str, cid: str, fd: int, timeout: float, progress: Progress | None) -> int:
    """GET the file into `fd` over one plain blocking connection, through one reused 1 MiB buffer
    (httpx's per-chunk work cost the client 3x the node's CPU on large files); returns the size."""
    u = urlsplit(base_url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname or "127.0.0.1", u.port, timeout=timeout)
    try:
        try:
            conn.request("GET", f"{u.path}/v1/r1fs/get?{urlencode({'cid': cid})}")
            r = conn.getresponse()
            if r.status >= 400:
                _raise_status(r.status, r.read(), "get")
            expected = int(r.getheader("content-length") or -1)
            buf = memoryview(bytearray(PIECE))
            total = 0
            while n := r.readinto(buf):
                done = 0
                while done < n:
                    done += os.pwrite(fd, buf[done:n], total + done)
                total += n
                if progress is not None:
                    progress(n)
        except (OSError, http.client.HTTPException) as exc:
            raise R1fsError(f"get {cid} from {base_url} failed: {exc}") from None
    finally:
        conn.close()
    if expected >= 0 and total != expected:
        raise R1fsError(f"get {cid}: stream ended after {total} of {expected} bytes")
    return total


def _dir_target(dest: Path, rel: str) -> Path:
    """Where entry `rel` of a folder goes under `dest`: every name checked (no '/', '.', '..', NUL: a
    hostile folder cannot make a client write outside `dest`), and no symbolic link on the way."""
    from r1os.r1fs._unixfs_dir import BadDirectory, check_name

    names = rel.split("/")
    for n in names:
        try:
            check_name(n)
        except BadDirectory:
            raise BadDirectory(f"the folder holds an entry {rel[:120]!r} that would escape {dest}") from None
    target = dest.joinpath(*names)
    here = dest
    for n in names:
        here = here / n
        if here.is_symlink():
            raise BadDirectory(f"{here} is a symbolic link: not writing through it")
    if not target.resolve().is_relative_to(dest.resolve()):
        raise BadDirectory(f"{rel[:120]!r} resolves outside {dest}")
    return target


#: Files of a folder `get_tree` downloads at once.
GET_TREE_PARALLEL = 8


def _link_within(rel: str, target: str | None) -> bool:
    """Whether a symbolic link at `rel` (a path under the folder written) pointing at `target` stays in
    that folder: a relative target that does not climb above it. Others are not written."""
    if not target or target.startswith("/") or "\x00" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined != ".." and not joined.startswith("../") and not joined.startswith("/")


def _tar_headers() -> dict[str, str]:
    return {"content-type": "application/x-tar"}


class R1fsClient:
    """Talks to one node (`url`, default `$R1OS_API_URL`); files stream both ways.

    With a node on this machine, whole files (`add_file`, `get_to`, unencrypted) go through the
    node's local socket instead: the node reads or writes the file itself (see `_local.py`).
    `local=False` keeps everything on HTTP."""

    def __init__(
        self,
        url: str | None = None,
        *,
        key: NodeKey | None = None,
        token: str | None = None,
        timeout: float = 300.0,
        local: bool = True,
    ) -> None:
        """`key` signs add/pin/unpin as that address (its pins, its quota); `token` (the node's API
        token) acts as the node's operator; neither: reads only."""
        self.url = (url or default_api_url()).rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self._local: str | None | bool = local and _is_local(self.url)  # True: not asked yet
        self._auth = _Credentials(key, token)

    async def _authorization(self, method: str, path: str, body: bytes | None) -> str | None:
        if self._auth.needs_node:
            self._auth.identify(await self._request("GET", "/v1/node", "node"))
        return self._auth.header(method, path, body)

    async def _local_socket(self) -> str | None:
        if self._local is True:
            try:
                self._local = _local_answer(await self._http.get("/v1/r1fs/local"))
            except httpx.HTTPError:
                self._local = None
        return self._local or None

    async def _via_local(
        self, request: dict[str, Any], fd: int, progress: Progress | None
    ) -> dict[str, Any] | None:
        """The node's answer through its local socket, or None if it has none (then use HTTP)."""
        name = await self._local_socket()
        if name is None:
            return None
        if request["op"] == "add":  # the node counts an add against its signer's quota
            auth = await self._authorization("POST", local_path(request), None)
            if auth is not None:
                request = {**request, "auth": auth}
        try:
            return await asyncio.to_thread(
                local_call, name, request, fd, timeout=self.timeout, progress=progress
            )
        except ConnectionError:
            self._local = None  # the node is elsewhere (another network namespace): HTTP from now on
            return None

    async def __aenter__(self) -> R1fsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, what: str, *, signed: bool = False, streamed: bool = False, **kw: Any
    ) -> dict[str, Any]:
        """One request and its JSON answer; `signed` puts the client's Authorization on it (a
        `streamed` body is signed as UNSIGNED: the node checks what it stores by its hash)."""
        try:
            request = self._http.build_request(method, path, **kw)
            if signed:
                if self._auth.needs_node:
                    self._auth.identify(await self._request("GET", "/v1/node", "node"))
                self._auth.sign(request, streamed=streamed)
            r = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise R1fsError(
                f"cannot reach the node at {self.url}: {exc}",
                hint="is the node running? check the URL (--node)",
            ) from None
        return _answer(r, what)

    async def add_file(
        self,
        path: Path,
        *,
        pin: bool = True,
        replicas: int = 1,
        key: bytes | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload a file (encrypted first with `key`, if given); returns {cid, size, ...}."""
        if key is None:
            with _readable(path) as fd:
                request = {"op": "add", "pin": pin, "replicas": replicas}
                done = None if fd is None else await self._via_local(request, fd, progress)
            if done is not None:
                return done

        async def body() -> AsyncIterator[bytes]:
            enc = Encryptor(key) if key is not None else None
            with open(path, "rb") as fh:  # noqa: ASYNC230 (local reads of 1 MiB; the upload is the slow part)
                while piece := fh.read(PIECE):
                    if progress is not None:
                        progress(len(piece))
                    yield enc.update(piece) if enc is not None else piece
            if enc is not None:
                yield enc.finish()

        headers = {"content-type": "application/octet-stream"}
        if key is None:
            headers["content-length"] = str(path.stat().st_size)  # noqa: ASYNC240
        return await self._request(
            "POST", "/v1/r1fs/add", "add", params={"pin": pin, "replicas": replicas}, content=body(),
            headers=headers, signed=True, streamed=True,
        )  # fmt: skip

    async def add_bytes(self, data: bytes, *, pin: bool = True, replicas: int = 1) -> dict[str, Any]:
        return await self._request(
            "POST", "/v1/r1fs/add", "add", params={"pin": pin, "replicas": replicas}, content=data,
            signed=True, streamed=True,
        )  # fmt: skip

    async def stream(self, cid: str, *, key: bytes | None = None) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive (decrypted and authenticated with `key`, if given)."""
        dec = Decryptor(key) if key is not None else None
        try:
            async with self._http.stream("GET", "/v1/r1fs/get", params={"cid": cid}) as r:
                if r.status_code >= 400:
                    await r.aread()
                    _raise_for(r, "get")
                expected = r.headers.get("content-length")
                got = 0
                async for piece in r.aiter_raw():
                    got += len(piece)
                    yield dec.update(piece) if dec is not None else piece
                if expected is not None and got != int(expected):
                    raise R1fsError(f"get {cid}: stream ended after {got} of {expected} bytes")
        except httpx.HTTPError as exc:
            raise R1fsError(f"get {cid} from {self.url} failed: {exc}") from None
        if dec is not None:
            yield dec.finish()

    async def get_bytes(self, cid: str, *, key: bytes | None = None) -> bytes:
        return b"".join([p async for p in self.stream(cid, key=key)])

    async def get_to(
        self, cid: str, out: Path, *, key: bytes | None = None, progress: Progress | None = None
    ) -> int:
        """Write the file to `out` (via a temp file renamed at the end, so no half files remain)."""
        with _Part(out) as part:
            if key is None:
                done = await self._via_local({"op": "get", "cid": cid}, part.fd, progress)
                if done is not None:
                    return part.keep(int(done["size"]))
                size = await asyncio.to_thread(_download, self.url, cid, part.fd, self.timeout, progress)
                return part.keep(size)
            async for piece in self.stream(cid, key=key):  # decrypted here, so it passes through
                part.write(piece)
                if progress is not None:
                    progress(len(piece))
            return part.keep(part.written)

    async def import_car(
        self, path: Path, *, pin: bool = True, replicas: int = 1, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Import a CARv1 file: the node checks every block against its CID and pins the CAR's roots
        (as the caller) once each root's whole DAG is there; returns {roots, blocks, size, pinned, ...}."""

        async def body() -> AsyncIterator[bytes]:
            with open(path, "rb") as fh:  # noqa: ASYNC230 (local reads of 1 MiB; the upload is the slow part)
                while piece := fh.read(PIECE):
                    if progress is not None:
                        progress(len(piece))
                    yield piece

        headers = {"content-type": CAR_TYPE, "content-length": str(path.stat().st_size)}  # noqa: ASYNC240
        return await self._request(
            "POST", "/v1/r1fs/import", "import", params={"pin": pin, "replicas": replicas}, content=body(),
            headers=headers, signed=True, streamed=True,
        )  # fmt: skip

    async def export_car(self, cid: str, out: Path, *, progress: Progress | None = None) -> int:
        """Write a CARv1 of the whole DAG under `cid` to `out` (the gateway's `?format=car`); every block
        is checked against its CID on the way, and a CAR cut short leaves no file. Its size in bytes."""
        from r1os.r1fs._car import CarReader

        reader = CarReader()
        with _Part(out) as part:
            try:
                request = self._http.stream("GET", f"/ipfs/{cid}", params=CAR_PARAMS, headers=CAR_ACCEPT)
                async with request as r:
                    if r.status_code >= 400:
                        await r.aread()
                        _raise_for(r, "export")
                    async for piece in r.aiter_raw():
                        reader.feed(piece)
                        part.write(piece)
                        if progress is not None:
                            progress(len(piece))
            except httpx.HTTPError as exc:
                raise R1fsError(f"export {cid} from {self.url} failed: {exc}") from None
            reader.close()
            return part.keep(part.written)

    async def add_tree(
        self,
        folder: Path,
        *,
        pin: bool = True,
        replicas: int = 1,
        hidden: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload a local folder (as a tar stream made while it is read); returns {cid, size, files,
        dirs, ...}: the CID `ipfs add -r --cid-version=1` gives. Hidden names are left out unless
        `hidden`; symbolic links are refused."""
        from r1os.r1fs._tar import tar_folder

        async def body() -> AsyncIterator[bytes]:
            for piece in tar_folder(folder, hidden=hidden, progress=progress):
                yield piece

        return await self._request(
            "POST", "/v1/r1fs/add-tree", "add-tree", params={"pin": pin, "replicas": replicas},
            content=body(), headers=_tar_headers(), signed=True, streamed=True,
        )  # fmt: skip

    async def list_dir(self, cid: str, path: str = "") -> list[dict[str, Any]]:
        """A folder's entries ({name, cid, type, size, tsize}) by name, every page."""
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            params = {"cid": cid, "path": path, **({"after": after} if after else {})}
            page = await self._request("GET", "/v1/r1fs/dir", "dir", params=params)
            out.extend(page["entries"])
            if not page.get("next"):
                return out
            after = page["next"]

    async def get_tree(self, cid: str, dest: Path, *, progress: Progress | None = None) -> dict[str, int]:
        """Write the folder `cid` under `dest` (created): its folders, and each file fetched as by
        `get_to`. Names that would escape `dest` are refused; a symbolic link is written when its
        target is relative and stays inside `dest`, skipped otherwise. Returns {files, dirs, bytes,
        links, skipped}."""
        dest.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (local folder calls, beside the downloads)
        counts = {"files": 0, "dirs": 1, "bytes": 0, "links": 0, "skipped": 0}
        gate = asyncio.Semaphore(GET_TREE_PARALLEL)

        async def one(file_cid: str, target: Path) -> None:
            async with gate:
                counts["bytes"] += await self.get_to(file_cid, target, progress=progress)
                counts["files"] += 1

        todo = [("", cid)]
        while todo:
            rel, folder = todo.pop()
            files = []
            for e in await self.list_dir(folder):
                sub = f"{rel}/{e['name']}" if rel else e["name"]
                target = _dir_target(dest, sub)
                if e["type"] == "directory":
                    target.mkdir(exist_ok=True)  # noqa: ASYNC240
                    counts["dirs"] += 1
                    todo.append((sub, e["cid"]))
                elif e["type"] == "file":
                    files.append(one(e["cid"], target))
                elif e["type"] == "symlink" and _link_within(sub, e.get("target")):
                    os.symlink(e["target"], target)
                    counts["links"] += 1
                else:
                    counts["skipped"] += 1
            await asyncio.gather(*files)
        return counts

    async def pin(self, cid: str, replicas: int = 1) -> dict[str, Any]:
        """Pin `cid` on the node as this client's address (fetching it there if needed)."""
        body = {"cid": cid, "replicas": replicas}
        return await self._request("POST", "/v1/r1fs/pin", "pin", json=body, signed=True)

    async def unpin(self, cid: str, *, pinner: str | None = None) -> dict[str, Any]:
        """Release this client's pin of `cid`; the node's operator (token) may name another `pinner`'s
        pin, or release every pin of the CID with `pinner=None`."""
        body: dict[str, Any] = {"cid": cid} if pinner is None else {"cid": cid, "pinner": pinner}
        return await self._request("POST", "/v1/r1fs/unpin", "unpin", json=body, signed=True)

    async def ls(self) -> list[dict[str, Any]]:
        """Every pin of the node (the pages of `/v1/r1fs/ls` one after the other)."""
        pins: list[dict[str, Any]] = []
        after: str | None = ""
        while after is not None:
            page = await self._request("GET", "/v1/r1fs/ls", "ls", params={"after": after} if after else None)
            pins.extend(page["pins"])
            after = page.get("next") or None
        return pins

    async def stat(self, cid: str) -> dict[str, Any]:
        return await self._request("GET", "/v1/r1fs/stat", "stat", params={"cid": cid})

    async def gc(self) -> dict[str, Any]:
        """Collect garbage now: the node's operator only (a client made with its `token`)."""
        return await self._request("POST", "/v1/r1fs/gc", "gc", signed=True)


class R1fs:
    """The blocking twin of `R1fsClient`, for scripts and the SDK's synchronous `Session`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        key: NodeKey | None = None,
        token: str | None = None,
        timeout: float = 300.0,
        local: bool = True,
    ) -> None:
        """`key` signs add/pin/unpin as that address; `token` acts as the node's operator."""
        self.url = (url or default_api_url()).rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._local: str | None | bool = local and _is_local(self.url)
        self._auth = _Credentials(key, token)

    def _authorization(self, method: str, path: str, body: bytes | None) -> str | None:
        if self._auth.needs_node:
            self._auth.identify(self._request("GET", "/v1/node", "node"))
        return self._auth.header(method, path, body)

    def _via_local(self, request: dict[str, Any], fd: int) -> dict[str, Any] | None:
        if self._local is True:
            try:
                self._local = _local_answer(self._http.get("/v1/r1fs/local"))
            except httpx.HTTPError:
                self._local = None
        if not self._local:
            return None
        if request["op"] == "add":
            auth = self._authorization("POST", local_path(request), None)
            if auth is not None:
                request = {**request, "auth": auth}
        try:
            return local_call(str(self._local), request, fd, timeout=self.timeout)
        except ConnectionError:
            self._local = None
            return None

    def __enter__(self) -> R1fs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, what: str, *, signed: bool = False, streamed: bool = False, **kw: Any
    ) -> dict[str, Any]:
        try:
            request = self._http.build_request(method, path, **kw)
            if signed:
                if self._auth.needs_node:
                    self._auth.identify(self._request("GET", "/v1/node", "node"))
                self._auth.sign(request, streamed=streamed)
            r = self._http.send(request)
        except httpx.HTTPError as exc:
            raise R1fsError(
                f"cannot reach the node at {self.url}: {exc}",
                hint="is the node running? check the URL (--node)",
            ) from None
        return _answer(r, what)

    def add_file(
        self, path: Path, *, pin: bool = True, replicas: int = 1, key: bytes | None = None
    ) -> dict[str, Any]:
        """Upload a file (encrypted first with `key`, if given); returns {cid, size, ...}."""
        if key is None:
            with _readable(path) as fd:
                request = {"op": "add", "pin": pin, "replicas": replicas}
                done = None if fd is None else self._via_local(request, fd)
            if done is not None:
                return done

        def body() -> Iterator[bytes]:
            enc = Encryptor(key) if key is not None else None
            with open(path, "rb") as fh:
                while piece := fh.read(PIECE):
                    yield enc.update(piece) if enc is not None else piece
            if enc is not None:
                yield enc.finish()

        headers = {"content-type": "application/octet-stream"}
        if key is None:
            headers["content-length"] = str(path.stat().st_size)
        params = {"pin": pin, "replicas": replicas}
        return self._request(
            "POST", "/v1/r1fs/add", "add", params=params, content=body(), headers=headers, signed=True,
            streamed=True,
        )  # fmt: skip

    def add_bytes(self, data: bytes, *, pin: bool = True, replicas: int = 1) -> dict[str, Any]:
        params = {"pin": pin, "replicas": replicas}
        return self._request(
            "POST", "/v1/r1fs/add", "add", params=params, content=data, signed=True, streamed=True
        )

    def stream(self, cid: str, *, key: bytes | None = None) -> Iterator[bytes]:
        dec = Decryptor(key) if key is not None else None
        try:
            with self._http.stream("GET", "/v1/r1fs/get", params={"cid": cid}) as r:
                if r.status_code >= 400:
                    r.read()
                    _raise_for(r, "get")
                expected, got = r.headers.get("content-length"), 0
                for piece in r.iter_raw():
                    got += len(piece)
                    yield dec.update(piece) if dec is not None else piece
                if expected is not None and got != int(expected):
                    raise R1fsError(f"get {cid}: stream ended after {got} of {expected} bytes")
        except httpx.HTTPError as exc:
            raise R1fsError(f"get {cid} from {self.url} failed: {exc}") from None
        if dec is not None:
            yield dec.finish()

    def get_bytes(self, cid: str, *, key: bytes | None = None) -> bytes:
        return b"".join(self.stream(cid, key=key))

    def get_to(self, cid: str, out: Path, *, key: bytes | None = None) -> int:
        with _Part(out) as part:
            if key is None:
                done = self._via_local({"op": "get", "cid": cid}, part.fd)
                if done is not None:
                    return part.keep(int(done["size"]))
                return part.keep(_download(self.url, cid, part.fd, self.timeout, None))
            for piece in self.stream(cid, key=key):
                part.write(piece)
            return part.keep(part.written)

    def import_car(self, path: Path, *, pin: bool = True, replicas: int = 1) -> dict[str, Any]:
        """Import a CARv1 file (see `R1fsClient.import_car`)."""

        def body() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while piece := fh.read(PIECE):
                    yield piece

        headers = {"content-type": CAR_TYPE, "content-length": str(path.stat().st_size)}
        return self._request(
            "POST", "/v1/r1fs/import", "import", params={"pin": pin, "replicas": replicas}, content=body(),
            headers=headers, signed=True, streamed=True,
        )  # fmt: skip

    def export_car(self, cid: str, out: Path) -> int:
        """Write a CARv1 of the whole DAG under `cid` to `out` (see `R1fsClient.export_car`)."""
        from r1os.r1fs._car import CarReader

        reader = CarReader()
        with _Part(out) as part:
            try:
                with self._http.stream("GET", f"/ipfs/{cid}", params=CAR_PARAMS, headers=CAR_ACCEPT) as r:
                    if r.status_code >= 400:
                        r.read()
                        _raise_for(r, "export")
                    for piece in r.iter_raw():
                        reader.feed(piece)
                        part.write(piece)
            except httpx.HTTPError as exc:
                raise R1fsError(f"export {cid} from {self.url} failed: {exc}") from None
            reader.close()
            return part.keep(part.written)

    def add_tree(
        self, folder: Path, *, pin: bool = True, replicas: int = 1, hidden: bool = False
    ) -> dict[str, Any]:
        """Upload a local folder (see `R1fsClient.add_tree`)."""
        from r1os.r1fs._tar import tar_folder

        return self._request(
            "POST", "/v1/r1fs/add-tree", "add-tree", params={"pin": pin, "replicas": replicas},
            content=tar_folder(folder, hidden=hidden), headers=_tar_headers(), signed=True, streamed=True,
        )  # fmt: skip

    def list_dir(self, cid: str, path: str = "") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            params = {"cid": cid, "path": path, **({"after": after} if after else {})}
            page = self._request("GET", "/v1/r1fs/dir", "dir", params=params)
            out.extend(page["entries"])
            if not page.get("next"):
                return out
            after = page["next"]

    def get_tree(self, cid: str, dest: Path) -> dict[str, int]:
        """Write the folder `cid` under `dest` (see `R1fsClient.get_tree`)."""
        dest.mkdir(parents=True, exist_ok=True)
        counts = {"files": 0, "dirs": 1, "bytes": 0, "links": 0, "skipped": 0}
        todo = [("", cid)]
        while todo:
            rel, folder = todo.pop()
            for e in self.list_dir(folder):
                sub = f"{rel}/{e['name']}" if rel else e["name"]
                target = _dir_target(dest, sub)
                if e["type"] == "directory":
                    target.mkdir(exist_ok=True)
                    counts["dirs"] += 1
                    todo.append((sub, e["cid"]))
                elif e["type"] == "file":
                    counts["bytes"] += self.get_to(e["cid"], target)
                    counts["files"] += 1
                elif e["type"] == "symlink" and _link_within(sub, e.get("target")):
                    os.symlink(e["target"], target)
                    counts["links"] += 1
                else:
                    counts["skipped"] += 1
        return counts

    def pin(self, cid: str, replicas: int = 1) -> dict[str, Any]:
        body = {"cid": cid, "replicas": replicas}
        return self._request("POST", "/v1/r1fs/pin", "pin", json=body, signed=True)

    def unpin(self, cid: str, *, pinner: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"cid": cid} if pinner is None else {"cid": cid, "pinner": pinner}
        return self._request("POST", "/v1/r1fs/unpin", "unpin", json=body, signed=True)

    def ls(self) -> list[dict[str, Any]]:
        pins: list[dict[str, Any]] = []
        after: str | None = ""
        while after is not None:
            page = self._request("GET", "/v1/r1fs/ls", "ls", params={"after": after} if after else None)
            pins.extend(page["pins"])
            after = page.get("next") or None
        return pins

    def stat(self, cid: str) -> dict[str, Any]:
        return self._request("GET", "/v1/r1fs/stat", "stat", params={"cid": cid})

    def gc(self) -> dict[str, Any]:
        return self._request("POST", "/v1/r1fs/gc", "gc", signed=True)
