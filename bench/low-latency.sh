#!/usr/bin/env bash
# Low-latency benchmark (issue #13): glass-to-glass latency per viewer kind, and how many
# blocking LL-HLS viewers one worker core holds.
#
# 1. latency: one Redis and two workers on it with one media directory (a cluster on one
#    machine); `tidegate bench` publishes one stream (the standard 720p30 3.3 Mbit/s clip,
#    2 s GOP) into worker A, and $VIEWERS_PER_KIND viewers of each kind (hls, ll-hls, dash)
#    play it from worker B, the non-ingesting replica, joining after $JOIN_AFTER s, for
#    $MEASURE s. Latency = now − the capture wall clock of the frame on the emulated
#    playhead (crates/loadgen/src/playhead.rs; docs/bench.md "What the viewers do").
# 2. capacity: one worker (open mode) pinned to core $SERVER_CPU; `tidegate bench` on core
#    $BENCH_CPU publishes one stream and runs N blocking LL-HLS viewers of it (N in $NS),
#    $CAP_MEASURE s each; reports the parts' delivery after they existed (p50/p99), blocking
#    503s, errors and the worker's CPU over the run. Its stream is a low rendition
#    ($CAP_BITRATE video, 640x360, 2 s GOP): N viewers of the 3.3 Mbit/s clip would be
#    N × 3.3 Mbit/s through loopback (6.6 Gbit/s at 2,000), which measures the copying,
#    not the blocking requests; CAP_BITRATE=3M measures that instead.
# A benchmark, not a test: figures move with what else runs on the machine (the load average
# before each run is printed with it).
#
# Knobs (environment): PHASES ("latency capacity"), MEASURE (60), JOIN_AFTER (10),
# VIEWERS_PER_KIND (3), NS ("500 1000 2000"), CAP_MEASURE (40), CAP_BITRATE (300k), SERVER_CPU (0), BENCH_CPU (1),
# PART_DURATION (server default), EXTRA_SERVE_ARGS, REDIS_PORT (16390), NICE (0: the
# niceness of every process it starts; a negative one, as root, keeps other work on the
# machine from blurring the figures — all of them get the same), OUT, TIDEGATE_BIN,
# CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PHASES="${PHASES:-latency capacity}"
MEASURE="${MEASURE:-60}"
JOIN_AFTER="${JOIN_AFTER:-10}"
VIEWERS_PER_KIND="${VIEWERS_PER_KIND:-3}"
NS="${NS:-500 1000 2000}"
CAP_MEASURE="${CAP_MEASURE:-40}"
CAP_BITRATE="${CAP_BITRATE:-300k}"
SERVER_CPU="${SERVER_CPU:-0}"
BENCH_CPU="${BENCH_CPU:-1}"
NICE="${NICE:-0}"
REDIS_PORT="${REDIS_PORT:-16390}"
OUT="${OUT:-$ROOT/target/bench-low-latency/$(date -u +%Y%m%dT%H%M%SZ)}"
CLK_TCK="$(getconf CLK_TCK)"
mkdir -p "$OUT"
PIDS=()
log() { printf '[low-latency] %s\n' "$*" >&2; }
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

for tool in taskset curl python3 redis-server ffmpeg; do
  command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
if [[ -z "${TIDEGATE_BIN:-}" ]]; then
  log "building tidegate (cargo build --release -p tidegate)"
  (cd "$ROOT" && cargo build --release -q -p tidegate)
  TIDEGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tidegate"
fi
CLIP="$OUT/clip.flv"
"$TIDEGATE_BIN" bench --generate-clip "$CLIP" >/dev/null 2>&1
CAP_CLIP="$OUT/clip-$CAP_BITRATE.flv"
ffmpeg -y -nostdin -hide_banner -loglevel error -f lavfi -i testsrc2=size=640x360:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 10 -c:v libx264 -preset veryfast \
  -pix_fmt yuv420p -b:v "$CAP_BITRATE" -maxrate "$CAP_BITRATE" -bufsize "$CAP_BITRATE" \
  -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -b:a 64k -ar 48000 -ac 2 -f flv "$CAP_CLIP"

# utime + stime of a pid, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
wait_http() {
  local i
  for i in $(seq 1 100); do curl -fs "http://$1/livez" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "no worker at $1"; exit 1
}
serve() { # CPU NAME RTMP HTTP SRT ARGS... (appends the pid to PIDS, sets LAST_PID)
  local cpu="$1" name="$2" rtmp="$3" http="$4" srt="$5"
  shift 5
  local part=()
  [[ -n "${PART_DURATION:-}" ]] && part=(--part-duration "$PART_DURATION")
  # shellcheck disable=SC2086
  nice -n "$NICE" taskset -c "$cpu" "$TIDEGATE_BIN" serve --rtmp-listen "127.0.0.1:$rtmp" \
    --http-listen "127.0.0.1:$http" --srt-listen "127.0.0.1:$srt" --data-dir "$OUT/$name" \
    --http-max-connections 20000 --http-max-connections-per-ip 20000 "${part[@]}" \
    ${EXTRA_SERVE_ARGS:-} "$@" >"$OUT/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  wait_http "127.0.0.1:$http"
}

