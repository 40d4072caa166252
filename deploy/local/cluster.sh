#!/usr/bin/env bash
# A local tidegate cluster on loopback, for trying failover by hand and for demos:
# redis-server (append-only file), an S3 server (moto), N workers with
# `--state redis://… --storage s3://…`, HAProxy in TCP mode on the RTMP port (the stand-in
# for a Kubernetes Service, health-checking each worker's /readyz) and nginx's stream module
# on the SRT port (UDP). Nothing listens beyond 127.0.0.1; no system service is touched;
# every process is started by this script, its pid kept in the run directory, and only those
# pids are stopped by `down`.
#
#   deploy/local/cluster.sh up       # build (release) if needed, start, print the URLs
#   deploy/local/cluster.sh status   # which processes run, each worker's /readyz
#   deploy/local/cluster.sh down     # stop what `up` started
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

stop_all() {
  local names=()
  for f in "$run"/*.pid; do
    [[ -e "$f" ]] || continue
    names+=("$(basename "$f" .pid)")
  done
  # Workers first (they drain), then the proxies, then the backends.
  local ordered=()
  for n in "${names[@]}"; do [[ $n == worker-* ]] && ordered+=("$n"); done
  for n in "${names[@]}"; do [[ $n == haproxy || $n == nginx ]] && ordered+=("$n"); done
  for n in "${names[@]}"; do [[ $n == redis || $n == s3 ]] && ordered+=("$n"); done
  for n in "${ordered[@]}"; do
    if alive "$n"; then kill -TERM "$(cat "$run/$n.pid")" 2>/dev/null || true; fi
  done
  for n in "${ordered[@]}"; do
    local pid
    pid="$(cat "$run/$n.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] || continue
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$n ($pid) did not stop on SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$run/$n.pid"
  done
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
  for ((i = 0; i < workers; i++)); do
    local r h s
    r="$(free_port tcp)"
    h="$(free_port tcp)"
    s="$(free_port udp)"
    mkdir -p "$run/worker-$i"
    # shellcheck disable=SC2086 # WORKER_ARGS is a list of flags
    start_bg "worker-$i" "$bin" serve \
      --rtmp-listen "127.0.0.1:$r" --http-listen "127.0.0.1:$h" --srt-listen "127.0.0.1:$s" \
      --data-dir "$run/worker-$i" \
      --state "redis://127.0.0.1:$redis_port/0" --storage "s3://$bucket/live" \
      ${WORKER_ARGS:-}
    echo "$i $r $h $s" >>"$run/workers"
    haproxy_servers+="  server w$i 127.0.0.1:$r check port $h"$'\n'
    nginx_servers+="    server 127.0.0.1:$s;"$'\n'
  done
  while read -r i r h s; do
    wait_for "worker $i" 30 curl -sf "http://127.0.0.1:$h/readyz"
  done <"$run/workers"

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
      local ready
      ready="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$h/readyz" || true)"
      echo "worker-$i: rtmp 127.0.0.1:$r srt 127.0.0.1:$s http http://127.0.0.1:$h  /readyz $ready"
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
*)
  echo "usage: $0 up|down|status   (CLUSTER_DIR, WORKERS, RTMP_PORT, SRT_PORT, TIDEGATE_BIN, WORKER_ARGS)" >&2
  exit 2
  ;;
esac
