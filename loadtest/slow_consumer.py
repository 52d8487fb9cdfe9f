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
import json
import os
import sys
import threading
import time

from herald_proc import Client, api, metric, rss_bytes, start

MESSAGES = int(os.environ.get("MESSAGES", "200"))
PAYLOAD = "x" * 60_000


def rss_kb(pid):
    return rss_bytes(pid) // 1024


def run(binary, stalled):
    os.environ["MIMALLOC_PURGE_DELAY"] = "0"
    server, port = start(binary, LIMITS__RATE_PER_SEC=100000, LIMITS__RATE_BURST=100000,
                         LIMITS__MAX_MESSAGE_BYTES=1048576)
    try:
        reader = Client(port)
        reader.send({"type": "join", "room": "flood"})
        stuck = []
        for _ in range(stalled):
            s = Client(port, rcvbuf=4096)
            s.send({"type": "join", "room": "flood"})
            stuck.append(s)
        time.sleep(0.5)
        stop = threading.Event()
        received = []
        t = threading.Thread(target=lambda: received.append(reader.drain(stop)))
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
        for _ in range(MESSAGES):
            api(port, "/api/publish", {"room": "flood", "data": PAYLOAD})
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
