/**
 * Chat rooms: ROOMS rooms of MEMBERS connections each (one VU per room, so the
 * VU knows everything its room should deliver). The first PUBLISHERS members
 * of a room each publish RATE messages per second for DURATION_SECS, with the
 * send time in `data.t`. Every member, publishers included (Herald echoes),
 * must receive every message of its room exactly once and in `seq` order.
 * `delivery_latency` is receive time minus `data.t`.
 */
import exec from 'k6/execution';
import { Rate, Trend } from 'k6/metrics';
import { setInterval, clearInterval } from 'k6/timers';
import { commonThresholds, COMMON, connectAndJoin, protocolViolations, runId, settings, settle, sleepMs, warn } from './lib.js';

const S = settings({
    smoke: {
        ROOMS: 2,
        MEMBERS: 5,
        PUBLISHERS: 2,
        RATE: 5,
        DURATION_SECS: 5,
        DRAIN_SECS: 2,
        PAYLOAD_BYTES: 100,
        P95_MS: 500,
        MIN_DELIVERY: 1,
    },
    load: {
        ROOMS: 20,
        MEMBERS: 20,
        PUBLISHERS: 2,
        RATE: 5,
        DURATION_SECS: 60,
        DRAIN_SECS: 3,
        PAYLOAD_BYTES: 100,
        P95_MS: 100,
        MIN_DELIVERY: 1,
    },
});

const latency = new Trend('delivery_latency', true);
const delivered = new Rate('delivered');
const joinOk = new Rate('join_ok');

export const options = {
    scenarios: {
        chat: {
            executor: 'per-vu-iterations',
            vus: S.ROOMS,
            iterations: 1,
            maxDuration: `${S.DURATION_SECS + S.DRAIN_SECS + Math.ceil((COMMON.TIMEOUT_MS * 3) / 1000) + 30}s`,
        },
    },
    thresholds: {
        ...commonThresholds(),
        join_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
        delivered: [`rate>=${S.MIN_DELIVERY}`],
        delivery_latency: [`p(95)<${S.P95_MS}`],
    },
};

export function setup() {
    return { run: runId() };
}

/** Connects and joins one member; null when it could not (already recorded). */
async function member(user, room) {
    const client = await connectAndJoin(user, room, joinOk);
    if (!client) return null;
    // received[p]: how many messages of publisher p arrived.
    client.received = new Array(S.PUBLISHERS).fill(0);
    client.lastSeq = 0;
    client.onFrame = (f) => {
        if (f.type !== 'message' || f.room !== room) return false;
        const now = Date.now();
        const data = f.data || {};
        if (!(f.seq > client.lastSeq) || !(data.p >= 0 && data.p < S.PUBLISHERS)) {
            protocolViolations.add(1);
            warn(`${user}: message out of order or foreign: seq ${f.seq} after ${client.lastSeq}`);
        } else {
            client.received[data.p] += 1;
        }
        client.lastSeq = f.seq;
        latency.add(now - data.t);
        return true;
    };
    return client;
}

export default async function (data) {
    const vu = exec.vu.idInTest;
    const room = `chat-${data.run}-${vu}`;
    const slots = [];
    for (let i = 0; i < S.MEMBERS; i++) slots.push(member(`chat-${data.run}-${vu}-${i}`, room));
    const members = await settle(slots);
    const pad = 'x'.repeat(Math.max(0, S.PAYLOAD_BYTES - 40));

    // sent[p]: how many messages publisher p put on the wire.
    const sent = new Array(S.PUBLISHERS).fill(0);
    const timers = [];
    const stopAt = Date.now() + S.DURATION_SECS * 1000;
    for (let p = 0; p < S.PUBLISHERS; p++) {
        const publisher = members[p];
        if (!publisher) continue;
        const timer = setInterval(() => {
            if (Date.now() >= stopAt) return;
            if (publisher.send({ type: 'publish', room, data: { t: Date.now(), p, n: sent[p], pad } })) sent[p] += 1;
        }, 1000 / S.RATE);
        timers.push(timer);
    }
    await sleepMs(Math.max(0, stopAt - Date.now()));
    timers.forEach((t) => clearInterval(t));

    const total = sent.reduce((a, b) => a + b, 0);
    const drainUntil = Date.now() + S.DRAIN_SECS * 1000;
    const complete = (c) => !c || c.closed || c.received.every((got, p) => got >= sent[p]);
    while (Date.now() < drainUntil && !members.every(complete)) await sleepMs(50);

    // Every slot owes every message: a member that never joined misses them all.
    for (const c of members) {
        for (let p = 0; p < S.PUBLISHERS; p++) {
            const got = c ? Math.min(c.received[p], sent[p]) : 0;
            if (c && c.received[p] > sent[p]) {
                protocolViolations.add(c.received[p] - sent[p]);
                warn(`${c.name}: ${c.received[p]} messages of publisher ${p}, only ${sent[p]} sent`);
            }
            for (let i = 0; i < got; i++) delivered.add(true);
            for (let i = got; i < sent[p]; i++) delivered.add(false);
            if (got < sent[p])
                warn(`${c ? c.name : 'a member'} missed ${sent[p] - got} of ${sent[p]} messages of publisher ${p}`);
        }
    }
    if (total === 0) delivered.add(false);
    await settle(members.filter((c) => c).map((c) => c.close()));
}
