"""The signed wire protocol: envelopes, their deterministic encoding, and verification."""

from r1os.wire._envelope import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    Envelope,
    EnvelopeSigner,
    canonical_bytes,
    envelope_digest,
)
from r1os.wire._request import (
    MAX_REQUEST_SKEW_S,
    UNSIGNED_BODY,
    SignedRequest,
    body_hash,
    parse_authorization,
    sign_request,
    verify_request,
)
from r1os.wire._verify import (
    DEFAULT_MAX_SIZE,
    DEFAULT_MAX_SKEW_S,
    REJECTION_CAUSES,
    EnvelopeVerifier,
    ReplayGuard,
)

__all__ = [
    "MAX_REQUEST_SKEW_S",
    "UNSIGNED_BODY",
    "SignedRequest",
    "body_hash",
    "parse_authorization",
    "sign_request",
    "verify_request",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_SKEW_S",
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "REJECTION_CAUSES",
    "Envelope",
    "EnvelopeSigner",
    "EnvelopeVerifier",
    "ReplayGuard",
    "canonical_bytes",
    "envelope_digest",
]
