"""Placement is pure and deterministic: distinct nodes, within declared capacity, same answer in any order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from r1os.deeploy import parse_spec
from r1os.deeploy._models import HostNode, Slot
from r1os.deeploy._placement import Usage, fits_anywhere, place, usage_by_node


def host(
    i: int, cpu: float = 2, mem: int = 2048, runtimes: tuple[str, ...] = ("process", "plugin"), **kw: object
):
    return HostNode(address=f"0x{i:040x}", cpu=cpu, memory_mb=mem, runtimes=list(runtimes), **kw)  # type: ignore[arg-type]


def test_replicas_go_to_distinct_nodes_and_prefer_edges() -> None:
    s = parse_spec("name: app\ncommand: [x]\nreplicas: 3\n")
    hosts = [host(1, oracle=True), host(2), host(3), host(4)]
    r = place("o/app", s, 1, [], hosts, {})
    assert len({x.node for x in r.slots}) == 3 and r.missing == 0
    assert host(1).address not in {x.node for x in r.slots}  # the oracle is used last


def test_capacity_tags_runtime_and_lists_are_respected() -> None:
    s = parse_spec(
        "name: app\ncommand: [x]\nreplicas: 4\nresources: {cpu: 1.5, memory_mb: 100}\n"
        f"placement: {{tags: [gpu], exclude: ['0x{3:040x}']}}\n"
    )
    hosts = [
        host(1, tags=["gpu"]),
        host(2),
        host(3, tags=["gpu"]),
        host(4, cpu=1, tags=["gpu"]),
        host(5, tags=["gpu"]),
    ]
    r = place("o/app", s, 1, [], hosts, {})
    assert sorted(x.node for x in r.slots) == [host(1).address, host(5).address]
    assert r.missing == 2
    assert "lacks tags" in r.reasons[host(2).address]
    assert "exclude" in r.reasons[host(3).address]
    assert "cpu" in r.reasons[host(4).address]
    # Already-used capacity counts: a node with 1.5 of 2 cpu declared by another app is full for this one.
    r2 = place("o/app", s, 1, [], hosts, {host(1).address: Usage(cpu=1.5)})
    assert host(1).address not in {x.node for x in r2.slots}


def test_runtime_must_be_offered() -> None:
    s = parse_spec("name: app\nruntime: docker\nimage: busybox:local\n")
    assert fits_anywhere(s, [host(1), host(2)]) is not None
    assert fits_anywhere(s, [host(1), host(2, runtimes=("docker",))]) is None
    huge = parse_spec("name: app\ncommand: [x]\nresources: {cpu: 64}\n")
    reason = fits_anywhere(huge, [host(1), host(2)])
    assert reason is not None and "cpu" in reason


def test_kept_replicas_do_not_move_and_offline_ones_are_replaced() -> None:
    s = parse_spec("name: app\ncommand: [x]\nreplicas: 2\n")
    hosts = [host(i) for i in range(1, 6)]
    first = place("o/app", s, 1, [], hosts, {})
    used = usage_by_node([(first.slots, s.resources)])
    again = place("o/app", s, 1, first.slots, hosts, used)
    assert again.slots == first.slots
    gone = first.slots[0].node
    alive = [h for h in hosts if h.address != gone]
    used_alive = usage_by_node([([x for x in first.slots if x.node != gone], s.resources)])
    after = place("o/app", s, 1, [x for x in first.slots if x.node != gone], alive, used_alive)
    assert len(after.slots) == 2 and gone not in {x.node for x in after.slots}
    assert first.slots[1] in after.slots


def test_scale_down_keeps_a_subset() -> None:
    s = parse_spec("name: app\ncommand: [x]\nreplicas: 1\n")
    slots = [Slot(node=host(i).address, version=1) for i in (1, 2, 3)]
    hosts = [host(i) for i in (1, 2, 3)]
    r = place("o/app", s, 1, slots, hosts, usage_by_node([(slots, s.resources)]))
    assert len(r.slots) == 1 and r.slots[0] in slots


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    replicas=st.integers(0, 8),
    cpu=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    seed=st.integers(0, 2**32),
)
def test_same_answer_in_any_order_and_never_over_capacity(
    n: int, replicas: int, cpu: float, seed: int
) -> None:
    s = parse_spec(
        f"name: app\ncommand: [x]\nreplicas: {replicas}\nresources: {{cpu: {cpu}, memory_mb: 64}}\n"
    )
    rng = random.Random(seed)
    hosts = [host(i, cpu=rng.choice([0.5, 1, 2, 4]), oracle=rng.random() < 0.3) for i in range(1, n + 1)]
    used = {h.address: Usage(cpu=rng.choice([0, 0.5, 1])) for h in hosts}
    a = place("o/app", s, 1, [], hosts, used)
    shuffled = hosts[:]
    rng.shuffle(shuffled)
    b = place("o/app", s, 1, [], shuffled, dict(reversed(list(used.items()))))
    assert a.slots == b.slots
    assert len({x.node for x in a.slots}) == len(a.slots) <= replicas
    by = {h.address: h for h in hosts}
    for slot in a.slots:
        assert used[slot.node].cpu + cpu <= by[slot.node].cpu + 1e-9
    assert len(a.slots) + a.missing == replicas
