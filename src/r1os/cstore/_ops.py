"""CSTORE operations: signed batches of writes, their limits and the namespace rules.

A batch is `{"v", "writer", "hlc": [wall_ms, counter], "ops": [...], "grant", "sig"}`; op *i* of a
batch is stamped `(wall_ms, counter + i)`. `sig` is the writer's EIP-191 signature over SHA-256 of the
canonical encoding of the rest, exactly like wire envelopes, so one key signs everything it does.
Every replica checks every batch (signature, limits, namespace) before applying it, whether it came
from the fast path (broadcast) or from anti-entropy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import orjson

from r1os.cstore._hlc import MAX_COUNTER
from r1os.errors import R1osError, WireError
from r1os.identity import NodeKey, recover_address
from r1os.wire import canonical_bytes, envelope_digest

DEFAULT_MAX_KEY_BYTES = 512
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
DEFAULT_MAX_OPS_PER_BATCH = 10_000
#: How far ahead of the receiver's clock a batch may be stamped. Far below the wire's message skew
#: (30 s): a stamp in the future wins every last-writer-wins race until the clocks get there, so an
#: outsider stamping at the edge gains at most this much. Honest clocks agree within milliseconds.
DEFAULT_MAX_FUTURE_MS = 5_000
#: The longest TTL: an op's `expires_ms` at most this long after its batch's stamp (ten years). A
#: longer one is a mistake or an attempt to overflow someone's arithmetic; no expiry is `null`.
DEFAULT_MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000

_CONTROL_BYTES = bytes(range(0x20))

OpKind = Literal["set", "del", "hset", "hdel"]


#: The HTTP status of each refusal, by cause; anything else is a bad request (400).
STATUS_BY_CAUSE: dict[str, int] = {
    "malformed": 400,
    "clock_skew": 400,
    "forbidden": 403,
    "bad_signature": 403,  # signed, but not by the batch's writer: not allowed, as writing another's key
    "not_admitted": 403,  # a replication route asked by a node dAuth does not admit
    "not_found": 404,
    "timeout": 408,
    "too_large": 413,
    "quota": 429,
    "unreachable": 502,
    "busy": 503,
}


class CStoreError(R1osError):
    """A CSTORE request or operation was refused; `cause` names the reason (for metrics and clients)
    and sets the HTTP status a node answers with, unless `status` is given."""

    cause = "cstore"
    status = 400

    def __init__(
        self, cause: str, message: str, *, hint: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, hint=hint, cause=cause, status=status or STATUS_BY_CAUSE.get(cause, 400))


class Op(NamedTuple):
    """One write. `field` is set for hash ops; `expires_ms` is an absolute wall time or None.

    A tuple, because replicas build one per op of every batch they check: its encoded form
    `[kind, key, field, value, expires_ms]` becomes an `Op` without a constructor call per field."""

    kind: OpKind
    key: str
    field: str | None = None
    value: Any = None
    expires_ms: int | None = None

    def encode(self) -> list[Any]:
        return list(self)


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified, signed batch of ops from one writer."""

    writer: str
    wall_ms: int
    counter: int
    ops: tuple[Op, ...]
    raw: bytes
    id: str  # hex SHA-256 of raw: names the batch in logs and anti-entropy


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_ops_per_batch: int = DEFAULT_MAX_OPS_PER_BATCH
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS
    max_ttl_ms: int = DEFAULT_MAX_TTL_MS

    @property
    def max_batch_bytes(self) -> int:
        """The largest encoded batch worth parsing: one value at the limit plus room for the rest."""
        return self.max_value_bytes + 64 * 1024 + self.max_ops_per_batch * 64


def sign_batch(key: NodeKey, ops: list[Op], wall_ms: int, counter: int) -> bytes:
    """Encode and sign a batch of ops as `key`'s writer; `CStoreError("malformed")` for a value JSON
    cannot carry exactly (an integer wider than 64 bits, an object that is not JSON)."""
    body = {
        "v": 1,
        "writer": key.address,
        "hlc": [wall_ms, counter],
        "ops": [op.encode() for op in ops],
    }
    try:
        canonical = canonical_bytes(body)
    except WireError as exc:
        raise CStoreError("malformed", f"the ops cannot be encoded: {exc}") from None
    sig = key.sign_digest(envelope_digest(canonical))
    return canonical[:-1] + b',"sig":"0x' + sig.hex().encode() + b'"}'


