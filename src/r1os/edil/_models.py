"""The model families participants train, in numpy (float64), deterministic given a seed.

A model is a flat float64 vector of parameters plus a `Layout` that says how to read it: the vector is what
travels (encrypted or not), the layout comes from the job spec. `logreg` is multinomial logistic regression
(one dense layer and a softmax); `mlp` adds hidden dense layers with ReLU. Both minimise the mean softmax
cross-entropy by mini-batch SGD; FedProx adds mu/2 ||w - w_global||^2 to the local loss.

Vector order: for each layer in turn, its weights W (inputs x outputs, row-major) then its biases b.

The `cnn` family needs torch and is not built yet: asking for it is refused with that reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from r1os.edil._errors import EdilError
from r1os.edil._spec import JobSpec, ModelSpec

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Layout:
    """How a flat parameter vector reads as layers: `sizes` = (inputs, hidden..., classes)."""

    family: str
    sizes: tuple[int, ...]

    @property
    def layers(self) -> list[tuple[int, int]]:
        """(inputs, outputs) of each dense layer."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def size(self) -> int:
        return sum(i * o + o for i, o in self.layers)

    @property
    def n_features(self) -> int:
        return self.sizes[0]

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    def entries(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape, offset) of each array in the vector."""
        out: list[tuple[str, tuple[int, ...], int]] = []
        offset = 0
        for k, (i, o) in enumerate(self.layers):
            out.append((f"W{k}", (i, o), offset))
            offset += i * o
            out.append((f"b{k}", (o,), offset))
            offset += o
        return out


def layout(spec: JobSpec | ModelSpec, n_features: int, n_classes: int) -> Layout:
    """The layout of the model `spec` names, for `n_features` inputs and `n_classes` labels."""
    from r1os.edil._spec import MAX_PARAMS

    model = spec.model if isinstance(spec, JobSpec) else spec
    if model.family == "cnn":
        try:
            import torch  # noqa: F401
        except ImportError:
            why = "it needs torch, which this node does not have"
        else:
            why = "it is not built yet"
        raise EdilError(f"model family cnn: {why}; use logreg or mlp", cause="unsupported_model", status=501)
    if n_features < 1 or n_classes < 2:
        raise EdilError(f"a model needs 1+ features and 2+ classes, not {n_features} and {n_classes}")
    lay = Layout(model.family, (n_features, *model.hidden, n_classes))
    if lay.size > MAX_PARAMS:
        raise EdilError(f"{lay.size} parameters, at most {MAX_PARAMS}", cause="model_too_large", status=422)
    return lay


def check_params(lay: Layout, params: FloatArray) -> FloatArray:
    """`params` as a float64 vector of the layout's size with finite values; `EdilError` otherwise."""
    vec = np.asarray(params)
    if vec.ndim != 1 or vec.shape[0] != lay.size:
        raise EdilError(
            f"a parameter vector of shape {vec.shape}, the model has {lay.size}", cause="wrong_size"
        )
    if vec.dtype != np.float64:
        vec = vec.astype(np.float64)
    if not np.isfinite(vec).all():
        raise EdilError("the parameters hold NaN or infinite values", cause="bad_params")
    return vec


def init_params(lay: Layout, seed: int) -> FloatArray:
    """Initial parameters: He-normal weights for ReLU layers, Glorot-normal for the output, zero biases."""
    rng = np.random.default_rng(seed)
    vec = np.zeros(lay.size)
    for k, (name, shape, offset) in enumerate(lay.entries()):
        if name.startswith("W"):
            fan_in, fan_out = shape
            last = k == 2 * len(lay.layers) - 2
            std = np.sqrt(2.0 / (fan_in + fan_out)) if last else np.sqrt(2.0 / fan_in)
            vec[offset : offset + fan_in * fan_out] = rng.normal(0.0, std, fan_in * fan_out)
    return vec


