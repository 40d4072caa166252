"""What the reports of the side-by-side benchmarks share: bench/compare_report.py (RTMP,
nginx-rtmp) and bench/compare_srt_report.py (SRT, libsrt) import it from their own folder.

A results directory holds one folder <server>-<N> per step, each with the measure.json the
script wrote and the generator's JSON report. This module parses the command line, reads
one step's files, the fields both tables derive from them, finds the steps and the largest
N each server sustained, and formats numbers.
"""

import argparse
import json
import os
import re


def parse_args():
    """The command line of both reports: OUT and --lag-limit-ms."""
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--lag-limit-ms", type=float, default=1000)
    return ap.parse_args()


def read_step(out, server, n):
    """(folder, measure.json, generator.json or {}) of step <server>-<n>, None when the step
    did not run (no measure.json)."""
    d = os.path.join(out, f"{server}-{n}")
    try:
        with open(os.path.join(d, "measure.json")) as f:
            m = json.load(f)
    except FileNotFoundError:
        return None
    gen = {}
    try:
        with open(os.path.join(d, "generator.json")) as f:
            gen = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    return d, m, gen


def publishers(gen):
    """The generator report's publishers section and the worst lag of any publisher (ms,
    None when absent)."""
    pubs = gen.get("publishers", {})
    return pubs, (pubs.get("max_lag_ms") or {}).get("max")


def kept_up(pubs, n, worst_lag, lag_limit_ms):
    """All n publishers connected and none fell lag_limit_ms behind real time."""
    return (
        bool(pubs)
        and pubs.get("connected") == n
        and worst_lag is not None
        and worst_lag < lag_limit_ms
    )


def common_fields(n, m, gen, window):
    """The fields of one step both tables use, over a measured window of `window` seconds."""
    pubs, worst_lag = publishers(gen)
    cpu_s = m["cpu_ticks"] / m["clk_tck"]
    return {
        "n": n,
        "window_s": window,
        "cpu_s": cpu_s,
        "cpu_pct": 100 * cpu_s / window if window > 0 else None,
        "peak_rss_mb": m["peak_rss_kb"] / 1024,
        "worst_lag_ms": worst_lag,
        "connected": pubs.get("connected"),
        "gen_cpu_pct": (gen.get("generator") or {}).get("cpu_percent"),
    }


def steps(out, servers, load, lag_limit_ms):
    """Every N with a <server>-<N> folder in out (sorted); one row (n, load(server 0), ...)
    per N, load(out, server, n, lag_limit_ms) giving a step's dict or None; and per server
    the largest N whose step has "sustained" true (None if none)."""
    pattern = "(" + "|".join(servers) + r")-\d+"
    ns = sorted({int(name.split("-")[1]) for name in os.listdir(out) if re.fullmatch(pattern, name)})
    rows = []
    best = dict.fromkeys(servers)
    for n in ns:
        results = [load(out, server, n, lag_limit_ms) for server in servers]
        rows.append((n, *results))
        for server, r in zip(servers, results):
            if r and r["sustained"]:
                best[server] = n
    return ns, rows, best


def get(r, k):
    return None if r is None else r[k]


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"
