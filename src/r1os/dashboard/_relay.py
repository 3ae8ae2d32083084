"""Availability per node per epoch, for the page, from the network's oracles.

A browser may read only its own node (the page's Content-Security-Policy says so, and other nodes send
no CORS headers), so the dashboard asks an oracle itself: this node when it is one, else an online
oracle from the network map, trying each in turn. Who counts as an oracle: the configured oracle set
(`R1OS_ORACLES`) when there is one, else peers whose heartbeat says so. The caller chooses nothing but a
number of epochs (at most `MAX_EPOCHS`): only the fixed paths `/v1/oracle/epochs` and
`/v1/oracle/epochs/<n>` are ever requested, each answer is read up to `MAX_ANSWER` bytes, and everything
taken from it is checked for its type.

Cost bound for anonymous callers: one refresh at a time (others wait for it and share its result), the
oracle's status at most once per `STATUS_TTL` seconds, and a closed epoch's record fetched once (it
never changes), keeping the last `MAX_EPOCHS` of them; a record the oracle did not give is not asked
for again until the status is refreshed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from r1os.dashboard._errors import NoOracle
from r1os.node import ServiceContext

log = logging.getLogger("r1os.dashboard")

MAX_EPOCHS = 48
DEFAULT_EPOCHS = 12
STATUS_TTL = 3.0
MAX_ANSWER = 8 * 1024 * 1024
TIMEOUT = 5.0
MAX_VALUE = 255


class BadAnswer(Exception):
    """An oracle's answer that is not what the route documents."""


@dataclass
class _Cached:
    oracle: tuple[str, str] | None = None  # (address, url) that answered last
    status: dict[str, Any] | None = None
    at: float = 0.0
    failure: NoOracle | None = None  # the last refresh's, answered again until STATUS_TTL has passed
    records: dict[int, dict[str, int]] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)  # records the oracle did not give, until the next status


async def read_json(http: httpx.AsyncClient, url: str, limit: int = MAX_ANSWER) -> Any:
    """GET `url` and parse its JSON, reading at most `limit` bytes (`BadAnswer` past it or on an error)."""
    async with http.stream("GET", url, timeout=TIMEOUT) as r:
        if r.status_code != 200:
            raise BadAnswer(f"HTTP {r.status_code}")
        parts: list[bytes] = []
        size = 0
        async for chunk in r.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise BadAnswer(f"answer over {limit} bytes")
            parts.append(chunk)
    try:
        return orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError as exc:
        raise BadAnswer(f"not JSON: {exc}") from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadAnswer(f"{what} is not an integer")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadAnswer(f"{what} is not a number")
    return float(value)


def check_status(data: Any) -> dict[str, Any]:
    """The parts of an oracle's `/v1/oracle/epochs` answer the page uses, type-checked."""
    if not isinstance(data, dict):
        raise BadAnswer("status is not an object")
    epochs = data.get("epochs")
    if not isinstance(epochs, list):
        raise BadAnswer("status has no epochs list")
    closed = sorted({_int(e.get("epoch") if isinstance(e, dict) else None, "epoch") for e in epochs})
    oracles = data.get("oracles")
    if not isinstance(oracles, list) or not all(isinstance(o, str) for o in oracles):
        raise BadAnswer("oracles is not a list of addresses")
    last = data.get("last_closed")
    failed = data.get("failed")
    return {
        "current_epoch": _int(data.get("current_epoch"), "current_epoch"),
        "epoch_seconds": _number(data.get("epoch_seconds"), "epoch_seconds"),
        "genesis_time": _number(data.get("genesis_time"), "genesis_time"),
        "last_closed": None if last is None else _int(last, "last_closed"),
        "quorum": _int(data.get("quorum"), "quorum"),
        "oracles": [o[:64] for o in oracles[:64]],
        "failed": len(failed) if isinstance(failed, dict) else 0,
        "closed": closed,
    }


