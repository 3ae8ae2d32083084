"""What the other oracles sent for an epoch, and the checks a phase message passes before it counts.

Phase messages (`oracle.table`, `oracle.median`, `oracle.sigs`) come from peers that may be wrong or
lying: each is parsed into typed values here, and refused with the reason (which the service logs)
if it is malformed, out of the epoch window or not signed by its sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from r1os.oracle._consensus import (
    OracleSignatures,
    SignedTable,
    Table,
    check_served,
    check_table,
    table_signer,
)
from r1os.oracle._poai import SignedAttestation

MSG_TABLE = "oracle.table"
MSG_MEDIAN = "oracle.median"
MSG_SIGS = "oracle.sigs"
KEEP_INBOX_EPOCHS = 4
"""Phase messages are accepted for the current epoch and the ones before it within this window."""


class Refused(ValueError):
    """A phase message that does not count; the message says why."""


@dataclass
class SigsEntry:
    """One oracle's phase-3 message: the agreed table it signed, its signatures, its attestations."""

    table_hash: str
    sigs: OracleSignatures
    attest: dict[str, SignedAttestation] = field(default_factory=dict)


@dataclass
class Inbox:
    """What the other oracles sent for one epoch, per phase; `changed` is set on every arrival."""

    tables: dict[str, SignedTable] = field(default_factory=dict)
    medians: dict[str, SignedTable] = field(default_factory=dict)
    sigs: dict[str, SigsEntry] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until `done()` holds (checked on each arrival) or the wall-clock `deadline` passes;
        True if it holds."""
        while not done():
            left = deadline - time.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.changed.wait()
        return True


def check_epoch(epoch: object, current: int) -> int:
    """An epoch number a phase message may carry: the current one or one of the few before it."""
    if (
        isinstance(epoch, bool)
        or not isinstance(epoch, int)
        or not current - KEEP_INBOX_EPOCHS < epoch <= current
    ):
        raise Refused(f"epoch {epoch!r} out of range")
    return epoch


def parse_table(
    payload: dict[str, Any], kind: str, sender: str, network: str, current: int
) -> tuple[int, SignedTable]:
    """A table-carrying message (`kind`: "table" or "median") from `sender`: its epoch and signed table
    (a local table with its PoAI report, `served`). Raises `Refused` if the epoch is out of the window,
    the table or report malformed, or `sender` did not sign them."""
    epoch = check_epoch(payload.get("epoch"), current)
    try:
        values: Table = check_table(payload.get("values"))
        served = check_served(payload.get("served")) if kind == "table" else {}
    except ValueError as exc:
        raise Refused(str(exc)) from None
    sig = payload.get("sig")
    if not isinstance(sig, str) or table_signer(sig, kind, network, epoch, values, served) != sender:
        raise Refused("bad table signature")
    return epoch, SignedTable(oracle=sender, values=values, sig=sig, served=served)


def parse_sigs(payload: dict[str, Any]) -> tuple[int, SigsEntry]:
    """An `oracle.sigs` message: its epoch and entry. The signatures themselves are checked against the
    agreed table later (`OracleSyncService` merges only those over the very table it holds); malformed
    attestations are dropped, not the whole message."""
    epoch, thash, tsig, nodes = (payload.get(k) for k in ("epoch", "table_hash", "table_sig", "nodes"))
    if not (
        isinstance(epoch, int)
        and not isinstance(epoch, bool)
        and isinstance(thash, str)
        and isinstance(tsig, str)
        and isinstance(nodes, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in nodes.items())
    ):
        raise Refused("malformed")
    attest: dict[str, SignedAttestation] = {}
    raw = payload.get("attest")
    for job, att in (raw if isinstance(raw, dict) else {}).items():
        with contextlib.suppress(ValidationError):
            attest[str(job)] = SignedAttestation.model_validate(att)
    return epoch, SigsEntry(thash, OracleSignatures(table_sig=tsig, nodes=nodes), attest)
