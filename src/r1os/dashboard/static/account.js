// Acting as yourself: sign in with your wallet (wallet.js), then deploy, scale and delete your own apps
// and write keys in your own CSTORE namespace. Each change is built here in the exact form the node
// checks, signed by the wallet, and posted to this node; the node verifies the signature like any
// other client's (Deeploy: an owner request over readable text; CSTORE: a signed batch).

import { describe, getJSON, postJSON } from "./api.js";
import { canonicalJSON, hex, sha256, utf8 } from "./crypto.js";
import { badge, facts, fill, h, note, num, shortAddress } from "./dom.js";
import { NO_WALLET, Wallet, WalletError } from "./wallet.js";

export const wallet = new Wallet();

function problem(err) {
  return err instanceof WalletError ? err.message : describe(err);
}

function nonce() {
  return hex(crypto.getRandomValues(new Uint8Array(16)));
}

// -- the two signed forms ------------------------------------------------------------------------------

/** A Deeploy owner request (src/r1os/deeploy/_requests.py) and the readable text the wallet signs: it
 * names the network, the action, the app, the time, a nonce and the SHA-256 of the request's canonical
 * JSON, so the wallet shows what is being signed and nothing in the request can change without it. */
export function buildAppRequest(network, action, owner, name, { spec = null, replicas = null } = {}, tsMs = Date.now(), once = nonce()) {
  const request = { network, action, owner, name, spec, sealed: {}, replicas, ts_ms: tsMs, nonce: once };
  const body = hex(sha256(utf8(canonicalJSON(request))));
  const text = `r1os deeploy request v1\nnetwork: ${network}\n${action} ${owner.toLowerCase()}/${name}\n`
    + `time: ${tsMs}\nnonce: ${once}\nsha256: ${body}`;
  return { request, text };
}

export async function appRequest(network, action, name, options = {}) {
  const { request, text } = buildAppRequest(network, action, wallet.address, name, options);
  const signature = await wallet.signText(text);
  return postJSON("/v1/apps/requests", JSON.stringify({ request, signature }));
}

/** A CSTORE batch (src/r1os/cstore/_ops.py) before its signature: `{v, writer, hlc, ops}` in canonical
 * JSON; the wallet signs its SHA-256 (EIP-191 over those 32 bytes) and `sig` is appended. */
export function buildBatch(writer, wallMs, counter, ops) {
  return canonicalJSON({ v: 1, writer, hlc: [wallMs, counter], ops });
}

/** Write `ops` ([kind, key, field, value, expires_ms] each) as the signed-in user, stamped after the
 * node's clock so the write wins over what the node has seen. */
export async function cstoreWrite(ops, show = () => {}) {
  const clock = await getJSON("/v1/cstore/hlc");
  let wall = Date.now();
  let counter = 0;
  if (wall <= clock.wall_ms) {
    wall = clock.wall_ms;
    counter = clock.counter + 1;
  }
  const batch = buildBatch(wallet.address, wall, counter, ops);
  const digest = sha256(utf8(batch));
  // a wallet shows these 32 bytes as hex, not what they stand for: say it here, beside the prompt
  show(`your wallet shows 0x${hex(digest)}: the SHA-256 of this batch, which is all it signs: ${batch.slice(0, 400)}`);
  const signature = await wallet.signBytes(digest);
  return postJSON("/v1/cstore/batch", `${batch.slice(0, -1)},"sig":"${signature}"}`);
}

// -- the spec a user pastes ------------------------------------------------------------------------------

async function specFrom(text, chosen) {
  let spec;
  try {
    spec = JSON.parse(text);
  } catch (err) {
    throw new WalletError(`the spec is not JSON: ${String(err.message || err).slice(0, 120)} (a YAML spec: \`r1os app deploy app.yaml\`)`);
  }
  if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw new WalletError("the spec is a JSON object: {\"name\": ..., \"runtime\": ...}");
  if (typeof spec.name !== "string" || !spec.name) throw new WalletError("the spec has no name");
  if (spec.secrets && Object.keys(spec.secrets).length) {
    throw new WalletError("this spec has secrets: the browser does not seal them to nodes; use `r1os app deploy`");
  }
  if (spec.files && typeof spec.files === "object" && !Array.isArray(spec.files)) {
    const byName = new Map(Array.from(chosen || [], (f) => [f.name, f]));
    const files = {};
    for (const [name, value] of Object.entries(spec.files)) {
      if (typeof value === "string" && value.startsWith("@")) {
        const file = byName.get(value.slice(1).split("/").pop());
        if (!file) throw new WalletError(`files.${name} is ${value}: choose that file in "files" below the spec`);
        files[name] = await file.text();
      } else {
        files[name] = value;
      }
    }
    spec.files = files;
  }
  return spec;
}

