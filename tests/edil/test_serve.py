"""A trained model served as a Deeploy plugin app, in the real sandboxed plugin runtime: encoded inputs,
and raw inputs where the app holds the owner's encoder."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from r1os.deeploy import spec_from_data
from r1os.deeploy.runtimes.plugin import PluginRuntime
from r1os.edil._data import load
from r1os.edil._models import evaluate, layout, predict
from r1os.edil.serve import serving_spec
from r1os.edil.simulate import simulate, with_changes
from tests.conftest import async_wait_for
from tests.deeploy.test_runtime_process import NodeLayout

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edil" / "digits.yaml"
pytestmark = pytest.mark.skipif(
    PluginRuntime.unavailable() is not None, reason=f"{PluginRuntime.unavailable()}"
)


@pytest.fixture
async def runtime() -> AsyncIterator[PluginRuntime]:
    rt = PluginRuntime()
    yield rt
    await rt.aclose()


def concrete(spec: Any) -> Any:
    nodes = [f"0x{i:040x}" for i in range(1, 4)]
    return with_changes(
        spec,
        participants=[{"node": n, "data": p.data} for n, p in zip(nodes, spec.participants, strict=True)],
    )


async def serve(node: NodeLayout, rt: PluginRuntime, app: dict[str, Any], rid: str) -> str:
    spec = spec_from_data(app)  # the app spec a user would deploy is valid as is
    assert isinstance(spec.files, dict)
    launch = node.launch(rid, files=spec.files, runtime="plugin", plugin=spec.plugin,
                         env={"R1OS_HEALTH_PATH": "/"})  # fmt: skip
    await rt.start(launch)
    url = f"http://127.0.0.1:{launch.port}"

    async def ready() -> bool:
        try:
            return (await httpx.AsyncClient().get(url + "/", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    await async_wait_for(ready, 30, "the model app to be ready")
    return url


async def test_a_trained_model_serves_predictions(tmp_path: Path, runtime: PluginRuntime) -> None:
    from r1os.edil import load_spec

    spec = concrete(with_changes(load_spec(EXAMPLE), rounds=5))
    result = simulate(spec)
    test = load("example:digits?split=test")
    app = serving_spec(
        "digits-model", result.layout.family, result.layout.sizes, result.params, job="sim", round=5
    )
    url = await serve(NodeLayout.make(tmp_path), runtime, app, "digits-model")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(url + "/predict", json={"inputs": test.X[:50].tolist()})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == predict(result.layout, result.params, test.X[:50]).tolist()
        served = np.array(r.json()["predictions"])
        assert (served == test.y[:50]).mean() >= evaluate(result.layout, result.params, test.X, test.y) - 0.1
        meta = (await http.get(url + "/model")).json()
        assert meta["sizes"] == list(result.layout.sizes) and meta["job"] == "sim"
        for bad in ({"inputs": [[1, 2]]}, {"inputs": "x"}, {"nope": 1}, {"inputs": [[float("nan")] * 64]}):
            r = await http.post(url + "/predict", content=json.dumps(bad, allow_nan=True))
            assert r.status_code == 400, (bad, r.text)


async def test_an_encoder_app_takes_raw_inputs(tmp_path: Path, runtime: PluginRuntime) -> None:
    from r1os.edil import load_spec
    from r1os.edil._dae import train_dae

    base = concrete(with_changes(load_spec(EXAMPLE), rounds=5, encoder={"dim": 16, "epochs": 30}))
    result = simulate(base)
    part0 = load(base.participants[0].data)
    enc = base.encoder
    assert enc is not None
    dae = train_dae(part0.X, dim=enc.dim, hidden=enc.hidden, epochs=enc.epochs, lr=enc.lr, seed=base.seed)
    test = load("example:digits?split=test")
    lay = layout(base, 16, 10)
    app = serving_spec("digits-enc", lay.family, lay.sizes, result.params, encoder=dae.to_bytes())
    url = await serve(NodeLayout.make(tmp_path), runtime, app, "digits-enc")
    async with httpx.AsyncClient(timeout=10) as http:
        raw = await http.post(url + "/predict", json={"inputs": test.X[:40].tolist()})
        encoded = await http.post(url + "/predict", json={"inputs": dae.encode(test.X[:40]).tolist()})
    assert raw.status_code == encoded.status_code == 200, (raw.text, encoded.text)
    assert raw.json()["predictions"] == encoded.json()["predictions"]
    assert np.mean(np.array(raw.json()["predictions"]) == test.y[:40]) > 0.7
