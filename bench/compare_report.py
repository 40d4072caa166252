#!/usr/bin/env python3
"""Turns the raw files of bench/compare.sh into its side-by-side table.

Reads OUT/<server>-<N>/{measure.json,generator.json,metrics-0.txt,metrics-1.txt} and prints
a Markdown table: per N, for nginx-rtmp and tidegate, CPU core-seconds per Gbit ingested,
peak RSS, RSS per stream, whether the N publishers were sustained, tidegate's keyframe ->
playlist latency p50/p99 over the measured window, and the ratios tidegate / nginx.
"""

import math
import os
import re
import sys

# report_common.py sits next to this script, which may be run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_common import common_fields, fmt, get, kept_up, parse_args, publishers, ratio, read_step, steps

LATENCY_METRIC = "tidegate_segment_latency_seconds_bucket"


def histogram(path):
    """Cumulative bucket counts by upper bound (summed over label sets)."""
    buckets = {}
    if not os.path.exists(path):
        return buckets
    with open(path) as f:
        for line in f:
            if not line.startswith(LATENCY_METRIC):
                continue
            m = re.search(r'le="([^"]+)"\}\s+(\S+)', line)
            if not m:
                continue
            le = math.inf if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    return buckets


def quantile(before, after, q):
    """q quantile (seconds) of what the histogram observed between two scrapes,
    interpolated linearly within the bucket; (None, 0) without observations."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None, 0
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound, int(total)
            span = count - lower_count
            frac = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + frac * (bound - lower_bound), int(total)
        lower_bound, lower_count = bound, count
    return lower_bound, int(total)


def load(out, server, n, lag_limit_ms):
    step = read_step(out, server, n)
    if step is None:
        return None
    d, m, gen = step
    r = common_fields(n, m, gen, m["window_s"])
    gbit = m["ingest_bytes"] * 8 / 1e9
    pubs, worst_lag = publishers(gen)
    r.update(
        {
            "gbps": gbit / m["window_s"] if m["window_s"] > 0 else 0.0,
            "core_s_per_gbit": r["cpu_s"] / gbit if gbit > 0 else None,
            "rss_per_stream_kb": (m["peak_rss_kb"] - m["idle_rss_kb"]) / n,
            "sustained": kept_up(pubs, n, worst_lag, lag_limit_ms)
            and pubs.get("dropped") == 0
            and pubs.get("failed") == 0
            and pubs.get("refused") == 0,
            "gop_bytes": None,
            "p50_ms": None,
            "p99_ms": None,
            "segments": 0,
        }
    )
    inp = gen.get("input") or {}
    if inp.get("bitrate_kbps") and inp.get("gop_ms"):
        r["gop_bytes"] = inp["bitrate_kbps"] * 1000 / 8 * inp["gop_ms"] / 1000
    if server == "tidegate":
        before = histogram(os.path.join(d, "metrics-0.txt"))
        after = histogram(os.path.join(d, "metrics-1.txt"))
        p50, count = quantile(before, after, 0.50)
        p99, _ = quantile(before, after, 0.99)
        r["p50_ms"] = None if p50 is None else p50 * 1000
        r["p99_ms"] = None if p99 is None else p99 * 1000
        r["segments"] = count
    return r


def main():
    args = parse_args()
    ns, rows, best = steps(args.out, ("nginx", "tidegate"), load, args.lag_limit_ms)

    print(
        "| N | Gbit/s in (ng / tg) | core-s per Gbit: nginx | tidegate | tg/ng "
        "| peak RSS MB: nginx | tidegate | tg/ng "
        "| RSS/stream KB: nginx | tidegate | tg/ng "
        "| sustained (worst lag ms): nginx | tidegate "
        "| tidegate keyframe→playlist p50 / p99 ms (segments) |"
    )
    print("|" + " --- |" * 14)
    for n, ng, tg in rows:
        def sus(r):
            if r is None:
                return "–"
            lag = fmt(r["worst_lag_ms"], ".0f")
            return f"{'yes' if r['sustained'] else 'no'} ({lag})"

        lat = "–"
        if tg and tg["p50_ms"] is not None:
            lat = f"{tg['p50_ms']:.1f} / {tg['p99_ms']:.1f} ({tg['segments']})"
        print(
            f"| {n} | {fmt(get(ng, 'gbps'), '.3f')} / {fmt(get(tg, 'gbps'), '.3f')} "
            f"| {fmt(get(ng, 'core_s_per_gbit'), '.3f')} | {fmt(get(tg, 'core_s_per_gbit'), '.3f')} "
            f"| {ratio(get(tg, 'core_s_per_gbit'), get(ng, 'core_s_per_gbit'))} "
            f"| {fmt(get(ng, 'peak_rss_mb'), '.1f')} | {fmt(get(tg, 'peak_rss_mb'), '.1f')} "
            f"| {ratio(get(tg, 'peak_rss_mb'), get(ng, 'peak_rss_mb'))} "
            f"| {fmt(get(ng, 'rss_per_stream_kb'), '.0f')} | {fmt(get(tg, 'rss_per_stream_kb'), '.0f')} "
            f"| {ratio(get(tg, 'rss_per_stream_kb'), get(ng, 'rss_per_stream_kb'))} "
            f"| {sus(ng)} | {sus(tg)} | {lat} |"
        )
    print()
    print(
        f"Largest N sustained (of {' '.join(map(str, ns))}): "
        f"nginx-rtmp {best['nginx'] or 'none'}, tidegate {best['tidegate'] or 'none'}."
    )
    print()
    print("Server CPU busy over the window (% of its one core) and generator CPU (% of its core):")
    for n, ng, tg in rows:
        print(
            f"  N={n}: nginx {fmt(get(ng, 'cpu_pct'), '.1f')} %, tidegate "
            f"{fmt(get(tg, 'cpu_pct'), '.1f')} %; generator {fmt(get(ng, 'gen_cpu_pct'), '.0f')} % / "
            f"{fmt(get(tg, 'gen_cpu_pct'), '.0f')} %"
        )
    gop = next((r["gop_bytes"] for _, ng, tg in rows for r in (ng, tg) if r and r["gop_bytes"]), None)
    if gop:
        print()
        print(
            f"RSS goal: GOP bytes + 64 KB = {gop / 1024:.0f} + 64 = {gop / 1024 + 64:.0f} KB per stream."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
