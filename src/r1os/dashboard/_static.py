"""The page's files, shipped in this package under `static/` and served by name only.

A request names one file (`/dashboard/static/app.js`): the name must be a plain file name (letters,
digits, `-`, `_`, one extension this module knows), so separators, `..`, encoded slashes and NUL never
reach the file system (400 `invalid_request`); a plain name that is not one of the package's files is
404 `not_found`. Files are read once, on first use, and kept in memory (the whole page is a few tens
of KiB).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from r1os.dashboard._errors import BadPath, NotFound

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.(?:html|css|js|svg)")
INDEX = "index.html"

#: What the page may do in a browser: its own scripts and styles only (no inline script, so text from
#: the network can never run even if it ended up in the markup), requests to this node only, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class StaticFile:
    name: str
    body: bytes
    media_type: str
    etag: str


class StaticFiles:
    """The files of `static/`, by name."""

    def __init__(self, package: str = "r1os.dashboard", folder: str = "static") -> None:
        self._package = package
        self._folder = folder
        self._files: dict[str, StaticFile] | None = None

    def _load(self) -> dict[str, StaticFile]:
        root = resources.files(self._package).joinpath(self._folder)
        files: dict[str, StaticFile] = {}
        for entry in root.iterdir():
            name = entry.name
            if not entry.is_file() or not NAME.fullmatch(name):
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            files[name] = StaticFile(name, body, MEDIA_TYPES["." + name.rpartition(".")[2]], etag)
        return files

    @property
    def names(self) -> list[str]:
        return sorted(self.files)

    @property
    def files(self) -> dict[str, StaticFile]:
        if self._files is None:
            self._files = self._load()
        return self._files

    def get(self, name: str) -> StaticFile:
        """The file called `name`; `BadPath` for anything but a plain name, `NotFound` if none."""
        if not NAME.fullmatch(name):
            raise BadPath(f"not a static file name: {name[:80]!r}")
        found = self.files.get(name)
        if found is None:
            raise NotFound(
                f"no static file {name!r}", hint="the page's files are listed in docs/dashboard.md"
            )
        return found
