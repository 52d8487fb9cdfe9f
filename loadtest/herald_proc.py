"""What the Python load scripts share: a Herald server of their own on a free
port, its resident memory, and a bare WebSocket client over a blocking socket.
Python 3 standard library only."""
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    """The process's VmRSS, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    sys.exit(f"no VmRSS for pid {pid}")


def start(binary, **settings):
    """Starts `binary` on a free port with API key "k", the HERALD_* `settings`
    (e.g. LIMITS__RATE_PER_SEC="1000") and RUST_LOG=warn, and waits until it
    answers /healthz. Returns (process, port)."""
    port = free_port()
    env = dict(os.environ, HERALD_SERVER__HOST="127.0.0.1", HERALD_SERVER__PORT=str(port), HERALD_API__KEY="k",
               RUST_LOG="warn")
    env.update({f"HERALD_{key}": str(value) for key, value in settings.items()})
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
            return server, port
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                sys.exit("the server did not start")
            time.sleep(0.05)


def api(port, path, body=None):
    """GET (or, with a body, POST) an /api path with the key; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def metric(port, series):
    """The value of one series on /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
    return 0.0


class Client:
    """A WebSocket client over a blocking socket, from `source` (an address of
    127.0.0.0/8), with a receive buffer of `rcvbuf` bytes when given."""

    def __init__(self, port, source="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
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

    def send(self, frame):
        """Sends `frame` (a dict) as one masked text frame."""
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
        """The next frame, as a dict."""
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

    def drain(self, stop):
        """Reads and throws away everything until `stop` is set or the
        server closes; returns the bytes read."""
        self.sock.settimeout(0.5)
        total = len(self.buf)
        self.buf = b""
        while not stop.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            total += len(chunk)
        return total

    def close(self):
        self.sock.close()


def read_answers(sock, count, deadline=None):
    """Reads `count` pipelined HTTP answers (each with a Content-Length) from
    `sock`; returns their statuses, in order. With `deadline` (a `time.time()`),
    gives up past it."""
    buf, statuses = bytearray(), []
    while len(statuses) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buf) >= end + 4 + length:
                statuses.append(head[0].split(" ")[1])
                del buf[: end + 4 + length]
                continue
        if deadline is not None and time.time() > deadline:
            raise RuntimeError(f"{len(statuses)} of {count} answers before the deadline")
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError(f"connection closed after {len(statuses)} of {count} answers")
        buf += chunk
    return statuses
