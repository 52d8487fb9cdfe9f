#!/usr/bin/env bash
# Cross-node fan-out benchmark: the same herald-load `fanout` run once against a
# single Herald node, and once across a two-node cluster relaying through Redis,
# where every publisher connects to node a (`--publish-url`) and every other
# member to node b (`--url`). Prints both JSON reports, then one summary line per
# run: deliveries/s, latency p50/p99 (ms), loss and whether the run held.
#
#   loadtest/cluster_bench.sh
#   ROOMS=20 RATE=500 DURATION=30 loadtest/cluster_bench.sh
#
# Knobs (environment), with their defaults: ROOMS=10 MEMBERS=100 PUBLISHERS=1
# (per room) RATE=200 (publishes/s, all publishers together) WARMUP=3 and
# DURATION=15 (seconds). RESULTS_DIR (default: a new directory under /tmp)
# keeps every node's log, herald-load's output and the reports.
#
# Builds `herald` and `herald-load` in release first (honouring CARGO_TARGET_DIR
# when it is set). Needs redis-server, curl and python3. Every process it starts
# is stopped when it exits, however it exits. Exit status: 0 when both runs
# passed (herald-load exited 0), 1 otherwise.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ROOMS="${ROOMS:-10}"
MEMBERS="${MEMBERS:-100}"
PUBLISHERS="${PUBLISHERS:-1}"
RATE="${RATE:-200}"
WARMUP="${WARMUP:-3}"
DURATION="${DURATION:-15}"
RESULTS="${RESULTS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cluster-bench.XXXXXX")}"

# Seconds a node (or Redis) may take to become ready.
READY_TIMEOUT=20
# Seconds a process gets to exit on SIGTERM before SIGKILL.
STOP_GRACE=15
# Seconds herald-load may take to open every connection.
CONNECT_TIMEOUT=30
# Longest one herald-load run may take: connecting, warm-up, window, drain, close.
# (WARMUP and DURATION may be fractional: whole seconds plus one each.)
LOAD_TIMEOUT=$((CONNECT_TIMEOUT + ${WARMUP%.*} + ${DURATION%.*} + 47))

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HERALD_BIN="$TARGET_DIR/release/herald"
HERALD_LOAD="$TARGET_DIR/release/herald-load"

# Processes started in the background and not yet stopped.
BACKGROUND=""

log() { printf '[cluster-bench] %s\n' "$*" >&2; }

# Stops one of our background processes, escalating to SIGKILL after STOP_GRACE;
# a process already stopped or reaped is left alone.
stop() {
  local pid="$1" waited=0
  case " $BACKGROUND " in
    *" $pid "*) ;;
    *) return 0 ;;
  esac
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOP_GRACE * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid still running after ${STOP_GRACE}s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  BACKGROUND=" $BACKGROUND "
  BACKGROUND="${BACKGROUND// $pid / }"
}

