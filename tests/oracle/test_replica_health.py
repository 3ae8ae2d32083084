"""PoAI replica health: the per-epoch rule on synthetic heartbeats, hostile reports, the oracles'
majority over their reports, the attester signing only served nodes, and a job's standing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from r1os.chain.client import Job
from r1os.chain.digests import attestation_digest
from r1os.errors import ChainError
from r1os.identity import NodeKey, recover_address
from r1os.oracle import (
    EpochClock,
    ReplicaHealth,
    check_served,
    healthy_jobs,
    job_standing,
    majority_served,
    table_hash,
)
from r1os.oracle._poai import PoaiAttester, SignedAttestation
from r1os.oracle._replica_health import MAX_JOBS_PER_NODE, MAX_REPLICAS_PER_HEARTBEAT

EPOCH = 100.0
HB = 1.0
JOB = 7
A, B, C = ("0x" + c * 40 for c in "abc")
ESCROW = "0x" + "5" * 40


def info(*replicas: tuple[str, bool, int | None]) -> dict[str, Any]:
    """A heartbeat's services_info with these (app, ok, job) replicas."""
    return {"deeploy": {"replicas": {app: {"v": 1, "ok": ok, "job": job} for app, ok, job in replicas}}}


def feed(h: ReplicaHealth, node: str, start: float, end: float, report: Any, hb: float = HB) -> None:
    """Heartbeats of `node` every `hb` seconds over [start, end) of epoch 0, each carrying `report`."""
    t = start
    while t < end:
        h.record(node, t + 0.1, report)
        t += hb


def health() -> ReplicaHealth:
    return ReplicaHealth(EpochClock(0.0, EPOCH), HB)


def test_healthy_most_of_the_epoch_is_served() -> None:
    h = health()
    feed(h, A, 0, 70, info(("o/app", True, JOB)))
    feed(h, A, 70, 100, info(("o/app", False, JOB)))
    assert (h.heard(0, A), h.healthy(0, JOB, A)) == (100, 70)
    assert h.expected() == 100
    assert h.served(0, JOB, A)
    assert not h.served(0, JOB + 1, A)  # another job: nothing reported for it


def test_healthy_a_third_of_the_epoch_is_not_served() -> None:
    h = health()
    feed(h, A, 0, 33, info(("o/app", True, JOB)))
    feed(h, A, 33, 100, info(("o/app", False, JOB)))
    assert h.healthy(0, JOB, A) == 33 and not h.served(0, JOB, A)


def test_online_half_the_epoch_with_a_healthy_replica_is_not_served() -> None:
    # every heartbeat the node sent said healthy, but it sent them for half of the epoch only
    h = health()
    feed(h, A, 0, 50, info(("o/app", True, JOB)))
    assert h.heard(0, A) == h.healthy(0, JOB, A) == 50
    assert not h.served(0, JOB, A)
    feed(h, A, 50, 51, info(("o/app", True, JOB)))  # one more heartbeat slot: more than half
    assert h.served(0, JOB, A)


def test_faster_heartbeats_do_not_make_up_for_time_offline() -> None:
    h = health()
    feed(h, A, 0, 40, info(("o/app", True, JOB)), hb=HB / 4)  # 160 heartbeats in 40 slots
    assert h.heard(0, A) == h.healthy(0, JOB, A) == 40
    assert not h.served(0, JOB, A)


def test_two_replicas_of_one_job_are_healthy_if_either_is() -> None:
    h = health()
    feed(h, A, 0, 100, info(("o/one", False, JOB), ("o/two", True, JOB), ("o/free", True, None)))
    assert h.served(0, JOB, A)
    feed(h, B, 0, 100, info(("o/one", False, JOB), ("o/two", False, JOB)))
    assert not h.served(0, JOB, B) and h.heard(0, B) == 100


def test_epochs_are_counted_apart_by_receive_time() -> None:
    h = health()
    feed(h, A, 60, 160, info(("o/app", True, JOB)))  # 40 slots in epoch 0, 60 in epoch 1
    assert (h.healthy(0, JOB, A), h.healthy(1, JOB, A)) == (40, 60)
    assert not h.served(0, JOB, A) and h.served(1, JOB, A)


