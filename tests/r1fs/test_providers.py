"""Which node does what for a pinned CID: the same answer on every node from the same view."""

from __future__ import annotations

from r1os.r1fs._providers import plan, rank, wanted_replicas

CID = "bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi"
NODES = {f"0x{i:040x}" for i in range(1, 7)}


def test_wanted_is_the_largest_request_and_ignores_junk() -> None:
    assert wanted_replicas({}) == 0
    assert wanted_replicas({"a": {"replicas": 2}, "b": {"replicas": 4}, "c": {"replicas": "9"}}) == 4
    assert wanted_replicas({"a": {"replicas": True}}) == 0


def test_exactly_the_missing_number_of_nodes_fetch() -> None:
    holders = {sorted(NODES)[0]}
    deciders = [
        n
        for n in NODES
        if plan(CID, n, wanted=3, holders=holders, replica_holders=set(), candidates=NODES) == "fetch"
    ]
    assert len(deciders) == 2 and not holders & set(deciders)
    assert set(deciders) == set(rank(CID, NODES - holders)[:2])


def test_nobody_fetches_when_enough_copies_are_live() -> None:
    holders = set(sorted(NODES)[:3])
    assert all(
        plan(CID, n, wanted=3, holders=holders, replica_holders=set(), candidates=NODES) == "" for n in NODES
    )


def test_surplus_replicas_drop_last_in_rank_and_user_pins_stay() -> None:
    holders = set(sorted(NODES)[:5])
    replicas = holders - {sorted(NODES)[0]}  # node 1 holds a user pin
    drops = [
        n
        for n in NODES
        if plan(CID, n, wanted=3, holders=holders, replica_holders=replicas, candidates=NODES) == "drop"
    ]
    assert len(drops) == 2 and sorted(NODES)[0] not in drops
    assert set(drops) == set(list(reversed(rank(CID, replicas)))[:2])


def test_unpinned_cids_release_their_replicas() -> None:
    me = sorted(NODES)[2]
    assert plan(CID, me, wanted=0, holders={me}, replica_holders={me}, candidates=NODES) == "drop"
    assert plan(CID, me, wanted=0, holders={me}, replica_holders=set(), candidates=NODES) == ""
