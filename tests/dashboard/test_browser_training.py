"""In the browser: a federated-learning job started on a devnet node appears in its dashboard's Training
panel, round by round, until it is done with its test accuracy (screenshot in test-output/dashboard/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from r1os.devnet import Devnet, DevnetState
from tests.dashboard.test_browser import Screens, js, wait
from tests.dashboard.test_browser import browser as browser  # the fixture

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edil" / "digits.yaml"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetState]:
    dn = Devnet(tmp_path / "devnet")
    try:
        yield dn.up(nodes=5, oracles=1, chain=False, heartbeat=1.0, timeout=60)
    finally:
        dn.down()


def test_a_training_job_in_the_dashboard(devnet: DevnetState, browser: Any, tmp_path: Path) -> None:
    owner = devnet.nodes[1]
    token = (Path(owner.home) / "api-token").read_text().strip()
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.update(rounds=5, privacy="ckks")
    auth = {"authorization": f"Bearer {token}"}
    r = httpx.post(f"{owner.url}/v1/edil/jobs", json={"spec": spec}, headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    browser.get(owner.url + "/#training")
    screens = Screens(browser, tmp_path / "screens")
    done = js(
        f"const j = document.querySelector('#training .job[data-job=\"{job_id}\"]');"
        " return j ? j.querySelector('.rounds-done').textContent : null"
    )
    wait(browser, lambda d: done(d) == "5/5", 120, "the job's 5 rounds in the Training panel")
    accuracy = js(
        f"return document.querySelector('#training .job[data-job=\"{job_id}\"] .accuracy').textContent"
    )
    wait(browser, lambda d: accuracy(d).endswith("%"), 10, "the job's test accuracy")
    assert float(accuracy(browser).rstrip(" %")) > 50
    line = f'#training .job[data-job="{job_id}"] polyline'
    points = js(f"return document.querySelector('{line}').getAttribute('points')")
    assert len(points(browser).split()) == 5
    screens.shoot("training.png", section="training")
