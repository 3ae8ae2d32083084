"""OracleSync: the oracle node service that measures availability and agrees on it each epoch.

It records the receive time of every admitted node's heartbeats (and ticks for itself) and the health
of the paid replicas they report (`_replica_health`), and shortly
after each epoch ends runs three broadcast phases with the other oracles (`oracle.table`,
`oracle.median`, `oracle.sigs`; see `_consensus` for the rules, `_inbox` for the message checks). The
agreed record goes to the archive (`_records`: local files, CSTORE, R1FS), with the PoAI attestations
(`_poai`); misbehaving oracles are reported there too. Signatures for reward claims over any range of
agreed epochs are served over HTTP (`_api`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from r1os.chain.digests import MAX_EPOCHS_PER_CLAIM, sign_availability
from r1os.cstore import CStoreService
from r1os.dauth import DauthService
from r1os.errors import IdentityError, NodeError
from r1os.identity import normalize_address
from r1os.node import Service, ServiceContext
from r1os.oracle._api import install_routes
from r1os.oracle._availability import HeartbeatLog, max_gap
from r1os.oracle._consensus import (
    Attestation,
    EpochRecord,
    NoQuorum,
    OracleSignatures,
    SignedTable,
    Table,
    agree,
    claim_digests,
    claims_signed_by,
    disagreements,
    majority_served,
    propose,
    quorum,
    sign_claims,
    sign_table,
    table_hash,
    table_signer,
)
from r1os.oracle._epochs import EpochClock, parse_range
from r1os.oracle._errors import BadEpochRange, BadNodeAddress, EpochNotAgreed, EpochNotEnded
from r1os.oracle._inbox import (
    KEEP_INBOX_EPOCHS,
    MSG_MEDIAN,
    MSG_SIGS,
    MSG_TABLE,
    Inbox,
    Refused,
    SigsEntry,
    parse_sigs,
    parse_table,
)
from r1os.oracle._journal import HeartbeatJournal
from r1os.oracle._models import (
    ClaimSignatures,
    ClosedEpoch,
    EpochAvailability,
    MisbehaviourEntry,
    NodeAvailability,
    OracleStatus,
    RangeSignature,
)
from r1os.oracle._parts import MSG_PART, Assembler, PartRefused, split
from r1os.oracle._poai import PoaiAttester
from r1os.oracle._records import EpochArchive
from r1os.oracle._replica_health import ReplicaHealth
from r1os.oracle._settings import OracleSettings
from r1os.r1fs import R1fsService
from r1os.wire import Envelope

log = logging.getLogger("r1os.oracle")

#: Seconds to wait for another oracle's range signature when gathering a claim.
ASK_TIMEOUT = 5.0


def node_address(node: str) -> str:
    """`node` in EIP-55 form; `BadNodeAddress` if it is not an address."""
    try:
        return normalize_address(node)
    except IdentityError as exc:
        raise BadNodeAddress(str(exc)) from None


class OracleSyncService(Service):
    """Availability measurement and per-epoch consensus on an oracle node."""

    name = "oracle"

    def __init__(self, settings: OracleSettings) -> None:
        self.settings = settings
        self.clock = EpochClock(settings.genesis_time, settings.epoch_seconds)
        self.hb = HeartbeatLog()
        self.health = ReplicaHealth(self.clock, settings.heartbeat)
        self.journal: HeartbeatJournal | None = None
        self.failures: dict[int, str] = {}
        self._inbox: dict[int, Inbox] = {}
        self._closing: dict[int, asyncio.Task[EpochRecord | None]] = {}
        self._ctx: ServiceContext | None = None
        self._archive: EpochArchive | None = None
        self._poai: PoaiAttester | None = None
        self._dauth: DauthService | None = None
        self._parts = Assembler((MSG_TABLE, MSG_MEDIAN, MSG_SIGS))

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._dauth = ctx.find(DauthService)
        if self._dauth is not None:  # dAuth's signed network config wins over local settings
            self.settings = self.settings.with_network(self._dauth.network_config)
            self.clock = EpochClock(self.settings.genesis_time, self.settings.epoch_seconds)
            self.health = ReplicaHealth(self.clock, self.settings.heartbeat)
        cstore = ctx.find(CStoreService)
        self._archive = EpochArchive(
            ctx.data_dir / "epochs", ctx.address, ctx.network, cstore, ctx.find(R1fsService)
        )
        self._archive.load()
        self._poai = PoaiAttester(
            ctx.key, self.settings.deployment, cstore, self.settings.poai_min_availability
        )
        self.journal = HeartbeatJournal(ctx.data_dir / "heartbeats.bin")
        since = self.clock.start(self.clock.epoch_at(time.time()) - 1) - max_gap(self.settings.heartbeat) - 1
        if kept := self.journal.load(self.hb, since):
            log.info("oracle sync: %d heartbeats of this epoch and the last read back from disk", kept)
        self.journal.rewrite(self.hb)
        ctx.on("hb", self._on_heartbeat)
        ctx.on(MSG_TABLE, self._on_table)
        ctx.on(MSG_MEDIAN, self._on_median)
        ctx.on(MSG_SIGS, self._on_sigs)
        ctx.on(MSG_PART, self._on_part)
        install_routes(ctx.router, self)
        ctx.spawn(self._tick_loop(), "tick")
        ctx.spawn(self._epoch_loop(), "epochs")
        log.info(
            "oracle sync: epoch %g s from genesis %d (now epoch %d), %d oracle(s), quorum %d",
            self.settings.epoch_seconds,
            self.settings.genesis_time,
            self.clock.epoch_at(time.time()),
            len(self.oracles),
            quorum(len(self.oracles)),
        )

    async def stop(self) -> None:
        """Write what was heard since the last tick (the node has already stopped our tasks)."""
        if self.journal is not None:
            try:
                self.journal.flush()
            except OSError as exc:
                log.warning("oracle sync: heartbeat journal not written: %s", exc)

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise NodeError("the oracle service has not started")
        return self._ctx

    @property
    def archive(self) -> EpochArchive:
        """The agreed records and their copies in CSTORE and R1FS (from `start` on)."""
        if self._archive is None:
            raise NodeError("the oracle service has not started")
        return self._archive

    @property
    def poai(self) -> PoaiAttester:
        if self._poai is None:
            raise NodeError("the oracle service has not started")
        return self._poai

    @property
    def records(self) -> dict[int, EpochRecord]:
        """The agreed records this oracle signs claims from, by epoch."""
        return self.archive.records

    # -- who is who ----------------------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.ctx.address

    @property
    def oracles(self) -> list[str]:
        """The oracle set: dAuth's when it runs, else the configured list (always including us)."""
        found = [normalize_address(a) for a in self._dauth.oracles()] if self._dauth is not None else []
        if not found:
            found = [normalize_address(a) for a in self.settings.oracles]
        if self.me not in found:
            found.append(self.me)
        return sorted(set(found))

    def admitted(self, address: str) -> bool:
        return self._dauth is None or self._dauth.is_admitted(address)

    # -- measuring -----------------------------------------------------------------------------

    def heard(self, node: str, t: float, services_info: object = None) -> None:
        """Record a heartbeat of `node` received at `t` (kept in memory and in the journal), and the
        health of the replicas it reports in `services_info` (kept in memory only)."""
        self.hb.record(node, t)
        self.health.record(node, t, services_info)
        if self.journal is not None:
            self.journal.add(node, t)

    async def _on_heartbeat(self, env: Envelope) -> None:
        if self.admitted(env.sender):
            self.heard(env.sender, time.time(), env.payload.get("services_info"))

    def _own_services_info(self) -> dict[str, Any] | None:
        """What this node's own heartbeat reports about its replicas (an oracle may hold some too)."""
        return self.ctx.services_info() or None

    async def _tick_loop(self) -> None:
        """Our own heartbeats never come back to us: record our own liveness (and replicas) at the
        same rate (and write what was heard since the last tick to the journal)."""
        while True:
            self.heard(self.me, time.time(), self._own_services_info())
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

    async def local_served(self, epoch: int) -> dict[str, list[str]]:
        """This oracle's PoAI report for `epoch`: for each job listed in CSTORE, the listed nodes it
        saw serving the job healthily for most of the epoch (a subclass may lie, in tests)."""
        try:
            listed = await self.poai.jobs()
        except Exception as exc:  # no report costs this oracle its PoAI votes, not the epoch
            log.warning("epoch %d: PoAI jobs not readable: %s", epoch, exc)
            return {}
        return self.health.served_jobs(epoch, listed)

    # -- the epoch loop ------------------------------------------------------------------------

    async def _epoch_loop(self) -> None:
        epoch = self.clock.epoch_at(time.time())
        while True:
            wake = self.clock.end(epoch) + self.settings.delay
            await asyncio.sleep(max(0.0, wake - time.time()))
            if epoch not in self.records and epoch not in self._closing:
                task = self.ctx.spawn(self.close_epoch(epoch), f"close-{epoch}")
                self._closing[epoch] = task
                task.add_done_callback(functools.partial(self._closed, epoch))
            self._forget_before(epoch - KEEP_INBOX_EPOCHS)
            self.hb.prune(self.clock.start(epoch - 1) - max_gap(self.settings.heartbeat) - 1)
            self.health.forget(epoch - 1)
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

    def inbox(self, epoch: int) -> Inbox:
        """What the other oracles sent so far for `epoch`."""
        box = self._inbox.get(epoch)
        if box is None:
            box = self._inbox[epoch] = Inbox()
        return box

    async def close_epoch(self, epoch: int) -> EpochRecord | None:
        """Run the three phases for `epoch`; store and return the agreed record (None if it failed)."""
        try:
            return await self._close(epoch)
        except NoQuorum as exc:
            self.failures[epoch] = str(exc)
            log.warning("epoch %d not closed: %s", epoch, exc)
        except Exception as exc:  # one epoch failing must not stop the loop: recorded, shown in /epochs
            self.failures[epoch] = f"error: {exc}"
            log.exception("epoch %d close failed", epoch)
        return None

    async def _close(self, epoch: int) -> EpochRecord:
        s, net, oracles, key = self.settings, self.ctx.network, self.oracles, self.ctx.key
        box = self.inbox(epoch)
        # Phase deadlines are points on the shared epoch clock, not "T after I got here": an oracle
        # that moved on early (it had every table) still waits for one that waited out a silent peer.
        t0, timeout = max(self.clock.end(epoch) + s.delay, time.time()), s.timeout

        # 1. our signed local table (with our PoAI report), then the others'.
        mine = await asyncio.to_thread(self.local_table, epoch)  # ~0.7 s for 1,000 nodes a day
        report = await self.local_served(epoch)
        box.tables[self.me] = SignedTable(
            oracle=self.me, values=mine, sig=sign_table(key, "table", net, epoch, mine, report), served=report
        )
        await self._to_oracles(MSG_TABLE, _phase_payload(epoch, box.tables[self.me]))
        await box.wait_until(lambda: set(oracles) <= box.tables.keys(), t0 + timeout)

        # 2. median over the eligible voters; exchange medians with those still talking.
        tables = {o: t.values for o, t in box.tables.items() if o in oracles}
        proposal = propose(tables, oracles, s.eligible_fraction)
        box.medians[self.me] = SignedTable(
            oracle=self.me, values=proposal.values, sig=sign_table(key, "median", net, epoch, proposal.values)
        )
        await self._to_oracles(MSG_MEDIAN, _phase_payload(epoch, box.medians[self.me]))
        await box.wait_until(lambda: set(tables) <= box.medians.keys(), t0 + 2 * timeout)
        try:
            agreed, supporters = agree(
                {o: t.values for o, t in box.medians.items() if o in oracles}, len(oracles)
            )
        except NoQuorum:
            # Medians came too late to count here, but the others may have agreed on the very table
            # we computed: co-sign it if enough of them signed it by the end of the last phase. Only
            # our own median is ever adopted this way, so a liar cannot talk us into its table.
            agreed = proposal.values
            supporters = await self._backers(box, epoch, agreed, len(oracles), t0 + 3 * timeout)

        # 3. sign the agreed table (whole, and per node for the reward contracts) and collect.
        thash = "0x" + table_hash("agreed", net, epoch, agreed).hex()
        node_sigs = await asyncio.to_thread(self._sign_nodes, epoch, agreed)
        ours = OracleSignatures(table_sig=sign_table(key, "agreed", net, epoch, agreed), nodes=node_sigs)
        # PoAI: a node is attested for a job if more than half of the voters reported it served.
        served = majority_served([box.tables[o].served for o in proposal.voters])
        attest = await self.poai.sign(epoch, agreed, served)
        box.sigs[self.me] = SigsEntry(thash, ours, attest)
        await self._to_oracles(
            MSG_SIGS,
            {"epoch": epoch, "table_hash": thash, "table_sig": ours.table_sig, "nodes": node_sigs,
             "attest": {job: a.model_dump() for job, a in attest.items()}},
        )  # fmt: skip
        await box.wait_until(lambda: set(supporters) <= box.sigs.keys(), t0 + 3 * timeout)

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
        self._report_disagreements(epoch, tables, agreed)
        self.records[epoch] = record  # from here late signatures go into the record
        self.failures.pop(epoch, None)
        await self.poai.submit(record, self.me)
        await self.archive.save(record)
        self.health.forget_epoch(epoch)  # attested: the replica counts have served their purpose
        log.info(
            "epoch %d closed: %d node(s), voters %d/%d, signers %d",
            epoch, len(agreed), len(proposal.voters), len(oracles), len(record.signatures),
        )  # fmt: skip
        return record

    async def _to_oracles(self, type: str, payload: dict[str, Any]) -> None:
        """Phase messages go to the other oracles' inboxes only (edge nodes have no use for them);
        one larger than an envelope goes as signed parts (`_parts`)."""
        others = [o for o in self.oracles if o != self.me]
        messages = [(MSG_PART, p) for p in split(type, payload)] or [(type, payload)]

        async def send(oracle: str) -> None:
            for kind, body in messages:
                await self.ctx.send(oracle, kind, body)

        results = await asyncio.gather(*(send(o) for o in others), return_exceptions=True)
        for o, r in zip(others, results, strict=True):
            if isinstance(r, Exception):
                log.warning("could not send %s to oracle %s: %s", type, o, r)

    async def _backers(self, box: Inbox, epoch: int, values: Table, n: int, deadline: float) -> list[str]:
        """Oracles that signed `values` as the agreed table, once with us they make a quorum."""
        want = "0x" + table_hash("agreed", self.ctx.network, epoch, values).hex()

        def backers() -> set[str]:
            return {o for o, e in box.sigs.items() if e.table_hash == want} | {self.me}

        if not await box.wait_until(lambda: len(backers()) >= quorum(n), deadline):
            raise NoQuorum(f"no quorum of medians, and {len(backers()) - 1} oracle(s) signed our table")
        log.info("epoch %d: joined the table %d oracle(s) agreed on", epoch, len(backers()) - 1)
        return sorted(backers())

    def _sign_nodes(self, epoch: int, agreed: Table) -> dict[str, str]:
        return sign_claims(self.ctx.key, claim_digests(epoch, agreed))

    async def _merge_sigs(self, record: EpochRecord, box: Inbox) -> None:
        """Keep the signatures that are over this very table (checked), from oracles of the set."""
        accepted: dict[str, SigsEntry] = {}
        digests: dict[str, bytes] | None = None  # computed once, for every oracle's check
        for oracle, entry in box.sigs.items():
            if oracle in record.signatures or oracle not in record.oracles:
                continue
            if entry.table_hash != record.table_hash:
                continue
            who = table_signer(entry.sigs.table_sig, "agreed", record.network, record.epoch, record.values)
            if who != oracle:
                continue
            if digests is None:
                digests = await asyncio.to_thread(claim_digests, record.epoch, record.values)
            if oracle != self.me and not await asyncio.to_thread(
                self._node_sigs_ok, record, oracle, entry.sigs, digests
            ):
                self._report(record.epoch, oracle, "bad node signatures", {})
                continue
            record.signatures[oracle] = entry.sigs
            accepted[oracle] = entry
        self._merge_attestations(record, accepted)

    def _merge_attestations(self, record: EpochRecord, accepted: dict[str, SigsEntry]) -> None:
        """Per job, keep the node list the most oracles signed (checked signatures only): oracles that
        counted other reports sign another list, and must not displace the majority's. Ties go to
        the list we signed, then by the lists' order. Once submitted, a job's list no longer changes."""
        lists: dict[str, dict[tuple[str, ...], dict[str, str]]] = {}
        for job, held in record.attestations.items():
            lists.setdefault(job, {})[tuple(held.nodes)] = dict(held.signatures)
        for oracle, entry in accepted.items():
            for job, att in entry.attest.items():
                if oracle != self.me and not self.poai.signed_by(oracle, job, record.epoch, att):
                    log.warning(
                        "oracle %s: bad PoAI signature for job %s, epoch %d", oracle, job, record.epoch
                    )
                    continue
                lists.setdefault(job, {}).setdefault(tuple(att.nodes), {})[oracle] = att.sig
        for job, candidates in lists.items():
            slot = record.attestations.get(job)
            if slot is not None and (slot.paid is not None or slot.error is not None):
                slot.signatures.update(candidates.get(tuple(slot.nodes), {}))
                continue
            nodes, sigs = max(candidates.items(), key=lambda kv: (len(kv[1]), self.me in kv[1], kv[0]))
            record.attestations[job] = Attestation(nodes=list(nodes), signatures=sigs)

    @staticmethod
    def _node_sigs_ok(
        record: EpochRecord, oracle: str, sigs: OracleSignatures, digests: dict[str, bytes] | None = None
    ) -> bool:
        """Whether `oracle`'s per-node signatures cover exactly the agreed nodes, each over its value
        (`digests`: the record's `claim_digests`, when the caller has them already)."""
        try:
            if digests is None:
                digests = claim_digests(record.epoch, record.values)
        except ValueError:
            return False
        return claims_signed_by(oracle, digests, sigs.nodes)

    # -- messages from the other oracles -------------------------------------------------------

    def _from_oracle(self, env: Envelope) -> bool:
        if env.sender in self.oracles:
            return True
        log.warning("%s from %s refused: not an oracle", env.type, env.sender)
        return False

    def _table_message(self, env: Envelope, kind: str) -> tuple[int, SignedTable] | None:
        """A table-carrying message from an oracle, checked; None (logged) if it does not count."""
        if not self._from_oracle(env):
            return None
        try:
            return parse_table(env.payload, kind, env.sender, env.network, self.clock.epoch_at(time.time()))
        except Refused as exc:
            log.warning("%s from %s refused: %s", env.type, env.sender, exc)
            return None

    def _put(self, slot: dict[str, SignedTable], epoch: int, table: SignedTable, kind: str) -> None:
        old = slot.get(table.oracle)
        if old is not None:
            if old.values != table.values or old.served != table.served:
                self._report(epoch, table.oracle, f"equivocation: signed two different {kind} tables", {})
            return
        slot[table.oracle] = table
        self.inbox(epoch).changed.set()

    async def _on_table(self, env: Envelope) -> None:
        if (got := self._table_message(env, "table")) is not None:
            epoch, table = got
            self._put(self.inbox(epoch).tables, epoch, table, "local")

    async def _on_median(self, env: Envelope) -> None:
        if (got := self._table_message(env, "median")) is not None:
            epoch, table = got
            self._put(self.inbox(epoch).medians, epoch, table, "median")

    async def _on_part(self, env: Envelope) -> None:
        """A part of a phase message too large for one envelope; the whole one, once every part is
        in and checks out, goes to the handler of its kind like any other."""
        if not self._from_oracle(env):
            return
        try:
            whole = self._parts.add(env.sender, env.payload, time.time())
        except PartRefused as exc:
            log.warning("%s from %s refused: %s", env.type, env.sender, exc)
            return
        if whole is not None:
            kind, payload = whole
            handler = {MSG_TABLE: self._on_table, MSG_MEDIAN: self._on_median, MSG_SIGS: self._on_sigs}[kind]
            await handler(env.model_copy(update={"type": kind, "payload": payload}))

    async def _on_sigs(self, env: Envelope) -> None:
        if not self._from_oracle(env):
            return
        try:
            epoch, entry = parse_sigs(env.payload)
        except Refused as exc:
            log.warning("%s from %s refused: %s", env.type, env.sender, exc)
            return
        record = self.records.get(epoch)
        if record is not None:  # late: add to the stored record if it signs the same table
            if env.sender in record.signatures:
                if entry.table_hash != record.table_hash:
                    self._report(epoch, env.sender, "equivocation: signed two agreed tables", {})
                return
            if entry.table_hash != record.table_hash:
                self._report(epoch, env.sender, "signed a table other than the agreed one", {})
                return
            await self._merge_sigs(record, Inbox(sigs={env.sender: entry}))
            if env.sender in record.signatures:
                await self.archive.save(record)
            return
        box = self.inbox(epoch)
        old = box.sigs.get(env.sender)
        if old is not None:
            if old.table_hash != entry.table_hash:
                self._report(epoch, env.sender, "equivocation: signed two agreed tables", {})
            return
        box.sigs[env.sender] = entry
        box.changed.set()

    # -- misbehaviour --------------------------------------------------------------------------

    def _report(self, epoch: int, oracle: str, reason: str, detail: dict[str, Any]) -> None:
        """Log and record (in the background) that `oracle` misbehaved in `epoch`."""
        log.warning("oracle %s misbehaved in epoch %d: %s", oracle, epoch, reason)
        try:
            self.ctx.spawn(self.archive.report(epoch, oracle, reason, detail), f"report-{epoch}")
        except NodeError:  # the node is stopping: the log line is all that is left to give
            pass

    def _report_disagreements(self, epoch: int, tables: dict[str, Table], agreed: Table) -> None:
        by = self.settings.disagree_by
        for oracle, bad in disagreements(tables, agreed, by).items():
            sample = dict(list(bad.items())[:10])
            detail = {"reported": {n: r for n, (r, _) in sample.items()},
                      "agreed": {n: a for n, (_, a) in sample.items()}, "nodes": len(bad)}  # fmt: skip
            self._report(epoch, oracle, f"disagrees by more than {by} on {len(bad)} node(s)", detail)

    async def misbehaviour(self) -> dict[str, MisbehaviourEntry]:
        """Every oracle's misbehaviour reports, from CSTORE (empty without it)."""
        return await self.archive.misbehaviour()

    # -- serving signatures --------------------------------------------------------------------

    async def adopt(self, epoch: int) -> EpochRecord | None:
        """A record this oracle did not take part in (it was down), from CSTORE, trusted only if a
        quorum of the oracle set signed its table."""
        return await self.archive.adopt(epoch, self.oracles)

    async def trusted(self, epoch: int) -> EpochRecord | None:
        """The agreed record of `epoch`: ours, or one a quorum signed; None if there is none."""
        return self.records.get(epoch) or await self.adopt(epoch)

    async def record(self, epoch: int) -> EpochRecord:
        """Like `trusted`, but `EpochNotAgreed` if there is none."""
        rec = await self.trusted(epoch)
        if rec is None:
            raise EpochNotAgreed(f"epoch {epoch} has no agreed table on this oracle")
        return rec

    async def history_start(self) -> int | None:
        """The first epoch the oracle network agreed on (earlier epochs were never measured)."""
        return await self.archive.first_epoch()

    def last_closed(self) -> int | None:
        return max(self.records) if self.records else None

    def epoch_range(self, text: str | None) -> tuple[int, int]:
        """`A:B` (or `A:`, `:B`, `N`) as an inclusive range, defaulting to every epoch this oracle
        holds; `BadEpochRange` if it is malformed or nothing gives a default."""
        last = self.last_closed()
        default = (min(self.records), last) if last is not None else None
        try:
            return parse_range(text, default=default)
        except ValueError as exc:
            raise BadEpochRange(str(exc)) from None

    async def availability(self, node: str, first: int, last: int) -> list[EpochAvailability]:
        """Per epoch: the agreed value and the oracles' per-epoch signatures. Epochs before the
        network's first agreed epoch were never measured and count as 0 (unsigned)."""
        node = node_address(node)
        if last - first + 1 > MAX_EPOCHS_PER_CLAIM:
            raise BadEpochRange(f"at most {MAX_EPOCHS_PER_CLAIM} epochs at once")
        current = self.clock.epoch_at(time.time())
        if last >= current:
            raise EpochNotEnded(f"epoch {last} has not ended (current epoch {current})")
        start = await self.history_start()
        out = []
        for e in range(first, last + 1):
            rec = await self.trusted(e)
            if rec is None:
                if start is None or e < start:
                    out.append(EpochAvailability(epoch=e, value=0, measured=False, signatures={}))
                    continue
                raise EpochNotAgreed(f"epoch {e} has no agreed table on this oracle")
            out.append(
                EpochAvailability(
                    epoch=e, value=rec.value(node), measured=True, signatures=rec.node_signatures(node)
                )
            )
        return out

    async def sign_range(self, node: str, first: int, last: int) -> RangeSignature:
        """This oracle's claim signature over a node's agreed availability for epochs first..last."""
        node = node_address(node)
        values = [p.value for p in await self.availability(node, first, last)]
        sig = sign_availability(self.ctx.key, node, first, values)
        return RangeSignature(
            oracle=self.me, node=node, first_epoch=first, availabilities=values, signature="0x" + sig.hex()
        )

    async def collect_claim(self, node: str, first: int, last: int) -> ClaimSignatures:
        """A claim-ready `SignedAvailability`: our signature plus those of the oracles we can reach."""
        mine = await self.sign_range(node, first, last)
        urls = [
            p.heartbeat.url
            for p in self.ctx.netmap.online()
            if p.address in self.oracles and p.address != self.me and p.heartbeat.url
        ]

        async def ask(url: str) -> str | None:
            try:
                r = await self.ctx.http.get(
                    f"{url}/v1/oracle/sign/{mine.node}",
                    params={"epochs": f"{first}:{last}"},
                    timeout=ASK_TIMEOUT,
                )
                r.raise_for_status()
                got = RangeSignature.model_validate(r.json())
            except Exception as exc:  # an oracle down or misbehaving costs its signature, not the claim
                log.info("no signature from %s: %s", url, exc)
                return None
            if got.availabilities != mine.availabilities:
                log.warning("oracle at %s signs other values for %s", url, mine.node)
                return None
            return got.signature

        sigs = [mine.signature]
        sigs += [s for s in await asyncio.gather(*(ask(u) for u in urls)) if s]
        return ClaimSignatures(
            node=mine.node, first_epoch=first, availabilities=mine.availabilities, signatures=sigs
        )

    async def node_availability(
        self, node: str, first: int, last: int, *, claim: bool = True
    ) -> NodeAvailability:
        """A node's availability over first..last and, with `claim`, the signatures to claim it."""
        node = node_address(node)
        per = await self.availability(node, first, last)
        return NodeAvailability(
            node=node,
            first_epoch=first,
            last_epoch=last,
            epochs=per,
            claim=await self.collect_claim(node, first, last) if claim else None,
        )

    def status(self) -> OracleStatus:
        """The epoch clock, the oracle set, and the epochs this oracle closed or failed to."""
        oracles = self.oracles
        return OracleStatus(
            oracle=self.me,
            network=self.ctx.network,
            genesis_time=self.settings.genesis_time,
            epoch_seconds=self.settings.epoch_seconds,
            heartbeat=self.settings.heartbeat,
            current_epoch=self.clock.epoch_at(time.time()),
            oracles=oracles,
            quorum=quorum(len(oracles)),
            last_closed=self.last_closed(),
            epochs=[
                ClosedEpoch(
                    epoch=r.epoch,
                    nodes=len(r.values),
                    voters=r.voters,
                    signers=sorted(r.signatures),
                    table_hash=r.table_hash,
                    cid=r.cid,
                    closed_at=r.closed_at,
                )
                for r in sorted(self.records.values(), key=lambda r: r.epoch)
            ],  # fmt: skip
            failed={str(e): why for e, why in sorted(self.failures.items())},
        )


def _phase_payload(epoch: int, table: SignedTable) -> dict[str, Any]:
    payload: dict[str, Any] = {"epoch": epoch, "values": table.values, "sig": table.sig}
    if table.served:
        payload["served"] = table.served
    return payload
