"""Verification of incoming envelopes: every rejection is counted by cause and never crashes.

Checks run cheapest first (size, parse, network, type, clock, ttl), then the signature, and only
then the replay window, so forged traffic cannot poison a sender's replay state.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from r1os.errors import SignatureError, WireError
from r1os.identity import recover_address
from r1os.wire._envelope import MAX_TTL_S, Envelope, canonical_bytes, envelope_digest

log = logging.getLogger("r1os.wire")

DEFAULT_MAX_SIZE = 1024 * 1024
DEFAULT_MAX_SKEW_S = 30.0

#: Every reason a message can be refused; metrics export one counter per cause.
REJECTION_CAUSES = (
    "oversize",
    "malformed",
    "wrong_network",
    "unknown_type",
    "clock_skew",
    "expired",
    "bad_signature",
    "replayed",
    "not_admitted",
)

_SIG_RE = re.compile(r"0x[0-9a-f]{130}")
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "network": str,
    "type": str,
    "sender": str,
    "seq": int,
    "ts": int,
    "ttl": int,
    "payload": dict,
    "sig": str,
}


class ReplayGuard:
    """Remembers which `(sender, seq)` pairs were seen, in a sliding window per sender.

    A sender's seqs above its highest seen are new; those within `window` below it are checked
    against a bitmap; older ones are refused. Senders are kept in LRU order up to `max_senders`.
    """

    def __init__(self, window: int = 4096, max_senders: int = 100_000) -> None:
        self.window = window
        self.max_senders = max_senders
        self._state: OrderedDict[str, tuple[int, int]] = OrderedDict()  # sender -> (highest, bitmap)

    def check_and_mark(self, sender: str, seq: int) -> bool:
        """True if `(sender, seq)` is fresh (and mark it seen); False if it is a replay."""
        state = self._state.get(sender)
        if state is None:
            self._state[sender] = (seq, 1)
            if len(self._state) > self.max_senders:
                self._state.popitem(last=False)
            return True
        highest, bitmap = state
        if seq > highest:
            shift = seq - highest
            bitmap = ((bitmap << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            self._state[sender] = (seq, bitmap)
        else:
            offset = highest - seq
            if offset >= self.window or bitmap >> offset & 1:
                return False
            self._state[sender] = (highest, bitmap | (1 << offset))
        self._state.move_to_end(sender)
        return True

    def __len__(self) -> int:
        return len(self._state)


class _OwnMessage(Exception):
    """The receiver's own message came back (not an error: `accept` drops it quietly)."""


class EnvelopeVerifier:
    """Turns raw bytes into a trusted `Envelope`, or refuses them with a counted cause."""

    def __init__(
        self,
        network: str,
        *,
        known_types: Iterable[str] | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        replay_window: int = 4096,
        admitted: Callable[[str, str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        log_interval_s: float = 60.0,
        own_address: str | None = None,
    ) -> None:
        self.network = network
        #: Messages from this sender (the receiver's own, echoed back by the broker) are dropped
        #: before the signature is checked: recovering a key is most of the cost of a message, and
        #: the receiver would drop its own messages anyway. Neither accepted nor counted refused.
        self.own_address = own_address
        self.own_dropped = 0
        self.known_types: set[str] | None = set(known_types) if known_types is not None else None
        self.max_size = max_size
        self.max_skew_s = max_skew_s
        self.admitted = admitted
        self.clock = clock
        self.replay = ReplayGuard(replay_window)
        self.rejections: Counter[str] = Counter({cause: 0 for cause in REJECTION_CAUSES})
        self.accepted = 0
        self._log_interval = log_interval_s
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def register_type(self, *types: str) -> None:
        if self.known_types is None:
            self.known_types = set()
        self.known_types.update(types)

    def verify(self, raw: bytes) -> Envelope:
        """Check everything; raise `WireError` (with `.cause`) on the first failure."""
        if len(raw) > self.max_size:
            raise WireError("oversize", f"message of {len(raw)} bytes exceeds {self.max_size}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WireError("malformed", f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.keys() != _FIELDS.keys():
            raise WireError("malformed", "not an envelope object with exactly the envelope fields")
        for name, kind in _FIELDS.items():
            value = obj[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise WireError("malformed", f"field {name!r} has the wrong type")
        if obj["network"] != self.network:
            raise WireError("wrong_network", f"message for network {obj['network']!r}")
        if self.known_types is not None and obj["type"] not in self.known_types:
            raise WireError("unknown_type", f"unknown message type {obj['type'][:64]!r}")
        ttl = obj["ttl"]
        if not 1 <= ttl <= MAX_TTL_S or obj["seq"] < 0:
            raise WireError("malformed", "ttl or seq out of range")
        now = self.clock()
        ts_s = obj["ts"] / 1000
        if ts_s - now > self.max_skew_s:
            raise WireError("clock_skew", f"timestamp {ts_s - now:.1f}s in the future")
        if now > ts_s + ttl:
            raise WireError("expired", f"expired {now - ts_s - ttl:.1f}s ago")
        # Past skew bounds how long a message can be replayed to a receiver that lost its replay state.
        if now - ts_s > self.max_skew_s:
            raise WireError("clock_skew", f"timestamp {now - ts_s:.1f}s in the past")
        if obj["sender"] == self.own_address:
            raise _OwnMessage
        sig_hex: str = obj.pop("sig")
        if not _SIG_RE.fullmatch(sig_hex):
            raise WireError("bad_signature", "signature is not 0x + 130 lowercase hex digits")
        sig = bytes.fromhex(sig_hex[2:])
        if int.from_bytes(sig[32:64], "big") > _HALF_N:
            raise WireError("bad_signature", "signature is malleable (high s)")
        canonical = canonical_bytes(obj)
        # Only the canonical encoding is valid: one message has exactly one byte string.
        if raw != canonical[:-1] + b',"sig":"' + sig_hex.encode() + b'"}':
            raise WireError("malformed", "message is not in canonical encoding")
        try:
            signer = recover_address(envelope_digest(canonical), sig)
        except SignatureError as exc:
            raise WireError("bad_signature", f"signature invalid: {exc}") from None
        if signer != obj["sender"]:
            raise WireError("bad_signature", "signature is not the sender's")
        if self.admitted is not None and not self.admitted(signer, obj["type"]):
            raise WireError("not_admitted", f"sender {signer} is not admitted")
        if not self.replay.check_and_mark(signer, obj["seq"]):
            raise WireError("replayed", f"replayed seq {obj['seq']} from {signer}")
        obj["sig"] = sig_hex
        self.accepted += 1
        return Envelope.model_construct(**obj)

    def accept(self, raw: bytes) -> Envelope | None:
        """Like `verify`, but count and log a refusal (once per cause per interval) and return None."""
        try:
            return self.verify(raw)
        except _OwnMessage:
            self.own_dropped += 1
            return None
        except WireError as exc:
            self._reject(exc)
            return None
        except Exception as exc:  # noqa: BLE001 - hostile input must never take the node down
            self._reject(WireError("malformed", f"unexpected {type(exc).__name__}: {exc}"))
            return None

    def _reject(self, exc: WireError) -> None:
        cause = exc.cause
        self.rejections[cause] += 1
        self._unlogged[cause] += 1
        now = time.monotonic()
        last = self._last_log.get(cause)
        if last is None or now - last >= self._log_interval:
            n = self._unlogged.pop(cause)
            self._last_log[cause] = now
            log.warning("dropped %d message(s): %s (%s)", n, cause, exc)

    def stats(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": dict(self.rejections)}
