"""A participant's signed update: a small header signed by its node key, and the blob it names.

The header says which network, job and round the update is for, who sends it, its privacy mode, the
CKKS context it was encrypted under (the fingerprint of the owner's public context), its length, the
number of ciphertexts, the participant's sample count (in clear: weighted FedAvg needs it, and it is
what the header reveals) and the SHA-256 of the blob. The signature (EIP-191, as wallets make it) covers
a short readable text and the SHA-256 of the header's canonical JSON, so nothing in the header, and
through `blob_sha256` nothing in the blob, changes without breaking it.

`check_update` is what the aggregator runs on each arrival, and refuses with one cause each:
`bad_signature`, `wrong_job` (another network or job), `not_participant`, `stale_round` (a past or
future round), `replayed` (the participant is already counted this round), `wrong_context` (another
privacy mode or CKKS context), `wrong_size` (length, ciphertext count or blob hash not as expected) and
`malformed` (a header or blob that does not parse). Each refusal is logged once, here, with the
participant and the cause. Ciphertexts themselves are checked when they are added
(`r1os.edil._ckks.CkksSum.add`), which needs TenSEAL; this module does not.

Blob layout (little-endian): b"R1EDU1" | kind (1 byte: 0 ciphertexts, 1 float64, 2 float32) | count
(u32) | for ciphertexts, count x (u32 length | bytes); for vectors, count values. The size of the whole
blob, the count and every length prefix are bounded before anything is read, and no byte may trail.
A `masked` update is float64 (masks need its precision); `plain` may be float64 or float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets as _secrets
import struct
import time
from collections.abc import Collection, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from r1os.edil._ckks import MAX_CHUNKS, MAX_CIPHERTEXT_BYTES
from r1os.edil._errors import EdilError
from r1os.errors import R1osError, first_invalid
from r1os.identity import AI_PREFIX, NodeKey, eip191_digest, normalize_address, recover_address

log = logging.getLogger("r1os.edil")

Privacy = Literal["plain", "ckks", "masked", "ckks+masked"]
PRIVACY_MODES: tuple[str, ...] = ("plain", "ckks", "masked", "ckks+masked")
ENCRYPTED: frozenset[str] = frozenset({"ckks", "ckks+masked"})

MAGIC = b"R1EDU1"
KIND_CIPHERTEXTS, KIND_FLOAT64, KIND_FLOAT32 = 0, 1, 2
_DTYPES: dict[int, np.dtype[Any]] = {KIND_FLOAT64: np.dtype("<f8"), KIND_FLOAT32: np.dtype("<f4")}
_HEAD = struct.Struct("<6sBI")
_LEN = struct.Struct("<I")
#: Most values an update carries, and the largest blob and signed header accepted.
MAX_LENGTH = 1 << 22
MAX_BLOB_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_SAMPLES = 10**12

_HEX64 = r"^[0-9a-f]{64}$"


class UpdateRefused(EdilError):
    """An update is refused; `cause` says why."""

    cause = "malformed"


def canonical_json(data: Any) -> bytes:
    """The one byte form of `data` that signatures and hashes cover."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class UpdateHeader(BaseModel):
    """What a participant signs about its update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str = Field(min_length=1, max_length=64, pattern=r"^[^\n]+$")
    job: str = Field(min_length=1, max_length=128, pattern=r"^[^\n]+$")
    round: int = Field(ge=0, le=1_000_000)
    participant: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    privacy: Privacy
    context_fingerprint: str | None = Field(None, pattern=_HEX64, description="ckks modes: the context's")
    length: int = Field(ge=1, le=MAX_LENGTH)
    chunks: int = Field(ge=1, le=MAX_CHUNKS)
    samples: int = Field(ge=0, le=MAX_SAMPLES)
    blob_sha256: str = Field(pattern=_HEX64)
    ts_ms: int = Field(ge=0)
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$")

    @model_validator(mode="after")
    def _context_matches_privacy(self) -> UpdateHeader:
        if (self.context_fingerprint is not None) != (self.privacy in ENCRYPTED):
            raise ValueError("context_fingerprint is given exactly when privacy is ckks or ckks+masked")
        if self.privacy not in ENCRYPTED and self.chunks != 1:
            raise ValueError("a plain or masked update is one vector (chunks = 1)")
        return self

    def digest(self) -> bytes:
        """The EIP-191 digest the participant signs."""
        body = hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()
        text = (
            f"r1os edil update v1\nnetwork: {self.network}\njob: {self.job}\nround: {self.round}\n"
            f"participant: {self.participant}\nprivacy: {self.privacy}\nsamples: {self.samples}\n"
            f"time: {self.ts_ms}\nnonce: {self.nonce}\nsha256: {body}"
        )
        return eip191_digest(text.encode())


class SignedUpdate(BaseModel):
    """An `UpdateHeader` and the participant's signature over it (hex, 65 bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: UpdateHeader
    signature: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{130}$")

    def signer(self) -> str:
        """The address that signed, or `UpdateRefused` (bad_signature)."""
        try:
            return recover_address(self.header.digest(), bytes.fromhex(self.signature.removeprefix("0x")))
        except (R1osError, ValueError):
            raise UpdateRefused("the update's signature does not decode", cause="bad_signature") from None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def parse_signed_update(raw: bytes | str | dict[str, Any]) -> SignedUpdate:
    """A `SignedUpdate` from JSON or a dict; `UpdateRefused` (malformed) naming the bad field."""
    if isinstance(raw, bytes | bytearray | str) and len(raw) > MAX_HEADER_BYTES:
        raise UpdateRefused(f"a signed update header of {len(raw)} bytes, at most {MAX_HEADER_BYTES}")
    try:
        if isinstance(raw, dict):
            return SignedUpdate.model_validate(raw)
        return SignedUpdate.model_validate_json(raw)
    except ValidationError as exc:
        where, msg = first_invalid(exc, "update")
        raise UpdateRefused(f"{where}: {msg}") from None


