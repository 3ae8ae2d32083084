// Requests to this node only (the page's Content-Security-Policy allows nothing else): every route the
// page reads is public; what it writes is signed by the user's wallet (wallet.js); an error answer has the node's one shape {error, cause, hint}.

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.cause = body && typeof body.cause === "string" ? body.cause : "error";
    this.hint = body && typeof body.hint === "string" ? body.hint : null;
  }
}

/** One request to this node, answered with JSON; an error (HTTP, unreachable, timed out) is an ApiError. */
async function requestJSON(url, init, timeoutMs) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const r = await fetch(url, { ...init, signal: abort.signal });
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null;
    }
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError(0, { error: err.name === "AbortError" ? "the node did not answer in time" : String(err), cause: "unreachable" });
  } finally {
    clearTimeout(timer);
  }
}

/** GET a JSON route of this node; `params` become the query string. Times out after `timeoutMs`. */
export async function getJSON(path, params = {}, timeoutMs = 10000) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
  }
  return requestJSON(url, { headers: { Accept: "application/json" } }, timeoutMs);
}

/** POST a JSON body (already encoded: the signed bytes are sent as they are) to a route of this node. */
export async function postJSON(path, text, timeoutMs = 30000) {
  return requestJSON(
    new URL(path, window.location.origin),
    { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: text },
    timeoutMs,
  );
}

/** A refusal as one line, with its hint. */
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err);
  return err.hint ? `${err.message} (${err.cause}): ${err.hint}` : `${err.message} (${err.cause})`;
}
