"""Who a session says it is to a node: the one place where requests get their `Authorization` header.

A node knows three callers (see docs/security.md): anonymous (reads of public data), signed (anyone with
a key, per request) and local (the node's operator, holding the token the node wrote to
`<home>/api-token`). A session is one of them for all its requests:

- with a `key`: every request that changes something (any method but GET, HEAD and OPTIONS; every
  request with `sign_reads=True`) carries `Authorization: R1OS-SIG ...` (`r1os.wire.sign_request`), over
  the exact bytes sent (a streamed body, whose bytes are not known in advance, is signed as UNSIGNED).
  The signature names the node and its network, so it cannot be replayed elsewhere: both are learned
  once per session from the node's `GET /v1/node`.
- with a token and no key: every request carries `Authorization: Bearer <token>`, so the caller is the
  node itself (what only its operator may do: have the node sign for it, maintenance).
- with both, the key signs and the token is not sent: a request has one caller, and one who passes a
  key means to act as that key (its namespace, its quotas, its pins). Pass one or the other.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from pathlib import Path

import httpx

from r1os.errors import R1osError, RemoteError
from r1os.identity import NodeKey
from r1os.paths import API_TOKEN_FILE
from r1os.sdk._http import answer
from r1os.wire import sign_request

#: The node's operator token, for programs that are given it rather than a node home to read it from.
TOKEN_ENV = "R1OS_API_TOKEN"
#: Where a node keeps its token, in its home.
TOKEN_FILE = API_TOKEN_FILE
#: Methods that read; a key signs every other one (and these too with `sign_reads=True`).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NoToken(R1osError):
    cause = "no_token"
    status = 401


def read_token(home: Path | str) -> str:
    """The operator token of the node whose home folder is `home`."""
    path = Path(home) / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise NoToken(
            f"no API token in {home}", hint="a node writes it when it starts: is this the home of a node?"
        ) from None
    except PermissionError:
        raise NoToken(
            f"cannot read the API token {path}", hint="only the node's user may read it: run as that user"
        ) from None
    except OSError as exc:
        raise NoToken(f"cannot read the API token {path}: {exc}") from None
    if not token:
        raise NoToken(f"the API token {path} is empty", hint="restart the node: it writes a new one")
    return token


def find_token(token: str | None = None, home: Path | str | None = None) -> str | None:
    """The token given, else the one in node home `home`, else `$R1OS_API_TOKEN`, else None."""
    if token:
        return token
    if home is not None:
        return read_token(home)
    return os.environ.get(TOKEN_ENV) or None


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What a signed request names: the node it is meant for, and its network."""

    address: str
    network: str


def _body(request: httpx.Request) -> bytes | None:
    """The bytes a request sends, or None if it streams them (not read ahead, so not known yet)."""
    try:
        return request.content
    except httpx.RequestNotRead:
        return None


class NodeAuth(httpx.Auth):
    """An httpx `Auth` that proves the session's caller on each request as it is sent (so the signature
    covers the request's final path, query and body bytes). One per session; it learns the node's
    identity on the first request it signs and keeps it."""

    def __init__(
        self, url: str, *, key: NodeKey | None = None, token: str | None = None, sign_reads: bool = False
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.token = None if key is not None else token  # the key wins: see the module's docstring
        self.sign_reads = sign_reads
        self.node: NodeIdentity | None = None
        # A node behind a proxy at https://host/some/prefix sees paths without the prefix, so that is
        # what the signature covers.
        self._prefix = httpx.URL(self.url).path.rstrip("/")

    @property
    def kind(self) -> str:
        """The caller the node sees: `signed` (as `key`), `local` (its operator) or `anonymous`."""
        return "signed" if self.key is not None else "local" if self.token else "anonymous"

    def signs(self, method: str) -> bool:
        return self.key is not None and (self.sign_reads or method.upper() not in READ_METHODS)

    def _identity_request(self, request: httpx.Request) -> httpx.Request:
        # Same timeout as the request it is made for (a request built here has none otherwise).
        return httpx.Request(
            "GET", self.url + "/v1/node", extensions={"timeout": request.extensions.get("timeout", {})}
        )

    def _learn(self, response: httpx.Response) -> None:
        data = answer(response)  # a node's refusal, a proxy's page: raised as the RemoteError it is
        address, network = data.get("address"), data.get("network")
        if not isinstance(address, str) or not isinstance(network, str) or not address or not network:
            raise RemoteError(
                f"cannot sign requests for {self.url}: its /v1/node answer names no address and network",
                cause="bad_answer",
                hint="is this URL an r1os node's HTTP API?",
                status=response.status_code,
            )
        self.node = NodeIdentity(address, network)

    def _signed_path(self, request: httpx.Request) -> str:
        # As the node reads it: the decoded path, then the query exactly as sent.
        path = request.url.path
        if self._prefix and path.startswith(self._prefix + "/"):
            path = path[len(self._prefix) :]
        query = request.url.query.decode("ascii")
        return f"{path}?{query}" if query else path

    def _authorize(self, request: httpx.Request) -> None:
        if self.key is not None:
            if not self.signs(request.method):
                return
            assert self.node is not None  # learned by the flow before this
            request.headers["Authorization"] = sign_request(
                self.key,
                network=self.node.network,
                target=self.node.address,
                method=request.method,
                path=self._signed_path(request),
                body=_body(request),
            )
        elif self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"

    # httpx drives these generators: a request yielded before the last one is sent as it is (no auth)
    # and its response comes back here. Only that response is read, never the caller's own: a download
    # must stream.

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.signs(request.method) and self.node is None:
            response = yield self._identity_request(request)
            response.read()
            self._learn(response)
        self._authorize(request)
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.signs(request.method) and self.node is None:
            response = yield self._identity_request(request)
            await response.aread()
            self._learn(response)
        self._authorize(request)
        yield request