// -- the panel -------------------------------------------------------------------------------------------

/** The header's sign-in button or who is signed in, with sign-out. */
export function walletHeader(slot) {
  const render = () => {
    if (!wallet.address) {
      fill(slot, h("button", { type: "button", id: "wallet-signin", class: "primary", onclick: () => signIn() }, "Sign in with wallet"));
    } else {
      fill(slot,
        h("span", { id: "wallet-address", class: "mono", title: wallet.address }, `signed in: ${shortAddress(wallet.address)}`),
        h("button", { type: "button", id: "wallet-signout", onclick: () => wallet.signOut() }, "Sign out"));
    }
  };
  wallet.onChange(render);
  render();
}

let reportTo = null; // the account panel's status line

function report(text, kind = "muted") {
  if (reportTo) fill(reportTo, note(text, kind));
}

async function signIn() {
  try {
    const address = await wallet.signIn();
    report(`signed in as ${address}`, "ok");
  } catch (err) {
    document.getElementById("account-nowallet")?.remove(); // said once, in the status line
    report(problem(err), "bad");
    document.getElementById("account")?.scrollIntoView();
  }
}

export function accountPanel(body, app) {
  const status = h("div", { id: "account-status", class: "account-status" });
  reportTo = status;
  const content = h("div");
  body.append(content, status);
  const network = () => app.node.network;
  let rows = new Map(); // app id -> {row, healthy}
  let appsBody = null;

  async function run(button, label, work) {
    button.disabled = true;
    report(`${label}: asking your wallet to sign…`);
    try {
      report(await work(), "ok");
    } catch (err) {
      report(`${label}: ${problem(err)}`, "bad");
    } finally {
      button.disabled = false;
    }
  }

  function signedOut() {
    rows = new Map();
    appsBody = null;
    fill(content,
      note("Read-only until you sign in. Signing in asks your wallet (a browser extension such as MetaMask) for your address; "
        + "then every change you make here (deploy, scale or delete your apps, write keys in your CSTORE namespace) "
        + "is signed by your wallet and checked by the node. Your key never leaves the wallet."),
      h("button", { type: "button", class: "primary", id: "account-signin", onclick: () => signIn() }, "Sign in with wallet"),
      wallet.present ? null : h("p", { class: "note warn", id: "account-nowallet" }, NO_WALLET));
  }

  function signedIn(address) {
    const namespace = `app:${address.toLowerCase()}:`;
    appsBody = h("tbody", { id: "account-apps" });
    rows = new Map();
    const spec = h("textarea", { id: "account-spec", rows: 8, spellcheck: "false", placeholder: '{"name": "echo", "runtime": "process", "command": ["python3", "app.py", "{port}"], "files": {"app.py": "@app.py"}, "replicas": 2}' });
    const files = h("input", { type: "file", id: "account-files", multiple: true });
    const deploy = h("button", { type: "submit", id: "account-deploy", class: "primary" }, "Deploy");
    const deployForm = h("form", { class: "account-form", onsubmit: (e) => {
      e.preventDefault();
      run(deploy, "deploy", async () => {
        const data = await specFrom(spec.value, files.files);
        const view = await appRequest(network(), "deploy", data.name, { spec: data });
        refresh();
        return `deployed ${view.app} (version ${num(view.version)}): ${view.note || "placing replicas"}`;
      });
    } }, spec, h("label", null, "files the spec names as \"@file\": ", files), deploy);

    const key = h("input", { type: "text", id: "account-key", placeholder: "greeting", spellcheck: "false", autocomplete: "off" });
    const value = h("textarea", { id: "account-value", rows: 2, spellcheck: "false", placeholder: '"hello" or {"any": "json"} (text that is not JSON is stored as a string)' });
    const write = h("button", { type: "submit", id: "account-write", class: "primary" }, "Write");
    const readBack = h("pre", { id: "account-readback", class: "value-text" });
    const writeForm = h("form", { class: "account-form", onsubmit: (e) => {
      e.preventDefault();
      run(write, "CSTORE write", async () => {
        const suffix = key.value.trim();
        if (!suffix) throw new WalletError("name the key");
        let v;
        try {
          v = JSON.parse(value.value);
        } catch {
          v = value.value;
        }
        const full = namespace + suffix;
        const done = await cstoreWrite([["set", full, null, v, null]], (text) => report(text));
        const got = await getJSON("/v1/cstore/get", { key: full });
        fill(readBack, `${full} = ${JSON.stringify(got.value, null, 2)}`);
        return `wrote ${full} (batch ${String(done.id).slice(0, 12)}…), read back from the node`;
      });
    } }, h("div", { class: "controls" }, h("span", { class: "mono" }, namespace), key), value, write, readBack);

    fill(content,
      facts([
        ["signed in as", h("span", { class: "mono", id: "account-address" }, address)],
        ["your namespace", h("span", { class: "mono" }, `${namespace}…`)],
        ["network", network()],
      ]),
      h("h3", null, "Your apps"),
      h("div", { class: "scroll" }, h("table", { class: "apps" },
        h("thead", null, h("tr", null, ["app", "version", "healthy", "replicas", ""].map((c) => h("th", null, c)))),
        appsBody)),
      h("h3", null, "Deploy an app (JSON spec)"),
      note("The spec as JSON (a YAML file: `r1os app deploy`); specs with secrets are deployed with the CLI or SDK, which seal them to the nodes."),
      deployForm,
      h("h3", null, "Write a CSTORE key in your namespace"),
      writeForm);
    refresh();
  }

  function appRow(a) {
    const healthy = h("td", { class: "num healthy" });
    const replicas = h("input", { type: "number", class: "replicas", min: 0, max: 64, value: a.replicas_wanted });
    const scale = h("button", { type: "button", class: "scale" }, "Scale");
    const remove = h("button", { type: "button", class: "delete danger" }, "Delete");
    scale.addEventListener("click", () => run(scale, `scale ${a.name}`, async () => {
      const n = Number(replicas.value);
      if (!Number.isInteger(n) || n < 0 || n > 64) throw new WalletError("replicas: a whole number from 0 to 64");
      const view = await appRequest(network(), "scale", a.name, { replicas: n });
      refresh();
      return `${view.app}: ${num(n)} replica(s) wanted`;
    }));
    remove.addEventListener("click", () => run(remove, `delete ${a.name}`, async () => {
      await appRequest(network(), "delete", a.name);
      refresh();
      return `deleted ${a.app}`;
    }));
    const version = h("td", { class: "num" });
    const row = h("tr", { dataset: { app: a.app } }, h("td", null, a.name), version, healthy, h("td", null, replicas, " ", scale), h("td", null, remove));
    return { row, healthy, version };
  }

  async function refresh() {
    const address = wallet.address;
    if (!address || !appsBody || !(app.node.services || []).includes("deeploy")) return;
    let answer;
    try {
      answer = await getJSON("/v1/apps", { owner: address.toLowerCase() });
    } catch (err) {
      fill(appsBody, h("tr", null, h("td", { colspan: 5 }, note(describe(err), "warn"))));
      rows = new Map();
      return;
    }
    if (wallet.address !== address || !appsBody) return;
    const apps = answer.apps || [];
    const ids = apps.map((a) => a.app).join(" ");
    if (ids !== [...rows.keys()].join(" ")) {
      // the list changed: new rows (otherwise rows stay, so a number being typed is not wiped)
      rows = new Map(apps.map((a) => [a.app, appRow(a)]));
      fill(appsBody, apps.length ? [...rows.values()].map((r) => r.row)
        : h("tr", null, h("td", { colspan: 5 }, note("You have no apps on this network yet."))));
    }
    for (const a of apps) {
      const r = rows.get(a.app);
      fill(r.healthy, badge(`${num(a.healthy)}/${num(a.replicas_wanted)}`, a.healthy >= a.replicas_wanted ? "ok" : "warn"));
      fill(r.version, `v${num(a.version)}`);
    }
  }

  const render = (address) => (address ? signedIn(address) : signedOut());
  wallet.onChange((address) => {
    render(address);
    if (!address) report("signed out");
  });
  render(wallet.address);
  wallet.resume();
  return { every: 2000, refresh };
}
