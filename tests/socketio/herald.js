// The harness of the Socket.IO tests: a real Herald (the binary, started on a
// free port with a config written to a temporary directory, stopped when the
// test file ends), a real redis-server for the cluster tests, HS256 tokens
// minted with node:crypto, and small helpers around the official
// socket.io-client and a native WebSocket client (`ws`).
//
// The approach is the one of clients/js/test/integration/herald.js; nothing
// is imported across packages.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";
import { io } from "socket.io-client";
import WebSocket from "ws";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root, whatever the directory the tests were started from. */
export const ROOT = resolve(here, "../..");
export const HERALD_BIN = process.env.HERALD_BIN ? resolve(process.env.HERALD_BIN) : resolve(ROOT, "target/debug/herald");
export const REDIS_BIN = process.env.REDIS_SERVER ?? "redis-server";

/** How long a test waits for something that should happen. */
export const WAIT = 10_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` (sync or async) is truthy, for at most `ms`; returns its value. */
export async function eventually(cond, ms = WAIT, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await cond();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Rejects after `ms` unless `promise` settles first. */
export function within(promise, ms = WAIT, what = "promise") {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
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
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT for `sub`, valid for 10 minutes unless `claims` says otherwise. */
export function mintToken(secret, sub, claims = {}) {
  const payload = { sub, exp: nowSeconds() + 600, jti: randomBytes(6).toString("hex"), ...claims };
  const unsigned = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  const signature = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/** A unique room name, so tests that share a server never share a room. */
let rooms = 0;
export const uniqueRoom = (what = "room") => `${what}-${process.pid}-${++rooms}-${randomBytes(3).toString("hex")}`;

// Every child process of this test file, killed when the process exits for
// any reason (a failed `before`, the runner's timeout, Ctrl-C).
const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => process.exit(128 + (signal === "SIGINT" ? 2 : 15)));
}

/**
 * Starts `bin` with `args` for `owner` (its output collected in
 * `owner.output`) and waits until `ready()`; fails at once if it exits
 * first. Resolves with the child process.
 */
async function launch(owner, name, bin, args, options, ready, what) {
  owner.output = "";
  const proc = track(spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], ...options }));
  proc.stdout.on("data", (d) => (owner.output += d));
  proc.stderr.on("data", (d) => (owner.output += d));
  let exited = false;
  proc.once("exit", () => (exited = true));
  await eventually(
    async () => {
      if (exited) throw new Error(`${name} exited at start-up:\n${owner.output}`);
      return ready();
    },
    WAIT,
    what,
  );
  return proc;
}

function track(child) {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/**
 * This process's environment without the harness's own HERALD_* variables
 * (HERALD_BIN): Herald reads every HERALD_<SECTION>__<KEY> as a config
 * override and refuses unknown sections, so only those pass.
 */
function inheritedEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_") || k.includes("__")));
}

/** `{a: {b: 1, c: ["x"]}}` as TOML tables (scalars and arrays of scalars only). */
function toToml(config) {
  let out = "";
  for (const [section, keys] of Object.entries(config)) {
    out += `[${section}]\n`;
    for (const [key, value] of Object.entries(keys)) {
      if (value !== undefined) out += `${key} = ${JSON.stringify(value)}\n`;
    }
    out += "\n";
  }
  return out;
}

/** `b` merged into `a`, one level of sections deep. */
function mergeSections(a, b) {
  const out = { ...a };
  for (const [section, keys] of Object.entries(b)) out[section] = { ...(a[section] ?? {}), ...keys };
  return out;
}

export class Herald {
  /**
   * @param {object} [options]
   * @param {object} [options.config] sections merged into the default config, e.g. `{heartbeat: {interval_ms: 300}}`
   * @param {Record<string, string>} [options.env] extra environment (HERALD_<SECTION>__<KEY> overrides)
   * @param {string} [options.secret] the JWT secret (nodes of one cluster share it)
   * @param {string} [options.apiKey] the API key (nodes of one cluster share it)
   * @param {string} [options.nodeId]
   */
  constructor({ config = {}, env = {}, secret, apiKey, nodeId = "sio-test" } = {}) {
    this.secret = secret ?? randomBytes(16).toString("hex");
    this.apiKey = apiKey ?? randomBytes(16).toString("hex");
    this.nodeId = nodeId;
    this.env = env;
    this.config = config;
    this.dir = mkdtempSync(join(tmpdir(), "herald-sio-"));
    this.proc = null;
    this.output = "";
    this.port = undefined;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Starts the server (on the same port when started again) and waits for `GET /healthz` 200. */
  async start() {
    if (!existsSync(HERALD_BIN)) {
      throw new Error(`no Herald binary at ${HERALD_BIN}: build it first (cargo build, at the repository root) or set HERALD_BIN`);
    }
    this.port ??= await freePort();
    const config = mergeSections(
      {
        server: { port: this.port, node_id: this.nodeId, shutdown_timeout_ms: 2000 },
        auth: { required: true, jwt_secret: this.secret, timeout_ms: 2000 },
        api: { key: this.apiKey },
        heartbeat: { interval_ms: 1000, timeout_ms: 5000 },
        limits: { rate_per_sec: 1000, rate_burst: 1000 },
        log: { level: "warn" },
      },
      this.config,
    );
    const file = join(this.dir, "config.toml");
    writeFileSync(file, toToml(config));
    this.proc = await launch(this, "herald", HERALD_BIN, ["--config", file], { env: { ...inheritedEnv(), ...this.env } }, async () => {
      try {
        return (await fetch(`${this.url}/healthz`)).status === 200;
      } catch {
        return false;
      }
    }, "GET /healthz 200");
  }

  /** Stops the server: SIGTERM (SIGKILL with `kill`, or after `graceMs`), and waits for it to exit. */
  async stop({ kill = false, graceMs = 5000 } = {}) {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill(kill ? "SIGKILL" : "SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the server and removes its directory. */
  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  token(sub, claims) {
    return mintToken(this.secret, sub, claims);
  }

  /** A call to the server API; resolves with the parsed JSON body, throws on a non-2xx answer. */
  async api(method, path, body) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** `POST /api/publish`; resolves with the message's `seq`. */
  async publish(room, data) {
    return (await this.api("POST", "/api/publish", { room, data })).seq;
  }

  presence(room) {
    return this.api("GET", `/api/rooms/${encodeURIComponent(room)}/presence`);
  }
}

/** A redis-server on a free port, without persistence. */
export class Redis {
  async start() {
    this.port = await freePort();
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    this.proc = await launch(this, "redis-server", REDIS_BIN, args, {}, () => this.ping(), "redis PONG");
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  ping() {
    return new Promise((done) => {
      const socket = tcpConnect(this.port, "127.0.0.1");
      let reply = "";
      socket.on("connect", () => socket.write("PING\r\n"));
      socket.on("data", (d) => {
        reply += d;
        if (reply.includes("\r\n")) {
          socket.destroy();
          done(reply.startsWith("+PONG"));
        }
      });
      socket.on("error", () => done(false));
    });
  }

  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGKILL");
    await exited;
  }
}

/**
 * A Herald for the test file that calls this: started before its tests and
 * stopped after them, once every client made through the returned helpers
 * is closed.
 */
export function heraldForFile(options) {
  const herald = new Herald(options);
  const clients = new Clients();
  before(() => herald.start());
  after(async () => {
    clients.closeAll();
    await herald.dispose();
  });
  return { herald, clients };
}

/**
 * Every client a test file opens, closed at the end so the process exits.
 * `sio` opens an official Socket.IO client; `native` a `ws` WebSocket.
 */
export class Clients {
  constructor() {
    this.open = new Set();
  }

  /**
   * A socket.io-client socket to `herald`, not yet waited for. Reconnection
   * delays are short so tests that drop a transport do not idle; every
   * socket has its own Manager (`forceNew`).
   */
  sio(herald, opts = {}) {
    const socket = io(herald.url, {
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      randomizationFactor: 0,
      ...opts,
    });
    const inbox = new Inbox();
    socket.onAny((event, ...args) => inbox.push({ event, args }));
    socket.inbox = inbox;
    const close = () => socket.disconnect();
    this.open.add(close);
    return socket;
  }

  /** A connected Socket.IO socket of user `user` (token in `auth`), with its inbox. */
  async sioAs(herald, user, opts = {}) {
    const socket = this.sio(herald, { auth: { token: herald.token(user) }, ...opts });
    await connected(socket);
    return socket;
  }

  /** A native WebSocket client of user `user` (or anonymous when `user` is null), welcomed. */
  async native(herald, user) {
    const url = user === null ? herald.wsUrl : `${herald.wsUrl}?token=${herald.token(user)}`;
    const client = new NativeClient(url);
    this.open.add(() => client.close());
    await client.opened;
    client.welcome = await client.next((f) => f.type === "welcome");
    return client;
  }

  closeAll() {
    for (const close of this.open) close();
    this.open.clear();
  }
}

/** Resolves once `socket` is connected; rejects with the `connect_error` if it is refused. */
export function connected(socket, ms = WAIT) {
  if (socket.connected) return Promise.resolve(socket);
  return within(
    new Promise((resolveConnected, reject) => {
      const onConnect = () => {
        socket.off("connect_error", onError);
        resolveConnected(socket);
      };
      const onError = (err) => {
        socket.off("connect", onConnect);
        reject(err);
      };
      socket.once("connect", onConnect);
      socket.once("connect_error", onError);
    }),
    ms,
    "Socket.IO connect",
  );
}

/**
 * Drops the socket's transport (`socket.io.engine.close()`) and keeps the
 * client from reconnecting until `resume()`, so what a test does in between
 * surely happens while it is disconnected. `resume()` reconnects (with the
 * pid and offset, as the client's own reconnection would) and resolves once
 * connected; `resume(url)` reconnects to another server, as a load
 * balancer might send it to another node.
 */
export async function dropHeld(socket) {
  socket.io.reconnection(false);
  const disconnected = new Promise((r) => socket.once("disconnect", r));
  socket.io.engine.close();
  await disconnected;
  return async (url) => {
    if (url) socket.io.uri = url;
    socket.io.reconnection(true);
    const back = connected(socket);
    socket.connect();
    await back;
  };
}

/** The `connect_error` of a socket that should be refused. */
export function refused(socket, ms = WAIT) {
  return within(
    new Promise((resolveRefused, reject) => {
      socket.once("connect", () => reject(new Error("connected, expected connect_error")));
      socket.once("connect_error", resolveRefused);
    }),
    ms,
    "connect_error",
  );
}

/** Emits `event` with `payload` and resolves with the ack's one argument. */
export function ack(socket, event, payload, ms = WAIT) {
  return socket.timeout(ms).emitWithAck(event, payload);
}

/**
 * Every message a client got, in order, and a way to wait for the next one
 * that matches. Entries are `{event, args}` for Socket.IO and frames for
 * the native client.
 */
export class Inbox {
  constructor() {
    this.items = [];
    this.waiters = new Set();
  }

  push(item) {
    this.items.push(item);
    for (const waiter of this.waiters) waiter();
  }

  /** Resolves with the first entry, from the start, that matches. */
  find(pred, ms = WAIT, what = "a matching message") {
    return this._wait(() => this.items.find(pred), ms, what);
  }

  /** Resolves once `count` entries match; returns them. */
  async findAll(pred, count, ms = WAIT, what = `${count} matching messages`) {
    return this._wait(() => {
      const found = this.items.filter(pred);
      return found.length >= count ? found : undefined;
    }, ms, what);
  }

  /** Entries that match, now. */
  filter(pred) {
    return this.items.filter(pred);
  }

  _wait(check, ms, what) {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise((resolveWait, reject) => {
      const waiter = () => {
        const found = check();
        if (found !== undefined) {
          this.waiters.delete(waiter);
          clearTimeout(timer);
          resolveWait(found);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; got ${JSON.stringify(this.items).slice(0, 2000)}`));
      }, ms);
      this.waiters.add(waiter);
    });
  }
}

