"""App archives from R1FS: unpacked member by member, nothing escaping the app folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from r1os.deeploy._files import unpack_archive


def archive(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """(name, content, kind) with kind file | dir | symlink | fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(content or b"")
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(content or b""))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = (content or b"").decode()
                tar.addfile(info)
            else:
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    return buf.getvalue()


def test_a_good_archive_unpacks(tmp_path: Path) -> None:
    data = archive([(".", None, "dir"), ("./app.py", b"print(1)\n", "file"), ("lib", None, "dir"),
                    ("lib/run.sh", b"#!/bin/sh\n", "file")])  # fmt: skip
    unpack_archive(data, tmp_path)
    assert (tmp_path / "app.py").read_bytes() == b"print(1)\n"
    assert (tmp_path / "lib" / "run.sh").stat().st_mode & 0o111


@pytest.mark.parametrize(
    "members",
    [
        [("../evil.py", b"x", "file")],
        [("/etc/evil", b"x", "file")],
        [("a/../../evil", b"x", "file")],
        [("link", b"/etc/passwd", "symlink")],
        [("pipe", None, "fifo")],
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, members: list[tuple[str, bytes | None, str]]) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    with pytest.raises(ValueError):
        unpack_archive(archive(members), folder)
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "evil").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a tar archive"):
        unpack_archive(b"\x00garbage" * 100, tmp_path)