# -- blobs ------------------------------------------------------------------------------------------------


def pack_chunks(chunks: Sequence[bytes]) -> bytes:
    """The blob of an encrypted update's ciphertexts."""
    if not 1 <= len(chunks) <= MAX_CHUNKS:
        raise UpdateRefused(f"1..{MAX_CHUNKS} ciphertexts, not {len(chunks)}", cause="wrong_size")
    parts = [_HEAD.pack(MAGIC, KIND_CIPHERTEXTS, len(chunks))]
    for chunk in chunks:
        if not 1 <= len(chunk) <= MAX_CIPHERTEXT_BYTES:
            raise UpdateRefused(f"a ciphertext of {len(chunk)} bytes", cause="wrong_size")
        parts += [_LEN.pack(len(chunk)), bytes(chunk)]
    return b"".join(parts)


def pack_vector(vec: np.ndarray | Sequence[float], dtype: Literal["float64", "float32"] = "float64") -> bytes:
    """The blob of a plain or masked update (`masked` ones are float64)."""
    kind = KIND_FLOAT64 if dtype == "float64" else KIND_FLOAT32
    arr = np.asarray(vec, dtype=_DTYPES[kind])
    if arr.ndim != 1 or not 1 <= arr.size <= MAX_LENGTH:
        raise UpdateRefused(
            f"a vector of 1..{MAX_LENGTH} values, not of shape {arr.shape}", cause="wrong_size"
        )
    if not np.all(np.isfinite(arr)):
        raise UpdateRefused("the vector holds NaN or infinite values")
    return bytes(_HEAD.pack(MAGIC, kind, arr.size) + arr.tobytes())


