"""The oracle side against a scripted chain and an in-memory store: admit, refuse, renew, revoke."""

from __future__ import annotations

import time

import pytest

from r1os.dauth import ADMITTED_KEY, CONFIG_KEY, DauthError, NetworkConfig, SignedRecord, make_request
from r1os.dauth._ledger import AdmissionLedger
from r1os.dauth._oracle_side import NonceMemory, OracleSide
from r1os.identity import NodeKey
from tests.dauth.fakes import FakeChain, MemoryStore

NET = "devnet"
EPOCH = 60
GENESIS = int(time.time()) - 10 * EPOCH  # one value for every oracle of a test: their configs must agree


def oracle_side(
    key: NodeKey, chain: FakeChain, store: MemoryStore | None = None, *oracles: NodeKey
) -> OracleSide:
    ledger = AdmissionLedger(NET, [key.address, *(o.address for o in oracles)], trust_bootstrap=False)
    config = NetworkConfig(
        network=NET, chain_id=31337, genesis_time=GENESIS, epoch_seconds=EPOCH,
        oracles=sorted(ledger.bootstrap_oracles),
    )  # fmt: skip

    def adopt(config: NetworkConfig) -> None:
        ledger.set_config(config)

    return OracleSide(
        key=key, ledger=ledger, store=store or MemoryStore(), chain=chain, config=config, set_config=adopt
    )


@pytest.fixture
def oracle() -> NodeKey:
    return NodeKey.generate()


async def test_a_licensed_node_is_admitted_and_its_record_stored(oracle: NodeKey) -> None:
    node = NodeKey.generate()
    chain, store = FakeChain([oracle.address]), MemoryStore()
    chain.link(node.address, 5)
    side = oracle_side(oracle, chain, store)
    await side.start()
    # The oracle signed the config it publishes.
    assert store.values[CONFIG_KEY]["signatures"].keys() == {oracle.address.lower()}

    answer = await side.admit(make_request(node, NET, "t"))
    assert answer.record.address == node.address and answer.record.licence.token_id == 5
    assert answer.record.expires == answer.config.epoch_end(answer.record.epoch + 1)
    stored = SignedRecord.model_validate(store.hashes[ADMITTED_KEY][node.address.lower()])
    assert stored.valid_signers({oracle.address.lower()}) == {oracle.address.lower()}
    assert side.ledger.valid(node.address)
    # Asked again in the same epoch: the stored record already carries our signature; nothing written.
    writes = store.writes
    again = await side.admit(make_request(node, NET, "t"))
    assert again.record == answer.record and store.writes == writes


async def test_refusals_carry_cause_status_and_hint(oracle: NodeKey) -> None:
    node = NodeKey.generate()
    chain = FakeChain([oracle.address])
    side = oracle_side(oracle, chain)
    await side.start()
    with pytest.raises(DauthError) as info:
        await side.admit(make_request(node, NET, "t"))
    assert (info.value.cause, info.value.status) == ("not_licensed", 403)
    assert f"r1os licence buy --link {node.address}" in (info.value.hint or "")

    chain.link(node.address, 1)
    request = make_request(node, NET, "t")
    await side.admit(request)
    with pytest.raises(DauthError) as info:
        await side.admit(request)
    assert (info.value.cause, info.value.status) == ("replayed", 409)

    chain.down = True
    with pytest.raises(DauthError) as info:
        await side.admit(make_request(node, NET, "t"))
    assert (info.value.cause, info.value.status) == ("chain_unavailable", 503)
    with pytest.raises(DauthError) as info:
        await side.admit({"request": "garbage"})
    assert (info.value.cause, info.value.status) == ("malformed", 400)


async def test_an_oracle_without_the_chain_starts_on_the_configured_oracles(oracle: NodeKey) -> None:
    chain = FakeChain([oracle.address], down=True)
    side = oracle_side(oracle, chain)
    await side.start()
    assert side.ledger.oracles == {oracle.address.lower()}
    assert side.config.network == NET


async def test_recheck_revokes_unlinked_nodes_and_renews_old_records(oracle: NodeKey) -> None:
    kept, dropped = NodeKey.generate(), NodeKey.generate()
    chain, store = FakeChain([oracle.address]), MemoryStore()
    chain.link(kept.address, 1)
    chain.link(dropped.address, 2)
    side = oracle_side(oracle, chain, store)
    await side.start()
    await side.admit(make_request(kept, NET, "t"))
    await side.admit(make_request(dropped, NET, "t"))
    assert await side.recheck() == {"checked": 2, "revoked": 0, "renewed": 0}  # same epoch: nothing to do

    chain.unlink(dropped.address)
    # An epoch later (the clock seen through an earlier genesis) the kept node's record is confirmed again.
    side.ledger.config = side.config.model_copy(update={"genesis_time": side.config.genesis_time - EPOCH})
    before = SignedRecord.model_validate(store.hashes[ADMITTED_KEY][kept.address.lower()]).record
    assert await side.recheck() == {"checked": 2, "revoked": 1, "renewed": 1}
    assert set(store.hashes[ADMITTED_KEY]) == {kept.address.lower()}
    after = SignedRecord.model_validate(store.hashes[ADMITTED_KEY][kept.address.lower()])
    assert after.record.epoch == before.epoch + 1
    assert after.valid_signers({oracle.address.lower()}) == {oracle.address.lower()}
    assert await side.recheck() == {"checked": 1, "revoked": 0, "renewed": 0}


async def test_a_second_oracle_countersigns_instead_of_rewriting(oracle: NodeKey) -> None:
    other, node = NodeKey.generate(), NodeKey.generate()
    chain, store = FakeChain([oracle.address, other.address]), MemoryStore()
    chain.link(node.address, 3)
    first = oracle_side(oracle, chain, store, other)
    second = oracle_side(other, chain, store, oracle)
    await first.start()
    await second.start()
    assert store.values[CONFIG_KEY]["signatures"].keys() == {oracle.address.lower(), other.address.lower()}
    await first.admit(make_request(node, NET, "t"))
    await second.admit(make_request(node, NET, "t"))
    stored = SignedRecord.model_validate(store.hashes[ADMITTED_KEY][node.address.lower()])
    assert stored.valid_signers({oracle.address.lower(), other.address.lower()}) == {
        oracle.address.lower(),
        other.address.lower(),
    }


def test_nonce_memory_forgets_only_outside_its_window() -> None:
    now = [100.0]
    nonces = NonceMemory(window=10, clock=lambda: now[0])
    nonces.check("0xA", "n1")
    with pytest.raises(DauthError, match="already used"):
        nonces.check("0xa", "n1")
    nonces.check("0xB", "n1")  # per address
    now[0] = 111.0
    nonces.check("0xA", "n1")  # the window has passed: a replay now is refused as stale instead
