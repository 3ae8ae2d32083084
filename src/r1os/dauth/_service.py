"""The dAuth service: on oracles it admits licensed nodes and revokes unlinked ones; on every node it
keeps the admitted set (from CSTORE) that gates all incoming messages.

Roles:
- **off** (no chain in this network: no deployment and no oracle URLs): everyone is admitted.
- **oracle**: reads the chain (deployment file), answers `POST /v1/dauth/admit`, writes admission records
  to CSTORE `net:dauth:admitted` and re-checks them every `epoch_seconds / 4` (`_oracle_side.py`).
- **edge**: asks an oracle for admission until it gets it (backoff, clear log lines), then follows the
  records in CSTORE; asks again when its own record is revoked or about to expire (`_edge_side.py`).

This module is the shell: it wires the pure `AdmissionLedger` to CSTORE, the network map and the
transport, runs the loops with `ctx.spawn`, and offers the interface other services and the routes
(`_api.py`) use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r1os.cstore import CStoreService
from r1os.dauth._api import install_routes
from r1os.dauth._edge_side import EdgeSide
from r1os.dauth._ledger import AdmissionLedger, ChangeCallback
from r1os.dauth._models import (
    ADMITTED_KEY,
    CONFIG_KEY,
    AdmitAnswer,
    AdmittedAnswer,
    DauthError,
    DauthStatus,
    NetworkConfig,
    SignedRecord,
    State,
)
from r1os.dauth._oracle_side import LicenceChain, OracleSide
from r1os.node import NodeConfig, Service, ServiceContext

log = logging.getLogger("r1os.dauth")

#: Longest wait between two passes that drop expired records.
EXPIRY_PASS_MAX_S = 5.0


class DauthService(Service):
    """Licensed admission (see docs/dauth.md for the interface other services use)."""

    name = "dauth"

    def __init__(
        self,
        *,
        network: str,
        oracle: bool = False,
        oracles: Iterable[str] = (),
        oracle_urls: Iterable[str] = (),
        deployment: Path | None = None,
        broker_url: str | None = None,
        check_interval: float | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 10.0,
        chain: LicenceChain | None = None,
    ) -> None:
        """`chain` stands in for the chain client an oracle builds from `deployment` (tests)."""
        self.network = network
        self.is_oracle = oracle
        self.oracle_urls = [u.rstrip("/") for u in oracle_urls]
        self.deployment_path = deployment
        self.broker_url = broker_url
        self.enabled = (deployment is not None) if oracle else bool(self.oracle_urls)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.ledger = AdmissionLedger(network, oracles, trust_bootstrap=not oracle)
        self._check_interval = check_interval
        self._chain = chain
        self._oracle: OracleSide | None = None
        self._edge: EdgeSide | None = None
        self._cstore: CStoreService | None = None
        self._ctx: ServiceContext | None = None
        self._address = ""

    @classmethod
    def from_config(cls, config: NodeConfig) -> DauthService:
        return cls(
            network=config.network,
            oracle=config.oracle,
            oracles=config.oracles,
            oracle_urls=config.oracle_urls,
            deployment=config.chain_deployment,
            broker_url=config.broker,
        )

    # -- the interface other services use ----------------------------------------------------

    def admits(self, sender: str, type: str = "") -> bool:
        """The node's message gate (`EnvelopeVerifier.admitted`): oracles and admitted nodes only."""
        if not self.enabled:
            return True
        a = sender.lower()
        return a in self.ledger.oracles or a == self._address or self.ledger.valid(a)

    def is_admitted(self, address: str) -> bool:
        if not self.enabled:
            return True
        return address.lower() in self.ledger.oracles or self.ledger.valid(address)

    def admitted(self) -> set[str]:
        """Lower-case addresses holding a valid admission record (oracles not included)."""
        return self.ledger.admitted()

    def admitted_records(self) -> dict[str, SignedRecord]:
        """The valid admission records by lower-case address."""
        return self.ledger.records()

    def oracles(self) -> set[str]:
        return set(self.ledger.oracles)

    def on_change(self, callback: ChangeCallback) -> None:
        """`callback(address_lower, admitted)` whenever a node is admitted or loses admission."""
        self.ledger.on_change(callback)

    def record_of(self, address: str) -> SignedRecord | None:
        return self.ledger.record_of(address)

    @property
    def network_config(self) -> NetworkConfig | None:
        return self.ledger.config

    @property
    def revocations(self) -> int:
        return self.ledger.revocations

    @property
    def state(self) -> State:
        if not self.enabled:
            return "off"
        if self.is_oracle:
            return "oracle"
        return self._edge.state if self._edge is not None else "waiting"

    @property
    def check_interval(self) -> float:
        if self._check_interval is not None:
            return self._check_interval
        epoch = self.ledger.config.epoch_seconds if self.ledger.config else 60
        return max(1.0, epoch / 4)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._address = ctx.key.address.lower()
        cstore = self._cstore = ctx.require(CStoreService)
        install_routes(ctx.router, self, ctx.auth)
        if not self.enabled:
            log.info("dauth: off (no chain configured): every sender is admitted")
            return
        self.ledger.on_change(self._changed)
        if self.is_oracle:
            self._oracle = self._oracle_side(ctx, cstore)
            await self._oracle.start()
        else:
            self._edge = EdgeSide(
                key=ctx.key,
                ledger=self.ledger,
                http=ctx.http,
                oracle_urls=self.oracle_urls,
                set_config=self._set_config,
                on_admitted=ctx.transport.retry_now,
                interval=lambda: self.check_interval,
                retry_initial=self.retry_initial,
                retry_max=self.retry_max,
            )
        self._sync_cstore_oracles()
        stored = await cstore.get(CONFIG_KEY)
        if stored is not None:
            self._on_config(stored)
        self.ledger.load(await cstore.hgetall(ADMITTED_KEY))
        cstore.watch("net:dauth:", self._on_cstore)  # no await since the load: no change missed
        if self._oracle is not None:
            ctx.spawn(self._recheck_loop(), "recheck")
        if self._edge is not None:
            ctx.spawn(self._edge.run(), "admission")
        ctx.spawn(self._expiry_loop(), "expiry")

    def _oracle_side(self, ctx: ServiceContext, cstore: CStoreService) -> OracleSide:
        from r1os.chain.client import ChainClient
        from r1os.chain.deployment import Deployment

        assert self.deployment_path is not None  # `enabled` on an oracle means a deployment
        dep = Deployment.load(self.deployment_path)
        config = NetworkConfig(
            network=self.network,
            chain_rpc=dep.rpc,
            chain_id=dep.chain_id,
            contracts=dict(dep.contracts),
            genesis_time=dep.genesis_time,
            epoch_seconds=dep.epoch_seconds,
            oracles=sorted(self.ledger.bootstrap_oracles),
            oracle_urls=self.oracle_urls or [ctx.url],
            broker_url=self.broker_url,
            issued_at=time.time(),
        )
        return OracleSide(
            key=ctx.key,
            ledger=self.ledger,
            store=cstore,
            chain=self._chain or ChainClient(dep, timeout=20),
            config=config,
            set_config=self._set_config,
        )

    # -- keeping the admitted set ------------------------------------------------------------

    def _on_cstore(self, key: str, field: str | None, value: Any) -> None:
        if key == ADMITTED_KEY and field is not None:
            self.ledger.put(field, value)
        elif key == CONFIG_KEY and value is not None:
            self._on_config(value)

    def _on_config(self, value: Any) -> None:
        """A `net:dauth:config` value: take it if an oracle we trust signed it."""
        try:
            config = self.ledger.stored_config(value)
        except ValueError as exc:
            log.warning("dauth: ignoring %s", exc)
            return
        self._set_config(config)

    def _set_config(self, config: NetworkConfig) -> None:
        left = self.ledger.set_config(config)
        self._sync_cstore_oracles()
        if self._ctx is not None:
            for addr in left:
                self._ctx.netmap.forget(addr)

    def _sync_cstore_oracles(self) -> None:
        # `net:` keys are writable by oracles only; CSTORE learns the current set from here.
        if self._cstore is not None:
            self._cstore.oracles = frozenset(self._cstore.oracles | self.ledger.oracles)

    def _changed(self, addr: str, admitted: bool) -> None:
        if not admitted and self._ctx is not None:
            self._ctx.netmap.forget(addr)

    async def _expiry_loop(self) -> None:
        """Records that run out (their oracles stopped renewing) stop counting; say so once."""
        while True:
            await asyncio.sleep(min(self.check_interval, EXPIRY_PASS_MAX_S))
            self.ledger.expire()

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.recheck()
            except Exception:
                log.exception("dauth: re-check failed; trying again next round")

    # -- what the routes offer ----------------------------------------------------------------

    async def admit(self, data: Any) -> AdmitAnswer:
        """Answer one admission request (the body of `POST /v1/dauth/admit`); `DauthError` if refused."""
        if self._oracle is None:
            raise DauthError(
                "not_oracle", f"{self._ctx.key.address if self._ctx else 'this node'} is not a dAuth oracle",
                hint="send admission requests to an oracle's URL", status=404,
            )  # fmt: skip
        try:
            return await self._oracle.admit(data)
        except DauthError as exc:
            log.warning("dauth: refused an admission request (%s): %s", exc.cause, exc)
            raise

    async def recheck(self) -> dict[str, int]:
        """Re-read the oracle registry and every admitted node's licence; revoke or renew records."""
        if self._oracle is None:
            raise DauthError("not_oracle", "only an oracle with dAuth on re-checks records", status=404)
        return await self._oracle.recheck()

    def retry(self) -> bool:
        """Ask for admission now instead of at the next backoff step (e.g. right after linking)."""
        if self._edge is None:
            return False
        self._edge.retry()
        return True

    def admitted_answer(self) -> AdmittedAnswer:
        records = self.admitted_records()
        return AdmittedAnswer(
            enabled=self.enabled, oracles=sorted(self.ledger.oracles), admitted=records, count=len(records)
        )

    def status(self) -> DauthStatus:
        edge = self._edge
        return DauthStatus(
            enabled=self.enabled,
            address=self._ctx.key.address if self._ctx is not None else "",
            state=self.state,
            oracle=self.is_oracle,
            admitted=self.is_admitted(self._address),
            attempts=edge.attempts if edge else 0,
            admitted_at=edge.admitted_at if edge else None,
            last_refusal=edge.last_refusal if edge else None,
            record=self.ledger.record_of(self._address),
            oracles=sorted(self.ledger.oracles),
            oracle_urls=self.oracle_urls,
            admitted_count=len(self.admitted()),
            network_config=self.ledger.config,
        )
