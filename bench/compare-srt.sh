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
BENCH_NAME=compare-srt
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools
bench_tools taskset curl python3 ss
SLT_BIN="${SLT_BIN:-$(command -v srt-live-transmit || true)}"
if [[ -z "$SLT_BIN" ]]; then
  log "installing srt-tools (srt-live-transmit)"
  apt-get install -y --no-install-recommends srt-tools >/dev/null
  SLT_BIN="$(command -v srt-live-transmit)"
fi

build_tidegate
make_clip

# ---------------------------------------------------------------- measuring helpers
# the server's ingest byte counter (libsrt has none: the generator's figures are used)
ingest_bytes() {
  case "$1" in
    tidegate)
      curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" |
        awk '/^tidegate_ingest_bytes_total\{protocol="srt"\}/ { s += $NF } END { printf "%.0f\n", s }' ;;
    *) echo 0 ;;
  esac
}

start_tidegate() {
  local dir="$1"
  for p in "$SRT_PORT"; do udp_busy "$p" && { log "udp port $p is taken"; exit 1; }; done
  taskset -c "$SERVER_CPU" "$TIDEGATE_BIN" serve \
    --rtmp-listen "127.0.0.1:$RTMP_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --srt-listen "127.0.0.1:$SRT_PORT" --srt-latency "${LATENCY_MS}ms" --data-dir "$dir/data" \
    --segment-duration 2s --playlist-window 10 \
    --max-connections 100000 --max-connections-per-ip 100000 --max-publishers 100000 \
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

run_one() {
  local server="$1" n="$2" dir="$OUT/$1-$2"
  mkdir -p "$dir"
  "start_$server" "$dir" "$n"
  sleep 0.5
  local idle_rss
  idle_rss="$(sum_status_kb VmRSS $SERVER_PIDS)"
  step_plan "$server" "$n"
  start_generator "$dir" "$n" "$URL"

  sleep "$WARMUP"
  measure_window "$server"
  local hwm rss threads procs
  hwm="$(sum_status_kb VmHWM $SERVER_PIDS)"; rss="$(sum_status_kb VmRSS $SERVER_PIDS)"
  threads="$(sum_status_kb Threads $SERVER_PIDS)"; procs="$(wc -w <<<"$SERVER_PIDS")"
  end_step "$server" "$n"
  rm -rf "$dir/data"
  cat >"$dir/measure.json" <<EOF
{"server": "$server", "n": $n, "gen_start": $GEN_START, "t0": $WIN_T0, "t1": $WIN_T1,
 "cpu_ticks": $((WIN_C1 - WIN_C0)), "clk_tck": $CLK_TCK, "server_ingest_bytes": $((WIN_B1 - WIN_B0)),
 "processes": $procs, "threads": ${threads:-0},
 "idle_rss_kb": $idle_rss, "peak_rss_kb": $hwm, "end_rss_kb": $rss}
EOF
}

run_steps "libsrt tidegate" compare_srt_report.py
