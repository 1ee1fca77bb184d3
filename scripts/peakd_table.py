#!/usr/bin/env python3
"""Markdown table of Pea-KD runs: scripts/peakd_table.py EXP_DIR/peakd-*/results.json"""
import json
import sys

print("| task | model | params (M) | GFLOPs s=128 | layers run | dev metric | vs KD | seconds |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for path in sys.argv[1:]:
    r = json.load(open(path))
    t, s = r["teacher"], r["students"]
    kd = s.get("kd", {}).get("metric")
    print(f"| {r['task']} | teacher | {t['params'] / 1e6:.2f} | {t['flops_seq128'] / 1e9:.3f} | {t['layers_run']} | "
          f"{100 * t['metric']:.2f} | | |")
    for name in ("kd", "sps", "ptp", "sps_ptp"):
        if name not in s:
            continue
        m = s[name]
        delta = "" if kd is None or name == "kd" else f"{100 * (m['metric'] - kd):+.2f}"
        print(f"| {r['task']} | {name} | {m['params'] / 1e6:.2f} | {m['flops_seq128'] / 1e9:.3f} | {m['layers_run']} | "
              f"{100 * m['metric']:.2f} | {delta} | {m['seconds']:.0f} |")
