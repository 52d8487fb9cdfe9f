#!/usr/bin/env python3
"""Server RSS growth per idle WebSocket connection.

Usage: python3 loadtest/idle_rss.py SERVER_PID ws://127.0.0.1:8080/ws N
Needs `pip install websockets`. Opens N connections from one process (keep N
below the per-process file limit), reads each `welcome`, waits, and reports
the RSS delta of SERVER_PID divided by N.
"""
import asyncio, sys, websockets
pid, url, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024
async def main():
    before = rss(); conns = []
    for i in range(n):
        ws = await websockets.connect(url, max_size=None, ping_interval=None)
        await ws.recv(); conns.append(ws)
    await asyncio.sleep(2)
    after = rss()
    print(f"{n} idle connections: RSS {before/1e6:.1f} MB -> {after/1e6:.1f} MB, {(after-before)/n:.0f} bytes per connection")
    for ws in conns: await ws.close()
asyncio.run(main())