def test_served_jobs_keeps_listed_nodes_only() -> None:
    h = health()
    for n in (A, B, C):
        feed(h, n, 0, 100, info(("o/app", True, JOB)))
    feed(h, A, 0, 100, info(("o/other", True, 9)))
    # C is not listed for JOB: it is not reported, whatever it says; job 9 is listed for nobody
    assert h.served_jobs(0, {JOB: [B, A], 9: [], 11: [A]}) == {str(JOB): [A, B]}


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        {"deeploy": []},
        {"deeploy": {"replicas": ["o/app"]}},
        {"deeploy": {"replicas": {"o/app": "ok"}}},
        {"deeploy": {"replicas": {"o/app": {"ok": "yes", "job": JOB}}}},
        {"deeploy": {"replicas": {"o/app": {"ok": True, "job": "7"}}}},
        {"deeploy": {"replicas": {"o/app": {"ok": True, "job": True}}}},
        {"deeploy": {"replicas": {"o/app": {"ok": True, "job": -1}}}},
        {"deeploy": {"replicas": {"o/app": {"ok": True, "job": 2**70}}}},
    ],
)
def test_malformed_reports_are_ignored_with_a_log_line(bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="r1os.oracle")
    h = health()
    feed(h, A, 0, 100, bad)
    assert h.heard(0, A) == 100  # the heartbeats count as heard, the report as nothing
    assert h.epochs[0][A].healthy == {}
    assert "replica report ignored" in caplog.text
    assert len(caplog.records) == 1  # rate-limited: one line for 100 heartbeats


def test_no_deeploy_or_no_replicas_is_no_report() -> None:
    for quiet in (None, {}, {"cstore": {}}, {"deeploy": {"runtimes": ["process"]}}):
        assert healthy_jobs(quiet) == (set(), 0)


def test_hostile_heartbeat_with_10000_replicas_is_capped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="r1os.oracle")
    h = health()
    flood = info(*((f"o/app{i}", True, i + 1) for i in range(10_000)))
    feed(h, A, 0, 100, flood)
    assert len(h.epochs[0][A].healthy) == MAX_REPLICAS_PER_HEARTBEAT
    assert "reports 10000 replicas" in caplog.text
    # new fake jobs every heartbeat: at most MAX_JOBS_PER_NODE per node and epoch are tracked
    h2 = health()
    for i in range(100):
        h2.record(A, i + 0.1, info(*((f"o/a{i}-{k}", True, 1 + i * 10 + k) for k in range(10))))
    assert len(h2.epochs[0][A].healthy) == MAX_JOBS_PER_NODE
    assert "paid jobs in epoch 0" in caplog.text


def test_memory_is_bounded_over_epochs_and_forgotten_after_close() -> None:
    h = health()
    for e in range(50):
        h.record(A, e * EPOCH + 1, info(("o/app", True, JOB)))
    assert sorted(h.epochs) == [46, 47, 48, 49]
    h.forget(48)
    assert sorted(h.epochs) == [48, 49]
    h.forget_epoch(49)
    assert sorted(h.epochs) == [48]


# -- the oracles' majority ----------------------------------------------------------------------


def test_majority_of_reports_decides_per_node() -> None:
    j = str(JOB)
    reports = [{j: [A, B]}, {j: [A]}, {j: [A, B, C], "9": [C]}]
    assert majority_served(reports) == {j: [A, B]}
    assert majority_served([{j: [A]}, {}]) == {}  # one of two is not more than half
    assert majority_served([]) == {}


def test_check_served_refuses_what_an_honest_oracle_never_sends() -> None:
    assert check_served({"7": [A, B]}) == {"7": [A, B]}
    assert check_served(None) == {}
    for bad in ([A], {"x": [A]}, {"07": [A]}, {"7": []}, {"7": [B, A]}, {"7": [A, A]}, {"7": ["0x12"]}):
        with pytest.raises(ValueError):
            check_served(bad)


