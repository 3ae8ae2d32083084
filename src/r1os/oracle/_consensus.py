"""Oracle consensus on an epoch's availability table: pure functions over signed tables.

The steps (after Ratio1's): every oracle signs and broadcasts its local table -> only oracles that were
themselves available vote -> per-node median over the voters' tables, if at least 2/3 of the oracle
set voted -> oracles exchange their medians and keep the most frequent one (so an oracle that missed
a table cannot split the result) -> each oracle signs the agreed table, per node, with the digest the
reward contracts verify.

A lying oracle is one value among at least three, so the median ignores it; a silent oracle is missing
and 2 of 3 are still a quorum. Everything here is deterministic so that oracles holding the same
messages reach the same table; it is tested with synthetic inputs and timed in `bench/oracle.py`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from statistics import median_low

from pydantic import BaseModel, Field

from r1os.identity import NodeKey, eip191_digest, keccak256, recover_address
from r1os.wire import canonical_bytes

Table = dict[str, int]

ELIGIBLE_FRACTION = 0.9
"""An oracle votes if its availability is at least this fraction of the best oracle's (Ratio1: 90%)."""
DISAGREE_BY = 64
"""A voter whose value for some node is further than this from the agreed one is recorded (25%)."""


def quorum(n_oracles: int) -> int:
    """At least 2/3 of the oracle set (2 of 3, 3 of 4, 5 of 7), never less than 1."""
    return max(1, math.ceil(2 * n_oracles / 3))


def table_hash(
    kind: str,
    network: str,
    epoch: int,
    values: Mapping[str, int],
    served: Mapping[str, Sequence[str]] | None = None,
) -> bytes:
    """keccak over the canonical JSON of a table; `kind` (table, median, agreed) keeps phases apart.

    A local table may carry the oracle's PoAI report (`served`: job id -> nodes it saw serving the
    job); it is covered only when non-empty, so a table without one hashes as it always did."""
    body: dict[str, object] = {
        "kind": f"r1os.oracle.{kind}",
        "network": network,
        "epoch": epoch,
        "values": {k: int(v) for k, v in sorted(values.items())},
    }
    if served:
        body["served"] = {j: list(n) for j, n in sorted(served.items())}
    return keccak256(canonical_bytes(body))


def sign_table(
    key: NodeKey,
    kind: str,
    network: str,
    epoch: int,
    values: Mapping[str, int],
    served: Mapping[str, Sequence[str]] | None = None,
) -> str:
    return "0x" + key.sign_digest(eip191_digest(table_hash(kind, network, epoch, values, served))).hex()


def table_signer(
    sig: str,
    kind: str,
    network: str,
    epoch: int,
    values: Mapping[str, int],
    served: Mapping[str, Sequence[str]] | None = None,
) -> str | None:
    """The address that signed a table, or None if the signature is malformed."""
    try:
        raw = bytes.fromhex(sig.removeprefix("0x"))
        return recover_address(eip191_digest(table_hash(kind, network, epoch, values, served)), raw)
    except Exception:
        return None


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def check_table(values: object) -> Table:
    """A table as sent on the wire: node address -> 0..255; raises ValueError otherwise."""
    if not isinstance(values, dict):
        raise ValueError("a table is an object of node -> 0..255")
    out: Table = {}
    for node, v in values.items():
        # hex checked here: a node key that is no address would make every oracle's signing fail
        if not isinstance(node, str) or _ADDRESS.fullmatch(node) is None:
            raise ValueError(f"bad node address {str(node)[:50]!r}")
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
            raise ValueError(f"availability of {node} must be 0..255, got {v!r}")
        out[node] = v
    return out


_EIP191_32 = b"\x19Ethereum Signed Message:\n32"


def claim_digests(epoch: int, values: Mapping[str, int]) -> dict[str, bytes]:
    """Per node, the digest of its one-epoch claim: byte for byte
    `r1os.chain.digests.availability_digest(node, epoch, [value])`, which the licence contracts
    check, without checksumming each address again (the table's addresses are checked on arrival).
    Computed once per agreed table, shared by signing it and by checking every other oracle's
    signatures over it. Raises ValueError for a node that is not an address or a value not 0..255."""
    epochs = epoch.to_bytes(32, "big") * 2
    out: dict[str, bytes] = {}
    for node, v in values.items():
        if len(node) != 42:
            raise ValueError(f"bad node address {node[:50]!r}")
        inner = keccak256(bytes.fromhex(node[2:]) + epochs + bytes((v,)))
        out[node] = keccak256(_EIP191_32 + inner)
    return out


