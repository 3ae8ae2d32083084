"""The oracle side of dAuth: answer admission requests against the chain, renew and revoke records.

`OracleSide` talks to two things through small protocols, so a test can hand it an in-memory store and a
scripted chain: `RecordStore` (what it needs of CSTORE) and `LicenceChain` (what it needs of the
contracts). The pieces that need neither (nonce memory, building and counter-signing records) are plain
functions and classes below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from r1os.cstore import Op
from r1os.dauth._ledger import AdmissionLedger, Clock
from r1os.dauth._models import (
    ADMITTED_KEY,
    CONFIG_KEY,
    MAX_REQUEST_SKEW_S,
    AdmissionRecord,
    AdmitAnswer,
    DauthError,
    Licence,
    NetworkConfig,
    SignedRecord,
    parse_request,
    sign_obj,
    signer_of,
)
from r1os.errors import ChainError
from r1os.identity import NodeKey, normalize_address

log = logging.getLogger("r1os.dauth")

#: Chain reads a re-check runs at once.
RECHECK_PARALLEL = 16


class LicenceInfo(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def token_id(self) -> int: ...


class LicenceChain(Protocol):
    """What an oracle reads from the chain (`r1os.chain.client.ChainClient` has it)."""

    async def oracles(self) -> list[str]: ...
    async def is_node_active(self, node: str) -> bool: ...
    async def licence_of(self, node: str) -> LicenceInfo | None: ...


class RecordStore(Protocol):
    """What an oracle needs of CSTORE to keep records and the config (`CStoreService` has it)."""

    async def get(self, key: str) -> Any | None: ...
    async def set(self, key: str, value: Any, ttl: float | None = None) -> None: ...
    async def hget(self, key: str, field: str) -> Any | None: ...
    async def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None: ...
    async def hgetall(self, key: str) -> dict[str, Any]: ...
    async def write(self, ops: list[Op]) -> object: ...


class NonceMemory:
    """The (address, nonce) pairs seen within the request clock window: a request replayed inside the
    window is refused here, one replayed after it is refused as stale by `parse_request`."""

    def __init__(
        self, window: float = 2 * MAX_REQUEST_SKEW_S, limit: int = 100_000, clock: Clock = time.time
    ) -> None:
        self.window = window
        self.limit = limit
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def check(self, address: str, nonce: str) -> None:
        """Remember the pair; `DauthError` (cause `replayed`) if it was seen already."""
        now = self._clock()
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest >= now - self.window and len(self._seen) < self.limit:
                break
            self._seen.popitem(last=False)
        key = (address.lower(), nonce)
        if key in self._seen:
            raise DauthError(
                "replayed", "this admission request was already used (same nonce)",
                hint="sign a new request with a fresh nonce", status=409,
            )  # fmt: skip
        self._seen[key] = now


def record_for(
    config: NetworkConfig, address: str, licence: Licence, now: float | None = None
) -> AdmissionRecord:
    """A record confirmed in the current epoch, valid until the end of the next one."""
    epoch = config.epoch_at(now)
    return AdmissionRecord(
        network=config.network,
        address=normalize_address(address),
        licence=licence,
        epoch=epoch,
        expires=config.epoch_end(epoch + 1),
    )


def countersigned(
    record: AdmissionRecord, stored: Any, key: NodeKey, oracles: frozenset[str]
) -> SignedRecord | None:
    """The value to write for `record`: the stored one's valid oracle signatures (if it is the same
    record) plus ours; None if ours is there already (nothing to write)."""
    me = key.address.lower()
    sigs: dict[str, str] = {}
    with contextlib.suppress(ValidationError, TypeError):
        old = SignedRecord.model_validate(stored)
        if old.record == record:
            sigs = {w: old.signatures[w] for w in old.valid_signers(set(oracles))}
    if me in sigs:
        return None
    sigs[me] = sign_obj(key, record.body())
    return SignedRecord(record=record, signatures=sigs)


def ttl_of(record: AdmissionRecord, now: float | None = None) -> float:
    """How long CSTORE keeps a record: a minute past its expiry (readers check `expires` themselves)."""
    return max(1.0, record.expires - (time.time() if now is None else now) + 60)


def _config_of(stored: Any) -> NetworkConfig | None:
    try:
        return NetworkConfig.model_validate(stored["config"])
    except (KeyError, TypeError, ValidationError):
        return None


class OracleSide:
    """An oracle's half of dAuth. `set_config` is the service's way to adopt a config (it updates the
    ledger, CSTORE's oracle set and the network map); the ledger is shared with the service."""

    def __init__(
        self,
        *,
        key: NodeKey,
        ledger: AdmissionLedger,
        store: RecordStore,
        chain: LicenceChain,
        config: NetworkConfig,
        set_config: Callable[[NetworkConfig], None],
        nonces: NonceMemory | None = None,
    ) -> None:
        self.key = key
        self.address = key.address.lower()
        self.ledger = ledger
        self.store = store
        self.chain = chain
        self.network = config.network
        self._set_config = set_config
        self.nonces = nonces or NonceMemory()
        # Known before the first chain read, so services started after dAuth can rely on it.
        ledger.config = config

    @property
    def config(self) -> NetworkConfig:
        assert self.ledger.config is not None  # set in __init__, only ever replaced
        return self.ledger.config

    async def start(self) -> None:
        """Read the oracle registry (the configured oracles stand in if the chain does not answer)."""
        try:
            await self.refresh_oracles()
        except ChainError as exc:
            log.warning("dauth: cannot read the oracle registry yet (%s); using the configured oracles", exc)
        if self.address not in self.ledger.oracles:
            log.warning(
                "dauth: this node (%s) is not in the on-chain oracle registry; "
                "other nodes will drop its messages",
                self.key.address,
            )

    async def refresh_oracles(self) -> None:
        """Read the oracle registry; publish a new signed config when it changed."""
        chain_oracles = sorted(normalize_address(a) for a in await self.chain.oracles())
        config = self.config.model_copy(update={"oracles": chain_oracles})
        self._set_config(config)
        stored = await self.store.get(CONFIG_KEY)
        current = _config_of(stored)
        if current is not None and isinstance(stored, dict) and current.same_as(config):
            # Same content: add our signature to what the other oracles signed (no rewrite war).
            body = current.model_dump()
            sigs = {
                w.lower(): sig
                for w, sig in stored["signatures"].items()
                if (s := signer_of(body, sig)) and s.lower() == w.lower()
            }
            self.ledger.config = current
            if self.address in sigs:
                return
            sigs[self.address] = sign_obj(self.key, body)
            await self.store.set(CONFIG_KEY, {"config": body, "signatures": sigs})
            return
        fresh = config.model_copy(update={"issued_at": time.time()})
        self.ledger.config = fresh
        body = fresh.model_dump()
        await self.store.set(
            CONFIG_KEY, {"config": body, "signatures": {self.address: sign_obj(self.key, body)}}
        )

    def signed_config(self) -> tuple[NetworkConfig, str]:
        config = self.config
        return config, sign_obj(self.key, config.model_dump())

    async def admit(self, data: Any) -> AdmitAnswer:
        """Answer one admission request (the body of `POST /v1/dauth/admit`); `DauthError` if refused."""
        req = parse_request(data, self.network)
        self.nonces.check(req.address, req.nonce)
        try:
            active = await self.chain.is_node_active(req.address)
            licence = await self.chain.licence_of(req.address) if active else None
        except ChainError as exc:
            raise DauthError(
                "chain_unavailable", f"the oracle cannot read the chain: {exc}", status=503
            ) from None
        if not active or licence is None:
            raise DauthError(
                "not_licensed",
                f"no licence is linked to {req.address} on chain {self.config.chain_id or '?'}",
                hint=f"buy a licence and link it to this node: r1os licence buy --link {req.address}",
            )
        signed = await self.confirm(req.address, Licence(type=licence.type, token_id=licence.token_id))
        config, sig = self.signed_config()
        log.info(
            "dauth: admitted %s (%s #%d, version %s)",
            req.address, licence.type, licence.token_id, req.version or "?",
        )  # fmt: skip
        return AdmitAnswer(
            config=config,
            config_signature=sig,
            oracle=self.key.address,
            record=signed.record,
            signatures=signed.signatures,
        )

    async def confirm(self, address: str, licence: Licence) -> SignedRecord:
        """Write (or counter-sign) the record admitting `address` with `licence` in this epoch."""
        record = record_for(self.config, address, licence)
        field = address.lower()
        stored = await self.store.hget(ADMITTED_KEY, field)
        new = countersigned(record, stored, self.key, self.ledger.oracles)
        if new is None:
            return SignedRecord.model_validate(stored)
        await self.store.hset(ADMITTED_KEY, field, new.model_dump(), ttl=ttl_of(record))
        self.ledger.put(field, new.model_dump())
        return new

    async def recheck(self) -> dict[str, int]:
        """Re-read the oracle registry and every admitted node's licence; revoke or renew records."""
        await self.refresh_oracles()
        stored = await self.store.hgetall(ADMITTED_KEY)
        sem = asyncio.Semaphore(RECHECK_PARALLEL)
        chain = self.chain

        async def check(field: str) -> tuple[str, bool | None]:
            async with sem:
                try:
                    return field, await chain.is_node_active(field)
                except ChainError as exc:
                    log.warning("dauth: cannot re-check %s: %s", field, exc)
                    return field, None

        ops: list[Op] = []
        revoked = renewed = 0
        epoch = self.config.epoch_at()
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
                old: SignedRecord | None = SignedRecord.model_validate(value)
            except ValidationError:
                old = None
            if old is not None and old.record.epoch >= epoch:
                record = old.record
            else:
                # Confirmed in an earlier epoch (or unreadable): read the licence again for this one.
                lic = await chain.licence_of(field)
                if lic is None:
                    continue
                record = record_for(self.config, field, Licence(type=lic.type, token_id=lic.token_id))
            new = countersigned(record, value, self.key, self.ledger.oracles)
            if new is not None:
                expires = int((time.time() + ttl_of(record)) * 1000)
                ops.append(Op("hset", ADMITTED_KEY, field, new.model_dump(), expires))
                renewed += 1
        if ops:
            await self.store.write(ops)
        return {"checked": len(stored), "revoked": revoked, "renewed": renewed}
