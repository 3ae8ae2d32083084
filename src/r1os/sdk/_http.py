"""Reading a node's answers: the one place where an error answer becomes an exception.

Every route of every service answers an error as `{"error": message, "cause": word, "hint": text}`;
`error_from_body` turns that into a `RemoteError`. What comes back without that shape (a proxy's HTML
page, a crashed worker's plain text) still becomes a `RemoteError` whose message names the status and
the gist of the text, so a user never meets a traceback or a page of markup.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from r1os.errors import R1osError, RemoteError, error_from_body

_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def _gist(r: httpx.Response, body: Any) -> str:
    """The readable part of a non-standard answer, on one line: an older node's `detail`, an HTML
    page's title (else its text without markup), or the text as it came."""
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return " ".join(body["detail"].split())
    text = r.text
    if "html" in r.headers.get("content-type", "") or text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", text)
    return " ".join(text.split())


def remote_error(r: httpx.Response) -> RemoteError:
    """The error a node's (or a proxy's) answer `r` describes; `r` must have been read."""
    try:
        body: Any = r.json()
    except ValueError:
        body = None
    status = f"{r.status_code} {r.reason_phrase}".strip()
    gist = _gist(r, body)
    # Used only when the body is not the standard shape: say who answered what, once (a proxy's page
    # is often titled with the very status line).
    fallback = f"{r.request.url.host} answered {status}"
    if gist and gist.lower() not in status.lower():
        fallback += f": {gist}"
    return error_from_body(r.status_code, body, fallback=fallback)


def checked(r: httpx.Response) -> httpx.Response:
    """`r` if it is not an error answer; else the node's error (`RemoteError`). `r` must have been read."""
    if r.status_code >= 400:
        raise remote_error(r)
    return r


def answer(r: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer (every route answers one); raises the node's error
    (`RemoteError`) for any other answer."""
    checked(r)
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RemoteError(
            f"{r.request.url.host} answered {r.status_code} but not with a JSON object",
            cause="bad_answer",
            hint="is this URL a node's HTTP API (and not a proxy's page)?",
            status=r.status_code,
        )
    return data


def unreachable(url: str, exc: Exception, what: str = "node") -> R1osError:
    """No answer at all: refused, timed out, or a name that does not resolve."""
    reason = str(exc) or type(exc).__name__  # httpx's timeouts carry no message
    return R1osError(
        f"cannot reach the {what} at {url}: {reason}",
        cause="unreachable",
        hint=f"is the {what} running? check the URL (--{what})",
        status=503,
    )


def json_body(obj: Any) -> dict[str, Any]:
    """Request arguments sending `obj` as JSON, encoded here: a signed request covers these very bytes."""
    if obj is None:
        return {}
    return {"content": orjson.dumps(obj), "headers": {"content-type": "application/json"}}


class Api:
    """One node's JSON API over a blocking client: GET/POST a path, get the JSON or the node's error."""

    def __init__(self, http: httpx.Client, url: str, what: str = "node") -> None:
        self.http, self.url, self.what = http, url, what

    def _send(self, method: str, base: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise unreachable(base, exc, self.what) from None

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return answer(self._send(method, self.url, path, **kwargs))

    def fetch(self, path: str, *, base: str | None = None, **kwargs: Any) -> httpx.Response:
        """GET `path` of this node (or of the node at `base`) for an answer that is not JSON (a log, a file):
        the answer as it came, or the node's error."""
        return checked(self._send("GET", base or self.url, path, **kwargs))

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> dict[str, Any]:
        return self.request("POST", path, **json_body(json))


class AsyncApi:
    """The async twin of `Api`."""

    def __init__(self, http: httpx.AsyncClient, url: str, what: str = "node") -> None:
        self.http, self.url, self.what = http, url, what

    async def _send(self, method: str, base: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise unreachable(base, exc, self.what) from None

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return answer(await self._send(method, self.url, path, **kwargs))

    async def fetch(self, path: str, *, base: str | None = None, **kwargs: Any) -> httpx.Response:
        return checked(await self._send("GET", base or self.url, path, **kwargs))

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, json: Any = None) -> dict[str, Any]:
        return await self.request("POST", path, **json_body(json))