def test_a_table_without_report_hashes_as_before_and_the_report_is_covered() -> None:
    values = {A: 255}
    assert table_hash("table", "n", 1, values) == table_hash("table", "n", 1, values, {})
    assert table_hash("table", "n", 1, values, {"7": [A]}) != table_hash("table", "n", 1, values)


# -- the attester ------------------------------------------------------------------------------


@dataclass
class FakeDeployment:
    def address(self, name: str) -> str:
        assert name == "PoAIEscrow"
        return ESCROW


class FakeChain:
    def __init__(self, jobs: dict[int, Job], epoch: int = 5) -> None:
        self.jobs, self.epoch = jobs, epoch

    async def job(self, job_id: int) -> Job:
        if job_id not in self.jobs:
            raise ChainError(f"no PoAI job {job_id}")
        return self.jobs[job_id]

    async def current_epoch(self) -> int:
        return self.epoch


def job(job_id: int = JOB, **kw: Any) -> Job:
    base: dict[str, Any] = {
        "job_id": job_id, "owner": "0x" + "1" * 40, "nodes": 2, "start_epoch": 3, "end_epoch": 10,
        "price_per_node_epoch": 100, "balance": 1400, "paid": 0, "burned": 0, "closed": False,
    }  # fmt: skip
    return Job(**{**base, **kw})


def attester(chain: FakeChain) -> PoaiAttester:
    att = PoaiAttester(NodeKey.generate(), FakeDeployment(), None, min_availability=128)  # type: ignore[arg-type]
    att._chain = chain  # type: ignore[assignment]
    return att


async def test_attester_signs_only_served_and_available_nodes() -> None:
    chain = FakeChain({JOB: job(), 8: job(8, closed=True), 9: job(9, nodes=1)})
    att = attester(chain)
    agreed = {A: 255, B: 255, C: 20}
    served = {str(JOB): [A, C], "8": [A], "9": [A, B], "404": [A]}
    out = await att.sign(5, agreed, served)
    # JOB: C served but was not available enough; 8 closed; 9 pays one node; 404 unknown
    assert sorted(out) == [str(JOB), "9"]
    assert out[str(JOB)].nodes == [A] and out["9"].nodes == [A]
    digest = attestation_digest(ESCROW, JOB, 5, [A])
    assert recover_address(digest, bytes.fromhex(out[str(JOB)].sig[2:])) == att.key.address
    assert att.signed_by(att.key.address, str(JOB), 5, out[str(JOB)])
    assert not att.signed_by(
        att.key.address, str(JOB), 5, SignedAttestation(nodes=[A, B], sig=out[str(JOB)].sig)
    )
    assert not att.signed_by(att.key.address, str(JOB), 5, SignedAttestation(nodes=[A], sig="0xzz"))
    # a node listed and available but that served nobody is never signed
    assert await att.sign(5, agreed, {}) == {}
    assert await att.sign(11, agreed, served) == {}  # outside the job's epochs


async def test_job_standing_says_why_a_job_cannot_pay() -> None:
    chain = FakeChain({
        JOB: job(), 8: job(8, closed=True), 9: job(9, balance=50), 10: job(10, start_epoch=7),
    })  # fmt: skip
    ok = await job_standing(chain, JOB)  # type: ignore[arg-type]
    assert ok.can_pay and ok.open and ok.funded and ok.exists
    assert (ok.epoch, ok.remaining_epochs, ok.nodes, ok.price_per_node_epoch) == (5, 5, 2, 100)
    reasons = {
        "no PoAI job 404": await job_standing(chain, 404),  # type: ignore[arg-type]
        "is closed": await job_standing(chain, 8),  # type: ignore[arg-type]
        "exhausted": await job_standing(chain, 9),  # type: ignore[arg-type]
        "starts at epoch 7": await job_standing(chain, 10),  # type: ignore[arg-type]
        "ended: its last paid epoch was 9": await job_standing(chain, JOB, 10),  # type: ignore[arg-type]
    }
    for text, st in reasons.items():
        assert not st.can_pay and st.reason is not None and text in st.reason, (text, st)
    assert not reasons["no PoAI job 404"].exists
    assert reasons["ended: its last paid epoch was 9"].remaining_epochs == 0
