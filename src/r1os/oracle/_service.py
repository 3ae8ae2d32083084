"""OracleSync: the oracle node service that measures availability and agrees on it each epoch.

It records the receive time of every admitted node's heartbeats (and ticks for itself), and shortly
after each epoch ends runs three broadcast phases with the other oracles (`oracle.table`,
`oracle.median`, `oracle.sigs`; see `_consensus`). The agreed table, every oracle's signed local
table and all signatures go to CSTORE (`net:oracle:epoch:<n>`, index `net:oracle:epochs`) and to an
R1FS document, as a public audit trail; misbehaving oracles go to `net:oracle:misbehaviour`.
Signatures for reward claims over any range of agreed epochs are served over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, HTTPException, Query

from r1os.chain.digests import (
    MAX_EPOCHS_PER_CLAIM,
    availability_digest,
    sign_attestation,
    sign_availability,
)
from r1os.identity import normalize_address, recover_address
from r1os.node import Service, ServiceContext, cancel_tasks
from r1os.oracle._availability import SLACK_S, HeartbeatLog, max_gap
from r1os.oracle._consensus import (
    DISAGREE_BY,
    ELIGIBLE_FRACTION,
    EpochRecord,
    NoQuorum,
    OracleSignatures,
    SignedTable,
    Table,
    agree,
    check_table,
    disagreements,
    propose,
    quorum,
    sign_table,
    table_hash,
    table_signer,
)
from r1os.oracle._epochs import EpochClock, parse_range
from r1os.oracle._journal import HeartbeatJournal
from r1os.wire import Envelope

if TYPE_CHECKING:
    from r1os.chain.deployment import Deployment

log = logging.getLogger("r1os.oracle")

MSG_TABLE = "oracle.table"
MSG_MEDIAN = "oracle.median"
MSG_SIGS = "oracle.sigs"
EPOCH_KEY = "net:oracle:epoch:{}"
INDEX_KEY = "net:oracle:epochs"
MISBEHAVIOUR_KEY = "net:oracle:misbehaviour"
POAI_JOB_PREFIX = "net:poai:job:"
KEEP_INBOX_EPOCHS = 4


@dataclass
class OracleSettings:
    """How an oracle measures and agrees. Epoch parameters come from the network config."""

    genesis_time: float
    epoch_seconds: float
    heartbeat: float = 10.0
    """The network's heartbeat interval (hb in the availability rule; not what nodes claim)."""
    oracles: list[str] = field(default_factory=list)
    close_delay: float | None = None
    """Seconds after an epoch ends before its table is computed (default 2 hb + 0.5 s)."""
    phase_timeout: float | None = None
    """Seconds to wait for the other oracles in each phase (default epoch/10 within 1..30 s)."""
    eligible_fraction: float = ELIGIBLE_FRACTION
    disagree_by: int = DISAGREE_BY
    slack: float | None = None
    """Tolerance over hb before a gap breaks a run (default min(5 s, hb)): Ratio1's 5 s at hb = 10 s;
    with faster heartbeats one late or lost heartbeat is still tolerated, but a devnet outage of a
    few seconds is not bridged."""
    poai_min_availability: int = 128
    """A node listed for a PoAI job is attested for an epoch if it was at least this available."""
    deployment: Deployment | None = None

    @property
    def delay(self) -> float:
        if self.close_delay is not None:
            return self.close_delay
        return min(2 * self.heartbeat + 0.5, max_gap(self.heartbeat, self.gap_slack))

    @property
    def gap_slack(self) -> float:
        return self.slack if self.slack is not None else min(SLACK_S, self.heartbeat)

    @property
    def timeout(self) -> float:
        if self.phase_timeout is not None:
            return self.phase_timeout
        return min(30.0, max(1.0, self.epoch_seconds / 10))


