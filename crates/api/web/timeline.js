// A deal's history as a timeline: every event of its audit trail, oldest first, with who did it
// and when. Actions of the workflow service (actor `workflow:<rule>`) are marked as such, and so
// are events after the instant the time slider stands at, which that view of the board did not
// know (or that had not happened yet).

import { get } from "./api.js";
import { day, el, instant, money, words } from "./format.js";

function describe(event) {
  const data = event.data;
  switch (event.event_type) {
    case "OpportunityCreated":
      return `Created "${data.name}" in ${words(data.stage)}: ${money(data.amount, data.currency)}, owner ${data.owner}, closing ${day(data.expected_close_date)}`;
    case "StageChanged":
      return `Moved from ${words(data.from)} to ${words(data.to)} (${data.probability} %)${data.reason ? `: ${data.reason}` : ""}`;
    case "ProbabilityOverridden":
      return `Probability set${data.probability !== undefined && data.probability !== null ? ` to ${data.probability} %` : ""}${data.forecast_category ? `, category ${words(data.forecast_category)}` : ""}`;
    case "AmountChanged":
      return `Amount changed to ${money(data.amount, data.currency)}`;
    case "CloseDateChanged":
      return `Close date moved from ${day(data.previous)} to ${day(data.expected_close_date)}`;
    case "OwnerChanged":
      return `Owner changed from ${data.previous} to ${data.owner}`;
    case "ActivityLogged":
      return `${words(data.kind)}: ${data.summary}`;
    case "FollowUpScheduled":
      return `Follow-up (${words(data.kind)}) scheduled for ${instant(data.due_at)}`;
    case "FollowUpCompleted":
      return "Follow-up completed";
    case "FollowUpCancelled":
      return `Follow-up cancelled: ${data.reason}`;
    case "FollowUpDue":
      return `Reminder due: ${words(data.kind)}`;
    case "OpportunityClosed":
      return `Closed ${data.outcome}${data.reason ? `: ${data.reason}` : ""}`;
    case "OpportunityReopened":
      return `Reopened in ${words(data.stage)} (${data.probability} %)`;
    default:
      return words(event.event_type);
  }
}

/** The instant an event counts from on the slider's axis. */
function axisTime(event, axis) {
  return axis === "valid_at" ? event.occurred_at : event.recorded_at;
}

function item(event, cutoff, axis) {
  const actor = event.metadata.actor;
  const byWorkflow = actor.startsWith("workflow:");
  const later = cutoff !== null && new Date(axisTime(event, axis)) > new Date(cutoff);
  const recordedLater = new Date(event.recorded_at) - new Date(event.occurred_at) > 60_000;
  return el("li", {
    class: `event${byWorkflow ? " workflow" : ""}${later ? " later" : ""}`,
    "data-event": event.event_id,
    "data-type": event.event_type,
  },
  el("time", { datetime: event.occurred_at }, instant(event.occurred_at)),
  el("p", { class: "what" }, describe(event)),
  el("p", { class: "who" },
    byWorkflow ? el("span", { class: "tag tag-workflow" }, "workflow") : null,
    later ? el("span", { class: "tag tag-later" }, "after the chosen day") : null,
    `${actor} · ${event.event_type} · version ${event.stream_version}`,
    recordedLater ? ` · recorded ${instant(event.recorded_at)}` : ""));
}

/** Fills the dialog with the deal's current state and its whole history, then shows it. */
export async function showDeal(dialog, title, body, id, cutoff, axis) {
  body.replaceChildren(el("p", { class: "status" }, "Loading the history…"));
  title.textContent = "Deal";
  if (!dialog.open) dialog.showModal();
  const [deal, history] = await Promise.all([
    get(`/v1/opportunities/${encodeURIComponent(id)}`),
    get(`/v1/opportunities/${encodeURIComponent(id)}/history`),
  ]);
  title.textContent = deal.name;
  body.replaceChildren(
    el("dl", { class: "deal-facts" },
      el("dt", {}, "Now"), el("dd", {}, deal.status === "open" ? `open in ${words(deal.stage)}` : deal.status),
      el("dt", {}, "Amount"), el("dd", {}, money(deal.amount, deal.currency)),
      el("dt", {}, "Owner"), el("dd", {}, deal.owner),
      el("dt", {}, "Expected close"), el("dd", {}, day(deal.expected_close_date))),
    el("h3", {}, `History: ${history.events.length} events`),
    el("ol", { class: "timeline", "data-deal": id },
      history.events.map((event) => item(event, cutoff, axis))));
}
