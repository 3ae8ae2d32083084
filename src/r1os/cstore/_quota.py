"""How many entries each writer's namespace holds, and the cap on them.

An entry is a plain key or a hash field, live or tombstoned (a delete of something never written still
leaves a tombstone), until garbage collection forgets it. Entries count against:

- `node:<address>` / `app:<address>`: every entry under that prefix;
- `pub:<address>`: the `pub:` hash fields that address owns (in `pub:` a field is its writer's address);
- `net:` keys are the oracles' and count nowhere.

Every path that applies a batch checks it (`NamespaceQuota.check`): the node a client posts to, the node
writing for itself, and replicas taking batches from broadcasts, pushes and anti-entropy, so no route
skips the cap. Counts depend on what a replica has seen, so two entry nodes may each accept a batch that
together pass the cap; replicas take up to `REPLICA_SLACK` over it, so such a race still converges, and
nothing further.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any

from r1os.cstore._ops import Batch, CStoreError

#: Fraction of the cap a replica accepts beyond it (writes of one writer that raced through two entry
#: nodes); entry nodes hold the cap exactly.
REPLICA_SLACK = 0.01

Strings = Mapping[str, Any]
Hashes = Mapping[str, Mapping[str, Any]]


def namespace(key: str, field: str | None = None) -> str | None:
    """The namespace an entry counts against, if any."""
    ns, _, rest = key.partition(":")
    if ns in ("node", "app"):
        return f"{ns}:{rest.partition(':')[0].lower()}"
    if ns == "pub" and field is not None:
        return f"pub:{field.lower()}"
    return None


def count_namespaces(keys: Iterable[str], writer: str | None = None) -> Counter[str]:
    """How many of the plain `keys` (or hash keys, one entry each) fall in each `node:`/`app:`
    namespace.

    Keys of one writer are nearly always in its own `app:`/`node:` namespace: those are counted with
    one C-level pass per prefix. The rest are tallied per `ns:owner` prefix, whose namespace is then
    worked out once."""
    keys = keys if isinstance(keys, (list, set, tuple)) else list(keys)
    counts: Counter[str] = Counter()
    rest: Iterable[str] = keys
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


def new_entries(batch: Batch, strings: Strings, hashes: Hashes) -> Counter[str]:
    """Entries `batch` would create, per namespace, given the entries a replica holds."""
    plain: set[str] = set()
    fields: set[tuple[str, str]] = set()
    for op in batch.ops:
        key, field = op[1], op[2]
        if field is None:
            if key not in strings:
                plain.add(key)
        else:
            table = hashes.get(key)
            if table is None or field not in table:
                fields.add((key, field))
    counts = count_namespaces(plain, batch.writer) if plain else Counter()
    for key, field in fields:
        ns = namespace(key, field)
        if ns is not None:
            counts[ns] += 1
    return counts


class NamespaceQuota:
    """Entries per namespace, kept up to date as batches are applied, and the cap on them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    @property
    def replica_limit(self) -> int:
        return self.limit + int(self.limit * REPLICA_SLACK)

    def check(self, batch: Batch, strings: Strings, hashes: Hashes, *, replica: bool = False) -> Counter[str]:
        """The entries `batch` creates per namespace, or `CStoreError("quota")` if they would push a
        namespace past the cap (`replica`: past the cap and its slack). Count them with `add` once the
        batch is applied."""
        fresh = new_entries(batch, strings, hashes)
        limit = self.replica_limit if replica else self.limit
        for ns, n in fresh.items():
            if self.counts[ns] + n > limit:
                raise CStoreError(
                    "quota",
                    f"namespace {ns} would exceed {self.limit} entries",
                    hint="delete keys you no longer need (tombstones count until they are forgotten, 24 h)",
                )
        return fresh

    def add(self, fresh: Counter[str]) -> None:
        """Count entries a batch just created (as `check` or `new_entries` found them)."""
        self.counts.update(fresh)

    def recount(self, strings: Strings, hashes: Hashes) -> None:
        """Count again from scratch (after garbage collection forgot entries)."""
        counts = count_namespaces(list(strings))
        for key, table in hashes.items():
            ns = namespace(key)
            if ns is not None:
                counts[ns] += len(table)
            elif key.startswith("pub:"):
                counts.update(f"pub:{field.lower()}" for field in table)
        self.counts = counts
