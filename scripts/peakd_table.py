#!/usr/bin/env python3
"""Markdown tables of Pea-KD runs (docs/PEAKD.md, "Results"):
    scripts/peakd_table.py [--glue GLUE_DIR] [--per-model] EXP_DIR/peakd-*/results.json
Prints, as in docs/PEAKD.md: the mean ± sd dev metric per task and student over the runs given
(several seeds of one task are grouped by task) and their average over tasks; every run (dev
metric per student, students' wall seconds); the models' sizes; and per task the teacher's dev
metrics, the PTP stage's training label counts (0 correct & confident, 1 correct & unsure,
2 wrong & confident, 3 wrong & unsure), the range of the kept dev PTP loss and of the time to
compute the teacher outputs. --glue GLUE_DIR adds the constant predictors' dev scores, from
GLUE_DIR/<task>/dev.tsv: the majority class's accuracy and, for F1 tasks, the F1 and accuracy of
calling every example positive. --per-model adds one row per run and model (params, FLOPs,
layers run, dev metric, difference to the KD student, seconds). Metrics are percentages."""
import argparse
import json
import os
import statistics
from collections import defaultdict

STUDENTS = ("kd", "sps", "ptp", "sps_ptp")
# Dev file label column and the label strings in task.labels order (io/glue.cpp); None: a header line.
LABELS = {"CoLA": (1, ["0", "1"], False), "SST-2": ("label", ["0", "1"], True),
          "MRPC": ("Quality", ["0", "1"], True), "RTE": ("label", ["entailment", "not_entailment"], True),
          "WNLI": ("label", ["0", "1"], True), "QNLI": ("label", ["entailment", "not_entailment"], True),
          "QQP": ("is_duplicate", ["0", "1"], True),
          "MNLI": ("gold_label", ["entailment", "neutral", "contradiction"], True)}


def pct(x):
    return f"{100 * x:.2f}"


def span(xs, f):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    lo, hi = f(min(xs)), f(max(xs))
    return lo if lo == hi else f"{lo}–{hi}"