@dataclass
class _Inbox:
    """What the other oracles sent for one epoch, per phase."""

    tables: dict[str, SignedTable] = field(default_factory=dict)
    medians: dict[str, SignedTable] = field(default_factory=dict)
    sigs: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class OracleSyncService(Service):
    """Availability measurement and per-epoch consensus on an oracle node."""

    name = "oracle"

    def __init__(self, settings: OracleSettings) -> None:
        self.settings = settings
        self.clock = EpochClock(settings.genesis_time, settings.epoch_seconds)
        self.hb = HeartbeatLog()
        self.journal: HeartbeatJournal | None = None
        self.records: dict[int, EpochRecord] = {}
        self.failures: dict[int, str] = {}
        self._inbox: dict[int, _Inbox] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Future[None]] = set()
        self._closing: dict[int, asyncio.Task[EpochRecord | None]] = {}
        self._http: httpx.AsyncClient | None = None
        self._started = 0.0
        self._chain: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.me = ctx.key.address
        netcfg = getattr(self._dauth(), "network_config", None)
        genesis, length = getattr(netcfg, "genesis_time", None), getattr(netcfg, "epoch_seconds", None)
        if genesis is not None and length:  # dAuth's signed network config wins over local settings
            self.settings.genesis_time, self.settings.epoch_seconds = float(genesis), float(length)
            self.clock = EpochClock(self.settings.genesis_time, self.settings.epoch_seconds)
        self._started = time.time()
        self._dir = ctx.data_dir / "epochs"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._load_records()
        self.journal = HeartbeatJournal(ctx.data_dir / "heartbeats.bin")
        since = self.clock.start(self.clock.epoch_at(time.time()) - 1) - max_gap(self.settings.heartbeat) - 1
        if kept := self.journal.load(self.hb, since):
            log.info("oracle sync: %d heartbeats of this epoch and the last read back from disk", kept)
        self.journal.rewrite(self.hb)
        ctx.on("hb", self._on_heartbeat)
        ctx.on(MSG_TABLE, self._on_table)
        ctx.on(MSG_MEDIAN, self._on_median)
        ctx.on(MSG_SIGS, self._on_sigs)
        self._http = httpx.AsyncClient(timeout=5)
        _routes(ctx.router, self)
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="oracle-tick"))
        self._tasks.append(asyncio.create_task(self._epoch_loop(), name="oracle-epochs"))
        log.info(
            "oracle sync: epoch %g s from genesis %d (now epoch %d), %d oracle(s), quorum %d",
            self.settings.epoch_seconds,
            self.settings.genesis_time,
            self.clock.epoch_at(time.time()),
            len(self.oracles),
            quorum(len(self.oracles)),
        )

    async def stop(self) -> None:
        await cancel_tasks([*self._tasks, *self._closing.values(), *self._writes])
        if self.journal is not None:
            with contextlib.suppress(OSError):
                self.journal.flush()
        if self._http is not None:
            await self._http.aclose()

    # -- who is who ----------------------------------------------------------------------------

    def _dauth(self) -> Any:
        try:
            return self.ctx.service("dauth")
        except LookupError:
            return None

    @property
    def oracles(self) -> list[str]:
        """The oracle set: dAuth's when it runs, else the configured list (always including us)."""
        dauth = self._dauth()
        found: list[str] = []
        if dauth is not None:
            with contextlib.suppress(Exception):
                found = [normalize_address(a) for a in dauth.oracles()]
        if not found:
            found = [normalize_address(a) for a in self.settings.oracles]
        if self.me not in found:
            found.append(self.me)
        return sorted(set(found))

    def admitted(self, address: str) -> bool:
        dauth = self._dauth()
        if dauth is None:
            return True
        try:
            return bool(dauth.is_admitted(address))
        except Exception:
            return True

    # -- measuring -----------------------------------------------------------------------------

    def _heard(self, node: str, t: float) -> None:
        self.hb.record(node, t)
        if self.journal is not None:
            self.journal.add(node, t)

    async def _on_heartbeat(self, env: Envelope) -> None:
        if self.admitted(env.sender):
            self._heard(env.sender, time.time())

    async def _tick_loop(self) -> None:
        """Our own heartbeats never come back to us: record our own liveness at the same rate (and
        write what was heard since the last tick to the journal)."""
        while True:
            self._heard(self.me, time.time())
            if self.journal is not None:
                try:
                    await asyncio.to_thread(self.journal.flush)
                except OSError as exc:
                    log.warning("oracle sync: heartbeat journal not written: %s", exc)
            await asyncio.sleep(self.settings.heartbeat)

    def local_table(self, epoch: int) -> Table:
        """This oracle's measurement of every node for `epoch` (a subclass may lie, in tests)."""
        s = self.settings
        return self.hb.table(s.heartbeat, self.clock.start(epoch), self.clock.end(epoch), slack=s.gap_slack)

    # -- the epoch loop ------------------------------------------------------------------------

    async def _epoch_loop(self) -> None:
        epoch = self.clock.epoch_at(time.time())
        while True:
            wake = self.clock.end(epoch) + self.settings.delay
            await asyncio.sleep(max(0.0, wake - time.time()))
            if epoch not in self.records and epoch not in self._closing:
                task = asyncio.create_task(self.close_epoch(epoch), name=f"oracle-close-{epoch}")
                self._closing[epoch] = task
                task.add_done_callback(functools.partial(self._closed, epoch))
            self._forget_before(epoch - KEEP_INBOX_EPOCHS)
            self.hb.prune(self.clock.start(epoch - 1) - max_gap(self.settings.heartbeat) - 1)
            if self.journal is not None:
                try:
                    await asyncio.to_thread(self.journal.rewrite, self.hb)
                except OSError as exc:
                    log.warning("oracle sync: heartbeat journal not rewritten: %s", exc)
            epoch += 1

    def _closed(self, epoch: int, _task: asyncio.Task[EpochRecord | None]) -> None:
        self._closing.pop(epoch, None)

    def _forget_before(self, epoch: int) -> None:
        for e in [e for e in self._inbox if e < epoch]:
            del self._inbox[e]

    def _box(self, epoch: int) -> _Inbox:
        box = self._inbox.get(epoch)
        if box is None:
            box = self._inbox[epoch] = _Inbox()
        return box

    async def _gather(self, box: _Inbox, which: str, want: set[str], deadline: float) -> None:
        """Wait until every oracle in `want` has sent its `which` message, or the (wall-clock) deadline."""
        while True:
            have: dict[str, Any] = getattr(box, which)
            if want <= set(have):
                return
            left = deadline - time.time()
            if left <= 0:
                return
            box.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.changed.wait(), left)

    async def close_epoch(self, epoch: int) -> EpochRecord | None:
        """Run the three phases for `epoch`; store and return the agreed record (None if it failed)."""
        try:
            return await self._close(epoch)
        except NoQuorum as exc:
            self.failures[epoch] = str(exc)
            log.warning("epoch %d not closed: %s", epoch, exc)
        except Exception as exc:
            self.failures[epoch] = f"error: {exc}"
            log.exception("epoch %d close failed", epoch)
        return None

    async def _close(self, epoch: int) -> EpochRecord:
        s, net, oracles = self.settings, self.ctx.network, self.oracles
        box = self._box(epoch)
        # Phase deadlines are points on the shared epoch clock, not "T after I got here": an oracle
        # that moved on early (it had every table) still waits for one that waited out a silent peer.
        t0, timeout = max(self.clock.end(epoch) + s.delay, time.time()), s.timeout

        # 1. our signed local table, then the others'.
        mine = await asyncio.to_thread(self.local_table, epoch)  # ~0.7 s for 1,000 nodes a day
        box.tables[self.me] = SignedTable(
            oracle=self.me, values=mine, sig=sign_table(self.ctx.key, "table", net, epoch, mine)
        )
        await self._to_oracles(MSG_TABLE, {"epoch": epoch, **_wire(box.tables[self.me])})
        await self._gather(box, "tables", set(oracles), t0 + timeout)

        # 2. median over the eligible voters; exchange medians with those still talking.
        tables = {o: t.values for o, t in box.tables.items() if o in oracles}
        proposal = propose(tables, oracles, s.eligible_fraction)
        box.medians[self.me] = SignedTable(
            oracle=self.me,
            values=proposal.values,
            sig=sign_table(self.ctx.key, "median", net, epoch, proposal.values),
        )
        await self._to_oracles(MSG_MEDIAN, {"epoch": epoch, **_wire(box.medians[self.me])})
        await self._gather(box, "medians", set(tables), t0 + 2 * timeout)
        try:
            agreed, supporters = agree(
                {o: t.values for o, t in box.medians.items() if o in oracles}, len(oracles)
            )
        except NoQuorum:
            # Medians came too late to count here, but the others may have agreed on the very table
            # we computed: co-sign it if enough of them signed it by the end of the last phase. Only
            # our own median is ever adopted this way, so a liar cannot talk us into its table.
            agreed = proposal.values
            supporters = await self._backers(box, net, epoch, agreed, len(oracles), t0 + 3 * timeout)

        # 3. sign the agreed table (whole, and per node for the reward contracts) and collect.
        thash = "0x" + table_hash("agreed", net, epoch, agreed).hex()
        node_sigs = await asyncio.to_thread(self._sign_nodes, epoch, agreed)
        ours = OracleSignatures(
            table_sig=sign_table(self.ctx.key, "agreed", net, epoch, agreed), nodes=node_sigs
        )
        attest = await self._attestations(epoch, agreed)
        box.sigs[self.me] = {"table_hash": thash, "sigs": ours, "attest": attest}
        await self._to_oracles(
            MSG_SIGS,
            {"epoch": epoch, "table_hash": thash, "table_sig": ours.table_sig, "nodes": node_sigs,
             "attest": attest},
        )  # fmt: skip
        await self._gather(box, "sigs", set(supporters), t0 + 3 * timeout)

        record = EpochRecord(
            network=net,
            epoch=epoch,
            start=self.clock.start(epoch),
            end=self.clock.end(epoch),
            values=agreed,
            table_hash=thash,
            oracles=oracles,
            quorum=quorum(len(oracles)),
            voters=proposal.voters,
            supporters=supporters,
            tables={o: t for o, t in box.tables.items() if o in oracles},
            closed_at=time.time(),
        )
        await self._merge_sigs(record, box)
        await self._record_misbehaviour(epoch, tables, agreed, box)
        self.records[epoch] = record
        self.failures.pop(epoch, None)
        await self._submit_attestations(record)
        await self._store(record)
        log.info(
            "epoch %d closed: %d node(s), voters %d/%d, signers %d",
            epoch, len(agreed), len(proposal.voters), len(oracles), len(record.signatures),
        )  # fmt: skip
        return record

    async def _to_oracles(self, type: str, payload: dict[str, Any]) -> None:
        """Phase messages go to the other oracles' inboxes only (edge nodes have no use for them)."""
        others = [o for o in self.oracles if o != self.me]
        results = await asyncio.gather(
            *(self.ctx.send(o, type, payload) for o in others), return_exceptions=True
        )
        for o, r in zip(others, results, strict=True):
            if isinstance(r, Exception):
                log.warning("could not send %s to oracle %s: %s", type, o, r)

    async def _backers(
        self, box: _Inbox, net: str, epoch: int, values: Table, n: int, deadline: float
    ) -> list[str]:
        """Oracles that signed `values` as the agreed table, once with us they make a quorum."""
        want = "0x" + table_hash("agreed", net, epoch, values).hex()
        while True:
            backers = {o for o, e in box.sigs.items() if e["table_hash"] == want} | {self.me}
            if len(backers) >= quorum(n):
                log.info("epoch %d: joined the table %d oracle(s) agreed on", epoch, len(backers) - 1)
                return sorted(backers)
            left = deadline - time.time()
            if left <= 0:
                raise NoQuorum(f"no quorum of medians, and {len(backers) - 1} oracle(s) signed our table")
            box.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.changed.wait(), left)

    def _sign_nodes(self, epoch: int, agreed: Table) -> dict[str, str]:
        return {n: "0x" + sign_availability(self.ctx.key, n, epoch, [v]).hex() for n, v in agreed.items()}

    async def _merge_sigs(self, record: EpochRecord, box: _Inbox) -> None:
        """Keep the signatures that are over this very table (checked), from oracles of the set."""
        for oracle, entry in box.sigs.items():
            if oracle in record.signatures or oracle not in record.oracles:
                continue
            if entry["table_hash"] != record.table_hash:
                continue
            sigs: OracleSignatures = entry["sigs"]
            who = table_signer(sigs.table_sig, "agreed", record.network, record.epoch, record.values)
            if who != oracle:
                continue
            if oracle != self.me and not await asyncio.to_thread(self._node_sigs_ok, record, oracle, sigs):
                self._note_misbehaviour(record.epoch, oracle, "bad node signatures", {})
                continue
            record.signatures[oracle] = sigs
            for job, att in (entry.get("attest") or {}).items():
                slot = record.attestations.setdefault(job, {"nodes": att["nodes"], "signatures": {}})
                if slot["nodes"] == att["nodes"]:
                    slot["signatures"][oracle] = att["sig"]  # type: ignore[index]

    @staticmethod
    def _node_sigs_ok(record: EpochRecord, oracle: str, sigs: OracleSignatures) -> bool:
        if set(sigs.nodes) != set(record.values):
            return False
        for node, sig in sigs.nodes.items():
            try:
                digest = availability_digest(node, record.epoch, [record.values[node]])
                if recover_address(digest, bytes.fromhex(sig.removeprefix("0x"))) != oracle:
                    return False
            except Exception:
                return False
        return True

    # -- messages from the other oracles -------------------------------------------------------

    def _accept(self, env: Envelope, kind: str) -> tuple[int, Table, str] | None:
        """Validate a table-carrying message; None (logged) if it is not acceptable."""
        if env.sender not in self.oracles:
            log.warning("%s from %s refused: not an oracle", env.type, env.sender)
            return None
        p = env.payload
        epoch = p.get("epoch")
        now_epoch = self.clock.epoch_at(time.time())
        if not isinstance(epoch, int) or not now_epoch - KEEP_INBOX_EPOCHS < epoch <= now_epoch:
            log.warning("%s from %s refused: epoch %r out of range", env.type, env.sender, epoch)
            return None
        try:
            values = check_table(p.get("values"))
        except ValueError as exc:
            log.warning("%s from %s refused: %s", env.type, env.sender, exc)
            return None
        sig = p.get("sig")
        if not isinstance(sig, str) or table_signer(sig, kind, env.network, epoch, values) != env.sender:
            log.warning("%s from %s refused: bad table signature", env.type, env.sender)
            return None
        return epoch, values, sig

    def _put(
        self, slot: dict[str, SignedTable], epoch: int, oracle: str, values: Table, sig: str, kind: str
    ) -> None:
        old = slot.get(oracle)
        if old is not None:
            if old.values != values:
                self._note_misbehaviour(
                    epoch, oracle, f"equivocation: signed two different {kind} tables", {}
                )
            return
        slot[oracle] = SignedTable(oracle=oracle, values=values, sig=sig)
        self._box(epoch).changed.set()

    async def _on_table(self, env: Envelope) -> None:
        got = self._accept(env, "table")
        if got is not None:
            epoch, values, sig = got
            self._put(self._box(epoch).tables, epoch, env.sender, values, sig, "local")

    async def _on_median(self, env: Envelope) -> None:
        got = self._accept(env, "median")
        if got is not None:
            epoch, values, sig = got
            self._put(self._box(epoch).medians, epoch, env.sender, values, sig, "median")

    async def _on_sigs(self, env: Envelope) -> None:
        if env.sender not in self.oracles:
            log.warning("%s from %s refused: not an oracle", env.type, env.sender)
            return
        p = env.payload
        epoch, thash, tsig, nodes = p.get("epoch"), p.get("table_hash"), p.get("table_sig"), p.get("nodes")
        if not (
            isinstance(epoch, int)
            and isinstance(thash, str)
            and isinstance(tsig, str)
            and isinstance(nodes, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in nodes.items())
        ):
            log.warning("%s from %s refused: malformed", env.type, env.sender)
            return
        attest = p.get("attest") if isinstance(p.get("attest"), dict) else {}
        entry = {"table_hash": thash, "sigs": OracleSignatures(table_sig=tsig, nodes=nodes), "attest": attest}
        record = self.records.get(epoch)
        if record is not None:  # late: add to the stored record if it signs the same table
            if env.sender in record.signatures:
                if thash != record.table_hash:
                    self._note_misbehaviour(epoch, env.sender, "equivocation: signed two agreed tables", {})
                return
            if thash != record.table_hash:
                self._note_misbehaviour(epoch, env.sender, "signed a table other than the agreed one", {})
                return
            box = _Inbox(sigs={env.sender: entry})
            await self._merge_sigs(record, box)
            if env.sender in record.signatures:
                await self._store(record)
            return
        box = self._box(epoch)
        old = box.sigs.get(env.sender)
        if old is not None:
            if old["table_hash"] != thash:
                self._note_misbehaviour(epoch, env.sender, "equivocation: signed two agreed tables", {})
            return
        box.sigs[env.sender] = entry
        box.changed.set()

    # -- misbehaviour --------------------------------------------------------------------------

    def _note_misbehaviour(self, epoch: int, oracle: str, reason: str, detail: dict[str, Any]) -> None:
        log.warning("oracle %s misbehaved in epoch %d: %s", oracle, epoch, reason)
        task = asyncio.ensure_future(self._write_misbehaviour(epoch, oracle, reason, detail))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_misbehaviour(self, epoch: int, oracle: str, reason: str, detail: dict[str, Any]) -> None:
        cstore = self._cstore()
        if cstore is None:
            return
        value = {"epoch": epoch, "oracle": oracle, "reason": reason, "reporter": self.me,
                 "at": time.time(), **detail}  # fmt: skip
        try:
            await cstore.hset(MISBEHAVIOUR_KEY, f"{epoch}:{oracle}:{self.me}", value)
        except Exception as exc:
            log.warning("could not record misbehaviour: %s", exc)

    async def _record_misbehaviour(
        self, epoch: int, tables: dict[str, Table], agreed: Table, box: _Inbox
    ) -> None:
        for oracle, bad in disagreements(tables, agreed, self.settings.disagree_by).items():
            sample = dict(list(bad.items())[:10])
            why = f"disagrees by more than {self.settings.disagree_by} on {len(bad)} node(s)"
            detail = {"reported": {n: r for n, (r, _) in sample.items()},
                      "agreed": {n: a for n, (_, a) in sample.items()}, "nodes": len(bad)}  # fmt: skip
            self._note_misbehaviour(epoch, oracle, why, detail)

    # -- storage -------------------------------------------------------------------------------

    def _cstore(self) -> Any:
        try:
            return self.ctx.service("cstore")
        except LookupError:
            return None

    def _load_records(self) -> None:
        for path in self._dir.glob("*.json"):
            try:
                rec = EpochRecord.model_validate_json(path.read_bytes())
            except Exception as exc:
                log.error("unreadable epoch record %s: %s", path, exc)
                continue
            self.records[rec.epoch] = rec

    async def _store(self, record: EpochRecord) -> None:
        """Local file (what this oracle signs from), R1FS document, CSTORE entry and index."""
        path = self._dir / f"{record.epoch}.json"
        tmp = path.with_suffix(".tmp")
        await asyncio.to_thread(_write, tmp, path, record.model_dump_json(exclude={"cid"}).encode())
        record.cid = await self._store_r1fs(record)
        await asyncio.to_thread(_write, tmp, path, record.model_dump_json().encode())
        cstore = self._cstore()
        if cstore is None:
            return
        try:
            await cstore.hset(EPOCH_KEY.format(record.epoch), self.me, compact(record))
            await cstore.hset(
                INDEX_KEY,
                str(record.epoch),
                {"table_hash": record.table_hash, "voters": record.voters, "nodes": len(record.values),
                 "cid": record.cid, "closed_at": record.closed_at},
            )  # fmt: skip
        except Exception as exc:
            log.warning("epoch %d: CSTORE write failed: %s", record.epoch, exc)

    async def _store_r1fs(self, record: EpochRecord) -> str | None:
        """The record as a JSON document in R1FS (a hook: skipped when the node has no R1FS)."""
        try:
            r1fs = self.ctx.service("r1fs")
        except LookupError:
            return None
        data = record.model_dump_json(exclude={"cid"}, indent=1).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        try:
            result = await r1fs.add_stream(chunks())  # type: ignore[attr-defined]
            return str(result.cid)
        except Exception as exc:
            log.warning("epoch %d: R1FS store failed: %s", record.epoch, exc)
            return None

    async def adopt(self, epoch: int) -> EpochRecord | None:
        """A record this oracle did not take part in (it was down), from CSTORE, trusted only if a
        quorum of the oracle set signed its table."""
        cstore = self._cstore()
        if cstore is None:
            return None
        try:
            fields = await cstore.hgetall(EPOCH_KEY.format(epoch))
        except Exception:
            return None
        for raw in fields.values():
            try:
                rec = EpochRecord.model_validate(raw)
            except Exception:
                continue
            if rec.epoch != epoch or rec.network != self.ctx.network:
                continue
            if len(set(rec.valid_signers()) & set(self.oracles)) >= quorum(len(self.oracles)):
                self.records[epoch] = rec
                await asyncio.to_thread(
                    _write,
                    self._dir / f"{epoch}.tmp",
                    self._dir / f"{epoch}.json",
                    rec.model_dump_json().encode(),
                )
                return rec
        return None

    async def history_start(self) -> int | None:
        """The first epoch the oracle network agreed on (earlier epochs were never measured)."""
        known = set(self.records)
        cstore = self._cstore()
        if cstore is not None:
            with contextlib.suppress(Exception):
                known.update(int(k) for k in (await cstore.hgetall(INDEX_KEY)))
        return min(known) if known else None

    # -- PoAI attestations ---------------------------------------------------------------------

    async def _jobs(self) -> dict[int, list[str]]:
        cstore = self._cstore()
        if cstore is None:
            return {}
        out: dict[int, list[str]] = {}
        for key in await cstore.keys(POAI_JOB_PREFIX):
            raw = await cstore.get(key)
            try:
                job_id = int(key[len(POAI_JOB_PREFIX) :])
                nodes = [normalize_address(n) for n in (raw or {}).get("nodes", [])]
            except Exception:
                log.warning("ignoring malformed PoAI job entry %s", key)
                continue
            out[job_id] = nodes
        return out

    def chain(self) -> Any:
        if self._chain is None and self.settings.deployment is not None:
            from r1os.chain.client import ChainClient

            self._chain = ChainClient(self.settings.deployment, self.ctx.key)
        return self._chain

    async def _attestations(self, epoch: int, agreed: Table) -> dict[str, dict[str, Any]]:
        """Sign, for each PoAI job in CSTORE running in `epoch`, the listed nodes that were available."""
        jobs = await self._jobs()
        chain = self.chain()
        if not jobs or chain is None:
            return {}
        escrow = self.settings.deployment.address("PoAIEscrow")  # type: ignore[union-attr]
        out: dict[str, dict[str, Any]] = {}
        for job_id, listed in sorted(jobs.items()):
            try:
                job = await chain.job(job_id)
            except Exception as exc:
                log.warning("PoAI job %d: %s", job_id, exc)
                continue
            if job.closed or not job.start_epoch <= epoch < job.end_epoch:
                continue
            served = sorted({n for n in listed if agreed.get(n, 0) >= self.settings.poai_min_availability})[
                : job.nodes
            ]
            if not served:
                continue
            sig = sign_attestation(self.ctx.key, escrow, job_id, epoch, served)
            out[str(job_id)] = {"nodes": served, "sig": "0x" + sig.hex()}
        return out

    async def _submit_attestations(self, record: EpochRecord) -> None:
        """The lowest-address signer submits each attestation that has enough signatures."""
        chain = self.chain()
        if chain is None or not record.attestations:
            return
        for job, att in record.attestations.items():
            sigs: dict[str, str] = att["signatures"]  # type: ignore[assignment]
            if len(sigs) < record.quorum or min(sigs) != self.me:
                continue
            try:
                paid = await chain.attest(int(job), record.epoch, att["nodes"], list(sigs.values()))
                att["paid"] = paid
                log.info("PoAI job %s epoch %d attested: paid %d", job, record.epoch, paid)
            except Exception as exc:
                att["error"] = str(exc)
                log.warning("PoAI job %s epoch %d: attest failed: %s", job, record.epoch, exc)

    # -- serving signatures --------------------------------------------------------------------

    async def trusted(self, epoch: int) -> EpochRecord | None:
        return self.records.get(epoch) or await self.adopt(epoch)

    def last_closed(self) -> int | None:
        return max(self.records) if self.records else None

    async def availability(self, node: str, first: int, last: int) -> list[dict[str, Any]]:
        """Per epoch: the agreed value and the oracles' per-epoch signatures. Epochs before the
        network's first agreed epoch were never measured and count as 0 (unsigned)."""
        node = normalize_address(node)
        if last - first + 1 > MAX_EPOCHS_PER_CLAIM:
            raise ValueError(f"at most {MAX_EPOCHS_PER_CLAIM} epochs at once")
        current = self.clock.epoch_at(time.time())
        if last >= current:
            raise ValueError(f"epoch {last} has not ended (current epoch {current})")
        start = await self.history_start()
        out = []
        for e in range(first, last + 1):
            rec = await self.trusted(e)
            if rec is None:
                if start is None or e < start:
                    out.append({"epoch": e, "value": 0, "measured": False, "signatures": {}})
                    continue
                raise LookupError(f"epoch {e} has no agreed table on this oracle")
            out.append({"epoch": e, "value": rec.value(node), "measured": True,
                        "signatures": rec.node_signatures(node)})  # fmt: skip
        return out

    async def sign_range(self, node: str, first: int, last: int) -> dict[str, Any]:
        """This oracle's claim signature over a node's agreed availability for epochs first..last."""
        per = await self.availability(node, first, last)
        values = [p["value"] for p in per]
        sig = sign_availability(self.ctx.key, node, first, values)
        return {"oracle": self.me, "node": normalize_address(node), "first_epoch": first,
                "availabilities": values, "signature": "0x" + sig.hex()}  # fmt: skip

    async def collect_claim(self, node: str, first: int, last: int) -> dict[str, Any]:
        """A claim-ready `SignedAvailability`: our signature plus those of the oracles we can reach."""
        mine = await self.sign_range(node, first, last)
        urls = [
            p.heartbeat.url
            for p in self.ctx.netmap.online()
            if p.address in self.oracles and p.address != self.me and p.heartbeat.url
        ]
        sigs = [mine["signature"]]
        assert self._http is not None

        async def ask(url: str) -> str | None:
            try:
                r = await self._http.get(  # type: ignore[union-attr]
                    f"{url}/v1/oracle/sign/{node}", params={"epochs": f"{first}:{last}"}
                )
                r.raise_for_status()
                got = r.json()
                if got["availabilities"] != mine["availabilities"]:
                    log.warning("oracle at %s signs other values for %s", url, node)
                    return None
                return str(got["signature"])
            except Exception as exc:
                log.info("no signature from %s: %s", url, exc)
                return None

        for sig in await asyncio.gather(*(ask(u) for u in urls)):
            if sig:
                sigs.append(sig)
        return {"node": mine["node"], "first_epoch": first, "availabilities": mine["availabilities"],
                "signatures": sigs}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        now = time.time()
        return {
            "oracle": self.me,
            "network": self.ctx.network,
            "genesis_time": self.settings.genesis_time,
            "epoch_seconds": self.settings.epoch_seconds,
            "heartbeat": self.settings.heartbeat,
            "current_epoch": self.clock.epoch_at(now),
            "oracles": self.oracles,
            "quorum": quorum(len(self.oracles)),
            "last_closed": self.last_closed(),
            "epochs": [
                {
                    "epoch": r.epoch,
                    "nodes": len(r.values),
                    "voters": r.voters,
                    "signers": sorted(r.signatures),
                    "table_hash": r.table_hash,
                    "cid": r.cid,
                    "closed_at": r.closed_at,
                }
                for r in sorted(self.records.values(), key=lambda r: r.epoch)
            ],  # fmt: skip
            "failed": {str(e): why for e, why in sorted(self.failures.items())},
        }


