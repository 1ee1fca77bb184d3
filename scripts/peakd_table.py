#!/usr/bin/env python3
"""Markdown tables of Pea-KD runs (docs/PEAKD.md):
    scripts/peakd_table.py EXP_DIR/peakd-*/results.json
One row per run and model, then the mean dev metric per task and student over the runs given
(several seeds of one task are grouped by task), and the average over tasks."""
import json
import statistics
import sys
from collections import defaultdict

STUDENTS = ("kd", "sps", "ptp", "sps_ptp")
runs = [json.load(open(p)) | {"path": p} for p in sys.argv[1:]]

print("| run | model | params (M) | GFLOPs s=128 | layers run | dev metric | vs KD | seconds |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in runs:
    name = r["path"].split("/")[-2]
    t, s = r["teacher"], r["students"]
    kd = s.get("kd", {}).get("metric")
    print(f"| {name} | teacher | {t['params'] / 1e6:.2f} | {t['flops_seq128'] / 1e9:.3f} | {t['layers_run']} | "
          f"{100 * t['metric']:.2f} | | |")
    for st in STUDENTS:
        if st not in s:
            continue
        m = s[st]
        delta = "" if kd is None or st == "kd" else f"{100 * (m['metric'] - kd):+.2f}"
        print(f"| {name} | {st} | {m['params'] / 1e6:.2f} | {m['flops_seq128'] / 1e9:.3f} | {m['layers_run']} | "
              f"{100 * m['metric']:.2f} | {delta} | {m['seconds']:.0f} |")

by_task = defaultdict(lambda: defaultdict(list))
teacher = {}
for r in runs:
    teacher[r["task"]] = r["teacher"]["metric"]
    for st in STUDENTS:
        if st in r["students"]:
            by_task[r["task"]][st].append(r["students"][st]["metric"])
present = [st for st in STUDENTS if any(st in v for v in by_task.values())]
print()
print("| task | runs | teacher | " + " | ".join(f"{st} mean ± sd" for st in present) + " |")
print("|---|---:|---:|" + "---:|" * len(present))
avg = defaultdict(list)
for task, v in by_task.items():
    cells = []
    for st in present:
        xs = [100 * x for x in v.get(st, [])]
        if xs:
            avg[st].append(statistics.mean(xs))
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cells.append(f"{statistics.mean(xs):.2f} ± {sd:.2f}" if xs else "")
    n = max(len(x) for x in v.values())
    print(f"| {task} | {n} | {100 * teacher[task]:.2f} | " + " | ".join(cells) + " |")
if len(by_task) > 1:
    print("| average | | " + f"{100 * statistics.mean(teacher.values()):.2f} | " +
          " | ".join(f"{statistics.mean(avg[st]):.2f}" if len(avg[st]) == len(by_task) else "" for st in present) + " |")
