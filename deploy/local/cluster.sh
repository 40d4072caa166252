#!/usr/bin/env bash
# A local tidegate cluster on loopback, for trying failover by hand and for demos:
# redis-server (append-only file), an S3 server (moto), N workers with
# `--state redis://… --storage s3://…`, HAProxy in TCP mode on the RTMP port (the stand-in
# for a Kubernetes Service, health-checking each worker's /readyz) and nginx's stream module
# on the SRT port (UDP). Nothing listens beyond 127.0.0.1; no system service is touched;
# every process is started by this script, its pid kept in the run directory, and only those
# pids are stopped by `down`.
#
#   deploy/local/cluster.sh up         # build (release) if needed, start, print the URLs
#   deploy/local/cluster.sh status     # which processes run, each worker's id and /readyz
#   deploy/local/cluster.sh restart N  # start worker N again (e.g. after a kill -9), with
#                                      # its id, ports and flags; a running one is stopped first
#   deploy/local/cluster.sh down       # stop what `up` started: the workers first (each may
#                                      # drain for its --drain-timeout), then HAProxy and
#                                      # nginx, then Redis and the S3 server
#
# Settings (environment):
#   CLUSTER_DIR   run directory (configs, logs, data)        default ./tidegate-cluster
#   WORKERS       number of workers                          default 3
#   RTMP_PORT     HAProxy's RTMP port                        default 1935, or a free one
#   SRT_PORT      nginx's SRT (UDP) port                     default 9000, or a free one
#   TIDEGATE_BIN  the binary                                 default target/release/tidegate
#                 (built with `cargo build --release -p tidegate` when missing; honours
#                 CARGO_TARGET_DIR)
#   WORKER_ARGS   extra `tidegate serve` flags for every worker, e.g. "--drain-timeout 5s"
#
# Needs redis-server, python3 with moto[server], haproxy, nginx + libnginx-mod-stream, curl
# (scripts/install-test-tools.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cmd="${1:-}"
run="${CLUSTER_DIR:-$PWD/tidegate-cluster}"
workers="${WORKERS:-3}"
bucket="tidegate"

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

port_free() { # PROTO PORT
  python3 - "$1" "$2" <<'PY'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
try:
    s.bind(("127.0.0.1", int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
}

free_port() { # PROTO
  python3 - "$1" <<'PY'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

pick_port() { # PROTO PREFERRED (explicit ports must be free; the default falls back)
  local proto="$1" want="$2" explicit="$3"
  if port_free "$proto" "$want"; then echo "$want"; return; fi
  [[ -n "$explicit" ]] && die "$proto port $want is in use"
  free_port "$proto"
}

wait_for() { # WHAT SECONDS COMMAND...
  local what="$1" limit="$2" start
  shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) - start > limit)) && die "$what not up within ${limit}s (logs in $run)"
    sleep 0.1
  done
}

alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

