#!/usr/bin/env python3
"""Turns the raw files of bench/compare-srt.sh into its side-by-side table.

Reads OUT/<receiver>-<N>/{measure.json,generator.json,generator.err} and prints a Markdown
table: per N, for libsrt (N srt-live-transmit processes) and tidegate, the gigabits per
second ingested over the measured window (what the generator sent then, from its
once-a-second progress line), CPU core-seconds per Gbit, peak RSS, the loss the receivers
reported (NAKs), whether the N publishers were sustained without loss, and the ratios
tidegate / libsrt.
"""

import os
import re
import sys

# report_common.py sits next to this script, which may be run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_common import common_fields, fmt, get, kept_up, parse_args, publishers, ratio, read_step, steps

PROGRESS = re.compile(r"^\[\s*([0-9.]+)s\].*\|\s*([0-9.]+) Mbps")


def window_gbit(err_path, start, t0, t1):
    """Gigabits the generator sent between t0 and t1 (epoch seconds): each progress line
    covers the second before its elapsed time; lines overlapping the window count pro rata.
    """
    if not os.path.exists(err_path):
        return None
    lo, hi = t0 - start, t1 - start
    bits = 0.0
    seen = False
    with open(err_path) as f:
        for line in f:
            m = PROGRESS.match(line)
            if not m:
                continue
            end = float(m.group(1))
            begin = end - 1.0
            overlap = min(end, hi) - max(begin, lo)
            if overlap > 0:
                bits += float(m.group(2)) * 1e6 * overlap
                seen = True
    return bits / 1e9 if seen else None


def load(out, server, n, lag_limit_ms):
    step = read_step(out, server, n)
    if step is None:
        return None
    d, m, gen = step
    window = m["t1"] - m["t0"]
    r = common_fields(n, m, gen, window)
    cpu_s = r["cpu_s"]
    gbit = window_gbit(os.path.join(d, "generator.err"), m["gen_start"], m["t0"], m["t1"])
    pubs, worst_lag = publishers(gen)
    srt = pubs.get("srt") or {}
    finished = sum(1 for p in pubs.get("per_publisher", []) if p.get("outcome") == "finished")
    lost = srt.get("packets_reported_lost")
    connected_all = kept_up(pubs, n, worst_lag, lag_limit_ms) and finished == n
    sustained = connected_all and lost == 0 and srt.get("packets_send_dropped") == 0
    r.update(
        {
            "gbps": gbit / window if gbit and window > 0 else None,
            "core_s_per_gbit": cpu_s / gbit if gbit else None,
            "server_gbps": (m["server_ingest_bytes"] * 8 / 1e9 / window)
            if m.get("server_ingest_bytes")
            else None,
            "processes": m.get("processes"),
            "threads": m.get("threads"),
            "sent": srt.get("packets_sent"),
            "lost": lost,
            "loss_pct": srt.get("loss_percent"),
            "retransmitted": srt.get("packets_retransmitted"),
            "send_dropped": srt.get("packets_send_dropped"),
            "rtt_p50": (srt.get("rtt_ms") or {}).get("p50"),
            "finished": finished,
            "connected_all": connected_all,
            "sustained": sustained,
        }
    )
    return r


def main():
    args = parse_args()
    ns, rows, best = steps(args.out, ("libsrt", "tidegate"), load, args.lag_limit_ms)

    def loss(r):
        if r is None or r["lost"] is None:
            return "–"
        return f"{r['lost']} ({r['loss_pct']:.3f} %)"

    def sus(r):
        if r is None:
            return "–"
        lag = fmt(r["worst_lag_ms"], ".0f")
        if r["sustained"]:
            word = "yes"
        elif r["connected_all"]:
            word = "no: loss"
        else:
            word = f"no: {r['finished']}/{r['n']} finished"
        return f"{word} ({lag})"

    print(
        "| N | Gbit/s in (libsrt / tg) | core-s per Gbit: libsrt | tidegate | tg/libsrt "
        "| server CPU %: libsrt | tidegate "
        "| peak RSS MB: libsrt | tidegate "
        "| reported lost (of sent): libsrt | tidegate "
        "| sustained without loss (worst lag ms): libsrt | tidegate |"
    )
    print("|" + " --- |" * 12)
    for n, ls, tg in rows:
        print(
            f"| {n} | {fmt(get(ls, 'gbps'), '.3f')} / {fmt(get(tg, 'gbps'), '.3f')} "
            f"| {fmt(get(ls, 'core_s_per_gbit'), '.3f')} | {fmt(get(tg, 'core_s_per_gbit'), '.3f')} "
            f"| {ratio(get(tg, 'core_s_per_gbit'), get(ls, 'core_s_per_gbit'))} "
            f"| {fmt(get(ls, 'cpu_pct'), '.1f')} | {fmt(get(tg, 'cpu_pct'), '.1f')} "
            f"| {fmt(get(ls, 'peak_rss_mb'), '.1f')} | {fmt(get(tg, 'peak_rss_mb'), '.1f')} "
            f"| {loss(ls)} | {loss(tg)} "
            f"| {sus(ls)} | {sus(tg)} |"
        )
    print()
    print(
        f"Largest N sustained without loss (of {' '.join(map(str, ns))}): "
        f"libsrt {best['libsrt'] or 'none'}, tidegate {best['tidegate'] or 'none'}."
    )
    print()
    print("Per step: processes/threads on the receiver core, retransmissions, generator CPU,")
    print("tidegate's own ingest counter (Gbit/s, SRT headers included) as a cross-check:")
    for n, ls, tg in rows:
        print(
            f"  N={n}: libsrt {get(ls, 'processes')} proc / {get(ls, 'threads')} threads, "
            f"{get(ls, 'retransmitted')} retransmitted, generator {fmt(get(ls, 'gen_cpu_pct'), '.0f')} %; "
            f"tidegate {get(tg, 'threads')} threads, {get(tg, 'retransmitted')} retransmitted, "
            f"generator {fmt(get(tg, 'gen_cpu_pct'), '.0f')} %, own counter "
            f"{fmt(get(tg, 'server_gbps'), '.3f')} Gbit/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
