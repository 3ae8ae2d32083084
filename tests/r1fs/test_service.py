"""R1FS on the node's service seam: its background work ends with the node, clean-up runs, a failed
fetch is its caller's error (not a failed node task), and CSTORE is reached through `KeyValue`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from r1os.r1fs import BlockNotFound, R1fsService, R1fsSettings, import_bytes, parse_cid
from r1os.r1fs._local import LocalServer
from r1os.r1fs._providers import PIN, PROV, Watcher
from tests.conftest import lone_context
from tests.r1fs._content import mod251
from tests.r1fs.conftest import stop


class MemoryKv:
    """The part of CSTORE R1FS uses, in a dict; watchers are called on every change."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, Any]] = {}
        self.watchers: list[tuple[str, Watcher]] = []

    def _changed(self, key: str, field: str, value: Any) -> None:
        for prefix, callback in self.watchers:
            if key.startswith(prefix):
                callback(key, field, value)

    async def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None:
        self.hashes.setdefault(key, {})[field] = value
        self._changed(key, field, value)

    async def hgetall(self, key: str) -> dict[str, Any]:
        return dict(self.hashes.get(key, {}))

    async def hdel(self, key: str, field: str) -> bool:
        existed = self.hashes.get(key, {}).pop(field, None) is not None
        self._changed(key, field, None)
        return existed

    async def keys(self, prefix: str = "") -> list[str]:
        return [k for k, v in self.hashes.items() if k.startswith(prefix) and v]

    def watch(self, prefix: str, callback: Watcher) -> None:
        self.watchers.append((prefix, callback))

    def unwatch(self, callback: Watcher) -> None:
        self.watchers = [(p, cb) for p, cb in self.watchers if cb != callback]


def r1fs_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("r1fs:")}


async def test_stopping_ends_its_tasks_and_closes_store_and_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = lone_context("r1fs", tmp_path)
    svc = R1fsService(R1fsSettings())
    await svc.start(ctx)
    assert svc.local is not None
    name = svc.local.name
    assert {t.get_name() for t in r1fs_tasks()} >= {"r1fs:gc", "r1fs:local"}
    missing = import_bytes(b"nobody holds this").cid
    with caplog.at_level(logging.INFO):
        with pytest.raises(BlockNotFound, match="no online node"):
            await svc.fetcher.fetch(missing)
        assert svc.fetcher.running == 0
        await stop(svc, ctx)
    # the failed fetch was answered to its caller, not logged as a failed node task
    assert not [r for r in caplog.records if r.name == "r1os.node" and r.levelno >= logging.ERROR]
    assert not r1fs_tasks()
    assert svc.store.closed
    again = LocalServer(svc, name, ctx.spawn)  # the socket's name is free once the service stopped
    assert again.open()
    again.close()


async def test_cstore_records_and_pin_watch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kv = MemoryKv()
    ctx = lone_context("r1fs", tmp_path)
    svc = R1fsService(R1fsSettings(), kv=kv)
    await svc.start(ctx)
    assert svc.replication is not None and len(kv.watchers) == 1
    data = mod251(300_000)

    async def body() -> Any:
        yield data

    result = await svc.add_stream(body(), replicas=3)
    cid = str(result.cid)
    assert kv.hashes[PROV + cid][svc.me]["size"] == len(data)
    assert kv.hashes[PIN + cid][svc.me]["replicas"] == 3
    assert svc.replication.wake.is_set()  # the pin request (seen through the watch) wakes the loop
    stat = await svc.stat(cid)
    assert stat.replicas_wanted == 3 and stat.replicas_live == 1
    assert stat.providers is not None and stat.providers[0].address == svc.me
    svc.replication.wake.clear()
    await kv.hdel(PIN + cid, "0xsomeone")
    assert svc.replication.wake.is_set()
    assert (await svc.unpin(cid)).unpinned and PIN + cid not in await kv.keys(PIN)
    assert parse_cid(cid) == result.cid
    assert svc.replication.wake.is_set()
    with caplog.at_level(logging.WARNING, logger="r1os.node"):
        await stop(svc, ctx)  # the reconcile loop is woken right now: its cancellation must not be lost
    assert "did not stop" not in caplog.text and not r1fs_tasks()
    assert kv.watchers == []  # the watch ends with the service
