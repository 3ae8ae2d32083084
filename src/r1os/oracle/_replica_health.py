"""Replica health for PoAI: which listed nodes an oracle saw serving a paid job for most of an epoch.

A node that runs Deeploy reports every replica it holds in each heartbeat, under
`services_info["deeploy"]["replicas"]`:

    {"<owner>/<name>": {"v": <version>, "ok": <passed its last health check>, "job": <job id or null>}}

The oracle folds these reports, by receive time (the time base of the availability measure), into
per-epoch counts for each (job, node):

- The epoch is cut into heartbeat slots of the network's interval `hb` (slot k = [start + k hb,
  start + (k+1) hb)). A slot counts as *heard* if a heartbeat of the node arrived in it, and as
  *healthy for job J* if one of those heartbeats reported a replica with `"job": J` and `"ok": true`
  (a node holding two replicas of the same job is healthy when either is). Extra heartbeats in one
  slot count once, so sending faster cannot make up for time offline.
- `served(epoch, job, node)` holds when the healthy slots are **more than half of the heartbeats
  expected from the node in the epoch**, `epoch_seconds / hb`: a node online for half the epoch
  with a healthy replica, or online all epoch with the replica healthy a third of the time, does
  not pass.

Reports are untrusted input: a malformed one (wrong types) is ignored with a log line, at most
`MAX_REPLICAS_PER_HEARTBEAT` replicas of one heartbeat and `MAX_JOBS_PER_NODE` distinct jobs per node
and epoch are considered, and only `KEEP_EPOCHS` epochs are kept (the service also forgets an epoch
once it is closed and attested), so memory stays bounded whatever a node sends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice

from r1os.oracle._consensus import MAX_SERVED_JOBS, MAX_SERVED_NODES
from r1os.oracle._epochs import EpochClock

log = logging.getLogger("r1os.oracle")

MAX_REPLICAS_PER_HEARTBEAT = 64
"""Replicas of one heartbeat looked at; the rest of a longer report is ignored (logged)."""
MAX_JOBS_PER_NODE = 64
"""Distinct jobs counted for one node in one epoch; jobs beyond are ignored (logged)."""
KEEP_EPOCHS = 4
"""Epochs of counts kept at most (the newest ones)."""
MAX_JOB_ID = 2**63 - 1
LOG_EVERY_S = 60.0
"""At most one warning of each kind per this many seconds (with how many were left unsaid)."""


class _RateLimitedLog:
    """Warnings of a few fixed kinds, each logged at most once per `every` seconds."""

    def __init__(self, every: float = LOG_EVERY_S) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._muted: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._muted[kind] = self._muted.get(kind, 0) + 1
            return
        muted = self._muted.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({muted} more like it not logged)" if muted else ""
        log.warning(msg + suffix, *args)


class MalformedReport(ValueError):
    """A heartbeat's `services_info.deeploy` is not what a Deeploy node sends."""


def healthy_jobs(services_info: object, limit: int = MAX_REPLICAS_PER_HEARTBEAT) -> tuple[set[int], int]:
    """The jobs with a healthy replica in one heartbeat's `services_info`, and the number of replicas
    the report holds (only the first `limit` are looked at).

    No `deeploy` entry (a node without Deeploy) or no replicas is an empty answer; wrong types raise
    `MalformedReport`. A replica without a job (an unpaid app) counts for nothing."""
    if services_info is None:
        return set(), 0
    if not isinstance(services_info, dict):
        raise MalformedReport("services_info is not an object")
    deeploy = services_info.get("deeploy")
    if deeploy is None:
        return set(), 0
    if not isinstance(deeploy, dict):
        raise MalformedReport("services_info.deeploy is not an object")
    replicas = deeploy.get("replicas")
    if replicas is None:
        return set(), 0
    if not isinstance(replicas, dict):
        raise MalformedReport("services_info.deeploy.replicas is not an object")
    out: set[int] = set()
    for app, rep in islice(replicas.items(), limit):
        if not isinstance(app, str) or not isinstance(rep, dict):
            raise MalformedReport(f"replica {str(app)[:60]!r} is not an object")
        job, ok = rep.get("job"), rep.get("ok")
        if not isinstance(ok, bool):
            raise MalformedReport(f"replica {app[:60]!r}: ok is not a boolean")
        if job is None:
            continue
        if isinstance(job, bool) or not isinstance(job, int) or not 0 < job <= MAX_JOB_ID:
            raise MalformedReport(f"replica {app[:60]!r}: job is not a job id")
        if ok:
            out.add(job)
    return out, len(replicas)


