#!/usr/bin/env bash
# Throwaway cluster backends for trying `tidegate serve` in cluster mode by hand: a
# redis-server (no persistence) and an S3 server (moto) on free loopback ports, with bucket
# `tidegate` created. The integration tests (crates/store/tests/store_backends.rs) start
# their own servers and do not need this script.
#
#   scripts/test-services.sh start [DIR]   # start both, write DIR/env (default /tmp/tidegate-services)
#   source /tmp/tidegate-services/env      # AWS_* variables, TIDEGATE_STATE, TIDEGATE_STORAGE
#   tidegate serve                         # now uses Redis and S3
#   scripts/test-services.sh stop [DIR]    # stop both (only the processes this script started)
#
# Install the servers with scripts/install-test-tools.sh.
set -euo pipefail

cmd="${1:-}"
dir="${2:-/tmp/tidegate-services}"
bucket="tidegate"

log() { echo "test-services: $*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS COMMAND...: retries COMMAND every 50 ms.
wait_for() {
  local what="$1" limit="$2" start
  shift 2
  start=$(date +%s%N)
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s%N) - start > limit * 1000000000)); then
      log "$what did not start within ${limit}s (log in $dir)"
      return 1
    fi
    sleep 0.05
  done
  log "$what ready in $((($(date +%s%N) - start) / 1000000)) ms"
}

stop() {
  for name in redis s3; do
    if [[ -f "$dir/$name.pid" ]]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

case "$cmd" in
start)
  command -v redis-server >/dev/null || { log "redis-server missing (scripts/install-test-tools.sh)"; exit 1; }
  python3 -c 'import moto.server' 2>/dev/null || { log "moto missing (pip install 'moto[server]')"; exit 1; }
  mkdir -p "$dir"
  stop
  redis_port=$(free_port)
  s3_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$dir/redis.log" 2>&1 &
  echo $! >"$dir/redis.pid"
  python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >"$dir/s3.log" 2>&1 &
  echo $! >"$dir/s3.pid"
  wait_for "redis-server :$redis_port" 10 redis-cli -p "$redis_port" ping
  wait_for "moto S3 :$s3_port" 20 curl -sf "http://127.0.0.1:$s3_port/"
  curl -sf -X PUT "http://127.0.0.1:$s3_port/$bucket" -o /dev/null
  cat >"$dir/env" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_ALLOW_HTTP=true
export TIDEGATE_STATE=redis://127.0.0.1:$redis_port/0
export TIDEGATE_STORAGE=s3://$bucket/live
EOF
  log "source $dir/env"
  ;;
stop)
  stop
  log "stopped"
  ;;
*)
  echo "usage: $0 start|stop [DIR]" >&2
  exit 2
  ;;
esac
