#!/usr/bin/env python3
"""Herald's Socket.IO endpoint side by side with Herald's own WebSocket and
with Socket.IO 4.8 itself, in one run on one machine.

(a) Idle memory per connection, each from a fresh server:
    Herald native WebSocket (/ws), Herald Socket.IO over WebSocket and over
    HTTP long polling (/socket.io/), the Socket.IO peer
    (loadtest/peers/socketio) over WebSocket and over polling. Each is
    `herald-load idle --connections N --hold-secs H`: the server's VmRSS after
    the hold minus before connecting, over N (as idle_rss.py does it). The
    ratio Herald Socket.IO-over-WebSocket / Herald native is printed against
    its target (at most 1.25).
(b) Fan-out deliveries per server CPU-second, Herald native, Herald
    Socket.IO and the peer, each `herald-load fanout --rooms 100 --members 100
    --publishers 1 --payload-bytes 100 --rate R --duration-secs D` (the shape
    peers/compare.sh uses), in `--rounds` interleaved rounds; the median of
    each server's rounds is compared.

Every server is started for one load and stopped after it; every load has a
time limit, and `--timeout` bounds the whole run (loads that would start past
it are skipped and say so). Reports go to loadtest/peers/results/socketio-<time>/;
a markdown table and the command line are printed at the end (stdout).

Usage:
  python3 loadtest/socketio_bench.py [--build] [--herald target/release/herald]
      [--connections 10000] [--hold-secs 10] [--rate 1000] [--duration-secs 20]
      [--rounds 1] [--timeout 1500] [--only idle|fanout] [--secret S]

Needs a release build of herald and herald-load (`--build` runs `cargo build
--release -p herald -p herald-load` in this repository), Node 20 with npm (the
peer's node_modules are installed with `npm ci` when missing) and Python 3.
"""
import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herald_proc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_DIR = os.path.join(ROOT, "loadtest", "peers", "socketio")
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")

# Herald as peers/compare.sh runs it: the per-connection rate limit lifted and
# room for a busy load generator's backlog.
HERALD_SETTINGS = {
    "LIMITS__RATE_PER_SEC": "1000000",
    "LIMITS__RATE_BURST": "1000000",
    "LIMITS__OUTBOUND_QUEUE": "65536",
    "LIMITS__MAX_MESSAGE_BYTES": "1048576",
}

# What each idle column is: server, herald-load dialect, transport.
IDLE = [
    ("herald-ws", "Herald WebSocket (/ws)", "herald", "herald", "websocket"),
    ("herald-sio-ws", "Herald Socket.IO, WebSocket", "herald", "socketio", "websocket"),
    ("herald-sio-polling", "Herald Socket.IO, polling", "herald", "socketio", "polling"),
    ("peer-sio-ws", "Socket.IO {v}, WebSocket", "peer-ws", "socketio", "websocket"),
    ("peer-sio-polling", "Socket.IO {v}, polling", "peer-polling", "socketio", "polling"),
]
FANOUT = [
    ("herald-ws", "Herald WebSocket (/ws)", "herald", "herald"),
    ("herald-sio", "Herald Socket.IO", "herald", "socketio"),
    ("peer-sio", "Socket.IO {v}", "peer-ws", "socketio"),
]
TARGET_RATIO = 1.25


def log(text):
    print(f"[socketio_bench] {text}", file=sys.stderr, flush=True)


