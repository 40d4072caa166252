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
CLK_TCK="$(getconf CLK_TCK)"
SERVER_PIDS=""
MAIN_PID=""
mkdir -p "$OUT" "$CACHE"

log() { printf '[compare] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need() { command -v "$1" >/dev/null 2>&1; }
for tool in taskset curl python3; do
  need "$tool" || { log "missing $tool"; exit 1; }
done
if ! need ffmpeg; then
  log "installing ffmpeg (needed to generate the clip)"
  apt-get install -y ffmpeg >/dev/null
fi

# tidegate
if [[ -z "${TIDEGATE_BIN:-}" ]]; then
  log "building tidegate (cargo build --release -p tidegate)"
  (cd "$ROOT" && cargo build --release -q -p tidegate)
  TIDEGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tidegate"
fi

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

# the clip
CLIP="$CACHE/clip-720p30-3M.flv"
if [[ ! -s "$CLIP" ]]; then
  log "generating $CLIP"
  "$TIDEGATE_BIN" bench --generate-clip "$CLIP" >/dev/null
fi

# ---------------------------------------------------------------- measuring helpers
# utime + stime of the given pids, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name is skipped by cutting after its closing parenthesis).
cpu_ticks() {
  local total=0 pid rest
  for pid in "$@"; do
    rest="$(sed 's/^.*) //' "/proc/$pid/stat")"
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
wait_tcp() {
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on $1"
  return 1
}
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
    >"$dir/server.log" 2>&1 &
  SERVER_PIDS="$!"
  MAIN_PID="$!"   # tokio: one process, every thread counted in /proc/PID/stat
}

start_nginx() {
  local dir="$1"
  mkdir -p "$dir/hls" "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
load_module $NGINX_MODULE;
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

stop_server() {
  local pid
  for pid in $SERVER_PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 30); do
    kill -0 ${SERVER_PIDS%% *} 2>/dev/null || break
    sleep 0.1
  done
  for pid in $SERVER_PIDS; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop_server 2>/dev/null || true' EXIT

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
  idle_rss="$(status_kb "$MAIN_PID" VmRSS)"

  local ramp_s=$(((n + RAMP - 1) / RAMP))
  local warmup=$((ramp_s + WARMUP_EXTRA))
  local duration=$((warmup + MEASURE + 3))
  local metrics=()
  [[ "$server" == tidegate ]] && metrics=(--metrics-url "http://127.0.0.1:$HTTP_PORT/metrics")
  log "$server N=$n: ramp ${ramp_s}s, warm-up ${warmup}s, measure ${MEASURE}s"
  taskset -c "$GEN_CPU" "$TIDEGATE_BIN" bench \
    --url "rtmp://127.0.0.1:$RTMP_PORT/live/bench{i}" --input "$CLIP" \
    --publishers "$n" --ramp-up-rate "$RAMP/s" --duration "${duration}s" \
    --threads "$GEN_THREADS" --json "$dir/generator.json" --quiet "${metrics[@]}" \
    >"$dir/generator.txt" 2>"$dir/generator.err" &
  local gen="$!"

  sleep "$warmup"
  local t0 c0 b0 t1 c1 b1
  [[ "$server" == tidegate ]] && curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >"$dir/metrics-0.txt"
  # The byte counter first (its HTTP answer can take a while from a loaded server), then
  # the clock and the CPU counters together, so CPU and wall time cover the same window.
  b0="$(ingest_bytes "$server")"; t0="$(date +%s.%N)"; c0="$(cpu_ticks $SERVER_PIDS)"
  sleep "$MEASURE"
  b1="$(ingest_bytes "$server")"; t1="$(date +%s.%N)"; c1="$(cpu_ticks $SERVER_PIDS)"
  [[ "$server" == tidegate ]] && curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >"$dir/metrics-1.txt"
  local hwm rss
  hwm="$(status_kb "$MAIN_PID" VmHWM)"; rss="$(status_kb "$MAIN_PID" VmRSS)"
  wait "$gen" || log "$server N=$n: generator exited with $?"
  stop_server
  rm -rf "$dir/hls" "$dir/data"   # the segments: gigabytes at large N
  cat >"$dir/measure.json" <<EOF
{"server": "$server", "n": $n, "window_s": $(python3 -c "print($t1 - $t0)"),
 "cpu_ticks": $((c1 - c0)), "clk_tck": $CLK_TCK, "ingest_bytes": $((b1 - b0)),
 "idle_rss_kb": $idle_rss, "peak_rss_kb": $hwm, "end_rss_kb": $rss,
 "segment_format": "$SEGMENT_FORMAT"}
EOF
}

log "results in $OUT"
for n in $NS; do
  for server in nginx tidegate; do
    run_one "$server" "$n"
  done
done
python3 "$ROOT/bench/compare_report.py" --lag-limit-ms "$LAG_LIMIT_MS" "$OUT" | tee "$OUT/table.md"
echo
echo "raw files: $OUT"
