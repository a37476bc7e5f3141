// The board: one column per stage of the pipeline, the open deals as cards, and the sums per
// currency. Without an owner filter the sums are the API's board answer itself; with one they
// are added up from that owner's cards, since the board answer covers every owner.

import { allOpenDeals, get } from "./api.js";
import { count, day, el, money, wholeDays, words } from "./format.js";

/** Loads the board and the open deals of `pipeline` at the chosen time. */
export async function loadBoard(pipeline, time) {
  const [board, deals] = await Promise.all([
    get(`/v1/pipelines/${encodeURIComponent(pipeline)}/board`, time),
    allOpenDeals(time),
  ]);
  return { board, deals: deals.filter((deal) => deal.pipeline === pipeline) };
}

/** Per-currency sums of some deals, in the board answer's shape. */
function totalsOf(deals) {
  const sums = new Map();
  for (const deal of deals) {
    const sum = sums.get(deal.currency) ?? {
      currency: deal.currency, count: 0, amount: 0, weighted_amount: 0,
    };
    sum.count += 1;
    sum.amount += deal.amount;
    sum.weighted_amount += deal.weighted_amount;
    sums.set(deal.currency, sum);
  }
  return [...sums.values()].sort((a, b) => a.currency.localeCompare(b.currency));
}

function addTotals(into, totals) {
  for (const total of totals) {
    const sum = into.get(total.currency) ?? {
      currency: total.currency, count: 0, amount: 0, weighted_amount: 0,
    };
    sum.count += total.count;
    sum.amount += total.amount;
    sum.weighted_amount += total.weighted_amount;
    into.set(total.currency, sum);
  }
}

function totalsList(totals, label) {
  if (totals.length === 0) return el("p", { class: "empty" }, "No open deals");
  return el("ul", { class: "totals", "aria-label": label },
    totals.map((total) => el("li", {
      "data-currency": total.currency,
      "data-count": total.count,
      "data-amount": total.amount,
      "data-weighted": total.weighted_amount,
    },
    el("span", { class: "currency" }, total.currency),
    el("span", { class: "amount" }, money(total.amount, total.currency)),
    el("span", { class: "detail" },
      `${count(total.count)} ${total.count === 1 ? "deal" : "deals"}, weighted `,
      money(total.weighted_amount, total.currency)))));
}

function card(deal, openDeal) {
  const days = deal.time_in_stage?.[deal.stage] ?? 0;
  return el("li", {},
    el("button", {
      type: "button",
      class: "card",
      "data-deal": deal.id,
      "aria-label": `${deal.name}, ${money(deal.amount, deal.currency)}, owner ${deal.owner}; open its history`,
      onclick: () => openDeal(deal.id),
    },
    el("span", { class: "card-name" }, deal.name),
    el("span", { class: "card-amount" }, money(deal.amount, deal.currency)),
    el("dl", { class: "card-facts" },
      el("dt", {}, "Owner"), el("dd", {}, deal.owner),
      el("dt", {}, "Probability"), el("dd", {}, `${deal.probability} %`),
      el("dt", {}, "In stage"), el("dd", {}, wholeDays(days)),
      el("dt", {}, "Follow-up"),
      el("dd", {}, deal.next_follow_up_at ? day(deal.next_follow_up_at) : "none"))));
}

/** Draws the board into `container` and the whole pipeline's sums into `summary`. */
export function renderBoard(container, summary, { board, deals }, owner, openDeal) {
  const shown = owner ? deals.filter((deal) => deal.owner === owner) : deals;
  const byStage = new Map();
  for (const deal of shown) {
    if (!byStage.has(deal.stage)) byStage.set(deal.stage, []);
    byStage.get(deal.stage).push(deal);
  }
  const overall = new Map();
  const columns = board.columns.map((column) => {
    const cards = (byStage.get(column.stage) ?? [])
      .sort((a, b) => b.amount - a.amount || a.name.localeCompare(b.name));
    const totals = owner ? totalsOf(cards) : column.totals;
    addTotals(overall, totals);
    const headingId = `stage-${column.stage}`;
    return el("section", { class: "column", "data-stage": column.stage, "aria-labelledby": headingId },
      el("h3", { id: headingId }, words(column.stage),
        el("span", { class: "badge" }, count(cards.length))),
      totalsList(totals, `Sums in ${words(column.stage)}`),
      el("ul", { class: "cards", "aria-label": `Deals in ${words(column.stage)}` },
        cards.map((deal) => card(deal, openDeal))));
  });
  container.replaceChildren(...columns);
  const sums = [...overall.values()].sort((a, b) => a.currency.localeCompare(b.currency));
  summary.replaceChildren(
    el("h3", {}, owner ? `Open pipeline of ${owner}` : "Open pipeline"),
    totalsList(sums, "Sums of the whole pipeline"));
}

/** The owners of the deals loaded, for the filter. */
export function ownersOf(deals) {
  return [...new Set(deals.map((deal) => deal.owner))].sort();
}
