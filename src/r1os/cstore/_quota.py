"""How many keys each owned namespace (`node:<address>`, `app:<address>`) holds, and its cap.

The cap is checked where a write enters the network (the node a client posts to, or the node writing
for itself), never on replicas: they must take whatever the network agreed on, or they would diverge.
Keys count whether live or tombstoned, until garbage collection forgets them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Container
from itertools import repeat

from r1os.cstore._ops import Batch, CStoreError


def namespace(key: str) -> str | None:
    """The owned namespace a key counts against (`node:<addr>` / `app:<addr>`), if any."""
    ns, _, rest = key.partition(":")
    if ns in ("node", "app"):
        return f"{ns}:{rest.partition(':')[0].lower()}"
    return None


def count_namespaces(keys: Collection[str], writer: str | None = None) -> Counter[str]:
    """How many of `keys` fall in each owned namespace.

    Keys of one writer are nearly always in its own `app:`/`node:` namespace: those are counted with
    one C-level pass per prefix. The rest are tallied per `ns:owner` prefix, whose namespace is then
    worked out once."""
    counts: Counter[str] = Counter()
    rest: Collection[str] = keys
    if writer is not None:
        w = writer.lower()
        own = (f"app:{w}:", f"node:{w}:")
        for prefix in own:
            n = sum(map(str.startswith, keys, repeat(prefix)))
            if n:
                counts[prefix[:-1]] += n
        if sum(counts.values()) == len(keys):
            return counts
        rest = [k for k in keys if not k.startswith(own)]
    by_prefix: dict[str, int] = {}
    get = by_prefix.get
    for key in rest:
        cut = key.find(":", key.find(":") + 1)
        prefix = key if cut < 0 else key[:cut]
        by_prefix[prefix] = get(prefix, 0) + 1
    for prefix, n in by_prefix.items():
        ns = namespace(prefix)  # only the first two parts of a key matter
        if ns is not None:
            counts[ns] += n
    return counts


class NamespaceQuota:
    """Keys per owned namespace, kept up to date as batches are applied, and the cap on them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    def check(self, batch: Batch, strings: Container[str], hashes: Container[str]) -> None:
        """Refuse `batch` (`quota`) if the keys it would create push a namespace past the cap;
        `strings` and `hashes` are the keys the store already holds."""
        new_keys = {
            op[1]
            for op in batch.ops
            if (op[0] == "set" or op[0] == "hset") and op[1] not in strings and op[1] not in hashes
        }
        for ns, n in count_namespaces(new_keys, batch.writer).items():
            if self.counts[ns] + n > self.limit:
                raise CStoreError(
                    "quota",
                    f"namespace {ns} would exceed {self.limit} keys",
                    hint="delete keys you no longer need",
                )

    def add(self, new_keys: Collection[str], writer: str) -> None:
        """Count keys a batch of `writer` just created."""
        self.counts.update(count_namespaces(new_keys, writer))

    def recount(self, keys: Collection[str]) -> None:
        """Count again from scratch (after garbage collection forgot keys)."""
        self.counts = count_namespaces(keys)
