#!/usr/bin/env bash
# The supply-chain check: `cargo deny check` against deny.toml (advisories, licences, bans
# including duplicate versions, sources).
#
# The advisories need RustSec's advisory database, a git repository cargo-deny fetches into
# $CARGO_HOME/advisory-dbs. When it cannot be fetched (no network to it), the copy already
# there from an earlier fetch is used, and the check says how old it is. With no copy at all,
# the run fails under CI=true; elsewhere the other three checks run and a warning says the
# advisories were not checked. TIDEGATE_ADVISORY_DB=/path/to/a/clone fetches from a local
# clone (or mirror) of the database instead of GitHub.
#
# cargo-deny itself comes from scripts/install-test-tools.sh (pinned, in its own directory).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "check-deny: $*" >&2; }

deny_tools="${TIDEGATE_DENY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/deny-tools}"
export PATH="$deny_tools/bin:$PATH"
if ! cargo deny --version >/dev/null 2>&1; then
  log "cargo-deny is missing; run ./scripts/install-test-tools.sh"
  exit 1
fi

if [[ -n "${TIDEGATE_ADVISORY_DB:-}" ]]; then
  # git (which cargo-deny runs to fetch) reads the URL rewrite from the environment.
  export GIT_CONFIG_COUNT=1
  export GIT_CONFIG_KEY_0="url.$TIDEGATE_ADVISORY_DB.insteadOf"
  export GIT_CONFIG_VALUE_0="https://github.com/RustSec/advisory-db"
fi

db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if cargo deny --log-level error fetch db; then
  cargo deny check
  exit 0
fi

# A copy is a directory with the advisories in it (a failed clone leaves none behind).
db="$(find "$db_root" -mindepth 1 -maxdepth 1 -type d -name 'advisory-db-*' 2>/dev/null | head -n 1)"
if [[ -n "$db" && -d "$db/crates" ]]; then
  log "warning: cannot fetch the advisory database; using the copy in $db" \
    "(last advisory commit $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo unknown))"
  cargo deny --offline check
  exit 0
fi

if [[ "${CI:-}" == "true" ]]; then
  log "error: CI=true and no advisory database: cannot fetch it and none in $db_root" \
    "(set TIDEGATE_ADVISORY_DB to a clone of RustSec's advisory-db)"
  exit 1
fi
log "warning: no advisory database (cannot fetch it, none in $db_root): advisories NOT checked"
cargo deny --offline check bans licenses sources
