#!/usr/bin/env bash
# Checks the Kubernetes manifests of deploy/kubernetes offline, with no cluster:
#   1. renders every kustomization (base/pool, base, each overlay) with `kubectl kustomize`;
#   2. validates every rendered object (scripts/check-kubernetes.py): built-in kinds with
#      kubernetes-validate, strict, against the oldest Kubernetes these manifests support
#      (1.30: the preStop `sleep` action) and the newest it ships a schema for; the Prometheus
#      Operator's ServiceMonitor and PrometheusRule against their structure; then selectors,
#      references, ports, the drain timing arithmetic and the restricted security settings;
#   3. runs checkov once over all rendered files (framework kubernetes) and deploy/Dockerfile
#      (framework dockerfile); a check is skipped only by a `checkov.io/skipN` annotation on
#      the object (a `# checkov:skip=` comment in the Dockerfile), with its reason.
# Exits non-zero on any failure and prints a summary.
#
# Tools: kubectl (Debian kubernetes-client, or any newer kubectl), and kubernetes-validate and
# checkov from PyPI in a virtualenv (scripts/install-test-tools.sh puts them in
# ${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/k8s-tools, or TIDEGATE_K8S_TOOLS).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "check-kubernetes: $*" >&2; }

KUBE_VERSIONS="${KUBE_VERSIONS:-1.30.0,1.37.0}"
tools="${TIDEGATE_K8S_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/k8s-tools}"
PATH="$tools/bin:$PATH"

missing=0
if ! command -v kubectl >/dev/null 2>&1 || ! kubectl kustomize --help >/dev/null 2>&1; then
  log "kubectl with 'kustomize' is missing (Debian package kubernetes-client); run ./scripts/install-test-tools.sh"
  missing=1
fi
python=python3
[[ -x "$tools/bin/python" ]] && python="$tools/bin/python"
if ! "$python" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; then
  log "python module kubernetes_validate is missing (PyPI kubernetes-validate); run ./scripts/install-test-tools.sh"
  missing=1
fi
if ! command -v checkov >/dev/null 2>&1; then
  log "checkov is missing (PyPI checkov); run ./scripts/install-test-tools.sh"
  missing=1
fi
((missing == 0)) || exit 1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rendered"

# Every directory with a kustomization.yaml, the base and its pool first.
mapfile -t dirs < <(find deploy/kubernetes -name kustomization.yaml -printf '%h\n' | sort)
rendered=()
render_failed=0
for dir in "${dirs[@]}"; do
  out="$tmp/rendered/$(echo "${dir#deploy/kubernetes/}" | tr / -).yaml"
  # Newer kubectl versions warn about the older kustomization fields kept for old kubectl
  # versions; the warnings are expected, anything else on stderr is shown.
  if kubectl kustomize "$dir" >"$out" 2>"$tmp/err"; then
    grep -v "^# Warning: '[a-zA-Z0-9]*' is deprecated" "$tmp/err" >&2 || true
    log "rendered $dir ($(grep -c '^kind:' "$out") objects)"
    rendered+=("$out")
  else
    cat "$tmp/err" >&2
    log "FAILED to render $dir"
    render_failed=1
  fi
done

# Reports name the rendered files relative to their directory (e.g. overlays-production.yaml).
names=()
for f in "${rendered[@]}"; do names+=("$(basename "$f")"); done

validate_rc=0
(cd "$tmp/rendered" && "$python" "$OLDPWD/scripts/check-kubernetes.py" "$KUBE_VERSIONS" "${names[@]}") >&2 \
  || validate_rc=$?

# The image's Dockerfile goes through the same checkov run (framework dockerfile).
cp deploy/Dockerfile "$tmp/rendered/Dockerfile"
log "checkov --framework kubernetes dockerfile over ${#rendered[@]} rendered files and deploy/Dockerfile"
checkov_rc=0
CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE \
  checkov -d "$tmp/rendered" --framework kubernetes dockerfile --compact --skip-download \
  -o json --output-file-path "$tmp/checkov" >"$tmp/checkov.out" 2>&1 || checkov_rc=$?
if [[ -f "$tmp/checkov/results_json.json" ]]; then
  "$python" scripts/check-kubernetes.py --checkov-report "$tmp/checkov/results_json.json" >&2 || checkov_rc=1
else
  tail -n 30 "$tmp/checkov.out" >&2
  log "checkov wrote no report"
  checkov_rc=1
fi

summary="rendered ${#rendered[@]}/${#dirs[@]} kustomizations"
summary+="; kubernetes-validate + structure + consistency: $([[ $validate_rc -eq 0 ]] && echo ok || echo FAILED)"
summary+="; checkov: $([[ $checkov_rc -eq 0 ]] && echo ok || echo FAILED)"
if ((render_failed || validate_rc || checkov_rc)); then
  log "FAILED: $summary"
  exit 1
fi
log "all Kubernetes checks passed: $summary"
