"""Strategies: how local training is configured each round and how updates become the next global model.

Small on purpose, as Flower's `Strategy`: `configure_fit(round)` gives the settings participants train with,
`aggregate_fit(results)` turns their results into the next global parameters, and `aggregate_sum` does the
same from an encrypted (or masked) sum once the owner has decrypted it. The maths is in `aggregate.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, NamedTuple, TypedDict

import numpy as np
import numpy.typing as npt

from r1os.edil import aggregate
from r1os.edil._errors import EdilError
from r1os.edil._spec import JobSpec

FloatArray = npt.NDArray[np.float64]


class FitConfig(TypedDict):
    """What a participant trains with in one round; `mu` > 0 adds FedProx's proximal term."""

    round: int
    epochs: int
    lr: float
    batch_size: int
    mu: float


class FitResult(NamedTuple):
    """One participant's trained parameters and the number of samples it trained on."""

    params: FloatArray
    num_samples: int


class Strategy(ABC):
    """The owner's side of federated training."""

    name: ClassVar[str]

    def __init__(self, *, epochs: int = 1, lr: float = 0.1, batch_size: int = 32) -> None:
        if epochs < 1 or not lr > 0 or batch_size < 1:
            raise EdilError(f"epochs={epochs}, lr={lr}, batch_size={batch_size}: all must be positive")
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size

    def configure_fit(self, round_: int) -> FitConfig:
        """The local-training settings of round `round_` (1-based)."""
        if round_ < 1:
            raise EdilError(f"round {round_}: rounds count from 1")
        return FitConfig(round=round_, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, mu=0.0)

    @abstractmethod
    def aggregate_fit(self, results: Sequence[FitResult]) -> FloatArray:
        """The next global parameters from the round's results (those that arrived in time)."""

    @abstractmethod
    def aggregate_sum(self, summed: FloatArray, total_samples: int) -> FloatArray:
        """The next global parameters from the sum of the results' contributions, decrypted."""


class FedAvg(Strategy):
    """Federated averaging weighted by samples (McMahan et al.)."""

    name = "fedavg"

    def aggregate_fit(self, results: Sequence[FitResult]) -> FloatArray:
        return aggregate.weighted_average([r.params for r in results], [r.num_samples for r in results])

    def aggregate_sum(self, summed: FloatArray, total_samples: int) -> FloatArray:
        return aggregate.average_from_sum(summed, total_samples)


class FedProx(FedAvg):
    """FedAvg's aggregation; participants add mu/2 ||w - w_global||^2 to their local loss (Li et al.)."""

    name = "fedprox"

    def __init__(self, *, mu: float, epochs: int = 1, lr: float = 0.1, batch_size: int = 32) -> None:
        super().__init__(epochs=epochs, lr=lr, batch_size=batch_size)
        if not 0 < mu < float("inf"):
            raise EdilError(f"mu={mu}: FedProx needs mu > 0")
        self.mu = float(mu)

    def configure_fit(self, round_: int) -> FitConfig:
        config = super().configure_fit(round_)
        config["mu"] = self.mu
        return config


def strategy_from_spec(spec: JobSpec) -> Strategy:
    """The strategy a job names, with its local-training settings."""
    epochs, lr, batch_size = spec.local_epochs, spec.lr, spec.batch_size
    if spec.strategy.name == "fedprox":
        return FedProx(mu=spec.strategy.mu, epochs=epochs, lr=lr, batch_size=batch_size)
    return FedAvg(epochs=epochs, lr=lr, batch_size=batch_size)
