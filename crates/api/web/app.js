// The page's state and wiring: which view is shown, which day the time slider stands at and on
// which axis, the pipeline and owner filter, and the access (token or actor). Every change
// reloads what it affects from the API; an answer that arrives after a newer request started is
// dropped, so a slider dragged quickly never leaves an older day on screen.

import { access, ApiError } from "./api.js";
import { loadBoard, ownersOf, renderBoard } from "./board.js";
import { loadForecast, renderForecast } from "./forecast.js";
import { loadQueue, renderQueue } from "./queue.js";
import { showDeal } from "./timeline.js";
import { day as formatDay } from "./format.js";

const $ = (id) => document.getElementById(id);

const DAY_MS = 86_400_000;
const SLUG = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const VIEWS = ["board", "forecast", "queue"];

const slider = $("day-slider");
const picker = $("day-picker");

const state = {
  board: null,
  generation: { board: 0, forecast: 0, queue: 0 },
};

function today() {
  return new Date().toISOString().slice(0, 10);
}

function addDays(dayText, days) {
  return new Date(Date.parse(`${dayText}T00:00:00Z`) + days * DAY_MS).toISOString().slice(0, 10);
}

function daysBetween(from, to) {
  return Math.round((Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / DAY_MS);
}

/** The day the slider stands at, `YYYY-MM-DD`. */
function chosenDay() {
  return addDays(today(), Number(slider.value) - Number(slider.max));
}

function axis() {
  return document.querySelector('input[name="axis"]:checked').value;
}

/**
 * The time-travel parameters of the chosen day: none for today (the live read models), else the
 * end of that day on the chosen axis. Today's end is still in the future, which the API refuses.
 */
function timeParameters() {
  const chosen = chosenDay();
  if (chosen >= today()) return {};
  return { [axis()]: `${chosen}T23:59:59Z` };
}

function timeKey(time) {
  const [entry] = Object.entries(time);
  return entry ? `${entry[0]}=${entry[1]}` : "live";
}

function describeTime() {
  const chosen = chosenDay();
  if (chosen >= today()) return "Today, live.";
  const end = `the end of ${formatDay(chosen)} (UTC)`;
  return axis() === "as_of"
    ? `As known then: what had been recorded by ${end}.`
    : `As it was: the deals as they stood at ${end}, by all that is known now.`;
}

function showStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function failed(error) {
  const message = error instanceof ApiError ? error.message : String(error);
  showStatus(`Could not load: ${message}`, true);
}

function pipeline() {
  return $("pipeline").value.trim();
}

function owner() {
  return $("owner-filter").value;
}

function openDeal(id) {
  const time = timeParameters();
  const [entry] = Object.entries(time);
  showDeal($("deal"), $("deal-title"), $("deal-body"), id, entry ? entry[1] : null, axis())
    .catch(failed);
}

function fillOwners(deals) {
  const select = $("owner-filter");
  const current = select.value;
  const owners = ownersOf(deals);
  if (current && !owners.includes(current)) owners.push(current);
  select.replaceChildren(new Option("All owners", ""),
    ...owners.sort().map((name) => new Option(name, name, false, name === current)));
}

function drawBoard() {
  if (!state.board) return;
  renderBoard($("board"), $("board-summary"), state.board, owner(), openDeal);
}

async function refreshBoard() {
  if (!SLUG.test(pipeline())) {
    showStatus("A pipeline is named by a lower-case slug, such as default.", true);
    return;
  }
  const generation = ++state.generation.board;
  const time = timeParameters();
  $("board").setAttribute("aria-busy", "true");
  try {
    const loaded = await loadBoard(pipeline(), time);
    if (generation !== state.generation.board) return;
    state.board = loaded;
    fillOwners(loaded.deals);
    drawBoard();
    $("board").dataset.at = timeKey(time);
    showStatus("");
    $("day-shown").textContent = describeTime() + (loaded.board.position !== undefined
      ? ` Through event ${loaded.board.position} of the log.` : "");
  } catch (error) {
    if (generation === state.generation.board) failed(error);
  } finally {
    if (generation === state.generation.board) $("board").removeAttribute("aria-busy");
  }
}

async function refreshForecast() {
  if (!SLUG.test(pipeline())) return;
  const generation = ++state.generation.forecast;
  const time = timeParameters();
  const container = $("forecast");
  container.setAttribute("aria-busy", "true");
  try {
    const loaded = await loadForecast({
      period: $("period").value, pipeline: pipeline(), owner: owner(), time,
    });
    if (generation !== state.generation.forecast) return;
    renderForecast(container, loaded);
    container.dataset.at = timeKey(time);
  } catch (error) {
    if (generation === state.generation.forecast) failed(error);
  } finally {
    if (generation === state.generation.forecast) container.removeAttribute("aria-busy");
  }
}

async function refreshQueue() {
  if (await tokenMissing()) return;
  const generation = ++state.generation.queue;
  const container = $("queue");
  const actor = access.actor;
  try {
    const queue = actor ? await loadQueue(actor) : { items: [] };
    if (generation !== state.generation.queue) return;
    renderQueue(container, actor, queue, openDeal);
    container.dataset.owner = actor;
  } catch (error) {
    if (generation === state.generation.queue) failed(error);
  }
}

/**
 * Whether `/v1` wants a token that the page does not have yet. `/readyz` is public and says
 * whether authentication is on; asking `/v1` without a token would only fetch 401s.
 */
async function tokenMissing() {
  if (access.token) return false;
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const readiness = await response.json();
    return readiness.authentication === "on";
  } catch {
    return false;
  }
}