cleanup() {
  local pid
  for pid in $BACKGROUND; do
    stop "$pid"
  done
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Why the last start-up failed, for the summary.
FAILURE=""

# exited <what> <pid> <log>: reaps a background process that ended during
# start-up and sets FAILURE from its exit status and the end of its log.
exited() {
  local what="$1" pid="$2" logfile="$3" status=0
  wait "$pid" 2>/dev/null || status=$?
  BACKGROUND=" $BACKGROUND "
  BACKGROUND="${BACKGROUND// $pid / }"
  FAILURE="$what exited during start-up (status $status): $(tail -n 3 "$logfile" | tr '\n' ' ')"
}

# start_node <name> <port> [VAR=value...]: starts a Herald node in the
# background with the load settings (and any extra environment); sets NODE_PID.
start_node() {
  local name="$1" port="$2"
  shift 2
  (cd "$ROOT" && exec env \
    HERALD_SERVER__HOST=127.0.0.1 \
    HERALD_SERVER__PORT="$port" \
    HERALD_LIMITS__RATE_PER_SEC=1000000 \
    HERALD_LIMITS__RATE_BURST=1000000 \
    HERALD_LIMITS__OUTBOUND_QUEUE=65536 \
    RUST_LOG=warn \
    "$@" "$HERALD_BIN") >"$RESULTS/node-$name.log" 2>&1 &
  NODE_PID=$!
  BACKGROUND="$BACKGROUND $NODE_PID"
  log "node $name: pid $NODE_PID, port $port"
}

# wait_ready <name> <pid> <port>: waits until the node answers GET /readyz with
# 200; on failure sets FAILURE and returns 1.
wait_ready() {
  local name="$1" pid="$2" port="$3" deadline=$((SECONDS + READY_TIMEOUT))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz")" = 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      exited "node $name" "$pid" "$RESULTS/node-$name.log"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      FAILURE="node $name not ready after ${READY_TIMEOUT}s"
      return 1
    fi
    sleep 0.2
  done
}

# run_load <run> [herald-load flags...]: the fan-out run; its report goes to
# $RESULTS/<run>.json, herald-load's exit status to <run>.status.
run_load() {
  local run="$1" status=0
  shift
  log "$run: fanout, $ROOMS rooms x $MEMBERS members, $PUBLISHERS publisher(s) per room, $RATE publishes/s for ${DURATION}s"
  timeout --kill-after=10 "$LOAD_TIMEOUT" "$HERALD_LOAD" fanout \
    --rooms "$ROOMS" --members "$MEMBERS" --publishers "$PUBLISHERS" --rate "$RATE" \
    --warmup-secs "$WARMUP" --duration-secs "$DURATION" --connect-timeout-secs "$CONNECT_TIMEOUT" \
    --json "$@" >"$RESULTS/$run.stdout" 2>"$RESULTS/$run.stderr" &
  local load_pid=$!
  BACKGROUND="$BACKGROUND $load_pid"
  wait "$load_pid" || status=$?
  BACKGROUND=" $BACKGROUND "
  BACKGROUND="${BACKGROUND// $load_pid / }"
  echo "$status" >"$RESULTS/$run.status"
  # The report is the last line of stdout, when it is a JSON object.
  if tail -n 1 "$RESULTS/$run.stdout" | python3 -c 'import json, sys; json.loads(sys.stdin.read())' 2>/dev/null; then
    tail -n 1 "$RESULTS/$run.stdout" >"$RESULTS/$run.json"
  fi
  log "$run: herald-load exited $status ($(grep -v '^[[:space:]]*$' "$RESULTS/$run.stderr" | tail -n 1))"
}

# run_failed <run> <why>: records why a run could not be carried out, for the summary.
run_failed() {
  log "$1: $2"
  echo "$2" >"$RESULTS/$1.failed"
}

mkdir -p "$RESULTS"
log "building herald and herald-load (release)"
(cd "$ROOT" && cargo build --release -p herald -p herald-load)

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$RESULTS/redis.log" 2>&1 &
REDIS_PID=$!
BACKGROUND="$BACKGROUND $REDIS_PID"
deadline=$((SECONDS + READY_TIMEOUT))
until port_open "$REDIS_PORT"; do
  if ! kill -0 "$REDIS_PID" 2>/dev/null; then
    exited redis-server "$REDIS_PID" "$RESULTS/redis.log"
    log "$FAILURE"
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "redis-server not listening on port $REDIS_PORT after ${READY_TIMEOUT}s"
    exit 1
  fi
  sleep 0.1
done
log "redis-server: pid $REDIS_PID, port $REDIS_PORT"

# One node: publishers and members on the same node.
port="$(free_port)"
start_node single "$port"
single_pid=$NODE_PID
if wait_ready single "$single_pid" "$port"; then
  run_load single --url "ws://127.0.0.1:$port/ws" --server-pid "$single_pid"
else
  run_failed single "$FAILURE"
fi
stop "$single_pid"

# Two nodes: publishers on node a, every other member on node b.
port_a="$(free_port)"
start_node a "$port_a" HERALD_CLUSTER__ENABLED=true HERALD_CLUSTER__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HERALD_SERVER__NODE_ID=a
pid_a=$NODE_PID
port_b="$(free_port)"
start_node b "$port_b" HERALD_CLUSTER__ENABLED=true HERALD_CLUSTER__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HERALD_SERVER__NODE_ID=b
pid_b=$NODE_PID
if wait_ready a "$pid_a" "$port_a" && wait_ready b "$pid_b" "$port_b"; then
  run_load cluster --url "ws://127.0.0.1:$port_b/ws" --server-pid "$pid_b" \
    --publish-url "ws://127.0.0.1:$port_a/ws" --publish-server-pid "$pid_a"
else
  run_failed cluster "$FAILURE"
fi
stop "$pid_a"
stop "$pid_b"

python3 - "$RESULTS" <<'PY'
import json, os, sys

results = sys.argv[1]
runs = [("single", "single node"), ("cluster", "two nodes (publish on a, deliver on b)")]
passed = True
print()
for run, title in runs:
    path = os.path.join(results, run + ".json")
    print(f"{title}:")
    print(open(path).read().strip() if os.path.exists(path) else "(no report)")
print()
for run, title in runs:
    base = os.path.join(results, run)
    status = open(base + ".status").read().strip() if os.path.exists(base + ".status") else None
    passed = passed and status == "0"
    if os.path.exists(base + ".failed"):
        line = "did not run: " + open(base + ".failed").read().strip()
    elif not os.path.exists(base + ".json"):
        line = f"herald-load exited {status} without a report"
    else:
        r = json.load(open(base + ".json"))
        if "error" in r:
            line = f"herald-load could not run: {r['error']}"
        else:
            line = (
                f"{r['deliveries_per_sec']:,.0f} deliveries/s, latency p50 {r['latency_ms']['p50']} ms"
                f" p99 {r['latency_ms']['p99']} ms, loss {r['loss']:.6g}"
                + (", held" if r["held"] else ", not held: " + "; ".join(r["not_held_because"]))
            )
    print(f"{title:<40} {line}")
print(f"\nlogs and reports: {results}")
sys.exit(0 if passed else 1)
PY
