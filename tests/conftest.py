"""Shared test helpers: waiting on conditions (never sleeping for luck)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from r1os.identity import NodeKey
from r1os.node import NetworkMap, NodeConfig, ServiceContext
from r1os.node._auth import ApiAuth
from r1os.transport import MemoryHub, MemoryTransport

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float, what: str = "condition", interval: float = 0.05
) -> T:
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing we wait on may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last error: {last_exc})")


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]], timeout: float, what: str = "condition", interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = await predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last error: {last_exc})")


async def _nothing(*_args: Any) -> None:
    return None


def lone_context(name: str, data_dir: Path, key: NodeKey | None = None) -> ServiceContext:
    """A `ServiceContext` with no broker, no peers and no other services: one service on its own,
    for tests of what it does with local data (its routes go to `ctx.router`). Its transport is an
    in-memory one that nobody else listens to; the test closes `ctx.http` (or lets it be collected)."""
    key = key or NodeKey.generate()
    data_dir.mkdir(parents=True, exist_ok=True)
    auth = ApiAuth("test", key.address, data_dir)
    auth.load_token()
    return ServiceContext(
        name=name,
        key=key,
        network="test",
        transport=MemoryTransport(MemoryHub()),
        router=APIRouter(),
        data_dir=data_dir,
        metrics=CollectorRegistry(),
        netmap=NetworkMap(),
        config=NodeConfig(network="test", home=data_dir),
        http=httpx.AsyncClient(timeout=10.0),
        auth=auth,
        _publish=_nothing,
        _send=_nothing,
        _on=lambda _t, _h: None,
        _services=[],
        url="http://test",
    )
