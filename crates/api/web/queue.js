// The work queue of the actor entered at the top: what needs doing now, as the API orders it
// (largest weighted amount at stake first).

import { get } from "./api.js";
import { el, instant, money, words } from "./format.js";

export function loadQueue(owner) {
  return get("/v1/work-queue", { owner });
}

export function renderQueue(container, owner, queue, openDeal) {
  if (!owner) {
    container.replaceChildren(el("p", { class: "empty" },
      "Enter your actor name at the top to see your work queue."));
    return;
  }
  if (queue.items.length === 0) {
    container.replaceChildren(el("p", { class: "empty" }, `Nothing needs doing for ${owner} now.`));
    return;
  }
  container.replaceChildren(el("table", { class: "queue" },
    el("caption", {}, `What ${owner} should do now`),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Deal"),
      el("th", { scope: "col" }, "Why"),
      el("th", { scope: "col" }, "Due"),
      el("th", { scope: "col", class: "number" }, "Weighted amount"))),
    el("tbody", {}, queue.items.map((item) => el("tr", {
      "data-deal": item.opportunity_id, "data-reason": item.reason,
    },
    el("td", {}, el("button", {
      type: "button", class: "link", onclick: () => openDeal(item.opportunity_id),
    }, item.name)),
    el("td", {}, el("span", { class: `tag reason-${item.reason}` }, words(item.reason))),
    el("td", {}, item.due_at ? instant(item.due_at) : "—"),
    el("td", { class: "number" }, money(item.weighted_amount, item.currency)))))));
}
