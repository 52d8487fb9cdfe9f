/**
 * Presence: each VU iteration fills a fresh room with MEMBERS users one by one,
 * then runs CYCLES leave/rejoin cycles, rotating who leaves. Each step checks
 * what Herald promises: `joined.users` is exactly the users in the room,
 * self included; a `presence` query returns exactly the expected users; every
 * other member sees one `user_joined` / `user_left` per change and no more.
 * Every check adds to the Rate `presence_ok`.
 */
import exec from 'k6/execution';
import { Rate } from 'k6/metrics';
import {
    Client,
    commonThresholds,
    COMMON,
    protocolViolations,
    runId,
    sameUsers,
    settings,
    settle,
    sleepMs,
    warn,
} from './lib.js';

const S = settings({
    smoke: { VUS: 2, DURATION_SECS: 8, MEMBERS: 4, CYCLES: 4, PAUSE_MS: 100 },
    load: { VUS: 50, DURATION_SECS: 60, MEMBERS: 10, CYCLES: 20, PAUSE_MS: 50 },
});

const presenceOk = new Rate('presence_ok');

export const options = {
    scenarios: {
        presence: {
            executor: 'constant-vus',
            vus: S.VUS,
            duration: `${S.DURATION_SECS}s`,
            gracefulStop: `${Math.ceil((COMMON.TIMEOUT_MS * 4) / 1000) + 10}s`,
        },
    },
    thresholds: {
        ...commonThresholds(),
        presence_ok: [`rate>=${COMMON.MIN_SUCCESS}`],
    },
};

export function setup() {
    return { run: runId() };
}

/** Records one check; a failed one is logged with `what`. */
function check(ok, what) {
    presenceOk.add(ok);
    if (!ok) warn(`presence check failed: ${what}`);
    return ok;
}

/** Resolves to whether `promise` yields a frame accepted by `test`. */
async function verify(promise, test, what) {
    try {
        const frame = await promise;
        return check(test(frame), `${what}: got ${JSON.stringify(frame)}`);
    } catch (e) {
        return check(false, `${what}: ${e.message}`);
    }
}

/** Waits on each observer for one `kind` event about `user` in `room`. */
function events(observers, kind, room, user) {
    return observers.map((o) =>
        verify(
            o.expect((f) => f.type === kind && f.room === room && f.user === user, `${kind} ${user}`),
            () => true,
            `${o.user} sees ${kind} ${user}`,
        ),
    );
}

/** Joins `client` to `room` while `others` are in it, checking the reply and the others' events. */
async function joinStep(client, room, others) {
    const seen = events(others, 'user_joined', room, client.user);
    const expected = others.map((o) => o.user).concat([client.user]);
    await verify(
        client.join(room),
        (f) => sameUsers(f.users, expected),
        `${client.user} joined with users ${expected}`,
    );
    await Promise.all(seen);
}

/** Asks `asker` for the presence of `room` and checks it equals `inRoom`. */
function presenceStep(asker, room, inRoom, tag) {
    const expected = inRoom.map((c) => c.user);
    return verify(
        asker.request(
            { type: 'presence', room, id: tag },
            (f) => f.type === 'presence' && f.room === room,
            `presence ${room}`,
        ),
        (f) => sameUsers(f.users, expected),
        `presence of ${room} is ${expected}`,
    );
}

export default async function (data) {
    const vu = exec.vu.idInTest;
    const iter = exec.vu.iterationInScenario;
    const room = `presence-${data.run}-${vu}-${iter}`;
    const slots = [];
    for (let i = 0; i < S.MEMBERS; i++) slots.push(Client.connect(`pres-${data.run}-${vu}-${iter}-${i}`));
    const clients = await settle(slots);
    if (clients.some((c) => !c)) {
        check(false, 'every member connects');
        await settle(clients.filter((c) => c).map((c) => c.close()));
        await sleepMs(1000);
        return;
    }

    for (let i = 0; i < clients.length; i++) await joinStep(clients[i], room, clients.slice(0, i));
    await presenceStep(clients[clients.length - 1], room, clients, 'p-full');

    for (let cycle = 0; cycle < S.CYCLES; cycle++) {
        await sleepMs(S.PAUSE_MS);
        const leaver = clients[cycle % clients.length];
        const others = clients.filter((c) => c !== leaver);
        const gone = events(others, 'user_left', room, leaver.user);
        await verify(
            leaver.request(
                { type: 'leave', room, id: `l-${cycle}` },
                (f) => f.type === 'left' && f.room === room,
                'left',
            ),
            () => true,
            `${leaver.user} leaves`,
        );
        await Promise.all(gone);
        await presenceStep(others[0], room, others, `p-${cycle}`);
        await joinStep(leaver, room, others);
    }

    // A second user_joined/user_left for one change would still be waiting here.
    await sleepMs(100);
    for (const c of clients) {
        const stray = c.backlog.filter((f) => f.type === 'user_joined' || f.type === 'user_left');
        if (stray.length > 0) {
            protocolViolations.add(stray.length);
            warn(`${c.user} got unexpected events: ${JSON.stringify(stray.slice(0, 3))}`);
        }
    }
    await settle(clients.map((c) => c.close()));
}
