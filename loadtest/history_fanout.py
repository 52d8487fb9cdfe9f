#!/usr/bin/env python3
"""What room history costs fan-out: deliveries per server CPU-second with
history on (the default, 100 messages per room) and off (HERALD_HISTORY__SIZE=0).

usage: loadtest/history_fanout.py HERALD_BIN [--load-bin PATH] [--rounds 2]
                                  [--rate 500] [--duration-secs 20] [--timeout 900]

Each round starts a fresh server per setting (rate limit lifted, outbound
queue 65,536, a free port) and runs

  herald-load fanout --rooms 100 --members 100 --publishers 1 --rate RATE
      --duration-secs DURATION --payload-bytes 100 --server-pid PID --json

against it; rounds alternate the order (on, off, then off, on, ...) so a
drift of the machine falls on both alike. Prints one JSON object: every
run's figures, and for each setting the median deliveries per server
CPU-second, the per-round ratio on/off and its median, and the pooled ratio
(all deliveries over all CPU-seconds). The cost of history is 1 - ratio.
Every run is bounded by herald-load's own deadlines and TIMEOUT in all.
Python 3 standard library only; build first with `cargo build --release`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from herald_proc import start

SETTINGS = {
    "on": {},
    "off": {"HISTORY__SIZE": 0},
}


def fanout(binary, load_bin, setting, args, deadline):
    """One fresh server with `setting`; herald-load's report with the run's label."""
    server, port = start(binary, LIMITS__RATE_PER_SEC=1000000, LIMITS__RATE_BURST=1000000,
                         LIMITS__OUTBOUND_QUEUE=65536, LIMITS__MAX_MESSAGE_BYTES=1048576,
                         **SETTINGS[setting])
    try:
        command = [
            load_bin, "fanout", "--rooms", "100", "--members", "100", "--publishers", "1",
            "--rate", str(args.rate), "--duration-secs", str(args.duration_secs), "--payload-bytes", "100",
            "--url", f"ws://127.0.0.1:{port}/ws", "--server-pid", str(server.pid), "--json",
        ]
        left = deadline - time.time()
        if left < args.duration_secs + 30:
            sys.exit("out of time before the next run (raise --timeout)")
        done = subprocess.run(command, capture_output=True, text=True, timeout=left)
        lines = done.stdout.strip().splitlines()
        if not lines:
            sys.exit(f"herald-load printed no report:\n{done.stderr}")
        report = json.loads(lines[-1])
        if "error" in report:
            sys.exit(f"herald-load could not run: {report['error']}")
        return {
            "history": setting,
            "exit": done.returncode,
            "published": report["published"],
            "deliveries": report["deliveries"],
            "loss": report["loss"],
            "server_cpu_secs": report["server_cpu_secs"],
            "deliveries_per_server_cpu_sec": report["deliveries_per_server_cpu_sec"],
            "latency_ms_p50": report["latency_ms"]["p50"],
            "latency_ms_p99": report["latency_ms"]["p99"],
            "send_lag_ms_p99": report["send_lag_ms"]["p99"],
            "held": report["held"],
            "not_held_because": report["not_held_because"],
        }
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--load-bin", default=None, help="herald-load (default: next to HERALD_BIN)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of one run per setting (default 2)")
    parser.add_argument("--rate", type=float, default=500, help="publishes per second, all rooms (default 500)")
    parser.add_argument("--duration-secs", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=900, help="seconds the whole run may take")
    args = parser.parse_args()
    load_bin = args.load_bin or os.path.join(os.path.dirname(os.path.abspath(args.binary)), "herald-load")
    if not os.access(load_bin, os.X_OK):
        sys.exit(f"{load_bin}: not found; cargo build --release first")
    deadline = time.time() + args.timeout
    runs = []
    for round_ in range(args.rounds):
        order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
        for setting in order:
            run = fanout(args.binary, load_bin, setting, args, deadline)
            run["round"] = round_ + 1
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
            time.sleep(2)
    rate = {s: [r["deliveries_per_server_cpu_sec"] for r in runs if r["history"] == s] for s in SETTINGS}
    ratios = []
    for round_ in range(1, args.rounds + 1):
        by = {r["history"]: r["deliveries_per_server_cpu_sec"] for r in runs if r["round"] == round_}
        if by.get("on") and by.get("off"):
            ratios.append(round(by["on"] / by["off"], 4))
    pooled = {
        s: sum(r["deliveries"] for r in runs if r["history"] == s)
        / max(1e-9, sum(r["server_cpu_secs"] or 0 for r in runs if r["history"] == s))
        for s in SETTINGS
    }
    median_ratio = statistics.median(ratios) if ratios else None
    report = {
        "rate": args.rate,
        "duration_secs": args.duration_secs,
        "rounds": args.rounds,
        "runs": runs,
        "median_deliveries_per_server_cpu_sec": {s: statistics.median(v) if v else None for s, v in rate.items()},
        "pooled_deliveries_per_server_cpu_sec": {s: round(v) for s, v in pooled.items()},
        "ratio_on_off_per_round": ratios,
        "ratio_on_off_median": median_ratio,
        "ratio_on_off_pooled": round(pooled["on"] / pooled["off"], 4) if pooled["off"] else None,
        "history_cost_median": round(1 - median_ratio, 4) if median_ratio else None,
        "all_held": all(r["held"] for r in runs),
        "max_loss": max(r["loss"] for r in runs),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
