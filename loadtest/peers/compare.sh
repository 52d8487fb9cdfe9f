#!/usr/bin/env bash
# Side-by-side load comparison of Herald and its peers (Node ws, uWebSockets.js,
# Socket.IO). `herald-socketio` is Herald again, driven through its Socket.IO
# endpoint (/socket.io/) in the Socket.IO dialect. Each server is started fresh for every load, driven by the same
# herald-load invocation, and its JSON report saved under
# loadtest/peers/results/<timestamp>/. Markdown tables (servers as columns) are
# printed at the end; a run that failed shows as failed, with its reason.
#
# The kernel's floors for the same shapes run last: ../shared/tools/send_floor.c
# (fan-out) and loadtest/ping_floor.c (idle connections with heartbeats).
#
# Knobs (environment): SERVERS, FANOUT, ROUNDS, PORT, IDLE_SIZES, HOLD_SECS, ROOMS, MEMBERS,
# PUBLISHERS, RATE, DURATION, PAYLOAD_BYTES, RAMP_START, RAMP_FACTOR,
# RAMP_STEP_SECS, RAMP_MAX_RATE, FINAL, LOAD_ARGS, SKIP_BUILD, RESULTS_DIR,
# LOAD_BIN, HERALD_BIN, IDLE_TIMEOUT, FANOUT_TIMEOUT, RAMP_TIMEOUT, START_TIMEOUT. See README.md.

set -uo pipefail

PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PEERS_DIR/../.." && pwd)"

SERVERS="${SERVERS:-herald ws uws socketio}"
PORT="${PORT:-3000}"
# Empty IDLE_SIZES skips the idle loads.
IDLE_SIZES="${IDLE_SIZES-1000 10000 19000}"
HOLD_SECS="${HOLD_SECS:-10}"
ROOMS="${ROOMS:-100}"
MEMBERS="${MEMBERS:-100}"
PUBLISHERS="${PUBLISHERS:-1}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-20}"
PAYLOAD_BYTES="${PAYLOAD_BYTES:-100}"
RAMP_START="${RAMP_START:-200}"
RAMP_FACTOR="${RAMP_FACTOR:-1.5}"
RAMP_STEP_SECS="${RAMP_STEP_SECS:-10}"
RAMP_MAX_RATE="${RAMP_MAX_RATE:-1000000}"
FINAL="${FINAL:-1}"
# FANOUT=0 runs the idle loads only.
FANOUT="${FANOUT:-1}"
# Rounds of the fixed-rate fan-out, every server and the send() floor once per
# round, interleaved; the tables give each round and the median.
ROUNDS="${ROUNDS:-1}"
LOAD_ARGS="${LOAD_ARGS:-}"
SKIP_BUILD="${SKIP_BUILD:-0}"
START_TIMEOUT="${START_TIMEOUT:-30}"
# Upper bounds on one herald-load run, in seconds; a run past its bound is killed
# and reported as failed. Idle allows ~20 ms per connection on top of the hold.
IDLE_TIMEOUT="${IDLE_TIMEOUT:-}"
FANOUT_TIMEOUT="${FANOUT_TIMEOUT:-$((DURATION + 180))}"
RAMP_TIMEOUT="${RAMP_TIMEOUT:-900}"

# cargo builds into $CARGO_TARGET_DIR when it is set.
RELEASE_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
HERALD_LOAD="${LOAD_BIN:-$RELEASE_DIR/herald-load}"
HERALD_BIN="${HERALD_BIN:-$RELEASE_DIR/herald}"
RESULTS="${RESULTS_DIR:-$PEERS_DIR/results/$(date +%Y%m%d-%H%M%S)}"
RUNS="$RESULTS/runs.tsv"
SIZE_TAG="${ROOMS}x${MEMBERS}"

SERVER_PID=""
LOAD_PID=""
START_ERROR=""
# "server mode size" of the run in flight.
CURRENT_RUN=""

log() { printf '[compare] %s\n' "$*" >&2; }

