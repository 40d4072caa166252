#!/usr/bin/env bash
# The project's test command: tools, formatting, lints, the dependency check (cargo deny),
# build, every test (unit, integration against the real binary, doctests) and a short fuzz run
# of every parser.
# Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> test.sh: $*" >&2; }
# The test runner's own summary is the last thing printed; the exit code is the verdict.

step "install test tools"
./scripts/install-test-tools.sh

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo deny check (advisories, licences, duplicate versions, sources)"
./scripts/check-deny.sh

# The shipped feature set (no dev-dependencies) compiles. Clippy above and the tests' build
# below unify the dev-dependencies' features in (tokio's test-util, serde's alloc, regex's
# unicode...), so this is the one compile of exactly what ships. A check, not a debug build:
# of that build, the tests reused only the crates whose features do not differ (the ~65 that
# do, tokio and serde up to the workspace, were compiled again, ~55 s of the 2-core CI
# machine's run); the tests' build compiles and links the same binary.
step "cargo check --workspace (the shipped feature set)"
cargo check --workspace

step "prometheus rules"; ./scripts/check-prometheus.sh

step "kubernetes manifests"; ./scripts/check-kubernetes.sh

step "fuzz smoke run"
./scripts/fuzz-smoke.sh

step "doctests"
cargo test --workspace --doc

# How many tests run at once, the browser tests' group and the slow tests' head start are
# in .config/nextest.toml (the integration tests mostly wait on real time: four at a time on
# a 2-core machine); TEST_THREADS=N overrides the number.
if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast ${TEST_THREADS:+--test-threads "$TEST_THREADS"}
else
  step "cargo test --workspace (cargo-nextest not installed)"
  cargo test --workspace --no-fail-fast -- --test-threads "${TEST_THREADS:-2}"
fi

