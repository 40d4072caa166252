#!/usr/bin/env bash
# Side-by-side benchmark: tidegate against nginx-rtmp on this machine.
#
# One run: builds tidegate (release), fetches nginx + libnginx-mod-rtmp when they are not
# installed (Debian packages unpacked into a private cache: no system service is touched),
# generates the standard clip (720p30 H.264 3 Mbit/s + AAC, 2 s GOP), then for each N in
# $NS and each server: starts the server pinned to core $SERVER_CPU, drives N publishers
# from `tidegate bench` pinned to core $GEN_CPU, and measures the server over a steady-state
# window once every publisher is connected and cutting segments:
#   - CPU: utime + stime from /proc/PID/stat (nginx: master + worker), per Gbit/s ingested
#     (bytes from the server's own counter: tidegate_ingest_bytes_total / nginx rtmp_stat);
#   - memory: peak RSS (VmHWM) and (peak - idle RSS) / N;
#   - sustained: every publisher connected, none dropped, worst generator lag < $LAG_LIMIT_MS;
#   - tidegate's keyframe -> segment-listed latency p50/p99 over the window, from the growth
#     of its tidegate_segment_latency_seconds histogram.
# It prints one table and the directory holding every raw file. It is a benchmark, not a
# test. Knobs (environment): NS, WARMUP_EXTRA, MEASURE, RAMP, SEGMENT_FORMAT, LAG_LIMIT_MS,
# SERVER_CPU, GEN_CPU, GEN_THREADS, OUT, CARGO_TARGET_DIR, TIDEGATE_BIN, NGINX_BIN, NGINX_MODULE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NS="${NS:-50 200 300 500}"
RAMP="${RAMP:-100}"                  # publisher connections per second
WARMUP_EXTRA="${WARMUP_EXTRA:-8}"    # seconds after the ramp before measuring (>= 1 GOP)
MEASURE="${MEASURE:-30}"             # measured window, seconds
LAG_LIMIT_MS="${LAG_LIMIT_MS:-1000}" # "falling behind" threshold for the generator lag
SEGMENT_FORMAT="${SEGMENT_FORMAT:-ts}" # nginx-rtmp writes MPEG-TS; `fmp4` for tidegate's default
SERVER_CPU="${SERVER_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
GEN_THREADS="${GEN_THREADS:-1}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tidegate-bench"
OUT="${OUT:-$(mktemp -d /tmp/tidegate-compare.XXXXXX)}"
RTMP_PORT="${RTMP_PORT:-19935}"
HTTP_PORT="${HTTP_PORT:-19980}"
SRT_PORT="${SRT_PORT:-19900}"
MAIN_PID=""
BENCH_NAME=compare
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools
bench_tools taskset curl python3
build_tidegate

# nginx-rtmp: the system's if it has both the binary and the module; otherwise Debian's
# packages unpacked into $CACHE (apt-get download + dpkg-deb -x: no service, no postinst).
find_nginx() {
  if [[ -z "${NGINX_BIN:-}" ]]; then
    if need nginx && [[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]]; then
      NGINX_BIN="$(command -v nginx)"
      NGINX_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
    elif [[ -x "$CACHE/nginx/usr/sbin/nginx" ]]; then
      NGINX_BIN="$CACHE/nginx/usr/sbin/nginx"
      NGINX_MODULE="$CACHE/nginx/usr/lib/nginx/modules/ngx_rtmp_module.so"
    fi
  fi
}
find_nginx
if [[ -z "${NGINX_BIN:-}" ]]; then
  log "nginx-rtmp not found: fetching Debian's nginx + libnginx-mod-rtmp into $CACHE/nginx"
  dl="$(mktemp -d)"
  if (cd "$dl" && apt-get download nginx nginx-common libnginx-mod-rtmp >/dev/null 2>&1); then
    for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$CACHE/nginx"; done
  else
    log "apt-get download failed; installing the packages instead"
    apt-get install -y --no-install-recommends nginx libnginx-mod-rtmp >/dev/null
  fi
  rm -rf "$dl"
  find_nginx
fi
[[ -n "${NGINX_BIN:-}" && -f "${NGINX_MODULE:-}" ]] || { log "no nginx-rtmp"; exit 1; }

make_clip

# ---------------------------------------------------------------- measuring helpers
# the server's ingest byte counter
ingest_bytes() {
  case "$1" in
    tidegate)
      curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" |
        awk '/^tidegate_ingest_bytes_total/ { s += $NF } END { printf "%.0f\n", s }' ;;
    nginx)
      curl -fsS "http://127.0.0.1:$HTTP_PORT/stat" |
        sed -n 's/.*<bytes_in>\([0-9]*\)<.*/\1/p' | awk 'NR == 1 { print }' ;;
  esac
}

