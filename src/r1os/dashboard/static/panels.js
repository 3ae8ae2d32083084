// The panels. Each is `create(body, app)` -> {onSnapshot(snapshot)?, refresh()?, every?}: `body` is the
// panel's own element, `app` holds the latest snapshot and what /v1/node said. A panel reads only
// public, read-only routes of this node; nothing here writes.

import { describe, getJSON } from "./api.js";
import { accuracyLine, availabilityGrid, networkRing } from "./charts.js";
import {
  ago, badge, bytes, count, duration, facts, fill, h, link, note, num, shortAddress, time,
} from "./dom.js";

const MAX_VALUE_CHARS = 100000;

function sumValues(table) {
  if (!table || typeof table !== "object") return 0;
  return Object.values(table).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);
}

function causes(table) {
  const seen = Object.entries(table && typeof table === "object" ? table : {}).filter(([, v]) => v);
  return seen.length ? seen.map(([k, v]) => `${k} ${num(v)}`).join(", ") : "none";
}

function gpus(resources) {
  const list = Array.isArray(resources?.gpus) ? resources.gpus : [];
  if (!list.length) return "none";
  return list.map((g) => `${g?.name ?? "?"} (${bytes((g?.memory_mb ?? 0) * 2 ** 20)})`).join(", ");
}

function addressCell(address, self) {
  return h("span", { class: "address", title: address }, shortAddress(address), self ? badge("this node", "self") : null);
}

// -- this node ------------------------------------------------------------------------------------

export function nodePanel(body, app) {
  const view = h("div");
  body.append(view);
  return {
    onSnapshot(snap) {
      const n = snap.node, m = snap.metrics || {}, r = n.resources || {};
      const services = app.node?.services ?? [];
      fill(view,
        facts([
          ["address", h("span", { class: "mono" }, n.address)],
          ["0xai address", h("span", { class: "mono" }, n.ai_address)],
          ["network", n.network],
          ["role", n.oracle ? badge("oracle", "oracle") : badge("edge")],
          ["version", n.version],
          ["URL", link(n.url)],
          ["uptime", duration(n.uptime)],
          ["broker", n.broker_connected ? badge("connected", "ok") : badge("disconnected", "bad")],
          ["services", services.join(", ") || "—"],
        ]),
        h("div", { class: "cols" },
          h("div", null,
            h("h3", null, "Traffic"),
            facts([
              ["heartbeats sent", num(m.r1os_heartbeats_sent)],
              ["wire accepted", num(m.r1os_wire_accepted)],
              ["wire rejected", sumValues(m.r1os_wire_rejected) ? `${num(sumValues(m.r1os_wire_rejected))}: ${causes(m.r1os_wire_rejected)}` : "0"],
              ["published / received", `${num(m.r1os_transport_published)} / ${num(m.r1os_transport_received)}`],
              ["broker reconnects", num(m.r1os_transport_reconnects)],
              ["queued offline", num(m.r1os_transport_queued)],
              ["handler errors", num(m.r1os_handler_errors)],
              ["HTTP refused", causes(m.r1os_http_refused)],
              ["dashboard streams", `${snap.dashboard.clients} of ${snap.dashboard.max_clients}`],
            ])),
          h("div", null,
            h("h3", null, "Resources"),
            facts([
              ["CPU", `${num(r.cpu_cores)} cores, load ${num(r.cpu_load)}`],
              ["memory", `${num(r.memory_available_mb)} MiB free of ${num(r.memory_total_mb)}`],
              ["disk", `${num(r.disk_free_gb)} GiB free of ${num(r.disk_total_gb)}`],
              ["GPUs", gpus(r)],
            ]))),
        h("p", { class: "note muted" }, "Everything: ", link("/metrics", "/metrics"), " · API: ", link("/docs", "/docs")),
      );
    },
  };
}

// -- network map ------------------------------------------------------------------------------------

