"""What dAuth signs and sends: requests, admission records and the network config.

Everything signed uses the wire scheme: EIP-191 over SHA-256 of the canonical JSON (sorted keys, no
spaces), so any Ethereum wallet library can check an oracle's signature.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from r1os.errors import AdmissionRefused, R1osError, first_invalid
from r1os.identity import NodeKey, eip191_digest, normalize_address, recover_address
from r1os.wire import canonical_bytes

_SIG_RE = re.compile(r"0x[0-9a-f]{130}")

#: CSTORE hash of admission records: field = lower-case node address, value = a `SignedRecord`.
ADMITTED_KEY = "net:dauth:admitted"
#: CSTORE key of the signed network config: `{"config": NetworkConfig, "signatures": {oracle: sig}}`.
CONFIG_KEY = "net:dauth:config"

_MALFORMED_HINT = (
    "build the request with r1os.dauth.make_request (its schema: POST /v1/dauth/admit in /openapi.json)"
)

#: How far a request's timestamp may be from the oracle's clock.
MAX_REQUEST_SKEW_S = 60.0


class DauthError(AdmissionRefused):
    """A dAuth refusal: `cause` is one machine word, `status` the HTTP status a node answers with (see
    the causes in docs/dauth.md). Raised by routes as is; the node's error handler shapes the answer."""

    def __init__(self, cause: str, message: str, *, hint: str | None = None, status: int = 403) -> None:
        super().__init__(message, hint=hint, cause=cause, status=status)


def digest_of(obj: dict[str, Any]) -> bytes:
    """EIP-191 digest of SHA-256 of the canonical JSON of `obj`."""
    return eip191_digest(hashlib.sha256(canonical_bytes(obj)).digest())


def sign_obj(key: NodeKey, obj: dict[str, Any]) -> str:
    return "0x" + key.sign_digest(digest_of(obj)).hex()


def signer_of(obj: dict[str, Any], sig: Any) -> str | None:
    """The EIP-55 address that signed `obj`, or None if `sig` is not a valid signature."""
    if not isinstance(sig, str) or not _SIG_RE.fullmatch(sig):
        return None
    try:
        return recover_address(digest_of(obj), bytes.fromhex(sig[2:]))
    except (R1osError, ValueError):
        return None