/** The first argument of each `event` a Socket.IO socket received, in order. */
export const events = (socket, event, pred = () => true) =>
  socket.inbox.filter((e) => e.event === event && pred(e.args[0])).map((e) => e.args[0]);

/** Waits for `count` `event`s (first argument matching `pred`); returns their first arguments. */
export async function waitEvents(socket, event, count, pred = () => true, ms = WAIT) {
  const found = await socket.inbox.findAll((e) => e.event === event && pred(e.args[0]), count, ms, `${count} "${event}" events`);
  return found.map((e) => e.args[0]);
}

/** Waits for one `event` whose first argument matches `pred`; returns that argument. */
export async function waitEvent(socket, event, pred = () => true, ms = WAIT) {
  return (await waitEvents(socket, event, 1, pred, ms))[0];
}

/** A native Herald WebSocket client: JSON frames in, every frame received kept in `inbox`. */
export class NativeClient {
  constructor(url, options) {
    this.ws = new WebSocket(url, options);
    this.inbox = new Inbox();
    this.closed = new Promise((r) => this.ws.once("close", (code, reason) => r({ code, reason: String(reason) })));
    this.opened = new Promise((resolveOpen, reject) => {
      this.ws.once("open", resolveOpen);
      this.ws.once("error", reject);
    });
    this.ws.on("message", (data, isBinary) => {
      if (!isBinary) this.inbox.push(JSON.parse(String(data)));
    });
    this.ws.on("error", () => {});
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  /** Sends `frame` with a fresh `id` and resolves with the reply that echoes it. */
  request(frame, ms = WAIT) {
    const id = `n${++NativeClient.ids}`;
    this.send({ ...frame, id });
    return this.next((f) => f.id === id, ms);
  }

  next(pred, ms = WAIT) {
    return this.inbox.find(pred, ms);
  }

  frames(type, pred = () => true) {
    return this.inbox.filter((f) => f.type === type && pred(f));
  }

  close() {
    this.ws.terminate();
  }
}
NativeClient.ids = 0;

/** The `seq`s of a list of message frames. */
export const seqs = (frames) => frames.map((f) => f.seq);
