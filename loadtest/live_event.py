#!/usr/bin/env python3
"""A live event: one room of 19,000 WebSocket members, with presence and
join events off in the room's namespace, against the same room with Herald's
defaults.

usage: loadtest/live_event.py [HERALD_BIN [HERALD_LOAD_BIN]] [--members 19000]
           [--publishers 1] [--rate 4] [--duration-secs 20] [--warmup-secs 5]
           [--payload-bytes 100] [--connect-timeout-secs 300] [--settle-secs 60]
           [--only off|on]

HERALD_BIN and HERALD_LOAD_BIN default to target/release/herald and
target/release/herald-load of this checkout; build them first
(`cargo build --release && cargo build --release -p herald-load`).

Each configuration gets a fresh server (a free port, API key "k", the rate
limit lifted, an outbound queue of 65,536 frames and 64 MiB per connection):

  off   HERALD_NAMESPACES__0__PREFIX=live. with PRESENCE=false and
        JOIN_EVENTS=false; the room is `live.load-0`. Members get no
        `user_joined`/`user_left`, and `joined` lists no users.
  on    no namespace; the room is `load-0`. Each join sends `user_joined`
        to every member already in (N(N-1)/2 frames for N members) and
        each `joined` lists every user in the room.

Against each it runs

  herald-load fanout --rooms 1 --members MEMBERS --publishers PUBLISHERS
      --rate RATE --duration-secs DURATION --warmup-secs WARMUP
      --connect-timeout-secs CONNECT --settle-secs SETTLE
      [--room-prefix live.] --server-pid PID --json

and reports: the time until every member had its `joined` (or failed), the
members that failed to join and why, the presence frames the members
received, how long the server took to go quiet after the joins, then for
the fan-out the deliveries per second held, loss, latency, server CPU per
delivery, and the server's RSS after the joins and at its peak. Also the
server's exit status: a server that died during the run says so.

Every run is bounded: the connect phase by CONNECT seconds, the wait for a
quiet server by SETTLE, the whole run by their sum plus the publishing and
three minutes. Prints a table on stderr and one JSON object on stdout.

Last, the kernel's floor for the same shape in the same run:
../shared/tools/send_floor.c (built with `cc`; skipped, and said so, when
either is missing) makes one send() per delivery of a 128-byte frame to
MEMBERS sockets at RATE, nothing else; its deliveries per CPU-second stand
beside the server's (`--no-floor` skips it).
Python 3 standard library only.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

from herald_proc import free_port, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the namespace of the "off" room says, as environment overrides.
NAMESPACE_OFF = {
    "NAMESPACES__0__PREFIX": "live.",
    "NAMESPACES__0__PRESENCE": "false",
    "NAMESPACES__0__JOIN_EVENTS": "false",
}

CONFIGS = {
    "off": {"prefix": "live.", "env": NAMESPACE_OFF},
    "on": {"prefix": "", "env": {}},
}

SERVER_LIMITS = {
    "LIMITS__RATE_PER_SEC": 1000000,
    "LIMITS__RATE_BURST": 1000000,
    "LIMITS__OUTBOUND_QUEUE": 65536,
    "LIMITS__OUTBOUND_QUEUE_BYTES": 67108864,
}

# Beyond the connect phase, the settling and the publishing: herald-load's
# own slack for workers' reports, the drain, the close, and process starts.
RUN_SLACK_SECS = 180


class PeakRss(threading.Thread):
    """Samples a process's VmRSS every half second until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self):
        while not self.done.wait(0.5):
            try:
                self.peak = max(self.peak, rss_bytes_quiet(self.pid))
            except OSError:
                return


def rss_bytes_quiet(pid):
    """VmRSS in bytes; OSError when the process is gone (`rss_bytes` exits)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for {pid}")


def mb(kb):
    return None if kb is None else round(kb / 1024, 1)


def why_not_started(binary, settings):
    """The last line a server started with `settings` prints before it exits
    (`start` throws its output away): e.g. a configuration key it refuses."""
    env = dict(os.environ, HERALD_SERVER__HOST="127.0.0.1", HERALD_SERVER__PORT=str(free_port()), RUST_LOG="warn")
    env.update({f"HERALD_{key}": str(value) for key, value in settings.items()})
    try:
        done = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "it starts when tried again"
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def stop(server):
    """Stops the server; its exit status (negative: the signal that ended it)."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


