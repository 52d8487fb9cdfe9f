#!/usr/bin/env python3
"""Server memory per message held in room history.

usage: loadtest/history_rss.py HERALD_BIN [--rooms 100] [--messages 1000]
                               [--payload-bytes 100] [--connections 8] [--timeout 300]

Starts a fresh server from HERALD_BIN twice (API key "k", a free port): once
with history on, `HERALD_HISTORY__SIZE` = MESSAGES so that every message
stays, and once with `HERALD_HISTORY__SIZE=0`. Each gets the same ROOMS x
MESSAGES publishes through /api/publish, `data` about PAYLOAD_BYTES long, into
rooms nobody joined (pipelined over CONNECTIONS kept-alive connections, every
room's messages in order on one of them). Two seconds after the last answer
it reads the server's VmRSS and the /metrics gauges `herald_history_messages`
and `herald_history_bytes`. Prints one JSON object: both runs, and

  rss_per_held_message_bytes      (RSS on - RSS off) / messages held
  history_bytes_per_message       herald_history_bytes / messages held
  frame_bytes                     one message frame as members receive it

Every step has a deadline (TIMEOUT seconds in all); Python 3 standard library
only.
"""
import argparse
import json
import socket
import sys
import threading
import time

from herald_proc import api, metric, read_answers, rss_bytes, start

# Requests written at once on one connection before their answers are read.
BATCH = 200


def publish_all(port, bodies, deadline, counts, errors):
    """POSTs every body in order on one connection, BATCH at a time; counts
    the answers by status in `counts` (this thread's own)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        with sock:
            for at in range(0, len(bodies), BATCH):
                requests = []
                for body in bodies[at : at + BATCH]:
                    data = body.encode()
                    requests.append(
                        (
                            f"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer k\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                        ).encode()
                        + data
                    )
                sock.sendall(b"".join(requests))
                for status in read_answers(sock, len(requests), deadline):
                    counts[status] = counts.get(status, 0) + 1
    except (OSError, RuntimeError) as e:
        errors.append(str(e))


def run(binary, size, args, deadline):
    """One fresh server with HISTORY__SIZE=size: publish, settle, measure."""
    server, port = start(binary, HISTORY__SIZE=size, LIMITS__MAX_MESSAGE_BYTES=1048576)
    try:
        time.sleep(1)
        rss_start = rss_bytes(server.pid)
        pad = "x" * max(0, args.payload_bytes - 20)
        per_connection = [[] for _ in range(args.connections)]
        for room in range(args.rooms):
            bodies = per_connection[room % args.connections]
            for n in range(args.messages):
                bodies.append(json.dumps({"room": f"h-{room}", "data": {"n": n, "pad": pad}}, separators=(",", ":")))
        tallies, errors = [{} for _ in per_connection], []
        started = time.time()
        threads = [
            threading.Thread(target=publish_all, args=(port, bodies, deadline, tally, errors))
            for bodies, tally in zip(per_connection, tallies)
            if bodies
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.time()))
        if errors or any(t.is_alive() for t in threads):
            sys.exit(f"publishing failed: {errors or 'past the deadline'}")
        publish_secs = time.time() - started
        counts = {}
        for tally in tallies:
            for status, n in tally.items():
                counts[status] = counts.get(status, 0) + n
        time.sleep(2)
        history = api(port, "/api/rooms/h-0/history?limit=1")
        frame = history["messages"][0] if history["messages"] else None
        return {
            "history_size": size,
            "published": counts.get("200", 0),
            "answers": counts,
            "publish_secs": round(publish_secs, 2),
            "rss_start_bytes": rss_start,
            "rss_bytes": rss_bytes(server.pid),
            "history_messages": int(metric(port, "herald_history_messages")),
            "history_bytes": int(metric(port, "herald_history_bytes")),
            "room_0_seq": history["seq"],
            "frame_bytes": len(json.dumps(frame, separators=(",", ":"))) if frame else None,
        }
    finally:
        server.terminate()
        try:
            server.wait(10)
        except Exception:
            server.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("binary")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1000, help="messages per room (default 1000)")
    parser.add_argument("--payload-bytes", type=int, default=100, help="approximate size of each data object")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300, help="seconds the whole run may take")
    args = parser.parse_args()
    deadline = time.time() + args.timeout
    on = run(args.binary, args.messages, args, deadline)
    off = run(args.binary, 0, args, deadline)
    held = on["history_messages"]
    expected = args.rooms * args.messages
    report = {
        "rooms": args.rooms,
        "messages_per_room": args.messages,
        "payload_bytes": args.payload_bytes,
        "on": on,
        "off": off,
        "messages_held": held,
        "all_held": held == expected and off["history_messages"] == 0,
        "frame_bytes": on["frame_bytes"],
        "rss_per_held_message_bytes": round((on["rss_bytes"] - off["rss_bytes"]) / held, 1) if held else None,
        "history_bytes_per_message": round(on["history_bytes"] / held, 1) if held else None,
    }
    print(json.dumps(report))
    if not report["all_held"] or on["published"] != expected or off["published"] != expected:
        sys.exit(f"expected {expected} messages published and held with history on (none off)")


if __name__ == "__main__":
    main()