def sign_claims(key: NodeKey, digests: Mapping[str, bytes]) -> dict[str, str]:
    """One oracle's per-node claim signatures over `claim_digests`."""
    return {n: "0x" + key.sign_digest(d).hex() for n, d in digests.items()}


def claims_signed_by(oracle: str, digests: Mapping[str, bytes], sigs: Mapping[str, str]) -> bool:
    """Whether `sigs` covers exactly the nodes of `digests`, each signature `oracle`'s over its digest."""
    if len(sigs) != len(digests) or sigs.keys() != digests.keys():
        return False
    want = oracle.lower()
    for node, sig in sigs.items():
        try:
            if recover_address(digests[node], bytes.fromhex(sig.removeprefix("0x"))).lower() != want:
                return False
        except Exception:  # a malformed signature is a bad one
            return False
    return True


MAX_SERVED_JOBS = 1024
"""Jobs one oracle's PoAI report may name."""
MAX_SERVED_NODES = 256
"""Nodes one oracle's PoAI report may name for one job."""


def check_served(served: object) -> dict[str, list[str]]:
    """A PoAI report as sent on the wire: job id (decimal string) -> sorted distinct node addresses;
    raises ValueError otherwise."""
    if served is None:
        return {}
    if not isinstance(served, dict) or len(served) > MAX_SERVED_JOBS:
        raise ValueError(f"a PoAI report is an object of at most {MAX_SERVED_JOBS} job -> nodes")
    out: dict[str, list[str]] = {}
    for job, nodes in served.items():
        if not isinstance(job, str) or not job.isdigit() or len(job) > 20 or job != str(int(job)):
            raise ValueError(f"bad job id {str(job)[:30]!r} in a PoAI report")
        if not isinstance(nodes, list) or not 0 < len(nodes) <= MAX_SERVED_NODES:
            raise ValueError(f"job {job}: a PoAI report lists 1..{MAX_SERVED_NODES} nodes")
        for n in nodes:
            if not isinstance(n, str) or not n.startswith("0x") or len(n) != 42:
                raise ValueError(f"job {job}: bad node address {str(n)[:50]!r}")
        if nodes != sorted(set(nodes)):
            raise ValueError(f"job {job}: nodes must be sorted and distinct")
        out[job] = nodes
    return out


