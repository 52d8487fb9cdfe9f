// A real Herald for integration tests: the binary started on a free port
// with a config written to a temporary directory, stopped (killed if need
// be) when the test file ends, even when a test failed.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";

const here = dirname(fileURLToPath(import.meta.url));
/** clients/js, whatever the directory the tests were started from. */
export const PACKAGE_DIR = resolve(here, "../..");
export const HERALD_BIN = process.env.HERALD_BIN ? resolve(process.env.HERALD_BIN) : resolve(PACKAGE_DIR, "../../target/debug/herald");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` (sync or async) is true, for at most `ms`. */
export async function eventually(cond, ms = 5000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A port nobody listens on right now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/**
 * An HS256 JWT, signed with node:crypto. `exp` in seconds since the epoch,
 * or `expIn` seconds from now (negative: already expired).
 */
export function mintToken(secret, sub, { expIn = 600, exp, claims = {} } = {}) {
  const payload = { sub, exp: exp ?? nowSeconds() + expIn, jti: randomBytes(6).toString("hex"), ...claims };
  const unsigned = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  const signature = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * Waits until a token with this `exp` is refused. Herald compares `exp`
 * with the current time in whole seconds (`exp < now`), so a token is still
 * accepted during the second its `exp` names: wait for the next one.
 */
export async function pastExp(exp) {
  while (nowSeconds() <= exp) await sleep(20);
}

/**
 * A Herald for the test file that calls this: started before its tests and
 * stopped after them, once every client put in `clients` is closed.
 */
export function heraldForFile(options) {
  const herald = new Herald(options);
  const clients = [];
  before(() => herald.start());
  after(async () => {
    for (const c of clients) c.close();
    await herald.dispose();
  });
  return { herald, clients };
}

export class Herald {
  /**
   * @param {object} [options]
   * @param {string} [options.extraToml] appended to the config file (new tables only)
   * @param {Record<string, string>} [options.env] HERALD_* overrides of keys the file already sets
   */
  constructor({ extraToml = "", env = {} } = {}) {
    this.env = env;
    this.secret = randomBytes(16).toString("hex");
    this.apiKey = randomBytes(16).toString("hex");
    this.extraToml = extraToml;
    this.dir = mkdtempSync(join(tmpdir(), "herald-js-"));
    this.proc = null;
    this.output = "";
    // The server must not outlive the tests: on exit, and on the signals
    // that end a test run (the runner's own timeout, Ctrl-C), kill it.
    this._onExit = () => this.proc?.kill("SIGKILL");
    this._onSignal = (signal) => {
      this._onExit();
      process.exit(128 + (signal === "SIGINT" ? 2 : 15));
    };
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the server (on the same port when started again) and waits for /healthz. */
  async start() {
    if (!existsSync(HERALD_BIN)) {
      throw new Error(`no Herald binary at ${HERALD_BIN}: build it first (cargo build, at the repository root) or set HERALD_BIN`);
    }
    this.port ??= await freePort();
    const config = join(this.dir, "config.toml");
    writeFileSync(
      config,
      `[server]
port = ${this.port}
node_id = "js-test"
shutdown_timeout_ms = 2000

[auth]
required = true
jwt_secret = "${this.secret}"
timeout_ms = 1000

[api]
key = "${this.apiKey}"

[heartbeat]
interval_ms = 1000
timeout_ms = 5000

[limits]
rate_per_sec = 1000
rate_burst = 1000

[debug]
fault_injection = true

[log]
level = "warn"
${this.extraToml}
`,
    );
    this.proc = spawn(HERALD_BIN, ["--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...this.env },
    });
    const proc = this.proc;
    proc.stdout.on("data", (d) => (this.output += d));
    proc.stderr.on("data", (d) => (this.output += d));
    process.once("exit", this._onExit);
    process.once("SIGINT", this._onSignal);
    process.once("SIGTERM", this._onSignal);
    let exited = false;
    proc.once("exit", () => (exited = true));
    await eventually(
      async () => {
        if (exited) throw new Error(`herald exited at start-up:\n${this.output}`);
        try {
          return (await fetch(`${this.httpUrl}/healthz`)).status === 200;
        } catch {
          return false;
        }
      },
      10000,
      "GET /healthz 200",
    );
  }

  /** Stops the server: SIGTERM (a graceful drain, clients get 1001), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000) {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    process.removeListener("exit", this._onExit);
    process.removeListener("SIGINT", this._onSignal);
    process.removeListener("SIGTERM", this._onSignal);
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the server and removes its directory. */
  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  token(sub, options) {
    return mintToken(this.secret, sub, options);
  }

  /** A call to the server API; resolves with the parsed JSON body, throws on a non-2xx answer. */
  async api(method, path, body) {
    const response = await fetch(`${this.httpUrl}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  publish(room, data) {
    return this.api("POST", "/api/publish", { room, data });
  }

  /** Makes one connection's actor panic: the server closes it with 1011. */
  crashConnection(conn) {
    return this.api("POST", "/api/debug/crash", { target: "connection", conn });
  }

  presence(room) {
    return this.api("GET", `/api/rooms/${encodeURIComponent(room)}/presence`);
  }
}

/**
 * A `ws` WebSocket class that records every socket made through it, so a
 * test can count connection attempts and see the URL (and token) of each.
 */
export async function recordingWebSocket() {
  const { default: WebSocket } = await import("ws");
  class Recording extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      Recording.sockets.push(this);
      Recording.urls.push(String(url));
    }
  }
  Recording.sockets = [];
  Recording.urls = [];
  return Recording;
}