def unflatten(lay: Layout, params: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
    """(W, b) of each layer, as views into `params`."""
    return _views(lay, check_params(lay, params))


def _views(lay: Layout, vec: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
    out = []
    offset = 0
    for i, o in lay.layers:
        W = vec[offset : offset + i * o].reshape(i, o)
        offset += i * o
        b = vec[offset : offset + o]
        offset += o
        out.append((W, b))
    return out


def flatten(lay: Layout, layers: list[tuple[FloatArray, FloatArray]]) -> FloatArray:
    """The flat vector of (W, b) pairs (the inverse of `unflatten`)."""
    if len(layers) != len(lay.layers):
        raise EdilError(f"{len(layers)} layers, the model has {len(lay.layers)}", cause="wrong_size")
    parts: list[FloatArray] = []
    for k, ((W, b), (i, o)) in enumerate(zip(layers, lay.layers, strict=True)):
        if W.shape != (i, o) or b.shape != (o,):
            raise EdilError(f"layer {k} is {W.shape} + {b.shape}, the model has ({i}, {o}) + ({o},)")
        parts += [np.asarray(W, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64)]
    return np.concatenate(parts)


def _check_data(lay: Layout, X: FloatArray, y: IntArray | None = None) -> None:
    if X.ndim != 2 or X.shape[1] != lay.n_features:
        raise EdilError(
            f"data of shape {X.shape}, the model takes {lay.n_features} features", cause="bad_data"
        )
    if y is not None:
        if y.shape != (X.shape[0],):
            raise EdilError(f"{X.shape[0]} rows but labels of shape {y.shape}", cause="bad_data")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= lay.n_classes):
            raise EdilError(f"labels outside 0..{lay.n_classes - 1}", cause="bad_data")


def _forward(layers: list[tuple[FloatArray, FloatArray]], X: FloatArray) -> list[FloatArray]:
    """Activations of every layer (input first), the last one the logits."""
    acts = [X]
    for k, (W, b) in enumerate(layers):
        z = acts[-1] @ W + b
        acts.append(np.maximum(z, 0.0) if k < len(layers) - 1 else z)
    return acts


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: FloatArray = e / e.sum(axis=1, keepdims=True)
    return out


def predict_proba(lay: Layout, params: FloatArray, X: FloatArray) -> FloatArray:
    """Class probabilities, [n, classes]."""
    _check_data(lay, X)
    return _softmax(_forward(unflatten(lay, params), X)[-1])


def predict(lay: Layout, params: FloatArray, X: FloatArray) -> IntArray:
    out: IntArray = predict_proba(lay, params, X).argmax(axis=1).astype(np.int64)
    return out


def loss_and_grad(lay: Layout, params: FloatArray, X: FloatArray, y: IntArray) -> tuple[float, FloatArray]:
    """Mean softmax cross-entropy over the rows and its gradient (a vector like `params`)."""
    _check_data(lay, X, y)
    return _loss_and_grad(lay, check_params(lay, params), X, y)


def _loss_and_grad(lay: Layout, params: FloatArray, X: FloatArray, y: IntArray) -> tuple[float, FloatArray]:
    layers = _views(lay, params)
    acts = _forward(layers, X)
    m = X.shape[0]
    p = _softmax(acts[-1])
    loss = float(-np.log(np.maximum(p[np.arange(m), y], 1e-300)).mean())
    grad = np.empty(lay.size)
    views = _views(lay, grad)
    dz = p
    dz[np.arange(m), y] -= 1.0
    dz /= m
    for k in range(len(layers) - 1, -1, -1):
        gW, gb = views[k]
        gW[...] = acts[k].T @ dz
        gb[...] = dz.sum(axis=0)
        if k:
            dz = (dz @ layers[k][0].T) * (acts[k] > 0)
    return loss, grad


def train_local(
    lay: Layout,
    params: FloatArray,
    X: FloatArray,
    y: IntArray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    prox: tuple[float, FloatArray] | None = None,
) -> FloatArray:
    """Mini-batch SGD from `params` for `epochs` passes over (X, y), batches drawn by `seed`; with
    `prox=(mu, w_global)` the FedProx term mu/2 ||w - w_global||^2 joins the loss. Returns new parameters."""
    _check_data(lay, X, y)
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise EdilError(f"epochs={epochs}, lr={lr}, batch_size={batch_size}: all must be positive")
    w = check_params(lay, params).copy()
    anchor: FloatArray | None = None
    mu = 0.0
    if prox is not None:
        mu, anchor = float(prox[0]), check_params(lay, prox[1])
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    for epoch in range(epochs):
        order = rng.permutation(n)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                _, g = _loss_and_grad(lay, w, X[rows], y[rows])
                if anchor is not None and mu:
                    g += mu * (w - anchor)
                w -= lr * g
        if not np.isfinite(w).all():
            raise EdilError(
                f"training diverged in epoch {epoch + 1} (NaN or infinite parameters): lower lr",
                cause="diverged",
            )
    return w


def evaluate(lay: Layout, params: FloatArray, X: FloatArray, y: IntArray) -> float:
    """Accuracy on (X, y), in 0..1."""
    _check_data(lay, X, y)
    if not X.shape[0]:
        raise EdilError("no rows to evaluate on", cause="bad_data")
    return float((predict(lay, params, X) == y).mean())


def local_seed(job_seed: int, round_: int, participant: int) -> int:
    """The batch-order seed of one participant in one round: the same on every node and in `simulate`."""
    digest = hashlib.sha256(f"edil-local:{job_seed}:{round_}:{participant}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