def check_namespace(writer: str, op: Op, oracles: frozenset[str] = frozenset()) -> None:
    """Who may write where. The rule depends only on the key and the writer, never on stored state,
    so every replica reaches the same verdict whatever order batches arrive in.

    - `node:<address>:...`  only that address;
    - `app:<owner address>:...`  only the app's owner;
    - `pub:...`  hashes only, and each field must be the writer's own (lower-case) address;
    - `net:...`  only oracles of the network.
    """
    w = writer.lower()
    ns, _, rest = op.key.partition(":")
    if ns in ("node", "app"):
        owner = rest.partition(":")[0].lower()
        if owner != w:
            raise CStoreError(
                "forbidden",
                f"{writer} may not write {op.key!r}: the {ns}: namespace belongs to {owner or '?'}",
            )
        return
    if ns == "pub":
        if op.kind not in ("hset", "hdel"):
            raise CStoreError("forbidden", "pub: keys are hashes: use hset/hdel")
        if (op.field or "").lower() != w:
            raise CStoreError("forbidden", f"in pub: hashes {writer} may only write its own field")
        return
    if ns == "net":
        if w not in oracles:
            raise CStoreError("forbidden", f"{writer} is not an oracle and may not write net: keys")
        return
    raise CStoreError(
        "forbidden",
        f"key {op.key!r} is in no namespace",
        hint="use node:<your address>:..., app:<your address>:..., pub:... (hash fields) "
        "or net:... (oracles)",
    )


def _check_names(what: str, names: list[Any], limit: int) -> None:
    """Every name a non-empty string of at most `limit` UTF-8 bytes, without control characters."""
    short = limit // 4  # this many characters fit the limit whatever they are: no encoding needed
    # The usual case in C-level passes; anything unusual is looked at name by name.
    if not (set(map(type, names)) == {str} and 0 < min(map(len, names)) and max(map(len, names)) <= short):
        for name in names:
            if type(name) is not str or not name:
                raise CStoreError("malformed", f"{what} must be a non-empty string")
            if len(name) > short and len(name.encode()) > limit:
                raise CStoreError("too_large", f"{what} is longer than {limit} bytes")
    # One scan over all names (joining cannot create a control character that was not there), on
    # their UTF-8 bytes, where characters below 0x20 are exactly the bytes below 0x20.
    joined = "".join(names).encode("utf-8", "surrogatepass")
    if len(joined.translate(None, _CONTROL_BYTES)) != len(joined):
        raise CStoreError("malformed", f"{what} contains control characters")


_new_op = tuple.__new__
_KIND, _KEY, _FIELD, _EXPIRES = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(4)


def _decode_ops_fast(items: list[Any]) -> tuple[list[Op], list[Any], list[Any]] | None:
    """Ops, keys and hash fields of the common batch (only sets, or only hsets, without expiry) in
    C-level passes; None when the batch is anything else, and `_decode_ops` looks at every op."""
    n = len(items)
    if set(map(type, items)) != {list} or set(map(len, items)) != {5}:
        return None
    try:
        kinds = set(map(_KIND, items))
    except TypeError:  # an unhashable kind
        return None
    if list(map(_EXPIRES, items)).count(None) != n:
        return None
    fields = list(map(_FIELD, items))
    if kinds == {"set"}:
        if fields.count(None) != n:
            return None
        fields = []
    elif kinds != {"hset"}:
        return None
    return [_new_op(Op, item) for item in items], list(map(_KEY, items)), fields


def _decode_ops(items: list[Any], max_expires: int) -> tuple[list[Op], list[Any], list[Any]]:
    """Ops, keys and hash fields of a batch, every op checked for its shape; `expires_ms` at most
    `max_expires`."""
    ops: list[Op] = []
    keys: list[Any] = []
    fields: list[Any] = []
    for item in items:
        if type(item) is not list or len(item) != 5:
            raise CStoreError("malformed", "an op is not [kind, key, field, value, expires_ms]")
        kind, key, field, value, expires = item
        keys.append(key)
        if kind == "set" or kind == "del":
            if field is not None:
                raise CStoreError("malformed", f"{kind} takes no field")
        elif kind == "hset" or kind == "hdel":
            fields.append(field)
        else:
            raise CStoreError("malformed", "an op is not [kind, key, field, value, expires_ms]")
        if expires is not None:
            if type(expires) is not int or expires < 0:
                raise CStoreError("malformed", "expires_ms must be a non-negative integer")
            if expires > max_expires:
                raise CStoreError("too_large", "expires_ms is further ahead than the longest TTL allows")
        if (kind == "del" or kind == "hdel") and (value is not None or expires is not None):
            raise CStoreError("malformed", f"{kind} carries no value")
        ops.append(_new_op(Op, item))
    return ops, keys, fields