# Stops a process and waits for it to be gone, escalating to SIGKILL.
stop_pid() {
  local pid="$1" grace="$2" waited=0
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((grace * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after ${grace}s, killing"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  # `timeout` forwards the signal to herald-load and its worker processes.
  stop_pid "$LOAD_PID" 15
  LOAD_PID=""
  stop_pid "$SERVER_PID" 20
  SERVER_PID=""
}
# An interrupted run still gets its tables, with the run in flight marked failed.
on_signal() {
  log "interrupted"
  cleanup
  if [ -n "$CURRENT_RUN" ]; then
    # shellcheck disable=SC2086 # CURRENT_RUN holds three words.
    record $CURRENT_RUN failed "-" "interrupted" ""
  fi
  [ -s "$RUNS" ] && print_tables | tee "$RESULTS/summary.md"
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# One line per run: server, mode, size, status, exit code, reason, report file
# (relative to the results directory, so that it can be moved).
record() {
  CURRENT_RUN=""
  local reason="${6//$'\t'/ }"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${reason//$'\n'/ }" "$7" >>"$RUNS"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts one server on $PORT in the background and waits until it accepts TCP
# connections. Sets SERVER_PID; on failure returns non-zero with START_ERROR set.
start_server() {
  local server="$1" logfile="$2" waited=0
  START_ERROR=""
  if port_open "$PORT"; then
    START_ERROR="port $PORT is already in use by another process"
    return 1
  fi
  case "$server" in
    herald | herald-socketio)
      (cd "$ROOT" && exec env \
        HERALD_SERVER__HOST=127.0.0.1 \
        HERALD_SERVER__PORT="$PORT" \
        HERALD_LIMITS__RATE_PER_SEC=1000000 \
        HERALD_LIMITS__RATE_BURST=1000000 \
        HERALD_LIMITS__OUTBOUND_QUEUE=65536 \
        HERALD_LIMITS__MAX_MESSAGE_BYTES=1048576 \
        RUST_LOG=warn \
        "$HERALD_BIN") >"$logfile" 2>&1 &
      ;;
    ws | uws | socketio)
      # A simple command in the background is node itself, so $! is the PID
      # herald-load samples for CPU and RSS.
      PORT="$PORT" node "$PEERS_DIR/$server/server.js" >"$logfile" 2>&1 &
      ;;
    *)
      START_ERROR="unknown server '$server'"
      return 1
      ;;
  esac
  SERVER_PID=$!
  while ! port_open "$PORT"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null
      START_ERROR="exited during start-up (status $?): $(tail -n 3 "$logfile" | tr '\n' ' ')"
      SERVER_PID=""
      return 1
    fi
    if [ "$waited" -ge $((START_TIMEOUT * 10)) ]; then
      START_ERROR="not listening on port $PORT after ${START_TIMEOUT}s"
      stop_pid "$SERVER_PID" 5
      SERVER_PID=""
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  return 0
}

url_for() {
  case "$1" in
    herald) echo "ws://127.0.0.1:$PORT/ws" ;;
    ws | uws) echo "ws://127.0.0.1:$PORT/" ;;
    # The base URL: herald-load adds /socket.io/?EIO=4&transport=websocket.
    socketio | herald-socketio) echo "ws://127.0.0.1:$PORT" ;;
  esac
}

dialect_for() {
  case "$1" in
    socketio | herald-socketio) echo socketio ;;
    *) echo herald ;;
  esac
}

