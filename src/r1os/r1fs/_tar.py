"""Folders over HTTP as tar streams: the client writes one from a local folder as it uploads
(`tar_folder`), the node reads one as it arrives (`import_tar`) and builds the UnixFS tree with the same
CIDs as `ipfs add -r --cid-version=1` of that folder. Nothing holds the whole upload: each file's bytes
go straight into the importer.

The reader takes POSIX ustar with pax extended headers (`path`, `linkpath`) and GNU long names, i.e.
what Python's `tarfile`, GNU tar and bsdtar write. It takes regular files, folders and symbolic links
(stored as links, never followed); anything else (hard links, devices, FIFOs) is refused (`BadPath`),
as are names that climb out ('..'), absolute names, and a header whose checksum is wrong
(`BadUpload`). Bounds: the whole stream within `max_size`, a pax header within 64 KiB, and the tree
within `TreeLimits`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path

from r1os.r1fs._dag import CHUNK_SIZE
from r1os.r1fs._errors import BadUpload, TooLarge
from r1os.r1fs._importer import ImportResult, PutBlock, import_bytes, import_stream
from r1os.r1fs._unixfs_dir import BadPath, TreeBuilder, TreeLimits, TreeResult

BLOCK = 512
#: Largest pax or GNU long-name header read (cause `bad_upload`): a path of 4096 bytes fits many times.
MAX_META = 64 * 1024
PIECE = 1024 * 1024


class _Reader:
    """Exact reads over an async stream of pieces of any size; counts the bytes against `max_size`."""

    def __init__(self, source: AsyncIterable[bytes], max_size: int | None) -> None:
        self._it = source.__aiter__()
        self._buf = bytearray()
        self.total = 0
        self._max = max_size

    async def _more(self) -> bool:
        try:
            piece = await self._it.__anext__()
        except StopAsyncIteration:
            return False
        self.total += len(piece)
        if self._max is not None and self.total > self._max:
            raise TooLarge(f"upload exceeds the limit of {self._max} bytes")
        self._buf += piece
        return True

    async def exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._more():
                raise BadUpload("the tar stream ended in the middle of an entry")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def pieces(self, n: int) -> AsyncIterator[bytes]:
        """The next `n` bytes, in pieces as they come."""
        left = n
        while left:
            if not self._buf and not await self._more():
                raise BadUpload("the tar stream ended in the middle of a file")
            take = min(left, len(self._buf))
            out = bytes(self._buf[:take])
            del self._buf[:take]
            left -= take
            yield out

    async def drain_zeros(self) -> None:
        """Read the stream to its end; anything but zero bytes there is refused (a second archive
        appended would otherwise be dropped without a word)."""
        while True:
            if any(self._buf):
                raise BadUpload("data after the tar stream's end marker")
            self._buf.clear()
            if not await self._more():
                return

    async def at_end(self) -> bool:
        return not self._buf and not await self._more()


def _octal(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes past 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.rstrip(b"\0 ").lstrip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise BadUpload(f"tar header: {what} {text[:20]!r} is not a number") from None


def _parse_pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise BadUpload("malformed pax header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BadUpload("malformed pax header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise BadUpload("malformed pax header")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _pad(n: int) -> int:
    return -n % BLOCK


async def import_tar(
    source: AsyncIterable[bytes],
    put: PutBlock | None = None,
    *,
    limits: TreeLimits | None = None,
    max_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> TreeResult:
    """Read a tar stream and build its tree (the archive's top level is the folder: `tar -C DIR -c .`
    and `tar -c` of the folder's entries alike; a leading './' is dropped)."""
    reader = _Reader(source, max_size)
    tree = TreeBuilder(put, limits=limits)
    long_name: str | None = None
    long_link: str | None = None
    while True:
        if await reader.at_end():
            break  # tolerated: an archive cut right after an entry (no end marker) has no half entry
        header = await reader.exact(BLOCK)
        if header == bytes(BLOCK):
            await reader.drain_zeros()  # the end marker's second block, GNU tar's padding to 10 KiB
            break
        stored = _octal(header[148:156], "checksum")
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise BadUpload("tar header checksum does not match (not a tar stream?)")
        size = _octal(header[124:136], "size")
        kind = header[156:157]
        if kind in (b"x", b"g", b"L", b"K"):
            if size > MAX_META:
                raise BadUpload(f"tar metadata entry of {size} bytes (more than {MAX_META})")
            meta = await reader.exact(size + _pad(size))
            if kind == b"x":
                pax = _parse_pax(meta[:size])
                long_name = pax.get("path", long_name)
                long_link = pax.get("linkpath", long_link)
            elif kind == b"L":
                long_name = meta[:size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif kind == b"K":
                long_link = meta[:size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name = header[:100].rstrip(b"\0").decode("utf-8", "surrogateescape")
        if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
            name = header[345:500].rstrip(b"\0").decode("utf-8", "surrogateescape") + "/" + name
        if long_name is not None:
            name, long_name = long_name, None
        if any("\udc80" <= ch <= "\udcff" for ch in name):
            raise BadPath(f"tar entry {name[:80]!r} is not UTF-8")
        while name.startswith("./"):
            name = name[2:]
        if kind in (b"0", b"\0", b"7"):
            if name in ("", "."):
                raise BadPath("a file entry without a name")
            if size <= CHUNK_SIZE:
                data = await reader.exact(size)
                result: ImportResult = import_bytes(data, put)
            else:
                result = await import_stream(reader.pieces(size), put)
            await reader.exact(_pad(size))
            tree.add_file(name, result)
            if progress is not None:
                progress(size)
        elif kind == b"5":
            if size:
                await reader.exact(size + _pad(size))
            if name.rstrip("/") not in ("", "."):
                tree.add_dir(name)
        elif kind == b"2":  # a symbolic link: stored as a link, never followed
            target = long_link or header[157:257].rstrip(b"\0").decode("utf-8", "surrogateescape")
            long_link = None
            if size:
                await reader.exact(size + _pad(size))
            tree.add_symlink(name, target)
        else:
            what = {b"1": "a hard link", b"3": "a device", b"4": "a device",
                    b"6": "a FIFO"}.get(kind, f"an entry of type {kind!r}")  # fmt: skip
            raise BadPath(f"tar entry {name[:80]!r} is {what}: R1FS stores files, folders and symbolic links")
    return tree.finish()


def _pax_record(key: bytes, value: bytes) -> bytes:
    record = b" " + key + b"=" + value + b"\n"
    n = len(record)
    n += len(str(n + len(str(n))))  # the length field counts its own digits
    return str(n).encode() + record


def _header(name: str, size: int, kind: bytes, mode: int, link: str = "") -> bytes:
    """One ustar header (a pax record of `path`, `linkpath` before it when one does not fit)."""
    raw = name.encode("utf-8", "surrogateescape")
    target = link.encode("utf-8", "surrogateescape")
    body = b""
    if len(raw) > 100:
        body += _pax_record(b"path", raw)
        raw = raw[:100]
    if len(target) > 100:
        body += _pax_record(b"linkpath", target)
        target = target[:100]
    out = _header("PaxHeader", len(body), b"x", 0o644) + body + bytes(_pad(len(body))) if body else b""
    h = bytearray(BLOCK)
    h[0 : len(raw)] = raw
    h[157 : 157 + len(target)] = target
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return out + bytes(h)


def tar_folder(
    folder: Path, *, hidden: bool = False, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """A tar stream (pax format) of `folder`'s files, folders and symbolic links (sent as links, never
    followed), made as it is read: headers, then each file in 1 MiB pieces. Hidden names are left out
    unless `hidden` (as `ipfs add -r`); devices, sockets and pipes are refused (`BadPath`), before
    anything is sent for them."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        rel = here.relative_to(folder).as_posix()
        if not hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            filenames = [f for f in filenames if not f.startswith(".")]
        links = sorted(d for d in dirnames if (here / d).is_symlink())
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for d in dirnames:
            yield _header(d if rel == "." else f"{rel}/{d}", 0, b"5", 0o755)
        for f in sorted([*filenames, *links]):
            p = here / f
            if p.is_symlink():
                yield _header(f if rel == "." else f"{rel}/{f}", 0, b"2", 0o777, os.readlink(p))
                continue
            if not p.is_file():
                raise BadPath(f"{p} is not a regular file, a folder or a symbolic link (a device, a pipe?)")
            with open(p, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                yield _header(f if rel == "." else f"{rel}/{f}", size, b"0", 0o644)
                sent = 0
                while sent < size and (piece := fh.read(min(PIECE, size - sent))):
                    sent += len(piece)
                    if progress is not None:
                        progress(len(piece))
                    yield piece
                if sent != size:
                    raise BadUpload(f"{p} changed while it was read ({sent} of {size} bytes)")
                if _pad(size):
                    yield bytes(_pad(size))
    yield bytes(2 * BLOCK)
