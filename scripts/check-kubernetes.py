#!/usr/bin/env python3
"""Offline checks of the rendered Kubernetes manifests (called by scripts/check-kubernetes.sh).

    check-kubernetes.py KUBERNETES_VERSION[,VERSION...] RENDERED.yaml...
    check-kubernetes.py --checkov-report results_json.json

Each RENDERED.yaml is the output of `kubectl kustomize` for one kustomization. For every
document:
  - built-in kinds: kubernetes-validate, strict (unknown fields are errors), against each
    Kubernetes version given;
  - ServiceMonitor and PrometheusRule (Prometheus Operator CRDs, which kubernetes-validate has
    no schema for): a JSON schema of their structure written here, strict where these
    manifests use a field;
then, per file, what the API server or the cluster would only show later: selectors that
select the pods they are meant to, names that refer to objects that exist, probe and Service
ports that name a container port, the drain timing arithmetic, the security settings
the namespace's Pod Security level "restricted" requires, and pools (a Deployment labelled
tidegate.io/pool=P runs --pool P on P's reserved nodes; the shared one runs no --pool and
stays off them). Renders applied next to each other (production and premium-pool) are
checked together too: no name defined twice, one namespace, and every selector selecting
the pods of one pool only.

Exits 1 on any failure; prints one line per file and a summary. With --checkov-report it
summarizes checkov's JSON report instead: every failed check, every skipped one with the
reason its annotation gives, and a failure when checkov could not parse a file or ran no
check at all.
"""

import json

import re
import sys

import jsonschema
import kubernetes_validate
import yaml

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                "dropequal", "DropEqual",
            ]
        },
    },
}
# The fields of monitoring.coreos.com/v1 ServiceMonitor these manifests may use.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["credentials"],
                                "properties": {
                                    "type": {"const": "Bearer"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["name", "key"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "key": {"type": "string"},
                                            "optional": {"type": "boolean"},
                                        },
                                    },
                                },
                            },
                            "honorTimestamps": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": RELABEL},
                            "metricRelabelings": {"type": "array", "items": RELABEL},
                        },
                    },
                },
            },
        },
    },
}
# The fields of monitoring.coreos.com/v1 PrometheusRule.
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "query_offset": {"type": "string", "pattern": DURATION},
                            "limit": {"type": "integer"},
                            "labels": STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": DURATION},
                                        "labels": STRING_MAP,
                                        "annotations": STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}


