"""The dAuth service: on oracles it admits licensed nodes and revokes unlinked ones; on every node it
keeps the admitted set (from CSTORE) that gates all incoming messages.

Roles:
- **off** (no chain in this network: no deployment and no oracle URLs): everyone is admitted.
- **oracle**: reads the chain (deployment file), answers `POST /v1/dauth/admit`, writes admission records
  to CSTORE `net:dauth:admitted` and re-checks them every `epoch_seconds / 4`.
- **edge**: asks an oracle for admission until it gets it (backoff, clear log lines), then follows the
  records in CSTORE; asks again when its own record is revoked or about to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from r1os import __version__
from r1os.dauth._models import (
    MAX_REQUEST_SKEW_S,
    AdmissionRecord,
    DauthError,
    Licence,
    NetworkConfig,
    SignedRecord,
    make_request,
    parse_request,
    sign_obj,
    signer_of,
)
from r1os.errors import ChainError, R1osError
from r1os.identity import normalize_address
from r1os.node import Service, ServiceContext, cancel_tasks

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient
    from r1os.cstore import CStoreService

log = logging.getLogger("r1os.dauth")

ADMITTED_KEY = "net:dauth:admitted"
CONFIG_KEY = "net:dauth:config"

State = Literal["off", "oracle", "waiting", "admitted"]
ChangeCallback = Callable[[str, bool], None]


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
    ) -> None:
        self.network = network
        self.is_oracle = oracle
        self.bootstrap_oracles = {a.lower() for a in oracles}
        self.oracle_urls = [u.rstrip("/") for u in oracle_urls]
        self.deployment_path = deployment
        self.broker_url = broker_url
        self.enabled = (deployment is not None) if oracle else bool(self.oracle_urls)
        self._check_interval = check_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.network_config: NetworkConfig | None = None
        self.state: State = "off" if not self.enabled else ("oracle" if oracle else "waiting")
        self.last_refusal: dict[str, Any] | None = None
        self.attempts = 0
        self.admitted_at: float | None = None
        self.revocations = 0
        self._oracles: set[str] = set(self.bootstrap_oracles)
        self._records: dict[str, SignedRecord] = {}
        self._callbacks: list[ChangeCallback] = []
        self._nonces: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self._chain: ChainClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._address = ""

    # -- the interface other services use ----------------------------------------------------

    def admits(self, sender: str, type: str = "") -> bool:
        """The node's message gate (`EnvelopeVerifier.admitted`): oracles and admitted nodes only."""
        if not self.enabled:
            return True
        a = sender.lower()
        return a in self._oracles or a == self._address or self._valid(a)

    def is_admitted(self, address: str) -> bool:
        if not self.enabled:
            return True
        a = address.lower()
        return a in self._oracles or self._valid(a)

    def admitted(self) -> set[str]:
        """Lower-case addresses holding a valid admission record (oracles not included)."""
        now = time.time()
        return {a for a, r in self._records.items() if r.record.expires > now}

    def oracles(self) -> set[str]:
        return set(self._oracles)

    def on_change(self, callback: ChangeCallback) -> None:
        """`callback(address_lower, admitted)` whenever a node is admitted or loses admission."""
        self._callbacks.append(callback)

    def record_of(self, address: str) -> SignedRecord | None:
        return self._records.get(address.lower())

    @property
    def check_interval(self) -> float:
        if self._check_interval is not None:
            return self._check_interval
        epoch = self.network_config.epoch_seconds if self.network_config else 60
        return max(1.0, epoch / 4)

    def _valid(self, address_lower: str) -> bool:
        rec = self._records.get(address_lower)
        return rec is not None and rec.record.expires > time.time()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._address = ctx.key.address.lower()
        self.cstore: CStoreService = ctx.service("cstore")  # type: ignore[assignment]
        self._http = httpx.AsyncClient(timeout=10)
        _routes(ctx.router, self)
        if not self.enabled:
            log.info("dauth: off (no chain configured): every sender is admitted")
            return
        if self.is_oracle:
            await self._start_oracle()
        self._sync_cstore_oracles()
        stored = await self.cstore.get(CONFIG_KEY)
        if stored is not None:
            self._on_config(stored)
        self._reload()
        self.cstore.watch("net:dauth:", self._on_cstore)
        if self.is_oracle:
            self._tasks.append(asyncio.create_task(self._recheck_loop(), name="dauth-recheck"))
        else:
            self._tasks.append(asyncio.create_task(self._admission_loop(), name="dauth-admission"))
        self._tasks.append(asyncio.create_task(self._expiry_loop(), name="dauth-expiry"))

    async def stop(self) -> None:
        await cancel_tasks(self._tasks)
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()

    # -- the admitted set --------------------------------------------------------------------

    def _on_cstore(self, key: str, field: str | None, value: Any) -> None:
        if key == ADMITTED_KEY and field is not None:
            self._ingest(field, value)
        elif key == CONFIG_KEY and value is not None:
            self._on_config(value)

    def _ingest(self, field: str, value: Any, *, quiet: bool = False) -> None:
        """Take one stored record (None = deleted) into the admitted set if it checks out."""
        addr = field.lower()
        was = self._valid(addr)
        if value is None:
            self._records.pop(addr, None)
        else:
            try:
                signed = SignedRecord.model_validate(value)
                if signed.record.address.lower() != addr or signed.record.network != self.network:
                    raise ValueError("record is for another address or network")
                if not signed.valid_signers(self._oracles):
                    raise ValueError("no valid oracle signature")
            except (ValidationError, ValueError) as exc:
                if not quiet and self._oracles:
                    log.warning("dauth: ignoring admission record for %s: %s", field[:64], exc)
                self._records.pop(addr, None)
            else:
                self._records[addr] = signed
        now = self._valid(addr)
        if was != now:
            self._changed(addr, now)

    def _changed(self, addr: str, admitted: bool) -> None:
        if admitted:
            log.info("dauth: %s admitted", addr)
        else:
            log.info("dauth: %s no longer admitted", addr)
            self.revocations += 1
            self._forget_peer(addr)
        if addr == self._address and not self.is_oracle:
            if admitted:
                self.state, self.admitted_at = "admitted", time.time()
            else:
                self.state, self.admitted_at = "waiting", None
                log.warning("dauth: this node's admission was revoked or expired; asking an oracle again")
            self._kick.set()
        for cb in list(self._callbacks):
            try:
                cb(addr, admitted)
            except Exception:
                log.exception("dauth change callback failed")

    def _forget_peer(self, addr: str) -> None:
        forget = getattr(self.ctx.netmap, "forget", None)
        if callable(forget):
            forget(addr)

    def _on_config(self, value: Any) -> None:
        """A `net:dauth:config` value: take it if an oracle we trust signed it."""
        try:
            config = NetworkConfig.model_validate(value["config"])
            sigs = value["signatures"]
            body = config.model_dump()
            signers = {
                who.lower()
                for who, sig in sigs.items()
                if (s := signer_of(body, sig)) and s.lower() == who.lower()
            }
        except (KeyError, TypeError, ValidationError) as exc:
            log.warning("dauth: ignoring malformed network config: %s", exc)
            return
        if not signers & self._oracles or config.network != self.network:
            log.warning("dauth: ignoring a network config not signed by a known oracle")
            return
        self._set_config(config)

    def _set_config(self, config: NetworkConfig) -> None:
        old = self._oracles
        self.network_config = config
        self._oracles = {a.lower() for a in config.oracles} | (
            self.bootstrap_oracles if not self.is_oracle else set()
        )
        self._sync_cstore_oracles()
        if self._oracles != old:
            log.info("dauth: oracle set is now %s", sorted(self._oracles))
            # Records must be signed by a current oracle: check all stored ones again (including
            # those refused before we knew the oracle that signed them).
            self._reload()
            for addr in old - self._oracles:
                if not self._valid(addr):
                    self._forget_peer(addr)

    def _reload(self) -> None:
        cstore = getattr(self, "cstore", None)
        if cstore is None:
            return
        stored = cstore.state.hgetall(ADMITTED_KEY, time.time_ns() // 1_000_000)
        stored = {f.lower(): v for f, v in stored.items()}
        for addr in set(self._records) | set(stored):
            value = stored.get(addr)
            if value is None and addr in self._records:  # got over HTTP, not replicated here yet
                value = self._records[addr].model_dump()
            self._ingest(addr, value, quiet=True)

    def _sync_cstore_oracles(self) -> None:
        # `net:` keys are writable by oracles only; CSTORE learns the current set from here.
        cstore = getattr(self, "cstore", None)
        if cstore is not None:
            cstore.oracles = frozenset(cstore.oracles | self._oracles)

    async def _expiry_loop(self) -> None:
        """Records that run out (their oracles stopped renewing) stop counting; say so once."""
        while True:
            await asyncio.sleep(min(self.check_interval, 5.0))
            now = time.time()
            for addr, rec in list(self._records.items()):
                if rec.record.expires <= now:
                    del self._records[addr]
                    self._changed(addr, False)

    # -- oracle side -------------------------------------------------------------------------

    async def _start_oracle(self) -> None:
        from r1os.chain.client import ChainClient
        from r1os.chain.deployment import Deployment

        assert self.deployment_path is not None
        dep = Deployment.load(self.deployment_path)
        self._chain = ChainClient(dep, timeout=20)
        self.network_config = NetworkConfig(
            network=self.network,
            chain_rpc=dep.rpc,
            chain_id=dep.chain_id,
            contracts=dict(dep.contracts),
            genesis_time=dep.genesis_time,
            epoch_seconds=dep.epoch_seconds,
            oracles=sorted(self.bootstrap_oracles),
            oracle_urls=self.oracle_urls or [self.ctx.url],
            broker_url=self.broker_url,
            issued_at=time.time(),
        )
        self._oracles = set(self.bootstrap_oracles)
        try:
            await self._refresh_oracles()
        except ChainError as exc:
            log.warning("dauth: cannot read the oracle registry yet (%s); using the configured oracles", exc)
        if self._address not in self._oracles:
            log.warning(
                "dauth: this node (%s) is not in the on-chain oracle registry; "
                "other nodes will drop its messages",
                self.ctx.key.address,
            )

    async def _refresh_oracles(self) -> None:
        """Read the oracle registry; publish a new signed config when it changed."""
        assert self._chain is not None and self.network_config is not None
        chain_oracles = sorted(normalize_address(a) for a in await self._chain.oracles())
        config = self.network_config.model_copy(update={"oracles": chain_oracles})
        self._set_config(config)
        stored = await self.cstore.get(CONFIG_KEY)
        current = _config_of(stored)
        if current is not None and isinstance(stored, dict) and current.same_as(config):
            # Same content: add our signature to what the other oracles signed (no rewrite war).
            body = current.model_dump()
            sigs = {
                w.lower(): sig
                for w, sig in stored["signatures"].items()
                if (s := signer_of(body, sig)) and s.lower() == w.lower()
            }
            self.network_config = current
            if self._address in sigs:
                return
            sigs[self._address] = sign_obj(self.ctx.key, body)
            await self.cstore.set(CONFIG_KEY, {"config": body, "signatures": sigs})
            return
        fresh = config.model_copy(update={"issued_at": time.time()})
        self.network_config = fresh
        body = fresh.model_dump()
        await self.cstore.set(
            CONFIG_KEY, {"config": body, "signatures": {self._address: sign_obj(self.ctx.key, body)}}
        )

    def signed_config(self) -> tuple[dict[str, Any], str]:
        assert self.network_config is not None
        body = self.network_config.model_dump()
        return body, sign_obj(self.ctx.key, body)

    async def admit(self, data: Any) -> dict[str, Any]:
        """Answer one admission request (the body of `POST /v1/dauth/admit`); `DauthError` if refused."""
        if not (self.is_oracle and self.enabled):
            raise DauthError(
                "not_oracle", f"{self.ctx.key.address} is not a dAuth oracle",
                hint="send admission requests to an oracle's URL", status=404,
            )  # fmt: skip
        req = parse_request(data, self.network)
        self._check_nonce(req.address, req.nonce, req.ts)
        assert self._chain is not None
        try:
            active = await self._chain.is_node_active(req.address)
            licence = await self._chain.licence_of(req.address) if active else None
        except ChainError as exc:
            raise DauthError(
                "chain_unavailable", f"the oracle cannot read the chain: {exc}", status=503
            ) from None
        if not active or licence is None:
            chain_id = self.network_config.chain_id if self.network_config else "?"
            raise DauthError(
                "not_licensed",
                f"no licence is linked to {req.address} on chain {chain_id}",
                hint=f"buy a licence and link it to this node: r1os licence buy --link {req.address}",
            )
        signed = await self._confirm(req.address, Licence(type=licence.type, token_id=licence.token_id))
        body, sig = self.signed_config()
        log.info(
            "dauth: admitted %s (%s #%d, version %s)",
            req.address,
            licence.type,
            licence.token_id,
            req.version or "?",
        )
        return {
            "config": body,
            "config_signature": sig,
            "oracle": self.ctx.key.address,
            **signed.model_dump(),
        }

    def _check_nonce(self, address: str, nonce: str, ts: float) -> None:
        now = time.time()
        while self._nonces:
            (_, oldest) = next(iter(self._nonces.items()))
            if oldest >= now - 2 * MAX_REQUEST_SKEW_S and len(self._nonces) < 100_000:
                break
            self._nonces.popitem(last=False)
        key = (address.lower(), nonce)
        if key in self._nonces:
            raise DauthError(
                "replayed", "this admission request was already used (same nonce)",
                hint="sign a new request with a fresh nonce", status=409,
            )  # fmt: skip
        self._nonces[key] = now

    def _record_for(self, address: str, licence: Licence) -> AdmissionRecord:
        assert self.network_config is not None
        epoch = self.network_config.epoch_at()
        return AdmissionRecord(
            network=self.network,
            address=normalize_address(address),
            licence=licence,
            epoch=epoch,
            expires=self.network_config.epoch_end(epoch + 1),
        )

    def _renewed(self, record: AdmissionRecord, stored: Any) -> SignedRecord | None:
        """The value to write for `record`: the stored one plus our signature; None if nothing to do."""
        sigs: dict[str, str] = {}
        with contextlib.suppress(ValidationError, TypeError):
            old = SignedRecord.model_validate(stored)
            if old.record == record:
                sigs = {w: old.signatures[w] for w in old.valid_signers(self._oracles)}
        if self._address in sigs:
            return None
        sigs[self._address] = sign_obj(self.ctx.key, record.body())
        return SignedRecord(record=record, signatures=sigs)

    async def _confirm(self, address: str, licence: Licence) -> SignedRecord:
        record = self._record_for(address, licence)
        field = address.lower()
        stored = await self.cstore.hget(ADMITTED_KEY, field)
        new = self._renewed(record, stored)
        if new is None:
            return SignedRecord.model_validate(stored)
        await self.cstore.hset(ADMITTED_KEY, field, new.model_dump(), ttl=self._ttl(record))
        self._ingest(field, new.model_dump())
        return new

    @staticmethod
    def _ttl(record: AdmissionRecord) -> float:
        return max(1.0, record.expires - time.time() + 60)

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.recheck()
            except Exception:
                log.exception("dauth: re-check failed; trying again next round")

    async def recheck(self) -> dict[str, int]:
        """Re-read the oracle registry and every admitted node's licence; revoke or renew records."""
        from r1os.cstore import Op

        assert self._chain is not None
        await self._refresh_oracles()
        stored = await self.cstore.hgetall(ADMITTED_KEY)
        sem = asyncio.Semaphore(16)

        async def check(field: str) -> tuple[str, bool | None]:
            async with sem:
                try:
                    return field, await self._chain.is_node_active(field)  # type: ignore[union-attr]
                except ChainError as exc:
                    log.warning("dauth: cannot re-check %s: %s", field, exc)
                    return field, None

        ops: list[Op] = []
        revoked = renewed = 0
        epoch = self.network_config.epoch_at() if self.network_config else 0
        for field, active in await asyncio.gather(*(check(f) for f in stored)):
            if active is False:
                ops.append(Op("hdel", ADMITTED_KEY, field))
                revoked += 1
                log.warning("dauth: revoking %s: no licence is linked to it any more", field)
                continue
            if active is None:
                continue
            value = stored[field]
            try:
                old = SignedRecord.model_validate(value)
            except ValidationError:
                old = None
            licence = old.record.licence if old is not None else None
            if old is None or old.record.epoch < epoch:
                lic = await self._chain.licence_of(field)
                if lic is None:
                    continue
                licence = Licence(type=lic.type, token_id=lic.token_id)
            assert licence is not None
            record = (
                self._record_for(field, licence) if (old is None or old.record.epoch < epoch) else old.record
            )
            new = self._renewed(record, value)
            if new is not None:
                expires = int((time.time() + self._ttl(record)) * 1000)
                ops.append(Op("hset", ADMITTED_KEY, field, new.model_dump(), expires))
                renewed += 1
        if ops:
            await self.cstore.write(ops)
        return {"checked": len(stored), "revoked": revoked, "renewed": renewed}

    # -- edge side ---------------------------------------------------------------------------

    async def _admission_loop(self) -> None:
        delay = self.retry_initial
        while True:
            if self._valid(self._address):
                self.state = "admitted"
                rec = self._records[self._address].record
                # Oracles renew the record once per epoch; ask ourselves if no renewal arrived in time.
                margin = self.check_interval
                wait = max(1.0, rec.expires - time.time() - margin)
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), wait)
                if (
                    self._valid(self._address)
                    and self._records[self._address].record.expires - time.time() > margin
                ):
                    continue
            self.state = "waiting"
            self._kick.clear()  # a retry asked for from now on wakes the wait below
            try:
                await self.request_admission()
                delay = self.retry_initial
                continue
            except DauthError as exc:
                self.last_refusal = {
                    "cause": exc.cause,
                    "detail": str(exc),
                    "hint": exc.hint,
                    "at": time.time(),
                }
                log.warning(
                    "dauth: not admitted (%s): %s%s; retrying in %.0f s",
                    exc.cause, exc, f" (hint: {exc.hint})" if exc.hint else "", delay,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - keep asking; say why
                self.last_refusal = {"cause": "error", "detail": str(exc), "hint": None, "at": time.time()}
                log.warning("dauth: admission request failed: %s; retrying in %.0f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), delay)
            delay = min(delay * 2, self.retry_max)

    def retry(self) -> bool:
        """Ask for admission now instead of at the next backoff step (e.g. right after linking)."""
        if not self.enabled or self.is_oracle:
            return False
        self._kick.set()
        return True

    async def request_admission(self) -> dict[str, Any]:
        """Ask the oracles (in random order) until one admits us; raise the last refusal otherwise."""
        assert self._http is not None
        self.attempts += 1
        urls = list(self.oracle_urls)
        random.shuffle(urls)
        last: Exception = DauthError("unreachable", "no oracle URL configured", status=503)
        refusal: DauthError | None = None
        for url in urls:
            body = make_request(self.ctx.key, self.network, __version__)
            try:
                r = await self._http.post(f"{url}/v1/dauth/admit", json=body)
            except httpx.HTTPError as exc:
                last = DauthError(
                    "unreachable", f"oracle {url} unreachable: {type(exc).__name__}", status=503
                )
                continue
            try:
                data: dict[str, Any] = r.json()
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except ValueError:
                last = DauthError(
                    "malformed", f"oracle {url} answered {r.status_code} without JSON", status=502
                )
                continue
            if r.status_code != 200:
                err = DauthError(
                    str(data.get("error", "refused")), str(data.get("detail", r.text[:200])),
                    hint=data.get("hint"), status=r.status_code,
                )  # fmt: skip
                # A licence refusal is the answer; a broken oracle is not: try the next one.
                if err.cause in ("not_licensed", "bad_signature", "wrong_network", "stale"):
                    refusal = refusal or err
                last = err
                continue
            try:
                await self._accept(url, data)
            except (DauthError, ValidationError, KeyError, TypeError) as exc:
                last = (
                    exc
                    if isinstance(exc, DauthError)
                    else DauthError("malformed", f"bad answer from {url}: {exc}")
                )
                log.warning("dauth: %s", last)
                continue
            self.last_refusal = None
            return data
        raise refusal or last

    async def _accept(self, url: str, data: dict[str, Any]) -> None:
        """Check an oracle's answer and take the config, the oracle set and the records it gives."""
        config = NetworkConfig.model_validate(data["config"])
        signer = signer_of(config.model_dump(), data["config_signature"])
        trusted = self.bootstrap_oracles or {a.lower() for a in config.oracles}
        if signer is None or signer.lower() not in trusted:
            raise DauthError(
                "bad_signature", f"the network config from {url} is not signed by a known oracle"
            )
        if config.network != self.network:
            raise DauthError("wrong_network", f"oracle {url} serves network {config.network!r}")
        self._set_config(config)
        self._ingest(self._address, {"record": data["record"], "signatures": data["signatures"]})
        if not self._valid(self._address):
            raise DauthError("malformed", f"the admission record from {url} does not check out")
        # The others' records come with CSTORE replication; fetch them now so peers count at once.
        assert self._http is not None
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, AttributeError):
            r = await self._http.get(f"{url}/v1/dauth/admitted")
            for field, value in r.json()["admitted"].items():
                if field.lower() != self._address:
                    self._ingest(field, value)
        log.info("dauth: admitted by %s (%s)", data.get("oracle"), url)
        # The broker refused us until now: reconnect at once instead of waiting out the backoff.
        retry_now = getattr(self.ctx.transport, "retry_now", None)
        if callable(retry_now):
            retry_now()

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        rec = self._records.get(self._address)
        return {
            "enabled": self.enabled,
            "address": self.ctx.key.address,
            "state": self.state,
            "oracle": self.is_oracle,
            "admitted": self.is_admitted(self._address),
            "attempts": self.attempts,
            "admitted_at": self.admitted_at,
            "last_refusal": self.last_refusal,
            "record": rec.model_dump() if rec else None,
            "oracles": sorted(self._oracles),
            "oracle_urls": self.oracle_urls,
            "admitted_count": len(self.admitted()),
            "network_config": self.network_config.model_dump() if self.network_config else None,
        }


def _config_of(stored: Any) -> NetworkConfig | None:
    try:
        return NetworkConfig.model_validate(stored["config"])
    except (KeyError, TypeError, ValidationError):
        return None


def _routes(router: APIRouter, svc: DauthService) -> None:
    @router.post("/v1/dauth/admit")
    async def admit(request: Request) -> JSONResponse:
        try:
            data = await request.json()
        except ValueError:
            data = None
        try:
            return JSONResponse(await svc.admit(data))
        except DauthError as exc:
            log.warning("dauth: refused an admission request (%s): %s", exc.cause, exc)
            return JSONResponse(exc.to_json(), status_code=exc.status)
        except R1osError as exc:
            log.warning("dauth: admission request failed: %s", exc)
            return JSONResponse({"error": "error", "detail": str(exc), "hint": exc.hint}, status_code=500)

    @router.get("/v1/dauth/admitted")
    async def admitted() -> dict[str, Any]:
        now = time.time()
        records = {a: r.model_dump() for a, r in svc._records.items() if r.record.expires > now}
        return {
            "enabled": svc.enabled,
            "oracles": sorted(svc.oracles()),
            "admitted": records,
            "count": len(records),
        }

    @router.post("/v1/dauth/retry")
    async def retry() -> dict[str, Any]:
        return {"retrying": svc.retry(), "state": svc.state}

    @router.get("/v1/dauth/status")
    async def status() -> dict[str, Any]:
        out: dict[str, Any] = svc.status()
        return out
