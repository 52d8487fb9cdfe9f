#!/usr/bin/env python3
"""What stalled readers cost a Herald server: its peak RSS while a room carries
60 KB messages to members of which STALLED never read, against none.

usage: loadtest/slow_consumer.py HERALD_BIN [STALLED ...]   (default: 0 1 10)

Starts a fresh server for each count (API key "k", a free port), joins one
reader that reads everything plus STALLED readers whose receive buffer is
4 KiB and who never read, publishes MESSAGES (env, default 200) messages of
60 KB through /api/publish, and samples the server's VmRSS every 10 ms.
Prints one JSON line per count: baseline and peak RSS, the peak over the
baseline, per stalled reader, and how many of the readers were dropped as
slow consumers. Python 3 standard library only.
"""
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

MESSAGES = int(os.environ.get("MESSAGES", "200"))
PAYLOAD = "x" * 60_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ws_open(port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s


def ws_send(s, text):
    data = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else bytes([0x81, 0xFE]) + len(data).to_bytes(2, "big")
    s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def drain(s, stop):
    s.settimeout(0.5)
    total = 0
    while not stop.is_set():
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
    return total


def metric(port, series):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
    return 0.0


def run(binary, stalled):
    port = free_port()
    env = dict(os.environ, HERALD_SERVER__PORT=str(port), HERALD_API__KEY="k", RUST_LOG="warn",
               HERALD_LIMITS__RATE_PER_SEC="100000", HERALD_LIMITS__RATE_BURST="100000",
               HERALD_LIMITS__MAX_MESSAGE_BYTES="1048576", MIMALLOC_PURGE_DELAY="0")
    server = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
                break
            except OSError:
                time.sleep(0.05)
        reader = ws_open(port)
        ws_send(reader, json.dumps({"type": "join", "room": "flood"}))
        stuck = []
        for _ in range(stalled):
            s = ws_open(port, rcvbuf=4096)
            ws_send(s, json.dumps({"type": "join", "room": "flood"}))
            stuck.append(s)
        time.sleep(0.5)
        stop = threading.Event()
        received = []
        t = threading.Thread(target=lambda: received.append(drain(reader, stop)))
        t.start()
        baseline = rss_kb(server.pid)
        peak = [baseline]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_kb(server.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        body = json.dumps({"room": "flood", "data": PAYLOAD}).encode()
        for _ in range(MESSAGES):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/publish", data=body, method="POST",
                                         headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
            urllib.request.urlopen(req).read()
        time.sleep(1)
        sampling.set()
        sampler.join()
        stop.set()
        t.join()
        dropped = metric(port, 'herald_connections_dropped_total{reason="slow_consumer"}')
        extra = peak[0] - baseline
        print(json.dumps({
            "stalled": stalled, "messages": MESSAGES, "baseline_rss_kb": baseline, "peak_rss_kb": peak[0],
            "peak_over_baseline_kb": extra, "per_stalled_reader_kb": round(extra / stalled) if stalled else None,
            "slow_consumers_dropped": dropped, "reader_bytes": received[0] if received else 0,
        }), flush=True)
        for s in stuck:
            s.close()
    finally:
        server.terminate()
        server.wait()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    counts = [int(a) for a in sys.argv[2:]] or [0, 1, 10]
    for n in counts:
        run(sys.argv[1], n)


if __name__ == "__main__":
    main()