start_bg() { # NAME COMMAND... (stdout+stderr to NAME.log, pid to NAME.pid)
  local name="$1"
  shift
  "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

# Seconds past a worker's --drain-timeout that `down` and `restart` wait for it: after the
# drain a worker closes its publishers at their next segment boundary (up to three segment
# durations and a second), flushes their last segments (10 s at most) and leaves the cluster.
DRAIN_MARGIN_S=30

stop_group() { # SECONDS NAME... : SIGTERM to each, wait for all up to SECONDS, then SIGKILL
  local limit="$1" n pid
  shift
  for n in "$@"; do
    if alive "$n"; then kill -TERM "$(cat "$run/$n.pid")" 2>/dev/null || true; fi
  done
  local deadline=$(($(date +%s) + limit))
  for n in "$@"; do
    pid="$(cat "$run/$n.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] || continue
    while kill -0 "$pid" 2>/dev/null && (($(date +%s) < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$n ($pid) did not stop within ${limit}s of SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$run/$n.pid"
  done
}

drain_limit() { # WORKER-NAMES... : the longest --drain-timeout among them, plus the margin
  local max=0 n d
  for n in "$@"; do
    d="$(cat "$run/$n.drain" 2>/dev/null || echo 30)"
    ((d > max)) && max="$d"
  done
  echo $((max + DRAIN_MARGIN_S))
}

stop_all() {
  local names=() workers=() proxies=() stores=() n
  for f in "$run"/*.pid; do
    [[ -e "$f" ]] || continue
    names+=("$(basename "$f" .pid)")
  done
  for n in "${names[@]}"; do
    case "$n" in
    worker-*) workers+=("$n") ;;
    haproxy | nginx) proxies+=("$n") ;;
    redis | s3) stores+=("$n") ;;
    esac
  done
  # Workers first: they drain (their publishers stay reachable through the proxies) and
  # leave the cluster while Redis and S3 still answer.
  if ((${#workers[@]})); then
    local limit
    limit="$(drain_limit "${workers[@]}")"
    log "stopping ${workers[*]} (SIGTERM; each may drain, waiting up to ${limit}s)"
    stop_group "$limit" "${workers[@]}"
    log "workers stopped"
  fi
  if ((${#proxies[@]})); then
    log "stopping ${proxies[*]}"
    stop_group 10 "${proxies[@]}"
  fi
  if ((${#stores[@]})); then
    log "stopping ${stores[*]}"
    stop_group 10 "${stores[@]}"
  fi
}

seconds() { # a humantime duration as `check-config` prints it ("30s", "1m 30s", "500ms") -> whole seconds, rounded up
  python3 - "$1" <<'PY'
import math, re, sys
unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
total = sum(float(v) * unit.get(u, 1) for v, u in re.findall(r"([0-9.]+)\s*([a-z]*)", sys.argv[1]))
print(math.ceil(total))
PY
}

start_worker() { # N : start worker N with the flags `up` stored for it
  local i="$1" bin
  bin="$(cat "$run/bin")"
  local args=()
  mapfile -t args <"$run/worker-$i.args"
  # Appends: a restarted worker's log keeps what the previous run said.
  "$bin" serve "${args[@]}" >>"$run/worker-$i.log" 2>&1 &
  echo $! >"$run/worker-$i.pid"
}

wait_worker_ready() { # N
  local h
  h="$(awk -v i="$1" '$1 == i {print $3}' "$run/workers")"
  wait_for "worker $1" 30 curl -sf "http://127.0.0.1:$h/readyz"
}

restart() { # N
  local i="${1:-}"
  [[ -d "$run" && -f "$run/workers" ]] || die "no cluster in $run"
  [[ -n "$i" && -f "$run/worker-$i.args" ]] || die "no worker '$i' in $run (workers: $(awk '{printf "%s ", $1}' "$run/workers"))"
  if alive "worker-$i"; then
    local limit
    limit="$(drain_limit "worker-$i")"
    log "stopping worker-$i (SIGTERM; it may drain, waiting up to ${limit}s)"
    stop_group "$limit" "worker-$i"
  fi
  # shellcheck disable=SC1091 # written by `up`: the S3 endpoint and credentials
  source "$run/env"
  log "starting worker-$i (id $(worker_id "$i"))"
  start_worker "$i"
  wait_worker_ready "$i"
  status
}

worker_id() { # N : the --worker-id `up` gave worker N (the last one in its flags wins)
  awk 'prev == "--worker-id" {id = $0} {prev = $0} END {print id}' "$run/worker-$1.args"
}

api_id() { # HTTP-PORT : this worker's id as its /api/v1/workers lists it (empty if unknown)
  curl -sf --max-time 2 "http://127.0.0.1:$1/api/v1/workers" 2>/dev/null | python3 -c '
import json, sys
me = "127.0.0.1:" + sys.argv[1]
try:
    print(next(w["id"] for w in json.load(sys.stdin) if w.get("addresses", {}).get("http") == me))
except Exception:
    pass
' "$1" || true
}

up() {
  for c in redis-server haproxy nginx curl python3; do
    command -v "$c" >/dev/null || die "$c missing (scripts/install-test-tools.sh)"
  done
  python3 -c 'import moto.server' 2>/dev/null || die "moto missing (pip install 'moto[server]')"
  local stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
  [[ -f $stream_module ]] || die "nginx stream module missing (apt-get install libnginx-mod-stream)"
  mkdir -p "$run"
  if compgen -G "$run/*.pid" >/dev/null; then
    die "$run has a running cluster (cluster.sh down first)"
  fi

  local bin="${TIDEGATE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/tidegate}"
  if [[ ! -x "$bin" ]]; then
    [[ -n "${TIDEGATE_BIN:-}" ]] && die "TIDEGATE_BIN=$bin is not executable"
    log "building $bin (cargo build --release -p tidegate)"
    (cd "$repo" && cargo build --release -p tidegate)
  fi

  local rtmp_port srt_port redis_port s3_port
  rtmp_port="$(pick_port tcp "${RTMP_PORT:-1935}" "${RTMP_PORT:-}")"
  srt_port="$(pick_port udp "${SRT_PORT:-9000}" "${SRT_PORT:-}")"
  redis_port="$(free_port tcp)"
  s3_port="$(free_port tcp)"

  mkdir -p "$run/redis"
  start_bg redis redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
    --appendonly yes --appendfsync everysec --dir "$run/redis"
  start_bg s3 python3 -m moto.server -H 127.0.0.1 -p "$s3_port"
  wait_for "redis-server" 10 redis-cli -p "$redis_port" ping
  wait_for "moto S3" 30 curl -sf "http://127.0.0.1:$s3_port/"
  curl -sf -X PUT "http://127.0.0.1:$s3_port/$bucket" -o /dev/null

  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  unset TIDEGATE_STATE TIDEGATE_STORAGE
  local haproxy_servers="" nginx_servers="" i
  : >"$run/workers"
  echo "$bin" >"$run/bin"
  for ((i = 0; i < workers; i++)); do
    local r h s
    r="$(free_port tcp)"
    h="$(free_port tcp)"
    s="$(free_port udp)"
    mkdir -p "$run/worker-$i"
    # Its flags, one a line, for `restart`; the id is worker-N (WORKER_ARGS may override).
    # shellcheck disable=SC2086 # WORKER_ARGS is a list of flags
    printf '%s\n' \
      --rtmp-listen "127.0.0.1:$r" --http-listen "127.0.0.1:$h" --srt-listen "127.0.0.1:$s" \
      --data-dir "$run/worker-$i" --worker-id "worker-$i" \
      --state "redis://127.0.0.1:$redis_port/0" --storage "s3://$bucket/live" \
      ${WORKER_ARGS:-} >"$run/worker-$i.args"
    # Its effective drain timeout (flags, TIDEGATE_DRAIN_TIMEOUT, a --config file), for `down`.
    local args=() drain
    mapfile -t args <"$run/worker-$i.args"
    drain="$("$bin" check-config "${args[@]}" 2>/dev/null | awk -F'"' '/^drain-timeout = / {print $2}')"
    seconds "${drain:-30s}" >"$run/worker-$i.drain"
    : >"$run/worker-$i.log"
    start_worker "$i"
    echo "$i $r $h $s" >>"$run/workers"
    haproxy_servers+="  server w$i 127.0.0.1:$r check port $h"$'\n'
    nginx_servers+="    server 127.0.0.1:$s;"$'\n'
  done
  while read -r i _; do wait_worker_ready "$i"; done <"$run/workers"

  python3 - "$here/haproxy.cfg.in" "$run/haproxy.cfg" "$rtmp_port" "$haproxy_servers" <<'PY'
import sys
src, dst, port, servers = sys.argv[1:5]
text = open(src).read().replace("@RTMP_PORT@", port).replace("@SERVERS@", servers.rstrip("\n"))
open(dst, "w").write(text + "\n")
PY
  python3 - "$here/nginx.conf.in" "$run/nginx.conf" "$srt_port" "$nginx_servers" "$run" "$stream_module" <<'PY'
import sys
src, dst, port, servers, run, module = sys.argv[1:7]
text = (open(src).read().replace("@SRT_PORT@", port).replace("@SERVERS@", servers.rstrip("\n"))
        .replace("@RUN_DIR@", run).replace("@STREAM_MODULE@", module))
open(dst, "w").write(text)
PY
  haproxy -c -f "$run/haproxy.cfg" >/dev/null || die "haproxy rejects $run/haproxy.cfg"
  start_bg haproxy haproxy -db -f "$run/haproxy.cfg"
  nginx -t -p "$run" -e "$run/nginx.log" -c "$run/nginx.conf" >/dev/null 2>&1 \
    || die "nginx rejects $run/nginx.conf ($(nginx -t -p "$run" -e "$run/nginx.log" -c "$run/nginx.conf" 2>&1 | tail -1))"
  start_bg nginx nginx -p "$run" -e "$run/nginx.log" -c "$run/nginx.conf"
  wait_for "haproxy" 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$rtmp_port"
  cat >"$run/env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export TIDEGATE_STATE=redis://127.0.0.1:$redis_port/0 TIDEGATE_STORAGE=s3://$bucket/live
RTMP_URL=rtmp://127.0.0.1:$rtmp_port/live
SRT_URL=srt://127.0.0.1:$srt_port
ENV
  status
}

status() {
  [[ -d "$run" ]] || die "no cluster in $run"
  local n
  for f in "$run"/*.pid; do
    [[ -e "$f" ]] || { log "nothing running in $run"; return 0; }
    n="$(basename "$f" .pid)"
    if alive "$n"; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: NOT running (log $run/$n.log)"; fi
  done
  if [[ -f "$run/workers" ]]; then
    while read -r i r h s; do
      local ready id
      ready="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$h/readyz" || true)"
      # The id as /api/v1/workers lists it; the configured one when the API does not answer
      # (a stopped worker, or --admin-token).
      id="$(api_id "$h")"
      [[ -n "$id" ]] || id="$(worker_id "$i") (configured; not listed by its API)"
      echo "worker-$i: id $id  rtmp 127.0.0.1:$r srt 127.0.0.1:$s http http://127.0.0.1:$h  /readyz $ready"
    done <"$run/workers"
    local h0
    h0="$(awk 'NR==1 {print $3}' "$run/workers")"
    # shellcheck disable=SC1091
    source "$run/env"
    echo
    echo "publish RTMP: $RTMP_URL/KEY          (HAProxy; OBS server $RTMP_URL, key KEY)"
    echo "publish SRT:  $SRT_URL?streamid=KEY   (nginx stream, UDP)"
    echo "play:         http://127.0.0.1:$h0/hls/default/KEY/index.m3u8   (any worker's http port)"
    echo "backends:     source $run/env"
  fi
}

case "$cmd" in
up) up ;;
down)
  [[ -d "$run" ]] || die "no cluster in $run"
  stop_all
  log "stopped (data and logs stay in $run)"
  ;;
status) status ;;
restart) restart "${2:-}" ;;
*)
  echo "usage: $0 up|down|status|restart N   (CLUSTER_DIR, WORKERS, RTMP_PORT, SRT_PORT, TIDEGATE_BIN, WORKER_ARGS)" >&2
  exit 2
  ;;
esac
