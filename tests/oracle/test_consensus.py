"""Consensus steps on synthetic tables: median, eligibility, quorum, liars, silence, equivocation."""

from __future__ import annotations

import pytest

from r1os.chain.digests import SignedAvailability
from r1os.identity import NodeKey
from r1os.oracle import (
    EpochRecord,
    NoQuorum,
    OracleSignatures,
    agree,
    disagreements,
    eligible_oracles,
    median_table,
    propose,
    quorum,
    sign_table,
    table_hash,
    table_signer,
)

KEYS = [NodeKey.generate() for _ in range(3)]
O1, O2, O3 = (k.address for k in KEYS)
ORACLES = [O1, O2, O3]
N_ON, N_HALF = "0x" + "1" * 40, "0x" + "2" * 40


def honest(jitter: int = 0) -> dict[str, int]:
    return {O1: 255, O2: 255, O3: 255, N_ON: 255 - jitter, N_HALF: 128 + jitter}


def test_quorum_is_two_thirds_rounded_up() -> None:
    assert [quorum(n) for n in (1, 2, 3, 4, 6, 7)] == [1, 2, 2, 3, 4, 5]


def test_median_ignores_one_liar_either_way() -> None:
    liar = {**honest(), N_HALF: 255, N_ON: 0}
    tables = {O1: honest(0), O2: honest(1), O3: liar}
    p = propose(tables, ORACLES)
    assert p.values[N_HALF] in (128, 129) and p.values[N_ON] in (254, 255)
    assert p.voters == sorted(ORACLES)
    assert set(disagreements(tables, p.values)) == {O3}


def test_silent_oracle_still_closes_with_two_of_three() -> None:
    tables = {O1: {**honest(), O3: 0}, O2: {**honest(), O3: 0}}
    p = propose(tables, ORACLES)
    assert p.voters == sorted([O1, O2]) and O3 not in p.eligible
    assert p.values[N_HALF] == 128
    with pytest.raises(NoQuorum):
        propose({O1: honest()}, ORACLES)


def test_only_available_oracles_vote() -> None:
    # O3 was up a third of the epoch: its table does not count even though it sent one
    low = {O1: 255, O2: 255, O3: 85}
    tables = {O1: {**honest(), **low}, O2: {**honest(), **low}, O3: {**honest(), **low, N_HALF: 0}}
    assert eligible_oracles(tables, ORACLES) == {O1, O2}
    assert propose(tables, ORACLES).values[N_HALF] == 128


def test_eligibility_is_relative_to_the_best_oracle_for_a_partial_first_epoch() -> None:
    part = {O1: 120, O2: 118, O3: 119, N_ON: 119}
    assert eligible_oracles({o: part for o in ORACLES}, ORACLES) == set(ORACLES)
    assert eligible_oracles({o: {} for o in ORACLES}, ORACLES) == set()


def test_missing_node_counts_as_zero_in_that_table() -> None:
    assert median_table([{N_ON: 200}, {N_ON: 210}, {}]) == {N_ON: 200}
    assert median_table([]) == {}


def test_agree_takes_the_most_frequent_median_with_quorum() -> None:
    a, b = {N_ON: 255}, {N_ON: 0}
    assert agree({O1: a, O2: a, O3: b}, 3) == (a, sorted([O1, O2]))
    with pytest.raises(NoQuorum):
        agree({O1: a, O2: b}, 3)
    with pytest.raises(NoQuorum):
        agree({}, 3)


def test_table_signatures_bind_kind_network_epoch_and_values() -> None:
    values = honest()
    sig = sign_table(KEYS[0], "table", "devnet", 7, values)
    assert table_signer(sig, "table", "devnet", 7, values) == O1
    assert table_signer(sig, "median", "devnet", 7, values) != O1
    assert table_signer(sig, "table", "devnet", 8, values) != O1
    assert table_signer(sig, "table", "devnet", 7, {**values, N_ON: 1}) != O1
    assert table_signer("0xnothex", "table", "devnet", 7, values) is None
    assert table_hash("table", "devnet", 7, values) == table_hash(
        "table", "devnet", 7, dict(reversed(values.items()))
    )


def test_record_signers_and_claim_signatures_check_out() -> None:
    values = {N_HALF: 128}
    rec = EpochRecord(network="devnet", epoch=3, start=0, end=10, values=values, table_hash="0x",
                      oracles=ORACLES, quorum=2, voters=ORACLES, supporters=ORACLES)  # fmt: skip
    for k in KEYS[:2]:
        from r1os.chain.digests import sign_availability

        rec.signatures[k.address] = OracleSignatures(
            table_sig=sign_table(k, "agreed", "devnet", 3, values),
            nodes={N_HALF: "0x" + sign_availability(k, N_HALF, 3, [128]).hex()},
        )
    rec.signatures[O3] = OracleSignatures(table_sig=sign_table(KEYS[2], "agreed", "devnet", 3, {N_HALF: 255}))
    assert rec.valid_signers() == sorted([O1, O2])
    sigs = list(rec.node_signatures(N_HALF).values())
    claim = SignedAvailability(node=N_HALF, first_epoch=3, availabilities=[128], signatures=sigs)
    assert sorted(claim.verify_signers()) == sorted([O1, O2])
