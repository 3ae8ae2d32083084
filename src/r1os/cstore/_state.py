"""The replicated state: a last-writer-wins register per key and per hash field (a CRDT).

Each register remembers the op that won it, ordered by `(wall_ms, counter, writer, batch id)`; the
same set of batches therefore gives the same state whatever order they arrive in. Deletes leave
tombstones (kept until `gc`), so a late, older write cannot bring a deleted key back.

For anti-entropy the registers are spread over `BUCKETS` buckets by key; each bucket keeps the XOR
of its entries' hashes, updated in O(1) per write, so two replicas find what differs by comparing
1024 small digests instead of their whole contents. Only *settled* entries (written before a horizon a
little in the past) count in the digests: writes still in flight on the fast path would otherwise make
every bucket differ under load and anti-entropy would ship the whole store for nothing. An entry's
hash is computed when it is applied; until the horizon passes its time it is XORed into a pending
accumulator for that millisecond instead of the bucket, and settling merges whole accumulators (a few
XORs per batch written, no per-entry work left for the moment a peer asks for digests).
"""

from __future__ import annotations

import hashlib
import heapq
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from r1os.cstore._ops import Batch

BUCKETS = 1024
_DIGEST_BYTES = 16

Order = tuple[int, int, str, str]  # wall_ms, counter, writer (lower), batch id
EntryId = tuple[str, str | None]  # key, field (None for plain keys)


Register = tuple[Order, Any, int | None, bool]
"""The op that won an entry: `(order, value, expires_ms, deleted)`. A plain tuple on purpose: the
garbage collector stops tracking tuples that hold only atomic values, so a large store of strings and
numbers adds nothing to its passes (a tuple subclass stays tracked: 100k registers made full passes
take over 100 ms); and a tuple is built without a constructor call per field."""


def _live(reg: Register, now_ms: int) -> bool:
    return not reg[3] and (reg[2] is None or reg[2] > now_ms)


def bucket_of(key: str) -> int:
    """Hash fields share their key's bucket, so a whole hash travels together (CRC-32: fast, and the
    same on every replica, unlike Python's salted `hash`)."""
    return zlib.crc32(key.encode()) % BUCKETS


def _entry_hash(order: Order) -> int:
    """The hash an entry adds to its bucket's digest. An op is named by its batch (the SHA-256 of the
    signed bytes, fixed length) and its counter, and that op fixes the key, field and value, so those
    two say everything about the entry."""
    text = f"{order[3]}{order[1]}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=_DIGEST_BYTES).digest(), "big")