def compact(record: EpochRecord) -> dict[str, Any]:
    """The CSTORE form of a record: agreed values and every oracle's table signature (enough to
    trust or adopt it), without the local tables and per-node signatures, which stay in the R1FS
    document; so a 10,000-node network still fits CSTORE's 1 MiB values."""
    out = record.model_dump(mode="json", exclude={"tables"})
    for sigs in out["signatures"].values():
        sigs["nodes"] = {}
    return out


def _wire(t: SignedTable) -> dict[str, Any]:
    return {"values": t.values, "sig": t.sig}


def _write(tmp: Path, path: Path, data: bytes) -> None:
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _range(svc: OracleSyncService, epochs: str | None) -> tuple[int, int]:
    last = svc.last_closed()
    default = (min(svc.records), last) if last is not None else None
    try:
        return parse_range(epochs, default=default)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _routes(router: APIRouter, svc: OracleSyncService) -> None:
    @router.get("/v1/oracle/epochs")
    async def epochs() -> dict[str, Any]:
        return svc.summary()

    @router.get("/v1/oracle/epochs/{epoch}")
    async def epoch(epoch: int) -> dict[str, Any]:
        rec = await svc.trusted(epoch)
        if rec is None:
            raise HTTPException(404, f"epoch {epoch} has no agreed table on this oracle")
        return rec.model_dump(mode="json")

    @router.get("/v1/oracle/availability/{node}")
    async def availability(
        node: str,
        epochs: str | None = Query(None, description="A:B, inclusive"),
        claim: bool = Query(True, description="also gather range signatures for a claim"),
    ) -> dict[str, Any]:
        first, last = _range(svc, epochs)
        try:
            per = await svc.availability(node, first, last)
            out: dict[str, Any] = {"node": normalize_address(node), "first_epoch": first,
                                   "last_epoch": last, "epochs": per}  # fmt: skip
            if claim:
                out["claim"] = await svc.collect_claim(node, first, last)
        except (ValueError, LookupError) as exc:
            log.info("availability request for %s refused: %s", node, exc)
            raise HTTPException(404 if isinstance(exc, LookupError) else 400, str(exc)) from None
        except Exception as exc:  # e.g. a malformed address
            log.info("availability request for %s refused: %s", node, exc)
            raise HTTPException(400, str(exc)) from None
        return out

    @router.get("/v1/oracle/sign/{node}")
    async def sign(node: str, epochs: str = Query(..., description="A:B, inclusive")) -> dict[str, Any]:
        first, last = _range(svc, epochs)
        try:
            return await svc.sign_range(node, first, last)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except Exception as exc:
            log.info("sign request for %s refused: %s", node, exc)
            raise HTTPException(400, str(exc)) from None

    @router.get("/v1/oracle/misbehaviour")
    async def misbehaviour() -> dict[str, Any]:
        cstore = svc._cstore()
        return {"entries": await cstore.hgetall(MISBEHAVIOUR_KEY) if cstore is not None else {}}


