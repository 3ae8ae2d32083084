"""Who sees what, and what a round survives, on real nodes: dropouts in every private mode (masked modes
recover the dropped participant's masks), hostile updates refused with their cause while the round goes
on, an aggregator that holds no secret key and no update in clear, an owner that cannot open a single
participant's update."""

from __future__ import annotations

import gc
import logging
from typing import Any

import numpy as np
import pytest

from r1os.edil import _roles
from r1os.edil._seal import SealError, open_sealed
from r1os.edil._state import UpdatePointer, update_key
from r1os.edil._updates import sign_update
from tests.edil.network import EdilNet, example, finished

pytestmark = pytest.mark.timeout(240)


def index_of(net: EdilNet, address: str) -> int:
    return [n.address.lower() for n in net.nodes].index(address)


@pytest.mark.parametrize("privacy", ["plain", "ckks", "masked", "ckks+masked"])
async def test_a_participant_that_drops_out_does_not_stall_the_job(net: EdilNet, privacy: str) -> None:
    r = await net.submit(0, example(privacy=privacy, rounds=2, deadline_s=3))
    assert r.status_code == 200, r.text
    job = r.json()
    gone = job["participants"][2]
    await net.nodes[index_of(net, gone)].stop()  # before its first update: dropped from round 1 on
    v = await finished(net, job["job_id"])
    assert v["phase"] == "done", v
    for h in v["history"]:
        assert h["dropped"] == [gone] and sorted(h["included"]) == sorted(job["participants"][:2]), h
        assert h["test_accuracy"] is not None
    assert v["test_accuracy"] > 0.5  # two label-skewed parts still teach the model most digits
    net.nodes.pop(index_of(net, gone))


async def test_hostile_updates_are_refused_with_their_cause(
    net: EdilNet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="r1os.edil")
    r = await net.submit(0, example(privacy="ckks", rounds=2, deadline_s=6))
    job = r.json()
    p1, p2, p3 = job["participants"]
    aggregator = job["aggregator"]
    length = 64 * 32 + 32 + 32 * 10 + 10

    async def plant(participant: str, blob: bytes, **header: Any) -> None:
        """Write, as `participant`'s node, an update pointer ahead of its real one (read first)."""
        node = net.nodes[index_of(net, participant)]
        io = net.edil(index_of(net, participant)).io
        assert io is not None
        fields: dict[str, Any] = dict(
            network="etest", job=job["job_id"], round=1, privacy="ckks", blob=blob, length=length, chunks=2,
            samples=100, context_fingerprint=job_state.context_fingerprint,
        )  # fmt: skip
        fields.update(header)
        signed = sign_update(node.key, **fields)
        cid = await io.put_sealed(blob, [aggregator])
        pointer = UpdatePointer(update=signed.model_dump(mode="json"), blob_cid=cid, size=len(blob))
        await io.cstore.hset(update_key(participant, job["job_id"]), "1", pointer.model_dump(mode="json"))

    job_state = net.edil(0).jobs[job["job_id"]]
    # Stop the real participants' first update by taking their place in round 1 with bad ones.
    for i in (index_of(net, p1), index_of(net, p2)):
        net.edil(i).participant.sent[job["job_id"]] = 1  # type: ignore[union-attr]
    await plant(p1, b"R1EDU1\x00" + b"\xff" * 20)  # malformed ciphertext container
    await plant(p2, b"\x00" * 64, round=1, length=length + 1)  # wrong size
    v = await finished(net, job["job_id"])
    first = v["history"][0]
    assert set(first["refused"]) == {p1, p2}, first
    assert first["refused"][p2] == "wrong_size"
    assert first["refused"][p1] in {"malformed", "wrong_size"}
    # One good update left in round 1: a private sum of one is withheld, the model stays, round 2 goes on.
    assert first["included"] == [] and v["phase"] == "done"
    assert v["history"][1]["included"] and len(v["history"][1]["included"]) == 3
    assert any("refused" in rec.getMessage() for rec in caplog.records)
    assert p3


async def test_the_aggregator_never_holds_an_update_or_a_key_and_the_owner_cannot_open_one(
    net: EdilNet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent: list[np.ndarray] = []
    real = _roles.Participant._send

    async def recording(self: Any, state: Any, vector: np.ndarray, samples: int, r: int, job: str) -> None:
        sent.append(np.array(vector, copy=True))
        await real(self, state, vector, samples, r, job)

    monkeypatch.setattr(_roles.Participant, "_send", recording)
    r = await net.submit(0, example(privacy="ckks", rounds=2, deadline_s=60))
    job = r.json()
    v = await finished(net, job["job_id"])
    assert v["phase"] == "done" and len(sent) == 6
    agg = net.edil(index_of(net, job["aggregator"]))
    assert agg.aggregator is not None and agg.aggregator.summed == 2
    # No secret key on the aggregator: its only CKKS context is the public one.
    contexts = list(agg.aggregator._public.values())
    assert contexts and not any(c.holds_secret_key() for c in contexts)
    # Nothing reachable from the aggregator's role is a participant's update in clear.
    seen: set[int] = set()
    todo: list[Any] = [agg.aggregator]
    arrays = []
    while todo and len(seen) < 200_000:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            arrays.append(obj)
            continue
        todo.extend(gc.get_referents(obj))
    for a in arrays:
        for update in sent:
            if a.size == update.size:
                assert not np.allclose(a.ravel(), update, atol=1e-3)
    # Nor in any log line of the run.
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    for update in sent:
        for x in update[:5]:
            assert f"{x:.6f}" not in text and repr(float(x)) not in text
    # The owner's node cannot open a participant's update (sealed to the aggregator only).
    p = job["participants"][0]
    owner_io = net.edil(0).io
    assert owner_io is not None
    raw = await owner_io.cstore.hget(update_key(p, job["job_id"]), "1")
    blob = await owner_io.r1fs.cat(UpdatePointer.model_validate(raw).blob_cid, max_size=1 << 26)
    with pytest.raises(SealError) as err:
        open_sealed(blob, net.nodes[0].key)
    assert err.value.cause == "not_recipient"