def majority_served(reports: Sequence[Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """Per job, the nodes that more than half of `reports` name: the lower median of 0/1 votes, the
    same rule the availability table uses per node. An oracle without a report votes "not served"."""
    if not reports:
        return {}
    votes: Counter[tuple[str, str]] = Counter()
    for r in reports:
        for job, nodes in r.items():
            votes.update((job, n) for n in set(nodes))
    out: dict[str, list[str]] = {}
    for (job, node), count in votes.items():
        if 2 * count > len(reports):
            out.setdefault(job, []).append(node)
    return {job: sorted(nodes) for job, nodes in sorted(out.items(), key=lambda kv: int(kv[0]))}


def median_table(tables: Sequence[Mapping[str, int]]) -> Table:
    """Per node, the lower median over `tables`; a node missing from a table counts as 0 there."""
    if not tables:
        return {}
    nodes: set[str] = set()
    for t in tables:
        nodes.update(t)
    return {n: int(median_low([t.get(n, 0) for t in tables])) for n in sorted(nodes)}


def eligible_oracles(
    tables: Mapping[str, Mapping[str, int]],
    oracles: Iterable[str],
    fraction: float = ELIGIBLE_FRACTION,
) -> set[str]:
    """Oracles whose median availability (over every table received) is at least `fraction` of the
    best oracle's. Relative to the best rather than to 255 so the network's first epoch, which every
    oracle joined part-way, can still close; once an oracle ran the whole epoch it is Ratio1's 90%."""
    med = median_table(list(tables.values()))
    avail = {o: med.get(o, 0) for o in oracles}
    best = max(avail.values(), default=0)
    if best == 0:
        return set()
    return {o for o, v in avail.items() if v >= fraction * best}


class Proposal(BaseModel):
    """The outcome of the median step on one oracle."""

    values: Table
    voters: list[str]
    eligible: list[str]


class NoQuorum(Exception):
    """Fewer than the quorum of oracles could take part."""


def propose(
    tables: Mapping[str, Mapping[str, int]],
    oracles: Sequence[str],
    fraction: float = ELIGIBLE_FRACTION,
) -> Proposal:
    """The median over the eligible oracles' tables; raises NoQuorum under 2/3 of the set."""
    eligible = eligible_oracles(tables, oracles, fraction)
    voters = sorted(o for o in eligible if o in tables)
    need = quorum(len(oracles))
    if len(voters) < need:
        raise NoQuorum(
            f"{len(voters)} eligible oracle table(s) of {need} needed"
            f" (received {len(tables)}, eligible {len(eligible)} of {len(oracles)})"
        )
    return Proposal(
        values=median_table([tables[o] for o in voters]), voters=voters, eligible=sorted(eligible)
    )


def agree(medians: Mapping[str, Mapping[str, int]], n_oracles: int) -> tuple[Table, list[str]]:
    """The most frequent median table and the oracles that proposed it; it needs 2/3 of the set.

    Ties (possible only below quorum) break on the table hash, so the result never depends on order."""
    if not medians:
        raise NoQuorum("no median tables")
    keyed = {o: tuple(sorted(v.items())) for o, v in medians.items()}
    counts = Counter(keyed.values())
    best, support = max(counts.items(), key=lambda kv: (kv[1], _tiebreak(kv[0])))
    need = quorum(n_oracles)
    if support < need:
        raise NoQuorum(f"the most frequent median table has {support} supporter(s) of {need} needed")
    return dict(best), sorted(o for o, k in keyed.items() if k == best)


def _tiebreak(items: tuple[tuple[str, int], ...]) -> bytes:
    return bytes(32) if not items else keccak256(repr(items).encode())


def disagreements(
    tables: Mapping[str, Mapping[str, int]], agreed: Mapping[str, int], by: int = DISAGREE_BY
) -> dict[str, dict[str, tuple[int, int]]]:
    """Per oracle, the nodes where its table is further than `by` from the agreed value:
    node -> (reported, agreed)."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    nodes = set(agreed)
    for t in tables.values():
        nodes.update(t)
    for oracle, t in tables.items():
        bad = {
            n: (t.get(n, 0), agreed.get(n, 0))
            for n in sorted(nodes)
            if abs(t.get(n, 0) - agreed.get(n, 0)) > by
        }
        if bad:
            out[oracle] = bad
    return out


class SignedTable(BaseModel):
    """One oracle's signed table of one phase (kept in the audit record); a local table also carries
    the oracle's PoAI report (job id -> nodes it saw serving the job), covered by the signature."""

    oracle: str
    values: Table
    sig: str
    served: dict[str, list[str]] = Field(default_factory=dict)


class OracleSignatures(BaseModel):
    """One oracle's signatures over the agreed table: the whole table, and each node's claim digest."""

    table_sig: str
    nodes: dict[str, str] = Field(default_factory=dict)


class Attestation(BaseModel):
    """A PoAI attestation in an epoch record: the nodes that served a job, the oracles' signatures over
    them, and what submitting it on chain gave (the amount paid, or the error)."""

    nodes: list[str]
    signatures: dict[str, str] = Field(default_factory=dict)
    paid: int | None = None
    error: str | None = None


class EpochRecord(BaseModel):
    """The public audit record of one epoch (CSTORE `net:oracle:epoch:<n>`, and an R1FS document)."""

    network: str
    epoch: int
    start: float
    end: float
    values: Table
    table_hash: str
    oracles: list[str]
    quorum: int
    voters: list[str]
    supporters: list[str]
    tables: dict[str, SignedTable] = Field(default_factory=dict)
    signatures: dict[str, OracleSignatures] = Field(default_factory=dict)
    attestations: dict[str, Attestation] = Field(default_factory=dict)
    cid: str | None = None
    closed_at: float = 0.0

    def value(self, node: str) -> int:
        return self.values.get(node, 0)

    def node_signatures(self, node: str) -> dict[str, str]:
        return {o: s.nodes[node] for o, s in sorted(self.signatures.items()) if node in s.nodes}

    def valid_signers(self) -> list[str]:
        """Oracles of the set whose table signature over these values checks out."""
        out = []
        for o, s in self.signatures.items():
            who = table_signer(s.table_sig, "agreed", self.network, self.epoch, self.values)
            if who is not None and who.lower() == o.lower() and o in self.oracles:
                out.append(o)
        return sorted(out)
