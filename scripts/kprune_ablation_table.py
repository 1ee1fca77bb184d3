#!/usr/bin/env python3
"""Markdown table of a KPWT ablation (docs/KPRUNE.md, "KPWT ablation"):
    scripts/kprune_ablation_table.py EXP_DIR/ablation.jsonl

ablation.jsonl: one K-prune results.json per line, each constraint of each task pruned with and
without weight tuning (scripts/kprune_ablation.sh). One row per (task, constraint), in the order
first seen; a later line for the same (task, constraint, mode) replaces an earlier one (a rerun)."""
import json
import sys

if len(sys.argv) != 2:
    sys.exit(__doc__)
path = sys.argv[1]
runs, order = {}, []
for n, line in enumerate(open(path), 1):
    if not line.strip():
        continue
    try:
        r = json.loads(line)
        key = (r["task"], round(float(r["constraint"]), 6))
        mode = "kpwt" if r["weight_tuning"] else "none"
        r["metric_before"], r["metric_after"]  # the sweep ran with evaluation
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"{path}:{n}: not a K-prune results.json line with dev metrics ({e!r})")
    if key not in order:
        order.append(key)
    runs.setdefault(key, {})[mode] = r

print("| task | c | FLOPs kept | with KPWT | retained | without KPWT | retained |"
      " heads per layer (KPWT) | neurons per layer (KPWT) | prune s (KPWT / without) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in order:
    task, c = key
    both = runs[key]
    if set(both) != {"kpwt", "none"}:
        sys.exit(f"{path}: {task} c={c} has only the {' '.join(both)} run; rerun scripts/kprune_ablation.sh")
    k, w = both["kpwt"], both["none"]

    def metric(r):
        return f"{r['metric_after']:.4f}", f"{100 * r['metric_after'] / r['metric_before']:.1f}%"

    (ka, kr), (wa, wr) = metric(k), metric(w)
    kept = k["flops_after"] / k["flops_before"]
    heads = " ".join(str(L["heads"]) for L in k["layers"])
    neurons = " ".join(str(L["neurons"]) for L in k["layers"])
    print(f"| {task} | {c:g} | {kept:.3f} | {ka} | {kr} | {wa} | {wr} | {heads} | {neurons} |"
          f" {k['seconds']:.0f} / {w['seconds']:.0f} |")
