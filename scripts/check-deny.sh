#!/usr/bin/env bash
# The supply-chain check: `cargo deny check` against deny.toml (advisories, licences, bans
# including duplicate versions, sources).
#
# The advisories need RustSec's advisory database, a git repository on GitHub that cargo-deny
# fetches into $CARGO_HOME/advisory-dbs. The first of these that is there is used, and the
# output says which and of what date:
# 1. the live database, fetched now (TIDEGATE_ADVISORY_DB=/path/to/a/clone fetches from a local
#    clone or mirror instead of GitHub);
# 2. the copy an earlier fetch left in $CARGO_HOME/advisory-dbs, if it is at least as new as
#    the snapshot below (it covers every crate);
# 3. the committed snapshot, deny/advisory-snapshot/: the advisories of every crates.io package
#    in Cargo.lock when it was taken (scripts/refresh-advisory-snapshot.sh). It is rebuilt into
#    a git repository in a temporary directory, which cargo-deny reads (`--offline`) through a
#    copy of deny.toml naming it as `db-path`. This is what CI uses: it cannot reach GitHub. If
#    Cargo.lock names a crates.io package the snapshot does not cover, the run fails under
#    CI=true and warns elsewhere: run scripts/refresh-advisory-snapshot.sh. A snapshot older
#    than 90 days (cargo-deny's own limit for a database) gets a warning.
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

snapshot=deny/advisory-snapshot
if [[ ! -f "$snapshot/SOURCE" || ! -f "$snapshot/crates.txt" ]]; then
  log "error: the advisory snapshot ($snapshot/SOURCE, crates.txt) is missing from the checkout"
  exit 1
fi
snapshot_field() { sed -n "s/^$1=//p" "$snapshot/SOURCE"; }
snapshot_commit="$(snapshot_field commit)"
snapshot_date="$(snapshot_field date)"
snapshot_epoch="$(date -d "$snapshot_date" +%s)"
snapshot_day="$(date -u -d "$snapshot_date" +%F)"
now="$(date +%s)"
snapshot_age_days=$(((now - snapshot_epoch) / 86400))

# The crates.io packages in Cargo.lock the snapshot has no entry for (our own crates, path
# dependencies, are never matched against advisories).
uncovered() {
  awk '/^\[\[package\]\]/ { name = "" }
       /^name = / { name = $3; gsub(/"/, "", name) }
       /^source = "registry\+/ { print name }' Cargo.lock |
    LC_ALL=C sort -u | LC_ALL=C comm -23 - "$snapshot/crates.txt" | paste -s -d ' '
}

if [[ -n "${TIDEGATE_ADVISORY_DB:-}" ]]; then
  # git (which cargo-deny runs to fetch) reads the URL rewrite from the environment.
  export GIT_CONFIG_COUNT=1
  export GIT_CONFIG_KEY_0="url.$TIDEGATE_ADVISORY_DB.insteadOf"
  export GIT_CONFIG_VALUE_0="https://github.com/RustSec/advisory-db"
fi

# `cargo deny --offline` runs `cargo metadata --offline`, which needs every package in
# Cargo.lock in cargo's cache, those of other platforms too (a build fetches only this one's):
# fetched here from the registry the build uses.
if ! cargo fetch --locked --quiet; then
  log "warning: cargo fetch failed; the offline check below needs every package in Cargo.lock"
fi

db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if cargo deny --log-level error fetch db; then
  missing="$(uncovered)"
  if [[ -n "$missing" ]]; then
    log "note: the committed advisory snapshot does not cover $missing" \
      "(CI, which cannot fetch the database, will fail): run ./scripts/refresh-advisory-snapshot.sh"
  fi
  cargo deny check
  exit 0
fi

# A copy is a directory with the advisories in it (a failed clone leaves none behind).
db="$(find "$db_root" -mindepth 1 -maxdepth 1 -type d -name 'advisory-db-*' 2>/dev/null | head -n 1)"
if [[ -n "$db" && -d "$db/crates" ]]; then
  db_epoch="$(git -C "$db" log -1 --format=%ct 2>/dev/null || echo 0)"
  if ((db_epoch >= snapshot_epoch)); then
    log "warning: cannot fetch the advisory database; using the copy in $db" \
      "(last advisory commit $(git -C "$db" log -1 --format=%cs))"
    # cargo-deny's own age limit counts from the last fetch attempt, even a failed one.
    if (((now - db_epoch) / 86400 > 90)); then
      log "warning: that copy is more than 90 days old: it has no advisory published since then"
    fi
    cargo deny --offline check
    exit 0
  fi
  log "the copy in $db is older than the committed snapshot: not using it"
fi

log "warning: cannot fetch the advisory database; checking advisories against the committed" \
  "snapshot of $snapshot_day (RustSec advisory-db ${snapshot_commit:0:12}," \
  "$snapshot_age_days days old, $snapshot)"
if ((snapshot_age_days > 90)); then
  log "warning: the advisory snapshot is more than 90 days old: it has no advisory published" \
    "after $snapshot_day; run ./scripts/refresh-advisory-snapshot.sh"
fi
missing="$(uncovered)"
if [[ -n "$missing" ]]; then
  if [[ "${CI:-}" == "true" ]]; then
    log "error: Cargo.lock has crates the advisory snapshot does not cover: $missing"
    log "run ./scripts/refresh-advisory-snapshot.sh (where GitHub is reachable, or give it a" \
      "clone of RustSec's advisory-db) and commit $snapshot"
    exit 1
  fi
  log "warning: advisories NOT checked for $missing (not in the snapshot):" \
    "run ./scripts/refresh-advisory-snapshot.sh"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# cargo-deny opens <db-path>/<name>-<hash of the URL>: this is its directory for the default
# URL (https://github.com/RustSec/advisory-db), the same as in $CARGO_HOME/advisory-dbs. The
# commit carries the snapshot's date; cargo-deny reads the database's files, not its history.
db="$tmp/advisory-dbs/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -R "$snapshot/crates" "$db/crates"
git -C "$db" init --quiet
git -C "$db" add crates
GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date" \
  git -C "$db" -c user.name=check-deny -c user.email=check-deny@localhost \
  -c commit.gpgsign=false commit --quiet --no-verify \
  -m "RustSec advisory-db $snapshot_commit, the crates in Cargo.lock ($snapshot)"

# deny.toml with the snapshot as the database directory, and nothing else changed.
if grep -q '^db-path' deny.toml; then
  log "error: deny.toml sets db-path; this script sets it for the snapshot"
  exit 1
fi
awk -v path="$tmp/advisory-dbs" '{ print } /^\[advisories\]$/ { print "db-path = \"" path "\"" }' \
  deny.toml >"$tmp/deny.toml"
if [[ "$(grep -c '^db-path' "$tmp/deny.toml")" != 1 ]]; then
  log "error: deny.toml has no [advisories] table to name the snapshot in"
  exit 1
fi

cargo deny --offline --config "$tmp/deny.toml" check
log "advisories checked against the snapshot of $snapshot_day"
