// Display of amounts, dates and durations. Amounts arrive as integers in the currency's minor
// unit; the number of minor digits comes from the browser's currency data, not from a table here.

const LOCALE = "en-GB";

const formatters = new Map();

function currencyFormatter(currency, compact) {
  const key = `${currency}:${compact}`;
  if (!formatters.has(key)) {
    formatters.set(key, new Intl.NumberFormat(LOCALE, {
      style: "currency",
      currency,
      notation: compact ? "compact" : "standard",
      maximumFractionDigits: compact ? 1 : undefined,
    }));
  }
  return formatters.get(key);
}

export function minorDigits(currency) {
  return new Intl.NumberFormat(LOCALE, { style: "currency", currency })
    .resolvedOptions().maximumFractionDigits;
}

/** An amount in minor units, e.g. 1234500 EUR as "€12,345.00". */
export function money(minor, currency) {
  return currencyFormatter(currency, false).format(minor / 10 ** minorDigits(currency));
}

/** The same, short, for axes and cards: "€12.3K". */
export function moneyShort(minor, currency) {
  return currencyFormatter(currency, true).format(minor / 10 ** minorDigits(currency));
}

export function count(value) {
  return new Intl.NumberFormat(LOCALE).format(value);
}

const dayFormat = new Intl.DateTimeFormat(LOCALE, {
  year: "numeric", month: "short", day: "numeric", timeZone: "UTC",
});
const instantFormat = new Intl.DateTimeFormat(LOCALE, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  timeZone: "UTC", timeZoneName: "short",
});

/** A `YYYY-MM-DD` day or an RFC 3339 instant as a day. */
export function day(value) {
  return dayFormat.format(new Date(value.length === 10 ? `${value}T00:00:00Z` : value));
}

export function instant(value) {
  return instantFormat.format(new Date(value));
}

export function wholeDays(seconds) {
  const days = Math.floor(seconds / 86400);
  return days === 1 ? "1 day" : `${count(days)} days`;
}

/** A stage or reason slug as words: "close-date-passed" as "close date passed". */
export function words(slug) {
  return String(slug).replace(/[-_]/g, " ");
}

/** An element with attributes and children; text is always set as text, never parsed. */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}
