"""Blobs sealed to named nodes before they go into R1FS, where anyone who learns a CID can fetch them.

A participant's update is sealed to the aggregator only (so the owner, who could decrypt a single CKKS
ciphertext, never gets one); an aggregate to the owner's node only; a global model to the job's
participants and its owner's node. One random AES-256-GCM key per blob (R1FS's file encryption), wrapped
to each recipient's public key (ECIES), with the recipients' addresses bound into the wrapping.

Layout: b"R1SEAL1" | u32 header length | header JSON {recipients: {address: wrapped key b64}} | body.
"""

from __future__ import annotations

import base64
import json
import struct

from r1os.edil._errors import EdilError
from r1os.errors import R1osError
from r1os.identity import NodeKey, address_from_public_key
from r1os.r1fs._crypto import decrypt_bytes, encrypt_bytes, new_key, unwrap_key, wrap_key

MAGIC = b"R1SEAL1"
MAX_HEADER = 64 * 1024
MAX_RECIPIENTS = 128


class SealError(EdilError):
    cause = "sealed"


def seal(data: bytes, recipients: dict[str, bytes]) -> bytes:
    """`data` readable only by the holders of the keys in `recipients` (address -> public key)."""
    if not recipients or len(recipients) > MAX_RECIPIENTS:
        raise SealError(f"a sealed blob has 1-{MAX_RECIPIENTS} recipients, not {len(recipients)}")
    key = new_key()
    wrapped: dict[str, str] = {}
    for address, public_key in sorted(recipients.items()):
        if address_from_public_key(public_key).lower() != address.lower():
            raise SealError(f"the public key given for {address} is not that node's")
        wrapped[address.lower()] = base64.b64encode(wrap_key(key, public_key)).decode()
    header = json.dumps({"recipients": wrapped}, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(header)) + header + encrypt_bytes(key, data)


def recipients_of(blob: bytes) -> list[str]:
    return sorted(_header(blob)[0])


def _header(blob: bytes) -> tuple[dict[str, str], int]:
    if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
        raise SealError("not a sealed blob", cause="malformed")
    (size,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if size > MAX_HEADER or start + size > len(blob):
        raise SealError("a sealed blob's header is truncated or too long", cause="malformed")
    try:
        header = json.loads(blob[start : start + size])
        recipients = header["recipients"]
        if not isinstance(recipients, dict) or len(recipients) > MAX_RECIPIENTS:
            raise ValueError("recipients")
    except (ValueError, KeyError, TypeError):
        raise SealError("a sealed blob's header does not parse", cause="malformed") from None
    return recipients, start + size


def open_sealed(blob: bytes, key: NodeKey) -> bytes:
    """The data, if `key` is one of the blob's recipients (`SealError` otherwise, or if tampered)."""
    recipients, body = _header(blob)
    wrapped = recipients.get(key.address.lower())
    if not isinstance(wrapped, str):
        raise SealError(f"this blob is not sealed to {key.address}", cause="not_recipient", status=403)
    try:
        file_key = unwrap_key(key, base64.b64decode(wrapped))
        return decrypt_bytes(file_key, blob[body:])
    except (R1osError, ValueError) as exc:
        raise SealError(f"the sealed blob does not open: {exc}", cause="malformed") from None
