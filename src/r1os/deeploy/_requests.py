"""Owner requests: deploy, update, scale or delete an app, signed by the owner's key.

A request is self-contained: whichever node receives it forwards it to the oracles, and each oracle
checks the signature itself. The signature (EIP-191, as wallets make it) covers a short readable text
naming the network, the action, the app, the time and a nonce, and the SHA-256 of the request's
canonical JSON, so a wallet user sees what is being signed and nothing in the request can change
without breaking it. The time bounds a request's life (`MAX_REQUEST_AGE_S`), and the nonce, remembered
by the oracles for that long, stops a replay inside that window.

Secrets never travel in clear: the client seals each value to each node that may run the app
(`seal_secrets`, ECIES to the node's public key); a request whose spec still holds clear secrets is
refused.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as _secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from r1os.deeploy._spec import AppSpec, canonical_json, spec_from_data
from r1os.errors import R1osError, SignatureError, SpecError, first_invalid
from r1os.identity import NodeKey, eip191_digest, encrypt_to, normalize_address, recover_address

Action = Literal["deploy", "update", "scale", "delete"]
ACTIONS: tuple[str, ...] = ("deploy", "update", "scale", "delete")

#: How long a signed request stays valid (either side of the receiver's clock).
MAX_REQUEST_AGE_S = 300.0
#: Largest request accepted (inline files are capped lower; secrets are sealed per node).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
SEALED_PREFIX = "sealed:"


class RequestRefused(R1osError):
    """A signed app request is malformed, stale, replayed, or not the owner's."""

    cause = "bad_request"
    status = 400


class AppRequest(BaseModel):
    """What the owner signs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str = Field(max_length=64)
    action: Action
    owner: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    name: str = Field(max_length=64)
    spec: dict[str, Any] | None = Field(None, description="deploy/update: the spec, secrets sealed")
    sealed: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="node address -> secret name -> sealed value (base64 ECIES)"
    )
    replicas: int | None = Field(None, ge=0, le=64, description="scale: the new number of replicas")
    ts_ms: int
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$")

    @property
    def app_id(self) -> str:
        return f"{self.owner.lower()}/{self.name}"

    def digest(self) -> bytes:
        """The EIP-191 digest the owner signs."""
        body = hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()
        text = (
            f"r1os deeploy request v1\nnetwork: {self.network}\n{self.action} {self.app_id}\n"
            f"time: {self.ts_ms}\nnonce: {self.nonce}\nsha256: {body}"
        )
        return eip191_digest(text.encode())

    def app_spec(self) -> AppSpec:
        """The spec this request carries (deploy/update), checked; secrets must be sealed."""
        if self.spec is None:
            raise SpecError(f"a {self.action} request carries a spec", path="spec")
        spec = spec_from_data(self.spec)
        if spec.name != self.name:
            raise SpecError(
                f"the spec is named {spec.name!r} but the request is for {self.name!r}", path="name"
            )
        clear = [k for k, v in spec.secrets.items() if v != SEALED_PREFIX + "*"]
        if clear:
            raise RequestRefused(
                f"secrets {', '.join(sorted(clear))} are in clear: they must be sealed to the target nodes",
                cause="clear_secrets",
                hint="send the request with `r1os app deploy` or the SDK, which seal secrets before sending",
            )
        for node, values in self.sealed.items():
            if set(values) != set(spec.secrets):
                raise RequestRefused(f"sealed secrets for {node} do not match the spec's secret names")
        if spec.secrets and not self.sealed:
            raise RequestRefused(
                "the spec names secrets but none are sealed to any node", cause="clear_secrets"
            )
        return spec


class SignedAppRequest(BaseModel):
    """An `AppRequest` and the owner's signature over it (hex, 65 bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: AppRequest
    signature: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{130}$")

    def signer(self) -> str:
        """The address that signed, or `SignatureError`."""
        try:
            return recover_address(self.request.digest(), bytes.fromhex(self.signature.removeprefix("0x")))
        except (R1osError, ValueError):
            raise SignatureError("the request's signature does not decode") from None

    def verify(self, network: str, now: float | None = None) -> AppRequest:
        """The request, if signed by its owner for `network` and fresh; `RequestRefused` otherwise (the
        nonce is the caller's to check against its memory)."""
        req = self.request
        if req.network != network:
            raise RequestRefused(f"the request is for network {req.network!r}, this is {network!r}")
        now_ms = (time.time() if now is None else now) * 1000
        if abs(now_ms - req.ts_ms) > MAX_REQUEST_AGE_S * 1000:
            raise RequestRefused(
                f"the request was signed {abs(now_ms - req.ts_ms) / 1000:.0f} s away from now",
                cause="stale_request",
                hint="check the clock of the machine that signs, and send a new request",
            )
        try:
            signer = self.signer()
        except SignatureError as exc:
            raise RequestRefused(str(exc), cause="bad_signature") from None
        if signer.lower() != req.owner.lower():
            raise RequestRefused(
                f"signed by {signer}, not by the owner {req.owner}",
                cause="bad_signature",
                hint="only the owner's key changes or deletes its app",
            )
        return req


