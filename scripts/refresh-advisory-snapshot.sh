#!/usr/bin/env bash
# Regenerates deny/advisory-snapshot/, the committed part of RustSec's advisory database that
# scripts/check-deny.sh checks against when it cannot fetch the database (no GitHub in CI).
#
#   scripts/refresh-advisory-snapshot.sh [DB]
#
# DB is a git clone of https://github.com/RustSec/advisory-db, for example the one cargo-deny
# keeps in $CARGO_HOME/advisory-dbs/advisory-db-*. Without it, the database is cloned afresh
# (shallow) from GitHub, or from $TIDEGATE_ADVISORY_DB (a local clone or mirror) if set.
#
# The snapshot holds, for every crates.io package name in Cargo.lock, its advisories
# (crates/<name>/*.md, exactly as in the database; cargo-deny reads nothing else: not rust/);
# crates.txt, the names it covers (including those with no advisory); SOURCE, the database's
# commit and its date; and the database's licence (CC0-1.0). Run it again when Cargo.lock gains
# a crate (check-deny.sh says so) and whenever the snapshot is getting old.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "refresh-advisory-snapshot: $*" >&2; }
die() { log "error: $*"; exit 1; }

snapshot=deny/advisory-snapshot
upstream=https://github.com/RustSec/advisory-db

[[ $# -le 1 ]] || die "usage: $0 [path to a clone of RustSec's advisory-db]"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ $# -eq 1 ]]; then
  db="$1"
else
  from="${TIDEGATE_ADVISORY_DB:-$upstream}"
  log "cloning $from"
  git clone --quiet --depth 1 "$from" "$tmp/advisory-db" ||
    die "cannot clone $from; give the path of a clone instead" \
      "(e.g. ${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-*)"
  db="$tmp/advisory-db"
fi

# The snapshot names the commit it was taken from, so that commit must be what is on disk.
[[ -d "$db/crates" ]] || die "$db has no crates/ directory: not an advisory database"
commit="$(git -C "$db" rev-parse --verify HEAD)" || die "$db is not a git clone"
[[ -z "$(git -C "$db" status --porcelain)" ]] ||
  die "$db has changes of its own (git status); the snapshot must match a commit"
date="$(git -C "$db" log -1 --format=%cI HEAD)"
origin="$(git -C "$db" remote get-url origin 2>/dev/null || echo "$upstream")"

# Crates.io packages only: our own crates (path dependencies, no `source`) are never matched
# against advisories.
awk '/^\[\[package\]\]/ { name = "" }
     /^name = / { name = $3; gsub(/"/, "", name) }
     /^source = "registry\+/ { print name }' Cargo.lock | LC_ALL=C sort -u >"$tmp/crates.txt"
[[ -s "$tmp/crates.txt" ]] || die "no crates.io packages found in Cargo.lock"

new="$tmp/snapshot"
mkdir -p "$new/crates"
while read -r name; do
  if [[ -d "$db/crates/$name" ]]; then
    cp -R "$db/crates/$name" "$new/crates/$name"
  fi
done <"$tmp/crates.txt"
cp "$tmp/crates.txt" "$new/crates.txt"
cp "$db/LICENSE.txt" "$new/LICENSE.txt"

advisories="$(find "$new/crates" -name '*.md' | wc -l)"
with_advisories="$(find "$new/crates" -mindepth 1 -maxdepth 1 -type d | wc -l)"
cat >"$new/SOURCE" <<EOF
# Written by scripts/refresh-advisory-snapshot.sh; read by scripts/check-deny.sh. Do not edit.
# The advisories in crates/ are RustSec's (CC0-1.0, LICENSE.txt), for the names in crates.txt.
url=$origin
commit=$commit
date=$date
advisories=$advisories
EOF

rm -rf "$snapshot"
mkdir -p "$(dirname "$snapshot")"
cp -R "$new" "$snapshot"

log "$snapshot: $advisories advisories for $with_advisories of the $(wc -l <"$tmp/crates.txt")" \
  "crate names in Cargo.lock, from $origin at ${commit:0:12} ($date);" \
  "$(find "$snapshot" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d KB", s / 1024 }')" \
  "in $(find "$snapshot" -type f | wc -l) files"
