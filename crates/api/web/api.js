// The page's only way to the server: GET requests to the public /v1 API, with the token (or,
// without one, the actor) the person entered. Both live in sessionStorage, so they leave with the
// tab and are never written anywhere else.

const TOKEN_KEY = "dealstream.token";
const ACTOR_KEY = "dealstream.actor";

export const access = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) ?? ""; },
  get actor() { return sessionStorage.getItem(ACTOR_KEY) ?? ""; },
  save(token, actor) {
    for (const [key, value] of [[TOKEN_KEY, token], [ACTOR_KEY, actor]]) {
      if (value) sessionStorage.setItem(key, value);
      else sessionStorage.removeItem(key);
    }
  },
};

/** A refusal or failure of the API, with the problem document's detail when there is one. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function headers() {
  const result = { Accept: "application/json" };
  if (access.token) result.Authorization = `Bearer ${access.token}`;
  else if (access.actor) result["X-Actor"] = access.actor;
  return result;
}

/** GETs `path` with the query parameters that are set; resolves to the JSON answer. */
export async function get(path, parameters = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  let response;
  try {
    response = await fetch(url, { headers: headers(), cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `the API cannot be reached (${error.message})`);
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => null);
    const detail = problem?.detail ?? response.statusText;
    if (response.status === 401) {
      throw new ApiError(401, `the API wants a token: ${detail}`);
    }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

/** Every open deal of every page of `GET /v1/opportunities`. */
export async function allOpenDeals(time) {
  const deals = [];
  let cursor = null;
  do {
    const page = await get("/v1/opportunities", { status: "open", limit: 500, cursor, ...time });
    deals.push(...page.opportunities);
    cursor = page.next_cursor;
  } while (cursor);
  return deals;
}
