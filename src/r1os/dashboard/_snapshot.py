"""What the event stream sends: one JSON snapshot of this node and the network it sees.

Built from the service's context alone (the node's identity and configuration, its network map, its
transport, the node's own Prometheus collector), so the dashboard needs nothing of the node but what
every service gets. Bounded: at most `MAX_PEERS` peers (online ones first), each with the fields the
page shows; heartbeat extras (`services_info`) stay out until a panel needs them.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry

from r1os import __version__
from r1os.node import Peer, ServiceContext, collect_resources

SNAPSHOT_VERSION = 1
MAX_PEERS = 500

#: The node's metric families the page shows as highlights (counters and gauges of `NodeCollector`).
HIGHLIGHTS = (
    "r1os_uptime_seconds",
    "r1os_wire_accepted",
    "r1os_wire_rejected",
    "r1os_wire_own_dropped",
    "r1os_transport_published",
    "r1os_transport_received",
    "r1os_transport_reconnects",
    "r1os_transport_dropped_offline",
    "r1os_transport_queued",
    "r1os_heartbeats_sent",
    "r1os_handler_errors",
    "r1os_http_refused",
)


def metric_highlights(registry: CollectorRegistry) -> dict[str, Any]:
    """The families above by name: a number, or {label value: number} for a family with a label.
    Only the collectors that export them are asked (not every service's)."""
    names = [n for name in HIGHLIGHTS for n in (name, f"{name}_total")]
    out: dict[str, Any] = {}
    for family in registry.restricted_registry(names).collect():
        for sample in family.samples:
            if sample.labels:
                table = out.setdefault(family.name, {})
                label = next(iter(sample.labels.values()))
                table[label] = table.get(label, 0) + sample.value
            else:
                out[family.name] = sample.value
    return out


def peer_fingerprint(peer: Peer) -> tuple[Any, ...]:
    """What makes a peer's row change in a way worth pushing at once (not its uptime or last seen)."""
    hb = peer.heartbeat
    return (peer.status, hb.oracle, hb.version, hb.url, tuple(hb.services), len(hb.resources.get("gpus", ())))


def _peer(peer: Peer) -> dict[str, Any]:
    hb = peer.heartbeat
    return {
        "address": peer.address,
        "self": False,
        "status": peer.status,
        "oracle": hb.oracle,
        "version": hb.version,
        "url": hb.url,
        "uptime": peer.uptime,
        "interval": hb.interval,
        "last_seen": peer.last_seen,
        "first_seen": peer.first_seen,
        "heartbeats": peer.heartbeats,
        "services": hb.services,
        "resources": hb.resources,
    }


def build_snapshot(ctx: ServiceContext, seq: int, clients: int, max_clients: int) -> dict[str, Any]:
    """The snapshot as a dict (see docs/dashboard.md for its fields)."""
    now = time.time()
    metrics = metric_highlights(ctx.metrics)
    peers = ctx.netmap.peers()
    online = sum(1 for p in peers if p.status == "online")
    shown = sorted(peers, key=lambda p: (p.status != "online", p.address))[:MAX_PEERS]
    uptime = float(metrics.get("r1os_uptime_seconds", 0.0))
    resources = collect_resources(ctx.config.home_dir).model_dump()
    me = {
        "address": ctx.address,
        "self": True,
        "status": "online",
        "oracle": ctx.config.oracle,
        "version": __version__,
        "url": ctx.url,
        "uptime": uptime,
        "interval": ctx.config.heartbeat_interval,
        "last_seen": now,
        "first_seen": now - uptime,
        "heartbeats": int(metrics.get("r1os_heartbeats_sent", 0)),
        "services": None,  # the page reads them from /v1/node: the node does not hand them to services
        "resources": resources,
    }
    return {
        "v": SNAPSHOT_VERSION,
        "seq": seq,
        "at": now,
        "node": {
            "address": ctx.address,
            "ai_address": ctx.key.ai_address,
            "network": ctx.network,
            "version": __version__,
            "url": ctx.url,
            "oracle": ctx.config.oracle,
            "uptime": uptime,
            "heartbeat_interval": ctx.config.heartbeat_interval,
            "heartbeat_mode": ctx.config.effective_heartbeat_mode,
            "broker_connected": ctx.transport.connected,
            "resources": resources,
        },
        "metrics": metrics,
        "peers": [me, *(_peer(p) for p in shown)],
        "counts": {"online": online, "total": len(peers), "shown": len(shown)},
        "dashboard": {"clients": clients, "max_clients": max_clients},
    }
