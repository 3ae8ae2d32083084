"""The one-process job on the issue's example: FedAvg over the label-skewed digits parts against centralized
training with the same budget (the issue's target: within 2 points)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from r1os.edil import EdilError, JobSpec, load, load_spec
from r1os.edil.simulate import SimResult, centralized, simulate, with_changes

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edil" / "digits.yaml"
Runs = tuple[JobSpec, SimResult, SimResult]


@pytest.fixture(scope="module")
def runs() -> Runs:
    spec = load_spec(EXAMPLE)
    return spec, simulate(spec), centralized(spec)


def test_fedavg_on_the_example_is_within_two_points_of_centralized(runs: Runs) -> None:
    spec, fed, central = runs
    # Measured (seed 0): FedAvg 0.958, centralized 0.964 on the 359 held-out digits.
    assert fed.final_accuracy >= 0.94
    assert central.final_accuracy >= 0.94
    assert fed.final_accuracy >= central.final_accuracy - 0.02
    assert len(fed.accuracy) == len(fed.seconds_per_round) == spec.rounds == 30
    assert fed.accuracy[0] < fed.final_accuracy  # it learns over rounds
    assert fed.samples == [547, 449, 442] and central.samples == [1438]
    assert fed.layout.size == 64 * 32 + 32 + 32 * 10 + 10
    assert fed.bytes_per_participant == 8 * fed.layout.size
    assert fed.to_dict()["final_accuracy"] == fed.final_accuracy and fed.to_dict()["params"] == 2410


def test_the_same_spec_gives_the_same_model(runs: Runs) -> None:
    spec, fed, _ = runs
    short = with_changes(spec, rounds=3)
    a, b = simulate(short), simulate(short)
    np.testing.assert_array_equal(a.params, b.params)
    assert a.accuracy == fed.accuracy[:3]  # the first rounds of the full run, exactly
    assert not np.array_equal(simulate(with_changes(short, seed=1)).params, a.params)


def test_the_sum_path_matches_plain_averaging(runs: Runs) -> None:
    """What the owner does under encryption (divide a sum of n_i * w_i by sum n_i) gives the plain model;
    the secure_sum here is the identity path a CKKS sum stands in for."""
    spec, _, _ = runs
    short = with_changes(spec, rounds=3)
    seen: list[int] = []

    def plain_sum(contributions: list[np.ndarray]) -> np.ndarray:
        seen.append(len(contributions))
        out: np.ndarray = np.sum(contributions, axis=0)
        return out

    via_sum = simulate(short, privacy="ckks", secure_sum=plain_sum)
    np.testing.assert_allclose(via_sum.params, simulate(short).params, rtol=1e-10, atol=1e-12)
    assert seen == [3, 3, 3] and via_sum.mode == "ckks"
    with pytest.raises(EdilError, match="needs secure_sum"):
        simulate(short, privacy="ckks")


def test_fedprox_and_an_encoder_run(runs: Runs) -> None:
    spec, _, _ = runs
    prox = simulate(with_changes(spec, rounds=10, strategy={"name": "fedprox", "mu": 0.01}))
    assert prox.final_accuracy > 0.85
    encoded = with_changes(spec, rounds=10, encoder={"dim": 16})
    enc = simulate(encoded)
    assert enc.layout.n_features == 16 and enc.final_accuracy > 0.85


def test_own_data_sets(tmp_path: Path, runs: Runs) -> None:
    """Participants naming operator-declared data sets (here copies of digits parts) train the same way."""
    datasets = {}
    for i in range(2):
        part = load(f"example:digits?part={i}&of=2")
        datasets[f"site{i}"] = tmp_path / f"site{i}.npz"
        np.savez(datasets[f"site{i}"], X=part.X, y=part.y)
    test = load("example:digits?split=test")
    datasets["held"] = tmp_path / "held.npz"
    np.savez(datasets["held"], X=test.X, y=test.y)
    spec = with_changes(
        runs[0],
        rounds=5,
        participants=[{"node": "@edge1", "data": "data:site0"}, {"node": "@edge2", "data": "data:site1"}],
        owner_data="data:held",
        model={"family": "logreg", "features": 64, "classes": 10},
    )
    assert simulate(spec, datasets=datasets).final_accuracy > 0.85
    with pytest.raises(EdilError, match="does not offer a data set 'site1'"):
        simulate(spec, datasets={"site0": datasets["site0"], "held": datasets["held"]})
    wrong = with_changes(spec, model={"family": "logreg", "features": 64, "classes": 3})
    with pytest.raises(EdilError, match="3 classes"):
        simulate(wrong, datasets=datasets)


def test_a_job_without_owner_data_has_nothing_to_measure(runs: Runs) -> None:
    with pytest.raises(EdilError, match="no owner_data"):
        simulate(with_changes(runs[0], owner_data=None))
