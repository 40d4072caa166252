#!/usr/bin/env bash
# Refreshes the dashboard's one npm dependency in the embedded assets:
#   web/build.sh          npm ci, then copy hls.js's light build into
#                         crates/origin/assets/dashboard/vendor/ (commit the result)
#   web/build.sh --check  npm ci, then fail unless the committed file is byte-identical
#                         to the one in the package pinned by package-lock.json
# cargo build never runs this: the built file is committed, so the binary builds offline.
set -euo pipefail
cd "$(dirname "$0")"
src=node_modules/hls.js/dist/hls.light.min.js
dst=../crates/origin/assets/dashboard/vendor/hls.light.min.js
npm ci --no-audit --no-fund --silent
version=$(node -p 'require("./node_modules/hls.js/package.json").version')
if [[ "${1:-}" == "--check" ]]; then
  if cmp -s "$src" "$dst"; then
    echo "web/build.sh: $dst is hls.js $version from npm"
  else
    echo "web/build.sh: $dst differs from hls.js $version (package-lock.json): run web/build.sh" >&2
    exit 1
  fi
else
  mkdir -p "$(dirname "$dst")"
  cp "$src" "$dst"
  echo "web/build.sh: copied hls.js $version ($(wc -c <"$dst") bytes, sha256 $(sha256sum "$dst" | cut -c1-16)...)"
fi
