#!/usr/bin/env python3
"""Server RSS across a burst of pipelined HTTP requests (python3 stdlib only).

Usage: python3 loadtest/http_burst.py SERVER_PID URL [options]
  URL http://127.0.0.1:8080/healthz       GET requests
  URL http://127.0.0.1:8080/api/publish   POST requests with --body and --key

Reads VmRSS of SERVER_PID from /proc, then:
  1. one connection: --requests requests written back to back in one write,
     then every response read;
  2. --connections connections at once, --requests requests in all, each
     connection writing its share back to back in one write, then reading
     its responses;
  3. waits --idle seconds with no connection open.
Prints one JSON object: `rss_before`, `rss_after` (after both bursts, their
connections closed) and `rss_after_idle`, in bytes, plus the RSS at each
step (`steps`) and the responses counted by status.
"""
import argparse, json, socket, sys, threading, time
from urllib.parse import urlsplit

from herald_proc import read_answers, rss_bytes

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("pid", type=int)
parser.add_argument("url")
parser.add_argument("--requests", type=int, default=5000, help="requests per burst (default 5000)")
parser.add_argument("--connections", type=int, default=50, help="connections of the second burst (default 50)")
parser.add_argument("--idle", type=float, default=10.0, help="seconds to wait after the bursts (default 10)")
parser.add_argument("--key", default="", help="API key, sent as Authorization: Bearer KEY")
parser.add_argument("--body", default=None,
                    help='request body; given, requests are POST (default for /api/publish: {"room":"burst","data":1})')
args = parser.parse_args()

parts = urlsplit(args.url)
host, port = parts.hostname, parts.port or 80
target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
body = args.body
if body is None and parts.path in ("/api/publish", "/api/broadcast"):
    body = '{"room":"burst","data":1}'
method = "GET" if body is None else "POST"
headers = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
if args.key:
    headers += f"Authorization: Bearer {args.key}\r\n"
if body is None:
    REQUEST = (headers + "\r\n").encode()
else:
    data = body.encode()
    REQUEST = (headers + f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def rss():
    return rss_bytes(args.pid)


def burst(count, statuses, errors):
    try:
        with socket.create_connection((host, port)) as sock:
            sock.sendall(REQUEST * count)
            for status in read_answers(sock, count):
                statuses[status] = statuses.get(status, 0) + 1
    except Exception as error:  # reported in the JSON, the run carries on
        errors.append(str(error))


steps, statuses, errors = {}, {}, []
steps["before"] = rss()

started = time.monotonic()
burst(args.requests, statuses, errors)
steps["after_pipelined_one_connection"] = rss()
pipelined_s = time.monotonic() - started

started = time.monotonic()
shares = [args.requests // args.connections + (i < args.requests % args.connections) for i in range(args.connections)]
threads = [threading.Thread(target=burst, args=(n, statuses, errors)) for n in shares if n]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
concurrent_s = time.monotonic() - started
time.sleep(0.5)  # let the server notice the closed connections
steps["after_concurrent_connections"] = rss()

time.sleep(max(0.0, args.idle - 0.5))
steps["after_idle"] = rss()

print(json.dumps({
    "url": args.url,
    "method": method,
    "requests_per_burst": args.requests,
    "connections": args.connections,
    "statuses": statuses,
    "errors": errors[:5],
    "seconds": {"pipelined": round(pipelined_s, 3), "concurrent": round(concurrent_s, 3), "idle": args.idle},
    "rss_before": steps["before"],
    "rss_after": steps["after_concurrent_connections"],
    "rss_after_idle": steps["after_idle"],
    "steps": steps,
    "delta_mb": {k: round((v - steps["before"]) / 1e6, 2) for k, v in steps.items()},
}, indent=2))
