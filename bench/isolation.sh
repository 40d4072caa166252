#!/usr/bin/env bash
# Pool isolation benchmark: does a flood of the shared pool disturb a dedicated pool's stream?
#
# On this machine: one Redis (pinned to core $REDIS_CPU), a shared-pool worker pinned to core
# $SHARED_CPU and a `--pool premium` worker pinned to core $PREMIUM_CPU, on that one Redis and
# one media directory, as a cluster's pools are. Tenant `noisy` (shared pool) gets
# $FLOOD_PUBLISHERS stream keys, tenant `acme` (pool premium) one key per phase. Then two
# phases of $MEASURE s each, the premium stream measured the same way in both:
#   1. idle:    the shared pool carries nothing;
#   2. flooded: `tidegate bench` drives $FLOOD_PUBLISHERS RTMP publishers of tenant noisy
#               (the standard 3.3 Mbit/s clip, --keys) into the shared worker, and
#               bench/garbage.py opens $GARBAGE_TCP garbage TCP connections at a time to its
#               RTMP port and sends $GARBAGE_UDP_RATE random datagrams a second to its SRT port,
#               all on core $SHARED_CPU; measuring starts once the flood has ramped up.
# The premium stream: one `tidegate bench` RTMP publisher of acme into the premium worker and
# $VIEWERS hls.js-like viewers of it (loadgen's viewer: reload every target duration / 2,
# start 3 segments from the live edge; no new segment for 2 target durations is a stall),
# on core $PREMIUM_CPU. Keyframe → listed is the premium worker's own
# tidegate_segment_latency_seconds over the phase (bench's server_segment_latency).
# It prints both phases side by side (also in $OUT/table.md) and where the raw files are.
# A benchmark, not a test: figures move with what else runs on the machine (the load average
# at each phase's start is printed with them).
#
# Knobs (environment): MEASURE (60), FLOOD_PUBLISHERS (200), FLOOD_RAMP (50/s),
# FLOOD_WARMUP (12 s after the flood starts), GARBAGE_TCP (200), GARBAGE_UDP_RATE (2000),
# VIEWERS (3), SHARED_CPU (0), PREMIUM_CPU (1), REDIS_CPU (1), NICE (0: the niceness of every
# process it starts; a negative one, as root, keeps other work on the machine from blurring
# the figures — all of them get the same), the ports SHARED_RTMP (1935),
# SHARED_SRT (9000), SHARED_HTTP (8080), PREMIUM_RTMP (1936), PREMIUM_SRT (9001),
# PREMIUM_HTTP (8081), REDIS_PORT (16379); OUT, CARGO_TARGET_DIR, TIDEGATE_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MEASURE="${MEASURE:-60}"
FLOOD_PUBLISHERS="${FLOOD_PUBLISHERS:-200}"
FLOOD_RAMP="${FLOOD_RAMP:-50}"
FLOOD_WARMUP="${FLOOD_WARMUP:-12}"
GARBAGE_TCP="${GARBAGE_TCP:-200}"
GARBAGE_UDP_RATE="${GARBAGE_UDP_RATE:-2000}"
VIEWERS="${VIEWERS:-3}"
SHARED_CPU="${SHARED_CPU:-0}"
PREMIUM_CPU="${PREMIUM_CPU:-1}"
REDIS_CPU="${REDIS_CPU:-1}"
NICE="${NICE:-0}"
SHARED_RTMP="${SHARED_RTMP:-1935}"
SHARED_SRT="${SHARED_SRT:-9000}"
SHARED_HTTP="${SHARED_HTTP:-8080}"
PREMIUM_RTMP="${PREMIUM_RTMP:-1936}"
PREMIUM_SRT="${PREMIUM_SRT:-9001}"
PREMIUM_HTTP="${PREMIUM_HTTP:-8081}"
REDIS_PORT="${REDIS_PORT:-16379}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tidegate-bench"
OUT="${OUT:-$(mktemp -d /tmp/tidegate-isolation.XXXXXX)}"
TOKEN="isolation-bench-operator-token"
BENCH_NAME=isolation
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

