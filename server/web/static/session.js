// Sign-in state and REST calls. Tokens live in localStorage; the access token is refreshed with
// the refresh token when the realtime client asks (before expiry) or a call answers 401.
import { tokenLifetime } from "/static/sdk/index.js";

const KEY = "kuda.demo.session";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function current() {
  try {
    return JSON.parse(localStorage.getItem(KEY) ?? "null");
  } catch {
    return null;
  }
}

function save(session) {
  if (session) localStorage.setItem(KEY, JSON.stringify(session));
  else localStorage.removeItem(KEY);
}

export function signOut() {
  const session = current();
  save(null);
  if (session?.refresh) {
    fetch("/api/v1/auth/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: session.refresh }),
    }).catch(() => {});
  }
}

async function call(path, init) {
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw Object.assign(new ApiError(0, "network", "You are offline"), { retry: true });
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new ApiError(response.status, error.code, error.message ?? response.statusText, error.details);
  }
  return { body, response };
}

export async function signIn(email, password) {
  const form = new URLSearchParams({ username: email, password });
  const { body } = await call("/api/v1/auth/token", { method: "POST", body: form });
  save({ access: body.access_token, refresh: body.refresh_token, email });
}

export async function signUp(email, password, displayName) {
  await call("/api/v1/auth/register", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password, display_name: displayName }),
  });
  await signIn(email, password);
}

let refreshing = null;

function refresh() {
  refreshing ??= (async () => {
    const session = current();
    if (!session) return null;
    try {
      const { body } = await call("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: session.refresh }),
      });
      save({ ...session, access: body.access_token, refresh: body.refresh_token });
      return body.access_token;
    } catch (err) {
      if (err.status === 401) {
        save(null); // the session ended (logout elsewhere, password change)
        return null;
      }
      throw err; // offline: the realtime client backs off and asks again
    }
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** The realtime client's `getToken`: the stored token while it has a minute left, else a new one. */
export async function getToken({ reason } = {}) {
  const session = current();
  if (!session) return null;
  const life = tokenLifetime(session.access);
  const fresh = life && life.expMs - Date.now() > 60_000;
  if (reason === "refresh" || reason === "expired" || !fresh) return refresh();
  return session.access;
}

async function authed(method, path, body) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const token = await getToken({ reason: attempt ? "expired" : "rest" });
    if (!token) throw new ApiError(401, "unauthorized", "Please sign in again");
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
      return await call("/api/v1" + path, init);
    } catch (err) {
      if (err.status !== 401 || attempt) throw err;
    }
  }
  throw new ApiError(401, "unauthorized", "Please sign in again");
}

/** REST under /api/v1 with the current token; resolves with the body. */
export async function api(method, path, body) {
  return (await authed(method, path, body)).body;
}

/** A fenced read: the body and its `Kuda-Seq` (the channel's seq as of the read). */
export async function snapshot(path) {
  const { body, response } = await authed("GET", path);
  return { body, seq: Number(response.headers.get("Kuda-Seq") ?? 0) };
}

const users = new Map();

/** A user's public profile, fetched once. */
export function profile(id) {
  if (!users.has(id)) {
    users.set(id, api("GET", `/users/${id}`).catch(() => ({ id, display_name: `User ${id}` })));
  }
  return users.get(id);
}
