"""dAuth's signed objects: requests, records, broker logins (no network needed)."""

from __future__ import annotations

import logging
import time

import pytest

from r1os.dauth import (
    AdmissionRecord,
    DauthError,
    NetworkConfig,
    SignedRecord,
    broker_client_id,
    broker_password,
    check_broker_login,
    make_request,
)
from r1os.dauth._models import parse_request, sign_obj
from r1os.dauth.broker import BrokerGate
from r1os.identity import NodeKey

NET = "devnet"


@pytest.fixture(scope="module")
def key() -> NodeKey:
    return NodeKey.generate()


def test_a_signed_request_parses(key: NodeKey) -> None:
    req = parse_request(make_request(key, NET, "0.1.0"), NET)
    assert req.address == key.address and req.version == "0.1.0"


def test_a_request_signed_by_another_key_is_refused(key: NodeKey) -> None:
    body = make_request(NodeKey.generate(), NET, "0.1.0")
    body["request"]["address"] = key.address  # claims to be `key`
    with pytest.raises(DauthError) as info:
        parse_request(body, NET)
    assert info.value.cause == "bad_signature" and info.value.status == 401
    assert "signed by" in str(info.value)


def test_a_tampered_request_is_refused(key: NodeKey) -> None:
    body = make_request(key, NET, "0.1.0")
    body["request"]["version"] = "9.9.9"
    with pytest.raises(DauthError) as info:
        parse_request(body, NET)
    assert info.value.cause == "bad_signature"


@pytest.mark.parametrize(
    ("mutate", "cause"),
    [
        (lambda b: b.update(sig="0x1234"), "bad_signature"),
        (lambda b: b.pop("sig"), "malformed"),
        (lambda b: b["request"].update(extra=1), "malformed"),
        (lambda b: b["request"].update(nonce="short"), "malformed"),
        (lambda b: b["request"].update(address="not-an-address"), "malformed"),
        (lambda b: b.update(request="text"), "malformed"),
    ],
)
def test_malformed_requests_get_a_clear_cause(key: NodeKey, mutate, cause: str) -> None:  # type: ignore[no-untyped-def]
    body = make_request(key, NET, "0.1.0")
    mutate(body)
    with pytest.raises(DauthError) as info:
        parse_request(body, NET)
    assert info.value.cause == cause, info.value


def test_wrong_network_and_stale_requests(key: NodeKey) -> None:
    with pytest.raises(DauthError) as info:
        parse_request(make_request(key, "othernet", "0.1.0"), NET)
    assert info.value.cause == "wrong_network"
    with pytest.raises(DauthError) as info:
        parse_request(make_request(key, NET, "0.1.0"), NET, now=time.time() + 120)
    assert info.value.cause == "stale" and "clock" in (info.value.hint or "")


def _record(address: str, expires: int | None = None) -> AdmissionRecord:
    return AdmissionRecord.model_validate(
        {"network": NET, "address": address, "licence": {"type": "ND", "token_id": 7}, "epoch": 3,
         "expires": expires or int(time.time()) + 60}
    )  # fmt: skip


def test_record_signatures_count_only_for_current_oracles(key: NodeKey) -> None:
    oracle, stranger = NodeKey.generate(), NodeKey.generate()
    rec = _record(key.address)
    signed = SignedRecord(
        record=rec,
        signatures={
            oracle.address.lower(): sign_obj(oracle, rec.body()),
            stranger.address.lower(): sign_obj(stranger, rec.body()),
        },
    )
    assert signed.valid_signers({oracle.address.lower()}) == {oracle.address.lower()}
    assert signed.valid_signers(set()) == set()
    # A signature moved onto another record does not check out.
    other = signed.model_copy(update={"record": rec.model_copy(update={"epoch": 4})})
    assert other.valid_signers({oracle.address.lower()}) == set()


def test_network_config_epochs() -> None:
    cfg = NetworkConfig(network=NET, genesis_time=1000, epoch_seconds=60)
    assert cfg.epoch_at(999) == 0 and cfg.epoch_at(1059) == 0 and cfg.epoch_at(1060) == 1
    assert cfg.epoch_end(1) == 1120
    assert cfg.same_as(cfg.model_copy(update={"issued_at": 5.0}))
    assert not cfg.same_as(cfg.model_copy(update={"oracles": ["0x1"]}))


def test_broker_login(key: NodeKey) -> None:
    pw = broker_password(key, NET)
    cid = broker_client_id(key.address)
    assert check_broker_login(NET, cid, key.address, pw) == key.address
    assert check_broker_login(NET, cid, key.address.lower(), pw.encode()) == key.address
    cases = [
        (cid, None, pw, "no username"),
        (cid, "bob", pw, "not an address"),
        ("r1os-someone-else", key.address, pw, "client id"),
        (cid, key.address, None, "no dAuth password"),
        (cid, key.address, "r1os-dauth-v1:zz", "not a valid signature"),
        (cid, key.address, broker_password(key, "othernet"), "not signed by"),
    ]
    other = NodeKey.generate()
    cases.append((cid, key.address, broker_password(other, NET), "not signed by"))
    for client_id, user, password, why in cases:
        with pytest.raises(ValueError, match=why):
            check_broker_login(NET, client_id, user, password)


async def test_broker_gate_refuses_bad_logins_and_unknown_nodes(
    key: NodeKey, caplog: pytest.LogCaptureFixture
) -> None:
    oracle = NodeKey.generate()
    gate = BrokerGate(NET, [oracle.address], [], min_refresh_s=0)
    caplog.set_level(logging.WARNING, "r1os.dauth.broker")
    assert await gate.authorize(
        broker_client_id(oracle.address), oracle.address, broker_password(oracle, NET)
    )
    assert not await gate.authorize(broker_client_id(key.address), key.address, broker_password(key, NET))
    assert "not admitted by dAuth" in caplog.text
    assert not await gate.authorize("x", key.address, "guess")
    # Records come from the oracles' HTTP API; one signed by a known oracle lets the node in.
    rec = _record(key.address)
    gate.admitted = gate._check(
        {
            key.address.lower(): {
                "record": rec.model_dump(),
                "signatures": {oracle.address.lower(): sign_obj(oracle, rec.body())},
            }
        }
    )
    gate._fetched_at = time.monotonic()
    assert await gate.authorize(broker_client_id(key.address), key.address, broker_password(key, NET))
    forged = gate._check(
        {
            key.address.lower(): {
                "record": rec.model_dump(),
                "signatures": {oracle.address.lower(): sign_obj(key, rec.body())},
            }
        }
    )
    assert forged == {}
    assert gate.refused == 2 and gate.accepted == 2
    await gate.close()
