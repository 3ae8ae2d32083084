"""A whole federated job in one process, without network or keys: the reference the networked job matches.

`simulate` runs the same core as the nodes (data parts, `train_local` with the per-participant seeds of
`local_seed`, the job's strategy, evaluation on the owner's test set). `centralized` trains the same model
with the same budget (rounds x local epochs, same lr and batch size) on all participants' data pooled: the
accuracy a federated job is compared with.

With an encoder in the spec, the Domain Auto-Encoder is trained on the first participant's data (the data
owner's node) and every participant and the test set are encoded with it, as the owner's nodes do.

Privacy other than `plain` needs `secure_sum`: a function that turns the participants' contributions
(n_i * w_i) into their sum by the real path (encrypt, add, decrypt); the owner then divides by sum n_i.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from r1os.edil import aggregate
from r1os.edil._data import Dataset, load
from r1os.edil._errors import EdilError
from r1os.edil._models import Layout, evaluate, init_params, layout, local_seed, train_local
from r1os.edil._spec import JobSpec, load_spec, spec_from_data
from r1os.edil.strategy import FitResult, strategy_from_spec

FloatArray = npt.NDArray[np.float64]
SecureSum = Callable[[list[FloatArray]], FloatArray]


@dataclass(frozen=True)
class SimResult:
    """Test accuracy after each round, the final model, time per round and what each participant sends per
    round (`bytes_per_participant`: the plain float64 vector, 8 bytes per parameter)."""

    mode: str
    accuracy: list[float]
    seconds_per_round: list[float]
    bytes_per_participant: int
    samples: list[int]
    layout: Layout
    params: FloatArray = field(repr=False)

    @property
    def final_accuracy(self) -> float:
        return self.accuracy[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "accuracy": self.accuracy,
            "final_accuracy": self.final_accuracy,
            "seconds_per_round": self.seconds_per_round,
            "bytes_per_participant": self.bytes_per_participant,
            "samples": self.samples,
            "params": self.layout.size,
        }


def with_changes(spec: JobSpec | str | Path, **changes: Any) -> JobSpec:
    """The spec (or the spec file) with some fields replaced, checked again."""
    job = spec if isinstance(spec, JobSpec) else load_spec(spec)
    if not changes:
        return job
    return spec_from_data({**job.model_dump(mode="json"), **changes})


@dataclass(frozen=True)
class _Prepared:
    spec: JobSpec
    parts: list[Dataset]
    test: Dataset
    layout: Layout


def _prepare(spec: JobSpec, datasets: Mapping[str, Path] | None, data_folders: Sequence[Path]) -> _Prepared:
    if spec.owner_data is None:
        raise EdilError(
            "the job has no owner_data: nothing to measure accuracy on", cause="bad_spec", status=422
        )
    parts = [load(p.data, datasets=datasets, data_folders=data_folders) for p in spec.participants]
    test = load(spec.owner_data, datasets=datasets, data_folders=data_folders)
    features, classes = spec.data_shape()
    for i, d in enumerate([*parts, test]):
        if d.n_features != features or (d.y.size and int(d.y.max()) >= classes):
            where = f"participant {i}" if i < len(parts) else "owner_data"
            raise EdilError(f"{where}: {d.n_features} features, labels to {int(d.y.max())}; the job says "
                            f"{features} features, {classes} classes", cause="bad_data")  # fmt: skip
    if spec.encoder is not None:
        from r1os.edil._dae import train_dae

        enc = spec.encoder
        dae = train_dae(
            parts[0].X, dim=enc.dim, hidden=enc.hidden, epochs=enc.epochs, lr=enc.lr, seed=spec.seed
        )
        parts = [Dataset(dae.encode(d.X), d.y) for d in parts]
        test = Dataset(dae.encode(test.X), test.y)
    n_in, classes = spec.model_shape()
    return _Prepared(spec, parts, test, layout(spec, n_in, classes))


def simulate(
    spec: JobSpec | str | Path,
    *,
    privacy: str = "plain",
    secure_sum: SecureSum | None = None,
    datasets: Mapping[str, Path] | None = None,
    data_folders: Sequence[Path] = (),
) -> SimResult:
    """Run the job's rounds in this process and measure the global model on the owner's test set."""
    if privacy != "plain" and secure_sum is None:
        raise EdilError(
            f"privacy {privacy!r} in a simulation needs secure_sum (the encrypt-add-decrypt path)"
        )
    prep = _prepare(with_changes(spec), datasets, data_folders)
    job, lay = prep.spec, prep.layout
    strategy = strategy_from_spec(job)
    params = init_params(lay, job.seed)
    accuracy: list[float] = []
    seconds: list[float] = []
    samples = [d.n for d in prep.parts]
    for r in range(1, job.rounds + 1):
        t0 = time.perf_counter()
        config = strategy.configure_fit(r)
        prox = (config["mu"], params) if config["mu"] else None
        results = [
            FitResult(
                train_local(
                    lay, params, d.X, d.y, epochs=config["epochs"], lr=config["lr"],
                    batch_size=config["batch_size"], seed=local_seed(job.seed, r, i), prox=prox,
                ),
                d.n,
            )
            for i, d in enumerate(prep.parts)
        ]  # fmt: skip
        if secure_sum is None:
            params = strategy.aggregate_fit(results)
        else:
            contributions = [aggregate.weighted_contribution(res.params, res.num_samples) for res in results]
            params = strategy.aggregate_sum(secure_sum(contributions), sum(samples))
        seconds.append(time.perf_counter() - t0)
        accuracy.append(evaluate(lay, params, prep.test.X, prep.test.y))
    return SimResult(privacy, accuracy, seconds, 8 * lay.size, samples, lay, params)


def centralized(
    spec: JobSpec | str | Path,
    *,
    datasets: Mapping[str, Path] | None = None,
    data_folders: Sequence[Path] = (),
) -> SimResult:
    """The same model and budget (rounds x local epochs) trained on all participants' data in one place."""
    prep = _prepare(with_changes(spec), datasets, data_folders)
    job, lay = prep.spec, prep.layout
    X = np.vstack([d.X for d in prep.parts])
    y = np.concatenate([d.y for d in prep.parts])
    params = init_params(lay, job.seed)
    accuracy: list[float] = []
    seconds: list[float] = []
    for r in range(1, job.rounds + 1):
        t0 = time.perf_counter()
        params = train_local(
            lay, params, X, y, epochs=job.local_epochs, lr=job.lr, batch_size=job.batch_size,
            seed=local_seed(job.seed, r, 0),
        )  # fmt: skip
        seconds.append(time.perf_counter() - t0)
        accuracy.append(evaluate(lay, params, prep.test.X, prep.test.y))
    return SimResult("centralized", accuracy, seconds, 0, [int(y.size)], lay, params)
