"""This node's pins, by CID and by pinner, and what each pinner holds against its quota.

A CID is pinned here while any pinner holds it (`user` pins), or while this node keeps it as a replica
for the network (`replica`, no pinner: the node itself holds it). A pinner is the address that signed
the add or pin (the node's operator pins as the node's own address); only a pinner releases its own
pin, the operator any. On disk, `pins.json`:

    {cid: {"kind": "user" | "replica", "size": n, "replicas": r, "ts": t,
           "pinners": {address: {"replicas": r, "ts": t}}}}

`replicas` of a user pin is the most any of its pinners asked for. A pin file from before pinners
were recorded holds user pins without `pinners`: they become the node operator's.

What a signed address holds (`Usage`): the sizes of the files it pins times the replicas it asked for
(what its pins cost the network), and its unpinned adds since the last GC (bytes on this node's disk
that nobody pins, until GC removes them). The operator has no quota.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1os.r1fs._limits import QuotaExceeded

if TYPE_CHECKING:
    from r1os.node import R1fsSettings

log = logging.getLogger("r1os.r1fs")


@dataclass
class Usage:
    bytes: int = 0
    pins: int = 0


class PinBook:
    """The pins of one node (not thread-safe: the service uses it from its event loop)."""

    def __init__(self, path: Path, me: str, limits: R1fsSettings) -> None:
        self.path = path
        self.me = me.lower()
        self.limits = limits
        self.pins: dict[str, dict[str, Any]] = {}
        self._used: dict[str, Usage] = {}  # by pinner address (lower-case), the operator's too
        self._unpinned: dict[str, int] = {}  # bytes added unpinned since the last GC, by address
        self._inflight: dict[str, int] = {}  # bytes of uploads under way, by address
        self.signed_pins = 0  # pinner entries of addresses other than the node's

    # -- disk ------------------------------------------------------------------------------

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            log.error("r1fs: cannot read %s (%s); starting with no pins", self.path, exc)
            data = {}
        self.pins = {}
        for cid, rec in data.items() if isinstance(data, dict) else []:
            if not isinstance(rec, dict):
                continue
            size = rec.get("size") if type(rec.get("size")) is int else 0
            replicas = rec.get("replicas") if type(rec.get("replicas")) is int else 1
            ts = rec.get("ts") if isinstance(rec.get("ts"), float | int) else 0.0
            if rec.get("kind") == "replica":
                self.pins[cid] = {"kind": "replica", "size": size, "replicas": 1, "ts": ts, "pinners": {}}
                continue
            pinners = rec.get("pinners")
            if not isinstance(pinners, dict):  # written before pinners were recorded: the operator's
                pinners = {self.me: {"replicas": replicas, "ts": ts}}
            clean = {
                str(a).lower(): {"replicas": int(p.get("replicas", 1)), "ts": float(p.get("ts", 0.0))}
                for a, p in pinners.items()
                if isinstance(p, dict) and type(p.get("replicas", 1)) is int
            }
            if clean:
                self.pins[cid] = {"kind": "user", "size": size, "ts": ts, "pinners": clean}
                self._settle(cid)
        self._account()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.pins, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def _account(self) -> None:
        self._used = {}
        self.signed_pins = 0
        for rec in self.pins.values():
            for address, p in rec["pinners"].items():
                u = self._used.setdefault(address, Usage())
                u.bytes += rec["size"] * p["replicas"]
                u.pins += 1
                self.signed_pins += address != self.me

    def _settle(self, cid: str) -> None:
        """A user pin's replicas follow its pinners (the most any asks for)."""
        rec = self.pins[cid]
        rec["replicas"] = max((p["replicas"] for p in rec["pinners"].values()), default=1)

    # -- reading ---------------------------------------------------------------------------

    def get(self, cid: str) -> dict[str, Any] | None:
        return self.pins.get(cid)

    def pinners(self, cid: str) -> dict[str, dict[str, Any]]:
        rec = self.pins.get(cid)
        return dict(rec["pinners"]) if rec is not None else {}

    def usage(self, address: str) -> Usage:
        """What `address` holds here: pinned bytes (times replicas) and pins, plus its unpinned adds
        and uploads under way in `bytes`."""
        a = address.lower()
        u = self._used.get(a, Usage())
        return Usage(u.bytes + self._unpinned.get(a, 0) + self._inflight.get(a, 0), u.pins)

    # -- quotas ----------------------------------------------------------------------------

    def exempt(self, address: str) -> bool:
        return address.lower() == self.me

    def check(self, address: str, *, more_bytes: int, new_pin: bool = False, unpinned: bool = False) -> None:
        """Raise `QuotaExceeded` if `address` would hold more than its quota (or all signed pinners
        together more pins than the node keeps for them); `unpinned`: for an add that pins nothing (its
        address then takes an entry until GC). The operator passes."""
        if self.exempt(address):
            return
        u = self.usage(address)
        a_new_entry = unpinned and address.lower() not in self._unpinned
        if u.bytes + more_bytes > self.limits.quota_bytes:
            raise QuotaExceeded(
                f"{address} would hold {u.bytes + more_bytes} bytes on this node, past its quota of "
                f"{self.limits.quota_bytes} (files' sizes times their replicas, and unpinned adds until GC)"
            )
        if new_pin and u.pins + 1 > self.limits.quota_pins:
            raise QuotaExceeded(f"{address} holds {u.pins} pins on this node, its quota")
        # Every signed address the node keeps something for takes an entry (a pin, or its unpinned adds
        # until GC): keys are free, so the entries of all of them together are bounded too.
        entries = self.signed_pins + len(self._unpinned)
        if (new_pin or a_new_entry) and entries + 1 > self.limits.max_pins:
            raise QuotaExceeded(
                f"this node keeps {entries} pins and unpinned adds for signed callers, all it keeps",
                hint="ask the node's operator, or pin on another node",
            )

    def stream(self, address: str, n: int, *, factor: int) -> None:
        """An upload by `address` received `n` more bytes (each to count `factor` times: the replicas
        it asks for): refused as soon as it would pass the quota, while it streams."""
        a = address.lower()
        self._inflight[a] = self._inflight.get(a, 0) + n * factor
        if not self.exempt(a) and self.usage(a).bytes > self.limits.quota_bytes:
            raise QuotaExceeded(
                f"{address}'s upload would take it past its quota of {self.limits.quota_bytes} bytes "
                f"on this node (files' sizes times their replicas, and unpinned adds until GC)"
            )

    def stream_done(self, address: str, n: int) -> None:
        a = address.lower()
        left = self._inflight.get(a, 0) - n
        if left > 0:
            self._inflight[a] = left
        else:
            self._inflight.pop(a, None)

    def added_unpinned(self, address: str, size: int) -> None:
        if not self.exempt(address):
            a = address.lower()
            self._unpinned[a] = self._unpinned.get(a, 0) + size

    def unpinned_marks(self) -> dict[str, int]:
        """The unpinned adds counted now: what a GC starting now will have removed (or seen pinned)."""
        return dict(self._unpinned)

    def collected(self, marks: dict[str, int]) -> None:
        """A GC that started at `marks` ran: those unpinned adds are gone from the disk (or were pinned
        since), no longer anyone's; adds made while it ran still count until the next one."""
        for address, n in marks.items():
            left = self._unpinned.get(address, 0) - n
            if left > 0:
                self._unpinned[address] = left
            else:
                self._unpinned.pop(address, None)

    # -- changing --------------------------------------------------------------------------

    def pin(self, cid: str, size: int, address: str, replicas: int) -> None:
        """Record `address`'s pin of `cid` (again: its replicas are the new ones); checked against
        its quota first (what it held for this CID before no longer counts)."""
        a = address.lower()
        rec = self.pins.get(cid)
        old = rec["pinners"].get(a) if rec is not None and rec["kind"] == "user" else None
        held = rec["size"] * old["replicas"] if rec is not None and old is not None else 0
        self.check(a, more_bytes=size * replicas - held, new_pin=old is None)
        now = time.time()
        if rec is None or rec["kind"] != "user":
            rec = self.pins[cid] = {"kind": "user", "size": size, "ts": now, "pinners": {}}
        rec["size"] = size
        rec["pinners"][a] = {"replicas": replicas, "ts": now}
        self._settle(cid)
        self._account()
        self.save()

    def release(self, cid: str, address: str | None) -> list[str]:
        """Release `address`'s pin of `cid` (None: every pinner's, and a replica); returns whose pins
        went. The record goes when no pinner is left."""
        rec = self.pins.get(cid)
        if rec is None:
            return []
        if address is None:
            gone = list(rec["pinners"]) or [self.me]
            del self.pins[cid]
        else:
            a = address.lower()
            if rec["pinners"].pop(a, None) is None:
                return []
            gone = [a]
            if rec["pinners"]:
                self._settle(cid)
            else:
                del self.pins[cid]
        self._account()
        self.save()
        return gone

    def keep_replica(self, cid: str, size: int) -> None:
        """Hold `cid` for the network (as the node); a user pin stays what it is."""
        if cid in self.pins:
            return
        self.pins[cid] = {"kind": "replica", "size": size, "replicas": 1, "ts": time.time(), "pinners": {}}
        self.save()

    def drop_replica(self, cid: str) -> bool:
        rec = self.pins.get(cid)
        if rec is None or rec["kind"] != "replica":
            return False
        del self.pins[cid]
        self.save()
        return True
