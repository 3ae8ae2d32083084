"""App files given as an R1FS CID: the CID names a tar archive (`tar czf app.tgz -C myapp .`, then
`r1os fs add app.tgz`), fetched through the node's R1FS and unpacked into the app folder. Every member
is checked before it is written: regular files and folders only (no links, devices or FIFOs), paths
inside the folder, and bounded count and size.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from r1os.deeploy._spec import check_relative_path
from r1os.deeploy.runtimes import RuntimeFailure

if TYPE_CHECKING:
    from r1os.node import ServiceContext

#: Bounds on an app archive (compressed size fetched, unpacked members and bytes).
MAX_ARCHIVE_BYTES = 512 * 1024**2
MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 2 * 1024**3


async def fetch_into(ctx: ServiceContext, cid_text: str, folder: Path) -> None:
    from r1os.r1fs._service import R1fsService

    r1fs = ctx.find(R1fsService)
    if r1fs is None:
        raise RuntimeFailure("the app's files are an R1FS CID, and this node runs no R1FS", cause="no_r1fs")
    data = await r1fs.cat(cid_text, max_size=MAX_ARCHIVE_BYTES)
    await asyncio.to_thread(unpack_archive, data, folder)


def unpack_archive(data: bytes, folder: Path) -> None:
    """Unpack a (gzip/bz2/xz or plain) tar archive into `folder`; `ValueError` for anything unsafe."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError as exc:
        raise ValueError(f"the app's files are not a tar archive: {exc}") from None
    root = folder.resolve()
    total = 0
    with tar:
        members = tar.getmembers()
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"the app archive has {len(members)} members, at most {MAX_MEMBERS}")
        for m in members:
            if m.name in (".", "./"):
                continue
            rel = check_relative_path(m.name.removeprefix("./"))
            target = (folder / rel).resolve()
            if root != target and root not in target.parents:
                raise ValueError(f"{m.name!r} escapes the app folder")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not m.isfile():
                raise ValueError(
                    f"{m.name!r} is not a regular file or folder (links and devices are refused)"
                )
            total += m.size
            if total > MAX_UNPACKED_BYTES:
                raise ValueError(f"the app archive unpacks past {MAX_UNPACKED_BYTES} bytes")
            src = tar.extractfile(m)
            if src is None:
                raise ValueError(f"{m.name!r} cannot be read from the archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            with src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            target.chmod(0o755 if m.mode & 0o111 else 0o644)