# run_load <server> <mode-tag> <size-tag> <timeout> <herald-load args...>
# Starts a fresh server, runs herald-load against it, saves the report and the
# outcome, and stops the server.
run_load() {
  local server="$1" tag="$2" size="$3" limit="$4"
  shift 4
  local base="$RESULTS/$server-$tag-$size"
  local report="$base.json" reason rc
  log "$server: $tag $size"
  CURRENT_RUN="$server $tag $size"
  if ! start_server "$server" "$base.server.log"; then
    log "$server failed to start: $START_ERROR"
    record "$server" "$tag" "$size" failed "-" "server failed to start: $START_ERROR" ""
    return 1
  fi
  # shellcheck disable=SC2086 # LOAD_ARGS is a list of extra flags.
  timeout --kill-after=10 "$limit" "$HERALD_LOAD" "$@" \
    --url "$(url_for "$server")" --dialect "$(dialect_for "$server")" \
    --server-pid "$SERVER_PID" --json $LOAD_ARGS \
    >"$base.stdout" 2>"$base.stderr" &
  LOAD_PID=$!
  wait "$LOAD_PID"
  rc=$?
  LOAD_PID=""
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" 2>/dev/null
    reason="server died during the run (status $?): $(tail -n 2 "$base.server.log" | tr '\n' ' ')"
    SERVER_PID=""
    [ "$rc" -ne 0 ] || rc=1
  else
    stop_pid "$SERVER_PID" 20
    SERVER_PID=""
    reason=""
  fi
  # The report is the last line of stdout, when it is a JSON object.
  tail -n 1 "$base.stdout" | python3 -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null &&
    tail -n 1 "$base.stdout" >"$report"
  [ -f "$report" ] || report=""
  if [ "$rc" -eq 0 ] && [ -z "$reason" ]; then
    if [ -z "$report" ]; then
      record "$server" "$tag" "$size" failed "$rc" "no JSON report on stdout" ""
      return 1
    fi
    record "$server" "$tag" "$size" ok 0 "" "$(basename "$report")"
    return 0
  fi
  if [ -z "$reason" ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      reason="herald-load killed after ${limit}s"
    else
      reason="$(grep -v '^[[:space:]]*$' "$base.stderr" | tail -n 1)"
      reason="exit $rc: ${reason:-no message}"
    fi
  fi
  log "$server $tag $size failed: $reason"
  record "$server" "$tag" "$size" failed "$rc" "$reason" "${report:+$(basename "$report")}"
  return 1
}

fanout_args() {
  echo --rooms "$ROOMS" --members "$MEMBERS" --publishers "$PUBLISHERS" --payload-bytes "$PAYLOAD_BYTES"
}

run_server() {
  local server="$1" size limit
  for size in $IDLE_SIZES; do
    limit="${IDLE_TIMEOUT:-$((HOLD_SECS + 120 + size / 50))}"
    run_load "$server" idle "$size" "$limit" idle --connections "$size" --hold-secs "$HOLD_SECS"
  done
  [ "$FANOUT" = 1 ] || return 0
  # shellcheck disable=SC2046 # fanout_args is a list of flags.
  run_load "$server" fanout "$SIZE_TAG" "$FANOUT_TIMEOUT" \
    fanout $(fanout_args) --rate "$RATE" --duration-secs "$DURATION"
  # shellcheck disable=SC2046
  run_load "$server" ramp "$SIZE_TAG" "$RAMP_TIMEOUT" \
    ramp $(fanout_args) --start-rate "$RAMP_START" --factor "$RAMP_FACTOR" \
    --step-secs "$RAMP_STEP_SECS" --max-rate "$RAMP_MAX_RATE"
  [ "$FINAL" = 1 ] || return 0
  local ramp_report="$RESULTS/$server-ramp-$SIZE_TAG.json" held=""
  if [ -f "$ramp_report" ]; then
    held="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(int((r.get("max_held_rate") or 0)//2))' "$ramp_report" 2>/dev/null)"
  fi
  if [ -z "$held" ] || [ "$held" -le 0 ]; then
    record "$server" final "$SIZE_TAG" failed "-" "the ramp gave no held rate to halve" ""
    return 0
  fi
  # shellcheck disable=SC2046
  run_load "$server" final "$SIZE_TAG" "$FANOUT_TIMEOUT" \
    fanout $(fanout_args) --rate "$held" --duration-secs "$DURATION"
}

# The kernel's floor for the fan-out shape: a C program that does nothing but
# one send() per delivery (SEND_FLOOR_C, default ../shared/tools/send_floor.c
# beside the repository), in this same run. Skipped when the source is absent.
send_floor() {
  local src="${SEND_FLOOR_C:-$ROOT/../shared/tools/send_floor.c}" bin="$RESULTS/send_floor"
  local out="$RESULTS/send_floor${1:+-$1}.json"
  if [ ! -f "$src" ] || ! command -v cc >/dev/null; then
    log "send_floor: $src or cc missing, skipped"
    return 0
  fi
  [ -x "$bin" ] || cc -O2 -o "$bin" "$src" || { log "send_floor: build failed"; return 0; }
  log "send_floor: $ROOMS rooms x $MEMBERS members, $RATE publishes/s, ${DURATION}s"
  timeout $((DURATION + 60)) "$bin" "$PORT" "$ROOMS" "$MEMBERS" "$RATE" "$DURATION" | head -1 >"$out"
  log "send_floor: $(cat "$out")"
}

# The kernel's floor for idle connections with heartbeats: a C program that
# does nothing but ping every connection every 25 s (Herald's default) and read
# the pongs (loadtest/ping_floor.c), at the first idle size, for HOLD_SECS, in
# this same run.
ping_floor() {
  local src="$ROOT/loadtest/ping_floor.c" bin="$RESULTS/ping_floor" size
  size="$(echo "$IDLE_SIZES" | awk '{print $1}')"
  if [ -z "$size" ] || ! command -v cc >/dev/null; then
    log "ping_floor: no idle size or no cc, skipped"
    return 0
  fi
  cc -O2 -o "$bin" "$src" || { log "ping_floor: build failed"; return 0; }
  log "ping_floor: $size connections, a ping every 25 s, ${HOLD_SECS}s"
  timeout $((HOLD_SECS + 120)) "$bin" "$PORT" "$size" 25000 "$HOLD_SECS" | head -1 >"$RESULTS/ping_floor.json"
  log "ping_floor: $(cat "$RESULTS/ping_floor.json")"
}

print_tables() {
  python3 - "$RESULTS" "$SERVERS" <<'PY'
import csv, json, os, sys

results, servers = sys.argv[1], sys.argv[2].split()
runs = {}
with open(os.path.join(results, "runs.tsv")) as f:
    for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
        server, mode, size, status, code, reason, path = row
        report = None
        path = os.path.join(results, path) if path else ""
        if path and os.path.exists(path):
            with open(path) as rf:
                report = json.load(rf)
        runs[(server, mode, size)] = {"status": status, "reason": reason, "report": report}

loads = []
for key in runs:
    load = key[1:]
    if load not in loads:
        loads.append(load)
order = {"idle": 0, "fanout": 1, "ramp": 2, "final": 3}
loads.sort(key=lambda l: (order.get(l[0], 9), int(l[1]) if l[1].isdigit() else 0))

def dig(report, path):
    value = report
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    if isinstance(value, dict) and "count" in value:
        value = value["count"]
    if isinstance(value, list):
        value = len(value)
    return value

def fmt(value):
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) < 1:
            return f"{value:.4g}"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)

