"""The edge side of dAuth: ask the oracles to be admitted until one does, and again before it runs out.

`EdgeSide.run` is the loop the service spawns: while this node holds a valid record it waits until the
record is about to expire (oracles renew it once per epoch, so usually nothing is asked), otherwise it
posts a signed request to the oracles in random order, backing off from `retry_initial` to `retry_max`
seconds between rounds. A refusal is kept (`last_refusal`) and logged with its cause and hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from r1os import __version__
from r1os.dauth._ledger import AdmissionLedger
from r1os.dauth._models import AdmitAnswer, DauthError, NetworkConfig, Refusal, make_request, signer_of
from r1os.errors import error_from_body, first_invalid
from r1os.identity import NodeKey

log = logging.getLogger("r1os.dauth")

#: Refusals that are the network's answer (try no further oracle for a better one); any other failure
#: is one oracle's problem, and the next oracle is asked.
FINAL_CAUSES = frozenset({"not_licensed", "bad_signature", "wrong_network", "stale"})


class EdgeSide:
    """A node's request for admission. `set_config` adopts a checked config (see `DauthService`);
    `on_admitted` runs after each admission (the transport retries the broker, which refused us)."""

    def __init__(
        self,
        *,
        key: NodeKey,
        ledger: AdmissionLedger,
        http: httpx.AsyncClient,
        oracle_urls: Iterable[str],
        set_config: Callable[[NetworkConfig], None],
        on_admitted: Callable[[], None],
        interval: Callable[[], float],
        retry_initial: float = 1.0,
        retry_max: float = 10.0,
    ) -> None:
        self.key = key
        self.address = key.address.lower()
        self.network = ledger.network
        self.ledger = ledger
        self.http = http
        self.oracle_urls = [u.rstrip("/") for u in oracle_urls]
        self._set_config = set_config
        self._on_admitted = on_admitted
        self._interval = interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.state: Literal["waiting", "admitted"] = "waiting"
        self.attempts = 0
        self.admitted_at: float | None = None
        self.last_refusal: Refusal | None = None
        self._kick = asyncio.Event()
        ledger.on_change(self._own_changed)

    def _own_changed(self, addr: str, admitted: bool) -> None:
        if addr != self.address:
            return
        if admitted:
            self.state, self.admitted_at = "admitted", time.time()
        else:
            self.state, self.admitted_at = "waiting", None
            log.warning("dauth: this node's admission was revoked or expired; asking an oracle again")
        self._kick.set()

    def retry(self) -> None:
        """Ask now instead of at the next backoff step (e.g. right after linking a licence)."""
        self._kick.set()

    async def _wait_kick(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._kick.wait()

    def _expires_in(self) -> float | None:
        rec = self.ledger.record_of(self.address) if self.ledger.valid(self.address) else None
        return None if rec is None else rec.record.expires - time.time()

    async def run(self) -> None:
        delay = self.retry_initial
        while True:
            left = self._expires_in()
            if left is not None:
                self.state = "admitted"
                # Oracles renew the record once per epoch; ask ourselves if no renewal arrived in time.
                margin = self._interval()
                self._kick.clear()
                await self._wait_kick(max(1.0, left - margin))
                left = self._expires_in()
                if left is not None and left > margin:
                    continue
            self.state = "waiting"
            self._kick.clear()  # a retry asked for from now on wakes the wait below
            try:
                await self.request_admission()
                delay = self.retry_initial
                continue
            except DauthError as exc:
                self.last_refusal = Refusal(error=str(exc), cause=exc.cause, hint=exc.hint, at=time.time())
                log.warning(
                    "dauth: not admitted (%s): %s%s; retrying in %.0f s",
                    exc.cause, exc, f" (hint: {exc.hint})" if exc.hint else "", delay,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - keep asking; say why
                self.last_refusal = Refusal(error=str(exc), cause="error", hint=None, at=time.time())
                log.warning("dauth: admission request failed: %s; retrying in %.0f s", exc, delay)
            await self._wait_kick(delay)
            delay = min(delay * 2, self.retry_max)

    async def request_admission(self) -> AdmitAnswer:
        """Ask the oracles (in random order) until one admits us; raise the last refusal otherwise."""
        self.attempts += 1
        urls = list(self.oracle_urls)
        random.shuffle(urls)
        last = DauthError("unreachable", "no oracle URL configured", status=503)
        refusal: DauthError | None = None
        for url in urls:
            try:
                r = await self.http.post(
                    f"{url}/v1/dauth/admit", json=make_request(self.key, self.network, __version__)
                )
            except httpx.HTTPError as exc:
                last = DauthError(
                    "unreachable", f"oracle {url} unreachable: {type(exc).__name__}", status=503
                )
                continue
            try:
                data: Any = r.json()
            except ValueError:
                data = None
            if r.status_code != 200:
                # The oracle's error answer (`{"error", "cause", "hint"}`), or a readable stand-in if
                # something else (a proxy) answered.
                remote = error_from_body(r.status_code, data, fallback=r.text)
                err = DauthError(remote.cause, str(remote), hint=remote.hint, status=r.status_code)
                if err.cause in FINAL_CAUSES:
                    refusal = refusal or err
                last = err
                continue
            try:
                answer = AdmitAnswer.model_validate(data)
                await self._accept(url, answer)
            except ValidationError as exc:
                last = DauthError("malformed", f"bad answer from {url}: {first_invalid(exc)[1]}", status=502)
                log.warning("dauth: %s", last)
                continue
            except DauthError as exc:
                last = exc
                log.warning("dauth: %s", last)
                continue
            self.last_refusal = None
            return answer
        raise refusal or last

    async def _accept(self, url: str, answer: AdmitAnswer) -> None:
        """Check an oracle's answer and take the config, the oracle set and the records it gives."""
        config = answer.config
        signer = signer_of(config.model_dump(), answer.config_signature)
        # Trust anchor: the oracles the node was started with; without any, the config's own (first use).
        trusted = self.ledger.bootstrap_oracles or {a.lower() for a in config.oracles}
        if signer is None or signer.lower() not in trusted:
            raise DauthError(
                "bad_signature", f"the network config from {url} is not signed by a known oracle"
            )
        if config.network != self.network:
            raise DauthError("wrong_network", f"oracle {url} serves network {config.network!r}")
        self._set_config(config)
        self.ledger.put(self.address, {"record": answer.record.model_dump(), "signatures": answer.signatures})
        if not self.ledger.valid(self.address):
            raise DauthError("malformed", f"the admission record from {url} does not check out")
        # The others' records come with CSTORE replication; fetch them now so peers count at once.
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            r = await self.http.get(f"{url}/v1/dauth/admitted")
            for field, value in r.json()["admitted"].items():
                if field.lower() != self.address:
                    self.ledger.put(field, value)
        log.info("dauth: admitted by %s (%s)", answer.oracle, url)
        # The broker refused us until now: reconnect at once instead of waiting out the backoff.
        self._on_admitted()