def decode_batch(
    raw: bytes,
    *,
    limits: Limits = Limits(),
    now_ms: int,
    oracles: frozenset[str] = frozenset(),
) -> Batch:
    """Parse and fully check a signed batch; raise `CStoreError` with a cause otherwise.

    Every replica runs this on every batch, so the per-op work is kept to what the rules need:
    names are checked in one pass, and the namespace rule is evaluated in full only for keys
    outside the writer's own `node:`/`app:` namespaces."""
    if len(raw) > limits.max_batch_bytes:
        raise CStoreError("too_large", f"batch of {len(raw)} bytes is too large")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CStoreError("malformed", f"batch is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"v", "writer", "hlc", "ops", "sig"} or obj["v"] != 1:
        raise CStoreError("malformed", "not a version-1 batch object")
    writer, hlc, ops_raw, sig_hex = obj["writer"], obj["hlc"], obj["ops"], obj["sig"]
    if not (
        isinstance(writer, str)
        and isinstance(sig_hex, str)
        and isinstance(hlc, list)
        and len(hlc) == 2
        and all(type(x) is int and x >= 0 for x in hlc)
        and isinstance(ops_raw, list)
    ):
        raise CStoreError("malformed", "batch fields have the wrong types")
    if not 1 <= len(ops_raw) <= limits.max_ops_per_batch:
        raise CStoreError("too_large", f"a batch holds 1 to {limits.max_ops_per_batch} ops")
    wall_ms, counter = hlc
    if wall_ms > now_ms + limits.max_future_ms:
        raise CStoreError(
            "clock_skew",
            f"batch is stamped {(wall_ms - now_ms) / 1000:.1f} s in the future "
            f"(at most {limits.max_future_ms / 1000:g} s)",
            hint="check the writer's clock (NTP)",
        )
    if counter + len(ops_raw) - 1 > MAX_COUNTER:
        raise CStoreError("clock_skew", f"batch counters run past the clock's maximum ({MAX_COUNTER})")
    ops, keys, fields = _decode_ops_fast(ops_raw) or _decode_ops(ops_raw, wall_ms + limits.max_ttl_ms)
    _check_names("key", keys, limits.max_key_bytes)
    if fields:
        _check_names("field", fields, limits.max_key_bytes)
    del obj["sig"]
    canonical = canonical_bytes(obj)
    if raw != canonical[:-1] + b',"sig":"' + sig_hex.encode() + b'"}':
        raise CStoreError("malformed", "batch is not in canonical encoding")
    try:
        signer = recover_address(envelope_digest(canonical), bytes.fromhex(sig_hex.removeprefix("0x")))
    except (ValueError, R1osError):
        raise CStoreError("bad_signature", "batch signature is invalid") from None
    if signer != writer:
        raise CStoreError("bad_signature", "batch is not signed by its writer")
    # Value size is checked on the encoded value (what replicas store and ship); a batch smaller
    # than the limit cannot hold a value over it.
    if len(raw) > limits.max_value_bytes:
        for op in ops:
            if op.value is not None and len(orjson.dumps(op.value)) > limits.max_value_bytes:
                raise CStoreError("too_large", f"value of {op.key!r} exceeds {limits.max_value_bytes} bytes")
    # Keys in the writer's own namespaces pass without the full rule (the common case); for the
    # others `check_namespace` decides. The owner part compares lower-case, as in the full rule.
    w = writer.lower()
    own = (f"node:{w}:", f"app:{w}:")
    if not all(map(str.startswith, keys, repeat(own))):
        for op in ops:
            if not op.key.startswith(own):
                check_namespace(writer, op, oracles)
    return Batch(writer, wall_ms, counter, tuple(ops), raw, hashlib.sha256(raw).hexdigest())
