// Licences and rewards per node: what GET /v1/dashboard/licences reads from the chain (through this
// node): each node's licence, what it claimed, the ended epochs waiting to be claimed with their agreed
// availability, and what a claim would pay now.

import { describe, getJSON } from "./api.js";
import { badge, count, fill, h, note, num, shortAddress } from "./dom.js";

const WEI = 10n ** 18n;

/** Wei (a decimal string) as R1 with up to 4 decimals; "—" when unknown. */
export function r1(wei) {
  if (typeof wei !== "string" || !/^\d{1,80}$/.test(wei)) return "—";
  const v = BigInt(wei);
  const whole = v / WEI;
  const frac = ((v % WEI) * 10000n) / WEI;
  return `${whole.toLocaleString("en-US")}${frac ? `.${frac.toString().padStart(4, "0").replace(/0+$/, "")}` : ""} R1`;
}

const KIND = { ND: "", MND: "oracle", GND: "oracle" };

export function licencesPanel(body, app) {
  const stats = h("p", { class: "summary" });
  const rows = h("tbody");
  const table = h("div", { class: "scroll" }, h("table", { class: "licences" },
    h("thead", null, h("tr", null, ["node", "licence", "owner", "claimed", "epochs waiting", "availability (waiting)", "claimable now", "earned"].map((c) => h("th", null, c)))),
    rows));
  body.append(stats, table);
  return {
    every: 5000,
    async refresh() {
      let answer;
      try {
        answer = await getJSON("/v1/dashboard/licences");
      } catch (err) {
        fill(stats, note(describe(err), "warn"));
        return;
      }
      if (!answer.chain) {
        fill(stats, note("no chain configured on this node: licences and rewards live on the chain "
          + "(a devnet with a chain: `r1os devnet up`; a node: its chain_deployment setting)."));
        table.hidden = true;
        return;
      }
      table.hidden = false;
      const nodes = answer.nodes || [];
      const licensed = nodes.filter((n) => n.licence);
      fill(stats, `chain ${answer.chain_id} · epoch ${num(answer.current_epoch)} · ${count(licensed.length, "licensed node")} of ${num(nodes.length)}`,
        answer.availability === "ok" ? "" : ` · availability: ${answer.availability}`);
      const me = app.snapshot?.node?.address;
      fill(rows, nodes.map((n) => {
        const lic = n.licence;
        return h("tr", { dataset: { node: n.node } },
          h("td", { class: "mono", title: n.node }, shortAddress(n.node), n.node === me ? " (this node)" : ""),
          h("td", { class: "licence" }, lic ? badge(`${lic.type} #${lic.token_id}`, KIND[lic.type] ?? "") : badge("no licence", "warn")),
          h("td", { class: "mono", title: lic?.owner ?? "" }, lic ? shortAddress(lic.owner) : "—"),
          h("td", { class: "num claimed" }, lic ? r1(n.claimed) : "—"),
          h("td", { class: "num waiting" }, lic ? (n.claimable_epochs ? `${num(n.claimable_epochs)} from ${num(n.next_claim_epoch)}${
            n.agreed_epochs < n.claimable_epochs ? ` (${num(n.claimable_epochs - n.agreed_epochs)} closing)` : ""}` : "0") : "—"),
          h("td", { class: "num" }, lic && n.waiting_availability?.length ? n.waiting_availability.slice(-8).join(", ") : "—"),
          h("td", { class: "num claimable" }, lic ? r1(n.claimable) : "—"),
          h("td", { class: "num earned" }, lic ? r1(n.earned) : "—"));
      }));
    },
  };
}
