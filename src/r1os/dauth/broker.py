"""The embedded broker with dAuth at the door: only oracles and admitted nodes may connect.

A client logs in with username = its address, password = its signature over a fixed text naming the
network (`r1os.dauth.broker_password`), and client id `r1os-<address>`. The gate checks the signature
locally, then looks the address up in the admitted set, which it reads from the oracles' HTTP API
(`GET /v1/dauth/admitted`, every record's oracle signatures checked against the oracle addresses the
broker was started with). It re-reads that set when it is older than `refresh_s` or when an unknown
address knocks, at most once per `min_refresh_s`, so a node admitted a moment ago gets in on its next
reconnect attempt. Connections already open are not cut on revocation; the nodes' own message check
drops the revoked node's traffic.

Run it with `python -m r1os.dauth.broker --port P --network N --oracles A,B --oracle-urls U1,U2`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Iterable

import httpx
from pydantic import ValidationError

from r1os.dauth._models import SignedRecord
from r1os.dauth._tokens import check_broker_login

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
    ) -> None:
        self.network = network
        self.oracles = {a.lower() for a in oracles}
        self.oracle_urls = [u.rstrip("/") for u in oracle_urls]
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self.admitted: dict[str, int] = {}  # lower-case address -> expires (unix s)
        self.refused = 0
        self.accepted = 0
        self._fetched_at = 0.0
        self._tried_at = 0.0
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None

    def _known(self, address: str) -> bool:
        return address in self.oracles or self.admitted.get(address, 0) > time.time()

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
                    records = r.json()["admitted"]
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    log.debug("cannot read the admitted set from %s: %s", url, exc)
                    continue
                self.admitted = self._check(records)
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

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def main(argv: list[str] | None = None) -> None:
    from r1os.errors import TransportError
    from r1os.transport.broker import EmbeddedBroker, serve

    parser = argparse.ArgumentParser(description="Run the r1os embedded MQTT broker with dAuth.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--network", default="devnet")
    parser.add_argument("--oracles", required=True, help="comma-separated oracle addresses")
    parser.add_argument("--oracle-urls", required=True, help="comma-separated oracle HTTP URLs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per admitted-set read is noise

    def split(text: str) -> list[str]:
        return [x.strip() for x in text.split(",") if x.strip()]

    gate = BrokerGate(args.network, split(args.oracles), split(args.oracle_urls))

    def ready(broker: EmbeddedBroker) -> None:
        print(broker.url, flush=True)
        log.info("dAuth gate on: %d oracles, admitted set from %s", len(gate.oracles), gate.oracle_urls)

    try:
        asyncio.run(serve(args.host, args.port, authorize=gate.authorize, on_ready=ready))
    except TransportError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
