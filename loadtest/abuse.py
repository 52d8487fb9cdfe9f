#!/usr/bin/env python3
"""Two abuse loads against a Herald server, and what they cost it.

usage: loadtest/abuse.py HERALD_BIN [rooms|presence|both] [--connections N]
           [--rooms-per-conn R] [--presence-conns C] [--presence-requests P]
           [--max-rooms K] [--lift-rate-limit] [--timeout SECS]

Each load starts a fresh server (a free port, API key "k"), with the rate
limit at its defaults (10 frames a second, bursts of 20) unless
--lift-rate-limit is given, and prints one JSON line.

rooms (room spam): N anonymous connections (default 1000) each join R rooms
of their own (default 100, so 100,000 rooms of one member). Under the
default limit every connection sends its first 20 joins at once and the
rest at a little under 10 a second, as a client that knows the limit would
(a join answered RATE_LIMITED all the same, when the server read the burst
late, is sent again one token later, at most 5 times); lifted, all of them
at once. Reports the rooms the server holds
(/api/stats), the joins answered `joined`, the refused ones by error code
(with the first message of each code), the connections it closed, the peak
server VmRSS, the bytes the server wrote during the joins (the sum of
herald_transport_sent_bytes_total over its labels; WebSocket framing not
included), and the CPU seconds the server and this script spent on them.

presence (presence amplification): C anonymous connections (default 2000)
all join the room `amp` at once, so every member hears a `user_joined` for
every later one; then ceil(P / 20) of them (at most C; past 20 each, paced
as above) send P `presence` requests for `amp` in all (default 20,000:
1000 connections x 20, each connection's burst). Every reply is read.
Reports, for the join phase and the presence phase apart, the server's
bytes, the frames received by type, the refused requests by code, the CPU
seconds of the server and of this script, and the peak server VmRSS; and
for the presence phase the bytes of the requests and of the replies
(payload, and on the wire with WebSocket framing) and their ratio.

--max-rooms K sets limits.max_rooms (HERALD_LIMITS__MAX_ROOMS) on both
servers; without it the setting is left out, since a server that does not
know the key refuses to start. Joins past limits.max_rooms_per_conn (100 by
default) are refused TOO_MANY_ROOMS as well; the first message of each code
tells the two apart.

Connections come from 127.0.0.2-127.0.0.9 and are driven from one thread
through epoll; every frame the server sends is read. Every phase ends within
--timeout seconds (default 300; a phase cut short says "timed_out": true),
and the server is stopped at the end. Python 3 standard library only.
"""
import argparse
import json
import math
import os
import re
import selectors
import socket
import struct
import sys
import threading
import time
import urllib.request

from herald_proc import Client, api, metric, rss_bytes, start

# The default rate limit (limits.rate_per_sec, limits.rate_burst), which the
# connections keep to unless it is lifted. A little slack on the refill, so
# that no frame arrives before its token.
RATE_PER_SEC = 10
RATE_BURST = 20
RATE_SLACK = 1.05
RETRIES = 5  # times a RATE_LIMITED request is sent again
SENT_BYTES = "herald_transport_sent_bytes_total"
TYPE_AT = re.compile(rb'\{"type":"([a-z_]+)"')


def sent_bytes(port):
    """herald_transport_sent_bytes_total summed over its labels."""
    total = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(SENT_BYTES) and line[len(SENT_BYTES)] in " {":
                total += float(line.rsplit(None, 1)[1])
    return int(total)


def backlog(port):
    """Messages waiting in the server's actors' mailboxes, all kinds summed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return sum(float(line.split()[1]) for line in lines if line.startswith("herald_actor_mailbox_backlog{"))


def cpu_seconds(pid):
    """CPU time (user + system) of the server and of this script, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    times = os.times()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), times.user + times.system


def spent(pid, since):
    """CPU seconds of the server and of this script since `since` (from cpu_seconds)."""
    server, client = cpu_seconds(pid)
    return {"server_cpu_s": round(server - since[0], 1), "client_cpu_s": round(client - since[1], 1)}


def slow_consumers(port):
    return int(metric(port, 'herald_connections_dropped_total{reason="slow_consumer"}'))


def encode(frame):
    """`frame` (a dict) as one masked WebSocket text frame."""
    return mask_frame(0x81, json.dumps(frame, separators=(",", ":")).encode())


