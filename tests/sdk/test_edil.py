"""`session.edil` (async and sync) against a real in-process EDIL network (tests/edil/network.py): five
nodes, node 0 the owner's node; a short job (the example, 2 rounds), submitted by the node's operator and
by a key; its rounds as they complete, its state from any node, its model evaluated here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r1os.errors import RemoteError, SpecError
from r1os.identity import NodeKey
from r1os.sdk import AsyncSession, JobFailed, Session
from r1os.sdk._edil import JobView, NoCaller, NotFinished, NotOwnersNode, RoundView
from tests.conftest import async_wait_for
from tests.edil.network import EdilNet, example, model_accuracy

pytestmark = pytest.mark.timeout(240)
#: The owner reports accuracies to 6 digits.
ROUNDED = 5e-7


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[EdilNet]:
    async with EdilNet(tmp_path, 5) as n:
        yield n


async def test_the_operator_trains_and_reads_the_job_anywhere(
    net: EdilNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, float | None]] = []

    def on_round(job: JobView, r: RoundView) -> None:
        seen.append((r.round, len(r.included), r.test_accuracy))

    async with AsyncSession(net.nodes[0].url, token=net.token(0)) as s:
        job = await s.edil.train(example(rounds=2, privacy="plain", deadline_s=60), on_round=on_round)
        assert job.phase == "done" and job.rounds == 2 and job.rounds_done == 2
        assert job.owner == job.owner_node == net.nodes[0].address.lower()  # the operator: the node
        assert len(job.participants) == 3 and job.aggregator not in job.participants
        assert job.test_accuracy is not None and 0.3 < job.test_accuracy <= 1.0
        assert job.model_cid and job.history[-1].model_cid == job.model_cid
        # Each round reported once, in order, as it completed: all three updates in each.
        assert [(r, n) for r, n, _ in seen] == [(1, 3), (2, 3)]
        assert seen[-1][2] == job.test_accuracy

        listed = await s.edil.list()
        assert [j.job_id for j in listed] == [job.job_id]

        # The model, from the owner's node: its params score exactly the accuracy the owner reported.
        npz = await s.edil.model(job.job_id)
        assert model_accuracy(npz) == pytest.approx(job.test_accuracy, abs=ROUNDED)
        saved = await s.edil.save_model(job.job_id, tmp_path / "digits.npz")
        assert saved.read_bytes() == npz
        named = tmp_path / "default"
        named.mkdir()
        monkeypatch.chdir(named)
        default = await s.edil.save_model(job.job_id)
        assert default.name == f"digits-{job.job_id}.npz" and (named / default.name).read_bytes() == npz

    # Job records replicate: any node answers, no key needed.
    async with AsyncSession(net.nodes[3].url) as anon:

        async def replicated() -> JobView | None:
            v = await anon.edil.status(job.job_id)
            return v if v.phase == "done" else None

        other = await async_wait_for(replicated, 20, "the finished job on node 3")
        assert other is not None
        assert (other.rounds_done, other.test_accuracy, other.model_cid) == (
            2,
            job.test_accuracy,
            job.model_cid,
        )
        # Its model is the owner's node's only: a clear error naming that node and its URL.
        async with AsyncSession(net.nodes[1].url, token=net.token(1)) as op1:
            with pytest.raises(NotOwnersNode) as exc:
                await op1.edil.model(job.job_id)
        assert net.nodes[0].address.lower() in str(exc.value)
        assert exc.value.hint is not None and f"--node {net.nodes[0].url}" in exc.value.hint
        # A job that does not exist, and an anonymous caller where the owner is needed.
        with pytest.raises(RemoteError) as missing:
            await anon.edil.status("0123456789abcdef")
        assert missing.value.cause == "no_job" and missing.value.status == 404
        with pytest.raises(NoCaller):
            await anon.edil.model(job.job_id)


async def test_a_key_owns_its_job_ckks(net: EdilNet) -> None:
    owner, stranger = NodeKey.generate(), NodeKey.generate()
    url = net.nodes[0].url

    def script() -> None:
        with Session(url, key=owner) as s:
            rounds: list[int] = []
            job = s.edil.train(
                example(rounds=2, privacy="ckks", deadline_s=60), on_round=lambda j, r: rounds.append(r.round)
            )
            assert job.phase == "done" and job.rounds_done == 2 and rounds == [1, 2]
            assert job.owner == owner.address.lower() and job.privacy == "ckks"
            assert job.test_accuracy is not None
            assert s.edil.status(job.job_id).model_dump() == job.model_dump()
            # The owner's key signs the model's GET.
            assert model_accuracy(s.edil.model(job.job_id)) == pytest.approx(job.test_accuracy, abs=ROUNDED)
        with Session(url, key=stranger) as other:
            with pytest.raises(RemoteError) as refused:
                other.edil.model(job.job_id)
            assert refused.value.status == 403 and refused.value.cause == "forbidden"
            with pytest.raises(RemoteError) as no_stop:
                other.edil.stop(job.job_id)
            assert no_stop.value.status == 403

    await asyncio.to_thread(script)


async def test_waiting_stopping_and_refusals(net: EdilNet) -> None:
    owner, stranger = NodeKey.generate(), NodeKey.generate()
    async with AsyncSession(net.nodes[0].url, key=owner) as s:
        # A bad spec is named by its field, before anything is sent (this URL answers nothing).
        async with AsyncSession("http://127.0.0.1:9", key=owner) as nowhere:
            with pytest.raises(SpecError) as bad:
                await nowhere.edil.submit(example(rounds=0))
            assert str(bad.value).startswith("rounds: ") and bad.value.path == "rounds"
            with pytest.raises(SpecError, match=r"^participants\.1\.data: "):
                spec = example()
                spec["participants"][1]["data"] = "example:digits?split=test"
                await nowhere.edil.submit(spec)
            with pytest.raises(SpecError, match="no such file"):
                await nowhere.edil.submit("missing.yaml")

        job = await s.edil.train(example(rounds=200, privacy="plain", deadline_s=60), wait=False)
        assert job.phase == "training" and job.rounds_done == 0
        with pytest.raises(NotFinished) as waited:
            await s.edil.wait(job.job_id, timeout=0)
        assert "still training" in str(waited.value) and waited.value.hint and "goes on" in waited.value.hint

        async with AsyncSession(net.nodes[0].url, key=stranger) as other:
            with pytest.raises(RemoteError) as refused:
                await other.edil.stop(job.job_id)
            assert refused.value.status == 403 and refused.value.cause == "forbidden"
        # The owner's key at another node: that node does not own the job.
        async with AsyncSession(net.nodes[2].url, key=owner) as elsewhere:
            await async_wait_for(lambda: _known(elsewhere, job.job_id), 20, "the job on node 2")
            with pytest.raises(NotOwnersNode):
                await elsewhere.edil.stop(job.job_id)

        stopped = await s.edil.stop(job.job_id)
        assert stopped.phase == "stopped"
        with pytest.raises(JobFailed) as ended:
            await s.edil.wait(job.job_id)
        assert ended.value.job.phase == "stopped" and "was stopped" in str(ended.value)


async def _known(s: AsyncSession, job_id: str) -> bool:
    return any(j.job_id == job_id for j in await s.edil.list())
