"""Requests from one replica to another: signed as this node, answers read with a cap and a deadline.

Every body a replica takes from a peer (an announced batch, an anti-entropy answer) comes through
`PeerClient.request`: the answer is streamed and dropped as soon as it passes the cap the caller names
(`too_large`), a peer that dribbles is cut off at `PEER_TIMEOUT` (`timeout`), and compressed answers are
refused (the cap counts the bytes on the wire, so a small compressed body cannot expand past it). A
hostile peer therefore costs at most the cap in memory and the deadline in time.

Requests are signed (`r1os.wire.sign_request`) for the peer's address, so a peer that runs dAuth can
tell an admitted node from an outsider; one signature per request, whatever it carries.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import orjson

from r1os.cstore._ops import CStoreError
from r1os.identity import NodeKey
from r1os.wire import sign_request

#: The longest a request to a peer may take, answer included (the node's HTTP client times out each
#: read on its own, which a peer sending a byte now and then never trips).
PEER_TIMEOUT = 30.0
#: The most of a peer's error answer read (for its message).
MAX_ERROR_BYTES = 4096
#: The longest URL a peer may announce a batch at.
MAX_URL_CHARS = 2048


@dataclass(frozen=True, slots=True)
class PeerRef:
    """A replica to talk to: its address (what requests are signed for) and its API URL."""

    address: str
    url: str


def check_url(url: object) -> str:
    """A peer's API URL as announced in a message: an http(s) URL of bounded length."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CStoreError("malformed", "a peer URL must be an http(s) URL")
    if len(url) > MAX_URL_CHARS:
        raise CStoreError("too_large", f"a peer URL is longer than {MAX_URL_CHARS} characters")
    return url.rstrip("/")


class PeerClient:
    """Signed requests to peers through the node's shared HTTP client."""

    def __init__(
        self, http: httpx.AsyncClient, key: NodeKey, network: str, timeout: float = PEER_TIMEOUT
    ) -> None:
        self.http = http
        self.key = key
        self.network = network
        self.timeout = timeout

    def headers(self, peer: PeerRef, method: str, path: str, body: bytes) -> dict[str, str]:
        auth = sign_request(
            self.key, network=self.network, target=peer.address, method=method, path=path, body=body
        )
        headers = {"authorization": auth, "accept-encoding": "identity"}
        if method == "POST":
            headers["content-type"] = "application/json"
        return headers

    async def request(self, peer: PeerRef, method: str, path: str, body: bytes, *, limit: int) -> bytes:
        """The answer's body (at most `limit` bytes) to `method path` on `peer`; `CStoreError` with
        cause `too_large` (past the cap), `timeout` (past the deadline) or `unreachable` (no answer,
        an error answer, a compressed one)."""
        headers = self.headers(peer, method, path, body)
        url = peer.url + path
        try:
            async with asyncio.timeout(self.timeout):
                async with self.http.stream(method, url, content=body or None, headers=headers) as r:
                    if r.status_code != 200:
                        raise _refusal(url, r.status_code, await _read(r, MAX_ERROR_BYTES, url, strict=False))
                    encoding = r.headers.get("content-encoding", "identity").strip().lower()
                    if encoding not in ("", "identity"):
                        raise CStoreError(
                            "unreachable", f"{url} answered with a {encoding} body (asked for none)"
                        )
                    return await _read(r, limit, url)
        except TimeoutError:
            raise CStoreError("timeout", f"{url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise CStoreError("unreachable", f"cannot reach {url}: {exc!r}") from None


async def _read(r: httpx.Response, limit: int, url: str, *, strict: bool = True) -> bytes:
    """At most `limit` bytes of `r`'s body; past that `too_large` (or, not `strict`, just cut)."""
    declared = r.headers.get("content-length", "")
    if strict and declared.isdigit() and int(declared) > limit:
        raise CStoreError("too_large", f"{url} announced {declared} bytes, more than {limit}")
    parts: list[bytes] = []
    size = 0
    async for chunk in r.aiter_raw():
        size += len(chunk)
        if size > limit:
            if not strict:
                parts.append(chunk[: limit - (size - len(chunk))])
                break
            raise CStoreError("too_large", f"{url} sent more than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _refusal(url: str, status: int, body: bytes) -> CStoreError:
    """A peer's error answer, as ours (cause `unreachable`: the peer did not give what was asked), with
    the peer's own message and cause."""
    try:
        answer = orjson.loads(body)
        detail = f"{answer['error']} ({answer['cause']})"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = body[:200].decode("utf-8", "replace")
    return CStoreError("unreachable", f"{url} answered {status}: {detail}")