def parse_signed_request(raw: bytes | dict[str, Any]) -> SignedAppRequest:
    """A `SignedAppRequest` from JSON bytes or a dict; `RequestRefused` naming the bad field."""
    if isinstance(raw, bytes | bytearray) and len(raw) > MAX_REQUEST_BYTES:
        raise RequestRefused(f"request of {len(raw)} bytes, at most {MAX_REQUEST_BYTES}", cause="too_large")
    try:
        if isinstance(raw, dict):
            return SignedAppRequest.model_validate(raw)
        return SignedAppRequest.model_validate_json(raw)
    except ValidationError as exc:
        where, msg = first_invalid(exc, "request")
        raise RequestRefused(f"{where}: {msg}") from None


def seal_secrets(spec: AppSpec, nodes: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The spec as it may travel (secret values replaced by a marker) and, for each node (address ->
    public key), every secret sealed to that node. The app id is bound into each sealed value (AAD), so
    a value cannot be moved to another app or secret name."""
    data = spec.model_dump(mode="json")
    data["secrets"] = {k: SEALED_PREFIX + "*" for k in spec.secrets}
    sealed: dict[str, dict[str, str]] = {}
    if spec.secrets:
        for node, public_key in sorted(nodes.items()):
            sealed[normalize_address(node).lower()] = {
                k: base64.b64encode(
                    encrypt_to(public_key, v.encode(), aad=f"{spec.name}/{k}".encode())
                ).decode()
                for k, v in spec.secrets.items()
            }
    return data, sealed


def open_secrets(key: NodeKey, name: str, sealed: dict[str, str]) -> dict[str, str]:
    """The secrets sealed to `key` for app `name` (raises `DecryptionError` if one does not open)."""
    return {
        k: key.decrypt(base64.b64decode(v), aad=f"{name}/{k}".encode()).decode()
        for k, v in sorted(sealed.items())
    }


def sign_app_request(
    key: NodeKey,
    *,
    network: str,
    action: Action,
    name: str,
    spec: AppSpec | None = None,
    nodes: dict[str, bytes] | None = None,
    replicas: int | None = None,
    now: float | None = None,
) -> SignedAppRequest:
    """Build and sign a request as the owner `key` (secrets sealed to `nodes`: address -> public key)."""
    spec_data: dict[str, Any] | None = None
    sealed: dict[str, dict[str, str]] = {}
    if spec is not None:
        spec_data, sealed = seal_secrets(spec, nodes or {})
    req = AppRequest(
        network=network,
        action=action,
        owner=key.address,
        name=name,
        spec=spec_data,
        sealed=sealed,
        replicas=replicas,
        ts_ms=int((time.time() if now is None else now) * 1000),
        nonce=_secrets.token_hex(16),
    )
    return SignedAppRequest(request=req, signature="0x" + key.sign_digest(req.digest()).hex())
