"""Shared test helpers: waiting on conditions (never sleeping for luck)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
