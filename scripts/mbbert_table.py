#!/usr/bin/env python3
"""Markdown table of MB-BERT runs (docs/MBBERT.md, "Results"):
    scripts/mbbert_table.py RUN_DIR...
RUN_DIR: an `--out` directory of `minibridge compress mbbert` (results.jsonl, options.json). All
runs must share the task and the teacher; the teacher (step 0) is one row, then each run's steps,
runs in the order none (labelled "progressive"), no-kd, one-shot, distil-baseline. A run's last
row has its metric and % of teacher in bold. Metric: the task's main dev metric, times 100.
Several runs of one ablation (seeds: `--seed`) are labelled by their directory's parent and
ablation, and a second table follows: per ablation and step, the mean ± sd over those runs."""
import json
import os
import statistics
import sys
from collections import defaultdict

ORDER = ("none", "no-kd", "one-shot", "distil-baseline")
LABEL = {"none": "progressive"}
# The main metric of each task (io/glue.cpp) and its column header.
MAIN = {"CoLA": "mcc", "MRPC": "f1", "QQP": "f1", "STS-B": "pearson"}
HEADER = {"accuracy": "dev acc %", "f1": "dev F1 %", "mcc": "dev MCC ×100", "pearson": "dev Pearson ×100"}


def load(d):
    opts = json.load(open(os.path.join(d, "options.json")))
    lines = [json.loads(l) for l in open(os.path.join(d, "results.jsonl")) if l.strip()]
    if not lines or lines[0]["step"] != 0:
        sys.exit(f"{d}: results.jsonl has no teacher line (step 0)")
    return {"dir": d, "opts": opts, "lines": lines}


def blocks(line, ablation):
    b = line["replaced_block"]
    if b is None:
        return "—"
    if isinstance(b, list):
        s = ",".join(str(v) for v in b)
        return "removed " + s if ablation == "distil-baseline" else s
    return str(b)


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__.strip())
    runs = [load(d.rstrip("/")) for d in sys.argv[1:]]
    tasks = {r["opts"]["task"] for r in runs}
    if len(tasks) > 1:
        sys.exit("runs of different tasks: " + ", ".join(sorted(tasks)))
    teachers = {r["lines"][0].get("student_fingerprint") for r in runs}
    if len(teachers) > 1:
        sys.exit("runs of different teachers (step 0 fingerprints differ): " +
                 ", ".join(f"{r['dir']} {r['lines'][0].get('student_fingerprint')}" for r in runs))
    runs.sort(key=lambda r: (ORDER.index(r["opts"]["ablation"]) if r["opts"]["ablation"] in ORDER else len(ORDER),
                             r["dir"]))
    ablations = [r["opts"]["ablation"] for r in runs]
    for r in runs:
        ab = r["opts"]["ablation"]
        r["label"] = (LABEL.get(ab, ab) if ablations.count(ab) == 1
                      else os.path.basename(os.path.dirname(os.path.abspath(r["dir"]))) + "/" + ab)
        want = r["opts"]["steps"] if ab in ("none", "no-kd") else 1
        done = len(r["lines"]) - 1
        if done < want:
            print(f"mbbert_table: {r['dir']}: {done} of {want} steps complete", file=sys.stderr)

    metric = MAIN.get(tasks.pop(), "accuracy")
    base = runs[0]["lines"][0]["metric"]

    def row(label, line, ablation, bold):
        m = line["metric"]
        pct = f"{100 * m / base:.1f}" if base > 0 else "—"
        cell = (lambda s: f"**{s}**") if bold else (lambda s: s)
        return (f"| {label} | {line['step']} | {blocks(line, ablation)} | {line['params'] / 1e6:.2f} | "
                f"{line['lorb']} | {line['flops_seq128'] / 1e9:.3f} | {line['flops_mean_len'] / 1e9:.3f} | "
                f"{cell(f'{100 * m:.2f}')} | {cell(pct)} | {line.get('seconds', 0):.0f} |")

    print(f"| run | step | replaced (0-based) | #Params (M) | #LoRB | GFLOPs s=128 | GFLOPs mean len | "
          f"{HEADER.get(metric, 'dev ' + metric + ' ×100')} | % of teacher | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(row("teacher", runs[0]["lines"][0], None, False))
    for r in runs:
        steps = r["lines"][1:]
        for i, line in enumerate(steps):
            print(row(r["label"], line, r["opts"]["ablation"], i == len(steps) - 1))
    if len(set(ablations)) < len(ablations):
        summary(runs, base, metric)


def summary(runs, base, metric):
    """Mean ± sd of each ablation's metric per step over its runs (seeds)."""
    by = defaultdict(list)  # (ablation, step) -> that step's results.jsonl lines over the runs
    for r in runs:
        for line in r["lines"][1:]:
            by[(r["opts"]["ablation"], line["step"])].append(line)
    print()
    print(f"| run | step | #Params (M) | runs | {HEADER.get(metric, 'dev ' + metric + ' ×100')} mean ± sd | "
          "% of teacher | seeds |")
    print("|---|---|---|---|---|---|---|")
    seeds = {}
    for r in runs:
        seeds.setdefault(r["opts"]["ablation"], []).append(str(r["opts"].get("seed", "?")))
    for (ab, step), lines in sorted(by.items(), key=lambda kv: (ORDER.index(kv[0][0]) if kv[0][0] in ORDER
                                                                   else len(ORDER), kv[0][1])):
        ms = [100 * l["metric"] for l in lines]
        mean = statistics.mean(ms)
        sd = f"{statistics.stdev(ms):.2f}" if len(ms) > 1 else "—"
        pct = f"{mean / base:.1f}" if base > 0 else "—"
        print(f"| {LABEL.get(ab, ab)} | {step} | {lines[0]['params'] / 1e6:.2f} | {len(ms)} | {mean:.2f} ± {sd} | "
              f"{pct} | {' '.join(sorted(seeds[ab], key=lambda v: (len(v), v)))} |")


if __name__ == "__main__":
    main()
