"""Who is calling: the three kinds of caller a node's API knows, and how each is proven.

- **local**: the node's operator, on the node's machine. The node writes a random token to
  `<home>/api-token` (mode 0600) at start; a request with `Authorization: Bearer <token>` acts as the
  node itself (the CLI on the node's machine reads the file). Only a local caller may have the node sign
  something for it, or run maintenance (R1FS garbage collection).
- **signed**: anyone with a key, proven per request by an `R1OS-SIG` header (see `r1os.wire._request`):
  the request names this node, is recent, carries a fresh nonce and, unless the route streams, the
  sha256 of its body. Quotas and ownership (pins, namespaces) are per signed address.
- **anonymous**: no header. Reads of public data only.

Routes ask through `ctx.auth` (a FastAPI dependency or a direct call): `await ctx.auth.caller(request)`
or `await ctx.auth.require(request, signed=True)`.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

from fastapi import Request
from pydantic import BaseModel

from r1os.errors import R1osError, WireError
from r1os.paths import API_TOKEN_FILE
from r1os.wire import UNSIGNED_BODY, body_hash, parse_authorization, verify_request
from r1os.wire._request import MAX_REQUEST_SKEW_S

log = logging.getLogger("r1os.node.auth")

TOKEN_FILE = API_TOKEN_FILE
#: Nonces remembered (each for the skew window); past this, the oldest are forgotten and requests
#: signed no later than the newest forgotten one are refused as stale (they could be replays).
MAX_NONCES = 200_000


class Unauthenticated(R1osError):
    cause = "unauthenticated"
    status = 401
    hint = (
        "sign the request with your key (the SDK and CLI do: --key / R1OS_KEY), or use the node's API token"
    )


class Forbidden(R1osError):
    cause = "forbidden"
    status = 403


class Caller(BaseModel):
    """Who made a request: `address` is the signer (or the node itself for a local caller)."""

    address: str | None = None
    local: bool = False
    body_signed: bool = True
    """False when a signed request declared its body UNSIGNED (accepted only where a route streams)."""

    @property
    def signed(self) -> bool:
        return self.address is not None

    @property
    def kind(self) -> str:
        return "local" if self.local else "signed" if self.address else "anonymous"


class NonceMemory:
    """Nonces seen within the skew window, bounded (see MAX_NONCES)."""

    def __init__(self, window_s: float = MAX_REQUEST_SKEW_S, limit: int = MAX_NONCES) -> None:
        self.window_ms = window_s * 1000
        self.limit = limit
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce -> ts_ms, in arrival order
        self.floor_ms = 0  # requests signed at or before this may be replays of forgotten nonces

    def check_and_mark(self, nonce: str, ts_ms: int, now_ms: float) -> None:
        while self._seen:
            oldest, ts = next(iter(self._seen.items()))
            if ts >= now_ms - 2 * self.window_ms and len(self._seen) < self.limit:
                break
            del self._seen[oldest]
            if ts >= now_ms - 2 * self.window_ms:
                self.floor_ms = max(self.floor_ms, ts)
        if ts_ms <= self.floor_ms:
            raise WireError("stale_auth", "request too old to tell from a replay now (the node is busy)")
        if nonce in self._seen:
            raise WireError("replayed", "request nonce already used")
        self._seen[nonce] = ts_ms

    def __len__(self) -> int:
        return len(self._seen)


class ApiAuth:
    """The node's request authentication (one per node)."""

    def __init__(self, network: str, address: str, home: Path) -> None:
        self.network = network
        self.address = address
        self.token_path = home / TOKEN_FILE
        self.token = ""
        self.nonces = NonceMemory()
        self.refused: dict[str, int] = {}

    def load_token(self) -> None:
        """Create (or keep) the local token file, readable by the node's user only."""
        try:
            token = self.token_path.read_text().strip()
        except FileNotFoundError:
            token = ""
        if len(token) < 32:
            token = secrets.token_urlsafe(32)
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
        os.chmod(self.token_path, 0o600)
        self.token = token

    def _refuse(self, cause: str, message: str, request: Request, hint: str | None = None) -> Unauthenticated:
        self.refused[cause] = self.refused.get(cause, 0) + 1
        client = request.client.host if request.client else "?"
        log.info("api: refused %s %s from %s: %s", request.method, request.url.path, client, message)
        return Unauthenticated(message, cause=cause, hint=hint)

    async def caller(self, request: Request, *, streamed: bool = False) -> Caller:
        """Who sent `request`; raises `Unauthenticated` for a header that does not prove it. On a route
        that streams its body (`streamed`), the body is never read here: its signature must say UNSIGNED."""
        value = request.headers.get("authorization")
        if value is None:
            return Caller()
        if value.startswith("Bearer "):
            if self.token and hmac.compare_digest(value[7:].strip().encode(), self.token.encode()):
                return Caller(address=self.address, local=True)
            raise self._refuse("bad_token", "wrong API token", request)
        try:
            claim = parse_authorization(value)
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            address = verify_request(
                claim, network=self.network, target=self.address, method=request.method, path=path
            )
            if streamed and claim.body != UNSIGNED_BODY:
                raise WireError("bad_auth", f"this route streams its body: sign it as body={UNSIGNED_BODY}")
            if claim.body != UNSIGNED_BODY and body_hash(await request.body()) != claim.body:
                raise WireError("bad_auth", "the body is not the one that was signed")
            self.nonces.check_and_mark(claim.nonce, claim.ts_ms, time.time() * 1000)
        except WireError as exc:
            raise self._refuse(exc.cause, str(exc), request) from None
        return Caller(address=address, body_signed=claim.body != UNSIGNED_BODY)

    async def require(self, request: Request, *, local: bool = False, signed_body: bool = True) -> Caller:
        """The caller, who must be signed (or local); with `local=True` only the node's operator passes.
        `signed_body=False` lets a streamed route accept an UNSIGNED body."""
        caller = await self.caller(request, streamed=not signed_body)
        if local and not caller.signed:
            raise self._refuse(
                "unauthenticated",
                f"{request.method} {request.url.path} is for the node's operator: send its API token",
                request,
                hint=f"on the node's machine: Authorization: Bearer <the token in {self.token_path}>",
            )
        if local and not caller.local:
            raise Forbidden(
                f"{request.method} {request.url.path} is for the node's operator only",
                hint=f"call it on the node's machine with the token in {self.token_path}",
            )
        if not caller.signed:
            what = f"{request.method} {request.url.path}"
            raise self._refuse("unauthenticated", f"{what} needs a signed request", request)
        if signed_body and not caller.body_signed:
            raise self._refuse("bad_auth", "this route needs the body's hash in the signature", request)
        return caller