if [[ " $PHASES " == *" latency "* ]]; then
  log "latency: Redis, worker A (ingest) and worker B (viewers); load $(cut -d' ' -f1-3 /proc/loadavg)"
  nice -n "$NICE" taskset -c "$BENCH_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no >"$OUT/redis.log" 2>&1 &
  PIDS+=("$!")
  sleep 0.5
  cluster=(--state "redis://127.0.0.1:$REDIS_PORT" --storage "file://$OUT/media")
  serve "$SERVER_CPU" a 19361 18181 19101 "${cluster[@]}"
  serve "$SERVER_CPU" b 19362 18182 19102 "${cluster[@]}"
  kinds="hls,ll-hls,dash"
  nice -n "$NICE" taskset -c "$BENCH_CPU" "$TIDEGATE_BIN" bench --quiet \
    --url "rtmp://127.0.0.1:19361/live/lat{i}" --input "$CLIP" \
    --duration "$((MEASURE + JOIN_AFTER))s" --viewer-delay "${JOIN_AFTER}s" \
    --viewers "$((VIEWERS_PER_KIND * 3))" --viewer-kind "$kinds" \
    --play-url "http://127.0.0.1:18182/hls/default/lat{i}/index.m3u8" \
    --dash-url "http://127.0.0.1:18182/dash/default/lat{i}/manifest.mpd" \
    --metrics-url "http://127.0.0.1:18181/metrics" \
    --json "$OUT/latency.json" >"$OUT/latency.txt" 2>"$OUT/latency.err"
  cat "$OUT/latency.txt"
  stop_all
fi

if [[ " $PHASES " == *" capacity "* ]]; then
  for n in $NS; do
    log "capacity: $n LL-HLS viewers; load $(cut -d' ' -f1-3 /proc/loadavg)"
    rm -rf "$OUT/cap"
    serve "$SERVER_CPU" cap 19371 18191 19111
    pid="$LAST_PID"
    before="$(cpu_ticks "$pid")"
    t0="$(date +%s.%N)"
    nice -n "$NICE" taskset -c "$BENCH_CPU" "$TIDEGATE_BIN" bench --quiet \
      --url "rtmp://127.0.0.1:19371/live/cap" --input "$CAP_CLIP" \
      --duration "${CAP_MEASURE}s" --viewer-delay 6s --viewers "$n" --viewer-kind ll-hls --ll-skip \
      --play-url "http://127.0.0.1:18191/hls/default/cap/index.m3u8" \
      --json "$OUT/capacity-$n.json" >"$OUT/capacity-$n.txt" 2>"$OUT/capacity-$n.err"
    after="$(cpu_ticks "$pid")"
    t1="$(date +%s.%N)"
    python3 - "$OUT/capacity-$n.json" "$before" "$after" "$t0" "$t1" "$CLK_TCK" <<'PY'
import json, sys
path, before, after, t0, t1, tck = sys.argv[1:]
r = json.load(open(path))
cpu = (float(after) - float(before)) / float(tck) / (float(t1) - float(t0)) * 100
r["server_cpu_percent"] = round(cpu, 1)
# CPU per answered request (playlists + parts + init), the figure that does not move with
# how busy the machine is as much as the delivery times do.
requests = r["viewers"]["playlists"] + r["viewers"]["segments"]
r["server_cpu_us_per_request"] = round((float(after) - float(before)) / float(tck) / max(requests, 1) * 1e6, 1)
json.dump(r, open(path, "w"), indent=2)
PY
    cat "$OUT/capacity-$n.txt"
    stop_all
  done
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def q(x):
    return "-" if not x or x.get("p50") is None else f'{x["p50"]:.0f} / {x["p99"]:.0f}'
lat = os.path.join(out, "latency.json")
if os.path.exists(lat):
    r = json.load(open(lat))
    print("\n| viewer kind (worker B) | viewers | glass-to-glass p50 / p99 ms | delivery after it existed p50 / p99 ms | listed after it existed p50 / p99 ms | stalls | errors | 503s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, v in r["viewers"]["by_kind"].items():
        print(f'| {k} | {v["viewers"]} | {q(v["latency_ms"])} | {q(v["delivery_ms"])} | {q(v["listed_ms"])} | {v["stalls"]} | {v["errors"]} | {v["blocking_503"]} |')
def bench_us(r):
    requests = r["viewers"]["playlists"] + r["viewers"]["segments"]
    cpu = r["generator"].get("cpu_seconds")
    return "-" if cpu is None or not requests else f"{cpu / requests * 1e6:.1f}"
rows = []
for f in sorted(os.listdir(out)):
    if f.startswith("capacity-") and f.endswith(".json"):
        r = json.load(open(os.path.join(out, f)))
        v = r["viewers"]["by_kind"].get("ll-hls", {})
        rows.append((v.get("viewers", 0), v, r))
if rows:
    print("\n| LL-HLS viewers | started | parts fetched | part delivery after it existed p50 / p99 ms | the same as the bench's task saw it | listed p50 / p99 ms | glass-to-glass p50 / p99 ms | 503s | errors | stalls | worker CPU % (1 core) | worker CPU µs / request | bench CPU % | bench CPU µs / request |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, v, r in sorted(rows, key=lambda x: x[0]):
        g = r["generator"].get("cpu_percent")
        print(f'| {n} | {v.get("started")} | {v.get("parts")} | {q(v.get("delivery_ms"))} | {q(v.get("delivery_seen_ms"))} | {q(v.get("listed_ms"))} | {q(v.get("latency_ms"))} | {v.get("blocking_503")} | {v.get("errors")} | {v.get("stalls")} | {r.get("server_cpu_percent")} | {r.get("server_cpu_us_per_request")} | {g:.0f} | {bench_us(r)} |')
print(f"\nraw files: {out}")
PY
