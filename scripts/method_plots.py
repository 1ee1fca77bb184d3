#!/usr/bin/env python3
"""One picture per compression method from its results files: the dev metric of every compressed
model against its size, one panel per task, the teacher as a horizontal line (gnuplot, pngcairo).

  method_plots.py kprune OUT.png RESULTS.json...   (compress kprune --out DIR/results.json, or the
                                                   summary.jsonl of scripts/kprune_experiment.sh)
      x: the fraction of the teacher's FLOPs kept; one series with weight tuning, one without
  method_plots.py mbbert OUT.png RUN_DIR...         (compress mbbert --out DIR: results.jsonl)
      x: parameters (M); one series per ablation, a point per progressive step; several runs of
      one ablation (seeds) give the mean with the standard deviation as an error bar
  method_plots.py peakd OUT.png RESULTS.json...    (compress peakd --out DIR/results.json)
      x: parameters (M); one series per student, the mean over the runs given (seeds) with the
      standard deviation as an error bar

The metric is the task's main dev metric x 100 (accuracy, F1, Matthews correlation, Pearson).
Prints the points it drew, one JSON line per point, so a figure can be checked against its table.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict


def kprune(paths):
    panels = defaultdict(lambda: {"series": defaultdict(list), "teacher": []})
    results = []
    for p in paths:  # a results.json, or a summary.jsonl of them (scripts/kprune_experiment.sh)
        if p.endswith(".jsonl"):
            results += [(p, json.loads(l)) for l in open(p) if l.strip()]
        else:
            results.append((p, json.load(open(p))))
    for p, r in results:
        if "metric_after" not in r:
            print(f"method_plots: {p}: no dev metrics (a --no-eval run), left out", file=sys.stderr)
            continue
        panel = panels[r["task"]]
        name = "K-prune" if r.get("weight_tuning", True) else "K-prune without KPWT"
        panel["series"][name].append((r["flops_after"] / r["flops_before"], 100 * r["metric_after"], None))
        panel["teacher"].append(100 * r["metric_before"])
    return panels, "fraction of the teacher FLOPs kept"


MBBERT_LABEL = {"none": "progressive", "no-kd": "no KD", "one-shot": "one-shot", "distil-baseline": "DistilBERT-style"}


def mbbert(dirs):
    panels = defaultdict(lambda: {"series": defaultdict(list), "teacher": []})
    points = defaultdict(list)  # (task, label, params) -> metrics over the runs (seeds)
    for d in dirs:
        opts = json.load(open(os.path.join(d, "options.json")))
        lines = [json.loads(l) for l in open(os.path.join(d, "results.jsonl")) if l.strip()]
        task = opts["task"]
        panel = panels[task]
        for line in lines:
            if line["step"] == 0:
                panel["teacher"].append(100 * line["metric"])
            else:
                label = MBBERT_LABEL.get(line["ablation"], line["ablation"])
                points[(task, label, line["params"] / 1e6)].append(100 * line["metric"])
    for (task, label, x), ys in points.items():
        sd = statistics.stdev(ys) if len(ys) > 1 else None
        panels[task]["series"][label].append((x, statistics.mean(ys), sd))
    return panels, "parameters (M)"


PEAKD_LABEL = {"kd": "KD", "sps": "SPS", "ptp": "PTP", "sps_ptp": "SPS + PTP (Pea-KD)"}


def peakd(paths):
    runs = defaultdict(lambda: defaultdict(list))  # task -> student -> [(params, metric)]
    teachers = defaultdict(list)
    for p in paths:
        r = json.load(open(p))
        teachers[r["task"]].append(100 * r["teacher"]["metric"])
        for name, s in r["students"].items():
            runs[r["task"]][name].append((s["params"] / 1e6, 100 * s["metric"]))
    panels = {}
    for task, students in runs.items():
        series = {}
        for name in sorted(students, key=lambda n: list(PEAKD_LABEL).index(n) if n in PEAKD_LABEL else 99):
            pts = students[name]
            ys = [y for _, y in pts]
            sd = statistics.stdev(ys) if len(ys) > 1 else None
            series[PEAKD_LABEL.get(name, name)] = [(pts[0][0], statistics.mean(ys), sd)]
        panels[task] = {"series": series, "teacher": teachers[task]}
    return panels, "parameters (M)"


def draw(out_png, panels, xlabel):
    tasks = sorted(panels)
    if not tasks:
        sys.exit("method_plots: no results given")
    for task in tasks:
        for name, pts in panels[task]["series"].items():
            for x, y, err in sorted(pts):
                print(json.dumps({"task": task, "series": name, "x": x, "y": y, "sd": err}))
        print(json.dumps({"task": task, "series": "teacher", "y": statistics.mean(panels[task]["teacher"])}))
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        sys.exit("method_plots: gnuplot not found (apt-get install gnuplot-nox)")
    lines = [f"set terminal pngcairo size {480 * len(tasks)},420 font ',10'", f"set output '{out_png}'",
             f"set multiplot layout 1,{len(tasks)}", "set grid", "set key bottom right font ',8'",
             f"set xlabel '{xlabel}'", "set ylabel 'dev metric x 100'"]
    for task in tasks:
        panel = panels[task]
        teacher = statistics.mean(panel["teacher"])
        blocks, plots = [], []
        for i, (name, pts) in enumerate(panel["series"].items()):
            blocks.append(f"$s{i} << EOD")
            blocks += [f"{x} {y} {0 if err is None else err}" for x, y, err in sorted(pts)]
            blocks.append("EOD")
            with_errors = any(err is not None for _, _, err in pts)
            style = "with yerrorlines" if with_errors else "with linespoints"
            plots.append(f"$s{i} using 1:2{':3' if with_errors else ''} {style} pt 7 ps 0.8 title '{name}'")
        plots.append(f"{teacher} with lines dt 2 lc rgb 'black' title 'teacher ({teacher:.1f})'")
        lines += blocks
        lines.append(f"set title '{task}'")
        lines.append("plot " + ", ".join(plots))
    lines.append("unset multiplot")
    subprocess.run([gnuplot], input="\n".join(lines) + "\n", text=True, check=True)


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("kprune", "mbbert", "peakd"):
        sys.exit(__doc__)
    method, out_png, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    panels, xlabel = {"kprune": kprune, "mbbert": mbbert, "peakd": peakd}[method](inputs)
    draw(out_png, panels, xlabel)


if __name__ == "__main__":
    main()
