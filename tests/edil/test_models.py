"""The numpy models: layout, exact gradients, deterministic training, FedProx's pull, clear refusals."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from r1os.edil import EdilError, ModelSpec, evaluate, flatten, init_params, layout, train_local, unflatten
from r1os.edil._models import check_params, local_seed, loss_and_grad, predict_proba

LOGREG = ModelSpec()
MLP = ModelSpec(family="mlp", hidden=[7, 5])


def toy(n: int = 60, d: int = 4, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable blobs: class c centred at 2 * e_c."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(0, 0.5, (n, d))
    X[np.arange(n), y] += 2.0
    return X, y.astype(np.int64)


def test_layout_sizes_and_order() -> None:
    lay = layout(MLP, 4, 3)
    assert lay.sizes == (4, 7, 5, 3) and lay.layers == [(4, 7), (7, 5), (5, 3)]
    assert lay.size == 4 * 7 + 7 + 7 * 5 + 5 + 5 * 3 + 3
    assert [(n, s) for n, s, _ in lay.entries()] == [
        ("W0", (4, 7)), ("b0", (7,)), ("W1", (7, 5)), ("b1", (5,)), ("W2", (5, 3)), ("b2", (3,)),
    ]  # fmt: skip
    assert layout(LOGREG, 64, 10).size == 650


def test_flatten_unflatten_round_trip_and_views() -> None:
    lay = layout(MLP, 4, 3)
    vec = np.arange(lay.size, dtype=np.float64)
    layers = unflatten(lay, vec)
    assert layers[0][0][0, 1] == 1.0 and layers[0][1][0] == 28.0  # W0 row-major, then b0
    np.testing.assert_array_equal(flatten(lay, layers), vec)
    with pytest.raises(EdilError, match="wrong|shape") as exc:
        unflatten(lay, vec[:-1])
    assert exc.value.cause == "wrong_size"
    with pytest.raises(EdilError, match="layer 1"):
        flatten(lay, [layers[0], layers[0], layers[2]])


def test_init_is_deterministic_and_seeded() -> None:
    lay = layout(MLP, 4, 3)
    a, b, c = init_params(lay, 1), init_params(lay, 1), init_params(lay, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for W, bias in unflatten(lay, a):
        assert not bias.any() and W.std() > 0


@pytest.mark.parametrize("spec", [LOGREG, MLP], ids=["logreg", "mlp"])
def test_gradient_matches_finite_differences(spec: ModelSpec) -> None:
    X, y = toy(n=9)
    lay = layout(spec, 4, 3)
    w = init_params(lay, 3) + 0.1
    _, g = loss_and_grad(lay, w, X, y)
    h = 1e-6
    for i in np.random.default_rng(0).choice(lay.size, min(25, lay.size), replace=False):
        e = np.zeros(lay.size)
        e[i] = h
        numeric = (loss_and_grad(lay, w + e, X, y)[0] - loss_and_grad(lay, w - e, X, y)[0]) / (2 * h)
        assert g[i] == pytest.approx(numeric, abs=1e-7)


def test_logreg_loss_by_hand() -> None:
    """Zero parameters: every class has probability 1/k, so the loss is ln k."""
    X, y = toy()
    lay = layout(LOGREG, 4, 3)
    loss, _ = loss_and_grad(lay, np.zeros(lay.size), X, y)
    assert loss == pytest.approx(np.log(3))
    np.testing.assert_allclose(predict_proba(lay, np.zeros(lay.size), X[:2]), 1 / 3)


@pytest.mark.parametrize("spec", [LOGREG, MLP], ids=["logreg", "mlp"])
def test_training_is_deterministic_and_learns(spec: ModelSpec) -> None:
    X, y = toy()
    lay = layout(spec, 4, 3)
    w0 = init_params(lay, 0)
    a = train_local(lay, w0, X, y, epochs=20, lr=0.1, batch_size=8, seed=5)
    b = train_local(lay, w0, X, y, epochs=20, lr=0.1, batch_size=8, seed=5)
    c = train_local(lay, w0, X, y, epochs=20, lr=0.1, batch_size=8, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert loss_and_grad(lay, a, X, y)[0] < loss_and_grad(lay, w0, X, y)[0] / 2
    assert evaluate(lay, a, X, y) == 1.0
    assert not np.shares_memory(a, w0) and np.array_equal(w0, init_params(lay, 0))  # input untouched


def test_fedprox_term_pulls_towards_the_global_model() -> None:
    X, y = toy()
    lay = layout(LOGREG, 4, 3)
    w0 = init_params(lay, 0)
    free = train_local(lay, w0, X, y, epochs=5, lr=0.1, batch_size=8, seed=1)
    near = train_local(lay, w0, X, y, epochs=5, lr=0.1, batch_size=8, seed=1, prox=(5.0, w0))
    zero = train_local(lay, w0, X, y, epochs=5, lr=0.1, batch_size=8, seed=1, prox=(0.0, w0))
    np.testing.assert_array_equal(zero, free)
    assert np.linalg.norm(near - w0) < 0.5 * np.linalg.norm(free - w0)


def test_one_full_batch_step_by_hand() -> None:
    """One epoch, one batch: w1 = w0 - lr * (grad + mu (w0 - g)), the FedProx gradient step exactly."""
    X, y = toy(n=6)
    lay = layout(LOGREG, 4, 3)
    w0, g = init_params(lay, 0), init_params(lay, 9)
    _, grad = loss_and_grad(lay, w0, X, y)
    w1 = train_local(lay, w0, X, y, epochs=1, lr=0.5, batch_size=6, seed=0, prox=(0.3, g))
    np.testing.assert_allclose(w1, w0 - 0.5 * (grad + 0.3 * (w0 - g)), rtol=1e-12, atol=1e-12)


def test_refusals() -> None:
    X, y = toy()
    lay = layout(LOGREG, 4, 3)
    w = init_params(lay, 0)
    with pytest.raises(EdilError, match="takes 4 features"):
        train_local(lay, w, X[:, :3], y, epochs=1, lr=0.1, batch_size=8, seed=0)
    with pytest.raises(EdilError, match="labels outside"):
        evaluate(lay, w, X, y + 1)
    with pytest.raises(EdilError, match="positive"):
        train_local(lay, w, X, y, epochs=0, lr=0.1, batch_size=8, seed=0)
    bad = w.copy()
    bad[3] = np.nan
    with pytest.raises(EdilError, match="NaN") as exc:
        check_params(lay, bad)
    assert exc.value.cause == "bad_params"
    with pytest.raises(EdilError, match="diverged"):
        train_local(lay, w, X * 1e200, y, epochs=3, lr=1e10, batch_size=8, seed=0)
    with pytest.raises(EdilError, match="2\\+ classes"):
        layout(LOGREG, 4, 1)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
def test_cnn_is_refused_without_torch() -> None:
    with pytest.raises(EdilError, match="needs torch") as exc:
        layout(ModelSpec(family="cnn"), 64, 10)
    assert exc.value.cause == "unsupported_model"


def test_local_seeds_differ_by_round_and_participant() -> None:
    seeds = {local_seed(0, r, i) for r in range(1, 20) for i in range(10)}
    assert len(seeds) == 190 and local_seed(0, 1, 0) == local_seed(0, 1, 0)
