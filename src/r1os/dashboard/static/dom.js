// Building the page without ever parsing markup: every value from the network becomes a text node or
// an attribute set one by one, so a key, a URL or a version string can never turn into elements or
// script. Nothing in this page uses innerHTML, outerHTML, insertAdjacentHTML or document.write (a test
// checks), and the Content-Security-Policy the node sends allows no inline script either.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (name === "href") {
      const safe = safeUrl(value);
      if (safe) el.setAttribute("href", safe);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/** An HTML element: h("td", {class: "num"}, "42"). Strings and numbers become text nodes. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  return append(el, children);
}

/** An SVG element, same rules. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  return append(el, children);
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** An http(s) URL as text, or null: peers announce their own URLs, and `javascript:` is not one. */
export function safeUrl(value) {
  try {
    const url = new URL(String(value), window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** A link to an http(s) URL, or the text alone when it is not one. */
export function link(url, text) {
  const href = safeUrl(url);
  if (!href) return h("span", { class: "muted" }, text ?? String(url ?? "—"));
  return h("a", { href, target: "_blank", rel: "noopener noreferrer" }, text ?? href);
}

// -- formatting ---------------------------------------------------------------------------------

export function shortAddress(address) {
  const a = String(address ?? "");
  return a.length > 14 ? `${a.slice(0, 6)}…${a.slice(-4)}` : a;
}

export function bytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function duration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "—";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return `${mm}m ${ss}s`;
  return `${ss}s`;
}

export function ago(unixSeconds, now = Date.now() / 1000) {
  if (typeof unixSeconds !== "number") return "—";
  const d = Math.max(0, now - unixSeconds);
  return d < 1.5 ? "just now" : `${duration(d)} ago`;
}

export function num(n) {
  return typeof n === "number" && isFinite(n) ? n.toLocaleString("en-US") : "—";
}

/** "1 pin", "3 pins": a count with its noun. */
export function count(n, noun, nouns = `${noun}s`) {
  return `${num(n)} ${n === 1 ? noun : nouns}`;
}

export function time(unixSeconds) {
  if (typeof unixSeconds !== "number") return "—";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A two-column list of label/value rows. */
export function facts(rows) {
  return h(
    "dl",
    { class: "facts" },
    rows.filter(Boolean).map(([label, value]) => [h("dt", null, label), h("dd", null, value)]),
  );
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

export function note(text, kind = "muted") {
  return h("p", { class: `note ${kind}` }, text);
}
