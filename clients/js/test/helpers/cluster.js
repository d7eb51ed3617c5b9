// Real `kuda serve` processes for the JS SDK's tests: a freshly created and migrated database and
// a Redis prefix of their own on the shared PostgreSQL and Redis (TEST_DATABASE_URL,
// TEST_REDIS_URL, as the Python suite), ports in 20000-32000, logs in a temporary folder.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
export const REPO = resolve(fileURLToPath(new URL("../../../../", import.meta.url)));
// The project's virtual environment (python3 dev.py makes it); else whatever python3 has Kuda.
const VENV_PYTHON = join(REPO, ".venv", "bin", "python");
const PYTHON = process.env.KUDA_PYTHON ?? (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");
const ADMIN_URL = process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0";
export const JWT_SECRET = "js-test-secret-" + "k".repeat(40);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function python(code, env = process.env) {
  const { stdout } = await run(PYTHON, ["-c", code], { cwd: REPO, env, timeout: 120000 });
  return stdout.trim();
}

/** A free port in 20000-32000 (below Linux's ephemeral range, so a restarted server can bind it again). */
export async function freePort() {
  for (let i = 0; i < 200; i += 1) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise((resolveOk) => {
      const srv = createServer();
      srv.once("error", () => resolveOk(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolveOk(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port");
}

function baseEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(DATABASE_|REDIS_|JWT_)/.test(k)) env[k] = v;
  }
  return { ...env, ...extra };
}

export class Instance {
  constructor(cluster, name, port) {
    this.cluster = cluster;
    this.name = name;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.proc = undefined;
    this.starts = 0;
  }

  get logPath() {
    return join(this.cluster.tmp, `${this.name}.log`);
  }

  async start() {
    const fd = openSync(this.logPath, "a");
    this.starts += 1;
    this.proc = spawn(PYTHON, ["-m", "server", "serve", "--port", String(this.port)], {
      cwd: REPO,
      env: this.cluster.env,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    const proc = this.proc;
    const exited = new Promise((r) => proc.once("exit", r));
    this.exited = exited;
    const deadline = Date.now() + 90000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`${this.name} exited ${proc.exitCode}:\n${this.log()}`);
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`${this.name} not ready:\n${this.log()}`);
  }

  /** SIGTERM (the server closes every socket with 1012) or SIGKILL (no close frame at all). */
  async stop(signal = "SIGTERM") {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill("SIGKILL"), 30000);
    await this.exited;
    clearTimeout(timer);
  }

  log() {
    try {
      return readFileSync(this.logPath, "utf8").slice(-4000);
    } catch {
      return "";
    }
  }
}

export class Cluster {
  constructor(settings = {}) {
    this.settings = settings;
    this.instances = [];
    this.tmp = mkdtempSync(join(tmpdir(), "kuda-js-"));
    this.prefix = `kuda-js-${randomBytes(4).toString("hex")}:`;
  }

  /** Create and migrate the database, then start `count` instances on it and on Redis. */
  async start(count = 2) {
    const created = await python(
      "import asyncio; from tests.services import create_database; " +
        "name, url = asyncio.run(create_database('kuda_js')); print(name); print(url)",
      { ...process.env, TEST_DATABASE_URL: ADMIN_URL },
    );
    [this.dbName, this.dbUrl] = created.split("\n");
    this.env = baseEnv({
      DATABASE_URL: this.dbUrl,
      REDIS_URL,
      REDIS_PREFIX: this.prefix,
      JWT_SECRET,
      PASSWORD_HASH_TIME_COST: "1",
      PASSWORD_HASH_MEMORY_KIB: "1024",
      RELAY_INTERVAL_S: "0.5",
      RESYNC_INTERVAL_S: "2",
      AUTH_REQUESTS_PER_IP: "100000",
      WRITE_RATE_PER_USER: "0",
      SOCKETS_PER_USER: "1000",
      LOG_LEVEL: "warning",
      DB_POOL_SIZE: "8", // the shared PostgreSQL serves everyone's tests
      DB_MAX_OVERFLOW: "2",
      ...this.settings,
    });
    await run(PYTHON, ["-m", "server", "migrate"], { cwd: REPO, env: this.env, timeout: 120000 });
    for (let i = 0; i < count; i += 1) {
      const instance = new Instance(this, String.fromCharCode(97 + i), await freePort());
      this.instances.push(instance);
    }
    await Promise.all(this.instances.map((i) => i.start()));
    return this.instances;
  }

  async stop() {
    await Promise.all(this.instances.map((i) => i.stop("SIGTERM")));
    if (this.dbName) {
      await python(
        `import asyncio; from tests.services import drop_database; asyncio.run(drop_database(${JSON.stringify(this.dbName)}))`,
        { ...process.env, TEST_DATABASE_URL: ADMIN_URL },
      ).catch(() => {});
    }
  }
}

/** REST calls as a test user would make them. */
export class Api {
  constructor(base) {
    this.base = base;
  }

  async call(method, path, { token, json, form } = {}) {
    const headers = {};
    let body;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      body = new URLSearchParams(form).toString();
    }
    let res;
    // The shared PostgreSQL may refuse connections for a moment when everyone's tests run at
    // once (5xx before anything is written): try again as a patient client would.
    for (let attempt = 0; ; attempt += 1) {
      res = await fetch(this.base + "/api/v1" + path, { method, headers, body });
      if (res.status < 500 || attempt >= 5) break;
      await sleep(500 * (attempt + 1));
    }
    const text = await res.text();
    const data = text ? JSON.parse(text) : undefined;
    if (!res.ok) throw Object.assign(new Error(`${method} ${path}: ${res.status} ${text}`), { status: res.status, data });
    return data;
  }

  /** Register a user; returns {user, password, email}. */
  async user(name = "user") {
    const email = `${name}-${randomBytes(4).toString("hex")}@example.com`;
    const password = "correct-horse-battery";
    const user = await this.call("POST", "/auth/register", { json: { email, password, display_name: name } });
    return { user, email, password };
  }

  async login({ email, password }) {
    return this.call("POST", "/auth/token", { form: { username: email, password } });
  }

  /** A getToken for the SDK: a cached access token, renewed by refresh token when near expiry. */
  session(account, { minLeftMs = 4000 } = {}) {
    const state = { pair: undefined, expMs: 0, inflight: undefined, calls: 0 };
    const api = this;
    const getToken = async () => {
      state.calls += 1;
      if (state.pair && state.expMs - Date.now() > minLeftMs) return state.pair.access_token;
      state.inflight ??= (async () => {
        state.pair = state.pair
          ? await api.call("POST", "/auth/refresh", { json: { refresh_token: state.pair.refresh_token } })
          : await api.login(account);
        state.expMs = Date.now() + state.pair.expires_in * 1000;
        return state.pair.access_token;
      })().finally(() => (state.inflight = undefined));
      return state.inflight;
    };
    getToken.state = state;
    return getToken;
  }

  async ride(token) {
    const departure = new Date(Date.now() + 3 * 24 * 3600 * 1000).toISOString();
    return this.call("POST", "/rides", {
      token,
      json: { origin: "Innopolis", destination: "Kazan", departure_at: departure, seats_total: 3, price: 300 },
    });
  }

  async message(token, rideId, body, clientId) {
    return this.call("POST", `/rides/${rideId}/messages`, { token, json: clientId ? { body, client_id: clientId } : { body } });
  }
}

/** Wait for a condition with a generous deadline (never assert on durations). */
export async function waitFor(check, { timeoutMs = 60000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