start_tidegate() {
  local dir="$1"
  taskset -c "$SERVER_CPU" "$TIDEGATE_BIN" serve \
    --rtmp-listen "127.0.0.1:$RTMP_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --srt-listen "127.0.0.1:$SRT_PORT" --data-dir "$dir/data" \
    --segment-duration 2s --playlist-window 10 --segment-format "$SEGMENT_FORMAT" \
    --max-connections 100000 --max-connections-per-ip 100000 --max-publishers 100000 \
    >"$dir/server.log" 2>&1 &
  SERVER_PIDS="$!"
  MAIN_PID="$!"   # tokio: one process, every thread counted in /proc/PID/stat
}

start_nginx() {
  local dir="$1"
  mkdir -p "$dir/hls" "$dir/logs" "$dir/tmp"
  # Run as root (as tidegate does here), the master would hand the worker to `nobody`,
  # which cannot enter the 0700 results directory: every HLS write would fail
  # ("hls: stat() failed ... Permission denied") and nginx would be measured without HLS.
  local user=""
  ((EUID == 0)) && user="user $(id -un) $(id -gn);"
  cat >"$dir/nginx.conf" <<EOF
load_module $NGINX_MODULE;
$user
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
rtmp {
  server {
    listen 127.0.0.1:$RTMP_PORT;
    chunk_size 4096;
    access_log off;
    application live {
      live on;
      hls on;
      hls_path $dir/hls;
      hls_fragment 2s;
      hls_playlist_length 20s;
    }
  }
}
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  server {
    listen 127.0.0.1:$HTTP_PORT;
    location /stat { rtmp_stat all; }
  }
}
EOF
  taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
    >"$dir/server.log" 2>&1 &
  local master="$!" worker="" i
  for i in $(seq 50); do
    worker="$(pgrep -P "$master" | head -1 || true)"
    [[ -n "$worker" ]] && break
    sleep 0.1
  done
  [[ -n "$worker" ]] || { log "nginx worker did not start"; cat "$dir/logs/error.log" >&2; exit 1; }
  SERVER_PIDS="$master $worker"
  MAIN_PID="$worker"   # the worker does all the RTMP and HLS work
}

# Media written during one step: N x ~3.3 Mbit/s x the step's length, kept on disk until
# the step ends (both servers keep their window plus a grace period). Refuse to start a
# step that could fill the filesystem.
check_disk() {
  local n="$1" seconds="$2" need_kb avail_kb
  need_kb=$((n * 3400 / 8 * seconds + 2 * 1024 * 1024))
  avail_kb="$(df -Pk "$OUT" | awk 'NR == 2 { print $4 }')"
  if ((avail_kb < need_kb)); then
    log "N=$n needs ~$((need_kb / 1024)) MB free in $OUT, only $((avail_kb / 1024)) MB: skipped"
    return 1
  fi
}

run_one() {
  local server="$1" n="$2" dir="$OUT/$1-$2"
  check_disk "$n" $(((n + RAMP - 1) / RAMP + WARMUP_EXTRA + MEASURE + 3)) || return 0
  mkdir -p "$dir"
  "start_$server" "$dir"
  wait_tcp "$RTMP_PORT"
  wait_tcp "$HTTP_PORT"
  sleep 0.5
  local idle_rss
  idle_rss="$(sum_status_kb VmRSS "$MAIN_PID")"

  step_plan "$server" "$n"
  local metrics=()
  [[ "$server" == tidegate ]] && metrics=(--metrics-url "http://127.0.0.1:$HTTP_PORT/metrics")
  start_generator "$dir" "$n" "rtmp://127.0.0.1:$RTMP_PORT/live/bench{i}" --quiet "${metrics[@]}"

  sleep "$WARMUP"
  [[ "$server" == tidegate ]] && curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >"$dir/metrics-0.txt"
  measure_window "$server"
  [[ "$server" == tidegate ]] && curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >"$dir/metrics-1.txt"
  local hwm rss
  hwm="$(sum_status_kb VmHWM "$MAIN_PID")"; rss="$(sum_status_kb VmRSS "$MAIN_PID")"
  end_step "$server" "$n"
  # A server that did not package is not a baseline: refuse the figures.
  local segments
  segments="$(find "$dir" \( -name '*.ts' -o -name '*.m4s' \) -type f | wc -l)"
  if ((segments < n)); then
    log "$server N=$n: only $segments segments on disk for $n streams; see $dir/logs or $dir/server.log"
    exit 1
  fi
  rm -rf "$dir/hls" "$dir/data"   # the segments: gigabytes at large N
  cat >"$dir/measure.json" <<EOF
{"server": "$server", "n": $n, "window_s": $(python3 -c "print($WIN_T1 - $WIN_T0)"),
 "cpu_ticks": $((WIN_C1 - WIN_C0)), "clk_tck": $CLK_TCK, "ingest_bytes": $((WIN_B1 - WIN_B0)),
 "idle_rss_kb": $idle_rss, "peak_rss_kb": $hwm, "end_rss_kb": $rss,
 "segment_format": "$SEGMENT_FORMAT"}
EOF
}

run_steps "nginx tidegate" compare_report.py
