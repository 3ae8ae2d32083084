"""The embedded broker with dAuth at the door: only oracles and admitted nodes may connect.

A client logs in with username = its address, password = its signature over a fixed text naming the
network (`r1os.dauth.broker_password`), and client id `r1os-<address>`. The gate checks the signature
locally, then looks the address up in the admitted set, which it reads from the oracles' HTTP API
(`GET /v1/dauth/admitted`, every record's oracle signatures checked against the oracle addresses the
broker was started with). It re-reads that set when it is older than `refresh_s` or when an unknown
address knocks, at most once per `min_refresh_s`, so a node admitted a moment ago gets in on its next
reconnect attempt. A topic plugin applies the same set to every PUBLISH and every delivery, so a node
whose admission is revoked while connected can neither send nor receive anything from then on (the
set is re-read every `refresh_s` in the background).

Run it with `python -m r1os.dauth.broker --port P --network N --oracles A,B --oracle-urls U1,U2`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session
from pydantic import ValidationError

from r1os.dauth._models import SignedRecord
from r1os.transport.auth import check_broker_login
from r1os.transport.broker import EmbeddedBroker

log = logging.getLogger("r1os.dauth.broker")


class BrokerGate:
    """The `authorize(client_id, username, password)` callable for `EmbeddedBroker`."""

    def __init__(
        self,
        network: str,
        oracles: Iterable[str],
        oracle_urls: Iterable[str],
        *,
        refresh_s: float = 5.0,
        min_refresh_s: float = 1.0,
        oracle_urls_file: Path | None = None,
    ) -> None:
        self.network = network
        self.oracles = {a.lower() for a in oracles}
        self._oracle_urls = [u.rstrip("/") for u in oracle_urls]
        # Oracles that bind free ports are only known once they run: their URLs can come from a file
        # (one per line) that is re-read at every refresh.
        self.oracle_urls_file = oracle_urls_file
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self.admitted: dict[str, int] = {}  # lower-case address -> expires (unix s)
        self.refused = 0
        self.accepted = 0
        self.open = False  # the oracles say dAuth is off on this network: admit every valid login
        self._blocked: set[str] = set()
        self._fetched_at = 0.0
        self._tried_at = 0.0
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None

    @property
    def oracle_urls(self) -> list[str]:
        if self.oracle_urls_file is not None:
            try:
                lines = self.oracle_urls_file.read_text().split()
            except OSError:
                lines = []
            return [u.rstrip("/") for u in lines if u] + self._oracle_urls
        return self._oracle_urls

    def _known(self, address: str) -> bool:
        if self.open:
            return True
        return address in self.oracles or self.admitted.get(address, 0) > time.time()

    def allowed(self, username: str | None) -> bool:
        """May this (already logged-in) client still publish and receive? Cache only, no I/O."""
        if self.open:
            return True
        return bool(username) and self._known(str(username).lower())

    async def refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            with contextlib.suppress(Exception):
                await self.refresh()

    async def authorize(self, client_id: str, username: str | None, password: str | bytes | None) -> bool:
        try:
            address = check_broker_login(self.network, client_id, username, password).lower()
        except ValueError as exc:
            self.refused += 1
            log.warning("refused MQTT client %r: %s", client_id[:80], exc)
            return False
        if address not in self.oracles:
            stale = time.monotonic() - self._fetched_at > self.refresh_s
            if stale or not self._known(address):
                await self.refresh()
        if self._known(address):
            self.accepted += 1
            return True
        self.refused += 1
        log.warning("refused MQTT client %s: not admitted by dAuth (no valid admission record)", address)
        return False

    async def refresh(self) -> bool:
        """Re-read the admitted set from the first oracle that answers; False if none did."""
        async with self._lock:
            if time.monotonic() - self._tried_at < self.min_refresh_s:
                return False
            self._tried_at = time.monotonic()
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=3)
            for url in self.oracle_urls:
                try:
                    r = await self._http.get(f"{url}/v1/dauth/admitted")
                    data = r.json()
                    records = data["admitted"]
                    self.open = data.get("enabled") is False
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    log.debug("cannot read the admitted set from %s: %s", url, exc)
                    continue
                self.admitted = self._check(records)
                self._blocked = {a for a in self._blocked if not self._known(a)}  # log again next time
                self._fetched_at = time.monotonic()
                return True
            log.warning("cannot read the admitted set from any oracle (%s)", ", ".join(self.oracle_urls))
            return False

    def _check(self, records: object) -> dict[str, int]:
        out: dict[str, int] = {}
        if not isinstance(records, dict):
            return out
        for field, value in records.items():
            try:
                signed = SignedRecord.model_validate(value)
            except ValidationError:
                continue
            rec = signed.record
            if rec.address.lower() == str(field).lower() and rec.network == self.network:
                if signed.valid_signers(self.oracles):
                    out[rec.address.lower()] = rec.expires
        return out

    def note_blocked(self, username: str | None) -> bool:
        """True the first time traffic of `username` is stopped (so it is logged once)."""
        key = str(username).lower()
        if key in self._blocked:
            return False
        self._blocked.add(key)
        return True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


class DauthTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Refuses PUBLISH from, and delivery to, clients that are no longer admitted."""

    @dataclass
    class Config:
        gate: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        gate = self.config.gate
        if gate is None or session is None:
            return True
        ok = bool(gate.allowed(session.username))
        if not ok and gate.note_blocked(session.username):
            log.warning("stopped traffic of %s: no longer admitted by dAuth", session.username)
        return ok


class DauthBroker(EmbeddedBroker):
    """`EmbeddedBroker` with the dAuth gate at CONNECT and on every message."""

    def __init__(self, gate: BrokerGate, host: str = "127.0.0.1", port: int = 1883) -> None:
        super().__init__(host, port, authorize=gate.authorize)
        self.gate = gate
        self._refresher: asyncio.Task[None] | None = None

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["plugins"][f"{__name__}.DauthTopicPlugin"] = {"gate": self.gate}
        return cfg

    async def start(self) -> None:
        await super().start()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self.gate.refresh_loop(), name="dauth-broker-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await super().stop()
        await self.gate.close()


async def _serve(gate: BrokerGate, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with DauthBroker(gate, host, port) as broker:
        print(broker.url, flush=True)
        log.info("dAuth gate on: %d oracles, admitted set from %s", len(gate.oracles), gate.oracle_urls)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    from r1os.errors import TransportError

    parser = argparse.ArgumentParser(description="Run the r1os embedded MQTT broker with dAuth.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--network", default="devnet")
    parser.add_argument("--oracles", required=True, help="comma-separated oracle addresses")
    parser.add_argument(
        "--oracle-urls", required=True,
        help="comma-separated oracle HTTP URLs, or @FILE with one URL per line (re-read at every refresh)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per admitted-set read is noise

    def split(text: str) -> list[str]:
        return [x.strip() for x in text.split(",") if x.strip()]

    if args.oracle_urls.startswith("@"):
        gate = BrokerGate(args.network, split(args.oracles), [], oracle_urls_file=Path(args.oracle_urls[1:]))
    else:
        gate = BrokerGate(args.network, split(args.oracles), split(args.oracle_urls))

    try:
        asyncio.run(_serve(gate, args.host, args.port))
    except TransportError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