bench_tools taskset curl python3 redis-server
build_tidegate
make_clip

for port in "$SHARED_RTMP" "$SHARED_HTTP" "$PREMIUM_RTMP" "$PREMIUM_HTTP" "$REDIS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    log "port $port is in use: set SHARED_*/PREMIUM_*/REDIS_PORT"
    exit 1
  fi
done
for port in "$SHARED_SRT" "$PREMIUM_SRT"; do
  if udp_busy "$port"; then
    log "udp port $port is in use: set SHARED_SRT/PREMIUM_SRT"
    exit 1
  fi
done

# Every process is started as `nice -n $NICE taskset -c CPU COMMAND`: nice and taskset exec
# COMMAND, so `$!` is its pid (for the CPU figures and the stop at the end).
log "results in $OUT"
mkdir -p "$OUT/redis" "$OUT/media" "$OUT/idle" "$OUT/flooded"
nice -n "$NICE" taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
  --appendonly no --dir "$OUT/redis" >"$OUT/redis.log" 2>&1 &
SERVER_PIDS="$!"
wait_tcp "$REDIS_PORT"

# start_worker NAME CPU RTMP SRT HTTP [ARG...]: a worker on the shared Redis and media
# directory, its caps raised for one address's 200 publishers and garbage; sets WORKER_PID.
start_worker() {
  local name="$1" cpu="$2" rtmp="$3" srt="$4" http="$5"
  shift 5
  nice -n "$NICE" taskset -c "$cpu" "$TIDEGATE_BIN" serve \
    --rtmp-listen "127.0.0.1:$rtmp" --srt-listen "127.0.0.1:$srt" \
    --http-listen "127.0.0.1:$http" --data-dir "$OUT/$name" \
    --state "redis://127.0.0.1:$REDIS_PORT" --storage "file://$OUT/media" \
    --worker-id "$name" --admin-token "$TOKEN" \
    --max-connections 4096 --max-connections-per-ip 2048 --max-publishers 512 \
    "$@" >"$OUT/$name.log" 2>&1 &
  WORKER_PID="$!"
  SERVER_PIDS="$SERVER_PIDS $WORKER_PID"
  local i
  for i in $(seq 100); do
    if curl -fs "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$name not ready; its log:"
  tail -20 "$OUT/$name.log" >&2
  exit 1
}

start_worker shared "$SHARED_CPU" "$SHARED_RTMP" "$SHARED_SRT" "$SHARED_HTTP"
SHARED_PID="$WORKER_PID"

# The tenants, through the shared worker's API (the premium worker reads them at its start).
# Keys are secrets: they go to files only readable here and are never printed.
(umask 077 && python3 - "http://127.0.0.1:$SHARED_HTTP/api/v1" "$TOKEN" "$FLOOD_PUBLISHERS" "$OUT" <<'EOF'
import json, sys, urllib.request
api, token, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def call(path, body):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
call("/tenants", {"name": "noisy", "pool": None})
call("/tenants", {"name": "acme", "pool": "premium"})
with open(f"{out}/noisy.keys", "w") as f:
    for i in range(n):
        f.write(call("/tenants/noisy/keys", {"stream": f"s{i}"})["key"] + "\n")
for phase in ("idle", "flooded"):
    with open(f"{out}/{phase}/premium.keys", "w") as f:
        f.write(call("/tenants/acme/keys", {"stream": phase})["key"] + "\n")
EOF
)
log "tenants: noisy (shared pool, $FLOOD_PUBLISHERS keys), acme (pool premium)"

start_worker premium "$PREMIUM_CPU" "$PREMIUM_RTMP" "$PREMIUM_SRT" "$PREMIUM_HTTP" --pool premium
PREMIUM_PID="$WORKER_PID"

