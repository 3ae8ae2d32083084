"""Signed HTTP requests: who is calling a node's API, proven with the caller's secp256k1 key.

A client puts one header on the request:

    Authorization: R1OS-SIG address=0x..,ts=<unix ms>,nonce=<hex>,body=<sha256 hex | UNSIGNED>,sig=<hex>

The signature (EIP-191, as for envelopes) covers the network, the node it is meant for (so it cannot be
replayed on another node), the method, the path with its query, the time, a nonce (the node refuses a
nonce it has seen: no replay on the same node) and the body's sha256. Routes that stream big bodies (an
R1FS upload) accept `UNSIGNED` for the body: what is stored is named by its own hash, and the request
itself (who, what, when) is still signed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from r1os.errors import R1osError, WireError
from r1os.identity import NodeKey, eip191_digest, normalize_address, recover_address

SCHEME = "R1OS-SIG"
UNSIGNED_BODY = "UNSIGNED"
#: How far a request's time may be from the node's clock.
MAX_REQUEST_SKEW_S = 60.0
_MAX_HEADER = 512  # the header is ~330 characters; anything much longer is not ours
_FIELDS = ("address", "ts", "nonce", "body", "sig")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What an `Authorization: R1OS-SIG ...` header claims (not yet verified)."""

    address: str
    ts_ms: int
    nonce: str
    body: str
    sig: bytes


def body_hash(body: bytes | None) -> str:
    return hashlib.sha256(body).hexdigest() if body is not None else UNSIGNED_BODY


def request_digest(
    network: str, target: str, method: str, path: str, ts_ms: int, nonce: str, body: str
) -> bytes:
    text = f"r1os request v1\n{network}\n{target.lower()}\n{method.upper()}\n{path}\n{ts_ms}\n{nonce}\n{body}"
    return eip191_digest(text.encode())


def sign_request(
    key: NodeKey,
    *,
    network: str,
    target: str,
    method: str,
    path: str,
    body: bytes | None,
    now: float | None = None,
) -> str:
    """The `Authorization` header value for a request to node `target` (`path` with its query string;
    `body=None` for a streamed body sent as UNSIGNED)."""
    ts_ms = int((time.time() if now is None else now) * 1000)
    nonce = secrets.token_hex(12)
    digest_body = body_hash(body)
    sig = key.sign_digest(request_digest(network, target, method, path, ts_ms, nonce, digest_body))
    return f"{SCHEME} address={key.address},ts={ts_ms},nonce={nonce},body={digest_body},sig={sig.hex()}"


def parse_authorization(value: str) -> SignedRequest:
    """The claims of an `R1OS-SIG` header; `WireError("bad_auth")` if it is not one."""
    if len(value) > _MAX_HEADER or not value.startswith(SCHEME + " "):
        raise WireError("bad_auth", f"Authorization is not an {SCHEME} header")
    parts: dict[str, str] = {}
    for item in value[len(SCHEME) + 1 :].split(","):
        name, sep, v = item.strip().partition("=")
        if not sep or name not in _FIELDS or name in parts:
            raise WireError("bad_auth", f"{SCHEME} header: unexpected part {name[:20]!r}")
        parts[name] = v
    if set(parts) != set(_FIELDS):
        raise WireError("bad_auth", f"{SCHEME} header lacks {sorted(set(_FIELDS) - set(parts))}")
    try:
        address = normalize_address(parts["address"])
        ts_ms = int(parts["ts"])
        sig = bytes.fromhex(parts["sig"])
    except (R1osError, ValueError):
        raise WireError("bad_auth", f"{SCHEME} header: malformed address, ts or sig") from None
    nonce, body = parts["nonce"], parts["body"]
    if not 8 <= len(nonce) <= 64 or not all(c in "0123456789abcdef" for c in nonce):
        raise WireError("bad_auth", f"{SCHEME} header: the nonce must be 8-64 lower-case hex digits")
    if body != UNSIGNED_BODY and (len(body) != 64 or not all(c in "0123456789abcdef" for c in body)):
        raise WireError("bad_auth", f"{SCHEME} header: body must be a sha256 hex digest or {UNSIGNED_BODY}")
    return SignedRequest(address, ts_ms, nonce, body, sig)


def verify_request(
    claim: SignedRequest,
    *,
    network: str,
    target: str,
    method: str,
    path: str,
    now: float | None = None,
    max_skew_s: float = MAX_REQUEST_SKEW_S,
) -> str:
    """The caller's address if `claim` is signed by it for this request now; `WireError` otherwise
    (`stale_auth`: outside the time window; `bad_signature`). The body and the nonce are the caller's
    to check (the body may not be read yet; nonces need the node's memory)."""
    now_ms = (time.time() if now is None else now) * 1000
    if abs(now_ms - claim.ts_ms) > max_skew_s * 1000:
        raise WireError(
            "stale_auth", f"request signed {abs(now_ms - claim.ts_ms) / 1000:.0f} s away from now"
        )
    digest = request_digest(network, target, method, path, claim.ts_ms, claim.nonce, claim.body)
    try:
        signer = recover_address(digest, claim.sig)
    except (R1osError, ValueError):
        raise WireError("bad_signature", "request signature does not decode") from None
    if signer != claim.address:
        raise WireError("bad_signature", "request is not signed by the address it names")
    return signer