def mask_frame(first, payload):
    """One masked WebSocket frame: `first` is its first byte (FIN and opcode)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    if not n:
        return header + key
    mask = (key * (n // 4 + 1))[:n]
    return header + key + (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def payload_size(frame):
    """The payload size of a frame made by mask_frame."""
    n = frame[1] & 0x7F
    if n == 126:
        return struct.unpack_from("!H", frame, 2)[0]
    if n == 127:
        return struct.unpack_from("!Q", frame, 2)[0]
    return n


def due(elapsed, lifted):
    """How many frames one connection may have sent `elapsed` seconds after
    it started, keeping to the default rate limit (any number when lifted)."""
    if lifted:
        return sys.maxsize
    return RATE_BURST + int(elapsed * RATE_PER_SEC / RATE_SLACK)


class Peak:
    """Samples the server's VmRSS every 10 ms; take() is the peak since the
    last take()."""

    def __init__(self, pid):
        self.pid, self.lock, self.stop = pid, threading.Lock(), threading.Event()
        self.peak = rss_bytes(pid)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.01):
            try:
                rss = rss_bytes(self.pid)
            except (OSError, SystemExit):
                return
            with self.lock:
                self.peak = max(self.peak, rss)

    def take(self):
        with self.lock:
            peak, self.peak = self.peak, rss_bytes(self.pid)
        return peak

    def close(self):
        self.stop.set()
        self.thread.join()


class Conn:
    __slots__ = ("sock", "buf", "out", "closed", "close_code", "queue", "byid", "tries", "sent", "answered", "lag")

    def __init__(self, client):
        self.sock = client.sock
        self.buf = bytearray(client.buf)
        self.out = bytearray()
        self.closed = False
        self.close_code = None
        self.plan({})

    def plan(self, requests):
        """Requests to send, {id: frame}, in order."""
        self.queue = list(requests.values())  # frames to send, retries appended
        self.byid = requests
        self.tries = {}
        self.sent = 0  # frames of the queue sent
        self.answered = 0  # requests answered for good (success or error)
        self.lag = 0.0  # seconds this connection's pace is behind, after RATE_LIMITED


class Loop:
    """Connections driven from one thread: every frame the server sends is
    read and handed to `on_frame(conn, type, payload, start, end)` (type is
    the frame's `type` field, None when it is not a JSON object starting
    with it; the payload is payload[start:end])."""

    def __init__(self, port, count):
        self.selector = selectors.DefaultSelector()
        self.conns = []
        self.wire_in = 0  # bytes received, heartbeat pings excluded
        self.wire_out = 0  # bytes sent, heartbeat pongs excluded
        self.payload_out = 0  # payload bytes of the requests sent
        self.closes = {}
        for i in range(count):
            client = Client(port, f"127.0.0.{2 + i % 8}")
            welcome = client.recv()
            if welcome.get("type") != "welcome":
                sys.exit(f"expected welcome, got {welcome}")
            conn = Conn(client)
            client.sock.setblocking(False)
            self.selector.register(client.sock, selectors.EVENT_READ, conn)
            self.conns.append(conn)

    def pace(self, began, lifted):
        """A tick for run(): sends each connection's queue, keeping to the
        default rate limit from `began` unless it is lifted."""

        def tick(now):
            for conn in self.conns:
                if conn.sent < len(conn.queue) and not conn.closed:
                    upto = min(len(conn.queue), due(now - began - conn.lag, lifted))
                    if conn.sent < upto:
                        frames = conn.queue[conn.sent : upto]
                        self.payload_out += sum(map(payload_size, frames))
                        self.send(conn, b"".join(frames))
                        conn.sent = upto

        return tick

    def answer(self, conn, error=None):
        """Counts a reply to one of `conn`'s requests; a RATE_LIMITED one is
        queued again (at most RETRIES times), one token later. True when
        the request is answered for good."""
        if error and error.get("code") == "RATE_LIMITED":
            rid = error.get("id")
            if rid in conn.byid and conn.tries.get(rid, 0) < RETRIES:
                conn.tries[rid] = conn.tries.get(rid, 0) + 1
                conn.queue.append(conn.byid[rid])
                conn.lag += RATE_SLACK / RATE_PER_SEC
                return False
        conn.answered += 1
        return True

    def all_answered(self):
        return all(c.closed or c.answered >= len(c.byid) for c in self.conns)

    def send(self, conn, data, heartbeat=False):
        if conn.closed:
            return
        if not heartbeat:
            self.wire_out += len(data)
        conn.out += data
        self._flush(conn)

    def _flush(self, conn):
        try:
            while conn.out:
                n = conn.sock.send(conn.out)
                del conn.out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self._closed(conn, None)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        self.selector.modify(conn.sock, events, conn)

    def _closed(self, conn, code):
        if conn.closed:
            return
        conn.closed, conn.close_code = True, code
        self.closes[str(code)] = self.closes.get(str(code), 0) + 1
        self.selector.unregister(conn.sock)

    def run(self, on_frame, done, deadline, tick=None):
        """Reads and dispatches until done() or the deadline; tick(now) runs
        every turn (at least every 10 ms). True when done() was reached."""
        while True:
            now = time.monotonic()
            if tick:
                tick(now)
            if done():
                return True
            if now > deadline:
                return False
            for key, events in self.selector.select(timeout=0.01):
                conn = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(conn)
                if events & selectors.EVENT_READ and not conn.closed:
                    self._read(conn, on_frame)

    def _read(self, conn, on_frame):
        try:
            chunk = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            self._closed(conn, None)
            return
        if not chunk:
            self._closed(conn, None)
            return
        self.wire_in += len(chunk)
        buf = conn.buf
        buf += chunk
        at, size = 0, len(buf)
        while size - at >= 2:
            first, n = buf[at], buf[at + 1] & 0x7F
            head = 2
            if n == 126:
                if size - at < 4:
                    break
                n, head = (buf[at + 2] << 8) | buf[at + 3], 4
            elif n == 127:
                if size - at < 10:
                    break
                n, head = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
            if size - at < head + n:
                break
            start, end = at + head, at + head + n
            at = end
            opcode = first & 0x0F
            if opcode == 0x8:
                code = (buf[start] << 8) | buf[start + 1] if n >= 2 else None
                self._closed(conn, code)
                break
            if opcode == 0x9:  # a heartbeat: answer it
                self.wire_in -= end - start + head
                self.send(conn, mask_frame(0x8A, bytes(buf[start:end])), heartbeat=True)
                continue
            if opcode == 0xA:
                continue
            m = TYPE_AT.match(buf, start, min(end, start + 40))
            on_frame(conn, m.group(1).decode() if m else None, buf, start, end)
        del buf[:at]

    def close(self):
        for conn in self.conns:
            if not conn.closed:
                self.selector.unregister(conn.sock)
            conn.sock.close()
        self.selector.close()


def start_server(binary, args):
    settings = {}
    if args.lift_rate_limit:
        settings.update(LIMITS__RATE_PER_SEC=1000000, LIMITS__RATE_BURST=1000000)
    if args.max_rooms is not None:
        settings["LIMITS__MAX_ROOMS"] = args.max_rooms
    try:
        return start(binary, **settings)
    except SystemExit:
        if args.max_rooms is not None:
            sys.exit("the server did not start; does it know limits.max_rooms?")
        raise


def stop_server(server):
    server.terminate()
    try:
        server.wait(timeout=30)
    except Exception:
        server.kill()
        server.wait()


def room_spam(binary, args):
    n, per_conn = args.connections, args.rooms_per_conn
    server, port = start_server(binary, args)
    loop = peak = None
    try:
        peak = Peak(server.pid)
        rss_start = rss_bytes(server.pid)
        loop = Loop(port, n)
        for i, conn in enumerate(loop.conns):
            conn.plan({k: encode({"type": "join", "room": f"spam{i}-{k}", "id": k}) for k in range(per_conn)})
        refused, messages, other = {}, {}, {}
        joined, retried = [0], [0]

        def on_frame(conn, kind, buf, start, end):
            if kind == "joined":
                joined[0] += 1
                loop.answer(conn)
            elif kind == "error":
                error = json.loads(bytes(buf[start:end]))
                code = error.get("code")
                refused[code] = refused.get(code, 0) + 1
                messages.setdefault(code, error.get("message"))
                if "id" in error and not loop.answer(conn, error):
                    retried[0] += 1
            else:
                other[kind] = other.get(kind, 0) + 1

        before = sent_bytes(port)
        cpu = cpu_seconds(server.pid)
        began = time.monotonic()

        finished = loop.run(on_frame, loop.all_answered, began + args.timeout, loop.pace(began, args.lift_rate_limit))
        seconds = time.monotonic() - began
        used = spent(server.pid, cpu)
        rooms = api(port, "/api/stats")["rooms"]
        after = sent_bytes(port)
        print(json.dumps({
            "load": "rooms",
            "rate_limit": "lifted" if args.lift_rate_limit else "default",
            "max_rooms": args.max_rooms,
            "connections": n,
            "rooms_per_conn": per_conn,
            "joins_sent": sum(c.sent for c in loop.conns),
            "joined": joined[0],
            "rooms_created": rooms,
            "refused": refused,
            "refused_messages": messages,
            "sent_again": retried[0],
            "other_frames": other,
            "connections_closed": loop.closes,
            "slow_consumers_dropped": slow_consumers(port),
            "rss_start_kb": rss_start // 1024,
            "rss_peak_kb": peak.take() // 1024,
            "server_sent_bytes": after - before,
            "client_wire_bytes_in": loop.wire_in,
            "seconds": round(seconds, 1),
            **used,
            "timed_out": not finished,
        }), flush=True)
    finally:
        if loop:
            loop.close()
        if peak:
            peak.close()
        stop_server(server)


def presence_amp(binary, args):
    c, p = args.presence_conns, args.presence_requests
    askers = min(c, math.ceil(p / RATE_BURST))
    per_asker = math.ceil(p / askers)
    server, port = start_server(binary, args)
    loop = peak = None
    try:
        peak = Peak(server.pid)
        rss_start = rss_bytes(server.pid)
        loop = Loop(port, c)
        time.sleep(0.5)
        rss_connected = peak.take()
        counts, refused, messages = {}, {}, {}
        payload_in, retried = [0], [0]
        users_seen = []

        def on_frame(conn, kind, buf, start, end):
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "error":
                error = json.loads(bytes(buf[start:end]))
                refused[error.get("code")] = refused.get(error.get("code"), 0) + 1
                messages.setdefault(error.get("code"), error.get("message"))
                if "id" in error:
                    payload_in[0] += end - start
                    if not loop.answer(conn, error):
                        retried[0] += 1
            elif kind in ("joined", "presence"):
                loop.answer(conn)
                payload_in[0] += end - start
                if kind == "presence" and not users_seen:
                    users_seen.append(len(json.loads(bytes(buf[start:end]))["users"]))

        # Join phase: every connection joins `amp` at once.
        before = sent_bytes(port)
        wire_before = loop.wire_in
        cpu = cpu_seconds(server.pid)
        began = time.monotonic()
        join = encode({"type": "join", "room": "amp", "id": 0})
        for conn in loop.conns:
            conn.plan({0: join})
        loop.pace(began, True)(began)
        expected_joined = c * (c - 1) // 2

        last = [time.monotonic(), loop.wire_in]

        def joins_done():
            # Every join answered and every user_joined in; or, should some
            # never come (a connection dropped), nothing more for 2 s.
            now = time.monotonic()
            if loop.wire_in != last[1]:
                last[:] = [now, loop.wire_in]
            if not loop.all_answered():
                return False
            return counts.get("user_joined", 0) >= expected_joined or now - last[0] >= 2

        finished_joins = loop.run(on_frame, joins_done, began + args.timeout)
        # A join answered INTERNAL may still be queued for the room, and
        # lands (and leaves again) later: the join phase lasts until the
        # server's actors have nothing queued and nothing has arrived for a
        # second, so that the presence phase measures presence alone.
        checked = [0.0]

        def settled():
            now = time.monotonic()
            if loop.wire_in != last[1]:
                last[:] = [now, loop.wire_in]
            if now - last[0] < 1 or now - checked[0] < 0.2:
                return False
            checked[0] = now
            return backlog(port) == 0

        finished_joins = loop.run(on_frame, settled, began + args.timeout) and finished_joins
        join_seconds = time.monotonic() - began
        join_used = spent(server.pid, cpu)
        # The join took a token from each bucket: give it time to come back.
        refill = began + RATE_SLACK / RATE_PER_SEC
        loop.run(on_frame, lambda: time.monotonic() >= refill, refill + 1)
        after_joins = sent_bytes(port)
        join_counts, join_refused, join_retried = dict(counts), dict(refused), retried[0]
        join_wire = loop.wire_in - wire_before
        rss_joins = peak.take()

        # Presence phase: `askers` connections send `per_asker` requests each,
        # P in all, within each connection's burst (paced past it).
        counts.clear()
        refused.clear()
        payload_in[0] = retried[0] = 0
        n = 0
        for i, conn in enumerate(loop.conns):
            frames = {}
            if i < askers:
                for _ in range(min(per_asker, p - n)):
                    frames[n] = encode({"type": "presence", "room": "amp", "id": n})
                    n += 1
            conn.plan(frames)
        wire_out_before, wire_in_before, payload_before = loop.wire_out, loop.wire_in, loop.payload_out
        cpu = cpu_seconds(server.pid)
        began = time.monotonic()

        tick = loop.pace(began, args.lift_rate_limit)
        finished_presence = loop.run(on_frame, loop.all_answered, began + args.timeout, tick)
        presence_seconds = time.monotonic() - began
        presence_used = spent(server.pid, cpu)
        after_presence = sent_bytes(port)
        requests_wire = loop.wire_out - wire_out_before
        request_payload = loop.payload_out - payload_before
        replies_wire = loop.wire_in - wire_in_before
        print(json.dumps({
            "load": "presence",
            "rate_limit": "lifted" if args.lift_rate_limit else "default",
            "max_rooms": args.max_rooms,
            "connections": c,
            "join_phase": {
                "seconds": round(join_seconds, 1),
                **join_used,
                "server_sent_bytes": after_joins - before,
                "client_wire_bytes_in": join_wire,
                "frames": join_counts,
                "user_joined_expected": expected_joined,
                "refused": join_refused,
                "sent_again": join_retried,
                "rss_peak_kb": rss_joins // 1024,
                "timed_out": not finished_joins,
            },
            "presence_phase": {
                "seconds": round(presence_seconds, 1),
                **presence_used,
                "askers": askers,
                "requests": n,
                "frames_sent": sum(conn.sent for conn in loop.conns),
                "replies": counts.get("presence", 0),
                "users_per_reply": users_seen[0] if users_seen else None,
                "frames": dict(counts),
                "refused": refused,
                "sent_again": retried[0],
                "server_sent_bytes": after_presence - after_joins,
                "request_payload_bytes": request_payload,
                "reply_payload_bytes": payload_in[0],
                "payload_ratio": round(payload_in[0] / request_payload, 1) if request_payload else None,
                "request_wire_bytes": requests_wire,
                "reply_wire_bytes": replies_wire,
                "wire_ratio": round(replies_wire / requests_wire, 1) if requests_wire else None,
                "rss_peak_kb": peak.take() // 1024,
                "timed_out": not finished_presence,
            },
            "refused_messages": messages,
            "connections_closed": loop.closes,
            "slow_consumers_dropped": slow_consumers(port),
            "rss_start_kb": rss_start // 1024,
            "rss_connected_kb": rss_connected // 1024,
        }), flush=True)
    finally:
        if loop:
            loop.close()
        if peak:
            peak.close()
        stop_server(server)


def main():
    parser = argparse.ArgumentParser(description="Room spam and presence amplification against Herald.")
    parser.add_argument("binary", help="the herald binary")
    parser.add_argument("load", nargs="?", default="both", choices=["rooms", "presence", "both"])
    parser.add_argument("--connections", type=int, default=1000, help="room spam: connections (1000)")
    parser.add_argument("--rooms-per-conn", type=int, default=100, help="room spam: rooms each joins (100)")
    parser.add_argument("--presence-conns", type=int, default=2000, help="presence: members of amp (2000)")
    parser.add_argument("--presence-requests", type=int, default=20000, help="presence: requests in all (20000)")
    parser.add_argument("--max-rooms", type=int, help="sets limits.max_rooms on the server")
    parser.add_argument("--lift-rate-limit", action="store_true", help="start the server with the rate limit lifted")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each phase may take (300)")
    args = parser.parse_args()
    if min(args.connections, args.rooms_per_conn, args.presence_conns, args.presence_requests) < 1:
        parser.error("counts must be at least 1")
    # Blocking calls (connecting, the handshakes, the API) give up rather than hang.
    socket.setdefaulttimeout(30)
    if args.load in ("rooms", "both"):
        room_spam(args.binary, args)
    if args.load in ("presence", "both"):
        presence_amp(args.binary, args)


if __name__ == "__main__":
    main()
