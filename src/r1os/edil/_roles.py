"""The three roles of a training job, each run by the node that holds it.

- **Owner** (the node the job was submitted to): holds the CKKS secret context and the test split.
  It publishes the job (CSTORE) and each round's global model (R1FS, sealed to the participants and
  itself); when the aggregator's sum arrives it decrypts it (the only thing it ever decrypts), turns it
  into the next global model, measures it on its test split, and starts the next round.
- **Participant**: trains on its own data set (which never leaves the node) from the round's model,
  sends n * w (plus its pairwise mask, in masked modes), encrypted under the owner's public context in
  CKKS modes, signed, and sealed to the aggregator, so nobody else can fetch it from R1FS, the owner
  included.
- **Aggregator**: a node that is neither the owner's nor a participant. It checks each update
  (signature, job, round, participant, context, size; `_updates.check_update`) and adds them
  (ciphertexts with the public context only: it never holds a secret key). At the deadline it sums what
  arrived; in masked modes it asks the survivors for their mask terms with the dropped participants.
  It seals the sum to the owner's node.

Each role only reads CSTORE and R1FS and writes its own node's namespace, so any node can check who
wrote what.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from r1os.edil._errors import EdilError
from r1os.edil._seal import open_sealed, seal
from r1os.edil._spec import JobSpec, spec_from_data
from r1os.edil._state import (
    AggregatePointer,
    DroppedNotice,
    JobState,
    RecoveryPointer,
    RoundResult,
    UpdatePointer,
    aggregate_key,
    dropped_key,
    encoder_key,
    job_key,
    recovery_key,
    update_key,
)
from r1os.errors import R1osError
from r1os.identity import NodeKey

if TYPE_CHECKING:
    import numpy as np

    from r1os.cstore import CStoreService
    from r1os.edil._ckks import OwnerContext, PublicContext
    from r1os.edil._data import Dataset
    from r1os.edil._models import Layout
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.edil")

MASKED = frozenset({"masked", "ckks+masked"})
ENCRYPTED = frozenset({"ckks", "ckks+masked"})
#: Largest model, update or aggregate blob a node fetches for a job.
MAX_BLOB = 64 * 1024 * 1024
#: Rounds in a row with no update before a job fails.
MAX_EMPTY_ROUNDS = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Io:
    """What the roles use of their node."""

    network: str
    key: NodeKey
    cstore: CStoreService
    r1fs: R1fsService
    public_key_of: Callable[[str], bytes | None]
    """A node's public key (from its heartbeats), None if unknown."""
    datasets: dict[str, Any] = field(default_factory=dict)
    data_folders: list[Any] = field(default_factory=list)

    @property
    def me(self) -> str:
        return self.key.address.lower()

    def keys_for(self, nodes: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for node in nodes:
            pk = self.key.public_key if node.lower() == self.me else self.public_key_of(node)
            if pk is None:
                raise EdilError(f"no public key known for {node}: is it online?", cause="unknown_node")
            out[node.lower()] = pk
        return out

    async def put_sealed(self, data: bytes, recipients: list[str]) -> str:
        blob = await asyncio.to_thread(seal, data, self.keys_for(recipients))
        return await self.r1fs.add_bytes(blob)

    async def release(self, cid: str | None) -> None:
        """Drop this node's pin of a blob a finished round no longer needs (GC reclaims it later)."""
        if not cid:
            return
        try:
            await self.r1fs.unpin(cid, pinner=self.me)
        except R1osError as exc:
            log.debug("edil: unpinning %s: %s", cid, exc)

    async def wait_encoder(self, first: str, job_id: str, wake: asyncio.Event | None = None) -> Any:
        """The job's Domain Auto-Encoder, once its first participant has shared it (sealed to the job's
        nodes); waits on `wake` (set when EDIL records change), or polls, until then."""
        from r1os.edil._dae import DAE

        while True:
            if wake is not None:
                wake.clear()  # before the read: a record written after it wakes the wait below
            raw = await self.cstore.get(encoder_key(first, job_id))
            if isinstance(raw, dict) and isinstance(raw.get("cid"), str):
                return DAE.from_bytes(await self.get_sealed(raw["cid"]))
            if wake is None:
                await asyncio.sleep(0.2)
                continue
            try:
                await asyncio.wait_for(wake.wait(), 1.0)
            except TimeoutError:
                pass

    async def get_sealed(self, cid: str) -> bytes:
        blob = await self.r1fs.cat(cid, max_size=MAX_BLOB)
        return await asyncio.to_thread(open_sealed, blob, self.key)

    async def job(self, owner_node: str, job_id: str) -> JobState | None:
        raw = await self.cstore.get(job_key(owner_node, job_id))
        if raw is None:
            return None
        try:
            return JobState.model_validate(raw)
        except ValidationError:
            log.warning("edil: unreadable job record %s/%s", owner_node, job_id)
            return None


def pack_params(vec: np.ndarray) -> bytes:
    from r1os.edil._updates import pack_vector

    return pack_vector(vec, "float64")


def unpack_params(blob: bytes, length: int) -> np.ndarray:
    import numpy as np

    from r1os.edil._updates import unpack_blob

    out = unpack_blob(blob)
    if not isinstance(out, np.ndarray) or out.shape != (length,):
        raise EdilError(f"a model blob of the wrong shape (expected {length} values)", cause="wrong_size")
    return out.astype(np.float64)


def model_layout(spec: JobSpec) -> Layout:
    from r1os.edil._models import layout

    n_in, classes = spec.model_shape()
    return layout(spec, n_in, classes)


def _once(
    said: set[tuple[str, int, str]], key: tuple[str, int, str], what: str, state: JobState, exc: Exception
) -> None:
    """Log a failure the roles retry every pass only the first time it happens in a round."""
    if key in said:
        return
    if len(said) > 10_000:
        said.clear()
    said.add(key)
    log.warning("edil: job %s round %d: %s: %s", state.job_id, state.round, what, exc)


# -- the owner ---------------------------------------------------------------------------------


class Owner:
    """The owner's side of one job: publish rounds, decrypt sums, measure, finish."""

    def __init__(
        self, io: Io, state: JobState, spec: JobSpec, ctx: OwnerContext | None, test: Dataset
    ) -> None:
        self.io = io
        self.state = state
        self.spec = spec
        self.ctx = ctx
        self.test = test
        self.layout = model_layout(spec)
        self.params: np.ndarray | None = None
        self.wake = asyncio.Event()
        self.round_started = time.monotonic()
        self.empty_rounds = 0
        self.encoder: Any = None

    async def publish(self) -> None:
        self.state.updated_ms = _now_ms()
        await self.io.cstore.set(job_key(self.io.me, self.state.job_id), self.state.model_dump(mode="json"))

    async def run(self) -> None:
        from r1os.edil._models import evaluate
        from r1os.edil.strategy import strategy_from_spec

        strategy = strategy_from_spec(self.spec)
        job_id = self.state.job_id
        agg_key = aggregate_key(self.state.aggregator, job_id)
        test_x = self.test.X
        while self.state.phase == "training":
            if self.spec.encoder is not None and self.encoder is None:
                self.encoder = await self._encoder()
                test_x = self.encoder.encode(self.test.X)
            r = self.state.round
            self.wake.clear()  # before the read: a sum written after it wakes the wait below
            raw = await self.io.cstore.hget(agg_key, str(r))
            if raw is None:
                try:
                    await asyncio.wait_for(self.wake.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            try:
                pointer = AggregatePointer.model_validate(raw)
                summed = await self._sum_of(pointer, r)
            except (ValidationError, R1osError) as exc:
                log.warning("edil: job %s round %d: the aggregate cannot be used: %s", job_id, r, exc)
                pointer, summed = None, None
            result = RoundResult(
                round=r,
                included=pointer.included if pointer else [],
                dropped=pointer.dropped if pointer else [],
                refused=pointer.refused if pointer else {},
                samples=pointer.samples if pointer else 0,
                update_bytes=pointer.update_bytes if pointer else {},
                seconds=round(time.monotonic() - self.round_started, 3),
            )
            if summed is not None and pointer is not None and pointer.samples > 0:
                self.params = strategy.aggregate_sum(summed, pointer.samples)
                self.empty_rounds = 0
                result.model_cid = await self.io.put_sealed(pack_params(self.params), self._readers())
            else:
                self.empty_rounds += 1
                result.model_cid = self.state.model_cid
            if self.params is not None:
                result.test_accuracy = round(
                    float(evaluate(self.layout, self.params, test_x, self.test.y)), 6
                )
            self.state.history.append(result)
            log.info(
                "edil: job %s round %d: %d updates (%d samples), accuracy %s",
                job_id,
                r,
                len(result.included),
                result.samples,
                result.test_accuracy,
            )
            previous = self.state.model_cid
            self.state.model_cid = result.model_cid or self.state.model_cid
            if self.empty_rounds >= MAX_EMPTY_ROUNDS:
                self.state.phase, self.state.error = (
                    "failed",
                    f"{self.empty_rounds} rounds in a row had no update",
                )
            elif r >= self.state.rounds:
                self.state.phase = "done"
            else:
                self.state.round = r + 1
                self.round_started = time.monotonic()
                self.state.round_started_ms = _now_ms()
                self.state.deadline_ms = self.state.round_started_ms + int(self.spec.deadline_s * 1000)
            await self.publish()
            if previous != self.state.model_cid:
                await self.io.release(previous)  # nobody fetches a past round's model

    def _readers(self) -> list[str]:
        return sorted({*self.state.participants, self.io.me})

    async def _sum_of(self, pointer: AggregatePointer, r: int) -> np.ndarray | None:
        import numpy as np

        if pointer.blob_cid is None or not pointer.included:
            return None
        blob = await self.io.get_sealed(pointer.blob_cid)
        from r1os.edil._updates import unpack_blob

        parts = unpack_blob(blob)
        length = self.layout.size
        if self.ctx is not None:
            from r1os.edil._ckks import decrypt_vector

            if not isinstance(parts, list):
                raise EdilError("an encrypted job's aggregate holds no ciphertexts", cause="wrong_context")
            ctx = self.ctx
            summed = await asyncio.to_thread(decrypt_vector, ctx, parts, length)
            if self.state.privacy in MASKED and pointer.dropped:
                summed = await self._unmask(summed, r)
            return summed
        if not isinstance(parts, np.ndarray) or parts.shape != (length,):
            raise EdilError("an aggregate of the wrong size", cause="wrong_size")
        return parts.astype(np.float64)

    async def _unmask(self, summed: np.ndarray, r: int) -> np.ndarray:
        """ckks+masked with dropouts: the aggregator passed the survivors' mask terms (sealed to us)."""
        import numpy as np

        raw = await self.io.cstore.hget(dropped_key(self.state.aggregator, self.state.job_id), f"{r}:terms")
        if not isinstance(raw, dict) or not isinstance(raw.get("cid"), str):
            raise EdilError("the dropped participants' mask terms are missing", cause="no_recovery")
        terms = unpack_params(await self.io.get_sealed(raw["cid"]), self.layout.size)
        if not np.all(np.isfinite(terms)):
            raise EdilError("the dropped participants' mask terms are not finite", cause="malformed")
        out: np.ndarray = summed - terms
        return out

    async def _encoder(self) -> Any:
        return await self.io.wait_encoder(self.state.participants[0], self.state.job_id, self.wake)


# -- a participant -----------------------------------------------------------------------------


class Participant:
    """Trains on this node's data for every round of the jobs that name it."""

    def __init__(self, io: Io) -> None:
        self.io = io
        self._data: dict[tuple[str, str], Any] = {}
        self.sent: dict[str, int] = {}
        """job id -> last round this node sent an update for."""
        self.recovered: set[tuple[str, int]] = set()
        self._busy: set[str] = set()
        self._said: set[tuple[str, int, str]] = set()

    async def on_job(self, state: JobState) -> None:
        """Act on a job record: train for its round, or answer a call for mask terms."""
        if self.io.me not in state.participants or state.phase != "training" or state.job_id in self._busy:
            return
        self._busy.add(state.job_id)
        try:
            await self._recovery(state)
            if self.sent.get(state.job_id, 0) >= state.round:
                return
            done = await self.io.cstore.hget(update_key(self.io.me, state.job_id), str(state.round))
            if done is not None:  # sent before a restart
                self.sent[state.job_id] = state.round
                return
            await self._train(state)
        except R1osError as exc:  # retried on the next pass; said once
            _once(self._said, (state.job_id, state.round, str(exc)), "cannot take part", state, exc)
        finally:
            self._busy.discard(state.job_id)

    def _dataset(self, state: JobState, spec: JobSpec) -> Dataset:
        from r1os.edil._data import load

        ref = next(p.data for p in spec.participants if p.node.lower() == self.io.me)
        cache = (state.job_id, ref)
        if cache not in self._data:
            self._data[cache] = load(ref, datasets=self.io.datasets, data_folders=self.io.data_folders)
        data: Dataset = self._data[cache]
        return data

    async def _encoded(self, state: JobState, spec: JobSpec, data: Dataset) -> Dataset:
        from r1os.edil._dae import train_dae
        from r1os.edil._data import Dataset as Ds

        enc = spec.encoder
        if enc is None:
            return data
        key = (state.job_id, "encoded")
        if key in self._data:
            done: Dataset = self._data[key]
            return done
        first = state.participants[0]
        if first == self.io.me:
            dae = await asyncio.to_thread(
                train_dae,
                data.X,
                dim=enc.dim,
                hidden=enc.hidden,
                epochs=enc.epochs,
                lr=enc.lr,
                seed=spec.seed,
            )
            readers = sorted({*state.participants, state.owner_node})
            cid = await self.io.put_sealed(dae.to_bytes(), readers)
            await self.io.cstore.set(encoder_key(self.io.me, state.job_id), {"cid": cid})
        else:
            dae = await self.io.wait_encoder(first, state.job_id)
        out = Ds(dae.encode(data.X), data.y)
        self._data[key] = out
        return out

    async def _train(self, state: JobState) -> None:
        from r1os.edil._models import local_seed, train_local
        from r1os.edil.aggregate import weighted_contribution
        from r1os.edil.strategy import strategy_from_spec

        spec = spec_from_data(state.spec)
        r = state.round
        # Off the event loop: the first load may import scikit-learn and read files (seconds), and the
        # node must keep its heartbeats and health checks going meanwhile.
        dataset = await asyncio.to_thread(self._dataset, state, spec)
        data = await self._encoded(state, spec, dataset)
        lay = model_layout(spec)
        global_params = unpack_params(await self.io.get_sealed(state.model_cid), lay.size)
        config = strategy_from_spec(spec).configure_fit(r)
        index = [p.lower() for p in state.participants].index(self.io.me)
        prox = (config["mu"], global_params) if config["mu"] > 0 else None
        params = await asyncio.to_thread(
            train_local,
            lay,
            global_params,
            data.X,
            data.y,
            epochs=config["epochs"],
            lr=config["lr"],
            batch_size=config["batch_size"],
            seed=local_seed(spec.seed, r, index),
            prox=prox,
        )
        contribution = weighted_contribution(params, data.n)
        await self._send(state, contribution, data.n, r, state.job_id)
        self.sent[state.job_id] = r
        log.info("edil: job %s round %d: update sent (%d samples)", state.job_id, r, data.n)

    async def _send(self, state: JobState, vector: np.ndarray, samples: int, r: int, job: str) -> None:
        from r1os.edil._updates import pack_chunks, pack_vector, sign_update

        privacy = state.privacy
        if privacy in MASKED and job == state.job_id:
            from r1os.edil._masks import MaskContext, mask_for

            mctx = MaskContext(self.io.network, state.job_id, r, vector.size)
            peers = self.io.keys_for(state.participants)
            vector = vector + await asyncio.to_thread(mask_for, self.io.key, list(peers.values()), mctx)
        if privacy in ENCRYPTED:
            from r1os.edil._ckks import PublicContext, encrypt_vector

            assert state.context_cid is not None
            pub_raw = await self.io.r1fs.cat(state.context_cid, max_size=MAX_BLOB)
            pub = await asyncio.to_thread(PublicContext.from_bytes, pub_raw)
            if pub.fingerprint != state.context_fingerprint:
                raise EdilError(
                    "the job's public context does not match its fingerprint", cause="wrong_context"
                )
            chunks = await asyncio.to_thread(encrypt_vector, pub, vector)
            blob = pack_chunks(chunks)
            n_chunks = len(chunks)
        else:
            blob = pack_vector(vector, "float64")
            n_chunks = 1
        signed = sign_update(
            self.io.key,
            network=self.io.network,
            job=job,
            round=r,
            privacy=privacy,  # type: ignore[arg-type]
            blob=blob,
            length=vector.size,
            chunks=n_chunks,
            samples=samples,
            context_fingerprint=state.context_fingerprint if privacy in ENCRYPTED else None,
        )
        cid = await self.io.put_sealed(blob, [state.aggregator])
        pointer = UpdatePointer(update=signed.model_dump(mode="json"), blob_cid=cid, size=len(blob))
        where = (
            update_key(self.io.me, state.job_id)
            if job == state.job_id
            else recovery_key(self.io.me, state.job_id)
        )
        await self.io.cstore.hset(where, str(r), pointer.model_dump(mode="json"))
        await self._release_round(where, r - 1)

    async def _release_round(self, key: str, r: int) -> None:
        """The blob this node sent for round `r` was summed long ago: drop its pin."""
        raw = await self.io.cstore.hget(key, str(r)) if r >= 1 else None
        if isinstance(raw, dict):
            await self.io.release(raw.get("blob_cid"))

    async def _recovery(self, state: JobState) -> None:
        """If the aggregator names dropped participants this round, send this node's mask terms with them."""
        import numpy as np

        if state.privacy not in MASKED or (state.job_id, state.round) in self.recovered:
            return
        raw = await self.io.cstore.hget(dropped_key(state.aggregator, state.job_id), str(state.round))
        if raw is None:
            return
        notice = DroppedNotice.model_validate(raw)
        if self.io.me not in notice.survivors:
            return
        from r1os.edil._masks import MaskContext, recovery_term

        length = model_layout(spec_from_data(state.spec)).size
        mctx = MaskContext(self.io.network, state.job_id, state.round, length)
        keys = self.io.keys_for(notice.dropped)
        total = np.zeros(length)
        for pk in keys.values():
            total += recovery_term(self.io.key, pk, mctx)
        plain_state = state.model_copy(update={"privacy": "masked"})  # terms travel as plain vectors
        await self._send(plain_state, total, 0, state.round, f"{state.job_id}/recovery")
        self.recovered.add((state.job_id, state.round))
        log.info(
            "edil: job %s round %d: mask terms sent for %d dropped", state.job_id, state.round, len(keys)
        )


# -- the aggregator ----------------------------------------------------------------------------


#: Fewest updates summed in a private mode: the sum of one update is that update.
MIN_UPDATES = 2


@dataclass
class _Round:
    number: int
    dropped: list[str] | None = None
    """Set once the survivors are asked for mask terms: no update of a dropped participant counts after."""
    seen: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    total: Any = None
    done: bool = False


class Aggregator:
    """Sums the updates of the jobs that name this node as their aggregator. In CKKS modes it holds
    ciphertexts and the public context only; a plaintext update never exists on this node."""

    def __init__(self, io: Io) -> None:
        self.io = io
        self.rounds: dict[str, _Round] = {}
        self._busy: set[str] = set()
        self._public: dict[str, PublicContext] = {}
        self._said: set[tuple[str, int, str]] = set()
        self._again: set[str] = set()
        self.summed = 0

    async def on_job(self, state: JobState) -> None:
        if state.aggregator != self.io.me or state.phase != "training":
            return
        if state.job_id in self._busy:
            self._again.add(state.job_id)  # something changed while a pass runs: it looks once more
            return
        self._busy.add(state.job_id)
        try:
            while True:
                self._again.discard(state.job_id)
                try:
                    await self._step(state)
                except R1osError as exc:  # retried on the next pass; said once
                    _once(self._said, (state.job_id, state.round, str(exc)), "aggregation", state, exc)
                if state.job_id not in self._again:
                    break
        finally:
            self._busy.discard(state.job_id)

    async def _public_context(self, state: JobState) -> PublicContext:
        from r1os.edil._ckks import PublicContext

        pub = self._public.get(state.job_id)
        if pub is None:
            assert state.context_cid is not None
            raw = await self.io.r1fs.cat(state.context_cid, max_size=MAX_BLOB)
            pub = await asyncio.to_thread(PublicContext.from_bytes, raw)
            if pub.fingerprint != state.context_fingerprint:
                raise EdilError(
                    "the job's public context does not match its fingerprint", cause="wrong_context"
                )
            if pub.holds_secret_key():
                raise EdilError("the job's public context holds a secret key: refused", cause="wrong_context")
            self._public[state.job_id] = pub
        return pub

    async def _step(self, state: JobState) -> None:
        job_id, r = state.job_id, state.round
        rnd = self.rounds.get(job_id)
        if rnd is None or rnd.number != r:
            if await self.io.cstore.hget(aggregate_key(self.io.me, job_id), str(r)) is not None:
                return  # summed before a restart
            rnd = self.rounds[job_id] = _Round(r)
        if rnd.done:
            return
        length = model_layout(spec_from_data(state.spec)).size
        for participant in state.participants:
            if participant in rnd.seen or participant in rnd.refused or rnd.dropped is not None:
                continue
            raw = await self.io.cstore.hget(update_key(participant, job_id), str(r))
            if raw is None:
                continue
            await self._take(state, rnd, participant, raw, length)
        missing = [p for p in state.participants if p not in rnd.seen]
        late = _now_ms() >= state.deadline_ms
        if missing and not late:
            return
        dropped = rnd.dropped if rnd.dropped is not None else sorted(missing)
        if state.privacy != "plain" and 0 < len(rnd.seen) < MIN_UPDATES:
            log.warning(
                "edil: job %s round %d: only %d update arrived; a private sum of fewer than %d is not "
                "passed on (it would be that participant's update)",
                state.job_id,
                r,
                len(rnd.seen),
                MIN_UPDATES,
            )
            rnd.total, rnd.seen, rnd.samples = None, [], 0
        if state.privacy in MASKED and dropped and rnd.seen:
            rnd.dropped = dropped
            ok = await self._recover(state, rnd, dropped, length)
            if not ok:
                return
        await self._finish(state, rnd, dropped)

    async def _take(self, state: JobState, rnd: _Round, participant: str, raw: Any, length: int) -> None:
        from r1os.edil._updates import check_update, unpack_blob

        try:
            pointer = UpdatePointer.model_validate(raw)
            blob = await self.io.get_sealed(pointer.blob_cid)
            header = check_update(
                pointer.update,
                blob,
                network=self.io.network,
                job=state.job_id,
                round=rnd.number,
                participants=state.participants,
                context_fingerprint=state.context_fingerprint,
                length=length,
                seen=rnd.seen,
                privacy=state.privacy,  # type: ignore[arg-type]
            )
            parts = unpack_blob(blob)
            await self._add(state, rnd, parts, length)
        except (ValidationError, R1osError) as exc:
            cause = exc.cause if isinstance(exc, R1osError) else "malformed"
            rnd.refused[participant] = cause
            log.warning(
                "edil: job %s round %d: update of %s refused (%s)",
                state.job_id,
                rnd.number,
                participant,
                cause,
            )
            return
        rnd.seen.append(participant)
        rnd.samples += header.samples
        rnd.sizes[participant] = len(blob)

    async def _add(self, state: JobState, rnd: _Round, parts: Any, length: int) -> None:
        import numpy as np

        if state.privacy in ENCRYPTED:
            from r1os.edil._ckks import CkksSum

            if not isinstance(parts, list):
                raise EdilError("an encrypted job's update holds no ciphertexts", cause="wrong_context")
            if rnd.total is None:
                rnd.total = CkksSum(await self._public_context(state), length)
            await asyncio.to_thread(rnd.total.add, parts)
        else:
            if not isinstance(parts, np.ndarray) or parts.shape != (length,):
                raise EdilError("an update of the wrong size", cause="wrong_size")
            rnd.total = parts.astype(np.float64) if rnd.total is None else rnd.total + parts

    async def _recover(self, state: JobState, rnd: _Round, dropped: list[str], length: int) -> bool:
        """Masked modes: the survivors' mask terms with the dropped cancel what they added."""
        import numpy as np

        from r1os.edil._updates import check_update, unpack_blob

        key = dropped_key(self.io.me, state.job_id)
        if await self.io.cstore.hget(key, str(rnd.number)) is None:
            notice = DroppedNotice(dropped=dropped, survivors=sorted(rnd.seen))
            await self.io.cstore.hset(key, str(rnd.number), notice.model_dump(mode="json"))
            log.info(
                "edil: job %s round %d: %s dropped; asking the survivors for mask terms",
                state.job_id,
                rnd.number,
                dropped,
            )
        from r1os.edil._masks import MASK_RANGE

        terms: list[np.ndarray] = []
        bound = MASK_RANGE * len(dropped)
        for survivor in rnd.seen:
            raw = await self.io.cstore.hget(recovery_key(survivor, state.job_id), str(rnd.number))
            vec: Any = None
            if raw is not None:
                try:
                    pointer = RecoveryPointer.model_validate(raw)
                    blob = await self.io.get_sealed(pointer.blob_cid)
                    check_update(
                        pointer.update,
                        blob,
                        network=self.io.network,
                        job=f"{state.job_id}/recovery",
                        round=rnd.number,
                        participants=rnd.seen,
                        context_fingerprint=None,
                        length=length,
                        seen=[],
                        privacy="masked",
                    )
                    vec = unpack_blob(blob)
                    if not isinstance(vec, np.ndarray) or not np.all(np.isfinite(vec)):
                        raise EdilError("mask terms that are not a finite vector", cause="malformed")
                    if float(np.max(np.abs(vec), initial=0.0)) > bound:
                        raise EdilError("mask terms beyond the mask range", cause="malformed")
                except (ValidationError, R1osError) as exc:
                    log.warning(
                        "edil: job %s round %d: mask terms of %s refused: %s",
                        state.job_id,
                        rnd.number,
                        survivor,
                        exc,
                    )
                    vec = None
            if vec is None:
                if raw is None and _now_ms() < state.deadline_ms + int(
                    state.spec.get("deadline_s", 60) * 1000
                ):
                    return False  # still waiting
                log.warning(
                    "edil: job %s round %d: no usable mask terms from %s; the round is lost",
                    state.job_id,
                    rnd.number,
                    survivor,
                )
                rnd.total, rnd.seen, rnd.samples = None, [], 0
                return True
            terms.append(vec)
        total_terms = np.sum(terms, axis=0) if terms else np.zeros(length)
        if state.privacy in ENCRYPTED:
            # The sum is encrypted: the owner subtracts the terms after decrypting (they reveal nothing
            # of any survivor's update).
            cid = await self.io.put_sealed(pack_params(total_terms), [state.owner_node])
            await self.io.cstore.hset(key, f"{rnd.number}:terms", {"cid": cid})
        else:
            rnd.total = rnd.total - total_terms
        return True

    async def _finish(self, state: JobState, rnd: _Round, dropped: list[str]) -> None:
        from r1os.edil._updates import pack_chunks, pack_vector

        blob_cid = None
        if rnd.total is not None and rnd.seen:
            if state.privacy in ENCRYPTED:
                blob = pack_chunks(await asyncio.to_thread(rnd.total.result))
            else:
                blob = pack_vector(rnd.total, "float64")
            blob_cid = await self.io.put_sealed(blob, [state.owner_node])
        pointer = AggregatePointer(
            blob_cid=blob_cid,
            included=sorted(rnd.seen),
            samples=rnd.samples,
            refused=rnd.refused,
            dropped=dropped,
            update_bytes={p: rnd.sizes[p] for p in rnd.seen if p in rnd.sizes},
        )
        await self.io.cstore.hset(
            aggregate_key(self.io.me, state.job_id), str(rnd.number), pointer.model_dump(mode="json")
        )
        previous = await self.io.cstore.hget(aggregate_key(self.io.me, state.job_id), str(rnd.number - 1))
        if isinstance(previous, dict):  # the owner decrypted that sum a round ago
            await self.io.release(previous.get("blob_cid"))
        rnd.done = True
        rnd.total = None  # nothing of the round is kept once it is passed on
        self.summed += 1
        log.info(
            "edil: job %s round %d: summed %d updates (%d samples), dropped %s, refused %s",
            state.job_id,
            rnd.number,
            len(rnd.seen),
            rnd.samples,
            dropped,
            rnd.refused,
        )


__all__ = ["Aggregator", "Io", "Owner", "Participant"]
