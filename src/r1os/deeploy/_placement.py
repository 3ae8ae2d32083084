"""Placement: where an app's replicas go. Pure and deterministic: the same apps, plans and node
advertisements give the same answer on every oracle, whatever order they came in.

Rules, in order:
- a node qualifies if it is online, advertises the app's runtime, carries every tag the app asks for,
  is in `placement.nodes` when that list is given, is not in `placement.exclude`, holds no other replica
  of the app (replicas spread over distinct nodes), and has room: the resources declared by the replicas
  already planned on it plus this one stay within what it advertises (declared, not measured, usage, so
  the answer does not move with load);
- replicas already planned on qualifying nodes stay where they are (no needless moves);
- new replicas go to the best-ranked qualifying nodes: edge nodes before oracles (oracles have their
  own work), then the node left least loaded, then a hash of the app and node (so apps of equal need
  spread over nodes instead of piling on the lowest address).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from r1os.deeploy._models import HostNode, Slot
from r1os.deeploy._spec import AppSpec, Resources


@dataclass
class Usage:
    cpu: float = 0.0
    memory_mb: int = 0
    gpu: int = 0

    def add(self, r: Resources) -> None:
        self.cpu += r.cpu
        self.memory_mb += r.memory_mb
        self.gpu += r.gpu


@dataclass
class PlacementResult:
    slots: list[Slot]
    missing: int = 0
    reasons: dict[str, str] = field(default_factory=dict)
    """node -> why it did not qualify (for the error a user sees when replicas cannot all be placed)."""


def usage_by_node(plans: Iterable[tuple[list[Slot], Resources]]) -> dict[str, Usage]:
    """Resources declared on each node by every planned replica."""
    used: dict[str, Usage] = {}
    for slots, resources in plans:
        for slot in slots:
            used.setdefault(slot.node, Usage()).add(resources)
    return used


def why_not(spec: AppSpec, host: HostNode, used: Usage | None) -> str | None:
    """None if `host` can take one more replica of `spec`, else the reason."""
    node = host.address.lower()
    p = spec.placement
    if p.nodes and node not in p.nodes:
        return "not in placement.nodes"
    if node in p.exclude:
        return "in placement.exclude"
    if spec.runtime not in host.runtimes:
        return f"no {spec.runtime} runtime (has: {', '.join(host.runtimes) or 'none'})"
    missing = [t for t in p.tags if t not in host.tags]
    if missing:
        return f"lacks tags {', '.join(missing)}"
    u = used or Usage()
    r = spec.resources
    if u.cpu + r.cpu > host.cpu + 1e-9:
        return f"cpu: {host.cpu - u.cpu:g} of {host.cpu:g} free, {r.cpu:g} asked"
    if u.memory_mb + r.memory_mb > host.memory_mb:
        return f"memory: {host.memory_mb - u.memory_mb} of {host.memory_mb} MiB free, {r.memory_mb} asked"
    if u.gpu + r.gpu > host.gpu:
        return f"gpu: {host.gpu - u.gpu} of {host.gpu} free, {r.gpu} asked"
    return None


def fits_anywhere(spec: AppSpec, hosts: Iterable[HostNode]) -> str | None:
    """None if at least one node could ever run one replica (on an empty node), else why none can."""
    reasons = {h.address: why_not(spec, h, None) for h in hosts}
    if not reasons:
        return "no node that runs apps is online"
    if any(r is None for r in reasons.values()):
        return None
    return "; ".join(f"{a[:10]}: {r}" for a, r in sorted(reasons.items())[:5])


def _rank(app_id: str, spec: AppSpec, host: HostNode, used: Usage | None) -> tuple[bool, float, str]:
    u = used or Usage()
    load = max(
        (u.cpu + spec.resources.cpu) / host.cpu if host.cpu else 1.0,
        (u.memory_mb + spec.resources.memory_mb) / host.memory_mb if host.memory_mb else 1.0,
    )
    spread = hashlib.sha256(f"{app_id}|{host.address.lower()}".encode()).hexdigest()
    return (host.oracle, round(load, 3), spread)


def place(
    app_id: str,
    spec: AppSpec,
    version: int,
    current: list[Slot],
    hosts: Iterable[HostNode],
    used: Mapping[str, Usage],
    want: int | None = None,
) -> PlacementResult:
    """The app's slots after keeping what still qualifies and filling up to `want` (default: the spec's
    replicas). `used` is the usage of every node by all plans *including* `current`."""
    want = spec.replicas if want is None else want
    by_node = {h.address.lower(): h for h in hosts}
    own = Usage()
    own.add(spec.resources)
    kept: list[Slot] = []
    for slot in sorted(current, key=lambda s: (s.node, s.version)):
        host = by_node.get(slot.node)
        if host is None or any(k.node == slot.node for k in kept):
            continue
        # The node's usage already counts this replica: check it without it.
        u = used.get(slot.node, Usage())
        without = Usage(u.cpu - own.cpu, u.memory_mb - own.memory_mb, u.gpu - own.gpu)
        if why_not(spec, host, without) is None:
            kept.append(slot)
    if len(kept) > want:
        ranked = sorted(kept, key=lambda s: _rank(app_id, spec, by_node[s.node], used.get(s.node)))
        kept = sorted(ranked[:want], key=lambda s: s.node)
    reasons: dict[str, str] = {}
    candidates = []
    taken = {s.node for s in kept}
    for node, host in sorted(by_node.items()):
        if node in taken:
            continue
        reason = why_not(spec, host, used.get(node))
        if reason is None:
            candidates.append(host)
        else:
            reasons[node] = reason
    candidates.sort(key=lambda h: _rank(app_id, spec, h, used.get(h.address.lower())))
    slots = list(kept)
    for host in candidates[: max(0, want - len(kept))]:
        slots.append(Slot(node=host.address.lower(), version=version))
    return PlacementResult(slots=slots, missing=max(0, want - len(slots)), reasons=reasons)
