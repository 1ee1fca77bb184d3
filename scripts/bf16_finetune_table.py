#!/usr/bin/env python3
"""Reads scripts/bf16_finetune_check.sh's runs (EXP/seed<S>-<f32|bf16>/{metrics.json,train_log.jsonl}),
prints a Markdown table (per seed: dev metric and final loss in f32 and bf16) and the two checks,
and exits 1 when a check fails (see the script's header)."""
import argparse
import itertools
import json
import os
import statistics
import sys


def losses(path):
    out = {}
    with open(path) as f:
        for line in f:
            j = json.loads(line)
            if "loss" in j and "step" in j:
                out[j["step"]] = j["loss"]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("exp")
    p.add_argument("--seeds", nargs="+", required=True)
    p.add_argument("--tol", type=float, default=0.01)
    a = p.parse_args()
    runs = {}
    for seed, prec in itertools.product(a.seeds, ("f32", "bf16")):
        d = os.path.join(a.exp, f"seed{seed}-{prec}")
        metrics = json.load(open(os.path.join(d, "metrics.json")))
        runs[seed, prec] = (metrics, losses(os.path.join(d, "train_log.jsonl")))
    task = runs[a.seeds[0], "f32"][0]["task"]
    metric = next(k for k in ("accuracy", "mcc", "pearson", "f1") if k in runs[a.seeds[0], "f32"][0])

    print(f"| seed | {metric} f32 | {metric} bf16 | final loss f32 | final loss bf16 |")
    print("|---|---:|---:|---:|---:|")
    for s in a.seeds:
        (mf, lf), (mb, lb) = runs[s, "f32"], runs[s, "bf16"]
        last = max(lf)
        print(f"| {s} | {mf[metric]:.4f} | {mb[metric]:.4f} | {lf[last]:.4f} | {lb.get(last, float('nan')):.4f} |")

    f32 = [runs[s, "f32"][0][metric] for s in a.seeds]
    bf16 = [runs[s, "bf16"][0][metric] for s in a.seeds]
    noise = max(max(f32) - min(f32), a.tol)
    gap = abs(statistics.mean(bf16) - statistics.mean(f32))
    ok_metric = gap <= noise

    def curve_gap(x, y):
        steps = sorted(set(x) & set(y))
        return statistics.mean(abs(x[t] - y[t]) for t in steps)

    twin = statistics.mean(curve_gap(runs[s, "bf16"][1], runs[s, "f32"][1]) for s in a.seeds)
    seeds = statistics.mean(curve_gap(runs[s, "f32"][1], runs[t, "f32"][1])
                            for s, t in itertools.combinations(a.seeds, 2)) if len(a.seeds) > 1 else float("inf")
    ok_curve = twin <= seeds
    print()
    print(f"{task} {metric}: mean f32 {statistics.mean(f32):.4f}, mean bf16 {statistics.mean(bf16):.4f}, "
          f"gap {gap:.4f} (allowed: the f32 seeds' range or {a.tol}: {noise:.4f}) -> {'ok' if ok_metric else 'FAIL'}")
    print(f"loss curves: mean |bf16 - f32| same seed {twin:.1e}, mean |f32 - f32| across seeds {seeds:.1e} "
          f"-> {'ok' if ok_curve else 'FAIL'}")
    return 0 if ok_metric and ok_curve else 1


if __name__ == "__main__":
    sys.exit(main())
