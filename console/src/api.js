// The API client: bearer tokens from /auth/token (refreshed once on a 401), problem+json
// errors, and the WebSocket streams. Everything goes to this origin (the CSP allows no other).

const BASE = "/api/v1";
const KEY = "flowyard.session";
const RANK = { viewer: 0, operator: 1, editor: 2, admin: 3 };

/** An API refusal: `status`, the problem's `title`/`detail`, and `problem` itself. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY)) || null;
  } catch {
    return null;
  }
}

let session = load();
const listeners = new Set();

function save(next) {
  session = next;
  if (next) localStorage.setItem(KEY, JSON.stringify(next));
  else localStorage.removeItem(KEY);
  listeners.forEach((fn) => fn(session));
}

/** The signed-in user ({name, role}) or null; `onSession` tells about changes. */
export function currentUser() {
  return session ? { name: session.name, role: session.role } : null;
}
export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
/** May the signed-in user act with `role` (viewer < operator < editor < admin)? */
export function can(role) {
  return !!session && RANK[session.role] >= RANK[role];
}

function fromPair(pair) {
  const c = claims(pair.access_token);
  return { access: pair.access_token, refresh: pair.refresh_token, name: c.name, role: c.role };
}

export async function login(username, password) {
  const body = new URLSearchParams({ username, password });
  const res = await fetch(`${BASE}/auth/token`, { method: "POST", body });
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  save(fromPair(await res.json()));
}

export async function logout() {
  if (session) {
    await fetch(`${BASE}/auth/logout`, {
      method: "POST",
      headers: { Authorization: `Bearer ${session.access}`, "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: session.refresh }),
    }).catch(() => {});
  }
  save(null);
}

let refreshing = null;
async function refresh() {
  if (!session) return false;
  refreshing ||= (async () => {
    const res = await fetch(`${BASE}/auth/refresh`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: session.refresh }),
    });
    if (!res.ok) {
      save(null);
      return false;
    }
    save(fromPair(await res.json()));
    return true;
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch {
    return { title: res.statusText };
  }
}

/** One request: `{data, etag}`; a refused one throws ApiError. */
export async function request(method, path, { body, headers = {} } = {}) {
  for (let attempt = 0; ; attempt++) {
    const h = { ...headers };
    if (session) h.Authorization = `Bearer ${session.access}`;
    if (body !== undefined) h["Content-Type"] = "application/json";
    const res = await fetch(BASE + path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401 && attempt === 0 && (await refresh())) continue;
    if (res.status === 401) save(null);
    if (!res.ok) throw new ApiError(res.status, await problemOf(res));
    const data = res.status === 204 ? null : await res.json();
    return { data, etag: res.headers.get("ETag") };
  }
}

export const api = {
  get: async (path) => (await request("GET", path)).data,
  post: async (path, body) => (await request("POST", path, { body })).data,
};

/** Every page of a list route (at most `max` items). */
export async function all(path, max = 5000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api.get(`${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/**
 * Follow a stream (`/stream?...` or `/runs/{id}/stream`): `onEvent(event)` for each event,
 * reconnecting after the last id seen when the connection drops (not after a normal end).
 * `/stream` starts at the newest event (`tail`): the page has just read the current state.
 * Returns a function that stops it.
 */
export function follow(path, onEvent) {
  let after = null;
  let socket = null;
  let stopped = false;
  let timer = null;
  const open = () => {
    if (stopped || !session) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const sep = path.includes("?") ? "&" : "?";
    const from = after === null ? (path.startsWith("/stream") ? "tail=true" : "after=0") : `after=${after}`;
    socket = new WebSocket(`${scheme}://${location.host}${BASE}${path}${sep}${from}`, [
      "flowyard.v1",
      `bearer.${session.access}`,
    ]);
    socket.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      after = Math.max(after || 0, event.id);
      onEvent(event);
    };
    socket.onclose = async (e) => {
      if (stopped || e.code === 1000 || e.code === 4404 || e.code === 1008) return;
      if (e.code === 4401) await refresh();
      timer = setTimeout(open, 1000);
    };
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    // Closing a socket still connecting makes the browser log an error: close once open.
    if (socket?.readyState === WebSocket.CONNECTING) socket.onopen = () => socket.close(1000);
    else if (socket) socket.close(1000);
  };
}