class CStoreState:
    def __init__(self) -> None:
        self.strings: dict[str, Register] = {}
        self.hashes: dict[str, dict[str, Register]] = {}
        self._batches: dict[str, bytes] = {}
        self._refs: dict[str, int] = {}
        self._bucket_xor = [0] * BUCKETS
        self._bucket_keys: list[set[str]] = [set() for _ in range(BUCKETS)]
        self._horizon_ms = -1
        # Entries not yet settled: wall_ms -> bucket -> XOR of their hashes; a heap of those wall_ms.
        self._pending: dict[int, dict[int, int]] = {}
        self._pending_walls: list[int] = []

    # -- writes ------------------------------------------------------------------------------

    def apply(self, batch: Batch) -> list[EntryId]:
        """Merge a verified batch; returns the entries it changed (empty if it was old news)."""
        changed: list[EntryId] = []
        writer = batch.writer.lower()
        wall, counter, batch_id = batch.wall_ms, batch.counter, batch.id
        horizon = self._horizon_ms
        settled = wall < horizon  # the same for every op of a batch
        strings, hashes = self.strings, self.hashes
        bucket_xor, bucket_keys, pending = self._bucket_xor, self._bucket_keys, self._pending
        acc = bucket_xor if settled else self._accumulator(wall)
        entry_hash, from_bytes = _entry_hash, int.from_bytes
        # `_entry_hash(order)` for this batch's ops: the batch id part hashed once.
        id_hash = hashlib.blake2b(batch_id.encode(), digest_size=_DIGEST_BYTES)
        won = 0
        for i, op in enumerate(batch.ops):
            order: Order = (wall, counter + i, writer, batch_id)
            kind, key, field, value, expires = op
            if field is None:
                table = strings
                name = key
                current = strings.get(key)
            else:
                table = hashes.get(key)  # type: ignore[assignment]
                if table is None:
                    table = hashes[key] = {}
                name = field
                current = table.get(name)
            if current is not None and current[0] >= order:
                continue
            deleted = kind == "del" or kind == "hdel"
            table[name] = (order, None if deleted else value, expires, deleted)
            b = bucket_of(key)
            won += 1
            if current is not None:
                old = current[0]
                # Out of the digest (or of its pending accumulator, which has not been merged yet).
                (bucket_xor if old[0] < horizon else pending[old[0]])[b] ^= entry_hash(old)
                if old[3] == batch_id:
                    won -= 1  # replaced an earlier op of this same batch
                else:
                    self._release(old[3])
            h = id_hash.copy()
            h.update(b"%d" % order[1])
            acc[b] ^= from_bytes(h.digest(), "big")
            bucket_keys[b].add(key)
            changed.append((key, field))
        if won:
            self._refs[batch_id] = self._refs.get(batch_id, 0) + won
            self._batches[batch_id] = batch.raw
        return changed

    def _accumulator(self, wall_ms: int) -> dict[int, int]:
        acc = self._pending.get(wall_ms)
        if acc is None:
            acc = self._pending[wall_ms] = defaultdict(int)
            heapq.heappush(self._pending_walls, wall_ms)
        return acc

    def _release(self, batch_id: str) -> None:
        n = self._refs[batch_id] - 1
        if n:
            self._refs[batch_id] = n
        else:
            del self._refs[batch_id]
            del self._batches[batch_id]

    def gc(self, horizon_ms: int) -> int:
        """Forget tombstones and expired values whose write is older than `horizon_ms`."""
        removed = 0
        for key in list(self.strings):
            reg = self.strings[key]
            if reg[0][0] < horizon_ms and not _live(reg, horizon_ms):
                self._forget((key, None), reg)
                del self.strings[key]
                removed += 1
        for key in list(self.hashes):
            fields = self.hashes[key]
            for f in list(fields):
                reg = fields[f]
                if reg[0][0] < horizon_ms and not _live(reg, horizon_ms):
                    self._forget((key, f), reg)
                    del fields[f]
                    removed += 1
            if not fields:
                del self.hashes[key]
        for b in range(BUCKETS):
            self._bucket_keys[b] = {k for k in self._bucket_keys[b] if k in self.strings or k in self.hashes}
        return removed

    def _forget(self, eid: EntryId, reg: Register) -> None:
        order = reg[0]
        digests = self._bucket_xor if order[0] < self._horizon_ms else self._pending[order[0]]
        digests[bucket_of(eid[0])] ^= _entry_hash(order)
        self._release(order[3])

    def settle(self, horizon_ms: int) -> None:
        """Count every entry written before `horizon_ms` in the bucket digests (the horizon only moves
        on): merge the pending accumulators of the milliseconds before it."""
        self._horizon_ms = horizon = max(self._horizon_ms, horizon_ms)
        walls, pending, bucket_xor = self._pending_walls, self._pending, self._bucket_xor
        while walls and walls[0] < horizon:
            acc = pending.pop(heapq.heappop(walls))
            for b, x in acc.items():
                if x:
                    bucket_xor[b] ^= x

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str, now_ms: int) -> Any | None:
        reg = self.strings.get(key)
        return reg[1] if reg is not None and _live(reg, now_ms) else None

    def exists(self, key: str, now_ms: int) -> bool:
        reg = self.strings.get(key)
        return reg is not None and _live(reg, now_ms)

    def hget(self, key: str, field: str, now_ms: int) -> Any | None:
        reg = self.hashes.get(key, {}).get(field)
        return reg[1] if reg is not None and _live(reg, now_ms) else None

    def hgetall(self, key: str, now_ms: int) -> dict[str, Any]:
        fields = self.hashes.get(key, {})
        return {f: r[1] for f, r in sorted(fields.items()) if _live(r, now_ms)}

    def keys(self, prefix: str, now_ms: int) -> list[str]:
        """Live plain keys and hashes with at least one live field, sorted."""
        out = {k for k, r in self.strings.items() if k.startswith(prefix) and _live(r, now_ms)}
        out.update(
            k for k, fields in self.hashes.items()
            if k.startswith(prefix) and any(_live(r, now_ms) for r in fields.values())
        )  # fmt: skip
        return sorted(out)

    def keys_page(self, prefix: str, after: str, limit: int, now_ms: int) -> tuple[list[str], bool]:
        """The first `limit` live keys under `prefix` sorting after `after`, and whether more follow.
        One pass and a heap of `limit + 1`: O(n log limit), never a sort of the whole key set."""
        live = (k for k, r in self.strings.items() if k > after and k.startswith(prefix) and _live(r, now_ms))
        hashed = (
            k for k, fields in self.hashes.items()
            if k > after and k.startswith(prefix) and any(_live(r, now_ms) for r in fields.values())
        )  # fmt: skip
        first = heapq.nsmallest(limit + 1, set(live) | set(hashed))
        return first[:limit], len(first) > limit

    def __len__(self) -> int:
        return len(self.strings) + sum(len(f) for f in self.hashes.values())

    # -- whole-state views -------------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[EntryId, Register]]:
        for key, reg in self.strings.items():
            yield (key, None), reg
        for key, fields in self.hashes.items():
            for f, reg in fields.items():
                yield (key, f), reg

    def export(self) -> bytes:
        """Canonical bytes of the whole state (tombstones included): equal state, equal bytes."""
        rows = sorted(
            ([eid[0], eid[1], list(reg[0]), reg[1], reg[2], reg[3]] for eid, reg in self._entries()),
            key=lambda r: (r[0], r[1] is not None, r[1] or ""),
        )
        return orjson.dumps(rows, option=orjson.OPT_SORT_KEYS)

    def digest(self) -> str:
        return hashlib.sha256(self.export()).hexdigest()

    def bucket_digests(self, horizon_ms: int) -> bytes:
        """Digests of the entries written before `horizon_ms`, one per bucket."""
        self.settle(horizon_ms)
        return b"".join(x.to_bytes(_DIGEST_BYTES, "big") for x in self._bucket_xor)

    def differing_buckets(self, remote: bytes, horizon_ms: int) -> list[int]:
        if len(remote) != BUCKETS * _DIGEST_BYTES:
            raise ValueError(f"expected {BUCKETS * _DIGEST_BYTES} digest bytes, got {len(remote)}")
        mine = self.bucket_digests(horizon_ms)
        w = _DIGEST_BYTES
        return [b for b in range(BUCKETS) if mine[b * w : (b + 1) * w] != remote[b * w : (b + 1) * w]]

    def batches_in(self, buckets: Iterable[int]) -> list[bytes]:
        """The signed batches that hold the winning ops of every entry in `buckets`."""
        ids: set[str] = set()
        for b in buckets:
            for key in self._bucket_keys[b]:
                reg = self.strings.get(key)
                if reg is not None:
                    ids.add(reg[0][3])
                for r in self.hashes.get(key, {}).values():
                    ids.add(r[0][3])
        return [self._batches[i] for i in sorted(ids)]

    def batches_by_id(self, batch_id: str) -> list[bytes]:
        raw = self._batches.get(batch_id)
        return [] if raw is None else [raw]

    def live_batches(self) -> list[bytes]:
        """Every batch some register still needs: replaying these rebuilds this exact state."""
        return list(self._batches.values())