def label(load, report):
    mode, size = load
    if mode == "idle":
        return f"idle {int(size):,} conns"
    if mode == "ramp":
        return f"ramp {size}"
    if mode == "final":
        return f"fanout {size} at half the highest held rate"
    rate = dig(report, "rate") if report else None
    return f"fanout {size}" + (f" @ {fmt(rate)}/s" if rate is not None else "")

def table(title, modes, path):
    rows = []
    for load in loads:
        if load[0] not in modes:
            continue
        cells, name = [], None
        for server in servers:
            run = runs.get((server,) + load)
            if run is None:
                cells.append("not run")
                continue
            report = run["report"]
            if report is not None and name is None:
                name = label(load, report)
            if report is None:
                cells.append("failed")
            else:
                cell = fmt(dig(report, path))
                cells.append(cell + (" ✗" if run["status"] != "ok" else ""))
        rows.append([name or label(load, None)] + cells)
    if not rows:
        return
    print(f"### {title}\n")
    print("| load | " + " | ".join(servers) + " |")
    print("|---|" + "---:|" * len(servers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()

print(f"## Results in {results}\n")
print("✗: the run exited non-zero (see Runs); its figures are shown but did not pass.\n")
print("### Runs\n")
print("| load | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))
for load in loads:
    cells = []
    for server in servers:
        run = runs.get((server,) + load)
        if run is None:
            cells.append("not run")
        elif run["status"] == "ok":
            cells.append("ok")
        else:
            cells.append("FAILED: " + run["reason"].replace("|", "/")[:160])
    print(f"| {load[0]} {load[1]} | " + " | ".join(cells) + " |")
print()

idle = {"idle"}
fan = {"fanout", "final"}
table("Idle: connect p50 (ms)", idle, "connect_ms.p50")
table("Idle: connect p99 (ms)", idle, "connect_ms.p99")
table("Idle: total connect time (s)", idle, "connect_secs_total")
table("Idle: server RSS per connection (bytes)", idle, "rss_per_connection_bytes")
table("Idle: server RSS after connecting (KiB)", idle, "server_rss_after_kb")
table("Idle: server CPU while idle (ms per s per 1k conns)", idle, "server_cpu_ms_per_sec_per_1k_conns")
table("Connect failures", idle | fan, "connect_failures")
table("Closed early", idle | fan, "closed_early")
table("Unexpected frames", idle | fan, "unexpected_frames")
table("Fan-out: publish rate (publishes/s)", fan, "rate")
table("Fan-out: deliveries per second", fan, "deliveries_per_sec")
table("Fan-out: latency p50 (ms)", fan, "latency_ms.p50")
table("Fan-out: latency p99 (ms)", fan, "latency_ms.p99")
table("Fan-out: latency p99.9 (ms)", fan, "latency_ms.p999")
table("Fan-out: latency max (ms)", fan, "latency_ms.max")
table("Fan-out: loss", fan, "loss")
table("Fan-out: deliveries per server CPU second", fan, "deliveries_per_server_cpu_sec")
table("Fan-out: held (p99 and loss within limits)", fan, "held")
table("Ramp: highest held publish rate (publishes/s)", {"ramp"}, "max_held_rate")
table("Ramp: deliveries per second at the highest held rate", {"ramp"}, "max_held.deliveries_per_sec")
table("Ramp: latency p99 at the highest held rate (ms)", {"ramp"}, "max_held.latency_ms.p99")
table("Ramp: steps run", {"ramp"}, "steps")

# Round 1 is the fan-out run; rounds 2.. repeat it, each server and the send()
# floor once per round. The median of the per-round ratios is the comparison.
def floor_of(name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f).get("deliveries_per_cpu_s")
    except ValueError:
        return None

fanout_load = next((l for l in loads if l[0] == "fanout"), None)
rounds = []
if fanout_load is not None:
    rounds.append(("1", {s: runs.get((s,) + fanout_load) for s in servers}, floor_of("send_floor.json")))
    for load in loads:
        if load[0] == "round":
            n = load[1].rsplit("-", 1)[1]
            rounds.append((n, {s: runs.get((s,) + load) for s in servers}, floor_of(f"send_floor-{n}.json")))
if len(rounds) > 1:
    # A run that missed its latency bound still measured its CPU per delivery,
    # as in the tables above.
    def rate(run):
        if run is None or run["report"] is None:
            return None
        return dig(run["report"], "deliveries_per_server_cpu_sec")
    def median(values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    first = servers[0]
    others = servers[1:]
    heads = servers + ["send_floor"] + [f"{first} ÷ {o}" for o in others] + [f"{first} ÷ send_floor"]
    print(f"### Fan-out rounds: deliveries per server CPU second, {fanout_load[1]}\n")
    print("| round | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    columns = {h: [] for h in heads}
    for n, by_server, floor in rounds:
        values = {s: rate(by_server[s]) for s in servers}
        values["send_floor"] = floor
        mine = values[first]
        for o in others + ["send_floor"]:
            theirs = values[o]
            values[f"{first} ÷ {o}"] = mine / theirs if mine and theirs else None
        for h in heads:
            columns[h].append(values[h])
        print(f"| {n} | " + " | ".join(fmt(values[h]) if "÷" not in h or values[h] is None else f"{values[h]:.2f}" for h in heads) + " |")
    meds = {h: median(columns[h]) for h in heads}
    print("| median | " + " | ".join(fmt(meds[h]) if "÷" not in h or meds[h] is None else f"{meds[h]:.2f}" for h in heads) + " |")
    print()
PY
}

main() {
  if [ "${1:-}" = --tables ]; then
    [ -f "${2:-}/runs.tsv" ] || { log "usage: compare.sh --tables <results dir>"; exit 2; }
    RESULTS="$(cd "$2" && pwd)"
    SERVERS="$(cut -f1 "$RESULTS/runs.tsv" | awk '!seen[$0]++' | tr '\n' ' ')"
    print_tables
    exit 0
  fi
  command -v python3 >/dev/null || { log "python3 is required"; exit 2; }
  command -v timeout >/dev/null || { log "timeout (coreutils) is required"; exit 2; }
  if [ "$SKIP_BUILD" != 1 ]; then
    log "building herald and herald-load (release)"
    (cd "$ROOT" && cargo build --release -p herald -p herald-load) || { log "build failed"; exit 2; }
  fi
  [ -x "$HERALD_LOAD" ] || { log "$HERALD_LOAD is missing"; exit 2; }
  local server
  for server in $SERVERS; do
    case "$server" in
      herald | herald-socketio) [ -x "$HERALD_BIN" ] || { log "$HERALD_BIN is missing"; exit 2; } ;;
      ws | uws | socketio)
        command -v node >/dev/null || { log "node is required for $server"; exit 2; }
        if [ ! -d "$PEERS_DIR/$server/node_modules" ]; then
          log "npm ci in $server/"
          (cd "$PEERS_DIR/$server" && npm ci --no-audit --no-fund) || { log "npm ci failed in $server/"; exit 2; }
        fi
        ;;
      *) log "unknown server '$server' (known: herald herald-socketio ws uws socketio)"; exit 2 ;;
    esac
  done
  mkdir -p "$RESULTS"
  : >"$RUNS"
  log "results in $RESULTS"
  for server in $SERVERS; do
    run_server "$server"
  done
  [ "$FANOUT" = 1 ] && send_floor
  if [ "$FANOUT" = 1 ] && [ "$ROUNDS" -gt 1 ]; then
    local round
    for round in $(seq 2 "$ROUNDS"); do
      for server in $SERVERS; do
        # shellcheck disable=SC2046 # fanout_args is a list of flags.
        run_load "$server" round "$SIZE_TAG-$round" "$FANOUT_TIMEOUT" \
          fanout $(fanout_args) --rate "$RATE" --duration-secs "$DURATION"
      done
      send_floor "$round"
    done
  fi
  ping_floor
  print_tables | tee "$RESULTS/summary.md"
}

main "$@"