/** Shows the chosen day beside the slider, and to screen readers as the slider's value. */
function showDay() {
  $("day-shown").textContent = describeTime();
  picker.value = chosenDay();
  slider.setAttribute("aria-valuetext", formatDay(chosenDay()));
}

async function refreshTimeViews() {
  showDay();
  if (await tokenMissing()) {
    showStatus("This node wants an API token: enter one at the top.", true);
    return;
  }
  refreshBoard();
  refreshForecast();
}

function showView() {
  const wanted = window.location.hash.slice(1);
  const view = VIEWS.includes(wanted) ? wanted : "board";
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "queue") refreshQueue();
}

function setDay(dayText) {
  const back = daysBetween(dayText, today());
  if (back < 0) return;
  if (back > Number(slider.max)) {
    // A date before the slider's reach widens it: there is no limit on how far back.
    slider.max = String(back);
  }
  slider.value = String(Number(slider.max) - back);
  refreshTimeViews();
}

function start() {
  $("token").value = access.token;
  $("actor").value = access.actor;
  picker.max = today();

  let pending = null;
  slider.addEventListener("input", () => {
    showDay();
    clearTimeout(pending);
    pending = setTimeout(refreshTimeViews, 250);
  });
  // A key press fires both events; moving by many keys at once should load only the last day.
  slider.addEventListener("change", () => {
    clearTimeout(pending);
    pending = setTimeout(refreshTimeViews, 250);
  });
  picker.addEventListener("change", () => {
    if (/^\d{4}-\d{2}-\d{2}$/.test(picker.value)) setDay(picker.value);
  });
  for (const radio of document.querySelectorAll('input[name="axis"]')) {
    radio.addEventListener("change", refreshTimeViews);
  }
  $("today").addEventListener("click", () => setDay(today()));
  $("pipeline").addEventListener("change", () => {
    $("owner-filter").value = "";
    refreshBoard();
    refreshForecast();
  });
  $("owner-filter").addEventListener("change", () => {
    drawBoard();
    refreshForecast();
  });
  $("period").addEventListener("change", refreshForecast);
  $("access").addEventListener("submit", (event) => {
    event.preventDefault();
    access.save($("token").value.trim(), $("actor").value.trim());
    refreshTimeViews();
    refreshQueue();
  });
  $("forget").addEventListener("click", () => {
    access.save("", "");
    $("token").value = "";
    $("actor").value = "";
    refreshTimeViews();
    refreshQueue();
  });
  const dialog = $("deal");
  $("deal-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });

  window.addEventListener("hashchange", showView);
  showView();
  refreshTimeViews();
}

start();
