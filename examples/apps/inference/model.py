"""A digits classifier served as a Deeploy `plugin` app.

setup() trains a support vector classifier on the 8x8 digits data set that ships with scikit-learn
(1797 images, no download); process() answers POST /predict with {"inputs": [[64 floats], ...]}
(pixel values 0-16, row by row) -> {"predictions": [int, ...]}.
"""

from __future__ import annotations

import math
from typing import Any

MAX_INPUTS = 1024


class DigitsModel:
    threadsafe = True  # predict() on a fitted SVC only reads the model

    def setup(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.svm import SVC

        x, y = load_digits(return_X_y=True)
        self.model = SVC(gamma=0.001, C=10.0).fit(x, y)

    def process(self, request: Any) -> Any:
        if request.path != "/predict":
            return 404, {"error": f"no route {request.path}: POST /predict"}
        if request.method != "POST":
            return 405, {"error": "use POST /predict"}
        body = request.json
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return 400, {"error": 'send {"inputs": [[64 numbers], ...]}'}
        if len(inputs) > MAX_INPUTS:
            return 413, {"error": f"at most {MAX_INPUTS} inputs per request"}
        for i, row in enumerate(inputs):
            if not isinstance(row, list) or len(row) != 64:
                return 400, {"error": f"inputs[{i}]: a list of 64 numbers (8x8 pixels, 0-16)"}
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in row
            ):
                return 400, {"error": f"inputs[{i}]: every value is a finite number"}
        return {"predictions": [int(p) for p in self.model.predict(inputs)]}