def baseline(glue, task):
    """Constant predictors' dev scores from GLUE_DIR/<task>/dev.tsv, or None."""
    if task not in LABELS:
        return None
    col, names, header = LABELS[task]
    path = os.path.join(glue, task, "dev.tsv")
    lines = [l.rstrip("\r\n") for l in open(path, encoding="utf-8-sig") if l.strip()]
    if header:
        col = lines[0].split("\t").index(col)
        lines = lines[1:]
    labels = [names.index(l.split("\t")[col]) for l in lines]
    n = len(labels)
    counts = [labels.count(k) for k in range(len(names))]
    out = f"majority {pct(max(counts) / n)}"
    if task in ("MRPC", "QQP"):  # F1 of the positive class (label 1) when every example is called positive
        pos = counts[1]
        out += f"; all positive: f1 {pct(2 * pos / (pos + n))} / accuracy {pct(pos / n)}"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glue", help="GLUE directory: adds the constant predictors' dev scores")
    ap.add_argument("--per-model", action="store_true", help="also one row per run and model")
    ap.add_argument("results", nargs="+", help="peakd-*/results.json")
    a = ap.parse_args()
    runs = [json.load(open(p)) | {"path": p} for p in a.results]
    runs.sort(key=lambda r: (r["task"], r["options"]["seed"], r["path"]))

    by_task = defaultdict(lambda: defaultdict(list))
    teacher = {}
    for r in runs:
        teacher.setdefault(r["task"], r["teacher"])
        for st in STUDENTS:
            if st in r["students"]:
                by_task[r["task"]][st].append(r["students"][st]["metric"])
    present = [st for st in STUDENTS if any(st in v for v in by_task.values())]

    # Mean ± sd per task and student, and the average over tasks.
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
        print(f"| {task} | {n} | {pct(teacher[task]['metric'])} | " + " | ".join(cells) + " |")
    if len(by_task) > 1:
        print("| average | | " + f"{100 * statistics.mean(t['metric'] for t in teacher.values()):.2f} | " +
              " | ".join(f"{statistics.mean(avg[st]):.2f}" if len(avg[st]) == len(by_task) else ""
                         for st in present) + " |")

    # Every run.
    print()
    print("| task | seed | " + " | ".join(present) + " | seconds " + " / ".join(present) + " |")
    print("|---|---|" + "---:|" * len(present) + "---|")
    for r in runs:
        s = r["students"]
        print(f"| {r['task']} | {r['options']['seed']} | " +
              " | ".join(pct(s[st]["metric"]) if st in s else "" for st in present) + " | " +
              " / ".join(f"{s[st]['seconds']:.0f}" if st in s else "—" for st in present) + " |")

    # Sizes: one row per model and shape (a shape differs across tasks only with the label count).
    print()
    print("| model | params (M) | layers run | GFLOPs s=128 |")
    print("|---|---:|---:|---:|")
    sizes = {}
    for r in runs:
        for name, m in [("teacher", r["teacher"])] + [(st, r["students"][st]) for st in present if st in r["students"]]:
            sizes.setdefault((name, m["params"], m["layers_run"], m["flops_seq128"]), []).append(r["task"])
    names = [n for n, *_ in sizes]
    for (name, params, layers, flops), tasks in sizes.items():
        label = name if names.count(name) == 1 else f"{name} ({', '.join(sorted(set(tasks)))})"
        print(f"| {label} | {params / 1e6:.2f} | {layers} | {flops / 1e9:.3f} |")

    # Per task: teacher, constant predictors, PTP stage, teacher outputs.
    print()
    print("| task | teacher dev | constant predictor dev | PTP train labels 0 / 1 / 2 / 3 | kept dev PTP loss | "
          "teacher outputs s |")
    print("|---|---|---|---|---|---|")
    for task in by_task:
        rs = [r for r in runs if r["task"] == task]
        m = teacher[task]["metrics"]
        main_key = next((k for k in m if m[k] == teacher[task]["metric"]), None)  # the main metric first
        tdev = " / ".join(f"{k} {pct(m[k])}" for k in sorted(m, key=lambda k: k != main_key))
        base = baseline(a.glue, task) if a.glue else None
        stages = [r["students"][st]["ptp_stage"] for r in rs for st in ("sps_ptp", "ptp")
                  if st in r["students"] and "ptp_stage" in r["students"][st]]
        counts = []
        for p in stages:
            c = " / ".join(f"{x:,}" for x in p["train_label_counts"])
            if c not in counts:
                counts.append(c)
        print(f"| {task} | {tdev} | {base or '—'} | {'; '.join(counts) or '—'} | "
              f"{span([p['best'].get('ptp_loss') for p in stages], lambda x: f'{x:.2f}')} | "
              f"{span([r.get('teacher_outputs_seconds') for r in rs], lambda x: f'{x:.0f}')} |")

    if a.per_model:
        print()
        print("| run | model | params (M) | GFLOPs s=128 | layers run | dev metric | vs KD | seconds |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in runs:
            name = r["path"].split("/")[-2]
            t, s = r["teacher"], r["students"]
            kd = s.get("kd", {}).get("metric")
            print(f"| {name} | teacher | {t['params'] / 1e6:.2f} | {t['flops_seq128'] / 1e9:.3f} | {t['layers_run']} | "
                  f"{pct(t['metric'])} | | |")
            for st in STUDENTS:
                if st not in s:
                    continue
                m = s[st]
                delta = "" if kd is None or st == "kd" else f"{100 * (m['metric'] - kd):+.2f}"
                print(f"| {name} | {st} | {m['params'] / 1e6:.2f} | {m['flops_seq128'] / 1e9:.3f} | "
                      f"{m['layers_run']} | {pct(m['metric'])} | {delta} | {m['seconds']:.0f} |")


if __name__ == "__main__":
    main()
