#!/usr/bin/env bash
# Side-by-side SRT benchmark: tidegate's SRT ingest against libsrt's reference receiver,
# `srt-live-transmit`, on this machine.
#
# One run: builds tidegate (release), installs srt-tools when `srt-live-transmit` is
# missing, generates the standard clip (720p30 H.264 3 Mbit/s + AAC, 2 s GOP), then for each
# N in $NS and each receiver:
#   - tidegate: one `tidegate serve` (HLS packaging included) with its SRT listener on
#     $SRT_PORT; the publishers' stream IDs are #!::r=live/bench{i},m=publish;
#   - libsrt: N `srt-live-transmit "srt://:PORT?mode=listener" file://con >/dev/null`, one
#     per publisher on ports $SLT_BASE_PORT + i (what libsrt does with a live stream when
#     nothing downstream costs anything: receive, ACK/NAK, TSBPD, hand to a null output);
# every receiver process pinned to core $SERVER_CPU, and `tidegate bench` in SRT mode (the
# clip muxed to MPEG-TS, 1316-byte payloads, real-time pacing) pinned to core $GEN_CPU.
# Over a steady-state window after the ramp it measures:
#   - CPU: utime + stime from /proc/PID/stat (libsrt: the sum over the N processes), per
#     Gbit/s ingested; the gigabits are what the generator sent during the window (its
#     progress line, once a second, same source for both receivers; tidegate's own
#     tidegate_ingest_bytes_total is kept as a cross-check);
#   - loss: from the generator's report (the receiver's NAKs): packets reported lost,
#     retransmitted, dropped unacknowledged; publishers refused, failed or dropped;
#   - memory: peak RSS (tidegate: VmHWM; libsrt: sum of VmHWM) at the end of the window.
# "Sustained without loss" = every publisher connected and finished, none fell 1 s behind,
# and the receiver reported no packet lost at all. It prints one table and the directory
# holding every raw file. It is a benchmark, not a test. Knobs (environment): NS, RAMP,
# WARMUP_EXTRA, MEASURE, LAG_LIMIT_MS, SERVER_CPU, GEN_CPU, GEN_THREADS, LATENCY_MS, OUT,
# SRT_PORT, SLT_BASE_PORT, HTTP_PORT, RTMP_PORT, CARGO_TARGET_DIR, TIDEGATE_BIN, SLT_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NS="${NS:-20 50 100}"
RAMP="${RAMP:-50}"                   # publisher connections per second
WARMUP_EXTRA="${WARMUP_EXTRA:-6}"    # seconds after the ramp before measuring (>= 1 GOP)
MEASURE="${MEASURE:-20}"             # measured window, seconds
LAG_LIMIT_MS="${LAG_LIMIT_MS:-1000}" # "falling behind" threshold for the generator lag
LATENCY_MS="${LATENCY_MS:-120}"      # SRT latency on both receivers (libsrt's default)
SERVER_CPU="${SERVER_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
GEN_THREADS="${GEN_THREADS:-1}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tidegate-bench"
OUT="${OUT:-$(mktemp -d /tmp/tidegate-compare-srt.XXXXXX)}"
RTMP_PORT="${RTMP_PORT:-29935}"
HTTP_PORT="${HTTP_PORT:-29980}"
SRT_PORT="${SRT_PORT:-29900}"
SLT_BASE_PORT="${SLT_BASE_PORT:-30000}"
CLK_TCK="$(getconf CLK_TCK)"
SERVER_PIDS=""
mkdir -p "$OUT" "$CACHE"