export function networkPanel(body, app) {
  const summary = h("p", { class: "summary" });
  const ring = h("div", { class: "ring-box" });
  const table = h("tbody");
  body.append(
    summary,
    h("div", { class: "network" },
      ring,
      h("div", { class: "scroll" },
        h("table", { class: "peers" },
          h("thead", null, h("tr", null,
            ["node", "status", "role", "version", "URL", "uptime", "last seen", "CPU · memory", "disk free", "GPUs", "services"]
              .map((c) => h("th", null, c)))),
          table))),
  );
  return {
    onSnapshot(snap) {
      const peers = snap.peers || [];
      const offline = snap.counts.total - snap.counts.online;
      fill(summary,
        `${snap.counts.total + 1} nodes seen from here: this one, ${count(snap.counts.online, "peer")} online`,
        offline ? `, ${offline} offline` : "",
        snap.counts.shown < snap.counts.total ? ` (showing ${snap.counts.shown})` : "",
        ` · network ${snap.node.network}`,
        // the oracles' published map carries a heartbeat again only when it changes otherwise
        snap.node.heartbeat_mode === "oracle" && !snap.node.oracle
          ? " · peers' load and free memory/disk as of their last change (an oracle's dashboard shows them live)" : "");
      fill(ring, networkRing(peers));
      fill(table, peers.map((p) => {
        const r = p.resources || {};
        const services = p.self ? app.node?.services ?? [] : p.services || [];
        return h("tr", { class: p.status === "online" ? "" : "offline", dataset: { address: p.address, status: p.status } },
          h("td", null, addressCell(p.address, p.self)),
          h("td", null, h("span", { class: `dot ${p.status === "online" ? "on" : "off"}` }), p.status),
          h("td", null, p.oracle ? badge("oracle", "oracle") : "edge"),
          h("td", null, p.version),
          h("td", { class: "url" }, p.url ? link(p.url.replace(/\/$/, "") + "/", p.url) : "—"),
          h("td", { class: "num" }, duration(p.uptime)),
          h("td", { class: "num" }, p.self ? "—" : ago(p.last_seen, snap.at)),
          h("td", { class: "num" },
            r.cpu_cores !== undefined ? `${num(r.cpu_cores)} cores, load ${num(r.cpu_load)}` : "—",
            h("br"),
            r.memory_total_mb !== undefined ? `${bytes(r.memory_available_mb * 2 ** 20)} free of ${bytes(r.memory_total_mb * 2 ** 20)}` : ""),
          h("td", { class: "num" }, r.disk_free_gb !== undefined ? `${num(r.disk_free_gb)} GiB` : "—"),
          h("td", null, gpus(r)),
          h("td", { class: "services" }, services.join(", ")));
      }));
    },
  };
}

// -- availability -------------------------------------------------------------------------------------

export function availabilityPanel(body, app) {
  const head = h("div");
  const chart = h("div", { class: "scroll chart-box" });
  body.append(head, chart);
  return {
    every: 10000,
    async refresh() {
      let data;
      try {
        data = await getJSON("/v1/dashboard/availability", { epochs: 12 });
      } catch (err) {
        fill(head, note(describe(err), "warn"));
        chart.replaceChildren();
        return;
      }
      const o = data.oracle;
      fill(head, facts([
        ["from oracle", o.self ? "this node" : h("span", null, h("span", { class: "mono", title: o.address }, shortAddress(o.address)), " ", link(o.url.replace(/\/$/, "") + "/", "open"))],
        ["epoch", `current ${num(data.current_epoch)}, last closed ${data.last_closed ?? "none"}, ${duration(data.epoch_seconds)} each`],
        ["oracles", `${data.oracles.length} (quorum ${data.quorum})${data.failed ? `, ${data.failed} epochs failed to close` : ""}`],
      ]));
      // ask again about when the next epoch closes (short devnet epochs), but not more than every 2 s
      const next = Math.min(10000, Math.max(2000, (data.epoch_seconds * 1000) / 2));
      if (!data.epochs.length) {
        fill(chart, note(`No epoch has closed yet. Epoch ${data.current_epoch} ends ${time(data.genesis_time + (data.current_epoch + 1) * data.epoch_seconds)}.`));
        return next;
      }
      const known = new Map();
      for (const n of data.nodes) known.set(n.toLowerCase(), n);
      for (const p of app.snapshot?.peers || []) if (!known.has(p.address.toLowerCase())) known.set(p.address.toLowerCase(), p.address);
      const nodes = [...known.values()].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
      fill(chart, availabilityGrid(data.epochs, nodes, app.snapshot?.node?.address),
        note("Each cell: a node's agreed availability in one epoch (0–255, green is always there); hover for the value."));
      return next;
    },
  };
}

// -- dAuth and licences -----------------------------------------------------------------------------------

