// The dashboard: one page, panels fed by this node's public routes and by its event stream
// (/v1/dashboard/events: a snapshot of the node and its network map every ~2 s and on changes).

import { accountPanel, walletHeader } from "./account.js";
import { describe, getJSON } from "./api.js";
import { licencesPanel } from "./rewards.js";
import { fill, h, note, shortAddress } from "./dom.js";
import {
  appsPanel, availabilityPanel, cstorePanel, dauthPanel, networkPanel, nodePanel, r1fsPanel, trainingPanel,
} from "./panels.js";

// Every panel, in page order. `service`: the node service it needs (from /v1/node); a panel whose
// service the node does not run says so instead (see docs/dashboard.md).
const PANELS = [
  { id: "network", title: "Network map", create: networkPanel, wide: true },
  { id: "node", title: "This node", create: nodePanel },
  { id: "account", title: "Your account (wallet)", create: accountPanel },
  { id: "dauth", title: "Admission (dAuth) and licences", service: "dauth", create: dauthPanel },
  { id: "availability", title: "Availability per epoch", create: availabilityPanel, wide: true },
  { id: "licences", title: "Licences and rewards per node", create: licencesPanel, wide: true },
  { id: "cstore", title: "CSTORE browser", service: "cstore", create: cstorePanel, wide: true },
  { id: "r1fs", title: "R1FS pins", service: "r1fs", create: r1fsPanel, wide: true },
  { id: "apps", title: "Apps (Deeploy)", service: "deeploy", create: appsPanel, wide: true },
  { id: "training", title: "Training (EDIL)", service: "edil", create: trainingPanel, wide: true },
];

const app = { snapshot: null, node: null, panels: [] };
const main = document.getElementById("panels");
const live = document.getElementById("live");
const nav = document.getElementById("nav");

function setLive(text, kind) {
  live.className = `live ${kind}`;
  fill(live, text);
}

function mount() {
  const services = new Set(app.node.services || []);
  for (const spec of PANELS) {
    const body = h("div", { class: "panel-body" });
    const section = h("section", { id: spec.id, class: spec.wide ? "panel wide" : "panel" }, h("h2", null, spec.title), body);
    main.append(section);
    nav.append(h("a", { href: `#${spec.id}` }, spec.title));
    const available = !spec.service || services.has(spec.service);
    if (!available || !spec.create) {
      section.classList.add("unavailable");
      body.append(note(available
        ? `This node runs ${spec.service}, but this dashboard has no panel for it yet.`
        : `Not available on this node yet: it does not run the ${spec.service} service.`));
      continue;
    }
    const panel = spec.create(body, app);
    panel.id = spec.id;
    app.panels.push(panel);
    if (panel.refresh) schedule(panel);
  }
}

function schedule(panel) {
  // `refresh()` may answer how many ms until its next run (availability: sooner while epochs are short)
  let timer = null;
  let running = false;
  const run = async () => {
    if (running) return;
    clearTimeout(timer);
    let next = panel.every;
    if (!document.hidden) {
      running = true;
      try {
        next = (await panel.refresh()) ?? panel.every;
      } catch (err) {
        console.warn(`panel ${panel.id}: ${describe(err)}`);
      } finally {
        running = false;
      }
    }
    if (panel.every) timer = setTimeout(run, next);
  };
  run();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
}

function onSnapshot(snap) {
  app.snapshot = snap;
  document.title = `r1os · ${shortAddress(snap.node.address)} · ${snap.node.network}`;
  fill(document.getElementById("who"), h("span", { class: "mono", title: snap.node.address }, snap.node.address),
    ` · ${snap.node.network} · ${snap.node.oracle ? "oracle" : "edge"} node`);
  for (const panel of app.panels) {
    if (!panel.onSnapshot) continue;
    try {
      panel.onSnapshot(snap);
    } catch (err) {
      console.error(`panel ${panel.id}`, err);
    }
  }
}

// -- the event stream, and a fallback when the node has no stream to spare --------------------------------

let stream = null;

function connect() {
  stream = new EventSource("/v1/dashboard/events");
  stream.addEventListener("snapshot", (e) => {
    setLive("live", "ok");
    onSnapshot(JSON.parse(e.data));
  });
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) {
      // refused (e.g. 503 busy) or gone: poll the public routes for a while, then try again
      stream = null;
      setLive("polling (no live stream)", "warn");
      poll(6);
    } else {
      setLive("reconnecting…", "warn");
    }
  };
}

async function poll(times) {
  try {
    const [info, peers] = await Promise.all([getJSON("/v1/node"), getJSON("/v1/peers")]);
    app.node = info;
    onSnapshot(fromRoutes(info, peers));
  } catch (err) {
    setLive(`node unreachable: ${describe(err)}`, "bad");
  }
  setTimeout(() => (times > 1 ? poll(times - 1) : connect()), 5000);
}

/** A snapshot made of /v1/node and /v1/peers, for when the stream is refused. */
function fromRoutes(info, peers) {
  const wire = info.wire || {};
  const me = { ...info, self: true, status: "online", last_seen: Date.now() / 1000, services: info.services };
  return {
    v: 1, seq: 0, at: Date.now() / 1000, node: info,
    metrics: { r1os_wire_accepted: wire.accepted, r1os_wire_rejected: wire.rejected },
    peers: [me, ...peers.peers.map((p) => ({ ...p, self: false }))],
    counts: { online: peers.online, total: peers.total, shown: peers.peers.length },
    dashboard: { clients: "?", max_clients: "?" },
  };
}

async function start() {
  for (;;) {
    try {
      app.node = await getJSON("/v1/node");
      break;
    } catch (err) {
      setLive(`node unreachable: ${describe(err)}`, "bad");
      await new Promise((r) => setTimeout(r, 3000));
    }
  }
  walletHeader(document.getElementById("wallet"));
  mount();
  connect();
}

start();
