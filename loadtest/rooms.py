#!/usr/bin/env python3
"""What rooms cost a Herald server, and whether it gives the memory back.

usage: loadtest/rooms.py HERALD_BIN [CONNECTIONS [ROOMS_PER_CONNECTION]]
       (default: 1000 connections x 100 rooms = 100,000 rooms)

Starts a fresh server (a free port, the rate limit lifted, API key "k"), opens
CONNECTIONS WebSocket connections, and has each join ROOMS_PER_CONNECTION rooms
of its own, so every room has one member. It samples the server's VmRSS:

- started:    the server listening, nothing connected;
- connected:  every connection open, no room;
- joined:     every room created (per room: joined - connected, / rooms);
- emptied:    every connection closed, /api/stats showing no rooms, and
              SETTLE_SECS (env, default 5) later: what the rooms left behind
              (emptied - started).

Prints one JSON line. Python 3 standard library only.
"""
import json
import os
import sys
import time

from herald_proc import Client, api, rss_bytes, start

SETTLE_SECS = float(os.environ.get("SETTLE_SECS", "5"))


def stats(port):
    return api(port, "/api/stats")


def main():
    binary = sys.argv[1]
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    per_connection = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    server, port = start(
        binary,
        LIMITS__RATE_PER_SEC=1000000,
        LIMITS__RATE_BURST=1000000,
        LIMITS__MAX_ROOMS_PER_CONN=max(per_connection, 1),
    )
    try:
        time.sleep(1)
        started = rss_bytes(server.pid)
        clients = [Client(port, f"127.0.0.{2 + i % 8}") for i in range(connections)]
        for client in clients:
            client.recv()  # welcome
        time.sleep(1)
        connected = rss_bytes(server.pid)
        # Joins in flight per connection at once, so the round trips overlap.
        for round_ in range(per_connection):
            for i, client in enumerate(clients):
                client.send({"type": "join", "room": f"r{i}-{round_}", "id": round_})
            for client in clients:
                reply = client.recv()
                if reply.get("type") != "joined":
                    sys.exit(f"a join failed: {reply}")
        rooms = stats(port)["rooms"]
        if rooms != connections * per_connection:
            sys.exit(f"{rooms} rooms, expected {connections * per_connection}")
        time.sleep(1)
        joined = rss_bytes(server.pid)
        for client in clients:
            client.close()
        deadline = time.time() + 60
        while stats(port)["rooms"] or stats(port)["connections"]:
            if time.time() > deadline:
                sys.exit(f"rooms left after 60 s: {stats(port)}")
            time.sleep(0.2)
        time.sleep(SETTLE_SECS)
        emptied = rss_bytes(server.pid)
        count = connections * per_connection
        print(
            json.dumps(
                {
                    "connections": connections,
                    "rooms": count,
                    "rss_started_kb": started // 1024,
                    "rss_connected_kb": connected // 1024,
                    "rss_joined_kb": joined // 1024,
                    "rss_emptied_kb": emptied // 1024,
                    "bytes_per_room": round((joined - connected) / count),
                    "retained_after_emptied_mb": round((emptied - started) / 2**20, 1),
                }
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