# premium_run PHASE: the premium stream (acme/PHASE) and its viewers for $MEASURE s, with the
# workers' CPU over the same window and the load average at its start.
premium_run() {
  local phase="$1" t0 t1 s0 s1 p0 p1
  cut -d' ' -f1-3 /proc/loadavg >"$OUT/$phase/loadavg"
  grep '^cpu[0-9]' /proc/stat >"$OUT/$phase/stat0"
  t0="$(date +%s.%N)"; s0="$(cpu_ticks "$SHARED_PID")"; p0="$(cpu_ticks "$PREMIUM_PID")"
  nice -n "$NICE" taskset -c "$PREMIUM_CPU" "$TIDEGATE_BIN" bench \
    --url "rtmp://127.0.0.1:$PREMIUM_RTMP/live/{key}" --keys "$OUT/$phase/premium.keys" \
    --input "$CLIP" --publishers 1 --duration "${MEASURE}s" \
    --viewers "$VIEWERS" --play-url "http://127.0.0.1:$PREMIUM_HTTP/hls/acme/$phase/index.m3u8" \
    --quiet --json "$OUT/$phase/premium.json" >"$OUT/$phase/premium.txt" 2>"$OUT/$phase/premium.err" \
    || log "$phase: the premium bench exited with $?"
  t1="$(date +%s.%N)"; s1="$(cpu_ticks "$SHARED_PID")"; p1="$(cpu_ticks "$PREMIUM_PID")"
  grep '^cpu[0-9]' /proc/stat >"$OUT/$phase/stat1"
  # Each core's busy share over the window (everything on it, not only these processes).
  python3 -c "import json,sys; t=float(sys.argv[2])-float(sys.argv[1]); k=float(sys.argv[7])
def cores(path):
    out = {}
    for line in open(path):
        f = line.split(); v = [int(x) for x in f[1:9]]
        out[f[0]] = (sum(v), v[3] + v[4])
    return out
a, b = cores(sys.argv[9]), cores(sys.argv[10])
busy = {c: 100 * (1 - (b[c][1] - a[c][1]) / max(1, b[c][0] - a[c][0])) for c in a}
json.dump({'shared_cpu_percent': (int(sys.argv[4])-int(sys.argv[3]))/k/t*100,
           'premium_cpu_percent': (int(sys.argv[6])-int(sys.argv[5]))/k/t*100,
           'core_busy_percent': busy, 'seconds': t}, open(sys.argv[8], 'w'))" \
    "$t0" "$t1" "$s0" "$s1" "$p0" "$p1" "$CLK_TCK" "$OUT/$phase/cpu.json" \
    "$OUT/$phase/stat0" "$OUT/$phase/stat1"
}

log "phase 1/2: shared pool idle; premium stream for ${MEASURE}s"
premium_run idle

log "phase 2/2: flooding the shared pool ($FLOOD_PUBLISHERS publishers at $FLOOD_RAMP/s, $GARBAGE_TCP garbage TCP connections, $GARBAGE_UDP_RATE garbage datagrams/s)"
FLOOD_SECONDS=$((FLOOD_WARMUP + MEASURE + 5))
nice -n "$NICE" taskset -c "$SHARED_CPU" "$TIDEGATE_BIN" bench \
  --url "rtmp://127.0.0.1:$SHARED_RTMP/live/{key}" --keys "$OUT/noisy.keys" \
  --input "$CLIP" --publishers "$FLOOD_PUBLISHERS" --ramp-up-rate "$FLOOD_RAMP/s" \
  --duration "${FLOOD_SECONDS}s" --metrics-url "http://127.0.0.1:$SHARED_HTTP/metrics" \
  --quiet --json "$OUT/flooded/flood.json" >"$OUT/flooded/flood.txt" 2>"$OUT/flooded/flood.err" &
FLOOD_PID="$!"
nice -n "$NICE" taskset -c "$SHARED_CPU" python3 "$ROOT/bench/garbage.py" \
  --tcp "127.0.0.1:$SHARED_RTMP" --tcp-conns "$GARBAGE_TCP" \
  --udp "127.0.0.1:$SHARED_SRT" --udp-rate "$GARBAGE_UDP_RATE" --duration "$FLOOD_SECONDS" \
  >"$OUT/flooded/garbage.json" 2>"$OUT/flooded/garbage.err" &
