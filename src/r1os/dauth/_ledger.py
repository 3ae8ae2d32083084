"""The admitted set of one node, as a pure core: which stored admission records count, given the oracles.

`AdmissionLedger` does no I/O and starts no task: the service feeds it what CSTORE holds under
`net:dauth:admitted` (and records an oracle handed over HTTP), tells it the network config, and asks it
who is admitted. It keeps every stored value, also those that do not check out yet (signed by an oracle
it does not know of yet), so a new oracle set re-checks them all without reading the store again.
Listeners hear when an address gains or loses admission; a test drives all of it without a network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from r1os.dauth._models import NetworkConfig, SignedRecord, signer_of

log = logging.getLogger("r1os.dauth")

ChangeCallback = Callable[[str, bool], None]
Clock = Callable[[], float]


class AdmissionLedger:
    """Admission records by lower-case address, the oracle set that signs them, and the network config.

    `trust_bootstrap`: an edge node keeps trusting the oracles it was started with besides those of the
    config (its trust anchor); an oracle follows the on-chain registry only.
    """

    def __init__(
        self,
        network: str,
        bootstrap_oracles: Iterable[str] = (),
        *,
        trust_bootstrap: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self.network = network
        self.bootstrap_oracles = frozenset(a.lower() for a in bootstrap_oracles)
        self.trust_bootstrap = trust_bootstrap
        self.oracles: frozenset[str] = self.bootstrap_oracles
        self.config: NetworkConfig | None = None
        self.revocations = 0
        self._clock = clock
        self._stored: dict[str, Any] = {}  # every value as stored, by lower-case address
        self._records: dict[str, SignedRecord] = {}  # the unexpired ones that check out
        self._listeners: list[ChangeCallback] = []

    # -- questions -----------------------------------------------------------------------------

    def valid(self, address: str) -> bool:
        """True if `address` holds an unexpired record signed by a current oracle (oracles themselves
        do not count here)."""
        rec = self._records.get(address.lower())
        return rec is not None and rec.record.expires > self._clock()

    def record_of(self, address: str) -> SignedRecord | None:
        return self._records.get(address.lower())

    def records(self) -> dict[str, SignedRecord]:
        """The valid records by lower-case address."""
        now = self._clock()
        return {a: r for a, r in self._records.items() if r.record.expires > now}

    def admitted(self) -> set[str]:
        return set(self.records())

    def on_change(self, callback: ChangeCallback) -> None:
        """`callback(address_lower, admitted)` whenever an address gains or loses admission."""
        self._listeners.append(callback)

    # -- what the store says ---------------------------------------------------------------------

    def put(self, field: str, value: Any, *, quiet: bool = False) -> None:
        """Take one stored value (None: deleted) for the record of `field`; listeners hear of a change."""
        addr = field.lower()
        if value is None:
            self._stored.pop(addr, None)
        else:
            self._stored[addr] = value
        self._check(addr, quiet=quiet)

    def load(self, stored: dict[str, Any]) -> None:
        """Take every stored value at once (a node starting), without a log line per refused one."""
        for field, value in stored.items():
            self.put(field, value, quiet=True)

    def expire(self) -> list[str]:
        """Drop records that ran out (their oracles stopped renewing them); the addresses that lost
        admission by it."""
        now = self._clock()
        gone = [a for a, r in self._records.items() if r.record.expires <= now]
        for addr in gone:
            del self._records[addr]
            self._stored.pop(addr, None)
            self._changed(addr, False)
        return gone

    def _check(self, addr: str, *, quiet: bool) -> None:
        was = self.valid(addr)
        value = self._stored.get(addr)
        try:
            if value is None:
                raise LookupError
            signed = SignedRecord.model_validate(value)
            if signed.record.address.lower() != addr or signed.record.network != self.network:
                raise ValueError("record is for another address or network")
            if not signed.valid_signers(set(self.oracles)):
                raise ValueError("no valid oracle signature")
            if signed.record.expires <= self._clock():
                raise LookupError  # ran out already: as if absent (so `expire` reports only real losses)
        except LookupError:
            self._records.pop(addr, None)
        except (ValidationError, ValueError) as exc:
            if not quiet and self.oracles:
                log.warning("dauth: ignoring admission record for %s: %s", addr[:64], exc)
            self._records.pop(addr, None)
        else:
            self._records[addr] = signed
        now = self.valid(addr)
        if was != now:
            self._changed(addr, now)

    def _changed(self, addr: str, admitted: bool) -> None:
        if admitted:
            log.info("dauth: %s admitted", addr)
        else:
            log.info("dauth: %s no longer admitted", addr)
            self.revocations += 1
        for callback in list(self._listeners):
            try:
                callback(addr, admitted)
            except Exception:
                log.exception("dauth change callback failed")

    # -- the network config and the oracle set ------------------------------------------------------

    def set_config(self, config: NetworkConfig) -> set[str]:
        """Take a (checked) network config and the oracle set it names; re-check every stored record
        against the new set. Returns the addresses that were oracles and are now nothing (to forget)."""
        old = self.oracles
        self.config = config
        chain_oracles = frozenset(a.lower() for a in config.oracles)
        self.oracles = (chain_oracles | self.bootstrap_oracles) if self.trust_bootstrap else chain_oracles
        if self.oracles == old:
            return set()
        log.info("dauth: oracle set is now %s", sorted(self.oracles))
        # Records must be signed by a current oracle: check all stored ones again, including those refused
        # before we knew the oracle that signed them.
        for addr in list(self._stored.keys() | self._records.keys()):
            self._check(addr, quiet=True)
        return {a for a in old - self.oracles if not self.valid(a)}

    def stored_config(self, value: Any) -> NetworkConfig:
        """The config of a stored `net:dauth:config` value if a current oracle signed it, for this
        network; `ValueError` saying why not otherwise."""
        try:
            config = NetworkConfig.model_validate(value["config"])
            sigs = value["signatures"]
            body = config.model_dump()
            signers = {
                who.lower()
                for who, sig in sigs.items()
                if (s := signer_of(body, sig)) and s.lower() == who.lower()
            }
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise ValueError(f"malformed network config: {exc}") from None
        if not signers & self.oracles or config.network != self.network:
            raise ValueError("a network config not signed by a known oracle")
        return config