class NetworkConfig(BaseModel):
    """What an admitted node needs to know about its network (signed by an oracle)."""

    network: str
    chain_rpc: str | None = None
    chain_id: int | None = None
    contracts: dict[str, str] = {}
    genesis_time: int = 0
    epoch_seconds: int = 60
    oracles: list[str] = []
    oracle_urls: list[str] = []
    broker_url: str | None = None
    issued_at: float = 0.0

    def epoch_at(self, unix_time: float | None = None) -> int:
        t = time.time() if unix_time is None else unix_time
        return max(0, int(t - self.genesis_time) // self.epoch_seconds)

    def epoch_end(self, epoch: int) -> int:
        """Unix time at which `epoch` ends."""
        return self.genesis_time + (epoch + 1) * self.epoch_seconds

    def same_as(self, other: NetworkConfig | None) -> bool:
        """Equal up to `issued_at` (so oracles rewrite the stored config only when it changes)."""
        if other is None:
            return False
        return self.model_dump(exclude={"issued_at"}) == other.model_dump(exclude={"issued_at"})


class Licence(BaseModel):
    type: str
    token_id: int


class AdmissionRecord(BaseModel):
    """One node's admission: which licence, confirmed in which epoch, valid until when."""

    network: str
    address: str = Field(description="EIP-55 node address")
    licence: Licence
    epoch: int
    expires: int = Field(description="unix seconds; the end of the epoch after `epoch`")

    def body(self) -> dict[str, Any]:
        return self.model_dump()


class SignedRecord(BaseModel):
    """The value stored under `net:dauth:admitted` / <address>."""

    record: AdmissionRecord
    signatures: dict[str, str] = {}

    def valid_signers(self, oracles: set[str]) -> set[str]:
        """Lower-case oracle addresses whose signature over the record checks out."""
        body = self.record.body()
        out: set[str] = set()
        for who, sig in self.signatures.items():
            signer = signer_of(body, sig)
            if signer is not None and signer.lower() == who.lower() and who.lower() in oracles:
                out.add(who.lower())
        return out


class AdmissionRequest(BaseModel):
    """What a node signs to ask for admission."""

    network: str
    address: str
    nonce: str = Field(min_length=8, max_length=128)
    ts: float
    version: str = ""


def make_request(key: NodeKey, network: str, version: str) -> dict[str, Any]:
    """A signed admission request ready to POST."""
    req = AdmissionRequest(
        network=network, address=key.address, nonce=secrets.token_hex(16), ts=time.time(), version=version
    )
    body = req.model_dump()
    return {"request": body, "sig": sign_obj(key, body)}


def parse_request(data: Any, network: str, now: float | None = None) -> AdmissionRequest:
    """Check a posted request's shape, network, signature and clock; raise `DauthError` if bad.

    The nonce is checked by the caller (it needs memory of what was seen).
    """
    if not isinstance(data, dict) or set(data) != {"request", "sig"} or not isinstance(data["request"], dict):
        raise DauthError(
            "malformed", 'expected {"request": {...}, "sig": "0x..."}', hint=_MALFORMED_HINT, status=400
        )
    try:
        req = AdmissionRequest.model_validate(data["request"], strict=False)
    except ValidationError as exc:
        loc, msg = first_invalid(exc)
        raise DauthError("malformed", f"request.{loc}: {msg}", hint=_MALFORMED_HINT, status=400) from None
    if set(data["request"]) != set(AdmissionRequest.model_fields):
        raise DauthError(
            "malformed", "request has missing or unknown fields", hint=_MALFORMED_HINT, status=400
        )
    if req.network != network:
        raise DauthError(
            "wrong_network", f"this oracle serves network {network!r}, not {req.network!r}", status=400
        )
    try:
        claimed = normalize_address(req.address)
    except (R1osError, ValueError):
        raise DauthError(
            "malformed",
            f"request.address is not an address: {req.address[:64]!r}",
            hint=_MALFORMED_HINT,
            status=400,
        ) from None
    signer = signer_of(data["request"], data["sig"])
    if signer is None:
        raise DauthError("bad_signature", "the request signature is not a valid signature", status=401)
    if signer != claimed:
        raise DauthError(
            "bad_signature",
            f"the request is signed by {signer}, not by {claimed}",
            hint="a node can only ask admission for its own address",
            status=401,
        )
    now = time.time() if now is None else now
    if abs(now - req.ts) > MAX_REQUEST_SKEW_S:
        raise DauthError(
            "stale",
            f"request timestamp is {now - req.ts:+.0f} s from the oracle's clock "
            f"(limit {MAX_REQUEST_SKEW_S:g} s)",
            hint="check the node's clock (NTP); a recorded request cannot be replayed later",
            status=401,
        )
    return req.model_copy(update={"address": claimed})


# -- answers of the HTTP API (GET/POST /v1/dauth/...); clients parse them without the node ---------------


class AdmitAnswer(BaseModel):
    """`POST /v1/dauth/admit` accepted: the network config (signed by the answering oracle) and this
    node's admission record with the oracle signatures it carries."""

    config: NetworkConfig
    config_signature: str
    oracle: str = Field(description="EIP-55 address of the oracle that answered")
    record: AdmissionRecord
    signatures: dict[str, str]


class AdmittedAnswer(BaseModel):
    """`GET /v1/dauth/admitted`: the unexpired admission records this node holds."""

    enabled: bool = Field(description="False on a network without a chain: every sender is admitted")
    oracles: list[str] = Field(description="lower-case oracle addresses")
    admitted: dict[str, SignedRecord] = Field(description="lower-case node address -> its record")
    count: int


class Refusal(BaseModel):
    """Why this node's last admission request failed: the oracle's error answer (`error`, `cause`,
    `hint`, the one error shape of a node) and when it came."""

    error: str
    cause: str
    hint: str | None = None
    at: float = Field(description="unix time of the attempt")


State = Literal["off", "oracle", "waiting", "admitted"]


class DauthStatus(BaseModel):
    """`GET /v1/dauth/status`: this node's admission state."""

    enabled: bool
    address: str
    state: State
    oracle: bool
    admitted: bool
    attempts: int
    admitted_at: float | None
    last_refusal: Refusal | None
    record: SignedRecord | None
    oracles: list[str]
    oracle_urls: list[str]
    admitted_count: int
    network_config: NetworkConfig | None


class RetryAnswer(BaseModel):
    """`POST /v1/dauth/retry`: whether the node will ask an oracle now (edge nodes with dAuth on)."""

    retrying: bool
    state: State
