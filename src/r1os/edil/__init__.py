"""EDIL: federated learning over nodes, with encrypted aggregation and a Domain Auto-Encoder.

Importing the package loads the job spec (pydantic, and numpy for data references) and the error type; the
rest of the numpy core (models, data, strategies, the auto-encoder) loads on first use of its names. The
one-process simulation is `r1os.edil.simulate` (`simulate`, `centralized`). The node service, TenSEAL and
torch never load here.
"""

from typing import TYPE_CHECKING, Any

from r1os.edil._errors import EdilError
from r1os.edil._spec import (
    EncoderSpec,
    JobSpec,
    ModelSpec,
    Participant,
    StrategySpec,
    load_spec,
    parse_spec,
    resolve_participants,
    spec_from_data,
)

if TYPE_CHECKING:
    from r1os.edil._dae import DAE, AttackReport, attack_reconstruction, train_dae
    from r1os.edil._data import DataRef, Dataset, load, parse_ref
    from r1os.edil._models import Layout, evaluate, flatten, init_params, layout, train_local, unflatten
    from r1os.edil.aggregate import average_from_sum, weighted_average, weighted_contribution
    from r1os.edil.strategy import FedAvg, FedProx, FitConfig, FitResult, Strategy, strategy_from_spec

_LAZY = {
    **dict.fromkeys(("DAE", "AttackReport", "attack_reconstruction", "train_dae"), "r1os.edil._dae"),
    **dict.fromkeys(("Dataset", "DataRef", "load", "parse_ref"), "r1os.edil._data"),
    **dict.fromkeys(
        ("Layout", "evaluate", "flatten", "init_params", "layout", "train_local", "unflatten"),
        "r1os.edil._models",
    ),
    **dict.fromkeys(("average_from_sum", "weighted_average", "weighted_contribution"), "r1os.edil.aggregate"),
    **dict.fromkeys(
        ("FedAvg", "FedProx", "FitConfig", "FitResult", "Strategy", "strategy_from_spec"),
        "r1os.edil.strategy",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "DAE",
    "AttackReport",
    "DataRef",
    "Dataset",
    "EdilError",
    "EncoderSpec",
    "FedAvg",
    "FedProx",
    "FitConfig",
    "FitResult",
    "JobSpec",
    "Layout",
    "ModelSpec",
    "Participant",
    "Strategy",
    "StrategySpec",
    "attack_reconstruction",
    "average_from_sum",
    "evaluate",
    "flatten",
    "init_params",
    "layout",
    "load",
    "load_spec",
    "parse_ref",
    "parse_spec",
    "resolve_participants",
    "spec_from_data",
    "strategy_from_spec",
    "train_dae",
    "train_local",
    "unflatten",
    "weighted_average",
    "weighted_contribution",
]