log() { printf '[compare-srt] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need() { command -v "$1" >/dev/null 2>&1; }
for tool in taskset curl python3 ss; do
  need "$tool" || { log "missing $tool"; exit 1; }
done
if ! need ffmpeg; then
  log "installing ffmpeg (needed to generate the clip)"
  apt-get install -y ffmpeg >/dev/null
fi
SLT_BIN="${SLT_BIN:-$(command -v srt-live-transmit || true)}"
if [[ -z "$SLT_BIN" ]]; then
  log "installing srt-tools (srt-live-transmit)"
  apt-get install -y --no-install-recommends srt-tools >/dev/null
  SLT_BIN="$(command -v srt-live-transmit)"
fi

if [[ -z "${TIDEGATE_BIN:-}" ]]; then
  log "building tidegate (cargo build --release -p tidegate)"
  (cd "$ROOT" && cargo build --release -q -p tidegate)
  TIDEGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tidegate"
fi

CLIP="$CACHE/clip-720p30-3M.flv"
if [[ ! -s "$CLIP" ]]; then
  log "generating $CLIP"
  "$TIDEGATE_BIN" bench --generate-clip "$CLIP" >/dev/null
fi

# ---------------------------------------------------------------- measuring helpers
cpu_ticks() {
  local total=0 pid rest
  for pid in "$@"; do
    rest="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -n "$rest" ]] || continue
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
sum_status_kb() {
  local key="$1" total=0 pid v
  shift
  for pid in "$@"; do
    v="$(awk -v k="$key:" '$1 == k { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
udp_busy() { ss -uln | awk '{ print $4 }' | grep -q ":$1\$"; }
wait_tcp() {
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on $1"
  return 1
}
wait_udp() {
  local i
  for i in $(seq 100); do
    udp_busy "$1" && return 0
    sleep 0.1
  done
  log "nothing listens on udp $1"
  return 1
}
tidegate_ingest_bytes() {
  curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" |
    awk '/^tidegate_ingest_bytes_total\{protocol="srt"\}/ { s += $NF } END { printf "%.0f\n", s }'
}

start_tidegate() {
  local dir="$1"
  for p in "$SRT_PORT"; do udp_busy "$p" && { log "udp port $p is taken"; exit 1; }; done
  taskset -c "$SERVER_CPU" "$TIDEGATE_BIN" serve \
    --rtmp-listen "127.0.0.1:$RTMP_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --srt-listen "127.0.0.1:$SRT_PORT" --srt-latency "${LATENCY_MS}ms" --data-dir "$dir/data" \
    --segment-duration 2s --playlist-window 10 \
    >"$dir/server.log" 2>&1 &
  SERVER_PIDS="$!"
  wait_tcp "$HTTP_PORT"
  wait_udp "$SRT_PORT"
  URL="srt://127.0.0.1:$SRT_PORT"
}

start_libsrt() {
  local dir="$1" n="$2" i port
  SERVER_PIDS=""
  for ((i = 0; i < n; i++)); do
    port=$((SLT_BASE_PORT + i))
    udp_busy "$port" && { log "udp port $port is taken"; exit 1; }
  done
  for ((i = 0; i < n; i++)); do
    port=$((SLT_BASE_PORT + i))
    taskset -c "$SERVER_CPU" "$SLT_BIN" -q \
      "srt://127.0.0.1:$port?mode=listener&latency=$LATENCY_MS" file://con \
      >/dev/null 2>>"$dir/server.log" &
    SERVER_PIDS="$SERVER_PIDS $!"
  done
  for ((i = 0; i < n; i++)); do wait_udp $((SLT_BASE_PORT + i)); done
  URL="srt://127.0.0.1:{$SLT_BASE_PORT+i}"
}

stop_server() {
  local pid
  for pid in $SERVER_PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 30); do
    local alive=0
    for pid in $SERVER_PIDS; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in $SERVER_PIDS; do kill -KILL "$pid" 2>/dev/null || true; done
  SERVER_PIDS=""
  wait 2>/dev/null || true
}
trap 'stop_server 2>/dev/null || true' EXIT

run_one() {
  local server="$1" n="$2" dir="$OUT/$1-$2"
  mkdir -p "$dir"
  "start_$server" "$dir" "$n"
  sleep 0.5
  local idle_rss
  idle_rss="$(sum_status_kb VmRSS $SERVER_PIDS)"
  local ramp_s=$(((n + RAMP - 1) / RAMP))
  local warmup=$((ramp_s + WARMUP_EXTRA))
  local duration=$((warmup + MEASURE + 3))
  log "$server N=$n: ramp ${ramp_s}s, warm-up ${warmup}s, measure ${MEASURE}s"
  local g0
  g0="$(date +%s.%N)"
  taskset -c "$GEN_CPU" "$TIDEGATE_BIN" bench \
    --url "$URL" --input "$CLIP" \
    --publishers "$n" --ramp-up-rate "$RAMP/s" --duration "${duration}s" \
    --threads "$GEN_THREADS" --json "$dir/generator.json" \
    >"$dir/generator.txt" 2>"$dir/generator.err" &
  local gen="$!"

  sleep "$warmup"
  local t0 c0 b0="0" t1 c1 b1="0"
  [[ "$server" == tidegate ]] && b0="$(tidegate_ingest_bytes)"
  t0="$(date +%s.%N)"; c0="$(cpu_ticks $SERVER_PIDS)"
  sleep "$MEASURE"
  [[ "$server" == tidegate ]] && b1="$(tidegate_ingest_bytes)"
  t1="$(date +%s.%N)"; c1="$(cpu_ticks $SERVER_PIDS)"
  local hwm rss threads procs
  hwm="$(sum_status_kb VmHWM $SERVER_PIDS)"; rss="$(sum_status_kb VmRSS $SERVER_PIDS)"
  threads="$(sum_status_kb Threads $SERVER_PIDS)"; procs="$(wc -w <<<"$SERVER_PIDS")"
  wait "$gen" || log "$server N=$n: generator exited with $?"
  stop_server
  rm -rf "$dir/data"
  cat >"$dir/measure.json" <<EOF
{"server": "$server", "n": $n, "gen_start": $g0, "t0": $t0, "t1": $t1,
 "cpu_ticks": $((c1 - c0)), "clk_tck": $CLK_TCK, "server_ingest_bytes": $((b1 - b0)),
 "processes": $procs, "threads": ${threads:-0},
 "idle_rss_kb": $idle_rss, "peak_rss_kb": $hwm, "end_rss_kb": $rss}
EOF
}

log "results in $OUT"
for n in $NS; do
  for server in libsrt tidegate; do
    run_one "$server" "$n"
  done
done
python3 "$ROOT/bench/compare_srt_report.py" --lag-limit-ms "$LAG_LIMIT_MS" "$OUT" | tee "$OUT/table.md"
echo
echo "raw files: $OUT"