export function dauthPanel(body) {
  const view = h("div");
  body.append(view);
  return {
    every: 10000,
    async refresh() {
      let status, admitted;
      try {
        [status, admitted] = await Promise.all([getJSON("/v1/dauth/status"), getJSON("/v1/dauth/admitted")]);
      } catch (err) {
        fill(view, note(describe(err), "warn"));
        return;
      }
      const stateKind = { admitted: "ok", oracle: "oracle", waiting: "warn", off: "" }[status.state] ?? "";
      const licence = status.record?.record?.licence;
      const rows = Object.entries(admitted.admitted || {}).map(([address, signed]) => {
        const rec = signed?.record || {};
        return h("tr", { dataset: { address } },
          h("td", null, h("span", { class: "mono", title: address }, shortAddress(address))),
          h("td", null, rec.licence ? `${rec.licence.type} #${rec.licence.token_id}` : "—"),
          h("td", { class: "num" }, num(rec.epoch)),
          h("td", { class: "num" }, time(rec.expires)),
          h("td", { class: "num" }, num(Object.keys(signed?.signatures || {}).length)));
      });
      fill(view,
        facts([
          ["this node", badge(status.state, stateKind)],
          ["licence", licence ? `${licence.type} #${licence.token_id}` : "—"],
          ["attempts", num(status.attempts)],
          status.last_refusal ? ["last refusal", `${status.last_refusal.error} (${status.last_refusal.cause}) ${ago(status.last_refusal.at)}`] : null,
          ["oracles", num(status.oracles.length)],
        ]),
        status.enabled
          ? null
          : note("dAuth is off on this network (no chain): every node is admitted, and no licence is checked."),
        rows.length
          ? h("div", { class: "scroll" }, h("table", null,
              h("thead", null, h("tr", null, ["node", "licence", "epoch", "expires", "signatures"].map((c) => h("th", null, c)))),
              h("tbody", null, rows)))
          : status.enabled ? note("No admission records on this node yet.") : null,
      );
    },
  };
}

// -- CSTORE browser --------------------------------------------------------------------------------------

