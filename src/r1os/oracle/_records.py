"""Where closed epochs are kept: this oracle's files, CSTORE and R1FS.

- `<data>/epochs/<n>.json`: the records this oracle signs claims from (its own, and ones it adopted).
- CSTORE `net:oracle:epoch:<n>`: one field per oracle, its record without the local tables and per-node
  signatures (`compact`), so other oracles can adopt it and anyone can audit it.
- CSTORE `net:oracle:epochs`: the index (table hash, voters, node count, CID per epoch).
- CSTORE `net:oracle:misbehaviour`: reports, field `<epoch>:<oracle>:<reporter>`.
- R1FS: the whole record as a JSON document (its CID is in the CSTORE entries).

CSTORE and R1FS are optional: a node without them keeps its files only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from r1os.oracle._consensus import EpochRecord, quorum
from r1os.oracle._models import MisbehaviourEntry

if TYPE_CHECKING:
    from r1os.cstore import CStoreService
    from r1os.r1fs import R1fsService

log = logging.getLogger("r1os.oracle")

EPOCH_KEY = "net:oracle:epoch:{}"
INDEX_KEY = "net:oracle:epochs"
MISBEHAVIOUR_KEY = "net:oracle:misbehaviour"


def compact(record: EpochRecord) -> dict[str, Any]:
    """The CSTORE form of a record: agreed values and every oracle's table signature (enough to
    trust or adopt it), without the local tables and per-node signatures, which stay in the R1FS
    document; so a 10,000-node network still fits CSTORE's 1 MiB values."""
    out = record.model_dump(mode="json", exclude={"tables"})
    for sigs in out["signatures"].values():
        sigs["nodes"] = {}
    return out


class EpochArchive:
    """The agreed records this oracle holds (`records`), and their copies in CSTORE and R1FS."""

    def __init__(
        self,
        folder: Path,
        me: str,
        network: str,
        cstore: CStoreService | None = None,
        r1fs: R1fsService | None = None,
    ) -> None:
        self.folder = folder
        self.me = me
        self.network = network
        self.cstore = cstore
        self.r1fs = r1fs
        self.records: dict[int, EpochRecord] = {}

    def load(self) -> None:
        """Read this oracle's records back from its folder (at start)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self.folder.glob("*.json"):
            try:
                rec = EpochRecord.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                log.error("unreadable epoch record %s: %s", path, exc)
                continue
            self.records[rec.epoch] = rec

    # -- records -------------------------------------------------------------------------------

    async def save(self, record: EpochRecord) -> None:
        """Keep `record`: local file (what this oracle signs from), R1FS document, CSTORE entry and index.
        The local file is written first and again with the document's CID; the copies elsewhere are
        best effort (a failure is logged: the record is still signed from, and other oracles hold theirs)."""
        self.records[record.epoch] = record
        await self._write_file(record.epoch, record.model_dump_json(exclude={"cid"}).encode())
        record.cid = await self._document(record)
        await self._write_file(record.epoch, record.model_dump_json().encode())
        if self.cstore is None:
            return
        index = {"table_hash": record.table_hash, "voters": record.voters, "nodes": len(record.values),
                 "cid": record.cid, "closed_at": record.closed_at}  # fmt: skip
        try:
            await self.cstore.hset(EPOCH_KEY.format(record.epoch), self.me, compact(record))
            await self.cstore.hset(INDEX_KEY, str(record.epoch), index)
        except Exception as exc:
            log.warning("epoch %d: CSTORE write failed: %s", record.epoch, exc)

    async def _document(self, record: EpochRecord) -> str | None:
        """The record as a JSON document in R1FS; its CID (None when the node has no R1FS)."""
        if self.r1fs is None:
            return None
        data = record.model_dump_json(exclude={"cid"}, indent=1).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        try:
            result = await self.r1fs.add_stream(chunks())
        except Exception as exc:
            log.warning("epoch %d: R1FS store failed: %s", record.epoch, exc)
            return None
        return str(result.cid)

    async def _write_file(self, epoch: int, data: bytes) -> None:
        path = self.folder / f"{epoch}.json"
        await asyncio.to_thread(_write, path.with_suffix(".tmp"), path, data)

    async def adopt(self, epoch: int, oracles: Sequence[str]) -> EpochRecord | None:
        """A record this oracle did not take part in (it was down), from CSTORE, trusted only if a
        quorum of the oracle set signed its table; kept like our own."""
        if self.cstore is None:
            return None
        for raw in (await self.cstore.hgetall(EPOCH_KEY.format(epoch))).values():
            try:
                rec = EpochRecord.model_validate(raw)
            except ValidationError:
                continue
            if rec.epoch != epoch or rec.network != self.network:
                continue
            if len(set(rec.valid_signers()) & set(oracles)) >= quorum(len(oracles)):
                self.records[epoch] = rec
                await self._write_file(epoch, rec.model_dump_json().encode())
                return rec
        return None

    async def first_epoch(self) -> int | None:
        """The first epoch the oracle network agreed on (earlier epochs were never measured)."""
        known = set(self.records)
        if self.cstore is not None:
            for field in await self.cstore.hgetall(INDEX_KEY):
                with contextlib.suppress(ValueError):
                    known.add(int(field))
        return min(known) if known else None

    # -- misbehaviour --------------------------------------------------------------------------

    async def report(self, epoch: int, oracle: str, reason: str, detail: dict[str, Any]) -> None:
        """Record in CSTORE that `oracle` misbehaved in `epoch` (as seen by this oracle)."""
        if self.cstore is None:
            return
        value = {"epoch": epoch, "oracle": oracle, "reason": reason, "reporter": self.me,
                 "at": time.time(), **detail}  # fmt: skip
        try:
            await self.cstore.hset(MISBEHAVIOUR_KEY, f"{epoch}:{oracle}:{self.me}", value)
        except Exception as exc:
            log.warning("could not record misbehaviour: %s", exc)

    async def misbehaviour(self) -> dict[str, MisbehaviourEntry]:
        """Every oracle's reports (a malformed entry is skipped with a log line)."""
        if self.cstore is None:
            return {}
        out: dict[str, MisbehaviourEntry] = {}
        for field, raw in (await self.cstore.hgetall(MISBEHAVIOUR_KEY)).items():
            try:
                out[field] = MisbehaviourEntry.model_validate(raw)
            except ValidationError:
                log.warning("ignoring malformed misbehaviour entry %s", field)
        return out


def _write(tmp: Path, path: Path, data: bytes) -> None:
    tmp.write_bytes(data)
    os.replace(tmp, path)
