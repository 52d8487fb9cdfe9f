/**
 * Shared parts of Herald's k6 scripts: settings read from the environment with
 * a small `PROFILE=smoke` set of defaults, HS256 tokens minted in the script
 * from `HERALD_SECRET`, and a promise-based client that checks Herald's wire
 * protocol as frames arrive (welcome first, every `error` frame counted, every
 * close the script did not ask for counted).
 *
 * k6 1.1 ships the event-loop WebSocket API as `k6/experimental/websockets`;
 * it lets one VU hold many connections, which the scripts rely on to know
 * exactly what every member of a room should receive.
 */
import { WebSocket } from 'k6/experimental/websockets';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { Counter, Rate } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';

/** Where Herald's WebSocket endpoint is. */
export const URL = __ENV.HERALD_URL || 'ws://127.0.0.1:8080/ws';
/** The server's `auth.jwt_secret`; empty means connections stay anonymous. */
export const SECRET = __ENV.HERALD_SECRET || '';
/** `smoke` (each script done in about 20 s) or `load`. */
export const PROFILE = (__ENV.PROFILE || 'load').toLowerCase();

/** Upgrade plus `welcome` within the timeout. */
export const connectOk = new Rate('connect_ok');
/** The first frame of a connection was `welcome`. */
export const welcomeReceived = new Rate('welcome_received');
/** Share of received frames that were `error` frames. */
export const errorFrames = new Rate('error_frames');
/** Connections the server closed (or lost) while the script still used them. */
export const closedEarly = new Counter('closed_early');
/** Frames that break the protocol: not JSON, out-of-order `seq`, duplicates, stray events. */
export const protocolViolations = new Counter('protocol_violations');
/**
 * Connections whose `welcome` k6 itself dropped (see `Client.probe`): the
 * server's answer to a ping sent on open came with no `welcome` before it.
 */
export const welcomeDropped = new Rate('k6_dropped_welcome');

/** The id of the ping every connection sends as it opens (see `Client.probe`). */
const PROBE_ID = 'k6-open-probe';

/**
 * Reads a script's knobs. `defaults` maps each profile name to an object of
 * UPPER_CASE knobs; an environment variable of the same name overrides the
 * default (numbers are parsed, so a typo fails the run instead of being ignored).
 */
export function settings(defaults) {
    const base = defaults[PROFILE];
    if (!base) {
        throw new Error(`PROFILE must be one of ${Object.keys(defaults).join(', ')}, not ${PROFILE}`);
    }
    const out = {};
    for (const key of Object.keys(base)) {
        const raw = __ENV[key];
        if (raw === undefined || raw === '') {
            out[key] = base[key];
        } else if (typeof base[key] === 'number') {
            const n = Number(raw);
            if (!Number.isFinite(n)) throw new Error(`${key} must be a number, not ${raw}`);
            out[key] = n;
        } else {
            out[key] = raw;
        }
    }
    return out;
}

/** Knobs every script shares. */
export const COMMON = settings({
    smoke: { TIMEOUT_MS: 5000, MIN_SUCCESS: 0.99, MAX_ERROR_RATE: 0 },
    load: { TIMEOUT_MS: 20000, MIN_SUCCESS: 0.99, MAX_ERROR_RATE: 0 },
});

/** Thresholds every script carries: Herald must answer properly and never cut a connection. */
export function commonThresholds() {
    return {
        connect_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
        error_frames: [`rate<=${COMMON.MAX_ERROR_RATE}`],
        closed_early: ['count==0'],
        protocol_violations: ['count==0'],
        // A rare drop is k6's; a server that sent no `welcome` would drop them all.
        k6_dropped_welcome: ['rate<=0.05'],
    };
}

function b64url(text) {
    return encoding.b64encode(text, 'rawurl');
}

/** An HS256 JWT for user `sub`, valid for an hour, signed with `HERALD_SECRET`. */
export function token(sub) {
    const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
    const claims = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
    const signature = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'binary');
    return `${header}.${claims}.${encoding.b64encode(signature, 'rawurl')}`;
}

/** The endpoint URL for `user`, with `?token=` when a secret is configured. */
export function urlFor(user) {
    if (!SECRET) return URL;
    return `${URL}${URL.includes('?') ? '&' : '?'}token=${token(user)}`;
}