GARBAGE_PID="$!"
SERVER_PIDS="$SERVER_PIDS $FLOOD_PID $GARBAGE_PID"
sleep "$FLOOD_WARMUP"
log "flood ramped up; premium stream for ${MEASURE}s"
premium_run flooded
wait "$FLOOD_PID" || log "the flood generator exited with $?"
wait "$GARBAGE_PID" || log "the garbage generator exited with $?"
curl -fs "http://127.0.0.1:$SHARED_HTTP/metrics" >"$OUT/flooded/shared-metrics.txt" || true
stop_server

python3 - "$OUT" "$REDIS_CPU" "$NICE" "$SHARED_CPU" "$PREMIUM_CPU" <<'EOF' | tee "$OUT/table.md"
import json, os, sys
out, redis_cpu, niceness, shared_cpu, premium_cpu = sys.argv[1:6]
def load(*p):
    try:
        with open(os.path.join(out, *p)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
def ms(v):
    return "–" if v is None else f"{v:.1f}"
rows = []
phases = {}
for phase in ("idle", "flooded"):
    r, cpu = load(phase, "premium.json"), load(phase, "cpu.json")
    lat, v, p = r.get("server_segment_latency") or {}, r.get("viewers", {}), r.get("publishers", {})
    pdt = v.get("pdt_to_listed_ms", {})
    with open(os.path.join(out, phase, "loadavg")) as f:
        load_avg = f.read().strip()
    phases[phase] = [
        f"{ms(lat.get('p50_ms'))} / **{ms(lat.get('p99_ms'))}** ({lat.get('segments', 0)} segments)",
        f"**{v.get('stalls', '–')}** / {v.get('errors', '–')} ({v.get('segments', 0)} segments fetched by {v.get('started', 0)} viewers)",
        f"{ms(pdt.get('p50'))} / {ms(pdt.get('p99'))}",
        f"{p.get('connected', 0)} connected, {p.get('dropped', 0)} dropped, worst lag {ms((p.get('max_lag_ms') or {}).get('max'))} ms",
        f"{cpu.get('premium_cpu_percent', 0):.0f} %",
        f"{cpu.get('shared_cpu_percent', 0):.0f} %",
        " / ".join(f"{cpu.get('core_busy_percent', {}).get(f'cpu{c}', 0):.0f} %" for c in (shared_cpu, premium_cpu)),
        load_avg,
    ]
labels = [
    "premium keyframe → listed p50 / p99, ms (premium worker's histogram)",
    "premium viewers: stalls / errors",
    "premium viewers: PDT → listed p50 / p99, ms",
    "premium publisher",
    "premium worker CPU (its core)",
    "shared worker CPU (its core)",
    "core busy, everything on it: shared core / premium core",
    "load average at the phase's start",
]
print("| | shared pool idle | shared pool flooded |")
print("| --- | --- | --- |")
for i, label in enumerate(labels):
    print(f"| {label} | {phases['idle'][i]} | {phases['flooded'][i]} |")
f, g = load("flooded", "flood.json"), load("flooded", "garbage.json")
fp, fl = f.get("publishers", {}), f.get("server_segment_latency") or {}
print()
print(f"Flood on the shared worker: {fp.get('requested', 0)} publishers of tenant noisy, "
      f"{fp.get('connected', 0)} connected, {fp.get('refused', 0)} refused, {fp.get('failed', 0)} failed, "
      f"{fp.get('dropped', 0)} dropped, {fp.get('mbps_avg', 0):.0f} Mbit/s sent, worst lag "
      f"{ms((fp.get('max_lag_ms') or {}).get('max'))} ms; the shared worker's keyframe → listed "
      f"p50 / p99 {ms(fl.get('p50_ms'))} / {ms(fl.get('p99_ms'))} ms ({fl.get('segments', 0)} segments). "
      f"Garbage: {g.get('tcp_connections', 0)} TCP connections, {g.get('udp_datagrams', 0)} datagrams. "
      f"Redis on core {redis_cpu}; every process at niceness {niceness}.")
EOF
echo
echo "raw files: $OUT"
