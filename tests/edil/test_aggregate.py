"""Aggregation maths and strategies: hand-computed values and properties that hold for any input."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1os.edil import (
    EdilError,
    FedAvg,
    FedProx,
    FitResult,
    average_from_sum,
    load_spec,
    parse_spec,
    strategy_from_spec,
    weighted_average,
    weighted_contribution,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def results(draw: st.DrawFn) -> tuple[list[np.ndarray], list[int]]:
    length = draw(st.integers(1, 8))
    k = draw(st.integers(1, 6))
    vectors = [np.array(draw(st.lists(finite, min_size=length, max_size=length))) for _ in range(k)]
    weights = draw(st.lists(st.integers(1, 10_000), min_size=k, max_size=k))
    return vectors, weights


def test_weighted_average_by_hand() -> None:
    out = weighted_average([np.array([1.0, 0.0]), np.array([4.0, 3.0])], [1, 2])
    np.testing.assert_allclose(out, [3.0, 2.0])  # (1*1 + 2*4)/3, (0 + 2*3)/3
    out = weighted_average([np.array([10.0]), np.array([0.0]), np.array([5.0])], [100, 300, 100])
    np.testing.assert_allclose(out, [3.0])  # (1000 + 0 + 500) / 500


def test_average_from_sum_by_hand() -> None:
    """What the owner does after decrypting Enc(3*w1) + Enc(1*w2)."""
    w1, w2 = np.array([2.0, -1.0]), np.array([6.0, 3.0])
    summed = weighted_contribution(w1, 3) + weighted_contribution(w2, 1)
    np.testing.assert_allclose(summed, [12.0, 0.0])
    np.testing.assert_allclose(average_from_sum(summed, 4), [3.0, 0.0])


@settings(max_examples=60, deadline=None)
@given(results(), st.randoms(use_true_random=False))
def test_permutation_invariant(res: tuple[list[np.ndarray], list[int]], rnd: random.Random) -> None:
    vectors, weights = res
    order = list(range(len(vectors)))
    rnd.shuffle(order)
    a = weighted_average(vectors, weights)
    b = weighted_average([vectors[i] for i in order], [weights[i] for i in order])
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(results(), st.integers(1, 1000))
def test_equal_weights_give_the_mean(res: tuple[list[np.ndarray], list[int]], w: int) -> None:
    vectors, _ = res
    np.testing.assert_allclose(
        weighted_average(vectors, [w] * len(vectors)), np.mean(vectors, axis=0), rtol=1e-9, atol=1e-6
    )


@settings(max_examples=60, deadline=None)
@given(results())
def test_a_single_result_is_itself(res: tuple[list[np.ndarray], list[int]]) -> None:
    vectors, weights = res
    np.testing.assert_allclose(weighted_average(vectors[:1], weights[:1]), vectors[0], rtol=1e-12, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(results())
def test_sum_path_equals_the_average_and_stays_in_the_hull(res: tuple[list[np.ndarray], list[int]]) -> None:
    vectors, weights = res
    avg = weighted_average(vectors, weights)
    via_sum = average_from_sum(
        sum(weighted_contribution(v, n) for v, n in zip(vectors, weights, strict=True)), sum(weights)
    )
    np.testing.assert_allclose(via_sum, avg, rtol=1e-9, atol=1e-6)
    stack = np.stack(vectors)
    assert (avg >= stack.min(axis=0) - 1e-6).all() and (avg <= stack.max(axis=0) + 1e-6).all()


@pytest.mark.parametrize(
    ("vectors", "weights", "cause"),
    [
        ([], [], "no_updates"),
        ([np.zeros(3), np.zeros(4)], [1, 1], "wrong_size"),
        ([np.zeros((2, 2))], [1], "wrong_size"),
        ([np.zeros(3)], [1, 2], "wrong_size"),
        ([np.array([1.0, np.nan])], [1], "bad_params"),
        ([np.zeros(3)], [0], "bad_weight"),
        ([np.zeros(3)], [-2], "bad_weight"),
        ([np.zeros(3)], [float("inf")], "bad_weight"),
    ],
)
def test_refusals(vectors: list[np.ndarray], weights: list[float], cause: str) -> None:
    with pytest.raises(EdilError) as exc:
        weighted_average(vectors, weights)
    assert exc.value.cause == cause
    assert exc.value.status == 400


def test_fedavg_and_fedprox() -> None:
    fedavg = FedAvg(epochs=2, lr=0.3, batch_size=16)
    assert fedavg.configure_fit(1) == {"round": 1, "epochs": 2, "lr": 0.3, "batch_size": 16, "mu": 0.0}
    prox = FedProx(mu=0.01, epochs=2, lr=0.3, batch_size=16)
    assert prox.configure_fit(7)["mu"] == 0.01 and prox.configure_fit(7)["round"] == 7
    res = [FitResult(np.array([1.0, 0.0]), 1), FitResult(np.array([4.0, 3.0]), 2)]
    for s in (fedavg, prox):
        np.testing.assert_allclose(s.aggregate_fit(res), [3.0, 2.0])
        np.testing.assert_allclose(s.aggregate_sum(np.array([9.0, 6.0]), 3), [3.0, 2.0])
    with pytest.raises(EdilError, match="rounds count from 1"):
        fedavg.configure_fit(0)
    with pytest.raises(EdilError, match="mu > 0"):
        FedProx(mu=0.0)


def test_strategy_from_spec() -> None:
    spec = load_spec(__file__.rsplit("/tests/", 1)[0] + "/examples/edil/digits.yaml")
    s = strategy_from_spec(spec)
    assert isinstance(s, FedAvg) and not isinstance(s, FedProx)
    assert s.configure_fit(1) == {"round": 1, "epochs": 2, "lr": 0.3, "batch_size": 32, "mu": 0.0}
    prox = parse_spec(
        "name: j\nparticipants: [{node: '@edge1', data: 'example:digits?part=0&of=1'}]\n"
        "strategy: {name: fedprox, mu: 0.05}\n"
    )
    s = strategy_from_spec(prox)
    assert isinstance(s, FedProx) and s.configure_fit(3)["mu"] == 0.05
