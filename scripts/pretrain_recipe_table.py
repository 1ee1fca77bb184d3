#!/usr/bin/env python3
"""The table of scripts/pretrain_recipe.sh: per recipe (a run directory under EXP_DIR), the
held-out MLM loss at every evaluation, the mean training loss of the last log window, tokens/s
and wall time, as a Markdown table.
  pretrain_recipe_table.py EXP_DIR NAME [NAME ...]"""
import json
import os
import sys


def read_run(path):
    evals, losses, done, start = {}, [], None, None
    with open(os.path.join(path, "train_log.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if j.get("event") == "done":
                done = j
            elif j.get("event") == "start":
                start = j
            elif "eval_mlm_loss" in j:
                evals[j["step"]] = j["eval_mlm_loss"]
            elif "loss" in j and "step" in j:
                losses.append(j)
    return evals, losses, done, start


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    exp, names = sys.argv[1], sys.argv[2:]
    runs = {n: read_run(os.path.join(exp, n)) for n in names}
    steps = sorted(set().union(*(set(r[0]) for r in runs.values())))
    opts = next(iter(runs.values()))[3]["options"]
    print(f"held-out MLM loss by step ({opts['batch_size']} × {opts['seq_len']} tokens a step, "
          f"{opts['eval_sequences']} held-out sequences)\n")
    print("| recipe | " + " | ".join(str(s) for s in steps) + " | train loss, last window | tokens/s | wall s |")
    print("|---|" + "---:|" * (len(steps) + 3))
    for n, (evals, losses, done, start) in runs.items():
        cells = [f"{evals[s]:.3f}" if s in evals else "" for s in steps]
        last = f"{losses[-1]['loss']:.3f}" if losses else ""
        tps = f"{done['tokens_per_s']:.0f}" if done else "(running)"
        wall = f"{done['elapsed_s']:.0f}" if done else ""
        print(f"| {n} | " + " | ".join(cells) + f" | {last} | {tps} | {wall} |")


if __name__ == "__main__":
    main()