def seconds(duration):
    """`30s`, `1m30s`, `500ms` -> seconds (the humantime forms these manifests use)."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|h|m|s)", duration):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def consistency(docs):
    """Problems in one rendered kustomization that no schema sees."""
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
    accounts = {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])}
    deployments = by_kind.get("Deployment", [])
    pods = []  # (deployment name, template labels, container port names by protocol)
    for dep in deployments:
        name = dep["metadata"]["name"]
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        tlabels = spec["template"]["metadata"].get("labels", {})
        if not selects(spec["selector"].get("matchLabels"), tlabels):
            problems.append(f"Deployment {name}: selector does not match its pod template labels")
        for c in pod.get("topologySpreadConstraints", []):
            if not selects(c["labelSelector"].get("matchLabels"), tlabels):
                problems.append(
                    f"Deployment {name}: topology spread on {c['topologyKey']} does not select its own pods"
                )
        sa = pod.get("serviceAccountName")
        if accounts and sa not in accounts:
            problems.append(f"Deployment {name}: serviceAccountName {sa} is not rendered here")
        sec = pod.get("securityContext", {})
        if sec.get("runAsNonRoot") is not True or sec.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"Deployment {name}: pod must set runAsNonRoot and seccompProfile RuntimeDefault")
        ports = {}
        for c in pod["containers"]:
            csec = c.get("securityContext", {})
            if (
                csec.get("allowPrivilegeEscalation") is not False
                or csec.get("readOnlyRootFilesystem") is not True
                or csec.get("capabilities", {}).get("drop") != ["ALL"]
            ):
                problems.append(
                    f"Deployment {name}/{c['name']}: needs allowPrivilegeEscalation false, "
                    "readOnlyRootFilesystem true, capabilities drop ALL"
                )
            for p in c.get("ports", []):
                ports[p["name"]] = (p.get("protocol", "TCP"), p["containerPort"])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in ports and port not in [v[1] for v in ports.values()]:
                    problems.append(f"Deployment {name}/{c['name']}: {probe} port {port} is not a container port")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/livez":
                problems.append(f"Deployment {name}/{c['name']}: livenessProbe must be /livez")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                problems.append(f"Deployment {name}/{c['name']}: readinessProbe must be /readyz")
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm is not None and cm not in configmaps:
                    problems.append(f"Deployment {name}: envFrom ConfigMap {cm} is not rendered here")
            for r in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in c.get("resources", {}).get(r, {}):
                        problems.append(f"Deployment {name}/{c['name']}: no {res} {r}")
            # Drain timing: the grace period must cover the preStop sleep, --drain-timeout,
            # the close at a segment boundary (3 segment durations + 1 s), the flush of the
            # last segments (10 s) and the HTTP server's stop (2 s).
            if c["name"] == "tidegate":
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                drain = 30.0
                for a in c.get("args", []):
                    if a.startswith("--drain-timeout="):
                        drain = seconds(a.split("=", 1)[1])
                if env.get("TIDEGATE_DRAIN_TIMEOUT"):
                    drain = seconds(env["TIDEGATE_DRAIN_TIMEOUT"])
                segment = 2.0
                for cm in by_kind.get("ConfigMap", []):
                    if "TIDEGATE_SEGMENT_DURATION" in cm.get("data", {}):
                        segment = seconds(cm["data"]["TIDEGATE_SEGMENT_DURATION"])
                pre = c.get("lifecycle", {}).get("preStop", {})
                pre_s = pre.get("sleep", {}).get("seconds", 0)
                need = pre_s + drain + 3 * segment + 1 + 10 + 2
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace < need:
                    problems.append(
                        f"Deployment {name}: terminationGracePeriodSeconds {grace} < preStop {pre_s} + "
                        f"drain {drain:g} + boundary {3 * segment + 1:g} + flush 10 + http 2 = {need:g}"
                    )
        pods.append((name, tlabels, ports))

    def selected(selector):
        return [p for p in pods if selects(selector, p[1])]

    for svc in by_kind.get("Service", []):
        name = svc["metadata"]["name"]
        spec = svc["spec"]
        hits = selected(spec.get("selector"))
        if len(hits) != 1:
            problems.append(f"Service {name}: selects the pods of {len(hits)} Deployments (want 1)")
            continue
        dep, _, ports = hits[0]
        for p in spec["ports"]:
            target = p.get("targetPort", p["port"])
            if isinstance(target, str):
                if target not in ports:
                    problems.append(f"Service {name}: targetPort {target} is not a port of {dep}")
                elif ports[target][0] != p.get("protocol", "TCP"):
                    problems.append(f"Service {name}: port {p['name']} protocol differs from {dep}'s {target}")
        if spec.get("type") == "LoadBalancer":
            protocols = {p.get("protocol", "TCP") for p in spec["ports"]}
            if "UDP" in protocols and spec.get("externalTrafficPolicy") != "Local":
                problems.append(f"Service {name}: carries SRT (UDP) without externalTrafficPolicy Local")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        hits = selected(pdb["spec"]["selector"].get("matchLabels"))
        if len(hits) != 1:
            problems.append(f"PodDisruptionBudget {pdb['metadata']['name']}: selects {len(hits)} Deployments (want 1)")
    for pol in by_kind.get("NetworkPolicy", []):
        hits = selected(pol["spec"]["podSelector"].get("matchLabels"))
        if len(hits) != 1:
            problems.append(f"NetworkPolicy {pol['metadata']['name']}: selects {len(hits)} Deployments (want 1)")
    dep_names = {d["metadata"]["name"] for d in deployments}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in dep_names:
            problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: target {ref['name']} is not rendered here")
        if hpa["spec"].get("minReplicas", 1) < 3:
            problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: minReplicas below 3")
    for dep in deployments:
        if "replicas" in dep["spec"] and by_kind.get("HorizontalPodAutoscaler"):
            problems.append(f"Deployment {dep['metadata']['name']}: sets replicas although an HPA owns the count")
    services = by_kind.get("Service", [])
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels")
        hits = [s for s in services if selects(sel, s["metadata"].get("labels", {}))]
        if not hits:
            problems.append(f"ServiceMonitor {sm['metadata']['name']}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            for s in hits:
                if ep.get("port") not in [p.get("name") for p in s["spec"]["ports"]]:
                    problems.append(
                        f"ServiceMonitor {sm['metadata']['name']}: Service {s['metadata']['name']} has no port {ep.get('port')}"
                    )
    problems += pool_problems(deployments)
    return problems


# --- Dedicated pools (issue #12, item 4) ---
POOL_LABEL = "tidegate.io/pool"


def worker_pool(container):
    """The pool a tidegate container serves: --pool / --pool=X in its args, or TIDEGATE_POOL;
    None for the shared pool."""
    args = container.get("args", [])
    for i, a in enumerate(args):
        if a.startswith("--pool="):
            return a.split("=", 1)[1]
        if a == "--pool" and i + 1 < len(args):
            return args[i + 1]
    for e in container.get("env", []):
        if e["name"] == "TIDEGATE_POOL":
            return e.get("value")
    return None


def pool_problems(deployments):
    """A Deployment labelled for pool P runs workers of pool P (`--pool P`), on P's nodes only
    (node selector and toleration of the taint tidegate.io/pool=P:NoSchedule); the shared
    pool's workers have no --pool and tolerate no pool's taint, so they stay off the reserved
    nodes."""
    problems = []
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        label = dep["spec"]["template"]["metadata"].get("labels", {}).get(POOL_LABEL)
        if label is None:
            problems.append(f"Deployment {name}: pod template has no {POOL_LABEL} label")
            continue
        pools = {worker_pool(c) for c in pod["containers"] if c["name"] == "tidegate"}
        selector = pod.get("nodeSelector", {}).get(POOL_LABEL)
        tolerated = {
            t.get("value")
            for t in pod.get("tolerations", [])
            if t.get("key") == POOL_LABEL and t.get("effect") in ("NoSchedule", None)
        }
        if label == "shared":
            if pools != {None}:
                problems.append(f"Deployment {name}: shared pool, but its workers run with --pool {pools}")
            if selector is not None or tolerated:
                problems.append(f"Deployment {name}: shared pool, but it selects or tolerates a pool's nodes")
            continue
        if pools != {label}:
            problems.append(f"Deployment {name}: pool {label}, but its workers run with --pool {pools} (want {label})")
        if selector != label:
            problems.append(f"Deployment {name}: pool {label}: nodeSelector {POOL_LABEL} must be {label}")
        if label not in tolerated:
            problems.append(
                f"Deployment {name}: pool {label}: must tolerate the taint {POOL_LABEL}={label}:NoSchedule"
            )
    return problems


# Renders applied next to each other in one namespace: the shared pool and a dedicated one.
TOGETHER = [("overlays-production.yaml", "overlays-premium-pool.yaml")]


def together(paths):
    """Problems of renders applied together: names that collide, and selectors (Services,
    budgets, autoscalers, policies) that would select the pods of both pools."""
    docs = []
    for path in paths:
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    problems = []
    seen = set()
    for d in docs:
        key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        if key in seen and d["kind"] != "Namespace":
            problems.append(f"{d['kind']} {d['metadata']['name']}: defined by more than one of {paths}")
        seen.add(key)
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if len(namespaces) != 1:
        problems.append(f"not one namespace: {sorted(map(str, namespaces))}")
    problems += consistency(docs)
    return problems


def checkov_report(path):
    with open(path) as f:
        report = json.load(f)
    reports = report if isinstance(report, list) else [report]
    failed = 0
    passed = 0
    for r in reports:
        results = r.get("results", {})
        summary = r.get("summary", {})
        passed += summary.get("passed", 0)
        for c in results.get("failed_checks", []):
            failed += 1
            lines = "-".join(str(n) for n in c.get("file_line_range", []))
            print(f"  FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{lines})")
        skipped = {}
        for c in results.get("skipped_checks", []):
            reason = c.get("check_result", {}).get("suppress_comment", "")
            skipped.setdefault((c["check_id"], reason), []).append(c["resource"])
        for (check, reason), resources in sorted(skipped.items()):
            print(f"  skipped {check} on {len(resources)} objects ({', '.join(sorted(set(resources)))}): {reason}")
        for e in results.get("parsing_errors", []):
            failed += 1
            print(f"  checkov could not parse {e}")
        print(
            f"check-kubernetes: checkov {summary.get('checkov_version', '?')} {r.get('check_type', '')}: "
            f"{summary.get('resource_count', 0)} objects, passed {summary.get('passed', 0)}, "
            f"failed {summary.get('failed', 0)}, skipped {summary.get('skipped', 0)}, "
            f"parsing errors {summary.get('parsing_errors', 0)}"
        )
    if passed == 0:
        print("check-kubernetes: checkov ran no check")
        failed += 1
    sys.exit(1 if failed else 0)


def main():
    if sys.argv[1] == "--checkov-report":
        checkov_report(sys.argv[2])
    versions = sys.argv[1].split(",")
    failures = 0
    total = 0
    for path in sys.argv[2:]:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        errors = []
        crds = 0
        for d in docs:
            total += 1
            what = f"{d.get('kind')} {d.get('metadata', {}).get('name')}"
            schema = CRD_SCHEMAS.get((d.get("apiVersion"), d.get("kind")))
            if schema is not None:
                crds += 1
                for e in jsonschema.Draft7Validator(schema).iter_errors(d):
                    where = "/".join(str(p) for p in e.absolute_path)
                    errors.append(f"{what}: {where}: {e.message}")
                continue
            for v in versions:
                try:
                    kubernetes_validate.validate(d, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = "/".join(str(p) for p in e.path)
                    errors.append(f"{what} (Kubernetes {v}): {where}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    errors.append(f"{what} (Kubernetes {v}): no schema: {e}")
        errors += consistency(docs)
        status = "ok" if not errors else "FAILED"
        print(
            f"check-kubernetes: {path}: {len(docs)} objects ({len(docs) - crds} against Kubernetes "
            f"{'/'.join(versions)} schemas, strict; {crds} Prometheus Operator objects against their "
            f"CRD structure here): {status}"
        )
        for e in errors:
            print(f"  {e}")
        failures += len(errors)
    for pair in TOGETHER:
        if all(p in sys.argv[2:] for p in pair):
            errors = together(pair)
            print(f"check-kubernetes: {' + '.join(pair)} applied together: {'ok' if not errors else 'FAILED'}")
            for e in errors:
                print(f"  {e}")
            failures += len(errors)
    print(f"check-kubernetes: validated {total} objects in {len(sys.argv) - 2} renders, {failures} problems")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
