"""The oracle's HTTP API on a real node (in-memory transport, one oracle, so it closes epochs alone):
typed answers, and every refusal in the node's one error shape `{"error", "cause", "hint"}` with a
fitting status; the client (`oracle_get`) turns that shape back into an `OracleError`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.chain.digests import MAX_EPOCHS_PER_CLAIM, availability_digest
from r1os.identity import normalize_address, recover_address
from r1os.node import Node, NodeConfig
from r1os.oracle import (
    EpochRecord,
    HeartbeatLog,
    NodeAvailability,
    OracleError,
    OracleSettings,
    OracleStatus,
    OracleSyncService,
    RangeSignature,
    oracle_get,
)
from r1os.transport import MemoryHub, MemoryTransport

EPOCH = 100.0
HB = 1.0
EDGE = normalize_address("0x" + "e" * 40)


@pytest.fixture
async def oracle(tmp_path: Path) -> AsyncIterator[tuple[OracleSyncService, str]]:
    # now is in epoch 3; only epoch 1 gets closed: epoch 0 was before the oracles' history (counts 0,
    # unmeasured), epoch 2 ended without an agreed table, epoch 3 has not ended
    genesis = time.time() - 3 * EPOCH - 1
    svc = OracleSyncService(OracleSettings(genesis_time=genesis, epoch_seconds=EPOCH, heartbeat=HB))
    config = NodeConfig(home=tmp_path, network="test", http="127.0.0.1:0", oracle=True, heartbeat_interval=HB,
                        key_strength="light")  # fmt: skip
    node = Node(config, password="pw", services=[svc], transport=MemoryTransport(MemoryHub()))
    await node.start()
    try:
        log = HeartbeatLog()
        t = genesis + EPOCH - 2
        while t < genesis + 2 * EPOCH + 2:
            log.record(EDGE, t)
            log.record(svc.me, t)
            t += HB
        svc.hb = log
        assert await svc.close_epoch(1) is not None, svc.failures
        yield svc, node.url
    finally:
        await node.stop()


async def get(url: str, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{url}{path}", params=params)


def refusal(r: httpx.Response, status: int, cause: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "cause", "hint"}, body
    assert body["cause"] == cause and body["error"], body
    return body


async def test_answers_are_typed(oracle: tuple[OracleSyncService, str]) -> None:
    svc, url = oracle
    status = OracleStatus.model_validate((await get(url, "/v1/oracle/epochs")).json())
    assert status.last_closed == 1 and status.current_epoch == 3 and status.oracles == [svc.me]
    assert [e.epoch for e in status.epochs] == [1] and status.epochs[0].signers == [svc.me]
    record = EpochRecord.model_validate((await get(url, "/v1/oracle/epochs/1")).json())
    assert record.values[EDGE] == 255

    r = await get(url, f"/v1/oracle/availability/{EDGE.lower()}", epochs="0:1")
    got = NodeAvailability.model_validate(r.json())
    assert got.node == EDGE and [(e.value, e.measured) for e in got.epochs] == [(0, False), (255, True)]
    assert got.claim is not None and got.claim.availabilities == [0, 255] and len(got.claim.signatures) == 1
    unclaimed = await get(url, f"/v1/oracle/availability/{EDGE}", epochs="1:1", claim="false")
    assert unclaimed.json()["claim"] is None

    sig = RangeSignature.model_validate((await get(url, f"/v1/oracle/sign/{EDGE}", epochs="0:1")).json())
    assert sig.signature == got.claim.signatures[0]
    digest = availability_digest(EDGE, 0, [0, 255])
    assert recover_address(digest, bytes.fromhex(sig.signature.removeprefix("0x"))) == svc.me

    # the schema names the answers, error ones included
    paths = (await get(url, "/openapi.json")).json()["paths"]
    answers = paths["/v1/oracle/availability/{node}"]["get"]["responses"]
    assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/NodeAvailability")
    assert answers["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorAnswer")


async def test_bad_requests_answer_error_cause_and_hint(oracle: tuple[OracleSyncService, str]) -> None:
    _, url = oracle
    body = refusal(await get(url, "/v1/oracle/epochs/2"), 404, "epoch_not_agreed")
    assert (
        body["error"] == "epoch 2 has no agreed table on this oracle" and "/v1/oracle/epochs" in body["hint"]
    )
    refusal(await get(url, f"/v1/oracle/availability/{EDGE}", epochs="0:2"), 404, "epoch_not_agreed")
    refusal(await get(url, "/v1/oracle/epochs/two"), 422, "invalid_request")
    body = refusal(await get(url, f"/v1/oracle/availability/{EDGE}", epochs="5:2"), 400, "bad_epoch_range")
    assert "bad epoch range" in body["error"] and "A:B" in body["hint"]
    too_many = f"0:{MAX_EPOCHS_PER_CLAIM}"
    refusal(await get(url, f"/v1/oracle/availability/{EDGE}", epochs=too_many), 400, "bad_epoch_range")
    body = refusal(await get(url, f"/v1/oracle/availability/{EDGE}", epochs="1:3"), 400, "epoch_not_ended")
    assert "epoch 3 has not ended" in body["error"]
    body = refusal(await get(url, "/v1/oracle/sign/0x12", epochs="1:1"), 400, "bad_address")
    assert "not an Ethereum address" in body["error"] and body["hint"]
    refusal(await get(url, f"/v1/oracle/sign/{EDGE}"), 422, "invalid_request")  # epochs is required


async def test_the_client_raises_the_oracles_error(oracle: tuple[OracleSyncService, str]) -> None:
    _, url = oracle
    with pytest.raises(OracleError) as caught:
        await oracle_get(url, f"/v1/oracle/availability/{EDGE}", {"epochs": "5:2"})
    err = caught.value
    assert (err.status, err.cause) == (400, "bad_epoch_range")
    assert str(err).startswith(f"oracle {url}: bad epoch range") and err.hint and "A:B" in err.hint
    async with httpx.AsyncClient() as http:  # a node's shared client works the same
        assert (await oracle_get(url, "/v1/oracle/epochs", http=http))["last_closed"] == 1
    with pytest.raises(OracleError, match="cannot reach the oracle") as caught:
        await oracle_get("http://127.0.0.1:9", "/v1/oracle/epochs")
    assert caught.value.cause == "unreachable"
