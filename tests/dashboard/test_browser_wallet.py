"""In the browser, as a signed-in user: a devnet node's dashboard in headless Chromium with a test wallet
injected into the page (an EIP-1193 provider, as a wallet extension injects `window.ethereum`). The user
signs in, deploys the echo example from the page, watches it become healthy, scales it, writes a CSTORE
key in their own namespace (read back through another node's API), sees each node's licence and rewards
(the devnet has a chain), deletes the app and signs out. Before
the wallet is there, the page says there is none. Screenshots go to test-output/dashboard/.

The test wallet: the provider answers `eth_requestAccounts` with the test key's address and queues each
`personal_sign` request; the test takes the queue through WebDriver, signs with the key (which lives in
this test process only, never in the page nor on a node) and hands back the signature. That is how a
wallet extension works too: its in-page script relays to the extension, which holds the key. The relay
does not go over HTTP from the page because the dashboard's Content-Security-Policy (`connect-src
'self'`) lets the page talk to its node only, and the test keeps that policy in force.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from r1os.devnet import Devnet, DevnetState
from r1os.identity import NodeKey
from tests.dashboard.test_browser import Screens, js, wait
from tests.dashboard.test_browser import browser as browser  # the fixture

ECHO = Path(__file__).resolve().parents[2] / "examples" / "apps" / "echo"
pytestmark = pytest.mark.timeout(240)

PROVIDER = """
(() => {
  const address = %s;
  const pending = [];
  const waiting = new Map();
  const listeners = {};
  let next = 1;
  window.ethereum = {
    isR1osTestWallet: true,
    request({ method, params }) {
      if (method === "eth_requestAccounts" || method === "eth_accounts") return Promise.resolve([address]);
      if (method === "personal_sign") {
        const id = next++;
        pending.push({ id, params });
        return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
      }
      return Promise.reject({ code: 4200, message: `the test wallet does not do ${method}` });
    },
    on(event, fn) { (listeners[event] ||= []).push(fn); },
    removeListener() {},
  };
  Object.defineProperty(window, "__testWallet", { value: Object.freeze({
    take: () => pending.splice(0),
    answer: (id, signature) => { waiting.get(id).resolve(signature); waiting.delete(id); },
    refuse: (id) => {
      waiting.get(id).reject({ code: 4001, message: "User rejected the request." });
      waiting.delete(id);
    },
  }) });
})();
"""


class InjectedWallet:
    """The wallet's key side: signs what the page queued (EIP-191 `personal_sign`)."""

    def __init__(self) -> None:
        self.key = NodeKey.generate()
        self.signed: list[bytes] = []
        self.refuse_next = False  # the user says no to the next request

    def inject(self, driver: Any) -> None:
        source = PROVIDER % json.dumps(self.key.address.lower())
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def pump(self, driver: Any) -> None:
        for req in driver.execute_script("return window.__testWallet ? window.__testWallet.take() : []"):
            message_hex, address = req["params"]
            assert address.lower() == self.key.address.lower(), address
            if self.refuse_next:
                self.refuse_next = False
                driver.execute_script("window.__testWallet.refuse(arguments[0])", req["id"])
                continue
            message = bytes.fromhex(message_hex.removeprefix("0x"))
            self.signed.append(message)
            signature = "0x" + self.key.sign_message(message).hex()
            driver.execute_script(
                "window.__testWallet.answer(arguments[0], arguments[1])", req["id"], signature
            )


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetState]:
    dn = Devnet(tmp_path / "devnet")
    try:
        # with a chain (anvil, the contracts, a licence per node) and 5 s epochs, so rewards show
        yield dn.up(nodes=2, oracles=1, chain=True, epoch_seconds=5, heartbeat=1.0, timeout=90)
    finally:
        dn.down()


