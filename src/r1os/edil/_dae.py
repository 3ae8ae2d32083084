"""The Domain Auto-Encoder (DAE): a data owner's private encoder, so shared models see only encodings.

The owner trains an auto-encoder on its own raw data: encoder `d -> hidden (ReLU) -> dim`, decoder
`dim -> hidden (ReLU) -> d`, mean squared error, mini-batch Adam. `encode` gives the `dim` values per example
(standardised per value over the training data) that the shared model trains and serves on; the encoder
travels only to the owner's own nodes (as bytes: `to_bytes`, an .npz without pickle).

`attack_reconstruction` measures what an encoding hides from someone who sees encodings but not the encoder:
the attacker trains its own auto-encoder on public data of the same kind and decodes the victim's encodings
with its own decoder. An encoding is not encryption: an attacker who also gets some (input, encoding) pairs
fits a decoder from them, which the report measures too (`leaked_pairs_mse`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from r1os.edil._errors import EdilError

log = logging.getLogger("r1os.edil")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Layers = list[tuple[FloatArray, FloatArray]]

FORMAT = 1
MAX_ENCODER_BYTES = 64 << 20
MAX_UNITS = 65_536


@dataclass
class DAE:
    """A trained auto-encoder: 4 dense layers (2 encode, 2 decode) and the encodings' mean and scale."""

    layers: Layers
    code_mean: FloatArray
    code_scale: FloatArray

    @property
    def n_features(self) -> int:
        return int(self.layers[0][0].shape[0])

    @property
    def dim(self) -> int:
        return int(self.layers[1][0].shape[1])

    def _check(self, X: FloatArray, width: int, what: str) -> FloatArray:
        A = np.asarray(X, dtype=np.float64)
        if A.ndim != 2 or A.shape[1] != width:
            raise EdilError(f"{what} of shape {A.shape}: the auto-encoder takes {width} values per row")
        return A

    def encode(self, X: FloatArray) -> FloatArray:
        """The encodings of raw rows [n, features] -> [n, dim]."""
        A = self._check(X, self.n_features, "data")
        (W0, b0), (W1, b1) = self.layers[:2]
        z = np.maximum(A @ W0 + b0, 0.0) @ W1 + b1
        out: FloatArray = (z - self.code_mean) / self.code_scale
        return out

    def decode(self, Z: FloatArray) -> FloatArray:
        """Raw rows back from encodings [n, dim] -> [n, features]."""
        A = self._check(Z, self.dim, "encodings") * self.code_scale + self.code_mean
        (W2, b2), (W3, b3) = self.layers[2:]
        out: FloatArray = np.maximum(A @ W2 + b2, 0.0) @ W3 + b3
        return out

    def to_bytes(self) -> bytes:
        """The encoder and decoder as an .npz (no pickle)."""
        arrays: dict[str, FloatArray] = {"format": np.array([FORMAT], dtype=np.float64)}
        for k, (W, b) in enumerate(self.layers):
            arrays[f"W{k}"], arrays[f"b{k}"] = W, b
        arrays["code_mean"], arrays["code_scale"] = self.code_mean, self.code_scale
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy types a keyword as allow_pickle
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DAE:
        """Read `to_bytes`' form back, checking every array; `EdilError` (cause `bad_encoder`) otherwise."""
        if len(data) > MAX_ENCODER_BYTES:
            raise EdilError(
                f"an encoder of {len(data)} bytes, at most {MAX_ENCODER_BYTES}", cause="bad_encoder"
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: np.asarray(npz[k]) for k in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise EdilError(f"not an encoder (.npz of arrays): {exc}", cause="bad_encoder") from None
        want = {"format", "code_mean", "code_scale"} | {f"{p}{k}" for p in "Wb" for k in range(4)}
        if set(arrays) != want:
            raise EdilError(f"an encoder holds {sorted(want)}, not {sorted(arrays)}", cause="bad_encoder")
        if arrays["format"].tolist() != [FORMAT]:
            raise EdilError(
                f"encoder format {arrays['format'].tolist()}, this node reads {FORMAT}", cause="bad_encoder"
            )
        layers: Layers = []
        width = None
        for k in range(4):
            W, b = arrays[f"W{k}"], arrays[f"b{k}"]
            ok = W.ndim == 2 and b.shape == (W.shape[1],) and W.dtype.kind == "f" and b.dtype.kind == "f"
            if not ok or (width is not None and W.shape[0] != width) or max(W.shape) > MAX_UNITS:
                raise EdilError(f"encoder layer {k} has shapes {W.shape} and {b.shape}", cause="bad_encoder")
            width = W.shape[1]
            layers.append((W.astype(np.float64), b.astype(np.float64)))
        dim = layers[1][0].shape[1]
        if layers[3][0].shape[1] != layers[0][0].shape[0] or layers[2][0].shape[0] != dim:
            raise EdilError("the decoder does not mirror the encoder", cause="bad_encoder")
        mean, scale = arrays["code_mean"].astype(np.float64), arrays["code_scale"].astype(np.float64)
        if mean.shape != (dim,) or scale.shape != (dim,) or not (scale > 0).all():
            raise EdilError("the encodings' mean and scale do not fit the encoder", cause="bad_encoder")
        if not all(np.isfinite(a).all() for lay in layers for a in lay) or not np.isfinite(mean).all():
            raise EdilError("the encoder holds NaN or infinite values", cause="bad_encoder")
        return cls(layers, mean, scale)


def _forward(layers: Layers, X: FloatArray) -> list[FloatArray]:
    acts = [X]
    for k, (W, b) in enumerate(layers):
        z = acts[-1] @ W + b
        acts.append(np.maximum(z, 0.0) if k in (0, 2) else z)
    return acts


def train_dae(
    X: FloatArray,
    *,
    dim: int,
    hidden: int = 64,
    epochs: int = 60,
    lr: float = 0.003,
    batch_size: int = 32,
    seed: int = 0,
) -> DAE:
    """Train an auto-encoder on raw rows X [n, features] (MSE, Adam), deterministic given `seed`."""
    A = np.asarray(X, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 2 or not np.isfinite(A).all():
        raise EdilError(
            f"an auto-encoder trains on 2+ finite rows [n, features], not {A.shape}", cause="bad_data"
        )
    if not 1 <= dim <= MAX_UNITS or not 1 <= hidden <= MAX_UNITS or epochs < 1 or not lr > 0:
        raise EdilError(f"dim={dim}, hidden={hidden}, epochs={epochs}, lr={lr}: all must be positive")
    n, d = A.shape
    rng = np.random.default_rng(seed)
    sizes = [(d, hidden), (hidden, dim), (dim, hidden), (hidden, d)]
    layers: Layers = [(rng.normal(0.0, np.sqrt(2.0 / i), (i, o)), np.zeros(o)) for i, o in sizes]
    moments = [(np.zeros_like(W), np.zeros_like(b), np.zeros_like(W), np.zeros_like(b)) for W, b in layers]
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = A[order[start : start + batch_size]]
            acts = _forward(layers, batch)
            delta = 2.0 * (acts[-1] - batch) / batch.size
            step += 1
            for k in range(3, -1, -1):
                W, b = layers[k]
                gW, gb = acts[k].T @ delta, delta.sum(axis=0)
                if k:
                    delta = delta @ W.T
                    if k in (1, 3):
                        delta = delta * (acts[k] > 0)
                mW, mb, vW, vb = moments[k]
                for p, g, m, v in ((W, gW, mW, vW), (b, gb, mb, vb)):
                    m *= beta1
                    m += (1 - beta1) * g
                    v *= beta2
                    v += (1 - beta2) * g * g
                    p -= lr * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
    codes = _forward(layers, A)[2]
    mean, scale = codes.mean(axis=0), codes.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return DAE(layers, mean, scale)


def mse(a: FloatArray, b: FloatArray) -> float:
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


@dataclass(frozen=True)
class AttackReport:
    """What encodings reveal (all MSE per value, data in [0, 1]), and what training on them costs.

    `owner_mse`: the owner's own decoder on the victim's encodings (what the encoding keeps);
    `attacker_mse`: the attacker's decoder (trained on public data of the same kind) on the same encodings;
    `mean_mse`: predicting the public data's mean row for every row (knowing nothing of the victim);
    `leaked_pairs_mse`: an attacker that also has k (input, encoding) pairs of the victim and fits a linear
    decoder (ridge) on them, by k; `raw_accuracy` / `encoded_accuracy`: a classifier trained and tested on raw
    inputs vs on encodings."""

    dim: int
    owner_mse: float
    attacker_mse: float
    mean_mse: float
    raw_accuracy: float
    encoded_accuracy: float
    leaked_pairs_mse: dict[int, float] = field(default_factory=dict)


def _ridge_decoder(Z: FloatArray, X: FloatArray, alpha: float = 1.0) -> FloatArray:
    Zb = np.hstack([Z, np.ones((Z.shape[0], 1))])
    reg = alpha * np.eye(Zb.shape[1])
    reg[-1, -1] = 0.0
    out: FloatArray = np.linalg.solve(Zb.T @ Zb + reg, Zb.T @ X).astype(np.float64)
    return out


def attack_reconstruction(
    *,
    dim: int = 16,
    hidden: int = 64,
    epochs: int = 60,
    lr: float = 0.003,
    seed: int = 0,
    classifier: str = "logreg",
    leaked_pairs: Sequence[int] = (10, 100),
) -> AttackReport:
    """The measurement on scikit-learn's digits: the training pool is split in two halves (iid), the owner's
    and the attacker's (public); the victim rows are the held-out test split, encoded by the owner's encoder.
    The classifier (`logreg` or `mlp` with 32 hidden units) trains on the owner's half, 30 epochs."""
    from r1os.edil._data import load
    from r1os.edil._models import evaluate, init_params, layout, train_local
    from r1os.edil._spec import ModelSpec

    owner = load(f"example:digits?part=0&of=2&skew=iid&seed={seed}")
    public = load(f"example:digits?part=1&of=2&skew=iid&seed={seed}")
    victim = load("example:digits?split=test")
    own = train_dae(owner.X, dim=dim, hidden=hidden, epochs=epochs, lr=lr, seed=seed)
    theirs = train_dae(public.X, dim=dim, hidden=hidden, epochs=epochs, lr=lr, seed=seed + 1)
    Z = own.encode(victim.X)
    leaked: dict[int, float] = {}
    for k in leaked_pairs:
        k = min(int(k), owner.n)
        B = _ridge_decoder(own.encode(owner.X[:k]), owner.X[:k])
        leaked[k] = mse(np.hstack([Z, np.ones((Z.shape[0], 1))]) @ B, victim.X)

    model = ModelSpec(family="mlp", hidden=[32]) if classifier == "mlp" else ModelSpec()

    def accuracy(Xtr: FloatArray, Xte: FloatArray) -> float:
        lay = layout(model, Xtr.shape[1], 10)
        w = train_local(
            lay, init_params(lay, seed), Xtr, owner.y, epochs=30, lr=0.1, batch_size=32, seed=seed
        )
        return evaluate(lay, w, Xte, victim.y)

    report = AttackReport(
        dim=dim,
        owner_mse=mse(own.decode(Z), victim.X),
        attacker_mse=mse(theirs.decode(Z), victim.X),
        mean_mse=mse(np.broadcast_to(public.X.mean(axis=0), victim.X.shape), victim.X),
        raw_accuracy=accuracy(owner.X, victim.X),
        encoded_accuracy=accuracy(own.encode(owner.X), Z),
        leaked_pairs_mse=leaked,
    )
    log.info("edil dae: attack measurement %s", report)
    return report
