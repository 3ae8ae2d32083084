"""The arithmetic of aggregation, apart from any service: pure functions on float64 vectors.

Weighted FedAvg: w = sum_i n_i w_i / sum_i n_i, n_i the samples participant i trained on. Under encryption a
participant sends Enc(n_i * w_i) (`weighted_contribution`), the aggregator adds ciphertexts without a key, and
the owner decrypts the sum and divides (`average_from_sum`): the same result as `weighted_average`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from r1os.edil._errors import EdilError

FloatArray = npt.NDArray[np.float64]


def _vectors(vectors: Sequence[FloatArray]) -> list[FloatArray]:
    if not vectors:
        raise EdilError("nothing to aggregate: no update arrived", cause="no_updates")
    out = [np.asarray(v, dtype=np.float64) for v in vectors]
    length = out[0].shape
    for i, v in enumerate(out):
        if v.ndim != 1 or v.shape != length:
            raise EdilError(f"update {i} has shape {v.shape}, the first has {length}", cause="wrong_size")
        if not np.isfinite(v).all():
            raise EdilError(f"update {i} holds NaN or infinite values", cause="bad_params")
    return out


def _weight(w: float, i: int) -> float:
    value = float(w)
    if not np.isfinite(value) or value <= 0:
        raise EdilError(f"weight {i} is {w!r}: weights (sample counts) are positive", cause="bad_weight")
    return value


def weighted_contribution(vector: FloatArray, samples: int) -> FloatArray:
    """n_i * w_i: what a participant adds to the sum (encrypted, or masked) for weighted FedAvg."""
    (v,) = _vectors([vector])
    out: FloatArray = v * _weight(samples, 0)
    return out


def weighted_average(vectors: Sequence[FloatArray], weights: Sequence[float]) -> FloatArray:
    """sum_i weights_i * vectors_i / sum_i weights_i."""
    vs = _vectors(vectors)
    if len(weights) != len(vs):
        raise EdilError(f"{len(vs)} updates but {len(weights)} weights", cause="wrong_size")
    ws = np.array([_weight(w, i) for i, w in enumerate(weights)])
    out: FloatArray = np.einsum("i,ij->j", ws / ws.sum(), np.stack(vs))
    return out


def average_from_sum(summed: FloatArray, total_samples: float) -> FloatArray:
    """sum_i n_i w_i / sum_i n_i, from the (decrypted) sum and the sample counts of the updates it holds."""
    (v,) = _vectors([summed])
    out: FloatArray = v / _weight(total_samples, 0)
    return out
