"""The admitted set as a pure core: records, oracle signatures, oracle changes, expiry (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from r1os.dauth import AdmissionRecord, NetworkConfig, SignedRecord
from r1os.dauth._ledger import AdmissionLedger
from r1os.dauth._models import sign_obj
from r1os.identity import NodeKey

NET = "devnet"
NOW = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def signed(node: NodeKey, *oracles: NodeKey, expires: float = NOW + 60, network: str = NET) -> dict[str, Any]:
    rec = AdmissionRecord.model_validate(
        {"network": network, "address": node.address, "licence": {"type": "ND", "token_id": 1}, "epoch": 1,
         "expires": int(expires)}
    )  # fmt: skip
    return SignedRecord(
        record=rec, signatures={o.address.lower(): sign_obj(o, rec.body()) for o in oracles}
    ).model_dump()


def config_of(*oracles: NodeKey) -> NetworkConfig:
    return NetworkConfig(network=NET, oracles=[o.address for o in oracles])


@pytest.fixture
def keys() -> tuple[NodeKey, NodeKey, NodeKey]:
    return NodeKey.generate(), NodeKey.generate(), NodeKey.generate()


def test_a_record_counts_only_with_a_current_oracles_signature(keys: tuple[NodeKey, ...]) -> None:
    oracle, node, stranger = keys
    clock = Clock()
    ledger = AdmissionLedger(NET, [oracle.address], clock=clock)
    changes: list[tuple[str, bool]] = []
    ledger.on_change(lambda a, ok: changes.append((a, ok)))

    ledger.put(node.address, signed(node, stranger))
    assert not ledger.valid(node.address) and ledger.admitted() == set()
    ledger.put(node.address.lower(), signed(node, oracle))
    assert ledger.valid(node.address) and ledger.admitted() == {node.address.lower()}
    assert changes == [(node.address.lower(), True)]
    # A record filed under another address, or for another network, does not count.
    ledger.put(stranger.address, signed(node, oracle))
    ledger.put(stranger.address, signed(stranger, oracle, network="othernet"))
    assert not ledger.valid(stranger.address)
    # Deleted from the store: gone, and listeners hear it once.
    ledger.put(node.address, None)
    assert changes == [(node.address.lower(), True), (node.address.lower(), False)]
    assert ledger.revocations == 1


def test_a_new_oracle_set_rechecks_every_stored_record(keys: tuple[NodeKey, ...]) -> None:
    first, second, node = keys
    ledger = AdmissionLedger(NET, [first.address], trust_bootstrap=False, clock=Clock())
    # Signed by an oracle we do not know yet: kept, not counted ...
    ledger.load({node.address.lower(): signed(node, second)})
    assert not ledger.valid(node.address)
    # ... until the config names it; the oracle that left and holds no record is to be forgotten.
    left = ledger.set_config(config_of(second))
    assert ledger.valid(node.address)
    assert ledger.oracles == {second.address.lower()}
    assert left == {first.address.lower()}
    # An edge node keeps trusting the oracles it was started with besides the config's.
    edge = AdmissionLedger(NET, [first.address], trust_bootstrap=True)
    edge.set_config(config_of(second))
    assert edge.oracles == {first.address.lower(), second.address.lower()}
    assert edge.set_config(config_of(second)) == set()


def test_expiry_reports_each_loss_once(keys: tuple[NodeKey, ...]) -> None:
    oracle, node, late = keys
    clock = Clock()
    ledger = AdmissionLedger(NET, [oracle.address], clock=clock)
    changes: list[tuple[str, bool]] = []
    ledger.on_change(lambda a, ok: changes.append((a, ok)))
    ledger.put(node.address, signed(node, oracle, expires=NOW + 10))
    ledger.put(late.address, signed(late, oracle, expires=NOW - 1))  # ran out already: never counted
    clock.now = NOW + 11
    assert not ledger.valid(node.address)
    assert ledger.expire() == [node.address.lower()]
    assert ledger.expire() == []
    ledger.set_config(config_of(oracle, late))  # re-checking stored records brings nothing back
    assert changes == [(node.address.lower(), True), (node.address.lower(), False)]


def test_a_failing_listener_does_not_stop_the_others(keys: tuple[NodeKey, ...]) -> None:
    oracle, node, _ = keys
    ledger = AdmissionLedger(NET, [oracle.address])
    heard: list[str] = []

    def broken(addr: str, ok: bool) -> None:
        raise RuntimeError("boom")

    ledger.on_change(broken)
    ledger.on_change(lambda a, ok: heard.append(a))
    ledger.put(node.address, signed(node, oracle, expires=2**40))
    assert heard == [node.address.lower()]


def test_a_stored_config_needs_a_known_oracles_signature(keys: tuple[NodeKey, ...]) -> None:
    oracle, stranger, _ = keys
    ledger = AdmissionLedger(NET, [oracle.address])
    cfg = config_of(oracle)
    body = cfg.model_dump()
    assert (
        ledger.stored_config({"config": body, "signatures": {oracle.address: sign_obj(oracle, body)}}) == cfg
    )
    with pytest.raises(ValueError, match="not signed by a known oracle"):
        ledger.stored_config({"config": body, "signatures": {stranger.address: sign_obj(stranger, body)}})
    with pytest.raises(ValueError, match="not signed by a known oracle"):  # a signature under a false name
        ledger.stored_config({"config": body, "signatures": {oracle.address: sign_obj(stranger, body)}})
    other = cfg.model_copy(update={"network": "othernet"}).model_dump()
    with pytest.raises(ValueError, match="not signed by a known oracle"):
        ledger.stored_config({"config": other, "signatures": {oracle.address: sign_obj(oracle, other)}})
    junks: list[Any] = [None, "text", {"config": {}}, {"config": body}]
    for junk in junks:
        with pytest.raises(ValueError, match="malformed"):
            ledger.stored_config(junk)
