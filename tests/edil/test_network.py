"""EDIL over real nodes: the owner's node, three participants and an aggregator, plain and CKKS."""

from __future__ import annotations

import pytest

from tests.conftest import async_wait_for
from tests.edil.network import EXAMPLE, EdilNet, example, finished

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("privacy", ["plain", "ckks"])
async def test_a_job_trains_over_the_network(net: EdilNet, privacy: str) -> None:
    from r1os.edil import spec_from_data
    from r1os.edil.simulate import simulate

    spec = example(privacy=privacy, rounds=5, deadline_s=60)
    r = await net.submit(0, spec)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["owner_node"] == net.nodes[0].address.lower()
    assert job["aggregator"] not in job["participants"] and len(job["participants"]) == 3
    v = await finished(net, job["job_id"])
    assert v["phase"] == "done", v
    assert v["rounds_done"] == 5 and all(len(h["included"]) == 3 for h in v["history"])
    # Each round records what each participant sent: 2 ciphertexts of 65,676 bytes (CKKS) or 2,410 float64.
    sizes = {p: n for h in v["history"] for p, n in h["update_bytes"].items()}
    assert set(sizes) == set(job["participants"])
    assert all(n > (100_000 if privacy == "ckks" else 19_000) for n in sizes.values()), sizes
    # The networked run is the simulation's run: same seeds, same maths (CKKS adds only its noise).
    pairs = zip(job["participants"], spec["participants"], strict=True)
    resolved = spec_from_data({**spec, "participants": [{"node": p, "data": q["data"]} for p, q in pairs]})
    sim = simulate(resolved, privacy="plain")
    assert abs(v["test_accuracy"] - sim.final_accuracy) <= 0.005, (v["test_accuracy"], sim.final_accuracy)


async def test_the_example_encrypted_over_the_network_meets_the_accuracy_targets(net: EdilNet) -> None:
    """The issue's targets on its own example (30 rounds, CKKS): within 0.5 points of plaintext FedAvg on
    the same split and seed, and within 2 points of centralized training on all the data."""
    from r1os.edil import load_spec
    from r1os.edil.simulate import centralized, simulate, with_changes

    r = await net.submit(0, example())
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["privacy"] == "ckks" and job["rounds"] == 30
    v = await finished(net, job["job_id"])
    assert v["phase"] == "done" and v["rounds_done"] == 30
    spec = load_spec(EXAMPLE)
    nodes = [{"node": p, "data": q.data} for p, q in zip(job["participants"], spec.participants, strict=True)]
    resolved = with_changes(spec, participants=nodes)
    plain = simulate(resolved).final_accuracy
    central = centralized(resolved).final_accuracy
    assert abs(v["test_accuracy"] - plain) <= 0.005, (v["test_accuracy"], plain)
    assert v["test_accuracy"] >= central - 0.02, (v["test_accuracy"], central)


async def test_a_job_on_encodings_shares_the_encoder_through_r1fs(net: EdilNet) -> None:
    """With an encoder, the first participant trains it on its own data and seals it to the others and
    the owner's node; everyone trains and measures on encodings; the result equals the simulation's."""
    from r1os.edil import load_spec
    from r1os.edil.simulate import simulate, with_changes

    # plain: the comparison with the simulation is then exact (CKKS noise can flip a prediction or two)
    r = await net.submit(0, example(privacy="plain", rounds=4, encoder={"dim": 16, "epochs": 30}))
    assert r.status_code == 200, r.text
    job = r.json()
    v = await finished(net, job["job_id"])
    assert v["phase"] == "done", v
    spec = load_spec(EXAMPLE)
    nodes = [{"node": p, "data": q.data} for p, q in zip(job["participants"], spec.participants, strict=True)]
    sim = simulate(with_changes(spec, participants=nodes, rounds=4, encoder={"dim": 16, "epochs": 30}))
    assert abs(v["test_accuracy"] - sim.final_accuracy) <= 0.005, (v["test_accuracy"], sim.final_accuracy)


async def test_past_rounds_blobs_are_released(net: EdilNet) -> None:
    """Each node keeps only the blobs the current round needs: the owner the latest model, a participant
    its latest update, the aggregator its latest sum; past rounds' pins are dropped (GC reclaims them)."""
    r = await net.submit(0, example(privacy="ckks", rounds=3))
    job = r.json()
    v = await finished(net, job["job_id"])
    assert v["phase"] == "done"
    models = [h["model_cid"] for h in v["history"]]
    from r1os.edil._state import aggregate_key, update_key

    io = net.edil(0).io
    assert io is not None
    addresses = [n.address.lower() for n in net.nodes]
    expected: list[tuple[int, list[str]]] = [(0, models)]  # node index, its blobs by round
    for p in job["participants"]:
        sent = [(await io.cstore.hget(update_key(p, job["job_id"]), str(k)))["blob_cid"] for k in (1, 2, 3)]
        expected.append((addresses.index(p), sent))
    agg = job["aggregator"]
    sums = [(await io.cstore.hget(aggregate_key(agg, job["job_id"]), str(k)))["blob_cid"] for k in (1, 2, 3)]
    expected.append((addresses.index(agg), sums))

    async def released() -> bool:  # each release follows its node's last write, so wait for it
        for i, blobs in expected:
            pins = set(net.nodes[i].services[1].pins)  # type: ignore[attr-defined]
            if blobs[-1] not in pins or pins & set(blobs[:-1]):
                return False
        return True

    await async_wait_for(released, 20, "past rounds' pins dropped, the last round's kept, on every node")
