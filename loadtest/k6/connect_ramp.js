/**
 * Connection ramp: VUs ramp up until CONNECTIONS connections are open, every
 * connection must get `welcome` as its first frame, then all of them are held
 * open (each sending an application `ping` now and then, which must be answered
 * with `pong`) until the hold ends. Fails when connects fail, welcomes are
 * missing, pongs do not come back or Herald closes a held connection.
 */
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';
import { Client, commonThresholds, COMMON, runId, settings, settle, sleepMs, warn } from './lib.js';

const S = settings({
    smoke: { CONNECTIONS: 40, CONNS_PER_VU: 4, RAMP_SECS: 4, HOLD_SECS: 5, PING_SECS: 2 },
    load: { CONNECTIONS: 10000, CONNS_PER_VU: 50, RAMP_SECS: 60, HOLD_SECS: 60, PING_SECS: 20 },
});
const VUS = Math.ceil(S.CONNECTIONS / S.CONNS_PER_VU);

const opened = new Counter('connections_opened');
const pongOk = new Rate('pong_ok');
const heldOk = new Rate('held_ok');

export const options = {
    scenarios: {
        ramp: {
            executor: 'ramping-vus',
            startVUs: 0,
            stages: [
                { duration: `${S.RAMP_SECS}s`, target: VUS },
                { duration: `${S.HOLD_SECS}s`, target: VUS },
            ],
            gracefulRampDown: `${Math.ceil(COMMON.TIMEOUT_MS / 1000) + 5}s`,
            gracefulStop: `${Math.ceil(COMMON.TIMEOUT_MS / 1000) + 5}s`,
        },
    },
    thresholds: {
        ...commonThresholds(),
        welcome_received: [`rate>=${COMMON.MIN_SUCCESS}`],
        pong_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
        held_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
    },
};

export function setup() {
    return { run: runId(), end: Date.now() + (S.RAMP_SECS + S.HOLD_SECS) * 1000 };
}

/** Keeps one connection open until `end`, pinging it every PING_SECS. */
async function hold(user, end) {
    let client;
    try {
        client = await Client.connect(user);
    } catch (e) {
        return;
    }
    opened.add(1);
    let ok = true;
    while (ok && Date.now() < end) {
        await sleepMs(Math.min(S.PING_SECS * 1000, Math.max(0, end - Date.now())));
        if (Date.now() >= end) break;
        try {
            await client.request({ type: 'ping' }, 'pong', 'pong');
            pongOk.add(true);
        } catch (e) {
            pongOk.add(false);
            warn(`${user}: ${e.message}`);
            ok = false;
        }
    }
    heldOk.add(ok && !client.closed);
    await client.close();
}

export default async function (data) {
    if (Date.now() >= data.end) {
        // The ramp-down may start a last iteration; it has nothing left to hold.
        await sleepMs(500);
        return;
    }
    const vu = exec.vu.idInTest;
    const users = [];
    for (let i = 0; i < S.CONNS_PER_VU; i++) users.push(`ramp-${data.run}-${vu}-${exec.vu.iterationInScenario}-${i}`);
    await settle(users.map((user) => hold(user, data.end)));
    // A failed connection is not retried: the run reports it and the VU waits out the hold.
    await sleepMs(Math.max(0, data.end - Date.now()));
}