def run(name, args, load_bin):
    """One fresh server in configuration `name` and one herald-load fanout against it."""
    config = CONFIGS[name]
    env = dict(SERVER_LIMITS)
    if not args.without_namespace_env:
        env.update(config["env"])
    started = time.time()
    try:
        server, port = start(args.herald_bin, **env)
    except SystemExit as error:
        return {"config": name, "error": f"{error}: {why_not_started(args.herald_bin, env)}"}
    peak = PeakRss(server.pid)
    peak.start()
    command = [
        load_bin, "fanout", "--rooms", "1", "--members", str(args.members),
        "--publishers", str(args.publishers), "--rate", str(args.rate),
        "--duration-secs", str(args.duration_secs), "--warmup-secs", str(args.warmup_secs),
        "--payload-bytes", str(args.payload_bytes),
        "--connect-timeout-secs", str(args.connect_timeout_secs), "--settle-secs", str(args.settle_secs),
        "--url", f"ws://127.0.0.1:{port}/ws", "--server-pid", str(server.pid), "--json",
    ]
    if config["prefix"]:
        command += ["--room-prefix", config["prefix"]]
    limit = (args.connect_timeout_secs + args.settle_secs + args.warmup_secs + args.duration_secs
             + RUN_SLACK_SECS)
    print(f"live_event: {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True, timeout=limit)
        exit_code, stdout = done.returncode, done.stdout
    except subprocess.TimeoutExpired as expired:
        exit_code, stdout = None, expired.stdout or ""
        if isinstance(stdout, bytes):
            stdout = stdout.decode(errors="replace")
    died = server.poll()
    peak.done.set()
    peak.join()
    server_exit = stop(server)
    result = {
        "config": name,
        "room": f"{config['prefix']}load-0",
        "namespace_env": None if args.without_namespace_env else config["env"],
        "run_secs": round(time.time() - started, 1),
        "herald_load_exit": exit_code,
        "server_died_during_run": died is not None,
        "server_exit": server_exit,
        "server_rss_peak_mb": round(peak.peak / 2**20, 1) if peak.peak else None,
    }
    if exit_code is None:
        result["error"] = f"herald-load did not finish within {limit} s; killed"
        return result
    lines = stdout.strip().splitlines()
    if not lines:
        result["error"] = "herald-load printed no report"
        return result
    report = json.loads(lines[-1])
    if "error" in report:
        result["error"] = f"herald-load could not run: {report['error']}"
        return result
    result.update(summarise(report))
    result["report"] = report
    return result


def summarise(r):
    """The figures of one herald-load fanout report that the comparison needs."""
    per_delivery = r["deliveries_per_server_cpu_sec"]
    rss_before, rss_joined = r["server_rss_before_kb"], r["server_rss_joined_kb"]
    joined = r["connections"] - r["connect_failures"]
    return {
        "members": r["members"],
        "joined": joined,
        "join_failures": r["connect_failures"],
        "join_failure_samples": r["connect_failure_samples"][:3],
        "join_secs": r["connect_secs_total"],
        "join_ms": r["connect_ms"],
        "presence_frames": r["presence_frames"],
        "presence_frames_joining": r["presence_frames_joining"],
        "last_presence_secs": r["last_presence_secs"],
        "settle_secs": r["settle_secs"],
        "settled": r["settled"],
        "server_cpu_secs_joining": r["server_cpu_secs_joining"],
        "server_rss_joined_mb": mb(rss_joined),
        "server_rss_per_member_bytes": (
            round((rss_joined - rss_before) * 1024 / joined) if rss_before and rss_joined and joined else None),
        "rate": r["rate"],
        "published": r["published"],
        "deliveries_per_sec": r["deliveries_per_sec"],
        "expected_deliveries_per_sec": round(r["expected_deliveries"] / r["duration_secs"], 1),
        "loss": r["loss"],
        "latency_ms_p50": r["latency_ms"]["p50"],
        "latency_ms_p99": r["latency_ms"]["p99"],
        "send_lag_ms_p99": r["send_lag_ms"]["p99"],
        "server_cpu_secs": r["server_cpu_secs"],
        "server_cpu_us_per_delivery": round(1e6 / per_delivery, 3) if per_delivery else None,
        "unexpected_frames": r["unexpected_frames"],
        "closed_early": r["closed_early"],
        "held": r["held"],
        "not_held_because": r["not_held_because"],
    }


def table(results):
    """The runs side by side, one line each."""
    columns = [
        ("config", "config", "{}"),
        ("joined", "joined", "{}"),
        ("join_failures", "failed", "{}"),
        ("join_secs", "join s", "{:.1f}"),
        ("presence_frames", "presence frames", "{:,}"),
        ("settle_secs", "settle s", "{:.1f}"),
        ("deliveries_per_sec", "deliveries/s", "{:,.0f}"),
        ("loss", "loss", "{:.4f}"),
        ("latency_ms_p99", "p99 ms", "{:.1f}"),
        ("server_cpu_us_per_delivery", "CPU µs/delivery", "{:.2f}"),
        ("server_rss_joined_mb", "RSS joined MB", "{:.0f}"),
        ("held", "held", "{}"),
        ("run_secs", "run s", "{:.0f}"),
    ]
    rows = [[title for _, title, _ in columns]]
    for result in results:
        row = []
        for key, _, form in columns:
            value = result.get(key)
            row.append("-" if value is None else form.format(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    for result in results:
        if "error" in result:
            lines.append(f"{result['config']}: {result['error']}")
        if result.get("server_died_during_run"):
            lines.append(f"{result['config']}: the server died during the run (exit {result['server_exit']})")
        for sample in result.get("join_failure_samples", [])[:1]:
            lines.append(f"{result['config']}: join failures, e.g. {sample}")
        report = result.get("report", {})
        for kind, samples in (("unexpected_frames", "unexpected_samples"), ("closed_early", "closed_samples")):
            if report.get(kind):
                lines.append(f"{result['config']}: {report[kind]} {kind}, e.g. {report[samples][0]}")
    return "\n".join(lines)


def send_floor(args):
    """The kernel's floor for this shape: deliveries per CPU-second of a
    process that only sends, or why it was not measured."""
    source = os.path.join(ROOT, "..", "shared", "tools", "send_floor.c")
    binary = os.path.join(ROOT, "target", "send_floor")
    if not os.path.exists(source):
        return {"skipped": f"{source} not found"}
    if subprocess.run(["cc", "-O2", "-o", binary, source], capture_output=True).returncode != 0:
        return {"skipped": "cc could not build send_floor"}
    command = [binary, str(free_port()), "1", str(args.members), str(max(1, round(args.rate))), str(round(args.duration_secs))]
    print(f"live_event: floor: {' '.join(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.duration_secs + 120)
    except subprocess.TimeoutExpired:
        return {"skipped": "send_floor did not finish in time"}
    for line in done.stdout.splitlines():
        if "deliveries_per_cpu_s" in line:
            return json.loads(line)
    return {"skipped": f"send_floor said nothing usable: {done.stdout!r} {done.stderr!r}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("herald_bin", nargs="?", default=os.path.join(ROOT, "target/release/herald"))
    parser.add_argument("load_bin", nargs="?", default=os.path.join(ROOT, "target/release/herald-load"))
    parser.add_argument("--members", type=int, default=19000, help="members of the room (default 19000)")
    parser.add_argument("--publishers", type=int, default=1, help="members that publish (default 1)")
    parser.add_argument("--rate", type=float, default=4, help="publishes per second, all publishers (default 4)")
    parser.add_argument("--duration-secs", "--duration", type=float, default=20, help="measured seconds (default 20)")
    parser.add_argument("--warmup-secs", type=float, default=5, help="publishing before measuring (default 5)")
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--connect-timeout-secs", type=int, default=300,
                        help="deadline of the joins; members not in by then are failures (default 300)")
    parser.add_argument("--settle-secs", type=float, default=60,
                        help="longest wait for the server to go quiet after the joins (default 60)")
    parser.add_argument("--only", choices=sorted(CONFIGS), help="run one configuration")
    parser.add_argument("--no-floor", action="store_true", help="skip the kernel's floor (send_floor.c)")
    # For a server that does not know namespaces yet (it refuses the
    # variables): the "off" run then joins `live.load-0` with presence on.
    parser.add_argument("--without-namespace-env", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for path in (args.herald_bin, args.load_bin):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path}: not found; cargo build --release && cargo build --release -p herald-load")
    if args.members > 19100:
        sys.exit("--members over 19,100: a process here may hold 20,000 files, the server's included")
    names = [args.only] if args.only else ["off", "on"]
    results = []
    for name in names:
        result = run(name, args, args.load_bin)
        results.append(result)
        brief = {k: v for k, v in result.items() if k != "report"}
        print(json.dumps(brief), file=sys.stderr, flush=True)
        time.sleep(2)
    floor = None if args.no_floor else send_floor(args)
    print(table(results), file=sys.stderr)
    by = {r["config"]: r for r in results}
    out = {
        "members": args.members,
        "publishers": args.publishers,
        "rate": args.rate,
        "duration_secs": args.duration_secs,
        "warmup_secs": args.warmup_secs,
        "runs": results,
    }
    if "join_secs" in by.get("off", {}) and "join_secs" in by.get("on", {}):
        off, on = by["off"], by["on"]
        out["join_secs_on_over_off"] = round(on["join_secs"] / off["join_secs"], 2) if off["join_secs"] else None
        out["presence_frames_on_minus_off"] = on["presence_frames"] - off["presence_frames"]
    if floor is not None:
        out["send_floor"] = floor
        per_cpu_s = floor.get("deliveries_per_cpu_s")
        if per_cpu_s:
            print(f"send_floor: {per_cpu_s:,} deliveries per CPU-second ({1e6 / per_cpu_s:.2f} µs each)", file=sys.stderr)
            for result in results:
                us = result.get("server_cpu_us_per_delivery")
                if us:
                    ratio = round(1e6 / us / per_cpu_s, 2)
                    result["deliveries_per_cpu_s_over_floor"] = ratio
                    print(f"{result['config']}: deliveries per server CPU-second {ratio}x the floor's", file=sys.stderr)
        else:
            print(f"send_floor: {floor.get('skipped')}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
