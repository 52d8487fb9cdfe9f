#!/usr/bin/env python3
"""Server RSS growth per idle connection, WebSocket or SSE.

Usage: python3 loadtest/idle_rss.py SERVER_PID URL N
  URL ws://127.0.0.1:8080/ws                 N idle WebSocket connections
      (needs `pip install websockets`)
  URL http://127.0.0.1:8080/sse?rooms=lobby  N idle SSE subscribers (plain sockets)
  URL tcp://127.0.0.1:8080                   N sockets that connect and send
      nothing: sockets still in their handshake (run the server with a
      server.handshake_timeout_ms longer than the measurement)
Opens N connections from one process (keep N below the per-process file
limit), waits until each is open (`welcome` / `: subscribed`), waits 2 s, and
reports the RSS delta of SERVER_PID divided by N.
"""
import asyncio, socket, sys, time
from urllib.parse import urlsplit

from herald_proc import rss_bytes

pid, url, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def rss():
    return rss_bytes(pid)

def report(kind, before, after):
    print(f"{n} idle {kind}: RSS {before/1e6:.1f} MB -> {after/1e6:.1f} MB, {(after-before)/n:.0f} bytes per connection")

async def websockets_idle():
    import websockets
    before = rss(); conns = []
    for _ in range(n):
        ws = await websockets.connect(url, max_size=None, ping_interval=None)
        await ws.recv(); conns.append(ws)
    await asyncio.sleep(2)
    report("WebSocket connections", before, rss())
    for ws in conns: await ws.close()

def sse_idle():
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    before = rss(); socks = []
    for i in range(n):
        # Spread over source addresses so loopback ports last.
        s = socket.socket(); s.bind((f"127.0.0.{2 + i % 8}", 0))
        s.connect((parts.hostname, parts.port or 80))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode())
        socks.append(s)
    for s in socks:
        head = b""
        while b": subscribed" not in head:
            chunk = s.recv(4096)
            if not chunk: sys.exit(f"refused: {head.decode(errors='replace')}")
            head += chunk
    time.sleep(2)
    report("SSE subscribers", before, rss())
    for s in socks: s.close()

def silent():
    parts = urlsplit(url)
    before = rss(); socks = []
    for i in range(n):
        s = socket.socket(); s.bind((f"127.0.0.{2 + i % 8}", 0))
        s.connect((parts.hostname, parts.port))
        socks.append(s)
    time.sleep(2)
    report("sockets in their handshake", before, rss())
    for s in socks: s.close()

if url.startswith("tcp"):
    silent()
elif url.startswith("http"):
    sse_idle()
else:
    asyncio.run(websockets_idle())
