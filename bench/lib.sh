# Shell shared by the side-by-side benchmarks bench/compare.sh (RTMP, against nginx-rtmp)
# and bench/compare-srt.sh (SRT, against srt-live-transmit). Sourced right after a script's
# knobs; on sourcing it creates $OUT and $CACHE, sets CLK_TCK and SERVER_PIDS="" and the EXIT
# trap that stops the server, and otherwise only defines functions:
#   log, need, bench_tools TOOL... (exit when one is missing; installs ffmpeg), build_tidegate
#   (sets TIDEGATE_BIN unless given), make_clip (sets CLIP, generates it once into $CACHE),
#   cpu_ticks PID..., sum_status_kb KEY PID... (a pid that has exited counts 0), udp_busy,
#   wait_tcp, wait_udp, stop_server (every pid of $SERVER_PIDS), and one step's phases:
#   step_plan SERVER N, start_generator DIR N URL [ARG...], measure_window SERVER,
#   end_step SERVER N; run_steps "SERVER..." REPORT runs every step and prints the table.
# Expects from the script: BENCH_NAME (log prefix), ROOT, OUT, CACHE, NS, RAMP, WARMUP_EXTRA,
# MEASURE, LAG_LIMIT_MS, GEN_CPU, GEN_THREADS; and its own functions start_<server> (which set
# SERVER_PIDS), run_one SERVER N and ingest_bytes SERVER (the server's byte counter).

CLK_TCK="$(getconf CLK_TCK)"
SERVER_PIDS=""
mkdir -p "$OUT" "$CACHE"

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }

# ---------------------------------------------------------------- tools
need() { command -v "$1" >/dev/null 2>&1; }
bench_tools() {
  local tool
  for tool in "$@"; do
    need "$tool" || { log "missing $tool"; exit 1; }
  done
  if ! need ffmpeg; then
    log "installing ffmpeg (needed to generate the clip)"
    apt-get install -y ffmpeg >/dev/null
  fi
}

build_tidegate() {
  if [[ -z "${TIDEGATE_BIN:-}" ]]; then
    log "building tidegate (cargo build --release -p tidegate)"
    (cd "$ROOT" && cargo build --release -q -p tidegate)
    TIDEGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tidegate"
  fi
}

# the standard clip: 720p30 H.264 3 Mbit/s + AAC, 2 s GOP
make_clip() {
  CLIP="$CACHE/clip-720p30-3M.flv"
  if [[ ! -s "$CLIP" ]]; then
    log "generating $CLIP"
    "$TIDEGATE_BIN" bench --generate-clip "$CLIP" >/dev/null
  fi
}

# ---------------------------------------------------------------- measuring helpers
# utime + stime of the given pids, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name is skipped by cutting after its closing parenthesis).
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
# sum of one /proc/PID/status field (VmRSS, VmHWM: kB; Threads) over the given pids
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

# ---------------------------------------------------------------- one step
# step_plan SERVER N: RAMP_S (seconds to connect N publishers at $RAMP/s), WARMUP (measuring
# starts that long after the generator) and DURATION (the generator's run), logged.
step_plan() {
  RAMP_S=$((($2 + RAMP - 1) / RAMP))
  WARMUP=$((RAMP_S + WARMUP_EXTRA))
  DURATION=$((WARMUP + MEASURE + 3))
  log "$1 N=$2: ramp ${RAMP_S}s, warm-up ${WARMUP}s, measure ${MEASURE}s"
}

# start_generator DIR N URL [ARG...]: `tidegate bench` on core $GEN_CPU in the background, N
# publishers of $CLIP to URL for $DURATION s, the ARGs appended; its output in
# DIR/generator.{json,txt,err}. Sets GEN_PID and GEN_START (epoch seconds before the launch).
start_generator() {
  local dir="$1" n="$2" url="$3"
  shift 3
  GEN_START="$(date +%s.%N)"
  taskset -c "$GEN_CPU" "$TIDEGATE_BIN" bench \
    --url "$url" --input "$CLIP" \
    --publishers "$n" --ramp-up-rate "$RAMP/s" --duration "${DURATION}s" \
    --threads "$GEN_THREADS" --json "$dir/generator.json" "$@" \
    >"$dir/generator.txt" 2>"$dir/generator.err" &
  GEN_PID="$!"
}

# measure_window SERVER: the measured window of $MEASURE s. The byte counter first (its HTTP
# answer can take a while from a loaded server), then the clock and the CPU counters of
# $SERVER_PIDS together, so CPU and wall time cover the same window. Sets WIN_B0/WIN_B1
# (ingest_bytes SERVER), WIN_T0/WIN_T1 (epoch seconds), WIN_C0/WIN_C1 (cpu_ticks).
measure_window() {
  WIN_B0="$(ingest_bytes "$1")"; WIN_T0="$(date +%s.%N)"; WIN_C0="$(cpu_ticks $SERVER_PIDS)"
  sleep "$MEASURE"
  WIN_B1="$(ingest_bytes "$1")"; WIN_T1="$(date +%s.%N)"; WIN_C1="$(cpu_ticks $SERVER_PIDS)"
}

# end_step SERVER N: waits for the generator, then stops the server.
end_step() {
  wait "$GEN_PID" || log "$1 N=$2: generator exited with $?"
  stop_server
}

# run_steps "SERVER..." REPORT: run_one SERVER N for each N of $NS and each SERVER, then the
# table of bench/REPORT (also kept as $OUT/table.md) and where the raw files are.
run_steps() {
  local n server
  log "results in $OUT"
  for n in $NS; do
    for server in $1; do
      run_one "$server" "$n"
    done
  done
  python3 "$ROOT/bench/$2" --lag-limit-ms "$LAG_LIMIT_MS" "$OUT" | tee "$OUT/table.md"
  echo
  echo "raw files: $OUT"
}
