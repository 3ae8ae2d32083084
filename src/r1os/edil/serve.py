"""A trained EDIL model served as a Deeploy `plugin` app (`plugin: r1os.edil.serve:ModelServer`).

The app's folder holds `model.json` (the global model: layout and parameters, written by
`serving_spec`) and, for a job trained on a Domain Auto-Encoder's encodings, optionally
`encoder.json` (the owner's encoder). Then:

- `POST /predict {"inputs": [[...], ...]}` takes *encoded* inputs (what the model was trained on), or raw
  inputs when the app holds the encoder (deploy it so only on the owner's own nodes: the encoder is
  what keeps encodings from being read back);
- `GET /` (health) and `GET /model` (the layout, the job and round it came from).

No user code runs: the class and the numpy forward pass are r1os's own.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from r1os.edil._errors import EdilError

MAX_INPUTS = 4096
MODEL_FILE = "model.json"
ENCODER_FILE = "encoder.json"


def model_document(family: str, sizes: tuple[int, ...], params: np.ndarray, **meta: Any) -> str:
    """The `model.json` of a served model (parameters as base64 float64, little-endian)."""
    raw = np.asarray(params, dtype="<f8").tobytes()
    return json.dumps(
        {"family": family, "sizes": list(sizes), "params": base64.b64encode(raw).decode(), **meta}
    )


def encoder_document(encoder_bytes: bytes) -> str:
    return json.dumps({"encoder": base64.b64encode(encoder_bytes).decode()})


def serving_spec(
    name: str,
    family: str,
    sizes: tuple[int, ...],
    params: np.ndarray,
    *,
    replicas: int = 1,
    encoder: bytes | None = None,
    nodes: list[str] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """A Deeploy app spec (as data) that serves the model; deploy it with `r1os app deploy` or the SDK."""
    files = {MODEL_FILE: model_document(family, sizes, params, **meta)}
    if encoder is not None:
        files[ENCODER_FILE] = encoder_document(encoder)
    return {
        "name": name,
        "runtime": "plugin",
        "plugin": "r1os.edil.serve:ModelServer",
        "files": files,
        "replicas": replicas,
        "resources": {"cpu": 0.5, "memory_mb": 256},
        "placement": {"nodes": nodes or []},
        "health": {"http": "/", "interval_s": 1, "failures": 3},
    }


class ModelServer:
    """The plugin class: loads `model.json` (and `encoder.json`) from the app folder at setup."""

    threadsafe = True  # the forward pass only reads the parameters

    def setup(self) -> None:
        from r1os.edil._models import Layout

        doc = json.loads(Path(MODEL_FILE).read_text())
        self.layout = Layout(str(doc["family"]), tuple(int(s) for s in doc["sizes"]))
        params = np.frombuffer(base64.b64decode(doc["params"]), dtype="<f8").astype(np.float64)
        if params.size != self.layout.size:
            raise EdilError(f"model.json holds {params.size} parameters, its layout needs {self.layout.size}")
        self.params = params
        self.meta = {k: v for k, v in doc.items() if k not in ("params",)}
        self.encoder: Any = None
        if Path(ENCODER_FILE).exists():
            from r1os.edil._dae import DAE

            enc = json.loads(Path(ENCODER_FILE).read_text())
            self.encoder = DAE.from_bytes(base64.b64decode(enc["encoder"]))

    def _inputs(self, body: Any) -> tuple[np.ndarray | None, str]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return None, 'send {"inputs": [[numbers], ...]}'
        if len(inputs) > MAX_INPUTS:
            return None, f"at most {MAX_INPUTS} inputs per request"
        width = {len(r) if isinstance(r, list) else -1 for r in inputs}
        raw_width = self.encoder.n_features if self.encoder is not None else None
        wants = {self.layout.n_features} | ({raw_width} if raw_width else set())
        if len(width) != 1 or next(iter(width)) not in wants:
            return None, f"each input is a list of {' or '.join(str(w) for w in sorted(wants))} numbers"
        flat = [x for row in inputs for x in row]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in flat):
            return None, "inputs are finite numbers"
        X = np.asarray(inputs, dtype=np.float64)
        if X.shape[1] != self.layout.n_features:
            X = self.encoder.encode(X)  # raw inputs, and this app holds the encoder
        return X, ""

    def process(self, request: Any) -> Any:
        from r1os.edil._models import predict, predict_proba

        if request.path == "/model" and request.method == "GET":
            return self.meta
        if request.path != "/predict":
            return 404, {"error": f"no route {request.path}: POST /predict, GET /model"}
        if request.method != "POST":
            return 405, {"error": "use POST /predict"}
        X, problem = self._inputs(request.json)
        if X is None:
            return 400, {"error": problem}
        proba = predict_proba(self.layout, self.params, X)
        return {
            "predictions": predict(self.layout, self.params, X).tolist(),
            "confidence": [round(float(p), 6) for p in proba.max(axis=1)],
        }
