/**
 * Reconnect storm: CLIENTS connections connect and join their VU's room; at
 * one moment shared by every VU they all close and reconnect at once, as
 * clients do after a network blip or a server restart. Each reconnect must get
 * `welcome`, rejoin its room and then receive a message published into the
 * room after everyone is back. `reconnect_ok` counts clients that managed all
 * three; `reconnect_time` is from the drop until the client is back in its room.
 */
import exec from 'k6/execution';
import { Rate, Trend } from 'k6/metrics';
import { commonThresholds, COMMON, connectAndJoin, runId, settings, settle, sleepMs, warn } from './lib.js';

const S = settings({
    smoke: { CLIENTS: 40, CLIENTS_PER_VU: 10, SETTLE_SECS: 3, HOLD_SECS: 1 },
    load: { CLIENTS: 2000, CLIENTS_PER_VU: 50, SETTLE_SECS: 20, HOLD_SECS: 5 },
});
const VUS = Math.ceil(S.CLIENTS / S.CLIENTS_PER_VU);

const joinOk = new Rate('join_ok');
const reconnectOk = new Rate('reconnect_ok');
const reconnectTime = new Trend('reconnect_time', true);

export const options = {
    scenarios: {
        storm: {
            executor: 'per-vu-iterations',
            vus: VUS,
            iterations: 1,
            maxDuration: `${S.SETTLE_SECS + S.HOLD_SECS + Math.ceil((COMMON.TIMEOUT_MS * 4) / 1000) + 30}s`,
        },
    },
    thresholds: {
        ...commonThresholds(),
        join_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
        reconnect_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
    },
};

export function setup() {
    return { run: runId(), dropAt: Date.now() + S.SETTLE_SECS * 1000 };
}

/** Connects `user` and joins `room`; null when either step failed (already recorded). */
function joined(user, room) {
    return connectAndJoin(user, room, joinOk);
}

export default async function (data) {
    const vu = exec.vu.idInTest;
    const room = `storm-${data.run}-${vu}`;
    const users = [];
    for (let i = 0; i < S.CLIENTS_PER_VU && (vu - 1) * S.CLIENTS_PER_VU + i < S.CLIENTS; i++) {
        users.push(`storm-${data.run}-${vu}-${i}`);
    }
    const before = await settle(users.map((u) => joined(u, room)));
    if (Date.now() > data.dropAt) warn(`VU ${vu} was still connecting at the drop; raise SETTLE_SECS`);
    await sleepMs(Math.max(0, data.dropAt - Date.now()));

    const droppedAt = Date.now();
    const closing = before.filter((c) => c).map((c) => c.close());
    const after = await settle(
        users.map(async (u) => {
            const c = await joined(u, room);
            if (c) reconnectTime.add(Date.now() - droppedAt);
            return c;
        }),
    );
    await settle(closing);

    const back = after.filter((c) => c);
    if (back.length > 0) {
        const marker = `${room}-back`;
        // Settled at once: k6 ends the iteration on a rejection nobody is listening to yet.
        const arrivals = settle(
            back.map((c) =>
                c.expect(
                    (f) => f.type === 'message' && f.room === room && f.data && f.data.marker === marker,
                    'the message after the storm',
                ),
            ),
        );
        try {
            await back[0].request(
                { type: 'publish', room, id: 'storm', data: { marker, t: Date.now() } },
                (f) => f.type === 'ack' && f.id === 'storm',
                'ack',
            );
        } catch (e) {
            warn(`publish after the storm: ${e.message}`);
        }
        const results = await arrivals;
        back.forEach((c, i) => {
            if (!results[i]) warn(`${c.user} rejoined but did not get the message`);
        });
        after.forEach((c) => reconnectOk.add(Boolean(c) && Boolean(results[back.indexOf(c)])));
    } else {
        after.forEach(() => reconnectOk.add(false));
    }
    await sleepMs(S.HOLD_SECS * 1000);
    await settle(back.map((c) => c.close()));
}