export function cstorePanel(body) {
  const PAGE = 50;
  const state = { prefix: "", pages: [""], page: 0, selected: null };
  const stats = h("p", { class: "summary" });
  const input = h("input", { type: "search", id: "cstore-prefix", placeholder: "prefix, e.g. node: or app:0x…", spellcheck: "false", autocomplete: "off" });
  const list = h("ul", { class: "keys", id: "cstore-keys" });
  const pager = h("div", { class: "pager" });
  const value = h("div", { class: "value", id: "cstore-value" }, note("Pick a key to see its value."));
  const go = (prefix) => {
    state.prefix = prefix;
    state.pages = [""];
    state.page = 0;
    input.value = prefix;
    loadStats();
    loadPage();
  };
  const form = h("form", { class: "controls", onsubmit: (e) => { e.preventDefault(); go(input.value); } },
    input,
    h("button", { type: "submit", id: "cstore-list" }, "List"),
    ["node:", "app:", "pub:", "net:"].map((ns) => h("button", { type: "button", class: "chip", onclick: () => go(ns) }, ns)),
    h("button", { type: "button", class: "chip", onclick: () => go("") }, "all"));
  body.append(stats, form, h("div", { class: "split" }, h("div", null, list, pager), value));

  async function loadPage() {
    let answer;
    try {
      answer = await getJSON("/v1/cstore/keys", { prefix: state.prefix, after: state.pages[state.page], limit: PAGE });
    } catch (err) {
      fill(list, h("li", null, note(describe(err), "warn")));
      return;
    }
    if (answer.next) state.pages[state.page + 1] = answer.next;
    else state.pages.length = state.page + 1;
    fill(list, answer.keys.length
      ? answer.keys.map((key) => h("li", null, h("button", {
          type: "button", class: key === state.selected ? "key selected" : "key", dataset: { key },
          onclick: () => show(key),
        }, key)))
      : h("li", null, note(state.prefix ? `No keys under “${state.prefix}”.` : "No keys.")));
    fill(pager,
      h("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page -= 1; loadPage(); } }, "← previous"),
      h("span", null, ` page ${state.page + 1} `),
      h("button", { type: "button", disabled: !answer.next, onclick: () => { state.page += 1; loadPage(); } }, "next →"));
  }

  async function show(key) {
    state.selected = key;
    for (const b of list.querySelectorAll("button.key")) b.classList.toggle("selected", b.dataset.key === key);
    fill(value, note("loading…"));
    try {
      const plain = await getJSON("/v1/cstore/get", { key });
      if (plain.found) {
        fill(value, h("h3", { class: "mono" }, key), h("pre", { id: "cstore-value-text" }, render(plain.value)));
        return;
      }
      const hash = await getJSON("/v1/cstore/hgetall", { key });
      const fields = Object.entries(hash.fields || {});
      if (!fields.length) {
        fill(value, h("h3", { class: "mono" }, key), note("No live value (deleted or expired)."));
        return;
      }
      fill(value, h("h3", { class: "mono" }, key, " ", badge(`hash · ${fields.length} fields`)),
        h("table", { class: "fields" }, h("tbody", null, fields.map(([f, v]) =>
          h("tr", null, h("td", { class: "mono" }, f), h("td", null, h("pre", null, render(v))))))));
    } catch (err) {
      fill(value, note(describe(err), "warn"));
    }
  }

  function render(v) {
    const text = typeof v === "string" ? v : JSON.stringify(v, null, 2);
    return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}\n… (${num(text.length)} characters, cut)` : text;
  }

  async function loadStats() {
    try {
      const st = await getJSON("/v1/cstore/stats");
      fill(stats, `${count(st.entries, "entry", "entries")} · ${count(st.applied_batches, "batch", "batches")} applied · log ${bytes(st.log_bytes)} · state digest `,
        h("span", { class: "mono", title: st.digest }, String(st.digest).slice(0, 12)));
    } catch (err) {
      fill(stats, note(describe(err), "warn"));
    }
  }

  return {
    every: 5000,
    async refresh() {
      await Promise.all([loadStats(), loadPage()]);
    },
  };
}

// -- R1FS pins -----------------------------------------------------------------------------------------

export function r1fsPanel(body) {
  const PAGE = 20;
  const state = { pages: [""], page: 0 };
  const stats = h("p", { class: "summary" });
  const rows = h("tbody");
  const pager = h("div", { class: "pager" });
  body.append(stats,
    h("div", { class: "scroll" }, h("table", { class: "pins" },
      h("thead", null, h("tr", null, ["CID", "kind", "size", "replicas wanted", "live copies", "here"].map((c) => h("th", null, c)))),
      rows)),
    pager);

  async function statInto(cid, cell, here) {
    try {
      const st = await getJSON("/v1/r1fs/stat", { cid });
      fill(cell, st.replicas_live === null || st.replicas_live === undefined ? "—" : num(st.replicas_live));
      fill(here, st.complete ? badge("complete", "ok") : st.local ? badge("partial", "warn") : badge("no"));
    } catch (err) {
      fill(cell, h("span", { class: "warn", title: describe(err) }, "?"));
    }
  }

  async function loadPage() {
    let answer;
    try {
      answer = await getJSON("/v1/r1fs/ls", { after: state.pages[state.page], limit: PAGE });
    } catch (err) {
      fill(rows, h("tr", null, h("td", { colspan: 6 }, note(describe(err), "warn"))));
      return;
    }
    if (answer.next) state.pages[state.page + 1] = answer.next;
    else state.pages.length = state.page + 1;
    if (!answer.pins.length) {
      fill(rows, h("tr", null, h("td", { colspan: 6 }, note("No pins on this node."))));
    } else {
      const lookups = [];
      fill(rows, answer.pins.map((pin) => {
        const live = h("td", { class: "num" }, "…"), here = h("td", null, "…");
        lookups.push(() => statInto(pin.cid, live, here));
        return h("tr", { dataset: { cid: pin.cid } },
          h("td", { class: "mono", title: pin.cid }, link(`/ipfs/${encodeURIComponent(pin.cid)}`, shortAddress(pin.cid))),
          h("td", null, pin.kind),
          h("td", { class: "num" }, bytes(pin.size)),
          h("td", { class: "num" }, num(pin.replicas)),
          live, here);
      }));
      // a few at a time: each stat reads provider records
      for (let i = 0; i < lookups.length; i += 4) await Promise.all(lookups.slice(i, i + 4).map((f) => f()));
    }
    fill(pager,
      h("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page -= 1; loadPage(); } }, "← previous"),
      h("span", null, ` page ${state.page + 1} `),
      h("button", { type: "button", disabled: !answer.next, onclick: () => { state.page += 1; loadPage(); } }, "next →"));
  }

  return {
    every: 5000,
    async refresh() {
      try {
        const st = await getJSON("/v1/r1fs/stats");
        fill(stats, `${count(st.pins, "pin")} · ${count(st.store.blocks, "block")}, ${bytes(st.store.bytes)} stored · ${count(st.fetched_blocks, "block")} fetched from peers`);
      } catch (err) {
        fill(stats, note(describe(err), "warn"));
      }
      await loadPage();
    },
  };
}

// -- apps (Deeploy) ---------------------------------------------------------------------------------

const REPLICA_KIND = { running: "ok", starting: "warn", restarting: "warn", pending: "warn", unhealthy: "bad", failed: "bad", "node offline": "bad" };

export function appsPanel(body) {
  const stats = h("p", { class: "summary" });
  const rows = h("tbody");
  body.append(stats,
    h("div", { class: "scroll" }, h("table", { class: "apps" },
      h("thead", null, h("tr", null, ["app", "owner", "runtime", "version", "healthy", "replicas", "plan"].map((c) => h("th", null, c)))),
      rows)));
  return {
    every: 2000,
    async refresh() {
      let answer, hosts;
      try {
        [answer, hosts] = await Promise.all([getJSON("/v1/apps"), getJSON("/v1/apps/nodes")]);
      } catch (err) {
        fill(rows, h("tr", null, h("td", { colspan: 7 }, note(describe(err), "warn"))));
        return;
      }
      const apps = answer.apps || [];
      const nodes = hosts.nodes || [];
      fill(stats, `${count(apps.length, "app")} · ${count(nodes.length, "node")} hosting apps (runtimes: ${
        [...new Set(nodes.flatMap((n) => n.runtimes || []))].sort().join(", ") || "none"})`);
      if (!apps.length) {
        fill(rows, h("tr", null, h("td", { colspan: 7 }, note("No apps yet: `r1os app deploy examples/apps/echo/app.yaml`."))));
        return;
      }
      fill(rows, apps.map((a) => h("tr", { dataset: { app: a.app } },
        h("td", null, link(`/apps/${encodeURIComponent(a.owner)}/${encodeURIComponent(a.name)}/`, a.name)),
        h("td", { class: "mono", title: a.owner }, shortAddress(a.owner)),
        h("td", null, a.runtime),
        h("td", { class: "num" }, `v${num(a.version)}`),
        h("td", { class: "num" }, badge(`${num(a.healthy)}/${num(a.replicas_wanted)}`, a.healthy >= a.replicas_wanted ? "ok" : "warn")),
        h("td", null, (a.replicas || []).map((r) => h("span", { class: "replica", title: `${r.node} v${r.version} ${r.detail || ""}` },
          badge(`${shortAddress(r.node)} ${r.state}${r.restarts ? ` ↻${r.restarts}` : ""}`, REPLICA_KIND[r.state] ?? "")))),
        h("td", null, a.note || "—"))));
    },
  };
}

// -- training (EDIL) ----------------------------------------------------------------------------------

const PHASE_KIND = { training: "warn", done: "ok", failed: "bad", stopped: "" };

export function trainingPanel(body) {
  const stats = h("p", { class: "summary" });
  const list = h("div", { class: "jobs" });
  body.append(stats, list);
  return {
    every: 2000,
    async refresh() {
      let answer;
      try {
        answer = await getJSON("/v1/edil/jobs");
      } catch (err) {
        fill(list, note(describe(err), "warn"));
        return;
      }
      const jobs = answer.jobs || [];
      fill(stats, `${count(jobs.length, "job")} · ${num(jobs.filter((j) => j.phase === "training").length)} running`);
      if (!jobs.length) {
        fill(list, note("No training jobs yet: `r1os edil train examples/edil/digits.yaml`."));
        return;
      }
      fill(list, jobs.slice(0, 20).map((j) => {
        const acc = (j.history || []).map((r) => r.test_accuracy);
        const last = j.history?.[j.history.length - 1];
        return h("div", { class: "job", dataset: { job: j.job_id } },
          h("div", { class: "job-head" },
            h("strong", null, j.name), " ", badge(j.phase, PHASE_KIND[j.phase] ?? ""), " ",
            h("span", { class: "mono", title: j.job_id }, j.job_id), " ", badge(j.privacy)),
          facts([
            ["rounds", h("span", { class: "rounds-done" }, `${num(j.rounds_done)}/${num(j.rounds)}`)],
            ["test accuracy", h("span", { class: "accuracy" }, typeof j.test_accuracy === "number" ? `${(100 * j.test_accuracy).toFixed(1)} %` : "—")],
            ["participants", h("span", null, j.participants.map((p) => shortAddress(p)).join(", "))],
            ["aggregator", h("span", { class: "mono", title: j.aggregator }, shortAddress(j.aggregator))],
            last ? ["last round", `${num(last.included.length)} in, ${num(last.dropped.length)} dropped, ${num(Object.keys(last.refused || {}).length)} refused`] : null,
            j.error ? ["error", j.error] : null,
          ]),
          accuracyLine(acc));
      }));
    },
  };
}