def check_values(data: Any) -> dict[str, int]:
    """A record's agreed table (node -> availability 0..255), type-checked."""
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise BadAnswer("record has no values table")
    out: dict[str, int] = {}
    for node, value in values.items():
        v = _int(value, "availability")
        if not 0 <= v <= MAX_VALUE or len(node) > 64:
            raise BadAnswer("availability out of range")
        out[node] = v
    return out


class AvailabilityRelay:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._lock = asyncio.Lock()
        self._cache = _Cached()
        self.requests = 0  # requests made to oracles (a test checks the cache holds)

    def candidates(self) -> list[tuple[str, str]]:
        """(address, url) of the oracles to ask, in order: this node, the last one that answered, the
        others online."""
        out: list[tuple[str, str]] = []
        if self.ctx.config.oracle and self.ctx.url:
            out.append((self.ctx.address, self.ctx.url))
        known = {a.lower() for a in self.ctx.config.oracles}
        peers = []
        for peer in self.ctx.netmap.online():
            url = peer.heartbeat.url or ""
            is_oracle = peer.address.lower() in known if known else peer.heartbeat.oracle
            if is_oracle and url.startswith(("http://", "https://")):
                peers.append((peer.address, url.rstrip("/")))
        last = self._cache.oracle
        peers.sort(key=lambda p: (p != last, p[0]))
        out.extend(p for p in peers if p not in out)
        return out

    async def _refresh(self) -> None:
        cache = self._cache
        if time.monotonic() - cache.at < STATUS_TTL:
            if cache.failure is not None:  # a new exception: one raised again would grow its traceback
                raise NoOracle(str(cache.failure), status=cache.failure.status)
            if cache.status is not None:
                return
        problems: list[str] = []
        for address, url in self.candidates():
            try:
                self.requests += 1
                status = check_status(await read_json(self.ctx.http, f"{url}/v1/oracle/epochs"))
            except (httpx.HTTPError, BadAnswer) as exc:
                problems.append(f"{address}: {exc}")
                continue
            if (address, url) != cache.oracle:
                cache.records.clear()  # another oracle: its records are its own
            cache.oracle, cache.status, cache.at = (address, url), status, time.monotonic()
            cache.failure = None
            cache.missing.clear()
            return
        if problems:
            log.info("dashboard: no oracle answered: %s", "; ".join(problems))
            failure = NoOracle(f"no oracle answered ({len(problems)} asked)", status=502)
        else:
            failure = NoOracle("no oracle is known to this node yet")
        cache.status, cache.failure, cache.at = None, failure, time.monotonic()
        raise failure

    async def _record(self, epoch: int) -> dict[str, int] | None:
        cache = self._cache
        if epoch in cache.records:
            return cache.records[epoch]
        if epoch in cache.missing:
            return None
        assert cache.oracle is not None
        try:
            self.requests += 1
            values = check_values(
                await read_json(self.ctx.http, f"{cache.oracle[1]}/v1/oracle/epochs/{epoch}")
            )
        except (httpx.HTTPError, BadAnswer) as exc:
            log.info("dashboard: epoch %d from %s: %s", epoch, cache.oracle[0], exc)
            cache.missing.add(epoch)
            return None
        cache.records[epoch] = values
        for old in sorted(cache.records)[:-MAX_EPOCHS]:
            del cache.records[old]
        return values

    async def availability(self, epochs: int = DEFAULT_EPOCHS) -> dict[str, Any]:
        """The last `epochs` closed epochs' agreed tables, from one oracle."""
        epochs = max(1, min(epochs, MAX_EPOCHS))
        async with self._lock:
            await self._refresh()
            cache = self._cache
            assert cache.status is not None and cache.oracle is not None
            status = cache.status
            rows = []
            for epoch in status["closed"][-epochs:]:
                values = await self._record(epoch)
                if values is not None:
                    rows.append({"epoch": epoch, "values": values})
            oracle = {
                "address": cache.oracle[0],
                "url": cache.oracle[1],
                "self": cache.oracle[0] == self.ctx.address,
            }
        nodes = sorted({n for row in rows for n in row["values"]})
        summary = {k: v for k, v in status.items() if k != "closed"}
        return {"oracle": oracle, **summary, "epochs": rows, "nodes": nodes}
