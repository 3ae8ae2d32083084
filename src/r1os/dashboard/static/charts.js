// Two small hand-written SVG charts: the network as a ring around this node, and availability as a
// grid of nodes by epochs. Both are built with DOM calls (see dom.js); labels are text nodes.

import { s, shortAddress } from "./dom.js";

/** This node in the middle, every peer on a ring; green online, grey offline, oracles as diamonds. */
export function networkRing(peers, width = 260, height = 240) {
  const cx = width / 2, cy = height / 2;
  const others = peers.filter((p) => !p.self);
  const me = peers.find((p) => p.self);
  const radius = Math.min(cx, cy) - 30;
  const labels = others.length <= 24;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart ring",
    role: "img",
    "aria-label": `network map: ${others.length} peers`,
  });
  const nodes = [];
  others.forEach((peer, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, others.length) - Math.PI / 2;
    const x = cx + radius * Math.cos(angle), y = cy + radius * Math.sin(angle);
    const online = peer.status === "online";
    svg.append(s("line", { x1: cx, y1: cy, x2: x, y2: y, class: online ? "edge" : "edge off" }));
    nodes.push(marker(peer, x, y, labels ? (y < cy ? y - 12 : y + 20) : null));
  });
  if (me) nodes.push(marker(me, cx, cy, cy + 26));
  svg.append(...nodes);
  return svg;
}

function marker(peer, x, y, labelY) {
  const cls = `node ${peer.status === "online" ? "on" : "off"}${peer.self ? " self" : ""}`;
  const r = peer.self ? 13 : 9;
  const shape = peer.oracle
    ? s("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, transform: `rotate(45 ${x} ${y})`, class: cls })
    : s("circle", { cx: x, cy: y, r, class: cls });
  const g = s("g", { dataset: { address: peer.address } },
    s("title", null, `${peer.address}${peer.self ? " (this node)" : ""}\n${peer.oracle ? "oracle" : "edge"} · ${peer.status}`),
    shape);
  if (labelY !== null) {
    g.append(s("text", { x, y: labelY, class: "label", "text-anchor": "middle" }, shortAddress(peer.address)));
  }
  return g;
}

/** Availability 0..255 as a colour: red (never there) through amber to green (always there). */
export function availabilityColour(value) {
  const hue = Math.round((Math.max(0, Math.min(255, value)) / 255) * 125);
  return `hsl(${hue} 65% 45%)`;
}

/**
 * Rows: nodes; columns: epochs; each cell the agreed availability of that node in that epoch, and at
 * the right a bar of the node's mean over the epochs shown.
 */
export function availabilityGrid(epochs, nodes, selfAddress) {
  const labelW = 112, cell = 22, gap = 3, barW = 120, top = 24, bottom = 8;
  const cols = epochs.length, rows = nodes.length;
  const gridW = cols * (cell + gap);
  const width = labelW + gridW + 16 + barW + 44;
  const height = top + rows * (cell + gap) + bottom;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: "chart availability",
    role: "img",
    "aria-label": `availability of ${rows} nodes over ${cols} epochs`,
  });
  const step = Math.max(1, Math.ceil(cols / 12));
  epochs.forEach((row, j) => {
    if (j % step === 0 || j === cols - 1) {
      svg.append(s("text", { x: labelW + j * (cell + gap) + cell / 2, y: top - 8, class: "axis", "text-anchor": "middle" }, String(row.epoch)));
    }
  });
  svg.append(s("text", { x: labelW + gridW + 16, y: top - 8, class: "axis" }, "mean"));
  nodes.forEach((node, i) => {
    const y = top + i * (cell + gap);
    const mine = selfAddress && node.toLowerCase() === selfAddress.toLowerCase();
    svg.append(s("text", { x: labelW - 8, y: y + cell * 0.7, class: mine ? "label strong" : "label", "text-anchor": "end" },
      s("title", null, node), shortAddress(node)));
    let sum = 0;
    epochs.forEach((row, j) => {
      const value = lookup(row.values, node);
      sum += value;
      svg.append(s("rect", {
        x: labelW + j * (cell + gap), y, width: cell, height: cell, rx: 3,
        fill: availabilityColour(value), class: "cell",
        dataset: { epoch: row.epoch, node, value },
      }, s("title", null, `epoch ${row.epoch} · ${node}\navailability ${value}/255 (${Math.round((value / 255) * 100)} %)`)));
    });
    const mean = cols ? sum / cols : 0;
    const x0 = labelW + gridW + 16;
    svg.append(s("rect", { x: x0, y: y + 4, width: barW, height: cell - 8, rx: 2, class: "track" }));
    svg.append(s("rect", { x: x0, y: y + 4, width: Math.max(1, (barW * mean) / 255), height: cell - 8, rx: 2, fill: availabilityColour(mean) }));
    svg.append(s("text", { x: x0 + barW + 6, y: y + cell * 0.7, class: "axis" }, `${Math.round((mean / 255) * 100)} %`));
  });
  return svg;
}

function lookup(values, node) {
  if (node in values) return values[node];
  const lower = node.toLowerCase();
  for (const [k, v] of Object.entries(values)) if (k.toLowerCase() === lower) return v;
  return 0;
}

/** Test accuracy per round of a training job, as a line on [0, 1]. */
export function accuracyLine(values, width = 280, height = 90) {
  const pad = 6;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "chart accuracy", role: "img",
    "aria-label": `test accuracy over ${values.length} rounds`,
  });
  const points = values
    .map((v, i) => [i, v])
    .filter(([, v]) => typeof v === "number" && Number.isFinite(v));
  if (!points.length) return svg;
  const n = Math.max(1, values.length - 1);
  const xy = points.map(([i, v]) => [pad + (i / n) * (width - 2 * pad), height - pad - v * (height - 2 * pad)]);
  svg.append(s("line", { x1: pad, x2: width - pad, y1: pad, y2: pad, class: "edge off" }));
  svg.append(s("polyline", { points: xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), class: "accuracy-line" }));
  const [lx, ly] = xy[xy.length - 1];
  svg.append(s("circle", { cx: lx, cy: ly, r: 3, class: "accuracy-dot" }));
  return svg;
}