/** A short random id, so that rooms and users of one run never meet those of another. */
export function runId() {
    return Math.random().toString(36).slice(2, 10);
}

/** Resolves after `ms` milliseconds. */
export function sleepMs(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for every promise; failures come back as `null` instead of rejecting. */
export function settle(promises) {
    return Promise.all(
        promises.map((p) =>
            p.then(
                (v) => v,
                () => null,
            ),
        ),
    );
}

let warnings = 0;
/** Logs a few failures per VU, so a broken run explains itself without flooding the output. */
export function warn(message) {
    if (warnings < 5) console.warn(message);
    warnings += 1;
}

/**
 * Connects `user` and joins `room`, recording the outcome in `joinOk` (a
 * Rate); the client, or null when either step failed.
 */
export async function connectAndJoin(user, room, joinOk) {
    let client;
    try {
        client = await Client.connect(user);
    } catch (e) {
        joinOk.add(false);
        return null;
    }
    try {
        await client.join(room);
        joinOk.add(true);
        return client;
    } catch (e) {
        joinOk.add(false);
        warn(`${user}: ${e.message}`);
        await client.close();
        return null;
    }
}

/**
 * One WebSocket connection to Herald. Frames go first to `onFrame` (when it
 * returns true the frame is consumed), then to the oldest matching `expect`,
 * and otherwise wait in a backlog that later `expect` calls search first.
 */
export class Client {
    constructor(user) {
        this.name = user;
        this.user = null;
        this.conn = null;
        this.onFrame = null;
        this.waiters = [];
        this.backlog = [];
        this.closing = false;
        this.closed = false;
        this.welcomed = false;
        this.ws = new WebSocket(urlFor(user));
        this.welcome = new Promise((resolve, reject) => {
            this.welcomeDone = { resolve, reject };
        });
        this.gone = new Promise((resolve) => {
            this.goneDone = resolve;
        });
        this.welcomeTimer = setTimeout(() => this.failWelcome('no welcome in time'), COMMON.TIMEOUT_MS);
        this.ws.onopen = () => this.probe();
        this.ws.onmessage = (event) => this.receive(event.data);
        this.ws.onclose = (event) => this.lost(`closed ${event && event.code ? event.code : ''}`.trim());
        this.ws.onerror = (event) => this.lost(`socket error ${event && event.error ? event.error : ''}`.trim());
    }

    /** Opens a connection for `user` and waits for its `welcome`; records `connect_ok`. */
    static async connect(user) {
        const client = new Client(user);
        try {
            await client.welcome;
            connectOk.add(true);
            return client;
        } catch (e) {
            connectOk.add(false);
            warn(`connect ${user}: ${e.message}`);
            client.close();
            throw e;
        }
    }

    /**
     * Sends a ping as the connection opens. k6 1.1 (xk6-websockets) starts
     * reading a new connection before it queues the `open` event, and drops
     * any message it read in between, because the socket is not yet open
     * then. Herald writes `welcome` right behind its 101, so under load k6
     * now and then drops it, and the script would wait for a frame that was
     * sent, and acknowledged by the client's TCP stack, seconds earlier.
     * Herald answers this ping after `welcome`, so a `pong` with no `welcome`
     * before it means k6 dropped it: the connection goes on as the token's
     * user, and `k6_dropped_welcome` counts it.
     */
    probe() {
        try {
            this.ws.send(JSON.stringify({ type: 'ping', id: PROBE_ID }));
        } catch (e) {
            this.lost(`send failed: ${e.message}`);
        }
    }

    failWelcome(reason) {
        if (this.welcomed) return;
        this.welcomed = true;
        this.welcomeDone.reject(new Error(reason));
    }

    receive(text) {
        let frame;
        try {
            frame = JSON.parse(text);
        } catch (e) {
            protocolViolations.add(1);
            warn(`not JSON: ${String(text).slice(0, 200)}`);
            return;
        }
        if (frame.type === 'pong' && frame.id === PROBE_ID) {
            if (!this.welcomed) {
                this.welcomed = true;
                clearTimeout(this.welcomeTimer);
                welcomeDropped.add(true);
                warn(`connect ${this.name}: k6 dropped the welcome (pong before it)`);
                // With a secret the user is the token's subject; without one, anonymous.
                this.user = SECRET ? this.name : null;
                this.welcomeDone.resolve({ type: 'welcome', user: this.user, conn: null });
            }
            return;
        }
        errorFrames.add(frame.type === 'error');
        if (frame.type === 'error') warn(`error frame: ${text.slice(0, 200)}`);
        if (!this.welcomed) {
            this.welcomed = true;
            clearTimeout(this.welcomeTimer);
            welcomeReceived.add(frame.type === 'welcome');
            welcomeDropped.add(false);
            if (frame.type === 'welcome') {
                this.user = frame.user;
                this.conn = frame.conn;
                this.welcomeDone.resolve(frame);
            } else {
                this.welcomeDone.reject(new Error(`first frame was ${text.slice(0, 200)}`));
            }
            return;
        }
        if (this.onFrame && this.onFrame(frame)) return;
        const i = this.waiters.findIndex((w) => w.match(frame));
        if (i >= 0) {
            const [waiter] = this.waiters.splice(i, 1);
            clearTimeout(waiter.timer);
            waiter.resolve(frame);
            return;
        }
        this.backlog.push(frame);
        if (this.backlog.length > 10000) this.backlog.shift();
    }

    lost(reason) {
        if (this.closed) return;
        this.closed = true;
        clearTimeout(this.welcomeTimer);
        if (!this.closing) {
            closedEarly.add(1);
            warn(`connection ${this.name}: ${reason}`);
        }
        this.failWelcome(reason);
        for (const waiter of this.waiters.splice(0)) {
            clearTimeout(waiter.timer);
            waiter.reject(new Error(`${reason} while waiting for ${waiter.what}`));
        }
        this.goneDone();
    }

    /** Sends one frame; false when the connection is already gone. */
    send(frame) {
        if (this.closed || this.closing) return false;
        try {
            this.ws.send(JSON.stringify(frame));
            return true;
        } catch (e) {
            this.lost(`send failed: ${e.message}`);
            return false;
        }
    }

    /**
     * The next frame matching `match` (a frame type or a predicate), taken from
     * the backlog or waited for up to the timeout.
     */
    expect(match, what, timeoutMs = COMMON.TIMEOUT_MS) {
        const test = typeof match === 'string' ? (f) => f.type === match : match;
        const label = what || (typeof match === 'string' ? match : 'a frame');
        const i = this.backlog.findIndex(test);
        if (i >= 0) return Promise.resolve(this.backlog.splice(i, 1)[0]);
        if (this.closed) return Promise.reject(new Error(`connection gone before ${label}`));
        return new Promise((resolve, reject) => {
            const waiter = { match: test, what: label, resolve, reject };
            waiter.timer = setTimeout(() => {
                const at = this.waiters.indexOf(waiter);
                if (at >= 0) this.waiters.splice(at, 1);
                reject(new Error(`no ${label} within ${timeoutMs} ms`));
            }, timeoutMs);
            this.waiters.push(waiter);
        });
    }

    /** Sends `frame` and waits for the reply matching `match`; an `error` reply for it fails fast. */
    request(frame, match, what) {
        // Checked first: a reply promise made for a frame that cannot be sent would reject unobserved,
        // and k6 ends the whole iteration on an unhandled rejection.
        if (this.closed || this.closing) return Promise.reject(new Error(`connection gone before ${what}`));
        const test = typeof match === 'string' ? (f) => f.type === match : match;
        const reply = this.expect(
            (f) => test(f) || (f.type === 'error' && frame.id !== undefined && f.id === frame.id),
            what,
        ).then((f) => {
            if (f.type === 'error' && !test(f)) throw new Error(`${what}: ${f.code} ${f.message}`);
            return f;
        });
        this.send(frame);
        return reply;
    }

    /** Joins `room` and returns the `joined` frame. */
    join(room) {
        return this.request(
            { type: 'join', room, id: `j-${room}` },
            (f) => f.type === 'joined' && f.room === room,
            `joined ${room}`,
        );
    }

    /** Closes the connection on purpose; resolves once it is gone. */
    close() {
        this.closing = true;
        if (!this.closed) {
            try {
                this.ws.close();
            } catch (e) {
                this.lost('close failed');
            }
        }
        return this.gone;
    }
}

/** Whether `users` holds exactly the ids in `expected`, each once. */
export function sameUsers(users, expected) {
    if (!Array.isArray(users) || users.length !== expected.length) return false;
    const want = new Set(expected);
    return new Set(users).size === users.length && users.every((u) => want.has(u));
}
