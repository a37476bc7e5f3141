// The forecast per period and currency as an SVG bar chart, with a table of the same figures
// (the chart's text alternative, and what a screen reader reads). The API answers one row per
// period, owner, pipeline and currency; the chart sums the owners (or shows the one filtered on).
// Both probability models are asked at the same instant: only the weighted amount depends on the
// model, so it is drawn twice, side by side, and the other series once.

import { get } from "./api.js";
import { count, el, money, moneyShort } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";

/** The series drawn, in order: the field of the summed row, its label and its CSS class. */
export const SERIES = [
  { field: "closed_won", label: "Closed won", class: "s-won" },
  { field: "commit", label: "Commit", class: "s-commit" },
  { field: "best_case", label: "Best case", class: "s-best" },
  { field: "pipeline_amount", label: "Pipeline", class: "s-pipeline" },
  { field: "weighted_stage", label: "Weighted (stage probabilities)", class: "s-weighted" },
  { field: "weighted_historical", label: "Weighted (historical win rates)", class: "s-historical" },
];

export async function loadForecast({ period, pipeline, owner, time }) {
  const query = { period, pipeline, owner, ...time };
  const [stage, historical] = await Promise.all([
    get("/v1/forecast", { ...query, probability: "stage" }),
    get("/v1/forecast", { ...query, probability: "historical" }),
  ]);
  return { stage, historical };
}

/** Sums the answer's rows per currency and period: Map(currency, Map(period, sums)). */
export function sumRows(stage, historical) {
  const byCurrency = new Map();
  const slot = (row) => {
    if (!byCurrency.has(row.currency)) byCurrency.set(row.currency, new Map());
    const periods = byCurrency.get(row.currency);
    if (!periods.has(row.period)) {
      periods.set(row.period, {
        open_count: 0, closed_won: 0, commit: 0, best_case: 0, pipeline_amount: 0,
        weighted_stage: 0, weighted_historical: 0, closed_lost: 0,
      });
    }
    return periods.get(row.period);
  };
  for (const row of stage.rows) {
    const sums = slot(row);
    sums.open_count += row.open_count;
    sums.closed_won += row.closed_won;
    sums.commit += row.commit;
    sums.best_case += row.best_case;
    sums.pipeline_amount += row.pipeline_amount;
    sums.closed_lost += row.closed_lost;
    sums.weighted_stage += row.weighted_amount;
  }
  for (const row of historical.rows) slot(row).weighted_historical += row.weighted_amount;
  return byCurrency;
}

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A round step for the axis so that about four gridlines cover `max`. */
function niceStep(max) {
  const rough = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].find((factor) => factor * magnitude >= rough);
  return step * magnitude;
}

function chart(currency, periods, titleId) {
  const labels = [...periods.keys()].sort();
  // Wider bars when there are few periods, so a quarter view fills the card.
  const barWidth = Math.max(8, Math.min(22, Math.floor(1000 / (labels.length * SERIES.length + 1))));
  const groupWidth = SERIES.length * barWidth + 14;
  const left = 64;
  const top = 12;
  const height = 220;
  const bottom = 28;
  const width = left + labels.length * groupWidth + 8;
  const max = Math.max(1, ...labels.flatMap((label) => SERIES.map((s) => periods.get(label)[s.field])));
  const step = niceStep(max);
  const ceiling = Math.ceil(max / step) * step;
  const y = (value) => top + height - (value / ceiling) * height;

  const root = svg("svg", {
    viewBox: `0 0 ${width} ${top + height + bottom}`,
    width,
    height: top + height + bottom,
    role: "img",
    "aria-labelledby": titleId,
    class: "chart",
  });
  for (let value = 0; value <= ceiling; value += step) {
    root.append(
      svg("line", { x1: left, x2: width - 4, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" },
        moneyShort(value, currency)));
  }
  labels.forEach((label, index) => {
    const x0 = left + index * groupWidth + 7;
    const sums = periods.get(label);
    SERIES.forEach((series, position) => {
      const value = sums[series.field];
      const bar = svg("rect", {
        x: x0 + position * barWidth,
        y: y(value),
        width: barWidth - 1,
        height: Math.max(0, top + height - y(value)),
        class: series.class,
      }, svg("title", {}, `${label} ${series.label}: ${money(value, currency)}`));
      root.append(bar);
    });
    root.append(svg("text", {
      x: x0 + (SERIES.length * barWidth) / 2, y: top + height + 18, class: "axis",
      "text-anchor": "middle",
    }, label));
  });
  return root;
}

function table(currency, periods) {
  const labels = [...periods.keys()].sort();
  return el("table", { class: "figures", "data-currency": currency },
    el("caption", {}, `Forecast in ${currency}`),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Period"),
      el("th", { scope: "col" }, "Open deals"),
      SERIES.map((series) => el("th", { scope: "col" }, series.label)))),
    el("tbody", {}, labels.map((label) => {
      const sums = periods.get(label);
      return el("tr", { "data-period": label },
        el("th", { scope: "row" }, label),
        el("td", { "data-field": "open_count", "data-value": sums.open_count }, count(sums.open_count)),
        SERIES.map((series) => el("td", {
          "data-field": series.field, "data-value": sums[series.field],
        }, money(sums[series.field], currency))));
    })));
}

function legend() {
  return el("ul", { class: "legend", "aria-hidden": "true" },
    SERIES.map((series) => el("li", {}, el("span", { class: `swatch ${series.class}` }), series.label)));
}

export function renderForecast(container, { stage, historical }) {
  const byCurrency = sumRows(stage, historical);
  if (byCurrency.size === 0) {
    container.replaceChildren(el("p", { class: "empty" },
      "No deals at this point in time: nothing to forecast."));
    return;
  }
  const currencies = [...byCurrency.keys()].sort();
  container.replaceChildren(legend(), ...currencies.map((currency) => {
    const titleId = `forecast-${currency}`;
    return el("figure", { class: "forecast", "data-currency": currency },
      el("figcaption", { id: titleId }, `${currency}: closed won, commit, best case, pipeline and weighted, per ${stage.period}`),
      el("div", { class: "scroll" }, chart(currency, byCurrency.get(currency), titleId)),
      el("details", {}, el("summary", {}, `Figures in ${currency}`),
        table(currency, byCurrency.get(currency))));
  }));
}
