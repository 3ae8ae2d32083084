"""The signed envelope every r1os message travels in, and its deterministic encoding.

On the wire an envelope is one JSON object `{network, type, sender, seq, ts, ttl, payload, sig}`.
Its *canonical form* is the same object without `sig`, keys sorted at every depth, no spaces
(orjson). `sig` is a recoverable secp256k1 signature, EIP-191 style, over SHA-256 of the canonical
form, so the same keys that hold licences on-chain sign network traffic and any wallet can check it.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from r1os.errors import WireError
from r1os.identity import NodeKey, eip191_digest

DEFAULT_TTL_S = 60
MAX_TTL_S = 24 * 3600
_SORT = orjson.OPT_SORT_KEYS


class Envelope(BaseModel):
    """A verified (or about to be signed) message."""

    model_config = ConfigDict(frozen=True)

    network: str
    type: str
    sender: str = Field(description="EIP-55 address of the signing key")
    seq: int = Field(ge=0, description="per-sender sequence number, strictly fresh per message")
    ts: int = Field(description="sender's clock, milliseconds since the Unix epoch")
    ttl: int = Field(ge=1, le=MAX_TTL_S, description="seconds after ts when the message expires")
    payload: dict[str, Any]
    sig: str = Field(description="0x-hex 65-byte r||s||v signature")

    @property
    def age_s(self) -> float:
        return time.time() - self.ts / 1000


def canonical_bytes(body: dict[str, Any]) -> bytes:
    """Deterministic encoding of an envelope body (everything but `sig`)."""
    try:
        return orjson.dumps(body, option=_SORT)
    except TypeError as exc:
        # e.g. non-str keys, ints wider than 64 bits (send those as strings), unknown types
        raise WireError("malformed", f"payload is not canonical JSON: {exc}") from None


def envelope_digest(canonical: bytes) -> bytes:
    """What `sig` signs: EIP-191 digest of SHA-256(canonical form)."""
    return eip191_digest(hashlib.sha256(canonical).digest())


class EnvelopeSigner:
    """Seals payloads into signed envelopes for one key on one network.

    Sequence numbers start at the current time in microseconds and count up, so they stay fresh
    across restarts without persisting a counter (as long as the clock does not run backwards).
    """

    def __init__(self, key: NodeKey, network: str, *, default_ttl: int = DEFAULT_TTL_S) -> None:
        self.key = key
        self.network = network
        self.default_ttl = default_ttl
        self._seq = itertools.count(time.time_ns() // 1000)

    def seal(self, type: str, payload: dict[str, Any], *, ttl: int | None = None) -> bytes:
        """Sign and encode one message; returns the bytes to publish."""
        body: dict[str, Any] = {
            "network": self.network,
            "type": type,
            "sender": self.key.address,
            "seq": next(self._seq),
            "ts": time.time_ns() // 1_000_000,
            "ttl": ttl or self.default_ttl,
            "payload": payload,
        }
        canonical = canonical_bytes(body)
        sig = self.key.sign_digest(envelope_digest(canonical))
        # Splice the signature in rather than re-encoding the whole object.
        return canonical[:-1] + b',"sig":"0x' + sig.hex().encode() + b'"}'
