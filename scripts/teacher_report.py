#!/usr/bin/env python3
"""The report of scripts/make_teacher.sh: the pretraining curve and each task's teacher.

  teacher_report.py OUT TASK...

Reads OUT/pretrained/train_log.jsonl (held-out losses by step) and OUT/ft/TASK-lrLR.json (a
fine-tune's best dev metrics), links OUT/teacher-TASK to the fine-tune with the best main metric,
writes OUT/teachers.md (printed too) and, when gnuplot is installed, OUT/curve.png.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

# The task's main metric (the one finetune keeps its best model by) and the other one reported.
METRICS = {"CoLA": ("mcc", None), "SST-2": ("accuracy", None), "MRPC": ("f1", "accuracy"),
           "STS-B": ("pearson", "spearman"), "RTE": ("accuracy", None), "QNLI": ("accuracy", None),
           "QQP": ("f1", "accuracy"), "MNLI": ("accuracy", None), "WNLI": ("accuracy", None)}
# Turc et al. 2019 (google-research/bert README), GLUE *test* set, 4 epochs, best of 4 lrs x 5
# batch sizes; pretrained on BooksCorpus + Wikipedia for far more compute than this machine has.
# In the main metric's units, with MRPC's and STS-B's second figure (accuracy, Spearman) after it.
PUBLISHED = {
    "BERT-Mini (4/256)": {"CoLA": 0.0, "SST-2": 85.9, "MRPC": (81.1, 71.8), "STS-B": (75.4, 73.3), "RTE": 57.9},
    "BERT-Small (4/512)": {"CoLA": 27.8, "SST-2": 89.7, "MRPC": (83.4, 76.2), "STS-B": (78.8, 77.0), "RTE": 61.8},
}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pct(v):
    return f"{100 * v:.1f}"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, tasks = sys.argv[1], sys.argv[2:]
    log = read_jsonl(os.path.join(out, "pretrained", "train_log.jsonl"))
    start = next(j for j in log if j.get("event") == "start")
    opts = start["options"]
    tokens_per_step = opts["batch_size"] * opts["seq_len"]
    evals = {}
    for j in log:
        if "eval_mlm_loss" in j and "step" in j and "event" not in j:
            evals[j["step"]] = j  # a resumed run repeats a step's evaluation; keep the last
    electra = opts.get("objective") == "electra"
    done = [j for j in log if j.get("event") == "done"]

    lines = []
    cfg = json.load(open(os.path.join(out, "pretrained", "config.json")))
    lines.append(f"Pretraining: {cfg['num_hidden_layers']} layers x {cfg['hidden_size']} "
                 f"({opts.get('objective', 'mlm')}), {opts['max_steps']} steps of {opts['batch_size']} x "
                 f"{opts['seq_len']} tokens, lr {opts['lr']:g}, {start['threads']} threads"
                 + (f", {done[-1]['elapsed_s'] / 3600:.2f} h" if done else " (not finished)") + ".")
    lines.append("")
    head = "| step | tokens (M) | hours | held-out MLM loss" + (" (generator) | replaced-token accuracy |" if electra else " |")
    lines.append(head)
    lines.append("|---:|---:|---:|---:|" + ("---:|" if electra else ""))
    for step in sorted(evals):
        e = evals[step]
        row = f"| {step} | {step * tokens_per_step / 1e6:.1f} | {e['elapsed_s'] / 3600:.2f} | {e['eval_mlm_loss']:.3f} |"
        if electra:
            row += f" {e.get('eval_disc_accuracy', float('nan')):.4f} |"
        lines.append(row)
    lines.append("")

    lines.append("| task | metric | " + " | ".join(f"lr {lr}" for lr in lrs_of(out, tasks)) + " | teacher | "
                 + " | ".join(PUBLISHED) + " |")
    lines.append("|---|---|" + "---:|" * (len(lrs_of(out, tasks)) + 1 + len(PUBLISHED)))
    for task in tasks:
        main_key, second = METRICS[task]
        runs = {}
        for path in glob.glob(os.path.join(out, "ft", f"{task}-lr*.json")):
            lr = re.fullmatch(rf"{re.escape(task)}-lr(.+)\.json", os.path.basename(path)).group(1)
            runs[lr] = json.load(open(path))
        if not runs:
            continue
        best = max(sorted(runs, key=float), key=lambda lr: runs[lr][main_key])  # a tie: the smaller lr
        link = os.path.join(out, f"teacher-{task}")
        if os.path.islink(link):
            os.remove(link)
        os.symlink(os.path.join("ft", f"{task}-lr{best}"), link)

        def cell(m):
            s = pct(m[main_key])
            return s + (f" / {pct(m[second])}" if second else "")

        label = main_key + (f" / {second}" if second else "")
        cells = [cell(runs[lr]) if lr in runs else "" for lr in lrs_of(out, tasks)]
        pub = []
        for model in PUBLISHED.values():
            v = model.get(task)
            pub.append("" if v is None else (f"{v[0]} / {v[1]}" if isinstance(v, tuple) else f"{v}"))
        lines.append(f"| {task} | {label} | " + " | ".join(cells) + f" | **{cell(runs[best])}** (lr {best}) | "
                     + " | ".join(pub) + " |")
    lines.append("")
    lines.append("Dev set, x100 (CoLA: Matthews correlation; STS-B: Pearson / Spearman). The published "
                 "columns are GLUE test-set scores of Turc et al. 2019's pretrained BERT-Mini and BERT-Small.")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "teachers.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    plot(out, evals, tokens_per_step, electra)


def lrs_of(out, tasks):
    lrs = set()
    for task in tasks:
        for path in glob.glob(os.path.join(out, "ft", f"{task}-lr*.json")):
            lrs.add(re.fullmatch(rf"{re.escape(task)}-lr(.+)\.json", os.path.basename(path)).group(1))
    return sorted(lrs, key=float)


def plot(out, evals, tokens_per_step, electra):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot or not evals:
        print("gnuplot not found (apt-get install gnuplot-nox): no curve", file=sys.stderr)
        return
    data = os.path.join(out, "curve.dat")
    with open(data, "w") as f:
        for step in sorted(evals):
            f.write(f"{evals[step]['elapsed_s'] / 3600} {step * tokens_per_step / 1e6} {evals[step]['eval_mlm_loss']}\n")
    ylabel = "held-out MLM loss" + (" (generator)" if electra else "")
    script = f"""set terminal pngcairo size 800,480
set output '{os.path.join(out, 'curve.png')}'
set xlabel 'hours of pretraining'
set ylabel '{ylabel}'
set grid
set key off
plot '{data}' using 1:3 with linespoints pt 7 ps 0.6
"""
    subprocess.run([gnuplot], input=script, text=True, check=True)


if __name__ == "__main__":
    main()