def test_sign_in_with_a_wallet_deploy_and_write_as_yourself(
    devnet: DevnetState, browser: Any, tmp_path: Path
) -> None:
    oracle, edge = devnet.nodes
    screens = Screens(browser, tmp_path / "screens")
    wallet = InjectedWallet()

    def until(condition: Callable[[Any], Any], timeout: float, what: str) -> Any:
        """Wait for `condition`, answering the wallet's signature requests meanwhile."""
        return wait(browser, lambda d: (wallet.pump(d), condition(d))[1], timeout, what)

    def status() -> str:
        return str(browser.find_element("id", "account-status").text)

    # no wallet in this browser: signing in says so, and how to do without
    browser.get(f"{edge.url}/#account")
    wait(browser, js("return !!document.getElementById('account-signin')"), 20, "the account panel")
    wait(browser, js("return document.getElementById('live').textContent === 'live'"), 20, "the live stream")
    assert "no wallet in this browser" in browser.find_element("id", "account-nowallet").text
    browser.find_element("id", "account-signin").click()
    wait(browser, lambda d: "no wallet in this browser" in status(), 10, "the no-wallet message")
    assert (
        "r1os app deploy" in status() and browser.find_element("id", "account").text.count("no wallet") == 1
    )
    screens.shoot("wallet-none.png", section="account")

    # a wallet in the page: sign in, the header shows who
    wallet.inject(browser)
    browser.refresh()  # a new document, which the wallet's script runs in first
    wait(browser, js("return !!document.getElementById('wallet-signin')"), 20, "the sign-in button")
    browser.find_element("id", "wallet-signin").click()
    shown = until(js("return document.getElementById('account-address')?.textContent"), 10, "signed in")
    assert shown == wallet.key.address
    assert wallet.key.address[-4:] in browser.find_element("id", "wallet-address").text

    # deploy the echo example from the page: its spec as JSON, app.py chosen as the file it names
    spec = yaml.safe_load((ECHO / "app.yaml").read_text())
    browser.execute_script(
        "document.getElementById('account-spec').value = arguments[0]", json.dumps(spec, indent=1)
    )
    browser.find_element("id", "account-files").send_keys(str(ECHO / "app.py"))
    browser.find_element("id", "account-deploy").click()
    app_id = f"{wallet.key.address.lower()}/echo"
    healthy = js(
        f"const r = document.querySelector('#account-apps tr[data-app=\"{app_id}\"] .healthy');"
        " return r ? r.textContent : null"
    )
    until(lambda d: healthy(d) == "2/2", 90, "2/2 healthy replicas of the user's echo app")
    deploy_text = wallet.signed[0].decode()
    assert deploy_text.startswith("r1os deeploy request v1\n") and f"deploy {app_id}\n" in deploy_text
    apps = httpx.get(f"{oracle.url}/v1/apps", params={"owner": wallet.key.address}, timeout=10).json()["apps"]
    assert [a["app"] for a in apps] == [app_id]
    assert httpx.get(f"{edge.url}/apps/echo/hello", timeout=10).json()["path"] == "/hello"
    screens.shoot("wallet-deployed.png", section="account")

    # scale it to one replica
    replicas = browser.find_element("css selector", f'#account-apps tr[data-app="{app_id}"] input.replicas')
    replicas.clear()
    replicas.send_keys("1")
    browser.find_element("css selector", f'#account-apps tr[data-app="{app_id}"] button.scale').click()
    until(lambda d: healthy(d) == "1/1", 60, "the app scaled to 1/1")

    # a CSTORE key in the user's namespace, written from the page, read back through the other node
    key = f"app:{wallet.key.address.lower()}:greeting"
    browser.find_element("id", "account-key").send_keys("greeting")
    value = {"hello": "<b>world</b>", "n": 7}
    browser.execute_script("document.getElementById('account-value').value = arguments[0]", json.dumps(value))
    # the user declines in the wallet first: the page says so, and nothing is written
    wallet.refuse_next = True
    browser.find_element("id", "account-write").click()
    until(lambda d: "you declined the request in your wallet" in status(), 10, "the declined message")
    assert not httpx.get(f"{edge.url}/v1/cstore/get", params={"key": key}, timeout=10).json()["found"]
    browser.find_element("id", "account-write").click()
    until(js("return document.getElementById('account-readback').textContent"), 20, "the value read back")
    assert key in browser.find_element("id", "account-readback").text

    def replicated() -> bool:
        got = httpx.get(f"{oracle.url}/v1/cstore/get", params={"key": key}, timeout=10).json()
        return bool(got["found"] and got["value"] == value)

    wait(browser, lambda d: replicated(), 20, f"{key} on the other node")
    assert "wrote " + key in status()
    screens.shoot("wallet-cstore.png", section="account-key")

    # licences and rewards per node, read from the chain through the node: each node licensed, and
    # once an epoch has ended and the oracle agreed on it, what a claim would pay
    licence = js(
        "return [...document.querySelectorAll('#licences tr[data-node]')]"
        ".map(r => [r.dataset.node.toLowerCase(), r.querySelector('.licence').textContent,"
        " r.querySelector('.claimable').textContent])"
    )
    everyone = {n.address.lower() for n in devnet.nodes}

    def rewarded(d: Any) -> bool:
        rows = {node: (lic, amount) for node, lic, amount in licence(d)}
        return (
            set(rows) == everyone
            and all(lic != "no licence" for lic, _ in rows.values())
            and any(amount.endswith(" R1") and amount != "0 R1" for _, amount in rows.values())
        )

    wait(browser, rewarded, 40, "every node's licence and a claimable reward in the Licences panel")
    assert {lic.split(" #")[0] for _, lic, _ in licence(browser)} == {"ND", "GND"}
    screens.shoot("licences.png", section="licences")

    # delete the app, sign out
    delete = browser.find_element("css selector", f'#account-apps tr[data-app="{app_id}"] button.delete')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", delete)  # off the sticky header
    delete.click()
    until(lambda d: healthy(d) is None, 30, "the app gone from the user's list")
    assert not httpx.get(f"{oracle.url}/v1/apps", params={"owner": wallet.key.address}, timeout=10).json()[
        "apps"
    ]
    browser.find_element("id", "wallet-signout").click()
    wait(browser, js("return !!document.getElementById('wallet-signin')"), 10, "signed out")
    actions = [
        m.decode().split("\n")[2].split(" ")[0] for m in wallet.signed if m.startswith(b"r1os deeploy")
    ]
    assert actions == ["deploy", "scale", "delete"]
    assert sum(len(m) == 32 for m in wallet.signed) == 1  # the CSTORE batch's SHA-256

    errors = [
        e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"
    ]
    assert not errors, errors
    print(f"wallet e2e done, screenshots in {screens.folder}; took until {time.strftime('%X')}")
