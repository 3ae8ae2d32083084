"""End to end in a real browser: a devnet of node processes, one edge node's dashboard opened in headless
Debian Chromium (Selenium with Debian's chromedriver), every node on its network map, a CSTORE key
written through the SDK found in the CSTORE browser (its HTML-looking value shown as text), and the
availability chart filled from the oracle once an epoch closes. Screenshots go to the test's folder and
to test-output/dashboard/ in the checkout.

Needs `apt-get install chromium chromium-driver` (`./dev setup` does it); skipped without them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import r1os
from r1os.devnet import Devnet, DevnetState

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "dashboard"
HB = 1.0
EPOCH = 4  # seconds: short, so an epoch closes while the test runs and the chart has something to show

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "headless browser test: needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
        "/usr/bin/chromedriver); `./dev setup` installs them",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extras: ./dev setup")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,1000",
]


@pytest.fixture
def devnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevnetState]:
    # Node processes inherit the environment: a short epoch clock for the oracle (no chain to give one).
    monkeypatch.setenv("R1OS_GENESIS_TIME", str(int(time.time())))
    monkeypatch.setenv("R1OS_EPOCH_SECONDS", str(EPOCH))
    dn = Devnet(tmp_path / "devnet")
    try:
        yield dn.up(nodes=2, oracles=1, chain=False, heartbeat=HB, timeout=60)
    finally:
        dn.down()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Screens:
    def __init__(self, driver: Any, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.saved: list[Path] = []

    def shoot(self, name: str, *, section: str | None = None, full: bool = False) -> Path:
        d = self.driver
        if full:
            d.execute_script("window.scrollTo(0, 0)")
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1440, min(int(height) + 160, 6000))
        elif section:
            d.execute_script("document.getElementById(arguments[0]).scrollIntoView()", section)
            d.execute_script("window.scrollBy(0, -60)")  # below the sticky header
        path = self.folder / name
        assert d.save_screenshot(str(path)), name
        shutil.copy(path, OUTPUT / name)
        self.saved.append(path)
        if full:
            d.set_window_size(1440, 1000)
        return path


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float, what: str) -> Any:
    waiter = WebDriverWait(driver, timeout, poll_frequency=0.1)
    return waiter.until(condition, f"timed out waiting for {what}")


def js(script: str) -> Callable[[Any], Any]:
    return lambda d: d.execute_script(script)


def test_a_devnet_node_dashboard_in_chromium(devnet: DevnetState, browser: Any, tmp_path: Path) -> None:
    oracle, edge = devnet.nodes
    assert oracle.oracle and not edge.oracle
    screens = Screens(browser, tmp_path / "screens")
    started = time.monotonic()
    browser.get(f"{edge.url}/")

    # every node of the devnet on the network map, online
    everyone = {n.address.lower() for n in devnet.nodes}
    rows = js(
        "return [...document.querySelectorAll('#network tbody tr[data-address]')]"
        ".filter(r => r.dataset.status === 'online').map(r => r.dataset.address.toLowerCase())"
    )
    wait(browser, lambda d: set(rows(d)) == everyone, 30, f"the network map to show {sorted(everyone)}")
    ring = "return document.querySelectorAll('#network svg g[data-address]').length"
    assert browser.execute_script(ring) == 2
    wait(browser, js("return document.getElementById('live').textContent === 'live'"), 10, "the live stream")
    assert edge.address in browser.find_element("id", "who").text
    screens.shoot("network-map.png")

    # a key written through the SDK as node-01's operator, found in node-02's CSTORE browser
    key = f"node:{oracle.address}:dashboard:hello"
    value = {"greeting": "<img src=x onerror=alert(1)>hello <b>world</b>", "n": 1}
    with r1os.Session(oracle.url, home=oracle.home) as session:
        session.cstore.set(key, value)
    prefix = browser.find_element("id", "cstore-prefix")
    prefix.clear()
    prefix.send_keys(f"node:{oracle.address}:")
    browser.find_element("id", "cstore-list").click()
    find_key = js(
        "return [...document.querySelectorAll('#cstore-keys button.key')]"
        f".find(b => b.dataset.key === {key!r}) || null"
    )
    button = wait(browser, find_key, 20, f"{key} in the CSTORE browser")
    button.click()
    shown = wait(
        browser,
        js("const v = document.getElementById('cstore-value-text'); return v && v.textContent"),
        10,
        "the key's value",
    )
    assert value["greeting"] in shown and '"n": 1' in shown
    # shown as text: no element made of it
    made = "return document.querySelectorAll('#cstore-value img, #cstore-value b').length"
    assert browser.execute_script(made) == 0
    screens.shoot("cstore-browser.png", section="cstore")

    # a file added to R1FS on this node with 2 replicas: its pin, then both live copies
    with r1os.Session(edge.url, home=edge.home) as session:
        cid = session.r1fs.add_bytes(b"r1os dashboard test\n" * 1000, replicas=2)["cid"]
    live = js(
        f"const r = document.querySelector('#r1fs tr[data-cid=\"{cid}\"]');"
        " return r ? r.children[4].textContent : null"
    )
    wait(browser, lambda d: live(d) == "2", 40, f"2 live copies of {cid} in the R1FS panel")
    screens.shoot("r1fs-pins.png", section="r1fs")

    # the availability chart, relayed by the edge node from the oracle, once an epoch has closed
    cells = js(
        "return [...document.querySelectorAll('#availability rect.cell')]"
        ".map(c => c.dataset.node.toLowerCase())"
    )
    wait(browser, lambda d: everyone <= set(cells(d)), 45, "an epoch's availability for every node")
    # deploy an app (the echo example, one replica per node) and see it appear with its replicas
    from r1os.deeploy import load_spec
    from r1os.deeploy._requests import sign_app_request
    from r1os.identity import NodeKey

    owner = NodeKey.generate()
    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "apps" / "echo" / "app.yaml")
    signed = sign_app_request(owner, network=devnet.network, action="deploy", name=spec.name, spec=spec)
    r = httpx.post(edge.url + "/v1/apps/requests", content=signed.model_dump_json(), timeout=30)
    assert r.status_code == 200, r.text
    app_id = f"{owner.address.lower()}/{spec.name}"
    healthy = js(
        f"const r = document.querySelector('#apps tr[data-app=\"{app_id}\"]');"
        " return r ? r.children[4].textContent : null"
    )
    want = f"{spec.replicas}/{spec.replicas}"
    wait(browser, lambda d: healthy(d) == want, 60, f"{want} healthy replicas of the app in the Apps panel")
    screens.shoot("apps.png", section="apps")
    # the Training panel lists EDIL jobs (this two-node devnet has too few nodes for one: it says how)
    wait(
        browser,
        js("return document.querySelector('#training .summary')?.textContent || ''"),
        10,
        "the Training panel",
    )
    assert "0 jobs" in browser.find_element("id", "training").text
    # licences and rewards live on the chain, which this devnet has not
    wait(
        browser,
        js("return document.querySelector('#licences .summary')?.textContent.includes('no chain') || null"),
        10,
        "the Licences panel to say there is no chain",
    )
    screens.shoot("dashboard-full.png", full=True)

    # the page ran without a script error
    logs = browser.get_log("browser")
    errors = [e for e in logs if e["level"] == "SEVERE" and e.get("source") != "network"]
    assert not errors, errors
    took = time.monotonic() - started
    print(f"dashboard e2e: {took:.1f} s in the browser, screenshots in {screens.folder} and {OUTPUT}")
    assert all(p.stat().st_size > 10_000 for p in screens.saved)
    assert {p.name for p in screens.saved} <= set(os.listdir(OUTPUT))
