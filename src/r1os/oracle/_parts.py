"""Phase messages larger than one wire envelope, sent as signed parts and put back together.

A wire envelope holds at most 1 MiB (`r1os.wire.DEFAULT_MAX_SIZE`). An `oracle.sigs` message carries
one 65-byte signature per node (about 180 bytes of JSON each), so it stops fitting near 5,000
nodes; local and median tables (about 50 bytes a node) near 20,000. Past `SINGLE_MAX` bytes a phase
message is sent as `oracle.part` messages instead:

    {"kind": "oracle.sigs", "id": sha256 of the whole, "part": i, "parts": n, "size": bytes, "data": b64}

Each part is its own signed envelope, so every byte is signed by the sender; the receiver takes parts
from oracles only, keeps at most `MAX_PENDING` unfinished messages per sender (the oldest is dropped
first) for at most `PENDING_TTL_S`, and hands the whole message on only when every part is in and the
SHA-256 of the joined bytes is the `id` every part named. Anything else (a part out of range, sizes
that do not add up, a part repeated with other bytes, a whole that does not hash to its id, a whole
that is not the phase message it claims to be) is refused with the reason and the unfinished message
dropped. The whole message then passes exactly the checks a single-envelope one does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from r1os.wire import canonical_bytes

MSG_PART = "oracle.part"
SINGLE_MAX = 768 * 1024
"""A phase message whose canonical payload is larger than this is sent in parts (the envelope
around it, with the signature, must stay under the wire's 1 MiB)."""
PART_BYTES = 512 * 1024
"""Bytes of the whole message per part (base64 makes it ~683 KiB in the envelope)."""
MAX_PARTS = 32
"""At most 16 MiB per message: per-node signatures of ~90,000 nodes."""
MAX_PENDING = 4
"""Unfinished messages kept per sender."""
PENDING_TTL_S = 300.0
"""An unfinished message older than this is dropped."""

_ID = re.compile(r"[0-9a-f]{64}")


class PartRefused(ValueError):
    """A part that does not count; the message says why."""


def split(kind: str, payload: dict[str, Any], *, single_max: int = SINGLE_MAX) -> list[dict[str, Any]]:
    """The `oracle.part` payloads carrying (`kind`, `payload`), or [] if it fits one envelope."""
    body = canonical_bytes({"type": kind, "payload": payload})
    if len(body) <= single_max:
        return []
    n = -(-len(body) // PART_BYTES)
    if n > MAX_PARTS:
        raise ValueError(f"{kind} of {len(body)} bytes needs {n} parts, more than {MAX_PARTS}")
    digest = hashlib.sha256(body).hexdigest()
    return [
        {"kind": kind, "id": digest, "part": i, "parts": n, "size": len(body),
         "data": base64.b64encode(body[i * PART_BYTES : (i + 1) * PART_BYTES]).decode()}
        for i in range(n)
    ]  # fmt: skip


@dataclass
class _Pending:
    kind: str
    parts: int
    size: int
    first_seen: float
    chunks: dict[int, bytes] = field(default_factory=dict)


def _int(payload: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = payload.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise PartRefused(f"{key} must be an integer {lo}..{hi}, got {str(v)[:30]!r}")
    return v


class Assembler:
    """Collects the parts of each sender's large messages; `add` returns a message once it is whole."""

    def __init__(
        self,
        kinds: Iterable[str],
        *,
        max_parts: int = MAX_PARTS,
        max_pending: int = MAX_PENDING,
        ttl: float = PENDING_TTL_S,
    ) -> None:
        self.kinds = frozenset(kinds)
        self.max_parts = max_parts
        self.max_pending = max_pending
        self.ttl = ttl
        self._pending: dict[str, dict[str, _Pending]] = {}  # sender -> id -> message in progress

    def pending(self, sender: str | None = None) -> int:
        """Unfinished messages held (from `sender`, or from everyone)."""
        if sender is not None:
            return len(self._pending.get(sender, {}))
        return sum(len(p) for p in self._pending.values())

    def add(self, sender: str, payload: dict[str, Any], now: float) -> tuple[str, dict[str, Any]] | None:
        """Take one part from `sender` (whose envelope signature the wire checked); the whole message
        (kind, payload) when this part completes it, else None. Raises `PartRefused`."""
        self._expire(now)
        kind = payload.get("kind")
        if kind not in self.kinds:
            raise PartRefused(f"kind {str(kind)[:40]!r} is not a phase message")
        mid = payload.get("id")
        if not isinstance(mid, str) or _ID.fullmatch(mid) is None:
            raise PartRefused("id must be 64 lower-case hex digits")
        parts = _int(payload, "parts", 2, self.max_parts)
        part = _int(payload, "part", 0, parts - 1)
        size = _int(payload, "size", (parts - 1) * PART_BYTES + 1, parts * PART_BYTES)
        data = payload.get("data")
        if not isinstance(data, str) or len(data) > 4 * (PART_BYTES // 3 + 1):
            raise PartRefused("data must be base64 of at most one part")
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise PartRefused("data is not base64") from None
        want = PART_BYTES if part < parts - 1 else size - (parts - 1) * PART_BYTES
        if len(chunk) != want:
            raise PartRefused(f"part {part} of {parts} holds {len(chunk)} bytes, not {want}")

        mine = self._pending.setdefault(sender, {})
        msg = mine.get(mid)
        if msg is None:
            while len(mine) >= self.max_pending:  # the oldest unfinished message goes first
                del mine[min(mine, key=lambda k: mine[k].first_seen)]
            msg = mine[mid] = _Pending(kind, parts, size, now)
        elif (msg.kind, msg.parts, msg.size) != (kind, parts, size):
            del mine[mid]
            raise PartRefused("part disagrees with the earlier parts on kind, parts or size")
        old = msg.chunks.get(part)
        if old is not None:
            if old != chunk:
                del mine[mid]
                raise PartRefused(f"part {part} sent twice with different bytes")
            return None  # a repeat (at-least-once delivery): nothing new
        msg.chunks[part] = chunk
        if len(msg.chunks) < parts:
            return None
        del mine[mid]
        if not mine:
            del self._pending[sender]
        body = b"".join(msg.chunks[i] for i in range(parts))
        if hashlib.sha256(body).hexdigest() != mid:
            raise PartRefused("the joined parts do not hash to the message id")
        try:
            whole = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise PartRefused("the joined parts are not JSON") from None
        if (
            not isinstance(whole, dict)
            or whole.get("type") != kind
            or not isinstance(whole.get("payload"), dict)
            or len(whole) != 2
        ):
            raise PartRefused(f"the joined parts are not one {kind} message")
        return kind, whole["payload"]

    def _expire(self, now: float) -> None:
        for sender in list(self._pending):
            mine = self._pending[sender]
            for mid in [m for m, p in mine.items() if now - p.first_seen > self.ttl]:
                del mine[mid]
            if not mine:
                del self._pending[sender]