@dataclass
class NodeEpoch:
    """One node's counts in one epoch (slots as defined in the module docstring)."""

    heard: int = 0
    last: int = -1
    healthy: dict[int, int] = field(default_factory=dict)
    last_healthy: dict[int, int] = field(default_factory=dict)


class ReplicaHealth:
    """Per epoch, per node: heartbeat slots heard, and slots with a healthy replica of each job."""

    def __init__(
        self,
        clock: EpochClock,
        heartbeat: float,
        *,
        max_replicas: int = MAX_REPLICAS_PER_HEARTBEAT,
        max_jobs: int = MAX_JOBS_PER_NODE,
        keep_epochs: int = KEEP_EPOCHS,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {heartbeat}")
        self.clock = clock
        self.heartbeat = heartbeat
        self.max_replicas = max_replicas
        self.max_jobs = max_jobs
        self.keep_epochs = keep_epochs
        self.epochs: dict[int, dict[str, NodeEpoch]] = {}
        self._warn = _RateLimitedLog()

    # -- feeding -------------------------------------------------------------------------------

    def record(self, node: str, t: float, services_info: object = None) -> None:
        """Count one heartbeat of `node` received at `t` with its `services_info` (never raises on
        what the node sent: a malformed report is logged and the heartbeat counts as heard only)."""
        try:
            jobs, n = healthy_jobs(services_info, self.max_replicas)
        except MalformedReport as exc:
            self._warn.warning("malformed", "heartbeat of %s: replica report ignored: %s", node, exc)
            jobs, n = set(), 0
        if n > self.max_replicas:
            self._warn.warning(
                "replicas",
                "heartbeat of %s reports %d replicas: only the first %d are considered",
                node, n, self.max_replicas,
            )  # fmt: skip
        epoch = self.clock.epoch_at(t)
        slot = int((t - self.clock.start(epoch)) // self.heartbeat)
        per = self.epochs.get(epoch)
        if per is None:
            per = self.epochs[epoch] = {}
            self._trim()
        ne = per.get(node)
        if ne is None:
            ne = per[node] = NodeEpoch()
        if slot > ne.last:
            ne.heard += 1
            ne.last = slot
        for job in sorted(jobs):
            last = ne.last_healthy.get(job)
            if last is None:
                if len(ne.healthy) >= self.max_jobs:
                    self._warn.warning(
                        "jobs", "node %s reports more than %d paid jobs in epoch %d: job %d ignored",
                        node, self.max_jobs, epoch, job,
                    )  # fmt: skip
                    continue
                ne.healthy[job], ne.last_healthy[job] = 1, slot
            elif slot > last:
                ne.healthy[job] += 1
                ne.last_healthy[job] = slot

    def _trim(self) -> None:
        for e in sorted(self.epochs)[: max(0, len(self.epochs) - self.keep_epochs)]:
            del self.epochs[e]

    def forget(self, before: int) -> None:
        """Drop the counts of every epoch before `before`."""
        for e in [e for e in self.epochs if e < before]:
            del self.epochs[e]

    def forget_epoch(self, epoch: int) -> None:
        self.epochs.pop(epoch, None)

    # -- asking --------------------------------------------------------------------------------

    def expected(self) -> float:
        """Heartbeats expected from a node online for a whole epoch: epoch_seconds / hb."""
        return self.clock.epoch_seconds / self.heartbeat

    def heard(self, epoch: int, node: str) -> int:
        ne = self.epochs.get(epoch, {}).get(node)
        return ne.heard if ne else 0

    def healthy(self, epoch: int, job: int, node: str) -> int:
        ne = self.epochs.get(epoch, {}).get(node)
        return ne.healthy.get(job, 0) if ne else 0

    def served(self, epoch: int, job: int, node: str) -> bool:
        """True if `node` reported a healthy replica of `job` in more than half of the heartbeats
        expected from it in `epoch`."""
        return 2 * self.healthy(epoch, job, node) > self.expected()

    def served_jobs(self, epoch: int, listed: Mapping[int, Iterable[str]]) -> dict[str, list[str]]:
        """For each listed job, the listed nodes that served it in `epoch` (sorted; jobs nobody
        served are left out), keyed by the job id as a string: this oracle's PoAI report, in the
        wire form `check_served` accepts (within its size limits)."""
        out: dict[str, list[str]] = {}
        for job, nodes in sorted(listed.items()):
            served = sorted({n for n in nodes if self.served(epoch, job, n)})
            if served and len(out) < MAX_SERVED_JOBS:
                out[str(job)] = served[:MAX_SERVED_NODES]  # what the other oracles accept
        return out