def settings_from(config: Any, dauth: Any = None) -> OracleSettings:
    """Oracle settings from a NodeConfig: epoch parameters from dAuth's network config when given,
    else the config's own fields, else the chain deployment file, else Ratio1's mainnet defaults."""
    from r1os.oracle._epochs import DAY, MAINNET_GENESIS

    deployment = None
    path = getattr(config, "chain_deployment", None)
    if path:
        from r1os.chain.deployment import Deployment

        try:
            deployment = Deployment.load(Path(path))
        except Exception as exc:
            log.error("oracle: cannot read the chain deployment %s: %s", path, exc)
    netcfg = getattr(dauth, "network_config", None) if dauth is not None else None
    genesis = _first(getattr(netcfg, "genesis_time", None), getattr(config, "genesis_time", None),
                     deployment.genesis_time if deployment else None, MAINNET_GENESIS)  # fmt: skip
    epoch_s = _first(getattr(netcfg, "epoch_seconds", None), getattr(config, "epoch_seconds", None),
                     deployment.epoch_seconds if deployment else None, DAY)  # fmt: skip
    return OracleSettings(
        genesis_time=float(genesis),
        epoch_seconds=float(epoch_s),
        heartbeat=float(config.heartbeat_interval),
        oracles=list(config.oracles),
        deployment=deployment,
    )


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)
