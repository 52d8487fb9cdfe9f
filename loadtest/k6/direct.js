/**
 * Direct messages: PAIRS pairs of users (one VU per pair) send `direct` frames
 * to each other, RATE per second per user for DURATION_SECS, with the send
 * time in `data.t`. Each user must receive every direct its partner sent,
 * exactly once (in any order), with `from` set to the partner.
 * `direct_latency` is receive time minus `data.t`.
 */
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setInterval, clearInterval } from 'k6/timers';
import { Client, commonThresholds, COMMON, protocolViolations, runId, settings, settle, sleepMs, warn } from './lib.js';

const S = settings({
    smoke: { PAIRS: 3, RATE: 5, DURATION_SECS: 5, DRAIN_SECS: 2, P95_MS: 500, MIN_DELIVERY: 1 },
    load: { PAIRS: 100, RATE: 10, DURATION_SECS: 60, DRAIN_SECS: 3, P95_MS: 100, MIN_DELIVERY: 1 },
});

const latency = new Trend('direct_latency', true);
const received = new Counter('directs_received');
const delivered = new Rate('direct_delivered');

export const options = {
    scenarios: {
        direct: {
            executor: 'per-vu-iterations',
            vus: S.PAIRS,
            iterations: 1,
            maxDuration: `${S.DURATION_SECS + S.DRAIN_SECS + Math.ceil((COMMON.TIMEOUT_MS * 2) / 1000) + 30}s`,
        },
    },
    thresholds: {
        ...commonThresholds(),
        direct_delivered: [`rate>=${S.MIN_DELIVERY}`],
        direct_latency: [`p(95)<${S.P95_MS}`],
    },
};

export function setup() {
    return { run: runId() };
}

export default async function (data) {
    const vu = exec.vu.idInTest;
    const pair = await settle([
        Client.connect(`direct-${data.run}-${vu}-a`),
        Client.connect(`direct-${data.run}-${vu}-b`),
    ]);
    if (!pair[0] || !pair[1]) {
        // Nothing can be delivered to a side that never connected.
        delivered.add(false);
        await settle(pair.filter((c) => c).map((c) => c.close()));
        return;
    }

    const sent = [0, 0];
    const got = [0, 0];
    // Herald does not promise an order for directs, only that each arrives once.
    const seen = [new Set(), new Set()];
    pair.forEach((me, i) => {
        const partner = pair[1 - i];
        me.onFrame = (f) => {
            if (f.type !== 'direct') return false;
            const now = Date.now();
            received.add(1);
            if (f.from !== partner.user || !f.data || seen[i].has(f.data.n)) {
                protocolViolations.add(1);
                warn(`${me.user}: unexpected or repeated direct ${JSON.stringify(f)}`);
                return true;
            }
            seen[i].add(f.data.n);
            got[i] += 1;
            latency.add(now - f.data.t);
            return true;
        };
    });

    const stopAt = Date.now() + S.DURATION_SECS * 1000;
    const timers = pair.map((me, i) =>
        setInterval(() => {
            if (Date.now() >= stopAt) return;
            if (me.send({ type: 'direct', to: pair[1 - i].user, data: { t: Date.now(), n: sent[i] } })) sent[i] += 1;
        }, 1000 / S.RATE),
    );
    await sleepMs(Math.max(0, stopAt - Date.now()));
    timers.forEach((t) => clearInterval(t));

    // got[i] counts what user i received, which is what its partner sent.
    const owed = (i) => sent[1 - i];
    const drainUntil = Date.now() + S.DRAIN_SECS * 1000;
    while (Date.now() < drainUntil && !(got[0] >= owed(0) && got[1] >= owed(1))) await sleepMs(50);

    for (let i = 0; i < 2; i++) {
        const ok = Math.min(got[i], owed(i));
        for (let k = 0; k < ok; k++) delivered.add(true);
        for (let k = ok; k < owed(i); k++) delivered.add(false);
        if (got[i] !== owed(i)) warn(`${pair[i].user}: received ${got[i]} directs, partner sent ${owed(i)}`);
    }
    if (sent[0] + sent[1] === 0) delivered.add(false);
    await settle(pair.map((c) => c.close()));
}