def unpack_blob(blob: bytes) -> list[bytes] | np.ndarray:
    """The ciphertexts (a list of bytes) or the float64 vector a blob holds; `UpdateRefused` if it is
    not a well-formed blob within the bounds."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise UpdateRefused("a blob is bytes")
    view = memoryview(blob)
    if len(view) > MAX_BLOB_BYTES:
        raise UpdateRefused(f"a blob of {len(view)} bytes, at most {MAX_BLOB_BYTES}", cause="wrong_size")
    if len(view) < _HEAD.size:
        raise UpdateRefused(f"a blob of {len(view)} bytes is shorter than its header")
    magic, kind, count = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise UpdateRefused("not an update blob (bad magic)")
    pos = _HEAD.size
    if kind == KIND_CIPHERTEXTS:
        if not 1 <= count <= MAX_CHUNKS:
            raise UpdateRefused(f"a blob of {count} ciphertexts, 1..{MAX_CHUNKS}", cause="wrong_size")
        chunks: list[bytes] = []
        for i in range(count):
            if len(view) - pos < _LEN.size:
                raise UpdateRefused(f"the blob ends before ciphertext {i}")
            (size,) = _LEN.unpack_from(view, pos)
            pos += _LEN.size
            if not 1 <= size <= MAX_CIPHERTEXT_BYTES:
                raise UpdateRefused(f"ciphertext {i} claims {size} bytes, 1..{MAX_CIPHERTEXT_BYTES}")
            if size > len(view) - pos:
                raise UpdateRefused(f"ciphertext {i} claims {size} bytes, {len(view) - pos} remain")
            chunks.append(bytes(view[pos : pos + size]))
            pos += size
        if pos != len(view):
            raise UpdateRefused(f"{len(view) - pos} bytes trail the last ciphertext")
        return chunks
    dtype = _DTYPES.get(kind)
    if dtype is None:
        raise UpdateRefused(f"unknown blob kind {kind}")
    if not 1 <= count <= MAX_LENGTH:
        raise UpdateRefused(f"a vector of {count} values, 1..{MAX_LENGTH}", cause="wrong_size")
    if len(view) - pos != count * dtype.itemsize:
        raise UpdateRefused(
            f"a vector of {count} {dtype.name} values is {count * dtype.itemsize} bytes, the blob holds "
            f"{len(view) - pos}"
        )
    arr = np.frombuffer(view[pos:], dtype=dtype).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise UpdateRefused("the vector holds NaN or infinite values")
    return arr


def blob_kind(blob: bytes) -> int:
    """The kind byte of a blob (after `unpack_blob` accepted it)."""
    return int(blob[len(MAGIC)]) if len(blob) > len(MAGIC) else -1


# -- signing and checking ---------------------------------------------------------------------------------


def sign_update(
    key: NodeKey,
    *,
    network: str,
    job: str,
    round: int,
    privacy: Privacy,
    blob: bytes,
    length: int,
    chunks: int,
    samples: int,
    context_fingerprint: str | None = None,
    now: float | None = None,
) -> SignedUpdate:
    """The header of `blob` built and signed as participant `key`."""
    try:
        header = UpdateHeader(
            network=network,
            job=job,
            round=round,
            participant=key.address,
            privacy=privacy,
            context_fingerprint=context_fingerprint,
            length=length,
            chunks=chunks,
            samples=samples,
            blob_sha256=hashlib.sha256(blob).hexdigest(),
            ts_ms=int((time.time() if now is None else now) * 1000),
            nonce=_secrets.token_hex(16),
        )
    except ValidationError as exc:
        where, msg = first_invalid(exc, "update")
        raise UpdateRefused(f"{where}: {msg}") from None
    return SignedUpdate(header=header, signature="0x" + key.sign_digest(header.digest()).hex())


def _norm(address: str) -> str:
    if address.startswith(AI_PREFIX):
        return normalize_address(address).lower()
    return address.lower()


def check_update(
    signed: SignedUpdate | bytes | dict[str, Any],
    blob: bytes,
    *,
    network: str,
    job: str,
    round: int,
    participants: Collection[str],
    context_fingerprint: str | None,
    length: int,
    seen: Collection[str],
    privacy: Privacy | None = None,
    chunks: int | None = None,
) -> UpdateHeader:
    """The header of an update that may be counted in this round, or `UpdateRefused` with its cause
    (logged once here). `participants` and `seen` are addresses (`seen`: already counted this round;
    the caller adds the participant once it counts the update). `privacy` and `chunks`, when given, are
    the job's mode and the number of ciphertexts `length` values take under its context."""
    who = "?"

    def refuse(cause: str, message: str) -> UpdateRefused:
        log.warning(
            "edil: update refused: job=%s round=%s participant=%s cause=%s: %s",
            job,
            round,
            who,
            cause,
            message,
        )
        return UpdateRefused(message, cause=cause)

    try:
        if not isinstance(signed, SignedUpdate):
            signed = parse_signed_update(signed)
        header = signed.header
        who = header.participant
        signer = signed.signer()
    except UpdateRefused as exc:
        raise refuse(exc.cause, str(exc)) from None
    if signer.lower() != header.participant.lower():
        raise refuse("bad_signature", f"signed by {signer}, not by the participant it names")
    if header.network != network or header.job != job:
        raise refuse("wrong_job", f"an update for {header.network}/{header.job}, this is {network}/{job}")
    if header.participant.lower() not in {_norm(p) for p in participants}:
        raise refuse("not_participant", f"{header.participant} is not a participant of job {job}")
    if header.round != round:
        when = "past" if header.round < round else "future"
        raise refuse("stale_round", f"an update for the {when} round {header.round}, this is round {round}")
    if header.participant.lower() in {_norm(p) for p in seen}:
        raise refuse("replayed", f"{header.participant} is already counted in round {round}")
    if privacy is not None and header.privacy != privacy:
        raise refuse("wrong_context", f"a {header.privacy} update, the job is {privacy}")
    if header.privacy in ENCRYPTED and header.context_fingerprint != context_fingerprint:
        raise refuse(
            "wrong_context",
            f"encrypted under context {str(header.context_fingerprint)[:16]}..., the job's is "
            f"{str(context_fingerprint)[:16]}...",
        )
    if header.length != length:
        raise refuse("wrong_size", f"{header.length} values, the model has {length}")
    if chunks is not None and header.privacy in ENCRYPTED and header.chunks != chunks:
        raise refuse("wrong_size", f"{header.chunks} ciphertexts, {length} values take {chunks}")
    if not isinstance(blob, bytes | bytearray) or len(blob) > MAX_BLOB_BYTES:
        raise refuse("wrong_size", f"a blob of at most {MAX_BLOB_BYTES} bytes")
    if hashlib.sha256(blob).hexdigest() != header.blob_sha256:
        raise refuse("wrong_size", "the blob is not the one the header signs (SHA-256 differs)")
    try:
        content = unpack_blob(blob)
    except UpdateRefused as exc:
        raise refuse(exc.cause, str(exc)) from None
    if header.privacy in ENCRYPTED:
        if not isinstance(content, list):
            raise refuse("malformed", f"a {header.privacy} update carries ciphertexts, not a vector")
        if len(content) != header.chunks:
            raise refuse(
                "wrong_size", f"the blob holds {len(content)} ciphertexts, the header {header.chunks}"
            )
    else:
        if not isinstance(content, np.ndarray):
            raise refuse("malformed", f"a {header.privacy} update carries a vector, not ciphertexts")
        if header.privacy == "masked" and blob_kind(blob) != KIND_FLOAT64:
            raise refuse("malformed", "a masked update is float64")
        if content.size != length:
            raise refuse("wrong_size", f"the blob holds {content.size} values, the model has {length}")
    return header