class Budget:
    """The run's deadline: loads that could not finish before it are skipped."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()


class Server:
    """One server process for one load: Herald (through herald_proc) or the
    Socket.IO peer, on a free port."""

    def __init__(self, kind, args):
        self.kind = kind
        if kind == "herald":
            settings = dict(HERALD_SETTINGS)
            if args.secret:
                settings.update({"AUTH__REQUIRED": "true", "AUTH__JWT_SECRET": args.secret})
            self.proc, self.port = herald_proc.start(args.herald, **settings)
            return
        self.port = herald_proc.free_port()
        transports = "websocket" if kind == "peer-ws" else "polling,websocket"
        env = dict(os.environ, PORT=str(self.port), TRANSPORTS=transports)
        self.log = open(os.path.join(args.results, f"{kind}-{self.port}.server.log"), "w")
        self.proc = subprocess.Popen(["node", "server.js"], cwd=PEER_DIR, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the Socket.IO peer did not start (see {self.log.name})")
                time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


def run_load(args, budget, name, server_kind, load_args, limit):
    """Starts a fresh server, runs herald-load against it with `load_args`
    (`{port}` filled in), and returns its JSON report (with `exit` and, when
    something went wrong, `error`), or None when the time budget is spent."""
    if budget.left() < limit:
        log(f"{name}: skipped, {budget.left():.0f} s left of the time budget and the load may take {limit} s")
        return None
    log(f"{name}: starting {server_kind}")
    try:
        server = Server(server_kind, args)
    except (RuntimeError, SystemExit) as e:
        return {"error": f"server did not start: {e}"}
    cmd = [args.load] + [a.format(port=server.port) for a in load_args] + ["--server-pid", str(server.pid), "--json"]
    if args.secret:
        cmd += ["--secret", args.secret]
    log(f"{name}: {' '.join(shlex.quote(c) for c in cmd)}")
    base = os.path.join(args.results, name)
    report = None
    try:
        with open(base + ".stderr", "w") as err:
            # Its own session, so a run past its limit is stopped with its workers.
            load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
            try:
                out, _ = load.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(load.pid, signal.SIGKILL)
                load.communicate()
                return {"error": f"herald-load stopped after {limit} s"}
            except BaseException:
                # Interrupted: its workers go with it.
                os.killpg(load.pid, signal.SIGKILL)
                load.wait()
                raise
        lines = out.strip().splitlines()
        try:
            report = json.loads(lines[-1]) if lines else None
        except ValueError:
            report = None
        if report is None:
            return {"error": f"no JSON report (exit {load.returncode}); see {base}.stderr"}
        report["exit"] = load.returncode
        if server.proc.poll() is not None:
            report["error"] = f"the server exited during the load (status {server.proc.returncode})"
        with open(base + ".json", "w") as f:
            json.dump(report, f)
        return report
    finally:
        server.stop()


def fmt(value, digits=0):
    if value is None:
        return "n/a"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def idle_cell(report, key, digits=0, unit=""):
    if report is None:
        return "skipped"
    if "error" in report and key not in report:
        return "failed"
    cell = fmt(report.get(key), digits) + unit
    trouble = report.get("connect_failures", 0) + report.get("closed_early", 0)
    return cell + (" ✗" if trouble or report.get("error") else "")


def problem_of(report):
    """Why a load did not pass, with a sample of what went wrong; None if it did."""
    if not report:
        return None
    if report.get("error"):
        return report["error"]
    if report.get("exit", 0) == 0:
        return None
    why = [f"herald-load exit {report['exit']}"]
    for count, samples in [("connect_failures", "connect_failure_samples"), ("closed_early", "closed_samples"),
                           ("unexpected_frames", "unexpected_samples")]:
        if report.get(count):
            sample = (report.get(samples) or ["?"])[0]
            why.append(f"{report[count]:,} {count.replace('_', ' ')} (e.g. `{sample}`)")
    why.extend(report.get("not_held_because") or [])
    return "; ".join(why)


def ratio(a, b):
    return a / b if a and b else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--herald", default=os.environ.get("HERALD_BIN", os.path.join(TARGET_DIR, "release", "herald")),
                        help="the herald binary (env HERALD_BIN; default $CARGO_TARGET_DIR or target, /release/herald)")
    parser.add_argument("--load", default=os.environ.get("LOAD_BIN", os.path.join(TARGET_DIR, "release", "herald-load")),
                        help="the herald-load binary (env LOAD_BIN)")
    parser.add_argument("--build", action="store_true",
                        help="cargo build --release -p herald -p herald-load in this repository first")
    parser.add_argument("--connections", type=int, default=10000, help="idle connections per load (10000)")
    parser.add_argument("--hold-secs", type=int, default=10, help="idle hold (10)")
    parser.add_argument("--per-process", type=int, default=15000, help="most connections per herald-load worker")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000, help="fan-out publishes/s in total (1000)")
    parser.add_argument("--duration-secs", type=float, default=20, help="fan-out measured seconds (20)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved fan-out rounds (1)")
    parser.add_argument("--only", choices=["idle", "fanout"], help="run one half only")
    parser.add_argument("--secret", help="require tokens: Herald gets it as auth.jwt_secret, every client a JWT")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds for the whole run (1500)")
    parser.add_argument("--results", help="where reports go (default loadtest/peers/results/socketio-<time>)")
    args = parser.parse_args()
    budget = Budget(args.timeout)
    command = "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])

    if args.build:
        log("cargo build --release -p herald -p herald-load")
        subprocess.run(["cargo", "build", "--release", "-p", "herald", "-p", "herald-load"], cwd=ROOT, check=True,
                       timeout=max(60, budget.left()))
    for binary in (args.herald, args.load):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is missing: build it (--build) or name it (--herald / --load)")
    if not os.path.isdir(os.path.join(PEER_DIR, "node_modules")):
        log("npm ci in loadtest/peers/socketio")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True, timeout=300)
    with open(os.path.join(PEER_DIR, "node_modules", "socket.io", "package.json")) as f:
        sio_version = json.load(f)["version"]
    args.results = args.results or os.path.join(ROOT, "loadtest", "peers", "results",
                                                time.strftime("socketio-%Y%m%d-%H%M%S"))
    os.makedirs(args.results, exist_ok=True)
    log(f"results in {args.results}")

    idle = {}
    if args.only != "fanout":
        limit = args.hold_secs + 120 + args.connections // 50
        for key, _, server, dialect, transport in IDLE:
            load = ["idle", "--connections", str(args.connections), "--hold-secs", str(args.hold_secs),
                    "--per-process", str(args.per_process), "--dialect", dialect,
                    "--url", "ws://127.0.0.1:{port}" + ("/ws" if dialect == "herald" else "")]
            if transport == "polling":
                load += ["--transport", "polling"]
            idle[key] = run_load(args, budget, f"idle-{key}", server, load, limit)
            r = idle[key]
            if r:
                log(f"idle-{key}: {r.get('rss_per_connection_bytes')} B per connection, "
                    f"{r.get('connect_failures')} failures {r.get('error', '')}")

    fanout = {key: [] for key, *_ in FANOUT}
    if args.only != "idle":
        limit = int(args.duration_secs) + 180
        for n in range(1, args.rounds + 1):
            for key, _, server, dialect in FANOUT:
                load = ["fanout", "--rooms", str(args.rooms), "--members", str(args.members),
                        "--publishers", str(args.publishers), "--payload-bytes", str(args.payload_bytes),
                        "--rate", str(args.rate), "--duration-secs", str(args.duration_secs),
                        "--per-process", str(args.per_process), "--dialect", dialect,
                        "--url", "ws://127.0.0.1:{port}" + ("/ws" if dialect == "herald" else "")]
                r = run_load(args, budget, f"fanout-{key}-{n}", server, load, limit)
                fanout[key].append(r)
                if r:
                    log(f"fanout-{key}-{n}: {r.get('deliveries_per_server_cpu_sec')} deliveries per CPU-s, "
                        f"loss {r.get('loss')}, p99 {r.get('latency_ms', {}).get('p99')} ms {r.get('error', '')}")

    print_tables(args, command, sio_version, idle, fanout)


def print_tables(args, command, version, idle, fanout):
    out = []
    out.append(f"## Herald's Socket.IO endpoint side by side, {time.strftime('%Y-%m-%d %H:%M')}\n")
    out.append(f"```sh\n{command}\n```\n")
    out.append(f"Reports in `{os.path.relpath(args.results, ROOT)}`. ✗: connections failed or closed early, "
               "or the server died; the figure is shown but did not pass.\n")
    if idle:
        n = args.connections
        heads = [label.format(v=version) for _, label, *_ in IDLE]
        out.append(f"### Idle: {n:,} connections each, held {args.hold_secs} s\n")
        out.append("| measure | " + " | ".join(heads) + " |")
        out.append("|---|" + "---:|" * len(heads))
        rows = [
            ("RSS per connection (bytes)", "rss_per_connection_bytes", 0, ""),
            ("server CPU while idle (ms/s per 1k conns)", "server_cpu_ms_per_sec_per_1k_conns", 3, ""),
            ("time to open all (s)", "connect_secs_total", 2, ""),
            ("connect p99 (ms)", None, 0, ""),
            ("connect failures", "connect_failures", 0, ""),
            ("closed early", "closed_early", 0, ""),
        ]
        for title, key, digits, unit in rows:
            cells = []
            for k, *_ in IDLE:
                r = idle.get(k)
                if key is None:
                    opened = r and (r.get("connections") or 0) > (r.get("connect_failures") or 0)
                    cells.append("skipped" if r is None else
                                 fmt((r.get("connect_ms") or {}).get("p99"), 1) if opened else "n/a")
                else:
                    cells.append(idle_cell(r, key, digits, unit))
            out.append(f"| {title} | " + " | ".join(cells) + " |")
        out.append("")
        rss = {k: (idle.get(k) or {}).get("rss_per_connection_bytes") for k, *_ in IDLE}
        target = ratio(rss["herald-sio-ws"], rss["herald-ws"])
        verdict = "n/a" if target is None else ("met" if target <= TARGET_RATIO else "missed")
        out.append("| ratio of RSS per connection | value | |")
        out.append("|---|---:|---|")
        out.append(f"| Herald Socket.IO WebSocket ÷ Herald native WebSocket | "
                   f"{fmt(target, 2)} | target ≤ {TARGET_RATIO}: {verdict} |")
        for a, b, text in [("herald-sio-polling", "herald-ws", "Herald Socket.IO polling ÷ Herald native WebSocket"),
                           ("herald-sio-ws", "peer-sio-ws", f"Herald Socket.IO WebSocket ÷ Socket.IO {version} WebSocket"),
                           ("herald-sio-polling", "peer-sio-polling",
                            f"Herald Socket.IO polling ÷ Socket.IO {version} polling")]:
            out.append(f"| {text} | {fmt(ratio(rss[a], rss[b]), 2)} | |")
        out.append("")
    if any(fanout.values()):
        heads = [label.format(v=version) for _, label, *_ in FANOUT]
        out.append(f"### Fan-out: {args.rooms} rooms × {args.members} members, {args.publishers} publisher per room, "
                   f"{args.rate:g} publishes/s, {args.duration_secs:g} s, {args.payload_bytes}-byte data\n")
        out.append("Deliveries per server CPU-second, each round a fresh server per column, interleaved:\n")
        out.append("| round | " + " | ".join(heads) + " | Herald Socket.IO ÷ native | Herald Socket.IO ÷ Socket.IO |")
        out.append("|---|" + "---:|" * (len(heads) + 2))
        per = {k: [] for k, *_ in FANOUT}
        ratios = {"native": [], "peer": []}
        for i in range(args.rounds):
            vals = {}
            cells = []
            for k, *_ in FANOUT:
                runs = fanout.get(k) or []
                r = runs[i] if i < len(runs) else None
                v = (r or {}).get("deliveries_per_server_cpu_sec")
                vals[k] = v
                if v is not None:
                    per[k].append(v)
                if r is None:
                    cells.append("skipped")
                elif v is None:
                    cells.append("failed")
                else:
                    cells.append(fmt(v) + (" ✗" if r.get("error") else ""))
            a, b = ratio(vals["herald-sio"], vals["herald-ws"]), ratio(vals["herald-sio"], vals["peer-sio"])
            if a:
                ratios["native"].append(a)
            if b:
                ratios["peer"].append(b)
            out.append(f"| {i + 1} | " + " | ".join(cells) + f" | {fmt(a, 2)} | {fmt(b, 2)} |")
        if args.rounds > 1:
            med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
            out.append("| **median** | " + " | ".join(fmt(med(per[k])) for k, *_ in FANOUT)
                       + f" | **{fmt(med(ratios['native']), 2)}** | **{fmt(med(ratios['peer']), 2)}** |")
        out.append("")
        out.append("Per run (last round): latency, loss and whether the run held (p99 ≤ 100 ms, loss ≤ 0.1 %):\n")
        out.append("| measure | " + " | ".join(heads) + " |")
        out.append("|---|" + "---:|" * len(heads))
        last = {k: next((r for r in reversed(fanout.get(k) or []) if r), None) for k, *_ in FANOUT}
        rows = [
            ("deliveries per second", lambda r: fmt(r.get("deliveries_per_sec"))),
            ("latency p50 (ms)", lambda r: fmt((r.get("latency_ms") or {}).get("p50"), 1)),
            ("latency p99 (ms)", lambda r: fmt((r.get("latency_ms") or {}).get("p99"), 1)),
            ("loss", lambda r: f"{r.get('loss'):.4g}" if r.get("loss") is not None else "n/a"),
            ("server CPU (s)", lambda r: fmt(r.get("server_cpu_secs"), 2)),
            ("held", lambda r: "yes" if r.get("held") else "no"),
            ("connect failures", lambda r: fmt(r.get("connect_failures"))),
            ("unexpected frames", lambda r: fmt(r.get("unexpected_frames"))),
        ]
        for title, get in rows:
            out.append(f"| {title} | " + " | ".join(
                "skipped" if last[k] is None else ("failed" if "error" in last[k] and "loss" not in last[k]
                                                   else get(last[k])) for k, *_ in FANOUT) + " |")
        out.append("")
    failures = [f"{name}: {problem}" for name, r in
                [(f"idle {k}", r) for k, r in idle.items()]
                + [(f"fanout {k} round {i + 1}", r) for k, rs in fanout.items() for i, r in enumerate(rs)]
                if (problem := problem_of(r))]
    if failures:
        out.append("Problems:\n")
        out.extend(f"- {f}" for f in failures)
        out.append("")
    text = "\n".join(out)
    print(text)
    with open(os.path.join(args.results, "summary.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
