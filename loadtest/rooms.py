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
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

SETTLE_SECS = float(os.environ.get("SETTLE_SECS", "5"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def stats(port):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/stats", headers={"Authorization": "Bearer k"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Client:
    """A WebSocket client over a blocking socket: enough to join rooms."""

    def __init__(self, port, source):
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                sys.exit("the server closed a connection during its handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(f"handshake refused: {head.decode(errors='replace')}")
        self.recv()  # welcome

    def send(self, frame):
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                sys.exit("the server closed a connection")
            self.buf += chunk

    def recv(self):
        self._need(2)
        n = self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._need(4)
            n, at = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10)
            n, at = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(at + n)
        payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
        return json.loads(payload)

    def close(self):
        self.sock.close()


def main():
    binary = sys.argv[1]
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    per_connection = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    port = free_port()
    env = dict(
        os.environ,
        HERALD_SERVER__HOST="127.0.0.1",
        HERALD_SERVER__PORT=str(port),
        HERALD_API__KEY="k",
        HERALD_LIMITS__RATE_PER_SEC="1000000",
        HERALD_LIMITS__RATE_BURST="1000000",
        HERALD_LIMITS__MAX_ROOMS_PER_CONN=str(max(per_connection, 1)),
        RUST_LOG="warn",
    )
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                stats(port)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("the server did not start")
                time.sleep(0.1)
        time.sleep(1)
        started = rss_bytes(server.pid)
        clients = [Client(port, f"127.0.0.{2 + i % 8}") for i in range(connections)]
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
