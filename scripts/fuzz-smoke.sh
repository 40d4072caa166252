#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each one briefly. Fails if a target does not
# build or crashes. Crash inputs that are kept as regression vectors live in
# fuzz/artifacts/<target>/ and fuzz/corpus/<target>/ and are replayed first.
#
# Environment: FUZZ_SECONDS (per target, default 15); FUZZ_JOBS (targets run at once, default
# the number of CPUs: a libFuzzer run is one process on one core, so on the 2-core CI machine
# two at a time halve the phase's wall time and give each target the same core-seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-15}"
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
((jobs >= 1)) || jobs=1
# cargo-fuzz passes a few -Z flags to rustc; this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz is not installed (run scripts/install-test-tools.sh)" >&2
  exit 1
fi

targets=$(cargo fuzz list --fuzz-dir fuzz)
if [[ -z "$targets" ]]; then
  echo "fuzz-smoke: no fuzz targets found" >&2
  exit 1
fi

echo "fuzz-smoke: building $(echo "$targets" | wc -l) targets" >&2
cargo fuzz build --fuzz-dir fuzz -s none

logdir="${CARGO_TARGET_DIR:-target}/fuzz-logs"
mkdir -p "$logdir"

# run_target T: a short run of target T (its corpus and kept crash inputs replayed first);
# its output goes to $logdir/T.log, its exit status is the verdict.
run_target() {
  local t="$1" corpus="fuzz/corpus/$1"
  mkdir -p "$corpus"
  local args=("$corpus")
  [[ -d "fuzz/artifacts/$t" ]] && args+=("fuzz/artifacts/$t")
  # -rss_limit_mb: a parser that allocates a peer-announced size without bound fails here.
  cargo fuzz run --fuzz-dir fuzz -s none "$t" "${args[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=0 >"$logdir/$t.log" 2>&1
}

# Up to $jobs targets at once; each one's verdict is collected as it ends.
failed=()
declare -A running=()
reap() {
  local pid t rc
  wait -n -p pid "${!running[@]}" && rc=0 || rc=$?
  t="${running[$pid]}"
  unset "running[$pid]"
  if ((rc != 0)); then
    echo "fuzz-smoke: target $t FAILED; last lines of its log:" >&2
    tail -n 40 "$logdir/$t.log" >&2 || true
    failed+=("$t")
  fi
}
echo "fuzz-smoke: running each target for ${seconds}s, $jobs at a time" >&2
for t in $targets; do
  while ((${#running[@]} >= jobs)); do reap; done
  echo "fuzz-smoke: running $t for ${seconds}s" >&2
  run_target "$t" &
  running[$!]="$t"
done
while ((${#running[@]} > 0)); do reap; done

if ((${#failed[@]} > 0)); then
  echo "fuzz-smoke: failed targets: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a crash" >&2
